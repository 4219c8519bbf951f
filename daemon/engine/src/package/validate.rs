//! Consistency checks of a parsed manifest and of the files it lists, run before any graph loads.

use std::collections::HashSet;
use std::path::{Component, Path};

use super::PackageError;
use super::manifest::{CacheDtype, CacheLayout, GroupScore, LayerSpec, Manifest};

const ARCHITECTURES: &[&str] = &[
    "deepseek_v3",
    "deepseek_v2",
    "mixtral",
    "qwen3_moe",
    "qwen2_moe",
    "olmoe",
];

/// Checks the manifest's internal consistency; `Err(message)` names the key and the problem.
pub(crate) fn check_manifest(m: &Manifest) -> Result<(), String> {
    if !ARCHITECTURES.contains(&m.architecture.as_str()) {
        return Err(format!(
            "architecture {:?} is not one moed runs (known: {})",
            m.architecture,
            ARCHITECTURES.join(", ")
        ));
    }
    let d = &m.dims;
    for (key, v) in [
        ("dims.hidden_size", d.hidden_size),
        ("dims.vocab_size", d.vocab_size),
        ("dims.num_layers", d.num_layers),
        ("dims.context_length", d.context_length),
    ] {
        if v == 0 {
            return Err(format!("{key} is 0"));
        }
    }
    if m.precision.activations != "fp32" {
        return Err(format!(
            "precision.activations is {:?}; this moed runs fp32 activations only",
            m.precision.activations
        ));
    }
    super::precision::check(m)?;
    check_attention(m)?;
    if m.layers.len() != d.num_layers {
        return Err(format!(
            "layers lists {} layers but dims.num_layers is {}",
            m.layers.len(),
            d.num_layers
        ));
    }
    let any_moe = m.layers.iter().any(LayerSpec::is_moe);
    if any_moe {
        check_routing(m)?;
    }
    for (i, layer) in m.layers.iter().enumerate() {
        if layer.index() != i {
            return Err(format!(
                "layers[{i}] has index {}; layers must be listed in order",
                layer.index()
            ));
        }
        if let LayerSpec::Moe {
            experts,
            correction_bias,
            router,
            fused,
            ..
        } = layer
        {
            if let Some(f) = fused.iter().find(|f| f.as_str() != "router") {
                return Err(format!(
                    "layers[{i}].fused lists {f:?}; only \"router\" can be fused into attention"
                ));
            }
            match (router.is_some(), layer.router_fused()) {
                (true, true) => {
                    return Err(format!(
                        "layers[{i}] has a router graph and lists the router as fused into attention"
                    ));
                }
                (false, false) => {
                    return Err(format!(
                        "layers[{i}] has no router graph (and does not list \"router\" in fused)"
                    ));
                }
                _ => {}
            }
            let e = m.routing.as_ref().map_or(0, |r| r.num_experts);
            if experts.len() != e {
                return Err(format!(
                    "layers[{i}].experts has {} entries but routing.num_experts is {e}",
                    experts.len()
                ));
            }
            if let Some(bias) = correction_bias {
                if bias.len() != e {
                    return Err(format!(
                        "layers[{i}].correction_bias has {} values but routing.num_experts is {e}",
                        bias.len()
                    ));
                }
                if let Some(j) = bias.iter().position(|b| !b.is_finite()) {
                    return Err(format!(
                        "layers[{i}].correction_bias[{j}] is not a finite number"
                    ));
                }
            }
        }
    }
    if !m.files.contains_key(&m.tokenizer.file) {
        return Err(format!(
            "tokenizer.file {:?} is not listed in files",
            m.tokenizer.file
        ));
    }
    for path in graph_paths(m) {
        if !m.files.contains_key(path) {
            return Err(format!("graph {path:?} is not listed in files"));
        }
    }
    for name in m.files.keys() {
        check_relative(name)?;
    }
    let v = d.vocab_size as u32;
    for (key, tok) in [
        ("bos", &m.special_tokens.bos),
        ("eos", &m.special_tokens.eos),
        ("pad", &m.special_tokens.pad),
    ] {
        if let Some(t) = tok
            && t.id >= v
        {
            return Err(format!(
                "special_tokens.{key}.id {} is outside the vocabulary (vocab_size {v})",
                t.id
            ));
        }
    }
    if let Some(&id) = m.stop_token_ids.iter().find(|&&id| id >= v) {
        return Err(format!(
            "stop_token_ids holds {id}, outside the vocabulary (vocab_size {v})"
        ));
    }
    Ok(())
}

