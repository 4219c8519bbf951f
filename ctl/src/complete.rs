//! Shell completion of the names only the daemon knows (models, plugins, data sources), asked of
//! moed while the shell completes, through clap_complete's dynamic engine (`COMPLETE=bash moectl`).

use std::ffi::OsStr;
use std::time::Duration;

use clap_complete::engine::CompletionCandidate;
use moed_dbus::knowledge::KnowledgeProxy;
use moed_dbus::plugins::PluginsProxy;
use moed_dbus::proxy::ModelsProxy;

use crate::bus::BusChoice;

/// A completion must not hang the shell: a daemon that does not answer in time completes nothing.
const ASK_TIMEOUT: Duration = Duration::from_millis(1500);

/// The bus completion asks: `$MOECTL_BUS`, else the system bus (the engine does not hand the
/// completer the command line's `--bus`).
fn bus() -> BusChoice {
    std::env::var("MOECTL_BUS")
        .ok()
        .and_then(|b| b.parse().ok())
        .unwrap_or(BusChoice::System)
}

/// Runs one query against moed; any failure (no bus, no daemon, refused, too slow) is no names.
fn ask<F, Fut>(query: F) -> Vec<String>
where
    F: FnOnce(zbus::Connection) -> Fut,
    Fut: Future<Output = Option<Vec<String>>>,
{
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return Vec::new();
    };
    runtime
        .block_on(async {
            tokio::time::timeout(ASK_TIMEOUT, async {
                let conn = bus().connect().await.ok()?;
                query(conn).await
            })
            .await
        })
        .ok()
        .flatten()
        .unwrap_or_default()
}

/// The names that start with what was typed; a name the shell could not take as one word (a
/// control character, whitespace) is left out.
fn matching(names: Vec<String>, current: &OsStr) -> Vec<CompletionCandidate> {
    let Some(typed) = current.to_str() else {
        return Vec::new();
    };
    names
        .into_iter()
        .filter(|n| n.starts_with(typed) && !n.chars().any(|c| c.is_control() || c.is_whitespace()))
        .map(CompletionCandidate::new)
        .collect()
}

/// The names `list` reads from a proxy `P` built on the connection, that start with what was typed.
fn names<P, L, Fut>(current: &OsStr, list: L) -> Vec<CompletionCandidate>
where
    P: From<zbus::Proxy<'static>> + zbus::proxy::Defaults,
    L: FnOnce(P) -> Fut,
    Fut: Future<Output = Option<Vec<String>>>,
{
    matching(
        ask(|conn| async move {
            let proxy: P = zbus::proxy::Builder::new(&conn).build().await.ok()?;
            list(proxy).await
        }),
        current,
    )
}

/// Model packages moed knows (`Models.List`).
pub fn models(current: &OsStr) -> Vec<CompletionCandidate> {
    names(current, |p: ModelsProxy<'static>| async move {
        Some(p.list().await.ok()?.into_iter().map(|m| m.name).collect())
    })
}

/// Installed and configured plugins (`Plugins.List`).
pub fn plugins(current: &OsStr) -> Vec<CompletionCandidate> {
    names(current, |p: PluginsProxy<'static>| async move {
        Some(p.list().await.ok()?.into_iter().map(|p| p.name).collect())
    })
}

/// Data source labels (`Knowledge.ListSources`).
pub fn sources(current: &OsStr) -> Vec<CompletionCandidate> {
    names(current, |p: KnowledgeProxy<'static>| async move {
        Some(
            p.list_sources()
                .await
                .ok()?
                .into_iter()
                .map(|s| s.label)
                .collect(),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_names_that_match_and_are_one_word() {
        let names = vec![
            "moe-mini".to_string(),
            "moe-big".to_string(),
            "other".to_string(),
            "moe evil".to_string(),
            "moe\nx".to_string(),
        ];
        let got: Vec<String> = matching(names, OsStr::new("moe"))
            .iter()
            .map(|c| c.get_value().to_string_lossy().to_string())
            .collect();
        assert_eq!(got, ["moe-mini", "moe-big"]);
    }
}
