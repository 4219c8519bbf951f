//! `moed check-config`: loads and checks the configuration, prints the effective values.

use std::path::PathBuf;

use crate::config::Config;
use crate::engine::Provider;
use crate::serve::{AccessPolicy, SubjectMode};

#[derive(clap::Args, Debug)]
pub struct CheckConfigArgs {
    /// The main configuration file (default /etc/moed/moed.toml; its FILE.d/*.toml follow).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
}

pub fn run(args: CheckConfigArgs) -> anyhow::Result<()> {
    let config = Config::load(args.config.as_deref())?;
    // Groups are resolved as the daemon would, so a missing group fails here too.
    // (How polkit would be asked does not matter to a check.)
    AccessPolicy::new(&config.access, SubjectMode::BusName)?;
    if config.sources.is_empty() {
        println!("# no configuration file found; built-in defaults and MOED_* variables");
    }
    for source in &config.sources {
        println!("# read {}", source.display());
    }
    print!("{}", config.to_toml());
    print!("{}", provider_lines(&config));
    print!("{}", placement_lines(&config, &gpu_verdicts(&config)));
    Ok(())
}

/// What each GPU provider lacks here (`None`: nothing), as `provider_lines` reports it; empty
/// when no ONNX Runtime library is found.
fn gpu_verdicts(config: &Config) -> Vec<(Provider, Option<String>)> {
    use moed_engine::gpu_libs::{self, DlLoader};
    match moed_engine::ort_env::locate_library(config.engine.ort_library.as_deref()) {
        Ok(library) => gpu_libs::check(&library, &DlLoader)
            .into_iter()
            .map(|c| (c.provider, c.missing))
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// Comment lines: how `engine.gpu_memory_budget` would place a model's graphs on this machine,
/// and where TensorRT would cache its engines.
fn placement_lines(config: &Config, verdicts: &[(Provider, Option<String>)]) -> String {
    let e = &config.engine;
    let mut out = match e.gpu_memory_budget {
        None => "# placement: no gpu_memory_budget; the first usable provider of engine.providers runs every graph\n".to_string(),
        Some(0) => "# placement: gpu_memory_budget 0; every graph on cpu\n".to_string(),
        Some(budget) => {
            let usable = e.providers.iter().copied().find(|&p| {
                p != Provider::Cpu && verdicts.iter().any(|(v, missing)| *v == p && missing.is_none())
            });
            match usable {
                Some(gpu) => format!(
                    "# placement: up to {budget} bytes on {gpu} (attention, routers, head, shared and dense MLPs, then the hottest experts), the rest and the embedding on cpu\n"
                ),
                None => format!(
                    "# placement: gpu_memory_budget {budget} bytes, but no GPU provider of engine.providers is usable here (see above); every graph would run on cpu\n"
                ),
            }
        }
    };
    if e.providers.contains(&Provider::TensorRt) {
        let dir = e
            .tensorrt_cache_dir
            .clone()
            .unwrap_or_else(moed_engine::tensorrt_cache::default_dir);
        out.push_str(&format!("# TensorRT engine cache: {}\n", dir.display()));
    }
    out
}

/// Comment lines (the output stays TOML): the ONNX Runtime library that would be used, and for each
/// GPU provider whether what it needs is on this machine, or the first thing missing.
fn provider_lines(config: &Config) -> String {
    use moed_engine::gpu_libs::{self, DlLoader};
    use moed_engine::ort_env;
    let library = match ort_env::locate_library(config.engine.ort_library.as_deref()) {
        Ok(path) => path,
        Err(e) => {
            return format!(
                "# ONNX Runtime: {}\n",
                e.to_string().replace('\n', "\n#   ")
            );
        }
    };
    let mut out = format!(
        "# ONNX Runtime: {}\n# provider cpu: usable\n",
        library.display()
    );
    for check in gpu_libs::check(&library, &DlLoader) {
        match check.missing {
            None => out.push_str(&format!(
                "# provider {}: its libraries and the NVIDIA driver are here (a GPU is still needed)\n",
                check.provider
            )),
            Some(why) => out.push_str(&format!("# provider {}: unusable: {why}\n", check.provider)),
        }
    }
    out
}
