//! Continuous batching: the forward steps that concurrent generations ask for run together.
//!
//! A generation's thread hands its sequence and tokens in and waits. No thread is dedicated to
//! stepping: whichever waiting thread finds no step running leads the next one, taking what is
//! pending (oldest first, up to the batch limits) and running it as one
//! [`super::Engine::forward_batch`]. Sequences join between steps (a new request's first chunk
//! of prompt simply becomes pending) and leave by not asking again. So that a step is not cut
//! short by whoever samples fastest, the leader waits, briefly, until every running generation
//! ([`BatchMember`]) has asked. A prompt longer than the step's token limit runs in chunks that
//! leave room for the decodes running beside it, so they are not held up for a whole prefill.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::forward::Step;
use super::kv::Sequence;
use super::{Engine, EngineError, Logits};

/// How long a leader waits for running generations that have not yet asked for their next
/// step (sampling, a constraint's mask or a filter plugin run between steps). Short against a
/// step (tens of ms), long against sampling.
const GATHER_WAIT: Duration = Duration::from_millis(2);

/// What a step may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchLimits {
    /// Sequences in one step (`service.max_batch`).
    pub max_sequences: usize,
    /// New tokens in one step (`service.max_batch_tokens`); a longer prompt runs in chunks that
    /// leave room for one token of each other sequence (`max_tokens - max_sequences`).
    pub max_tokens: usize,
}

impl Default for BatchLimits {
    fn default() -> Self {
        BatchLimits {
            max_sequences: 8,
            max_tokens: 512,
        }
    }
}

struct Pending {
    id: u64,
    seq: Sequence,
    tokens: Vec<u32>,
    which: Logits,
}

type Done = (Sequence, Result<Vec<f32>, EngineError>);

#[derive(Default)]
struct State {
    pending: VecDeque<Pending>,
    done: HashMap<u64, Done>,
    leading: bool,
    /// Generations running ([`BatchMember`]s alive).
    members: usize,
    next_id: u64,
}

pub(crate) struct Batcher {
    state: Mutex<State>,
    changed: Condvar,
    max_sequences: AtomicUsize,
    max_tokens: AtomicUsize,
}

impl Batcher {
    pub fn new(limits: BatchLimits) -> Batcher {
        Batcher {
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
            max_sequences: AtomicUsize::new(limits.max_sequences.max(1)),
            max_tokens: AtomicUsize::new(limits.max_tokens.max(1)),
        }
    }

    pub fn limits(&self) -> BatchLimits {
        BatchLimits {
            max_sequences: self.max_sequences.load(Relaxed),
            max_tokens: self.max_tokens.load(Relaxed),
        }
    }

