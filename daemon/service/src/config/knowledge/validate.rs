//! `[knowledge]` as read from the files, and the checks of every key (errors name the key).

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

use super::*;
use crate::config::ConfigError;
use crate::config::checks::{byte_count, int_in, invalid};
use crate::config::sections::RawByteSize;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(in crate::config) struct RawKnowledge {
    secrets_file: Option<String>,
    max_document_bytes: Option<RawByteSize>,
    sources: Option<BTreeMap<String, RawSource>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(in crate::config) struct RawSource {
    kind: Option<String>,
    template: Option<String>,
    credentials: Option<String>,
    path: Option<String>,
    query: Option<String>,
    timeout_ms: Option<i64>,
    max_rows: Option<i64>,
    max_bytes: Option<RawByteSize>,
    max_connections: Option<i64>,
    chunk_words: Option<i64>,
    chunk_overlap: Option<i64>,
}

fn bytes(
    key: &str,
    value: Option<RawByteSize>,
    default: u64,
    min: u64,
    max: u64,
) -> Result<u64, ConfigError> {
    let examples = "262144, \"256KiB\", \"1MiB\"";
    let v = byte_count(key, value, examples)?.unwrap_or(default);
    if v < min || v > max {
        return Err(invalid(
            key,
            format!("{v} bytes is out of range; expected {min} to {max}"),
        ));
    }
    Ok(v)
}

/// Labels as plugins name them: the rule of plugin names (lowercase letters, digits, `-` and
/// `_`, starting with a letter, at most 64).
pub fn check_label(label: &str) -> Result<(), String> {
    moed_plugins::manifest::check_name(label).map_err(|e| format!("label {e}"))
}

/// The `$N` placeholders a template uses: exactly `$1` (the query) and `$2` (the limit).
fn check_template(key: &str, template: &str) -> Result<(), ConfigError> {
    if template.trim().is_empty() {
        return Err(invalid(key, "the template is empty"));
    }
    let bytes = template.as_bytes();
    let mut seen = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'$' {
            let digits = bytes[i + 1..]
                .iter()
                .take_while(|b| b.is_ascii_digit())
                .count();
            if digits > 0 {
                seen.push(template[i + 1..i + 1 + digits].to_string());
            }
            i += 1 + digits;
        } else {
            i += 1;
        }
    }
    for needed in ["1", "2"] {
        if !seen.iter().any(|s| s == needed) {
            return Err(invalid(
                key,
                format!(
                    "the template must use ${needed}: $1 is bound to the user's query, $2 to the \
                     number of rows asked for (both as parameters, never spliced into the SQL)"
                ),
            ));
        }
    }
    if let Some(other) = seen.iter().find(|s| *s != "1" && *s != "2") {
        return Err(invalid(
            key,
            format!("${other} is not bound; a template has only $1 (the query) and $2 (the limit)"),
        ));
    }
    super::readonly::check_read_only(template).map_err(|m| invalid(key, m))
}

/// Rejects keys that `kind` does not use, naming the first.
fn unused(prefix: &str, kind: &str, keys: &[(&str, bool)]) -> Result<(), ConfigError> {
    match keys.iter().find(|(_, present)| *present) {
        Some((name, _)) => Err(invalid(
            &format!("{prefix}.{name}"),
            format!("not used by {kind} sources; remove it"),
        )),
        None => Ok(()),
    }
}

