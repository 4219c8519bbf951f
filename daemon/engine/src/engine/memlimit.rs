//! The service's memory limit and whether a model fits under it: a model that cannot fit is
//! refused at load with the numbers and the remedies, instead of the kernel's OOM killer ending
//! the whole service half-way through loading it (or at the first request that pages experts in).
//!
//! The limit is cgroup v2 `memory.max` of the daemon's own cgroup (from `/proc/self/cgroup`) and
//! of every ancestor up to the cgroup root, the smallest one counting: that is `MemoryMax=` of
//! the unit, or of a slice above it. On a cgroup v1 (or hybrid) host the memory controller's
//! `memory.limit_in_bytes` counts the same way.

use std::path::{Path, PathBuf};

use crate::package::{LayerSpec, Package};

/// Where the cgroup v2 hierarchy is mounted.
pub const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// Test-only: a directory standing in for [`CGROUP_ROOT`], so tests can give the daemon a fake
/// `memory.max` (`ROOT/<the daemon's cgroup path>/memory.max`). Not for production use. Not
/// named `MOED_…`: those variables are configuration keys.
pub const CGROUP_ROOT_ENV: &str = "TEST_MOED_CGROUP_ROOT";

/// A memory limit in force, and the file that set it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limit {
    pub bytes: u64,
    pub file: PathBuf,
}

/// What a model keeps resident, estimated from its package's file sizes: every graph but the
/// experts is loaded at once; experts are loaded as routed and kept up to
/// `engine.expert_memory_budget` (all of them when there is no budget). ONNX Runtime's working
/// memory and the KV cache come on top, so this is a lower bound: a refusal is certain to be
/// right.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Need {
    /// Everything but the experts' weights.
    pub fixed: u64,
    /// The experts kept in memory at most.
    pub experts: u64,
    /// All the experts' weights.
    pub experts_total: u64,
}

impl Need {
    pub fn of(package: &Package, expert_memory_budget: Option<u64>) -> Need {
        let m = package.manifest();
        let total: u64 = m.files.values().map(|f| f.bytes).sum();
        let experts_total: u64 = m
            .layers
            .iter()
            .filter_map(|l| match l {
                LayerSpec::Moe { experts, .. } => {
                    Some(experts.iter().map(|e| package.graph_bytes(e)).sum::<u64>())
                }
                LayerSpec::Dense { .. } => None,
            })
            .sum();
        Need {
            fixed: total.saturating_sub(experts_total),
            experts: expert_memory_budget.map_or(experts_total, |b| b.min(experts_total)),
            experts_total,
        }
    }

    pub fn bytes(&self) -> u64 {
        self.fixed.saturating_add(self.experts)
    }
}

/// Why a model is not loaded.
#[derive(Debug, thiserror::Error)]
#[error(
    "the model needs about {need} resident ({fixed} outside the experts + {experts} of experts{budget}) \
     and moed already uses {used}, but the service's memory limit is {limit} ({file}); \
     loading it would get moed killed. Keep fewer experts in memory with engine.expert_memory_budget \
     in moed.toml, or raise the limit with a unit drop-in (systemctl edit moed: [Service] MemoryMax=…)",
    need = mib(.need.bytes()),
    fixed = mib(.need.fixed),
    experts = mib(.need.experts),
    budget = if .need.experts < .need.experts_total { format!(" of {} in all, by engine.expert_memory_budget", mib(.need.experts_total)) } else { " (all of them: no engine.expert_memory_budget)".to_string() },
    used = mib(*.used),
    limit = mib(.limit.bytes),
    file = .limit.file.display(),
)]
pub struct TooLarge {
    pub need: Need,
    pub used: u64,
    pub limit: Limit,
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

/// The limit the daemon runs under, if any.
pub fn limit() -> Option<Limit> {
    let root =
        std::env::var_os(CGROUP_ROOT_ENV).map_or_else(|| PathBuf::from(CGROUP_ROOT), PathBuf::from);
    let own = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    limit_in(&root, &own)
}

/// The smallest memory limit of the cgroup that `proc_cgroup` (the text of `/proc/PID/cgroup`)
/// names and its ancestors up to `root`: cgroup v2 `memory.max` (the unified `0::` line), and
/// cgroup v1 `memory.limit_in_bytes` under `root/memory` (the `memory` controller's line; a v1 or
/// hybrid host, e.g. RHEL 8, where `MemoryMax=`/`MemoryLimit=` set that file). `max`, v1's
/// "unlimited" (near 2^63) and unreadable files set no limit.
pub fn limit_in(root: &Path, proc_cgroup: &str) -> Option<Limit> {
    let mut best: Option<Limit> = None;
    for line in proc_cgroup.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(_), Some(controllers), Some(rel)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let found = if controllers.is_empty() {
            smallest_up(root, rel, "memory.max")
        } else if controllers.split(',').any(|c| c == "memory") {
            smallest_up(&root.join("memory"), rel, "memory.limit_in_bytes")
        } else {
            None
        };
        if let Some(l) = found
            && best.as_ref().is_none_or(|b| l.bytes < b.bytes)
        {
            best = Some(l);
        }
    }
    best
}

/// v1's "no limit" is the page counter's maximum in bytes (about 2^63); anything that large is
/// no limit on any machine.
const UNLIMITED: u64 = 1 << 62;

