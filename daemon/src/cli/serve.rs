//! `moed serve`: runs the D-Bus service on the system bus, the session bus or a given address.

use std::path::PathBuf;

use crate::serve::{Bus, ServeOptions};

#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    /// Serve on the user's session bus instead of the system bus (state in the XDG state dir).
    #[arg(long, conflicts_with = "address")]
    session: bool,
    /// Serve on the bus at this D-Bus address (e.g. unix:path=/run/test-bus).
    #[arg(long, value_name = "ADDR")]
    address: Option<String>,
    /// Load this model at start: a package directory, or a name in the model directories.
    #[arg(long, value_name = "DIR|NAME")]
    model: Option<String>,
    /// The main configuration file (default /etc/moed/moed.toml; its FILE.d/*.toml follow).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
}

pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    let bus = match (args.session, args.address) {
        (_, Some(address)) => Bus::Address(address),
        (true, None) => Bus::Session,
        (false, None) => Bus::System,
    };
    // A relative directory is resolved here: the daemon itself only takes absolute paths.
    let model = match args.model {
        Some(m) if m.contains('/') => Some(
            std::path::absolute(&m)
                .map_err(|e| anyhow::anyhow!("--model {m}: {e}"))?
                .display()
                .to_string(),
        ),
        other => other,
    };
    crate::serve::run(ServeOptions {
        bus,
        model,
        config: args.config,
    })?;
    Ok(())
}
