//! `moectl knowledge add|search|sources|list|remove` over `org.moed.Moed1.Knowledge`. Files are
//! opened here and handed to moed as file descriptors: the service (user moed, no access to home
//! directories) never needs to read the user's files, and sees only the files the user chose.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use moed_dbus::actions::MANAGE_KNOWLEDGE;
use moed_dbus::knowledge::{
    IngestSummary, KnowledgeProxy, MAX_DOCUMENTS_PER_CALL, SearchOptions, StoreOptions,
};
use moed_dbus::wire::{ToWire, terminal};
use serde_json::json;
use zbus::proxy::MethodFlags;
use zbus::{OwnedFd, OwnedVariant};

use crate::bus::App;
use crate::cli::KnowledgeCommand;
use crate::error::CtlError;
use crate::style::{out_json_pretty, outln};

/// The extensions the embedded store takes (what `add` picks from directories).
const EXTENSIONS: &[&str] = &["txt", "md", "markdown", "html", "htm"];

pub async fn run(app: &App, command: KnowledgeCommand) -> Result<(), CtlError> {
    let proxy = KnowledgeProxy::builder(&app.conn)
        .build()
        .await
        .map_err(|e| app.fail_zbus(e))?;
    match command {
        KnowledgeCommand::Add { paths, source } => add(app, &proxy, &paths, source).await,
        KnowledgeCommand::Search {
            query,
            source,
            limit,
        } => search(app, &proxy, &query, source, limit).await,
        KnowledgeCommand::Sources => sources(app, &proxy).await,
        KnowledgeCommand::List { source } => list(app, &proxy, source).await,
        KnowledgeCommand::Remove { names, source } => remove(app, &proxy, &names, source).await,
    }
}

fn supported(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

/// What `add` found: the files to send, and the files below named directories that were left out
/// because the store does not take their type (named so nothing is dropped silently).
#[derive(Debug, Default)]
pub struct Collected {
    pub files: Vec<PathBuf>,
    pub skipped: Vec<PathBuf>,
}

/// The files to add: named files (which must have a supported extension) and, below named
/// directories, every file with one (hidden files and directories skipped, symbolic links to
/// directories not followed), as absolute paths, in order.
pub fn collect(paths: &[PathBuf]) -> Result<Collected, CtlError> {
    let mut out = Collected::default();
    for path in paths {
        let meta =
            std::fs::metadata(path).map_err(|e| CtlError::io(format!("{}", path.display()), e))?;
        let abs = std::fs::canonicalize(path)
            .map_err(|e| CtlError::io(format!("{}", path.display()), e))?;
        if meta.is_dir() {
            let before = out.files.len();
            walk(&abs, &mut out)?;
            if out.files.len() == before {
                return Err(CtlError::Invalid(format!(
                    "{}: no .{} files in it",
                    path.display(),
                    EXTENSIONS.join(", .")
                )));
            }
        } else if supported(&abs) {
            out.files.push(abs);
        } else {
            return Err(CtlError::Invalid(format!(
                "{}: unsupported type; the store takes .{} files",
                path.display(),
                EXTENSIONS.join(", .")
            )));
        }
    }
    out.files.dedup();
    out.skipped.dedup();
    Ok(out)
}

fn walk(dir: &Path, out: &mut Collected) -> Result<(), CtlError> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| CtlError::io(format!("{}", dir.display()), e))?
        .filter_map(Result::ok)
        .collect();
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        let path = entry.path();
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        if kind.is_dir() {
            walk(&path, out)?;
        } else if kind.is_file() || (kind.is_symlink() && path.is_file()) {
            if supported(&path) {
                out.files.push(path);
            } else {
                out.skipped.push(path);
            }
        }
    }
    Ok(())
}

/// How many skipped files are named one by one; the rest are counted.
const SKIPPED_NAMED: usize = 20;

/// The stderr lines for files left out of a directory: a count, then the first few names.
fn skipped_text(app: &App, skipped: &[PathBuf]) -> String {
    let mut out = format!(
        "{} {} file(s) of other types left out (the store takes .{}):\n",
        app.err.yellow("skipped:"),
        skipped.len(),
        EXTENSIONS.join(", .")
    );
    for path in skipped.iter().take(SKIPPED_NAMED) {
        out.push_str(&format!("  {}\n", terminal(&path.display().to_string())));
    }
    if skipped.len() > SKIPPED_NAMED {
        out.push_str(&format!("  … and {} more\n", skipped.len() - SKIPPED_NAMED));
    }
    out
}

