//! `moed-http`: an OpenAI-compatible HTTP bridge to moed's D-Bus interface, socket-activated
//! by `moed-http.socket` (docs/http.md). The daemon keeps its network sandbox; this process
//! speaks HTTP on a unix socket (and, when the administrator adds one, a loopback TCP port).

mod api;
mod error;
mod listen;
mod metrics;
mod openai;
mod response_format;
mod run;
mod server;
mod tools;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Parser;
use log::{LevelFilter, Log, Metadata, Record};

use listen::{Socket, TcpPeers, UnixPeers};

/// Most bytes of a request body unless `--max-body-bytes` says otherwise: moed's default
/// prompt limit (4 MiB) with room for JSON escaping.
const DEFAULT_MAX_BODY: u64 = 16 * 1024 * 1024;
/// Most bytes of the token file.
const MAX_TOKEN_FILE: u64 = 64 * 1024;

#[derive(Debug, Parser)]
#[command(
    name = "moed-http",
    version,
    about = "OpenAI-compatible HTTP bridge to moed (socket-activated by moed-http.socket)"
)]
struct Args {
    /// The bus moed serves on: `system`, `session`, or a D-Bus address.
    #[arg(long, default_value = "system", env = "MOED_HTTP_BUS")]
    bus: String,
    /// Listen on this unix socket path instead of the sockets systemd passes (repeatable).
    #[arg(long, value_name = "PATH")]
    listen: Vec<PathBuf>,
    /// Bearer tokens accepted from TCP clients, one a line (`#` starts a comment). Without it
    /// TCP clients are refused; unix-socket clients are identified by their credentials.
    #[arg(long, value_name = "PATH")]
    token_file: Option<PathBuf>,
    /// Most bytes of a request body (1 KiB to 256 MiB).
    #[arg(long, default_value_t = DEFAULT_MAX_BODY, value_parser = clap::value_parser!(u64).range(1024..=256 * 1024 * 1024))]
    max_body_bytes: u64,
    /// Seconds a client may take to send a request's headers, counted from when the connection
    /// opens or its last response ends (so an idle keep-alive connection closes after it too).
    #[arg(long, value_name = "SECONDS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3600))]
    header_timeout: u64,
    /// Seconds a client may take to send a request's body, after its headers.
    #[arg(long, value_name = "SECONDS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=3600))]
    body_timeout: u64,
    /// Most connections open at once, all sockets together; more wait in the listen backlog.
    #[arg(long, value_name = "N", default_value_t = 256, value_parser = clap::value_parser!(u64).range(1..=65536))]
    max_connections: u64,
    /// error, warn, info, debug or trace.
    #[arg(long, default_value = "info")]
    log_level: LevelFilter,
}

struct StderrLog;

impl Log for StderrLog {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }
    fn log(&self, record: &Record<'_>) {
        eprintln!("moed-http[{}]: {}", record.level(), record.args());
    }
    fn flush(&self) {}
}

fn init_log(level: LevelFilter) {
    let journal = systemd_journal_logger::connected_to_journal()
        .then(|| systemd_journal_logger::JournalLog::new().ok())
        .flatten();
    let _ = match journal {
        Some(j) => j.with_syslog_identifier("moed-http".into()).install(),
        None => log::set_logger(&StderrLog),
    };
    log::set_max_level(level);
}

fn read_tokens(path: &PathBuf) -> anyhow::Result<Vec<String>> {
    let meta =
        std::fs::metadata(path).with_context(|| format!("--token-file {}", path.display()))?;
    if meta.len() > MAX_TOKEN_FILE {
        bail!(
            "--token-file {}: {} bytes, at most {MAX_TOKEN_FILE}",
            path.display(),
            meta.len()
        );
    }
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("--token-file {}", path.display()))?;
    let tokens: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .collect();
    if let Some(short) = tokens.iter().find(|t| t.len() < 16) {
        bail!(
            "--token-file {}: a token of {} characters; use at least 16 (e.g. `openssl rand -hex 32`)",
            path.display(),
            short.len()
        );
    }
    Ok(tokens)
}

async fn connect(bus: &str) -> anyhow::Result<zbus::Connection> {
    let builder = match bus {
        "system" => zbus::connection::Builder::system(),
        "session" => zbus::connection::Builder::session(),
        address => zbus::connection::Builder::address(address),
    };
    builder
        .build()
        .await
        .with_context(|| format!("connecting to the D-Bus bus '{bus}' where moed serves"))
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // Before any thread exists: taking the sockets clears LISTEN_* from the environment.
    let mut sockets = listen::from_systemd()?;
    init_log(args.log_level);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    runtime.block_on(serve(args, std::mem::take(&mut sockets)))
}

async fn serve(args: Args, mut sockets: Vec<Socket>) -> anyhow::Result<()> {
    for path in &args.listen {
        sockets.push(listen::bind_unix(path)?);
    }
    if sockets.is_empty() {
        bail!(listen::ListenError::Nothing);
    }
    let tokens = match &args.token_file {
        Some(path) => read_tokens(path)?,
        None => Vec::new(),
    };
    let conn = connect(&args.bus).await?;
    let app = api::App {
        conn,
        tokens: Arc::new(tokens),
    };
    let router = api::router(
        app,
        usize::try_from(args.max_body_bytes).unwrap_or(usize::MAX),
    );
    let bounds = server::Bounds {
        header: Duration::from_secs(args.header_timeout),
        body: Duration::from_secs(args.body_timeout),
        connections: usize::try_from(args.max_connections).unwrap_or(usize::MAX),
    };
    // One budget of connections for all sockets: per socket, a second socket would double it.
    let slots = Arc::new(tokio::sync::Semaphore::new(bounds.connections));
    let mut servers = tokio::task::JoinSet::new();
    for socket in sockets {
        let (router, slots) = (router.clone(), slots.clone());
        match socket {
            Socket::Unix(l) => {
                let l = tokio::net::UnixListener::from_std(l).context("a unix socket")?;
                servers.spawn(server::serve(UnixPeers(l), router, bounds, slots));
            }
            Socket::Tcp(l) => {
                let l = tokio::net::TcpListener::from_std(l).context("a TCP socket")?;
                servers.spawn(server::serve(TcpPeers(l), router, bounds, slots));
            }
        }
    }
    log::info!("serving {} socket(s)", servers.len());
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("SIGTERM handler")?;
    tokio::select! {
        _ = term.recv() => log::info!("stopping (SIGTERM)"),
        _ = tokio::signal::ctrl_c() => log::info!("stopping (SIGINT)"),
        Some(done) = servers.join_next() => {
            done.context("a listener task failed")?;
            bail!("a listening socket stopped accepting connections");
        }
    }
    Ok(())
}
