//! `moed bench-serve --soak MINUTES`: clients mixing normal and hostile requests against one daemon
//! for a fixed time; normal answers must all succeed with the reference text.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use moed_dbus::proxy::EngineProxy;
use moed_dbus::{ChatMessage, GenerateOptions, MoedError};
use tokio::sync::Mutex;
use zbus::{OwnedVariant, Variant};

use super::serve::{
    LoadBenchError, LoadBenchOptions, connect, fail, start_bus_and_daemon, wait_ready,
};

/// Hostile request kinds, in the order each client cycles through them.
const HOSTILE: &[&str] = &[
    "prompt-32MB",
    "plugins-100k",
    "plugin-param-20MB",
    "stop-100k",
    "chat-100k-messages",
    "score-256KB",
    "controls-in-prompt",
    "unknown-model",
    "disconnect-mid-stream",
    "cancel-mid-stream",
];

/// Tally of one soak run.
#[derive(Debug, Default)]
pub struct SoakReport {
    pub minutes: f64,
    pub clients: usize,
    pub normal_ok: u64,
    /// Normal requests that failed or answered another text: must be 0.
    pub normal_failed: u64,
    /// Normal requests refused with `Busy` and retried (not failures: the contract says retry).
    pub normal_busy: u64,
    pub first_failure: Option<String>,
    /// Per hostile kind: outcome (`ok` or the error's short name) → count.
    pub hostile: BTreeMap<&'static str, BTreeMap<String, u64>>,
    pub rss_start_kb: u64,
    pub rss_end_kb: u64,
    pub rss_peak_kb: u64,
}

impl SoakReport {
    pub fn served(&self) -> u64 {
        self.normal_ok
            + self.normal_failed
            + self.hostile.values().flat_map(|m| m.values()).sum::<u64>()
    }

    pub fn table(&self) -> String {
        let mut out = format!(
            "soak: {} clients, {:.1} min; requests served {}; normal ok {}, normal failed {}, normal refused Busy and retried {}\n",
            self.clients,
            self.minutes,
            self.served(),
            self.normal_ok,
            self.normal_failed,
            self.normal_busy
        );
        if let Some(f) = &self.first_failure {
            out.push_str(&format!("first normal failure: {f}\n"));
        }
        out.push_str(&format!(
            "daemon RSS: start {:.1} MiB, end {:.1} MiB, peak {:.1} MiB\n",
            self.rss_start_kb as f64 / 1024.0,
            self.rss_end_kb as f64 / 1024.0,
            self.rss_peak_kb as f64 / 1024.0
        ));
        out.push_str(&format!("{:<24} outcomes\n", "hostile request"));
        for (kind, outcomes) in &self.hostile {
            let list: Vec<String> = outcomes.iter().map(|(k, n)| format!("{k} {n}")).collect();
            out.push_str(&format!("{kind:<24} {}\n", list.join(", ")));
        }
        out
    }
}

fn rss_kb(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or(0)
}

fn normal_options(max_tokens: u32) -> HashMap<String, OwnedVariant> {
    GenerateOptions {
        max_tokens: Some(max_tokens),
        temperature: Some(0.0),
        seed: Some(1),
        ..GenerateOptions::default()
    }
    .to_dict()
}

fn variant(v: Variant<'_>) -> Result<OwnedVariant, LoadBenchError> {
    OwnedVariant::try_from(v).map_err(|e| fail("building an option", e))
}

fn outcome<T>(r: Result<T, MoedError>) -> String {
    match r {
        Ok(_) => "ok".into(),
        Err(e) => e.short_name().unwrap_or("D-Bus").to_string(),
    }
}

/// Sends one hostile request of `kind`; returns its outcome.
async fn hostile(
    address: &str,
    engine: &EngineProxy<'_>,
    kind: &str,
    max_tokens: u32,
) -> Result<String, LoadBenchError> {
    let normal = normal_options(max_tokens);
    Ok(match kind {
        "prompt-32MB" => outcome(engine.complete(&"a".repeat(32 << 20), normal).await),
        "plugins-100k" => {
            let mut o = normal;
            let names: Vec<String> = (0..100_000).map(|i| format!("p{i}")).collect();
            o.insert("plugins".into(), variant(Variant::from(names))?);
            outcome(engine.complete("Hello", o).await)
        }
        "plugin-param-20MB" => {
            let mut o = normal;
            let mut params: HashMap<String, String> = HashMap::new();
            params.insert("x.y".into(), "{".repeat(20 << 20));
            o.insert("plugin_params".into(), variant(Variant::from(params))?);
            outcome(engine.complete("Hello", o).await)
        }
        "stop-100k" => {
            let mut o = normal;
            let stops: Vec<String> = (0..100_000).map(|i| format!("s{i}")).collect();
            o.insert("stop".into(), variant(Variant::from(stops))?);
            outcome(engine.complete("Hello", o).await)
        }
        "chat-100k-messages" => {
            let messages: Vec<ChatMessage> = (0..100_000)
                .map(|i| ChatMessage::new("user", format!("message {i}")))
                .collect();
            outcome(engine.chat(&messages, normal).await)
        }
        "score-256KB" => {
            let text = "It is a truth universally acknowledged. ".repeat(6_600);
            outcome(engine.score(&text, HashMap::new()).await)
        }
        "controls-in-prompt" => outcome(
            engine
                .complete("\x1b]0;title\x07\x1b[2J\r\u{202e}reversed\u{feff}", normal)
                .await,
        ),
        "unknown-model" => {
            let mut o = normal;
            o.insert("model".into(), variant(Variant::from("no-such-model"))?);
            outcome(engine.complete("Hello", o).await)
        }
        "disconnect-mid-stream" | "cancel-mid-stream" => {
            // A connection of its own, so dropping it is a client that went away.
            let conn = zbus::connection::Builder::address(address)
                .build()
                .await
                .map_err(|e| fail("connecting", e))?;
            let opts = GenerateOptions {
                max_tokens: Some(256),
                temperature: Some(0.0),
                ignore_eos: true,
                ..GenerateOptions::default()
            };
            match moed_dbus::client::generate(&conn, "Tell me everything.", &opts).await {
                Err(e) => outcome::<()>(Err(e)),
                Ok(mut stream) => {
                    let _ = stream.next().await;
                    if kind == "cancel-mid-stream" {
                        outcome(stream.cancel().await)
                    } else {
                        drop(stream);
                        drop(conn);
                        "ok".into()
                    }
                }
            }
        }
        other => return Err(LoadBenchError::new(format!("unknown hostile kind {other}"))),
    })
}

