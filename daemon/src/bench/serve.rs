//! `moed bench-serve`: N concurrent streaming D-Bus clients against one daemon next to a single
//! client and the offline generation loop, all in one run on a private bus; the ratios of N
//! clients to one (aggregate tokens/s, p99 gap between a request's tokens) are what continuous
//! batching is judged by.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use moed_dbus::GenerateOptions;
use moed_dbus::client::RequestEvent;
use moed_dbus::proxy::EngineProxy;

use crate::engine::{Engine, EngineOptions};
use crate::generate::{self, GenerateRequest, Prompt, SamplingOverrides};
use crate::text::model::TextModel;

#[derive(Debug, thiserror::Error)]
#[error("bench-serve: {0}")]
pub struct LoadBenchError(String);

impl LoadBenchError {
    pub(super) fn new(message: String) -> Self {
        LoadBenchError(message)
    }
}

pub(super) fn fail(what: &str, e: impl std::fmt::Display) -> LoadBenchError {
    LoadBenchError(format!("{what}: {e}"))
}

#[derive(Debug, Clone)]
pub struct LoadBenchOptions {
    pub model: PathBuf,
    pub clients: usize,
    pub requests: usize,
    pub max_tokens: u32,
    pub prompt: String,
    pub ort_library: Option<PathBuf>,
    /// The `moed` binary to run as the daemon.
    pub moed: PathBuf,
}

/// One measured configuration.
#[derive(Debug, Clone)]
pub struct Row {
    pub name: String,
    pub requests: usize,
    pub tokens: u64,
    pub seconds: f64,
    pub latencies_ms: Vec<f64>,
    /// Gaps between consecutive `Token` signals of one request (streamed rows only).
    pub token_gaps_ms: Vec<f64>,
    /// Per request: its decode time over its tokens after the first (from `Finished`'s info).
    pub request_token_ms: Vec<f64>,
}

impl Row {
    fn percentile(&self, p: f64) -> f64 {
        crate::bench::measure::percentile(&self.latencies_ms, p / 100.0)
    }
    fn gap_percentile(&self, p: f64) -> f64 {
        crate::bench::measure::percentile(&self.token_gaps_ms, p / 100.0)
    }
    fn request_token_percentile(&self, p: f64) -> f64 {
        crate::bench::measure::percentile(&self.request_token_ms, p / 100.0)
    }
    fn tokens_per_s(&self) -> f64 {
        self.tokens as f64 / self.seconds.max(1e-9)
    }
    fn ms_per_token(&self) -> f64 {
        if self.tokens == 0 {
            0.0
        } else {
            self.seconds * 1e3 / self.tokens as f64
        }
    }
}

pub(super) struct Children {
    bus_pid: Option<i32>,
    daemon: Option<Child>,
}

impl Children {
    pub(super) fn daemon_pid(&self) -> Option<u32> {
        self.daemon.as_ref().map(Child::id)
    }
}

