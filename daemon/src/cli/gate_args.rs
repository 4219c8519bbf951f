//! `--gate PLUGIN --gate-param KEY=JSON` for the offline commands (`moed score`, `moed bench`):
//! a gate plugin, by path or by name in a plugins directory, bound to the loaded package with
//! per-request parameters, as a request's `plugins`/`plugin_params` would give it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};

use crate::engine::Engine;
use crate::plugins::{WasmGate, load_path};

/// Where a plugin name is looked up when `--plugins-dir` is not given: the build output of
/// plugins/build.sh, then where the packages install them.
const PLUGIN_DIRS: &[&str] = &["target/plugins", "/usr/share/moed/plugins"];

#[derive(clap::Args, Debug, Clone, Default)]
pub struct GateArgs {
    /// Route with this gate plugin instead of the model's own rule: a built plugin (NAME.wasm
    /// with NAME.toml beside it, or a plugin directory) or a name looked up in --plugins-dir.
    #[arg(long, value_name = "PATH_OR_NAME")]
    pub gate: Option<String>,
    /// A parameter for the gate, as a request's plugin_params: KEY=JSON, e.g.
    /// expert_budget.k=1, expert_budget.masked=[3,5], expert_budget.pinned=[0] (repeatable).
    #[arg(long, value_name = "KEY=JSON", requires = "gate")]
    pub gate_param: Vec<String>,
    /// Directory of built plugins for --gate NAME (default: target/plugins, then
    /// /usr/share/moed/plugins).
    #[arg(long, value_name = "DIR", requires = "gate")]
    pub plugins_dir: Option<PathBuf>,
}

/// `KEY=JSON` pairs, checked, sorted by key.
pub fn parse_params(items: &[String]) -> anyhow::Result<Vec<(String, String)>> {
    let mut out: Vec<(String, String)> = Vec::new();
    for item in items {
        let Some((key, value)) = item.split_once('=') else {
            bail!("--gate-param {item:?}: expected KEY=JSON, e.g. expert_budget.k=1");
        };
        let key = key.trim();
        if key.is_empty() {
            bail!("--gate-param {item:?}: the key is empty");
        }
        if let Err(e) = serde_json::from_str::<serde_json::Value>(value) {
            bail!(
                "--gate-param {key}: {value:?} is not JSON ({e}); a string needs quotes: {key}='\"text\"'"
            );
        }
        if out.iter().any(|(k, _)| k == key) {
            bail!("--gate-param {key} is given twice");
        }
        out.push((key.to_owned(), value.to_owned()));
    }
    out.sort();
    Ok(out)
}

impl GateArgs {
    fn plugin_path(&self, gate: &str) -> anyhow::Result<PathBuf> {
        let as_path = Path::new(gate);
        if gate.contains('/') || gate.ends_with(".wasm") || as_path.exists() {
            return Ok(as_path.to_owned());
        }
        let dirs: Vec<PathBuf> = match &self.plugins_dir {
            Some(d) => vec![d.clone()],
            None => PLUGIN_DIRS.iter().map(PathBuf::from).collect(),
        };
        for dir in &dirs {
            let p = dir.join(format!("{gate}.wasm"));
            if p.is_file() {
                return Ok(p);
            }
        }
        bail!(
            "gate plugin '{gate}': no {gate}.wasm in {}; give a path or --plugins-dir (plugins/build.sh builds them into target/plugins)",
            dirs.iter()
                .map(|d| d.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )
    }

    /// The gate bound to `engine`'s package with the parameters, or None without `--gate`.
    pub fn load(&self, engine: &Engine) -> anyhow::Result<Option<(Arc<WasmGate>, Params)>> {
        let Some(gate) = &self.gate else {
            return Ok(None);
        };
        let params = parse_params(&self.gate_param)?;
        let path = self.plugin_path(gate)?;
        let host = moed_plugins::PluginHost::new(Default::default(), Default::default())?;
        let plugin =
            load_path(&host, &path).with_context(|| format!("loading {}", path.display()))?;
        if plugin.kind() != moed_plugins::Kind::Gate {
            bail!(
                "{}: plugin '{}' is a {} plugin, not a gate",
                path.display(),
                plugin.name(),
                plugin.kind()
            );
        }
        let gate = WasmGate::new(&plugin, engine.package().manifest(), params.clone())?;
        Ok(Some((Arc::new(gate), params)))
    }
}

pub type Params = Vec<(String, String)>;

#[cfg(test)]
mod tests {
    use super::parse_params;

    #[test]
    fn gate_params_are_json_values_by_key() {
        let p = parse_params(&[
            "expert_budget.masked=[3,5]".into(),
            "expert_budget.k=1".into(),
        ])
        .expect("valid");
        assert_eq!(
            p,
            [
                ("expert_budget.k".to_string(), "1".to_string()),
                ("expert_budget.masked".to_string(), "[3,5]".to_string()),
            ]
        );
        assert!(parse_params(&["k".into()]).is_err());
        assert!(parse_params(&["=1".into()]).is_err());
        let e = parse_params(&["name=abc".into()])
            .expect_err("not JSON")
            .to_string();
        assert!(e.contains("not JSON"), "{e}");
        assert!(parse_params(&["k=1".into(), "k=2".into()]).is_err());
    }
}
