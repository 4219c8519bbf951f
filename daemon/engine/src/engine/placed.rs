//! The engine's side of placement: the package's graphs as placement slots, the GPU provider a
//! budget may use, sessions created on their placed provider with a fallback to the CPU (named,
//! logged and counted), and revisits of the experts' placement applied between requests.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use super::{Engine, EngineError};
use crate::ort_env::{self, Provider};
use crate::package::{LayerSpec, Package};
use crate::placement::{self, GraphKind, GraphSlot, Placement, PlacementSummary};

/// Experts moved by one revisit at most: each move drops a session that the next use creates
/// again on its new provider, so a revisit costs at most this many session creations.
pub const MAX_MOVES_PER_REVISIT: usize = 8;

impl Engine {
    /// Where the graphs run: graphs and bytes per provider, the GPU budget used, fallbacks.
    pub fn placement(&self) -> PlacementSummary {
        self.placed.summary()
    }

    /// Moves experts between the GPU and the CPU as `activations` (`[layer][expert]`, e.g. the
    /// persisted statistics) now rank them, at most [`MAX_MOVES_PER_REVISIT`] at once; returns
    /// how many moved. A moved expert's session is dropped (a request running it keeps it until
    /// done) and created on its new provider at its next use. Nothing moves without a GPU budget.
    pub fn revisit_placement(&self, activations: &[Vec<u64>]) -> usize {
        let moved = self.placed.revisit(activations);
        for &key in &moved {
            self.experts.remove(key, &self.counters);
        }
        moved.len()
    }
}

/// A model's graphs and where each runs.
pub(crate) struct Placed {
    slots: Vec<GraphSlot>,
    /// Slot of each graph that is not a routed expert, by kind and layer.
    fixed: HashMap<(GraphKind, Option<usize>), usize>,
    /// Slot of each routed expert, `[layer][expert]` (empty rows for dense layers).
    experts: Vec<Vec<usize>>,
    /// With a budget: why no GPU provider could be used.
    gpu_unavailable: Option<String>,
    state: Mutex<State>,
}

struct State {
    placement: Placement,
    fallbacks: u64,
    first_fallback: Option<String>,
}

impl Placed {
    /// Every graph on `provider` (no budget).
    pub fn all(pkg: &Package, provider: Provider) -> Placed {
        let (slots, fixed, experts) = slots_of(pkg);
        let placement = Placement::all(&slots, provider);
        Placed::new(slots, fixed, experts, placement, None)
    }

    /// Placed under `budget` on the first GPU provider of `providers` this ONNX Runtime has,
    /// experts ranked by `activations`; without one, everything on the CPU and the reasons kept.
    pub fn budgeted(
        pkg: &Package,
        providers: &[Provider],
        budget: u64,
        activations: &[Vec<u64>],
    ) -> Placed {
        let (slots, fixed, experts) = slots_of(pkg);
        let (gpu, unavailable) = gpu_provider(providers, ort_env::provider_unavailable_reason);
        // A zero budget asks nothing of a GPU: nothing to explain.
        let unavailable = unavailable.filter(|_| budget > 0);
        if let Some(why) = &unavailable {
            log::warn!(
                "engine.gpu_memory_budget is {budget} bytes but no GPU provider is usable ({why}); every graph runs on the CPU"
            );
        }
        let placement = Placement::plan(&slots, activations, budget, gpu);
        Placed::new(slots, fixed, experts, placement, unavailable)
    }

