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
    Ok(())
}
