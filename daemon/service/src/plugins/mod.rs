//! The daemon's side of WASM plugins (the host itself is the `moed-plugins` crate): a
//! gate plugin as the engine's routing rule, falling back to the native rule whenever the plugin
//! fails; a request's filters around the prompt and the generation's events; loading a plugin
//! from a built component and its manifest.

pub mod filters;
pub mod gates;

pub use filters::{FilteredEvents, OutputChain, RequestFilters};
pub use gates::GateBindings;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};

use moed_plugins::{
    CallFailure, GateAnswer, GateCall, GatePlugin, GroupLimit, GroupScore, LoadError, Manifest,
    MaskedChoice, ModelRouting, Plugin, PluginHost, PluginSpec, Scoring,
};

use crate::engine::{Gate, GateError, NativeGate, RouterInput, Routing};
use crate::package::{self, LayerSpec};

#[derive(Debug, thiserror::Error)]
pub enum PluginsError {
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error("model {model}: {message}")]
    Model { model: String, message: String },
}

/// The package's routing rule as the plugin interface describes it, and the native gate for it.
pub fn model_routing(m: &package::Manifest) -> Result<(ModelRouting, NativeGate), PluginsError> {
    let cfg = m.routing.as_ref().ok_or_else(|| PluginsError::Model {
        model: m.name.clone(),
        message:
            "the package has no MoE layers (no routing section); a gate plugin has nothing to route"
                .into(),
    })?;
    let bias: Vec<Option<Vec<f32>>> = m
        .layers
        .iter()
        .map(|l| match l {
            LayerSpec::Moe {
                correction_bias, ..
            } => correction_bias.clone(),
            LayerSpec::Dense { .. } => None,
        })
        .collect();
    let model = ModelRouting {
        num_layers: m.layers.len(),
        num_experts: cfg.num_experts,
        top_k: cfg.top_k,
        scoring: match cfg.scoring {
            package::Scoring::Softmax => Scoring::Softmax,
            package::Scoring::Sigmoid => Scoring::Sigmoid,
        },
        group_limit: cfg.group_limit.as_ref().map(|g| GroupLimit {
            n_group: g.n_group,
            topk_group: g.topk_group,
            group_score: match g.group_score {
                package::GroupScore::Top2Sum => GroupScore::Top2Sum,
                package::GroupScore::Max => GroupScore::Max,
            },
            masked: match g.masked {
                package::MaskedChoice::Zero => MaskedChoice::Zero,
                package::MaskedChoice::NegInf => MaskedChoice::NegInf,
            },
        }),
        norm_topk_prob: cfg.norm_topk_prob,
        norm_eps: cfg.norm_eps,
        routed_scaling_factor: cfg.routed_scaling_factor,
        correction_bias: bias.clone(),
    };
    Ok((model, NativeGate::new(cfg.clone(), bias)))
}

/// A gate plugin as the engine's routing rule. Any failure of the plugin (trap, timeout, invalid
/// answer, disabled) routes that layer natively instead, counted and logged once per kind of
/// failure; the engine then validates whatever answer it gets. The exception is an error that
/// names one of the request's parameters (`moed_plugins::named_param`): that is the client's
/// mistake, so the request fails instead of quietly running without the parameter.
pub struct WasmGate {
    plugin: GatePlugin,
    native: NativeGate,
    params: Vec<(String, String)>,
    fallbacks: AtomicU64,
    last_failure: Mutex<Option<String>>,
    /// The client's parameter the plugin refused, as the request's error message.
    param_error: Mutex<Option<String>>,
    /// One request's gate: after its first failure the plugin is not asked again for that
    /// request (one bad request counts once towards disabling the plugin for everyone).
    per_request: bool,
    given_up: AtomicBool,
}

impl WasmGate {
    /// Binds `plugin` to the package `manifest` describes; `params` go with every call.
    pub fn new(
        plugin: &Plugin,
        manifest: &package::Manifest,
        params: Vec<(String, String)>,
    ) -> Result<WasmGate, PluginsError> {
        let (model, native) = model_routing(manifest)?;
        Ok(WasmGate {
            plugin: GatePlugin::bind(plugin, model)?,
            native,
            params,
            fallbacks: AtomicU64::new(0),
            last_failure: Mutex::new(None),
            param_error: Mutex::new(None),
            per_request: false,
            given_up: AtomicBool::new(false),
        })
    }

    /// The same binding for one request with its parameters: the plugin's instances stay
    /// initialized for this model (no `init` per request); fallbacks are counted afresh, and
    /// after the first failure the rest of the request is routed natively.
    pub fn with_params(&self, params: Vec<(String, String)>) -> WasmGate {
        WasmGate {
            plugin: self.plugin.clone(),
            native: self.native.clone(),
            params,
            fallbacks: AtomicU64::new(0),
            last_failure: Mutex::new(None),
            param_error: Mutex::new(None),
            per_request: true,
            given_up: AtomicBool::new(false),
        }
    }

