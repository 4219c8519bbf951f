//! `moed check-config`: loads and checks the configuration, prints the effective values.

use std::path::PathBuf;

use crate::config::Config;
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
    Ok(())
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
