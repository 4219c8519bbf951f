//! Loading a package into an [`Engine`]: validation, ONNX Runtime start, provider choice, and every
//! non-expert graph created and checked against the interface FORMAT.md gives its kind.

use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};

use super::experts::{self, ExpertCache};
use super::graph::{Dim, Graph, Interface, TensorSpec};
use super::memlimit;
use super::placed::Placed;
use super::stats::Counters;
use super::{
    CacheIo, Engine, EngineError, EngineOptions, Gate, Layer, NEXT_ENGINE_ID, NativeGate,
    NoMoeGate, Provider,
};
use crate::ort_env::{self, OrtSettings};
use crate::package::{CacheDtype, CacheLayout, LayerSpec, Package};
use ort::value::TensorElementType;

pub(super) fn load(dir: &Path, opts: EngineOptions) -> Result<Engine, EngineError> {
    let package = Package::open(dir)?;
    // Before any graph is loaded: past the service's memory limit the OOM killer would end the
    // whole daemon, not just this load.
    memlimit::check(
        memlimit::Need::of(&package, opts.expert_memory_budget),
        memlimit::resident_now(),
        memlimit::limit(),
    )?;
    let rt = ort_env::runtime(&OrtSettings {
        library: opts.ort_library.clone(),
        intra_threads: opts.intra_threads,
        spinning: opts.spinning,
        tensorrt_cache: opts.tensorrt_cache_dir.clone(),
    })?;
    let m = package.manifest();
    let hidden = m.dims.hidden_size;
    let vocab = m.dims.vocab_size;
    let (num_experts, top_k) = m
        .routing
        .as_ref()
        .map_or((0, 0), |r| (r.num_experts, r.top_k));

    if let Some(budget) = opts.expert_memory_budget {
        let largest = m
            .layers
            .iter()
            .filter_map(|l| match l {
                LayerSpec::Moe { experts, .. } => {
                    experts.iter().map(|e| package.graph_bytes(e)).max()
                }
                LayerSpec::Dense { .. } => None,
            })
            .max()
            .unwrap_or(0);
        if budget < largest {
            return Err(EngineError::Options(format!(
                "expert_memory_budget {budget} bytes is smaller than one expert ({largest} bytes)"
            )));
        }
    }

    // The embedding graph doubles as the probe of each execution provider.
    let embed_iface = Interface {
        inputs: vec![TensorSpec::i64("input_ids", vec![Dim::Tokens])],
        outputs: vec![TensorSpec::rows("hidden", hidden)],
    };
    let (provider, fallbacks, embed, placed) = match opts.gpu_memory_budget {
        // Under a budget the embedding, a lookup of one row per token, stays on the CPU; the
        // GPU provider is the first one the library has (a session that fails falls back).
        Some(budget) => {
            let placed = Placed::budgeted(&package, &opts.providers, budget, &opts.activations);
            let embed = Graph::load(
                rt,
                Provider::Cpu,
                opts.quantized_matmul,
                &package,
                &m.embed,
                &embed_iface,
            )?;
            let gpu = placed.gpu();
            let skipped = opts
                .providers
                .iter()
                .take_while(|&&p| Some(p) != gpu)
                .filter_map(|&p| ort_env::provider_unavailable_reason(p).map(|why| (p, why)))
                .collect();
            (Provider::Cpu, skipped, embed, placed)
        }
        None => {
            let (provider, fallbacks, embed) = probe_provider(rt, &opts, &package, &embed_iface)?;
            let placed = Placed::all(&package, provider);
            (provider, fallbacks, embed, placed)
        }
    };

    let cache_io: Vec<CacheIo> = m
        .attention
        .cache
        .iter()
        .map(|c| CacheIo {
            shape: c.shape.iter().map(|&d| d as i64).collect(),
            per_token: c.per_token(),
        })
        .collect();
    let cache_dims = |c: &crate::package::CacheTensor| {
        let mut d = vec![Dim::Tokens];
        d.extend(c.shape.iter().map(|&n| Dim::Fixed(n)));
        d
    };
    let mut attn_in = vec![
        TensorSpec::rows("hidden", hidden),
        TensorSpec::i64("positions", vec![Dim::Tokens]),
    ];
    let mut attn_out = vec![
        TensorSpec::rows("hidden_out", hidden),
        TensorSpec::rows("ffn_in", hidden),
    ];
    for c in &m.attention.cache {
        let mut past = cache_dims(c);
        if m.attention.cache_layout == CacheLayout::HeadMajor {
            // [heads, C, ..]: the buffer's capacity C takes the dynamic dimension's place.
            past.swap(0, 1);
        }
        attn_in.push(TensorSpec {
            name: format!("past_{}", c.name),
            elem: match m.attention.cache_dtype {
                CacheDtype::Float32 => TensorElementType::Float32,
                CacheDtype::Float16 => TensorElementType::Float16,
            },
            dims: past,
        });
        attn_out.push(TensorSpec::f32(format!("new_{}", c.name), cache_dims(c)));
    }
    let attn_iface = Interface {
        inputs: attn_in.clone(),
        outputs: attn_out.clone(),
    };
    // A MoE layer whose attention graph also computes the router logits.
    attn_out.push(TensorSpec::rows("router_logits", num_experts));
    let attn_router_iface = Interface {
        inputs: attn_in,
        outputs: attn_out,
    };
    let ffn_iface = Interface {
        inputs: vec![TensorSpec::rows("x", hidden)],
        outputs: vec![TensorSpec::rows("y", hidden)],
    };
    let router_iface = Interface {
        inputs: vec![TensorSpec::rows("ffn_in", hidden)],
        outputs: vec![TensorSpec::rows("logits", num_experts)],
    };
    let head_iface = Interface {
        inputs: vec![TensorSpec::rows("hidden", hidden)],
        outputs: vec![TensorSpec::rows("logits", vocab)],
    };

    // The embedding graph is loaded; then the head and each layer's graphs (experts are lazy),
    // several at once: creating a session is CPU-bound (parsing, prepacking the weights).
    use crate::placement::GraphKind as K;
    let mut jobs: Vec<(&str, &Interface, Option<usize>)> = vec![(
        m.head.as_str(),
        &head_iface,
        placed.fixed_slot(K::Head, None),
    )];
    for (l, spec) in m.layers.iter().enumerate() {
        let slot = |kind| placed.fixed_slot(kind, Some(l));
        match spec {
            LayerSpec::Dense { attn, mlp, .. } => {
                jobs.push((attn, &attn_iface, slot(K::Attention)));
                jobs.push((mlp, &ffn_iface, slot(K::DenseMlp)));
            }
            LayerSpec::Moe {
                attn,
                router,
                shared,
                ..
            } => {
                match router {
                    Some(router) => {
                        jobs.push((attn, &attn_iface, slot(K::Attention)));
                        jobs.push((router, &router_iface, slot(K::Router)));
                    }
                    // Without a router graph, the attention graph computes the router logits.
                    None => jobs.push((attn, &attn_router_iface, slot(K::Attention))),
                }
                if let Some(s) = shared {
                    jobs.push((s, &ffn_iface, slot(K::Shared)));
                }
            }
        }
    }
    let total = 1 + jobs.len();
    // Counted and reported under one lock so that a progress bar only moves forward.
    let loaded = Mutex::new(1usize);
    let report = |done: usize| {
        if let Some(progress) = &opts.progress {
            (progress.0)(done, total);
        }
    };
    report(1);
    let slots: Vec<Mutex<Option<Graph>>> = jobs.iter().map(|_| Mutex::new(None)).collect();
    experts::run_parallel(jobs.len(), rt.intra_threads(), |i| {
        let (rel, iface, slot) = jobs[i];
        let (graph, _) = placed.load(slot, rel, |p| {
            Graph::load(rt, p, opts.quantized_matmul, &package, rel, iface)
        })?;
        *slots[i].lock().unwrap_or_else(|p| p.into_inner()) = Some(graph);
        let mut done = loaded.lock().unwrap_or_else(|p| p.into_inner());
        *done += 1;
        report(*done);
        Ok(())
    })?;
    let mut graphs = slots
        .into_iter()
        .map(|s| s.into_inner().unwrap_or_else(|p| p.into_inner()));
    let mut next = |rel: &str| {
        graphs.next().flatten().ok_or_else(|| EngineError::Load {
            file: rel.to_string(),
            message: "the session was not created".into(),
        })
    };
    let head = next(&m.head)?;
    let mut layers = Vec::with_capacity(m.layers.len());
    let mut biases = Vec::with_capacity(m.layers.len());
    let mut experts_per_layer = Vec::with_capacity(m.layers.len());
    for spec in &m.layers {
        match spec {
            LayerSpec::Dense { attn, mlp, .. } => {
                layers.push(Layer::Dense {
                    attn: next(attn)?,
                    mlp: next(mlp)?,
                });
                biases.push(None);
                experts_per_layer.push(0);
            }
            LayerSpec::Moe {
                attn,
                router,
                experts,
                shared,
                correction_bias,
                ..
            } => {
                layers.push(Layer::Moe {
                    attn: next(attn)?,
                    router: router.as_deref().map(&mut next).transpose()?,
                    shared: shared.as_deref().map(&mut next).transpose()?,
                    expert_bytes: experts.iter().map(|e| package.graph_bytes(e)).collect(),
                    experts: experts.clone(),
                });
                biases.push(correction_bias.clone());
                experts_per_layer.push(experts.len());
            }
        }
    }
    let gate: Arc<dyn Gate> = match &m.routing {
        Some(cfg) => Arc::new(NativeGate::new(cfg.clone(), biases)),
        None => Arc::new(NoMoeGate),
    };
    log::info!(
        "loaded {} ({}, {} layers) with {provider}; placement: {}",
        m.name,
        m.architecture,
        m.layers.len(),
        placed.summary().line()
    );
    let foresight = (opts.prefetch_next_layer && opts.expert_memory_budget.is_some())
        .then(|| super::prefetch::Foresight::new(&layers, num_experts));
    let engine = Engine {
        id: NEXT_ENGINE_ID.fetch_add(1, Relaxed),
        rt,
        provider,
        matmul: opts.quantized_matmul,
        fallbacks,
        mode: opts.mode,
        embed,
        head,
        layers,
        cache_io,
        expert_iface: ffn_iface,
        experts: ExpertCache::new(opts.expert_memory_budget),
        placed,
        gate,
        counters: Counters::new(&experts_per_layer),
        hidden,
        vocab,
        num_experts,
        top_k,
        side_by_side: AtomicBool::new(opts.experts_side_by_side),
        helpers: std::sync::OnceLock::new(),
        batcher: Arc::new(super::batcher::Batcher::new(opts.batch)),
        foresight,
        package,
    };
    engine.release_mapped_weights();
    Ok(engine)
}