fn progress_bar(total: u64, quiet: bool) -> ProgressBar {
    if quiet {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template("{bar:32} {pos}/{len} documents {elapsed} {wide_msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

async fn add(
    app: &App,
    proxy: &KnowledgeProxy<'_>,
    paths: &[PathBuf],
    source: Option<String>,
) -> Result<(), CtlError> {
    let Collected { files, skipped } = collect(paths)?;
    if !skipped.is_empty() && !app.json {
        crate::style::err(&skipped_text(app, &skipped));
    }
    let options = StoreOptions { source }.to_dict();
    let started = Instant::now();
    let bar = progress_bar(files.len() as u64, app.json);
    // moed sends each call's progress (to this connection only) before its reply.
    let base = Arc::new(AtomicU64::new(0));
    let mut signals = proxy
        .receive_ingest_progress()
        .await
        .map_err(|e| app.fail_zbus(e))?;
    let (b, base2) = (bar.clone(), base.clone());
    let follower = tokio::spawn(async move {
        while let Some(signal) = signals.next().await {
            if let Ok(args) = signal.args() {
                b.set_position(base2.load(Ordering::Relaxed) + args.done as u64);
                let name = args.name.rsplit('/').next().unwrap_or_default().to_string();
                b.set_message(name);
            }
        }
    });
    let result = send(app, proxy, &files, &options, &bar, &base).await;
    follower.abort();
    bar.finish_and_clear();
    let (total, jobs) = result?;
    let seconds = started.elapsed().as_secs_f64();
    if app.json {
        out_json_pretty(&json!({
            "source": total.label,
            "documents": files.len(),
            "added": total.added,
            "replaced": total.replaced,
            "unchanged": total.unchanged,
            "chunks": total.chunks,
            "failed": total.failed.iter().map(|(n, e)| json!({"name": n, "error": e})).collect::<Vec<_>>(),
            "skipped": skipped.iter().take(SKIPPED_NAMED).map(|p| p.display().to_string()).collect::<Vec<_>>(),
            "skipped_count": skipped.len(),
            "jobs": jobs,
            "seconds": seconds,
        }))?;
    } else {
        outln(&format!(
            "{} documents into '{}': {} added, {} replaced, {} unchanged, {} failed; {} chunks written ({seconds:.1} s)",
            files.len(),
            total.label,
            total.added,
            total.replaced,
            total.unchanged,
            total.failed.len(),
            total.chunks
        ))?;
        for (name, why) in &total.failed {
            crate::style::err(&format!(
                "{} {}: {}\n",
                app.err.red("failed:"),
                terminal(name),
                terminal(why)
            ));
        }
    }
    if total.failed.is_empty() {
        Ok(())
    } else {
        Err(CtlError::Invalid(format!(
            "{} of {} documents could not be added",
            total.failed.len(),
            files.len()
        )))
    }
}

/// Sends `files` in batches; returns the summed summary and the job ids.
async fn send(
    app: &App,
    proxy: &KnowledgeProxy<'_>,
    files: &[PathBuf],
    options: &HashMap<String, OwnedVariant>,
    bar: &ProgressBar,
    base: &AtomicU64,
) -> Result<(IngestSummary, Vec<String>), CtlError> {
    let mut total = IngestSummary::default();
    let mut jobs = Vec::new();
    for batch in files.chunks(MAX_DOCUMENTS_PER_CALL) {
        let mut documents: Vec<(String, OwnedFd)> = Vec::with_capacity(batch.len());
        for path in batch {
            let file = File::open(path)
                .map_err(|e| CtlError::io(format!("opening {}", path.display()), e))?;
            let fd: std::os::fd::OwnedFd = file.into();
            documents.push((path.display().to_string(), fd.into()));
        }
        let summary: IngestSummary = proxy
            .inner()
            .call_with_flags(
                "AddDocuments",
                MethodFlags::ALLOW_INTERACTIVE_AUTH,
                &(documents, options),
            )
            .await
            .map_err(|e| app.fail(e.into(), Some(MANAGE_KNOWLEDGE)))?
            .ok_or_else(|| CtlError::Failed("moed sent no reply to AddDocuments".into()))?;
        base.fetch_add(batch.len() as u64, Ordering::Relaxed);
        bar.set_position(base.load(Ordering::Relaxed));
        total.label = summary.label.clone();
        total.added += summary.added;
        total.replaced += summary.replaced;
        total.unchanged += summary.unchanged;
        total.chunks += summary.chunks;
        total.failed.extend(summary.failed);
        jobs.push(summary.job);
    }
    Ok((total, jobs))
}

/// The first `width` characters of `text` on one line.
fn snippet(text: &str, width: usize) -> String {
    let flat: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    match flat.char_indices().nth(width) {
        Some((cut, _)) => format!("{}…", &flat[..cut]),
        None => flat,
    }
}

async fn search(
    app: &App,
    proxy: &KnowledgeProxy<'_>,
    query: &str,
    source: Option<String>,
    limit: Option<u32>,
) -> Result<(), CtlError> {
    let options: HashMap<String, OwnedVariant> = SearchOptions { source, limit }.to_dict();
    let (hits, failures) = proxy
        .search(query, options)
        .await
        .map_err(|e| app.fail(e, None))?;
    if app.json {
        return out_json_pretty(&json!({
            "hits": hits.iter().map(|h| json!({
                "label": h.label,
                "id": h.id,
                "source": h.source,
                "score": h.score,
                "text": h.text,
            })).collect::<Vec<_>>(),
            "failures": failures.iter().map(|(l, e)| json!({"label": l, "error": e})).collect::<Vec<_>>(),
        }));
    }
    for (label, why) in &failures {
        crate::style::err(&format!(
            "{} {}: {}\n",
            app.err.yellow("skipped:"),
            terminal(label),
            terminal(why)
        ));
    }
    if hits.is_empty() {
        return outln("no matches");
    }
    // Ids, sources and texts come from documents and databases.
    let hits = hits.for_terminal();
    let s = &app.out;
    let mut lines = Vec::new();
    for (i, h) in hits.iter().enumerate() {
        lines.push(format!(
            "{} {} {}",
            s.bold(&format!("{:>2}.", i + 1)),
            s.cyan(&format!("{}:{}", h.label, h.source)),
            s.dim(&format!("score {:.3}", h.score))
        ));
        lines.push(format!("    {}", snippet(&h.text, 160)));
    }
    outln(&lines.join("\n"))
}

async fn sources(app: &App, proxy: &KnowledgeProxy<'_>) -> Result<(), CtlError> {
    let list = proxy.list_sources().await.map_err(|e| app.fail(e, None))?;
    if app.json {
        return out_json_pretty(&json!(
            list.iter()
                .map(|s| json!({
                    "label": s.label,
                    "kind": s.kind,
                    "status": s.status,
                    "message": s.message,
                    "documents": s.documents,
                    "chunks": s.chunks,
                    "timeout_ms": s.timeout_ms,
                    "max_rows": s.max_rows,
                    "max_bytes": s.max_bytes,
                }))
                .collect::<Vec<_>>()
        ));
    }
    if list.is_empty() {
        return outln(
            "no data sources are configured ([knowledge.sources] in /etc/moed/moed.toml)",
        );
    }
    let list = list.for_terminal();
    let s = &app.out;
    let width = list.iter().map(|x| x.label.len()).max().unwrap_or(5).max(5);
    let mut lines = vec![s.bold(&format!(
        "{:width$}  {:8}  {:11}  CONTENT",
        "LABEL", "KIND", "STATUS"
    ))];
    for src in &list {
        let status = if src.status == "ready" {
            s.green(&format!("{:11}", src.status))
        } else {
            s.red(&format!("{:11}", src.status))
        };
        let content = match (src.documents, src.chunks) {
            (Some(d), Some(c)) => format!("{d} documents, {c} chunks"),
            _ => format!(
                "at most {} rows, {} ms per query",
                src.max_rows,
                src.timeout_ms.unwrap_or_default()
            ),
        };
        lines.push(format!(
            "{:width$}  {:8}  {status}  {content}",
            src.label, src.kind
        ));
        if let Some(m) = &src.message {
            lines.push(format!("{:width$}  {}", "", s.red(m)));
        }
    }
    outln(&lines.join("\n"))
}

async fn list(
    app: &App,
    proxy: &KnowledgeProxy<'_>,
    source: Option<String>,
) -> Result<(), CtlError> {
    let docs = proxy
        .list_documents(StoreOptions { source }.to_dict())
        .await
        .map_err(|e| app.fail(e, None))?;
    if app.json {
        return out_json_pretty(&json!(
            docs.iter()
                .map(|d| json!({
                    "label": d.label,
                    "name": d.name,
                    "format": d.format,
                    "sha256": d.sha256,
                    "bytes": d.bytes,
                    "chunks": d.chunks,
                    "added": d.added,
                }))
                .collect::<Vec<_>>()
        ));
    }
    if docs.is_empty() {
        return outln("no documents; add some with `moectl knowledge add FILES|DIR`");
    }
    let docs = docs.for_terminal();
    let lines: Vec<String> = docs
        .iter()
        .map(|d| format!("{:>6} chunks  {:8}  {}", d.chunks, d.format, d.name))
        .collect();
    outln(&lines.join("\n"))
}

async fn remove(
    app: &App,
    proxy: &KnowledgeProxy<'_>,
    names: &[String],
    source: Option<String>,
) -> Result<(), CtlError> {
    // Documents are stored under the absolute path they were added from.
    let names: Vec<String> = names
        .iter()
        .map(|n| std::fs::canonicalize(n).map_or_else(|_| n.clone(), |p| p.display().to_string()))
        .collect();
    let options = StoreOptions { source }.to_dict();
    let reply: Result<Option<Vec<String>>, zbus::Error> = proxy
        .inner()
        .call_with_flags(
            "RemoveDocuments",
            MethodFlags::ALLOW_INTERACTIVE_AUTH,
            &(&names, &options),
        )
        .await;
    let removed = reply
        .map_err(|e| app.fail(e.into(), Some(MANAGE_KNOWLEDGE)))?
        .unwrap_or_default();
    let missing: Vec<&String> = names.iter().filter(|n| !removed.contains(n)).collect();
    if app.json {
        out_json_pretty(&json!({"removed": removed, "not_found": missing}))?;
    } else {
        outln(&format!(
            "removed {} of {} documents",
            removed.len(),
            names.len()
        ))?;
        for m in &missing {
            crate::style::err(&format!(
                "{} {}\n",
                app.err.yellow("not stored:"),
                terminal(m)
            ));
        }
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(CtlError::Invalid(format!(
            "{} of the names are not in the store (`moectl knowledge list` shows them)",
            missing.len()
        )))
    }
}
