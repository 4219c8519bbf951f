//! Which execution provider runs each graph of a model: under a GPU memory budget, the graphs every
//! token runs (attention, routers, head, shared and dense MLPs) go to the GPU first, then the
//! routed experts hottest first by their activation counts, until the budget is used; the rest
//! (and the embedding, a lookup of one row per token) run on the CPU. Decisions are pure and
//! deterministic; [`revisit`] moves a bounded number of experts when the statistics change.

mod revisit;

use serde::Serialize;

use crate::ort_env::Provider;

pub use revisit::{HYSTERESIS_DIVISOR, Move, revisit};

/// What a graph does in the model; the placement order follows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum GraphKind {
    Attention,
    Router,
    Head,
    Shared,
    DenseMlp,
    Expert,
    Embedding,
}

impl GraphKind {
    /// The order in which kinds claim the budget; `None`: never placed on the GPU.
    fn class(self) -> Option<u8> {
        match self {
            GraphKind::Attention => Some(0),
            GraphKind::Router => Some(1),
            GraphKind::Head => Some(2),
            GraphKind::Shared => Some(3),
            GraphKind::DenseMlp => Some(4),
            GraphKind::Expert => Some(5),
            GraphKind::Embedding => None,
        }
    }
}

/// One graph of the package as placement sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GraphSlot {
    pub kind: GraphKind,
    /// The layer (none for the embedding and the head).
    pub layer: Option<usize>,
    /// The routed expert's index within its layer (experts only).
    pub expert: Option<usize>,
    /// The graph's file bytes, what the budget counts.
    pub bytes: u64,
}

impl GraphSlot {
    /// The slot's activation count in `activations[layer][expert]`; 0 for non-experts and
    /// experts the statistics do not cover.
    fn count(&self, activations: &[Vec<u64>]) -> u64 {
        match (self.kind, self.layer, self.expert) {
            (GraphKind::Expert, Some(l), Some(e)) => activations
                .get(l)
                .and_then(|row| row.get(e))
                .copied()
                .unwrap_or(0),
            _ => 0,
        }
    }
}

