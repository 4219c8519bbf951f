//! File bytes of a loaded package's graphs, per kind and per routed expert (for the bench).

use super::{Engine, Layer};
use crate::package::LayerSpec;

impl Engine {
    /// File bytes of every graph of one kind, for the bench: (dense part, routed experts per MoE
    /// layer summed over layers, number of MoE layers).
    pub fn weight_bytes(&self) -> WeightBytes {
        let m = self.package.manifest();
        let g = |rel: &str| self.package.graph_bytes(rel);
        let mut w = WeightBytes {
            embed: g(&m.embed),
            head: g(&m.head),
            ..WeightBytes::default()
        };
        for spec in &m.layers {
            w.attn += g(spec.attn());
            match spec {
                LayerSpec::Dense { mlp, .. } => w.dense_mlp += g(mlp),
                LayerSpec::Moe {
                    router,
                    experts,
                    shared,
                    ..
                } => {
                    w.moe_layers += 1;
                    w.router += router.as_deref().map_or(0, g);
                    w.shared += shared.as_deref().map_or(0, g);
                    w.experts += experts.iter().map(|e| g(e)).sum::<u64>();
                }
            }
        }
        w
    }

    /// File bytes of one routed expert's graph (0 for a dense layer or an index out of range).
    pub fn expert_file_bytes(&self, layer: usize, expert: usize) -> u64 {
        match self.layers.get(layer) {
            Some(Layer::Moe { expert_bytes, .. }) => expert_bytes.get(expert).copied().unwrap_or(0),
            _ => 0,
        }
    }
}

/// File bytes per graph kind over the whole package.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct WeightBytes {
    pub embed: u64,
    pub head: u64,
    pub attn: u64,
    pub router: u64,
    pub shared: u64,
    pub dense_mlp: u64,
    /// All routed experts of all MoE layers.
    pub experts: u64,
    pub moe_layers: u64,
}
