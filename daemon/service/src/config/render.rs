//! The effective configuration as TOML, for `moed check-config`.

use super::Config;

impl Config {
    /// The effective configuration as TOML, for `moed check-config`.
    pub fn to_toml(&self) -> String {
        let mut out = String::new();
        // A TOML string as the toml crate writes it: Rust's `{:?}` escapes NUL as `\0`, which
        // TOML refuses, so the rendered file would not load again.
        let q = |s: &str| toml::Value::String(s.to_owned()).to_string();
        let list = |items: Vec<String>| format!("[{}]", items.join(", "));
        out.push_str("[models]\n");
        out.push_str(&format!(
            "dirs = {}\n",
            list(
                self.models
                    .dirs
                    .iter()
                    .map(|d| q(&d.display().to_string()))
                    .collect()
            )
        ));
        if let Some(d) = &self.models.default {
            out.push_str(&format!("default = {}\n", q(d)));
        }
        out.push_str("\n[engine]\n");
        out.push_str(&format!(
            "providers = {}\n",
            list(
                self.engine
                    .providers
                    .iter()
                    .map(|p| q(p.as_str()))
                    .collect()
            )
        ));
        if let Some(b) = self.engine.expert_memory_budget {
            out.push_str(&format!("expert_memory_budget = {b}\n"));
        }
        if let Some(l) = &self.engine.ort_library {
            out.push_str(&format!("ort_library = {}\n", q(&l.display().to_string())));
        }
        out.push_str(&format!(
            "preload_experts = {}\n",
            self.engine.preload_experts
        ));
        out.push_str(&format!(
            "quantized_matmul = {}\n",
            q(self.engine.quantized_matmul.as_str())
        ));
        if let Some(b) = self.engine.gpu_memory_budget {
            out.push_str(&format!("gpu_memory_budget = {b}\n"));
        }
        if let Some(d) = &self.engine.tensorrt_cache_dir {
            out.push_str(&format!(
                "tensorrt_cache_dir = {}\n",
                q(&d.display().to_string())
            ));
        }
        out.push_str(&format!(
            "experts_side_by_side = {}\n",
            self.engine.experts_side_by_side
        ));
        out.push_str(&format!(
            "held_experts_percent = {}\n",
            self.engine.held_experts_percent
        ));
        out.push_str(&format!(
            "prefetch_next_layer = {}\n",
            self.engine.prefetch_next_layer
        ));
        out.push_str("\n[service]\n");
        out.push_str(&format!(
            "max_concurrent = {}\n",
            self.service.max_concurrent
        ));
        out.push_str(&format!("queue_depth = {}\n", self.service.queue_depth));
        out.push_str(&format!("max_batch = {}\n", self.service.max_batch));
        out.push_str(&format!(
            "max_batch_tokens = {}\n",
            self.service.max_batch_tokens
        ));
        out.push_str(&format!(
            "drain_timeout_secs = {}\n",
            self.service.drain_timeout_secs
        ));
        out.push_str(&format!(
            "max_prompt_bytes = {}\n",
            self.service.max_prompt_bytes
        ));
        out.push_str(&match self.service.max_requests_per_user {
            Some(n) => format!("max_requests_per_user = {n}\n"),
            // Unset follows max_concurrent and queue_depth: shown, not pinned.
            None => format!(
                "# max_requests_per_user = {} (default: half of max_concurrent + queue_depth)\n",
                self.service.requests_per_user()
            ),
        });
        if let Some(d) = &self.service.state_directory {
            out.push_str(&format!(
                "state_directory = {}\n",
                q(&d.display().to_string())
            ));
        }
        out.push_str("\n[access]\n");
        out.push_str(&format!(
            "authorizer = {}\n",
            q(self.access.authorizer.as_str())
        ));
        if let Some(g) = &self.access.allowed_group {
            out.push_str(&format!("allowed_group = {}\n", q(g)));
        }
        if let Some(g) = &self.access.admin_group {
            out.push_str(&format!("admin_group = {}\n", q(g)));
        }
        if let Some(g) = &self.access.bridge_group {
            out.push_str(&format!("bridge_group = {}\n", q(g)));
        }
        out.push_str("\n[log]\n");
        out.push_str(&format!("level = {}\n", q(&self.log.level)));
        out.push_str("\n[plugins]\n");
        out.push_str(&format!(
            "filters = {}\n",
            list(
                self.plugins
                    .filters
                    .iter()
                    .map(|f| q(&f.display().to_string()))
                    .collect()
            )
        ));
        super::plugins::render(&self.plugins.settings, &mut out);
        super::knowledge::render(&self.knowledge, &mut out);
        super::retrieval::render(&self.retrieval, &mut out);
        out
    }
}
