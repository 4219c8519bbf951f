//! Per-graph weight precision: format 2's `precision.graphs`, format 1's meaning of the same, checks.

use std::collections::BTreeMap;

use super::manifest::{GraphPrecision, LayerSpec, Manifest, Precision};

/// Graph kinds in the order they are listed (models/FORMAT.md).
pub const GRAPH_KINDS: &[&str] = &["embed", "attn", "router", "expert", "shared", "mlp", "head"];
pub(crate) const PRECISIONS: &[&str] = &["fp32", "fp16", "int8", "int4"];

impl GraphPrecision {
    fn plain(weights: &str) -> GraphPrecision {
        GraphPrecision {
            weights: weights.to_string(),
            block_size: None,
            accuracy_level: None,
            symmetric: None,
        }
    }

    /// "int4 (block 32, accuracy level 4, asymmetric)", or just "fp32".
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(b) = self.block_size {
            parts.push(format!("block {b}"));
        }
        if let Some(a) = self.accuracy_level {
            parts.push(format!("accuracy level {a}"));
        }
        if let Some(s) = self.symmetric {
            parts.push(if s { "symmetric" } else { "asymmetric" }.to_string());
        }
        if parts.is_empty() {
            self.weights.clone()
        } else {
            format!("{} ({})", self.weights, parts.join(", "))
        }
    }
}

impl Manifest {
    /// The graph kinds this package holds, in [`GRAPH_KINDS`] order.
    pub fn graph_kinds(&self) -> Vec<&'static str> {
        let has = |kind: &str| match kind {
            "embed" | "head" => true,
            "attn" => !self.layers.is_empty(),
            "router" | "expert" => self.layers.iter().any(LayerSpec::is_moe),
            "shared" => self.layers.iter().any(|l| {
                matches!(
                    l,
                    LayerSpec::Moe {
                        shared: Some(_),
                        ..
                    }
                )
            }),
            "mlp" => self
                .layers
                .iter()
                .any(|l| matches!(l, LayerSpec::Dense { .. })),
            _ => false,
        };
        GRAPH_KINDS.iter().copied().filter(|k| has(k)).collect()
    }

    /// The storage of each graph kind the package holds. Format 2 lists it; a format-1 package means
    /// fp32 embedding, attention, routers and head (`precision.dense`), and `precision.experts` with
    /// its block parameters for every FFN graph (routed and shared experts, dense MLPs).
    pub fn graph_precision(&self) -> BTreeMap<String, GraphPrecision> {
        let p = &self.precision;
        if let Some(graphs) = &p.graphs {
            return graphs.clone();
        }
        let ffn = GraphPrecision {
            weights: p.experts.clone(),
            block_size: p.block_size,
            accuracy_level: p.accuracy_level,
            symmetric: p.block_size.map(|_| false),
        };
        self.graph_kinds()
            .into_iter()
            .map(|kind| {
                let g = match kind {
                    "expert" | "shared" | "mlp" => ffn.clone(),
                    _ => GraphPrecision::plain(&p.dense),
                };
                (kind.to_string(), g)
            })
            .collect()
    }

    /// One line per graph kind the package holds: "attn int4 (block 32, accuracy level 4, asymmetric)".
    pub fn precision_lines(&self) -> Vec<String> {
        let graphs = self.graph_precision();
        self.graph_kinds()
            .into_iter()
            .filter_map(|k| graphs.get(k).map(|g| format!("{k} {}", g.describe())))
            .collect()
    }
}

/// Checks `precision` for `format_version`; `Err(message)` names the key.
pub(crate) fn check(m: &Manifest) -> Result<(), String> {
    let p: &Precision = &m.precision;
    for (key, v) in [
        ("precision.dense", &p.dense),
        ("precision.experts", &p.experts),
    ] {
        if !PRECISIONS.contains(&v.as_str()) {
            return Err(format!("{key} is {v:?} (known: {})", PRECISIONS.join(", ")));
        }
    }
    match (&p.graphs, m.format_version) {
        (Some(_), 1) => Err(
            "precision.graphs is a format 2 key but format_version is 1 (set format_version 2)"
                .into(),
        ),
        (None, 1) => Ok(()),
        (None, _) => Err(format!(
            "precision.graphs is missing (format_version {} lists each graph kind's precision)",
            m.format_version
        )),
        (Some(graphs), _) => {
            for (kind, g) in graphs {
                if !GRAPH_KINDS.contains(&kind.as_str()) {
                    // The key is the manifest's text: clipped, so a 60 MB key is not repeated whole.
                    return Err(format!(
                        "precision.graphs.{}: unknown graph kind (known: {})",
                        moed_wire::text(kind, 64),
                        GRAPH_KINDS.join(", ")
                    ));
                }
                check_graph(kind, g)?;
            }
            for kind in m.graph_kinds() {
                if !graphs.contains_key(kind) {
                    return Err(format!(
                        "precision.graphs has no entry for {kind:?}, which the package's layers use"
                    ));
                }
            }
            Ok(())
        }
    }
}

fn check_graph(kind: &str, g: &GraphPrecision) -> Result<(), String> {
    let key = format!("precision.graphs.{kind}");
    if !PRECISIONS.contains(&g.weights.as_str()) {
        return Err(format!(
            "{key}.weights is {:?} (known: {})",
            g.weights,
            PRECISIONS.join(", ")
        ));
    }
    let quantized = matches!(g.weights.as_str(), "int8" | "int4");
    if !quantized {
        return Ok(());
    }
    match g.block_size {
        Some(b) if b >= 16 && b.is_power_of_two() => {}
        Some(b) => {
            return Err(format!(
                "{key}.block_size is {b}; it must be a power of two >= 16"
            ));
        }
        None => return Err(format!("{key}.block_size is missing for {}", g.weights)),
    }
    match g.accuracy_level {
        Some(a) if a <= 4 => Ok(()),
        Some(a) => Err(format!("{key}.accuracy_level is {a}; it must be 0..4")),
        None => Err(format!("{key}.accuracy_level is missing for {}", g.weights)),
    }
}

#[cfg(test)]
mod tests;