/// The provider chosen, those passed over with why, and the embedding graph loaded with it.
type Probed = (Provider, Vec<(Provider, String)>, Graph);

/// The first provider of `opts.providers` that loads the embedding graph, which doubles as the
/// probe of each.
fn probe_provider(
    rt: &ort_env::OrtRuntime,
    opts: &EngineOptions,
    package: &Package,
    embed_iface: &Interface,
) -> Result<Probed, EngineError> {
    let m = package.manifest();
    let mut embed = None;
    let mut probe_err = None;
    let (provider, fallbacks) = ort_env::choose_provider(&opts.providers, |p| {
        match Graph::load(rt, p, opts.quantized_matmul, package, &m.embed, embed_iface) {
            Ok(g) => {
                embed = Some(g);
                Ok(())
            }
            // A broken graph is the package's fault, not the provider's: report it as such.
            Err(e @ EngineError::Interface { .. }) => {
                let msg = e.to_string();
                probe_err = Some(e);
                Err(msg)
            }
            Err(e) => {
                let msg = e.to_string();
                if p == Provider::Cpu {
                    probe_err = Some(e);
                }
                Err(msg)
            }
        }
    })
    .map_err(|e| probe_err.take().unwrap_or(EngineError::Runtime(e)))?;
    let embed = match embed {
        Some(g) => g,
        None => {
            return Err(EngineError::Options(
                "no execution provider loaded the embedding graph".into(),
            ));
        }
    };

    Ok((provider, fallbacks, embed))
}