fn validate_source(label: &str, raw: RawSource) -> Result<SourceConfig, ConfigError> {
    let prefix = format!("knowledge.sources.{label}");
    let key = |k: &str| format!("{prefix}.{k}");
    check_label(label).map_err(|m| invalid(&prefix, m))?;
    let kind = raw.kind.as_deref().ok_or_else(|| {
        invalid(
            &key("kind"),
            "missing; expected embedded, postgres or sqlite",
        )
    })?;
    let database = kind != "embedded";
    let max_rows = int_in(&key("max_rows"), raw.max_rows, 50, 1, 1000)? as u32;
    let max_bytes = bytes(
        &key("max_bytes"),
        raw.max_bytes,
        256 << 10,
        1 << 10,
        16 << 20,
    )?;
    let timeout_ms = if database {
        // The statement timeout and connecting must fit in the source's share of the retrieval
        // plugin's time limit, or a slow server would fail the plugin instead of the source.
        let max = crate::knowledge::max_timeout_ms();
        Some(int_in(&key("timeout_ms"), raw.timeout_ms, max, 1, max).map_err(|e| {
            let ConfigError::Invalid { key, message } = e else {
                return e;
            };
            invalid(
                &key,
                format!(
                    "{message}; a source has {} ms of the retrieval plugin's time limit, {} ms of \
                     which are kept for connecting",
                    crate::knowledge::source_budget().as_millis(),
                    crate::knowledge::CONNECT_MARGIN.as_millis()
                ),
            )
        })?)
    } else {
        None
    };
    let query = match raw.query.as_deref() {
        None | Some("as_is") => QueryTransform::AsIs,
        Some("any_word") => QueryTransform::AnyWord,
        Some(other) => {
            return Err(invalid(
                &key("query"),
                format!("unknown value '{other}'; expected as_is or any_word"),
            ));
        }
    };
    let max_connections = int_in(&key("max_connections"), raw.max_connections, 4, 1, 64)? as u32;
    let template = |raw_template: Option<String>| -> Result<String, ConfigError> {
        let t = raw_template.ok_or_else(|| {
            invalid(
                &key("template"),
                format!("missing; a {kind} source needs the SQL that answers a query ($1) with at most $2 rows"),
            )
        })?;
        check_template(&key("template"), &t)?;
        Ok(t)
    };
    let spec = match kind {
        "embedded" => {
            unused(
                &prefix,
                kind,
                &[
                    ("template", raw.template.is_some()),
                    ("credentials", raw.credentials.is_some()),
                    ("path", raw.path.is_some()),
                    ("query", raw.query.is_some()),
                    ("timeout_ms", raw.timeout_ms.is_some()),
                    ("max_connections", raw.max_connections.is_some()),
                ],
            )?;
            let chunk_words = int_in(&key("chunk_words"), raw.chunk_words, 200, 16, 4096)?;
            let chunk_overlap = int_in(
                &key("chunk_overlap"),
                raw.chunk_overlap,
                (chunk_words / 5).min(40),
                0,
                chunk_words - 1,
            )?;
            SourceSpec::Embedded {
                chunk_words: chunk_words as u32,
                chunk_overlap: chunk_overlap as u32,
            }
        }
        "postgres" => {
            unused(
                &prefix,
                kind,
                &[
                    ("path", raw.path.is_some()),
                    ("chunk_words", raw.chunk_words.is_some()),
                    ("chunk_overlap", raw.chunk_overlap.is_some()),
                ],
            )?;
            let credentials = raw.credentials.ok_or_else(|| {
                invalid(
                    &key("credentials"),
                    "missing; name the table of the secrets file that holds this database's \
                     connection (the connection string itself never goes into moed.toml)",
                )
            })?;
            check_credentials_name(&key("credentials"), &credentials)?;
            SourceSpec::Postgres {
                credentials,
                template: template(raw.template)?,
                query,
                max_connections,
            }
        }
        "sqlite" => {
            unused(
                &prefix,
                kind,
                &[
                    ("credentials", raw.credentials.is_some()),
                    ("chunk_words", raw.chunk_words.is_some()),
                    ("chunk_overlap", raw.chunk_overlap.is_some()),
                ],
            )?;
            let path = raw.path.ok_or_else(|| {
                invalid(&key("path"), "missing; the database file to open read-only")
            })?;
            let path = PathBuf::from(path);
            if !path.is_absolute() {
                return Err(invalid(
                    &key("path"),
                    format!("'{}' is not an absolute path", path.display()),
                ));
            }
            SourceSpec::Sqlite {
                path,
                template: template(raw.template)?,
                query,
                max_connections,
            }
        }
        other => {
            return Err(invalid(
                &key("kind"),
                format!("unknown kind '{other}'; expected embedded, postgres or sqlite"),
            ));
        }
    };
    Ok(SourceConfig {
        spec,
        limits: SourceLimits {
            timeout_ms,
            max_rows,
            max_bytes,
        },
    })
}

fn check_credentials_name(key: &str, name: &str) -> Result<(), ConfigError> {
    let ok = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(invalid(
            key,
            format!(
                "'{name}' is not a table name of the secrets file (letters, digits, '-', '_'); \
                 put the connection string in the secrets file and name its table here"
            ),
        ))
    }
}

pub(in crate::config) fn validate(raw: RawKnowledge) -> Result<KnowledgeConfig, ConfigError> {
    let secrets_file = match raw.secrets_file {
        None => PathBuf::from(DEFAULT_SECRETS_FILE),
        Some(p) => {
            let path = PathBuf::from(&p);
            if !path.is_absolute() {
                return Err(invalid(
                    "knowledge.secrets_file",
                    format!("'{p}' is not an absolute path"),
                ));
            }
            path
        }
    };
    let max_document_bytes = bytes(
        "knowledge.max_document_bytes",
        raw.max_document_bytes,
        16 << 20,
        1,
        1 << 30,
    )?;
    let sources = match raw.sources {
        None => BTreeMap::from([(
            DEFAULT_EMBEDDED_LABEL.to_string(),
            SourceConfig {
                spec: SourceSpec::Embedded {
                    chunk_words: 200,
                    chunk_overlap: 40,
                },
                limits: SourceLimits {
                    timeout_ms: None,
                    max_rows: 50,
                    max_bytes: 256 << 10,
                },
            },
        )]),
        Some(raw) => raw
            .into_iter()
            .map(|(label, s)| Ok((label.clone(), validate_source(&label, s)?)))
            .collect::<Result<_, ConfigError>>()?,
    };
    Ok(KnowledgeConfig {
        secrets_file,
        max_document_bytes,
        sources,
    })
}