    fn new(
        slots: Vec<GraphSlot>,
        fixed: HashMap<(GraphKind, Option<usize>), usize>,
        experts: Vec<Vec<usize>>,
        placement: Placement,
        gpu_unavailable: Option<String>,
    ) -> Placed {
        Placed {
            slots,
            fixed,
            experts,
            gpu_unavailable,
            state: Mutex::new(State {
                placement,
                fallbacks: 0,
                first_fallback: None,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn fixed_slot(&self, kind: GraphKind, layer: Option<usize>) -> Option<usize> {
        self.fixed.get(&(kind, layer)).copied()
    }

    pub fn expert_slot(&self, layer: usize, expert: usize) -> Option<usize> {
        self.experts
            .get(layer)
            .and_then(|row| row.get(expert))
            .copied()
    }

    /// The provider placement gives a slot now (the CPU for none).
    pub fn provider(&self, slot: Option<usize>) -> Provider {
        slot.map_or(Provider::Cpu, |i| self.lock().placement.provider(i))
    }

    /// Whether graphs are placed under a GPU budget on a usable GPU provider.
    pub fn on_gpu_budget(&self) -> bool {
        self.gpu().is_some()
    }

    /// The GPU provider of a budget, when one is usable.
    pub fn gpu(&self) -> Option<Provider> {
        self.lock().placement.gpu()
    }

    /// The GPU provider when any graph is placed on it under a budget.
    pub fn uses_gpu(&self) -> Option<Provider> {
        let st = self.lock();
        st.placement.gpu().filter(|_| st.placement.gpu_bytes() > 0)
    }

    /// Creates `file`'s session for `slot` with `load` on the slot's provider; when that is a GPU
    /// provider and the session fails for a reason other than the graph itself, on the CPU
    /// instead, the reason logged and counted. Returns the session and its provider.
    pub fn load<G>(
        &self,
        slot: Option<usize>,
        file: &str,
        mut load: impl FnMut(Provider) -> Result<G, EngineError>,
    ) -> Result<(G, Provider), EngineError> {
        let provider = self.provider(slot);
        if provider == Provider::Cpu {
            return load(Provider::Cpu).map(|g| (g, Provider::Cpu));
        }
        match load(provider) {
            Ok(g) => Ok((g, provider)),
            // A broken graph is the package's fault: the CPU would refuse it too.
            Err(e @ EngineError::Interface { .. }) => Err(e),
            Err(e) => {
                self.fell_back(slot, file, provider, &e.to_string());
                load(Provider::Cpu).map(|g| (g, Provider::Cpu))
            }
        }
    }

    fn fell_back(&self, slot: Option<usize>, file: &str, provider: Provider, why: &str) {
        let reason = format!("{file} on {provider}: {}", moed_wire::log_line(why, 512));
        let mut st = self.lock();
        if let Some(i) = slot {
            st.placement.exclude(&self.slots, i);
        }
        st.fallbacks += 1;
        if st.first_fallback.is_none() {
            log::warn!("falling back to the CPU: {reason}");
            st.first_fallback = Some(reason);
        } else {
            log::debug!("falling back to the CPU: {reason}");
        }
    }

    /// Moves experts toward the placement `activations` gives (at most
    /// [`MAX_MOVES_PER_REVISIT`]); returns the `(layer, expert)` of each moved one, whose session
    /// the caller drops.
    pub fn revisit(&self, activations: &[Vec<u64>]) -> Vec<(usize, usize)> {
        let mut st = self.lock();
        let moves = placement::revisit(
            &st.placement,
            &self.slots,
            activations,
            MAX_MOVES_PER_REVISIT,
        );
        st.placement.apply(&self.slots, &moves);
        let moved: Vec<(usize, usize)> = moves
            .iter()
            .filter_map(|m| {
                let s = self.slots.get(m.slot)?;
                Some((s.layer?, s.expert?))
            })
            .collect();
        if !moved.is_empty() {
            log::info!(
                "placement revisited: {} expert(s) moved; {}",
                moved.len(),
                st.placement.summary(&self.slots).line()
            );
        }
        moved
    }

    pub fn summary(&self) -> PlacementSummary {
        let st = self.lock();
        let mut s = st.placement.summary(&self.slots);
        s.gpu_unavailable = self.gpu_unavailable.clone();
        s.fallbacks = st.fallbacks;
        s.first_fallback = st.first_fallback.clone();
        s
    }
}

/// The first GPU provider of `providers` that `unavailable` has no reason against; else `None`
/// and the reasons (or that none is configured).
fn gpu_provider(
    providers: &[Provider],
    unavailable: impl Fn(Provider) -> Option<String>,
) -> (Option<Provider>, Option<String>) {
    let mut reasons = Vec::new();
    for &p in providers.iter().filter(|&&p| p != Provider::Cpu) {
        match unavailable(p) {
            None => return (Some(p), None),
            Some(why) => reasons.push(format!("{p}: {why}")),
        }
    }
    if reasons.is_empty() {
        reasons.push("engine.providers names no GPU provider (cuda or tensorrt)".to_string());
    }
    (None, Some(reasons.join("; ")))
}

type Slots = (
    Vec<GraphSlot>,
    HashMap<(GraphKind, Option<usize>), usize>,
    Vec<Vec<usize>>,
);

/// Every graph of the package as a slot, with its file bytes.
fn slots_of(pkg: &Package) -> Slots {
    let m = pkg.manifest();
    let mut slots = Vec::new();
    let mut fixed = HashMap::new();
    let mut experts = Vec::with_capacity(m.layers.len());
    let mut add = |slots: &mut Vec<GraphSlot>, kind, layer, rel: &str| {
        fixed.insert((kind, layer), slots.len());
        slots.push(GraphSlot {
            kind,
            layer,
            expert: None,
            bytes: pkg.graph_bytes(rel),
        });
    };
    add(&mut slots, GraphKind::Embedding, None, &m.embed);
    add(&mut slots, GraphKind::Head, None, &m.head);
    for (l, spec) in m.layers.iter().enumerate() {
        add(&mut slots, GraphKind::Attention, Some(l), spec.attn());
        let mut row = Vec::new();
        match spec {
            LayerSpec::Dense { mlp, .. } => add(&mut slots, GraphKind::DenseMlp, Some(l), mlp),
            LayerSpec::Moe {
                router,
                shared,
                experts: files,
                ..
            } => {
                if let Some(r) = router {
                    add(&mut slots, GraphKind::Router, Some(l), r);
                }
                if let Some(s) = shared {
                    add(&mut slots, GraphKind::Shared, Some(l), s);
                }
                for (e, rel) in files.iter().enumerate() {
                    row.push(slots.len());
                    slots.push(GraphSlot {
                        kind: GraphKind::Expert,
                        layer: Some(l),
                        expert: Some(e),
                        bytes: pkg.graph_bytes(rel),
                    });
                }
            }
        }
        experts.push(row);
    }
    (slots, fixed, experts)
}

#[cfg(test)]
#[path = "placed_tests.rs"]
mod tests;