/// The placement order: kind, then (experts) hotter first, then lower layer, lower expert, lower
/// slot index. `None` for graphs that stay on the CPU.
fn rank(slot: &GraphSlot, index: usize, activations: &[Vec<u64>]) -> Option<Rank> {
    slot.kind.class().map(|class| Rank {
        class,
        colder: u64::MAX - slot.count(activations),
        layer: slot.layer.unwrap_or(usize::MAX),
        expert: slot.expert.unwrap_or(0),
        index,
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Rank {
    class: u8,
    colder: u64,
    layer: usize,
    expert: usize,
    index: usize,
}

/// The provider of every slot, and the budget's accounting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    /// The GPU provider graphs are placed on; `None`: every graph on [`Placement::all`]'s provider
    /// or the CPU.
    gpu: Option<Provider>,
    /// `None`: no budget (one provider for the whole model).
    budget: Option<u64>,
    providers: Vec<Provider>,
    /// Slots that failed on the GPU: they stay on the CPU and out of the budget.
    excluded: Vec<bool>,
    gpu_bytes: u64,
}

impl Placement {
    /// Every slot on `provider`: the whole model on one provider, as without a budget.
    pub fn all(slots: &[GraphSlot], provider: Provider) -> Placement {
        Placement {
            gpu: None,
            budget: None,
            providers: vec![provider; slots.len()],
            excluded: vec![false; slots.len()],
            gpu_bytes: 0,
        }
    }

    /// Places slots on `gpu` in the placement order while their bytes fit in `budget` (a slot
    /// that does not fit is passed over, and smaller ones after it may still fit); the rest on
    /// the CPU. Without a usable GPU provider everything is on the CPU.
    pub fn plan(
        slots: &[GraphSlot],
        activations: &[Vec<u64>],
        budget: u64,
        gpu: Option<Provider>,
    ) -> Placement {
        Placement::plan_excluding(slots, activations, budget, gpu, &vec![false; slots.len()])
    }

    fn plan_excluding(
        slots: &[GraphSlot],
        activations: &[Vec<u64>],
        budget: u64,
        gpu: Option<Provider>,
        excluded: &[bool],
    ) -> Placement {
        let mut placement = Placement {
            gpu,
            budget: Some(budget),
            providers: vec![Provider::Cpu; slots.len()],
            excluded: excluded.to_vec(),
            gpu_bytes: 0,
        };
        let Some(gpu) = gpu else {
            return placement;
        };
        for (i, _) in order(slots, activations) {
            if excluded.get(i).copied().unwrap_or(false) {
                continue;
            }
            let bytes = slots[i].bytes;
            if let Some(used) = placement.gpu_bytes.checked_add(bytes)
                && used <= budget
            {
                placement.providers[i] = gpu;
                placement.gpu_bytes = used;
            }
        }
        placement
    }

    /// The provider of slot `i` (the CPU for an index out of range).
    pub fn provider(&self, i: usize) -> Provider {
        self.providers.get(i).copied().unwrap_or(Provider::Cpu)
    }

    pub fn gpu(&self) -> Option<Provider> {
        self.gpu
    }

    pub fn budget(&self) -> Option<u64> {
        self.budget
    }

    /// File bytes of the slots placed on the GPU.
    pub fn gpu_bytes(&self) -> u64 {
        self.gpu_bytes
    }

    /// Slot `i` could not run on the GPU: it moves to the CPU for good and its bytes leave the
    /// budget (so [`revisit`] may give them to another expert).
    pub fn exclude(&mut self, slots: &[GraphSlot], i: usize) {
        if let Some(flag) = self.excluded.get_mut(i) {
            *flag = true;
        }
        if let (Some(p), Some(slot)) = (self.providers.get_mut(i), slots.get(i))
            && *p != Provider::Cpu
        {
            *p = Provider::Cpu;
            // Without a budget (one provider for every graph) no bytes were counted.
            if self.gpu.is_some() {
                self.gpu_bytes -= slot.bytes;
            }
        }
    }

    /// Applies moves from [`revisit`] (demotions first, so the budget holds throughout). Moves
    /// naming no slot of `slots` are ignored.
    pub fn apply(&mut self, slots: &[GraphSlot], moves: &[Move]) {
        let Some(gpu) = self.gpu else {
            return;
        };
        let n = self.providers.len().min(slots.len());
        for m in moves.iter().filter(|m| m.to == Provider::Cpu && m.slot < n) {
            if self.providers[m.slot] == gpu {
                self.providers[m.slot] = Provider::Cpu;
                self.gpu_bytes -= slots[m.slot].bytes;
            }
        }
        for m in moves.iter().filter(|m| m.to == gpu && m.slot < n) {
            if self.providers[m.slot] == Provider::Cpu {
                self.providers[m.slot] = gpu;
                self.gpu_bytes += slots[m.slot].bytes;
            }
        }
    }

    /// Graphs and bytes per provider.
    pub fn summary(&self, slots: &[GraphSlot]) -> PlacementSummary {
        let mut per: Vec<ProviderShare> = Vec::new();
        for (slot, &p) in slots.iter().zip(&self.providers) {
            match per.iter_mut().find(|s| s.provider == p) {
                Some(share) => {
                    share.graphs += 1;
                    share.bytes += slot.bytes;
                    share.experts += u64::from(slot.kind == GraphKind::Expert);
                }
                None => per.push(ProviderShare {
                    provider: p,
                    graphs: 1,
                    experts: u64::from(slot.kind == GraphKind::Expert),
                    bytes: slot.bytes,
                }),
            }
        }
        // GPU providers first, the CPU last: the order of the enum.
        per.sort_by_key(|s| s.provider as u8);
        PlacementSummary {
            gpu_memory_budget: self.budget,
            gpu_bytes_used: self.gpu_bytes,
            providers: per,
            gpu_unavailable: None,
            fallbacks: 0,
            first_fallback: None,
        }
    }
}

/// The slots that may go to the GPU, in placement order.
fn order(slots: &[GraphSlot], activations: &[Vec<u64>]) -> Vec<(usize, Rank)> {
    let mut ranked: Vec<(usize, Rank)> = slots
        .iter()
        .enumerate()
        .filter_map(|(i, s)| rank(s, i, activations).map(|r| (i, r)))
        .collect();
    ranked.sort_by_key(|&(_, r)| r);
    ranked
}

/// One provider's share of the model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProviderShare {
    pub provider: Provider,
    pub graphs: u64,
    /// How many of those graphs are routed experts.
    pub experts: u64,
    /// Their file bytes.
    pub bytes: u64,
}

/// Where a model's graphs run, for reports (`moed bench`, logs).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlacementSummary {
    /// `engine.gpu_memory_budget`; `None`: one provider for the whole model.
    pub gpu_memory_budget: Option<u64>,
    /// File bytes placed on the GPU provider under the budget (never above it; 0 without one).
    pub gpu_bytes_used: u64,
    /// GPU providers first, the CPU last; providers with no graph are left out.
    pub providers: Vec<ProviderShare>,
    /// With a budget: why no GPU provider could be used.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gpu_unavailable: Option<String>,
    /// Graphs placed on the GPU whose GPU session could not be created, run on the CPU instead.
    pub fallbacks: u64,
    /// The first of those: the graph's file and why.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_fallback: Option<String>,
}

impl PlacementSummary {
    /// One line: `cuda 40 graphs (12 experts) 1.20 MB, cpu 300 graphs 80.00 MB; budget ...`.
    pub fn line(&self) -> String {
        let mb = |b: u64| format!("{:.2} MB", b as f64 / 1e6);
        let shares: Vec<String> = self
            .providers
            .iter()
            .map(|s| {
                format!(
                    "{} {} graphs ({} experts) {}",
                    s.provider,
                    s.graphs,
                    s.experts,
                    mb(s.bytes)
                )
            })
            .collect();
        let mut line = shares.join(", ");
        match self.gpu_memory_budget {
            None => line.push_str("; no gpu_memory_budget (one provider for every graph)"),
            Some(b) => line.push_str(&format!(
                "; gpu_memory_budget {}, {} used",
                mb(b),
                mb(self.gpu_bytes_used)
            )),
        }
        if let Some(why) = &self.gpu_unavailable {
            line.push_str(&format!("; no GPU provider usable: {why}"));
        }
        if self.fallbacks > 0 {
            line.push_str(&format!(
                "; {} graph(s) fell back to cpu, first: {}",
                self.fallbacks,
                self.first_fallback.as_deref().unwrap_or("")
            ));
        }
        line
    }
}

#[cfg(test)]
mod tests;