    pub fn set_limits(&self, limits: BatchLimits) {
        self.max_sequences
            .store(limits.max_sequences.max(1), Relaxed);
        self.max_tokens.store(limits.max_tokens.max(1), Relaxed);
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn join(self: &Arc<Self>) -> BatchMember {
        self.lock().members += 1;
        BatchMember {
            batcher: Arc::clone(self),
        }
    }

    /// Runs `tokens` after `seq`'s cache in shared steps (a long prompt in chunks).
    fn forward(
        &self,
        engine: &Engine,
        seq: &mut Sequence,
        tokens: &[u32],
        which: Logits,
    ) -> Result<Vec<f32>, EngineError> {
        // A chunk leaves room in its step for one token of each other sequence.
        let chunk = self
            .max_tokens
            .load(Relaxed)
            .saturating_sub(self.max_sequences.load(Relaxed))
            .max(1);
        if tokens.len() <= chunk || which == Logits::All {
            return self.one(engine, seq, tokens.to_vec(), which);
        }
        let mut logits = Vec::new();
        for part in tokens.chunks(chunk) {
            logits = self.one(engine, seq, part.to_vec(), Logits::Last)?;
        }
        Ok(logits)
    }

    fn one(
        &self,
        engine: &Engine,
        seq: &mut Sequence,
        tokens: Vec<u32>,
        which: Logits,
    ) -> Result<Vec<f32>, EngineError> {
        let mut st = self.lock();
        let id = st.next_id;
        st.next_id += 1;
        st.pending.push_back(Pending {
            id,
            seq: std::mem::replace(seq, Sequence::detached()),
            tokens,
            which,
        });
        self.changed.notify_all();
        loop {
            if let Some((back, result)) = st.done.remove(&id) {
                *seq = back;
                return result;
            }
            if !st.leading {
                st.leading = true;
                st = self.lead(engine, st);
                continue;
            }
            st = self.changed.wait(st).unwrap_or_else(|p| p.into_inner());
        }
    }

    /// Gathers a step, runs it with the lock released and files the results.
    fn lead<'a>(&'a self, engine: &Engine, mut st: MutexGuard<'a, State>) -> MutexGuard<'a, State> {
        let deadline = Instant::now() + GATHER_WAIT;
        loop {
            // Every pending entry is a member's (only `BatchMember::forward` submits).
            let asked = st.pending.len();
            let now = Instant::now();
            if asked >= st.members || now >= deadline {
                break;
            }
            st = self
                .changed
                .wait_timeout(st, deadline - now)
                .map(|(g, _)| g)
                .unwrap_or_else(|p| p.into_inner().0);
        }
        let (max_seqs, max_tokens) = (
            self.max_sequences.load(Relaxed),
            self.max_tokens.load(Relaxed),
        );
        // Oldest first; one that does not fit leaves its place to later, smaller ones (decodes
        // behind a prompt chunk) and is first in the next step.
        let mut batch: Vec<Pending> = Vec::new();
        let mut tokens = 0;
        let mut kept = VecDeque::with_capacity(st.pending.len());
        while let Some(p) = st.pending.pop_front() {
            let fits = batch.is_empty()
                || (batch.len() < max_seqs && tokens + p.tokens.len() <= max_tokens);
            if fits {
                tokens += p.tokens.len();
                batch.push(p);
            } else {
                kept.push_back(p);
            }
        }
        st.pending = kept;
        drop(st);
        let mut filed = Filed {
            batcher: self,
            results: Vec::with_capacity(batch.len()),
            ids: batch.iter().map(|p| p.id).collect(),
        };
        let outcome = {
            let mut steps: Vec<Step<'_>> = batch
                .iter_mut()
                .map(|p| Step {
                    seq: &mut p.seq,
                    tokens: &p.tokens,
                    which: p.which,
                })
                .collect();
            engine.forward_batch(&mut steps)
        };
        let results: Vec<Result<Vec<f32>, EngineError>> = match outcome {
            Ok(r) => r,
            Err(e) if batch.len() == 1 => vec![Err(e)],
            Err(e) => {
                let message = e.to_string();
                let mut all = vec![Err(e)];
                all.extend((1..batch.len()).map(|_| Err(EngineError::SharedStep(message.clone()))));
                all
            }
        };
        filed.results = batch
            .into_iter()
            .zip(results)
            .map(|(p, r)| (p.id, (p.seq, r)))
            .collect();
        drop(filed);
        self.lock()
    }
}

/// Files a step's results for their threads, and gives the lead up, however the step ended (a
/// panic inside it answers every sequence of the step with an error instead of leaving their
/// threads waiting).
struct Filed<'a> {
    batcher: &'a Batcher,
    results: Vec<(u64, Done)>,
    ids: Vec<u64>,
}

impl Drop for Filed<'_> {
    fn drop(&mut self) {
        let mut st = self.batcher.lock();
        for (id, done) in self.results.drain(..) {
            st.done.insert(id, done);
        }
        for id in &self.ids {
            st.done.entry(*id).or_insert_with(|| {
                let msg = "the step stopped unexpectedly".to_string();
                (Sequence::detached(), Err(EngineError::SharedStep(msg)))
            });
        }
        st.leading = false;
        self.batcher.changed.notify_all();
    }
}

/// A running generation: while it lives, a step's leader waits (briefly) for this generation's
/// next step before starting without it.
pub struct BatchMember {
    batcher: Arc<Batcher>,
}

impl BatchMember {
    /// [`Engine::forward`] in the engine's shared steps: `tokens` after `seq`'s cache, with the
    /// logits `which` asks for. A prompt longer than the step's token limit runs in chunks.
    pub fn forward(
        &self,
        engine: &Engine,
        seq: &mut Sequence,
        tokens: &[u32],
        which: Logits,
    ) -> Result<Vec<f32>, EngineError> {
        if !Arc::ptr_eq(&self.batcher, &engine.batcher) {
            return Err(EngineError::ForeignSequence);
        }
        self.batcher.forward(engine, seq, tokens, which)
    }
}

impl Drop for BatchMember {
    fn drop(&mut self) {
        let mut st = self.batcher.lock();
        st.members = st.members.saturating_sub(1);
        self.batcher.changed.notify_all();
    }
}