impl Drop for Children {
    fn drop(&mut self) {
        if let Some(mut d) = self.daemon.take() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(d.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let _ = d.wait();
        }
        if let Some(pid) = self.bus_pid {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
    }
}

fn options(max_tokens: u32) -> GenerateOptions {
    GenerateOptions {
        max_tokens: Some(max_tokens),
        temperature: Some(0.0),
        seed: Some(1),
        ignore_eos: true,
        ..GenerateOptions::default()
    }
}

/// The same request through the library, no D-Bus: the baseline.
fn offline(opts: &LoadBenchOptions) -> Result<Row, LoadBenchError> {
    let engine = Engine::load(
        &opts.model,
        EngineOptions {
            ort_library: opts.ort_library.clone(),
            ..EngineOptions::default()
        },
    )
    .map_err(|e| fail("loading the model", e))?;
    let text = TextModel::load(engine.package()).map_err(|e| fail("loading the tokenizer", e))?;
    // Raw text, as the clients send it (`Generate`).
    let mut req = GenerateRequest::new(Prompt::Raw(opts.prompt.clone()));
    req.sampling = SamplingOverrides {
        temperature: Some(0.0),
        ..SamplingOverrides::default()
    };
    req.max_tokens = Some(opts.max_tokens as usize);
    req.seed = Some(1);
    req.ignore_eos = true;
    let cancel = AtomicBool::new(false);
    // One untimed run loads every expert the prompt needs, as the daemon's warm-up does.
    generate::generate(&engine, &text, &req, &cancel, &mut |_| {})
        .map_err(|e| fail("generating", e))?;
    let mut row = Row {
        name: "offline (library, no D-Bus)".into(),
        requests: 0,
        tokens: 0,
        seconds: 0.0,
        latencies_ms: vec![],
        token_gaps_ms: vec![],
        request_token_ms: vec![],
    };
    let start = Instant::now();
    for _ in 0..opts.requests {
        let t = Instant::now();
        let out = generate::generate(&engine, &text, &req, &cancel, &mut |_| {})
            .map_err(|e| fail("generating", e))?;
        row.latencies_ms.push(t.elapsed().as_secs_f64() * 1e3);
        row.tokens += out.token_ids.len() as u64;
        row.requests += 1;
    }
    row.seconds = start.elapsed().as_secs_f64();
    Ok(row)
}

async fn clients(
    address: &str,
    name: String,
    clients: usize,
    requests: usize,
    opts: &LoadBenchOptions,
) -> Result<Row, LoadBenchError> {
    let mut tasks = Vec::new();
    let start = Instant::now();
    for _ in 0..clients {
        let address = address.to_string();
        let prompt = opts.prompt.clone();
        let max_tokens = opts.max_tokens;
        tasks.push(tokio::spawn(async move {
            let (conn, _engine) = connect(&address).await?;
            let options = options(max_tokens);
            let mut out = Vec::new();
            for _ in 0..requests {
                let t = Instant::now();
                let mut stream = moed_dbus::client::generate(&conn, &prompt, &options)
                    .await
                    .map_err(|e| fail("Generate", e))?;
                let (mut gaps, mut last, mut tokens) = (Vec::new(), None::<Instant>, 0u64);
                let mut per_token = None;
                while let Some(event) = stream.next().await {
                    match event.map_err(|e| fail("the request's signals", e))? {
                        RequestEvent::Token { .. } => {
                            let now = Instant::now();
                            if let Some(l) = last {
                                gaps.push(now.duration_since(l).as_secs_f64() * 1e3);
                            }
                            last = Some(now);
                        }
                        RequestEvent::Finished { info, .. } => {
                            tokens = info.completion_tokens as u64;
                            if info.completion_tokens > 1 {
                                let decode = info.total_ms - info.first_token_ms;
                                per_token = Some(decode / f64::from(info.completion_tokens - 1));
                            }
                        }
                        _ => {}
                    }
                }
                out.push((t.elapsed().as_secs_f64() * 1e3, tokens, gaps, per_token));
            }
            Ok::<_, LoadBenchError>(out)
        }));
    }
    let mut row = Row {
        name,
        requests: 0,
        tokens: 0,
        seconds: 0.0,
        latencies_ms: vec![],
        token_gaps_ms: vec![],
        request_token_ms: vec![],
    };
    for task in tasks {
        for (ms, tokens, gaps, per_token) in task.await.map_err(|e| fail("client task", e))?? {
            row.latencies_ms.push(ms);
            row.token_gaps_ms.extend(gaps);
            row.request_token_ms.extend(per_token);
            row.tokens += tokens;
            row.requests += 1;
        }
    }
    row.seconds = start.elapsed().as_secs_f64();
    Ok(row)
}

pub(super) fn start_bus_and_daemon(
    opts: &LoadBenchOptions,
    work: &Path,
) -> Result<(String, Children), LoadBenchError> {
    let out = Command::new("dbus-daemon")
        .args(["--session", "--fork", "--print-address=1", "--print-pid=1"])
        .output()
        .map_err(|e| fail("starting dbus-daemon (install the dbus package)", e))?;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let mut lines = text.lines();
    let address = lines.next().unwrap_or_default().trim().to_string();
    let bus_pid = lines.next().and_then(|l| l.trim().parse().ok());
    let mut children = Children {
        bus_pid,
        daemon: None,
    };
    if address.is_empty() {
        return Err(LoadBenchError(format!(
            "dbus-daemon printed no address: {}",
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    let config = work.join("moed.toml");
    let mut toml = format!(
        "[models]\ndirs = []\n[service]\nmax_concurrent = {}\nqueue_depth = {}\nmax_requests_per_user = {}\nstate_directory = \"{}\"\n[access]\nauthorizer = \"group\"\n[log]\nlevel = \"warn\"\n",
        opts.clients,
        opts.clients,
        // Every client of the benchmark is this one user.
        2 * opts.clients,
        work.join("state").display()
    );
    if let Some(lib) = &opts.ort_library {
        toml.push_str(&format!("[engine]\nort_library = \"{}\"\n", lib.display()));
    }
    std::fs::write(&config, toml).map_err(|e| fail("writing the configuration", e))?;
    let model = std::path::absolute(&opts.model).map_err(|e| fail("model path", e))?;
    let child = Command::new(&opts.moed)
        .args(["serve", "--address", &address, "--config"])
        .arg(&config)
        .arg("--model")
        .arg(&model)
        .env_remove("NOTIFY_SOCKET")
        .stdout(Stdio::null())
        .spawn()
        .map_err(|e| fail("starting moed serve", e))?;
    children.daemon = Some(child);
    Ok((address, children))
}

/// A connection of its own to the bus at `address` and the Engine proxy on it.
pub(super) async fn connect(
    address: &str,
) -> Result<(zbus::Connection, EngineProxy<'static>), LoadBenchError> {
    let conn = zbus::connection::Builder::address(address)
        .build()
        .await
        .map_err(|e| fail("connecting", e))?;
    let engine = EngineProxy::new(&conn)
        .await
        .map_err(|e| fail("proxy", e))?;
    Ok((conn, engine))
}

pub(super) async fn wait_ready(address: &str) -> Result<(), LoadBenchError> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Ok(conn) = zbus::connection::Builder::address(address).build().await {
            let state = match EngineProxy::new(&conn).await {
                Ok(engine) => engine.state().await.unwrap_or_default(),
                Err(_) => String::new(),
            };
            if state == "ready" {
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            return Err(LoadBenchError(
                "the daemon did not become ready within 120 s".into(),
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Runs every configuration and returns the rows: offline, 1 client, N clients.
pub fn run(opts: &LoadBenchOptions) -> Result<Vec<Row>, LoadBenchError> {
    let work = tempfile::tempdir().map_err(|e| fail("temporary directory", e))?;
    let baseline = offline(opts)?;
    let (address, children) = start_bus_and_daemon(opts, work.path())?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| fail("runtime", e))?;
    let rows = runtime.block_on(async {
        wait_ready(&address).await?;
        // Warm-up: the daemon loads experts lazily, as the offline run did in its untimed pass.
        clients(&address, "warm-up".into(), 1, 1, opts).await?;
        let single = clients(&address, "D-Bus, 1 client".into(), 1, opts.requests, opts).await?;
        let many = clients(
            &address,
            format!("D-Bus, {} clients", opts.clients),
            opts.clients,
            opts.requests,
            opts,
        )
        .await?;
        Ok::<_, LoadBenchError>(vec![single, many])
    })?;
    drop(children);
    let mut all = vec![baseline];
    all.extend(rows);
    Ok(all)
}

/// The table `moed bench-serve` prints.
pub fn table(rows: &[Row]) -> String {
    let mut out = String::new();
    out.push_str(&format!(
        "{:<30} {:>8} {:>8} {:>10} {:>10} {:>10} {:>10} {:>10} {:>12}\n",
        "configuration",
        "requests",
        "tokens",
        "req/s",
        "tok/s",
        "p50 ms",
        "p99 ms",
        "ms/token",
        "p99 gap ms"
    ));
    for r in rows {
        let gap = if r.token_gaps_ms.is_empty() {
            "-".to_string()
        } else {
            format!("{:.2}", r.gap_percentile(99.0))
        };
        out.push_str(&format!(
            "{:<30} {:>8} {:>8} {:>10.2} {:>10.1} {:>10.2} {:>10.2} {:>10.3} {:>12}\n",
            r.name,
            r.requests,
            r.tokens,
            r.requests as f64 / r.seconds.max(1e-9),
            r.tokens_per_s(),
            r.percentile(50.0),
            r.percentile(99.0),
            r.ms_per_token(),
            gap
        ));
    }
    if let (Some(single), Some(many)) = (rows.get(1), rows.get(2)) {
        out.push_str(&format!(
            "{} vs 1 client (same run): aggregate tok/s {:.2}x; p99 of a request's decode ms per token {:.2} vs {:.2} = {:.2}x; p99 gap between Token signals {}\n",
            many.name.trim_start_matches("D-Bus, "),
            many.tokens_per_s() / single.tokens_per_s().max(1e-9),
            many.request_token_percentile(99.0),
            single.request_token_percentile(99.0),
            many.request_token_percentile(99.0) / single.request_token_percentile(99.0).max(1e-9),
            if many.token_gaps_ms.is_empty() || single.token_gaps_ms.is_empty() {
                // The tokenizer's text gave too few `Token` signals to time.
                "n/a".to_string()
            } else {
                format!(
                    "{:.2}x",
                    many.gap_percentile(99.0) / single.gap_percentile(99.0).max(1e-9)
                )
            }
        ));
    }
    if let (Some(offline), Some(single)) = (rows.first(), rows.get(1)) {
        let overhead = single.ms_per_token() - offline.ms_per_token();
        out.push_str(&format!(
            "daemon overhead per token (1 client vs offline, same run): {:.3} ms ({:+.1}%)\n",
            overhead,
            100.0 * overhead / offline.ms_per_token().max(1e-9)
        ));
    }
    out
}
