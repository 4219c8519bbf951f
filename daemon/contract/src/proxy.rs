//! Client proxies for moed's interfaces (`#[proxy]`), as `moectl` and the tests use them.

use std::collections::HashMap;

use zbus::{OwnedObjectPath, OwnedVariant, proxy};

use crate::{
    ChatMessage, ChatTurn, EngineMetrics, ExpertStatistics, GenerationInfo, ModelInfo,
    ModelSummary, MoedError, ScoredToken,
};

/// `org.moed.Moed1.Engine` at `/org/moed/Moed1`.
#[proxy(
    interface = "org.moed.Moed1.Engine",
    default_service = "org.moed.Moed1",
    default_path = "/org/moed/Moed1"
)]
pub trait Engine {
    /// Generates an answer to `prompt` and returns it whole (see CONTRACT.md for options).
    async fn complete(
        &self,
        prompt: &str,
        options: HashMap<String, OwnedVariant>,
    ) -> Result<(String, GenerationInfo), MoedError>;

    /// Generates the next assistant turn of a conversation through the model's chat template.
    async fn chat(
        &self,
        messages: &[ChatMessage],
        options: HashMap<String, OwnedVariant>,
    ) -> Result<(String, GenerationInfo), MoedError>;

    /// As `chat`, with turns that may carry tool calls and tool results (`a(ssa{ss})`).
    async fn chat_turns(
        &self,
        messages: &[ChatTurn],
        options: HashMap<String, OwnedVariant>,
    ) -> Result<(String, GenerationInfo), MoedError>;

    /// Starts a streaming request for `prompt`; returns its object path.
    async fn generate(
        &self,
        prompt: &str,
        options: HashMap<String, OwnedVariant>,
    ) -> Result<OwnedObjectPath, MoedError>;

    /// Starts a streaming request for a conversation; returns its object path.
    async fn generate_chat(
        &self,
        messages: &[ChatMessage],
        options: HashMap<String, OwnedVariant>,
    ) -> Result<OwnedObjectPath, MoedError>;

    /// As `generate_chat`, with turns that may carry tool calls and tool results.
    async fn generate_chat_turns(
        &self,
        messages: &[ChatTurn],
        options: HashMap<String, OwnedVariant>,
    ) -> Result<OwnedObjectPath, MoedError>;

    /// The log-probability of each token of `text` given the tokens before it.
    async fn score(
        &self,
        text: &str,
        options: HashMap<String, OwnedVariant>,
    ) -> Result<Vec<ScoredToken>, MoedError>;

    /// The daemon's counters since it started (requests by outcome, tokens, first-token times).
    async fn metrics(&self) -> Result<EngineMetrics, MoedError>;

    #[zbus(property)]
    fn version(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn model(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn execution_provider(&self) -> zbus::Result<String>;
    /// (provider, usable, what it lacks) in preference order; see CONTRACT.md.
    #[zbus(property)]
    fn providers(&self) -> zbus::Result<Vec<(String, bool, String)>>;
    #[zbus(property)]
    fn state(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn active_requests(&self) -> zbus::Result<u32>;
    #[zbus(property)]
    fn queued_requests(&self) -> zbus::Result<u32>;
    #[zbus(property)]
    fn max_concurrent(&self) -> zbus::Result<u32>;
    #[zbus(property)]
    fn queue_depth(&self) -> zbus::Result<u32>;
}

/// `org.moed.Moed1.Request` at the path `Generate` returned.
#[proxy(
    interface = "org.moed.Moed1.Request",
    default_service = "org.moed.Moed1"
)]
pub trait Request {
    /// Stops the request; it finishes with reason `cancelled`.
    async fn cancel(&self) -> Result<(), MoedError>;

    #[zbus(property)]
    fn state(&self) -> zbus::Result<String>;

    #[zbus(signal)]
    fn token(&self, text: String, thinking: bool) -> zbus::Result<()>;
    #[zbus(signal)]
    fn alert(
        &self,
        severity: String,
        code: String,
        message: String,
        source: String,
    ) -> zbus::Result<()>;
    #[zbus(signal)]
    fn finished(&self, reason: String, info: GenerationInfo) -> zbus::Result<()>;
}

/// `org.moed.Moed1.Models` at `/org/moed/Moed1`.
#[proxy(
    interface = "org.moed.Moed1.Models",
    default_service = "org.moed.Moed1",
    default_path = "/org/moed/Moed1"
)]
pub trait Models {
    /// Every package found in the model directories.
    async fn list(&self) -> Result<Vec<ModelSummary>, MoedError>;
    async fn info(&self, name: &str) -> Result<ModelInfo, MoedError>;
    async fn load(&self, name: &str) -> Result<(), MoedError>;
    async fn unload(&self, name: &str) -> Result<(), MoedError>;
    async fn switch(&self, name: &str) -> Result<(), MoedError>;
    async fn expert_stats(&self, name: &str) -> Result<ExpertStatistics, MoedError>;
    async fn reset_expert_stats(&self, name: &str) -> Result<(), MoedError>;

    #[zbus(property)]
    fn model_directories(&self) -> zbus::Result<Vec<String>>;
    #[zbus(property)]
    fn loaded_models(&self) -> zbus::Result<Vec<String>>;

    #[zbus(signal)]
    fn model_loaded(&self, name: String) -> zbus::Result<()>;
    #[zbus(signal)]
    fn model_unloaded(&self, name: String) -> zbus::Result<()>;
    #[zbus(signal)]
    fn load_progress(&self, name: String, done: u32, total: u32) -> zbus::Result<()>;
}