    /// Layer calls routed natively because the plugin failed.
    pub fn fallbacks(&self) -> u64 {
        self.fallbacks.load(Relaxed)
    }

    pub fn last_failure(&self) -> Option<String> {
        self.last_failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn plugin(&self) -> &Plugin {
        self.plugin.plugin()
    }

    /// Why the request failed when the plugin refused one of its parameters: an
    /// `InvalidArgument` message naming the key (`option 'plugin_params.KEY': ...`).
    pub fn param_error(&self) -> Option<String> {
        self.param_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The request's error when the plugin refused one of the request's parameters.
    fn refused_param(&self, failure: &CallFailure) -> Option<String> {
        let CallFailure::Param { key, message } = failure else {
            return None;
        };
        Some(crate::runner::param_refused(
            "gate",
            self.plugin.plugin().name(),
            key,
            message,
        ))
    }
}

impl Gate for WasmGate {
    fn route(
        &self,
        layer: usize,
        input: &RouterInput<'_>,
        out: &mut Routing,
    ) -> Result<(), GateError> {
        let call = GateCall {
            layer,
            num_tokens: input.num_tokens,
            num_experts: input.num_experts,
            top_k: input.top_k,
            logits: input.logits,
            params: &self.params,
        };
        if self.given_up.load(Relaxed) {
            self.fallbacks.fetch_add(1, Relaxed);
            out.reset(input.top_k);
            return self.native.route(layer, input, out);
        }
        let mut answer = GateAnswer::default();
        match self.plugin.route(&call, &mut answer) {
            Ok(()) => {
                out.reset(answer.k);
                out.push(&answer.experts, &answer.weights);
                Ok(())
            }
            Err(failure) => {
                if let Some(message) = self.refused_param(&failure) {
                    *self.param_error.lock().unwrap_or_else(|p| p.into_inner()) =
                        Some(message.clone());
                    return Err(GateError(message));
                }
                self.fallbacks.fetch_add(1, Relaxed);
                if self.per_request {
                    self.given_up.store(true, Relaxed);
                }
                let text = failure.to_string();
                let mut last = self.last_failure.lock().unwrap_or_else(|p| p.into_inner());
                if last.as_deref() != Some(text.as_str()) {
                    log::warn!(
                        "gate plugin {}: layer {layer} routed natively: {text}",
                        self.plugin.plugin().name()
                    );
                    *last = Some(text);
                }
                out.reset(input.top_k);
                self.native.route(layer, input, out)
            }
        }
    }
}

/// The manifest of a plugin in a directory: a built plugin's, or an installed one's.
pub const MANIFEST_FILE: &str = "plugin.toml";

/// Where a built plugin's files are: `NAME.wasm` with its manifest next to it (`NAME.toml`, as
/// plugins/build.sh leaves them), or a directory holding [`MANIFEST_FILE`] and one `.wasm`.
/// `entries` are the directory's entries when `path` is one (`None` when it is not). Answers
/// `(manifest, component)`, or `None` for a directory without a `.wasm`.
pub fn built_files(path: &Path, entries: Option<&[OsString]>) -> Option<(PathBuf, PathBuf)> {
    let Some(names) = entries else {
        return Some((path.with_extension("toml"), path.to_owned()));
    };
    let wasm = names
        .iter()
        .find(|n| Path::new(n).extension().is_some_and(|x| x == "wasm"))?;
    Some((path.join(MANIFEST_FILE), path.join(wasm)))
}

/// The entries of `path` when it is a directory, read with the daemon's permissions; `None`
/// when it is not one.
pub fn dir_entries(path: &Path) -> std::io::Result<Option<Vec<OsString>>> {
    if !path.is_dir() {
        return Ok(None);
    }
    let names = std::fs::read_dir(path)?
        .filter_map(|e| e.ok().map(|e| e.file_name()))
        .collect();
    Ok(Some(names))
}

/// A built plugin (see [`built_files`]), granted what its manifest asks.
pub fn spec_from_path(path: &Path) -> Result<PluginSpec, LoadError> {
    let entries = dir_entries(path).map_err(|source| LoadError::Read {
        plugin: path.display().to_string(),
        path: path.to_owned(),
        source,
    })?;
    let (manifest_path, wasm) = built_files(path, entries.as_deref())
        .ok_or_else(|| LoadError::Host(format!("{} holds no .wasm component", path.display())))?;
    let manifest = Manifest::from_file(&manifest_path)?;
    Ok(PluginSpec::as_requested(manifest, wasm))
}

/// Loads a vetted plugin from `path` (see [`spec_from_path`]) granted what its manifest asks.
pub fn load_path(host: &PluginHost, path: &Path) -> Result<Plugin, LoadError> {
    host.load(&spec_from_path(path)?)
}