fn check_attention(m: &Manifest) -> Result<(), String> {
    let a = &m.attention;
    if a.kind != "mla" && a.kind != "mha" {
        return Err(format!("attention.kind is {:?} (known: mla, mha)", a.kind));
    }
    if a.cache.is_empty() {
        return Err("attention.cache is empty".into());
    }
    let mut seen = HashSet::new();
    for (i, c) in a.cache.iter().enumerate() {
        if c.name.is_empty() || !seen.insert(c.name.as_str()) {
            return Err(format!(
                "attention.cache[{i}].name {:?} is empty or repeated",
                c.name
            ));
        }
        if c.shape.is_empty() || c.shape.contains(&0) {
            return Err(format!(
                "attention.cache[{i}] ({}) has shape {:?}",
                c.name, c.shape
            ));
        }
        if a.cache_layout == CacheLayout::HeadMajor && c.shape.len() < 2 {
            return Err(format!(
                "attention.cache[{i}] ({}) has shape {:?}, but a head_major cache needs [heads, ..]",
                c.name, c.shape
            ));
        }
    }
    if a.cache_dtype != CacheDtype::Float32 && m.format_version < 3 {
        return Err(format!(
            "attention.cache_dtype is a format 3 key but format_version is {} (set format_version 3)",
            m.format_version
        ));
    }
    Ok(())
}

fn check_routing(m: &Manifest) -> Result<(), String> {
    let Some(r) = &m.routing else {
        return Err("the package has MoE layers but no routing section".into());
    };
    if r.num_experts == 0 {
        return Err("routing.num_experts is 0".into());
    }
    if r.top_k == 0 || r.top_k > r.num_experts {
        return Err(format!(
            "routing.top_k is {} but must be between 1 and routing.num_experts ({})",
            r.top_k, r.num_experts
        ));
    }
    if let Some(g) = &r.group_limit {
        if g.n_group == 0 || !r.num_experts.is_multiple_of(g.n_group) {
            return Err(format!(
                "routing.group_limit.n_group {} does not divide routing.num_experts {}",
                g.n_group, r.num_experts
            ));
        }
        if g.topk_group == 0 || g.topk_group > g.n_group {
            return Err(format!(
                "routing.group_limit.topk_group is {} but must be between 1 and n_group ({})",
                g.topk_group, g.n_group
            ));
        }
        let size = r.num_experts / g.n_group;
        if g.group_score == GroupScore::Top2Sum && size < 2 {
            return Err(format!(
                "routing.group_limit.group_score top2_sum needs groups of 2 or more experts, groups have {size}"
            ));
        }
        if r.top_k > g.topk_group * size {
            return Err(format!(
                "routing.top_k {} exceeds the {} experts left in topk_group {} groups of {size}",
                r.top_k,
                g.topk_group * size,
                g.topk_group
            ));
        }
    }
    if !(r.norm_eps.is_finite() && r.norm_eps >= 0.0) {
        return Err(format!(
            "routing.norm_eps {} must be finite and >= 0",
            r.norm_eps
        ));
    }
    if !(r.routed_scaling_factor.is_finite() && r.routed_scaling_factor > 0.0) {
        return Err(format!(
            "routing.routed_scaling_factor {} must be finite and > 0",
            r.routed_scaling_factor
        ));
    }
    Ok(())
}

/// Every graph file the manifest names.
pub(crate) fn graph_paths(m: &Manifest) -> Vec<&str> {
    let mut out = vec![m.embed.as_str(), m.head.as_str()];
    for layer in &m.layers {
        match layer {
            LayerSpec::Dense { attn, mlp, .. } => {
                out.push(attn);
                out.push(mlp);
            }
            LayerSpec::Moe {
                attn,
                router,
                experts,
                shared,
                ..
            } => {
                out.push(attn);
                out.extend(router.as_deref());
                out.extend(experts.iter().map(String::as_str));
                if let Some(s) = shared {
                    out.push(s);
                }
            }
        }
    }
    out
}

/// A package file name must stay inside the package: relative, no `..`.
fn check_relative(name: &str) -> Result<(), String> {
    let p = Path::new(name);
    if name.is_empty() || p.components().any(|c| !matches!(c, Component::Normal(_))) {
        return Err(format!(
            "files key {name:?} is not a plain relative path inside the package"
        ));
    }
    Ok(())
}

/// Every file in `files` exists with the listed size.
pub(crate) fn check_files(dir: &Path, m: &Manifest) -> Result<(), PackageError> {
    for (name, entry) in &m.files {
        let path = dir.join(name);
        if !path.exists() {
            return Err(PackageError::MissingFile {
                file: name.clone(),
                path,
            });
        }
        let meta = std::fs::metadata(&path).map_err(|e| PackageError::Read {
            path: path.clone(),
            message: e.to_string(),
        })?;
        if !meta.is_file() {
            return Err(PackageError::Read {
                path,
                message: "not a regular file".into(),
            });
        }
        if meta.len() != entry.bytes {
            return Err(PackageError::WrongSize {
                file: name.clone(),
                expected: entry.bytes,
                found: meta.len(),
                kind: if meta.len() < entry.bytes {
                    "truncated"
                } else {
                    "longer than listed"
                },
            });
        }
    }
    Ok(())
}
