//! Checks of every configuration value, each error naming its key.

use std::path::{Path, PathBuf};

use super::checks::{absolute_path, byte_count, int_in, invalid};
use super::*;
use crate::engine::MatmulKernel;
use crate::ort_env::Provider;

/// `service.max_prompt_bytes` unless configured: 4 MiB, a 256k-token context's worth of text.
pub const DEFAULT_MAX_PROMPT_BYTES: u64 = 4 << 20;

fn group_name(key: &str, value: Option<String>) -> Result<Option<String>, ConfigError> {
    match value {
        None => Ok(None),
        Some(g) if g.is_empty() => Ok(None),
        Some(g) => {
            let ok = g
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.');
            if !ok {
                return Err(invalid(key, format!("'{g}' is not a valid group name")));
            }
            Ok(Some(g))
        }
    }
}

pub(super) fn validate(raw: RawConfig) -> Result<Config, ConfigError> {
    let dirs: Vec<PathBuf> = match raw.models.dirs {
        None => DEFAULT_MODEL_DIRS.iter().map(PathBuf::from).collect(),
        Some(dirs) => {
            let mut out = Vec::new();
            for d in dirs {
                let d = d.trim();
                if d.is_empty() {
                    return Err(invalid("models.dirs", "an entry is empty"));
                }
                if !Path::new(d).is_absolute() {
                    return Err(invalid(
                        "models.dirs",
                        format!("'{d}' is not an absolute path"),
                    ));
                }
                out.push(PathBuf::from(d));
            }
            out
        }
    };
    let default = match raw.models.default {
        Some(d) if d.trim().is_empty() => None,
        // A name or directory: a control character (a NUL above all) can be neither.
        Some(d) if d.chars().any(char::is_control) => {
            return Err(invalid(
                "models.default",
                "a model name or directory has no control characters",
            ));
        }
        other => other,
    };

    let providers = raw
        .engine
        .providers
        .unwrap_or_else(|| vec!["cpu".to_string()]);
    if providers.is_empty() {
        return Err(invalid(
            "engine.providers",
            "name at least one of tensorrt, cuda, cpu",
        ));
    }
    let providers = providers
        .iter()
        .map(|p| {
            p.parse::<Provider>().map_err(|_| {
                invalid(
                    "engine.providers",
                    format!("unknown execution provider '{p}'; expected tensorrt, cuda or cpu"),
                )
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let expert_memory_budget = byte_count(
        "engine.expert_memory_budget",
        raw.engine.expert_memory_budget,
        "1073741824, \"512MiB\", \"2G\"",
    )?
    .filter(|&b| b != 0);
    let ort_library = absolute_path("engine.ort_library", raw.engine.ort_library)?;
    let gpu_memory_budget = byte_count(
        "engine.gpu_memory_budget",
        raw.engine.gpu_memory_budget,
        "0, \"8GiB\", \"12G\"",
    )?;
    if let Some(b) = gpu_memory_budget.filter(|&b| b > 0)
        && !providers.iter().any(|&p| p != Provider::Cpu)
    {
        return Err(invalid(
            "engine.gpu_memory_budget",
            format!(
                "{b} bytes to place on a GPU, but engine.providers names no GPU provider (add cuda or tensorrt)"
            ),
        ));
    }
    let tensorrt_cache_dir =
        absolute_path("engine.tensorrt_cache_dir", raw.engine.tensorrt_cache_dir)?;
    // At most 90: the rest of the budget is where the other experts come and go.
    let held_experts_percent = int_in(
        "engine.held_experts_percent",
        raw.engine.held_experts_percent,
        50,
        0,
        90,
    )? as u8;

    let service = ServiceConfig {
        max_concurrent: int_in(
            "service.max_concurrent",
            raw.service.max_concurrent,
            8,
            1,
            1024,
        )? as u32,
        queue_depth: int_in("service.queue_depth", raw.service.queue_depth, 16, 0, 65536)? as u32,
        max_batch: int_in("service.max_batch", raw.service.max_batch, 8, 1, 1024)? as u32,
        max_batch_tokens: int_in(
            "service.max_batch_tokens",
            raw.service.max_batch_tokens,
            512,
            16,
            65536,
        )? as u32,
        drain_timeout_secs: int_in(
            "service.drain_timeout_secs",
            raw.service.drain_timeout_secs,
            60,
            0,
            86400,
        )?,
        state_directory: absolute_path("service.state_directory", raw.service.state_directory)?,
        max_prompt_bytes: int_in(
            "service.max_prompt_bytes",
            raw.service.max_prompt_bytes,
            DEFAULT_MAX_PROMPT_BYTES,
            4096,
            256 << 20,
        )?,
        max_requests_per_user: match raw.service.max_requests_per_user {
            None => None,
            v => Some(int_in("service.max_requests_per_user", v, 0, 1, 66560)? as u32),
        },
    };

    let authorizer = match raw.access.authorizer.as_deref() {
        None | Some("polkit") => AuthorizerKind::Polkit,
        Some("group") => AuthorizerKind::Group,
        Some(other) => {
            return Err(invalid(
                "access.authorizer",
                format!("unknown authorizer '{other}'; expected polkit or group"),
            ));
        }
    };
    let access = AccessConfig {
        authorizer,
        allowed_group: group_name("access.allowed_group", raw.access.allowed_group)?,
        admin_group: group_name("access.admin_group", raw.access.admin_group)?,
        bridge_group: group_name("access.bridge_group", raw.access.bridge_group)?,
    };

    let level = raw
        .log
        .level
        .unwrap_or_else(|| "info".to_string())
        .to_lowercase();
    if !["error", "warn", "info", "debug", "trace"].contains(&level.as_str()) {
        return Err(invalid(
            "log.level",
            format!("unknown level '{level}'; expected error, warn, info, debug or trace"),
        ));
    }

    let mut filters = Vec::new();
    for (i, f) in raw
        .plugins
        .filters
        .unwrap_or_default()
        .into_iter()
        .enumerate()
    {
        let key = format!("plugins.filters[{i}]");
        if f.trim().is_empty() {
            return Err(invalid(&key, "empty path; name a built plugin (NAME.wasm)"));
        }
        let path = PathBuf::from(&f);
        if !path.is_absolute() {
            return Err(invalid(
                &key,
                format!(
                    "'{f}' is not an absolute path; the service does not resolve relative paths"
                ),
            ));
        }
        if filters.contains(&path) {
            return Err(invalid(&key, format!("'{f}' is listed twice")));
        }
        filters.push(path);
    }
    let quantized_matmul = match raw.engine.quantized_matmul {
        None => MatmulKernel::default(),
        Some(k) => k
            .parse::<MatmulKernel>()
            .map_err(|e| invalid("engine.quantized_matmul", e.to_string()))?,
    };
    Ok(Config {
        sources: Vec::new(),
        models: ModelsConfig { dirs, default },
        engine: EngineConfig {
            providers,
            expert_memory_budget,
            ort_library,
            preload_experts: raw.engine.preload_experts.unwrap_or(false),
            quantized_matmul,
            gpu_memory_budget,
            tensorrt_cache_dir,
            experts_side_by_side: raw.engine.experts_side_by_side.unwrap_or(true),
            held_experts_percent,
            prefetch_next_layer: raw.engine.prefetch_next_layer.unwrap_or(true),
        },
        service,
        access,
        log: LogConfig { level },
        plugins: PluginsConfig {
            filters,
            settings: super::plugins::validate(raw.plugins.settings)?,
        },
        knowledge: super::knowledge::validate(raw.knowledge)?,
        retrieval: super::retrieval::validate(raw.retrieval)?,
    })
}