/// The smallest `file` from `root/rel` up to `root`.
fn smallest_up(root: &Path, rel: &str, file: &str) -> Option<Limit> {
    let rel = Path::new(rel.trim());
    if rel
        .components()
        .any(|c| c == std::path::Component::ParentDir)
    {
        return None;
    }
    let mut dir = root.join(rel.strip_prefix("/").unwrap_or(rel));
    let mut best: Option<Limit> = None;
    loop {
        let path = dir.join(file);
        if let Some(bytes) = std::fs::read_to_string(&path)
            .ok()
            .and_then(|t| t.trim().parse::<u64>().ok())
            && bytes < UNLIMITED
            && best.as_ref().is_none_or(|b| bytes < b.bytes)
        {
            best = Some(Limit { bytes, file: path });
        }
        if dir == root || !dir.pop() || !dir.starts_with(root) {
            break;
        }
    }
    best
}

/// The daemon's resident memory now (`VmRSS`), 0 when unknown.
pub fn resident_now() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

/// Refuses `need` when it and what the daemon already holds exceed `limit`.
pub fn check(need: Need, used: u64, limit: Option<Limit>) -> Result<(), TooLarge> {
    match limit {
        Some(limit) if used.saturating_add(need.bytes()) > limit.bytes => {
            Err(TooLarge { need, used, limit })
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn need(fixed: u64, experts: u64, experts_total: u64) -> Need {
        Need {
            fixed,
            experts,
            experts_total,
        }
    }

    #[test]
    fn the_smallest_limit_on_the_way_up_counts() {
        let t = tempfile::tempdir().expect("tempdir");
        let unit = t.path().join("system.slice/moed.service");
        std::fs::create_dir_all(&unit).expect("mkdir");
        std::fs::write(unit.join("memory.max"), "2147483648\n").expect("write");
        std::fs::write(t.path().join("system.slice/memory.max"), "max\n").expect("write");
        let own = "0::/system.slice/moed.service\n";
        assert_eq!(
            limit_in(t.path(), own),
            Some(Limit {
                bytes: 2 << 30,
                file: unit.join("memory.max")
            })
        );
        std::fs::write(t.path().join("system.slice/memory.max"), "1073741824\n").expect("write");
        assert_eq!(limit_in(t.path(), own).map(|l| l.bytes), Some(1 << 30));
    }

    #[test]
    fn no_limit_without_cgroup_v2_or_with_max() {
        let t = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(t.path().join("a")).expect("mkdir");
        std::fs::write(t.path().join("a/memory.max"), "max\n").expect("write");
        assert_eq!(limit_in(t.path(), "0::/a\n"), None);
        // A cgroup v1 line names its controllers; its limit lives under root/memory.
        assert_eq!(limit_in(t.path(), "4:memory:/a\n"), None);
        assert_eq!(limit_in(t.path(), "0::/../../etc\n"), None);
    }

    #[test]
    fn cgroup_v1_memory_limits_count_and_the_smaller_of_both_hierarchies_wins() {
        let t = tempfile::tempdir().expect("tempdir");
        let v1 = t.path().join("memory/system.slice/moed.service");
        std::fs::create_dir_all(&v1).expect("mkdir");
        std::fs::write(v1.join("memory.limit_in_bytes"), "9223372036854771712\n").expect("write");
        let own = "5:cpu,cpuacct:/system.slice/moed.service\n4:memory:/system.slice/moed.service\n0::/system.slice/moed.service\n";
        assert_eq!(limit_in(t.path(), own), None, "v1's unlimited is no limit");
        std::fs::write(v1.join("memory.limit_in_bytes"), "1073741824\n").expect("write");
        assert_eq!(
            limit_in(t.path(), own),
            Some(Limit {
                bytes: 1 << 30,
                file: v1.join("memory.limit_in_bytes")
            })
        );
        let v2 = t.path().join("system.slice/moed.service");
        std::fs::create_dir_all(&v2).expect("mkdir");
        std::fs::write(v2.join("memory.max"), "536870912\n").expect("write");
        assert_eq!(limit_in(t.path(), own).map(|l| l.bytes), Some(1 << 29));
        // The cpu controller's line is not a memory limit, and `..` never leaves the root.
        assert_eq!(
            limit_in(t.path(), "5:cpu:/system.slice/moed.service\n"),
            None
        );
        assert_eq!(limit_in(t.path(), "4:memory:/../../etc\n"), None);
    }

    #[test]
    fn a_model_is_refused_only_past_the_limit_and_the_error_names_both_remedies() {
        let limit = Limit {
            bytes: 100 << 20,
            file: PathBuf::from("/sys/fs/cgroup/system.slice/moed.service/memory.max"),
        };
        assert!(
            check(
                need(40 << 20, 40 << 20, 40 << 20),
                20 << 20,
                Some(limit.clone())
            )
            .is_ok()
        );
        assert!(check(need(400 << 20, 0, 0), 0, None).is_ok());
        let err = check(need(40 << 20, 50 << 20, 500 << 20), 20 << 20, Some(limit))
            .expect_err("over the limit");
        let text = err.to_string();
        for part in [
            "90.0 MiB resident",
            "500.0 MiB in all",
            "20.0 MiB",
            "100.0 MiB",
            "moed.service/memory.max",
            "engine.expert_memory_budget",
            "MemoryMax=",
        ] {
            assert!(text.contains(part), "{part} missing: {text}");
        }
    }
}