struct Shared {
    report: Mutex<SoakReport>,
    stop: AtomicBool,
}

async fn client(
    index: usize,
    address: String,
    reference: String,
    opts: LoadBenchOptions,
    shared: Arc<Shared>,
) -> Result<(), LoadBenchError> {
    let (_conn, engine) = connect(&address).await?;
    let mut round = index;
    while !shared.stop.load(Ordering::Relaxed) {
        // Even rounds normal, odd rounds hostile: every client mixes both all the time.
        if round.is_multiple_of(2) {
            let r = engine
                .complete(&opts.prompt, normal_options(opts.max_tokens))
                .await;
            let mut rep = shared.report.lock().await;
            match r {
                Ok((text, _)) if text == reference => rep.normal_ok += 1,
                Err(MoedError::Busy(_)) => {
                    rep.normal_busy += 1;
                    drop(rep);
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
                other => {
                    rep.normal_failed += 1;
                    if rep.first_failure.is_none() {
                        rep.first_failure = Some(match other {
                            Ok((text, _)) => {
                                format!("text differs: {}", moed_dbus::wire::quote(&text))
                            }
                            Err(e) => moed_dbus::wire::log_line(&e.to_string(), 512),
                        });
                    }
                }
            }
        } else {
            let kind = HOSTILE[(round / 2) % HOSTILE.len()];
            let result = hostile(&address, &engine, kind, opts.max_tokens).await?;
            let mut rep = shared.report.lock().await;
            *rep.hostile
                .entry(kind)
                .or_default()
                .entry(result)
                .or_default() += 1;
        }
        round += 1;
    }
    Ok(())
}

/// Runs the soak: `opts.clients` clients for `minutes`, normal requests checked against the text
/// of a reference answer taken before the clients start.
pub fn run(opts: &LoadBenchOptions, minutes: f64) -> Result<SoakReport, LoadBenchError> {
    let work = tempfile::tempdir().map_err(|e| fail("temporary directory", e))?;
    let (address, children) = start_bus_and_daemon(opts, work.path())?;
    let pid = children
        .daemon_pid()
        .ok_or_else(|| fail("daemon", "not started"))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| fail("runtime", e))?;
    let report = runtime.block_on(async {
        wait_ready(&address).await?;
        let (_conn, engine) = connect(&address).await?;
        let (reference, _) = engine
            .complete(&opts.prompt, normal_options(opts.max_tokens))
            .await
            .map_err(|e| fail("the reference request", e))?;
        let shared = Arc::new(Shared {
            report: Mutex::new(SoakReport {
                minutes,
                clients: opts.clients,
                rss_start_kb: rss_kb(pid, "VmRSS:"),
                ..SoakReport::default()
            }),
            stop: AtomicBool::new(false),
        });
        let mut tasks = Vec::new();
        for i in 0..opts.clients {
            tasks.push(tokio::spawn(client(
                i,
                address.clone(),
                reference.clone(),
                opts.clone(),
                shared.clone(),
            )));
        }
        tokio::time::sleep(Duration::from_secs_f64(minutes * 60.0)).await;
        shared.stop.store(true, Ordering::Relaxed);
        for t in tasks {
            t.await.map_err(|e| fail("client task", e))??;
        }
        // The daemon must still answer the reference request the same way after the soak.
        let (after, _) = engine
            .complete(&opts.prompt, normal_options(opts.max_tokens))
            .await
            .map_err(|e| fail("the request after the soak", e))?;
        let mut rep = std::mem::take(&mut *shared.report.lock().await);
        if after != reference {
            rep.normal_failed += 1;
            rep.first_failure
                .get_or_insert_with(|| "the answer after the soak differs".into());
        }
        rep.rss_end_kb = rss_kb(pid, "VmRSS:");
        rep.rss_peak_kb = rss_kb(pid, "VmHWM:");
        Ok::<_, LoadBenchError>(rep)
    })?;
    drop(children);
    Ok(report)
}
