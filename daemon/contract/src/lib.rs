//! The D-Bus contract of moed, shared by the daemon (`moed serve`) and `moectl`: names, errors,
//! option parsing, result types and client proxies. CONTRACT.md documents every member.

pub mod client;
pub mod error;
pub mod knowledge;
pub mod options;
pub mod params;
pub mod plugins;
pub mod proxy;
pub mod types;
pub mod wire;

pub use error::MoedError;
pub use options::{GenerateOptions, OutputConstraint, ScoreOptions, ToolChoice};
pub use plugins::{AlertRecord, InstallOptions, PluginInfo};
pub use types::{
    ChatMessage, ChatTurn, EngineMetrics, EngineState, ExpertStatistics, GenerationInfo,
    LayerActivations, ModelInfo, ModelSummary, ScoredToken,
};

/// The well-known bus name the daemon owns.
pub const BUS_NAME: &str = "org.moed.Moed1";
/// The object that carries the Engine, Models, Plugins and Knowledge interfaces.
pub const OBJECT_PATH: &str = "/org/moed/Moed1";
/// Streaming requests live below this path, one object each (`<prefix>/<number>`).
pub const REQUEST_PATH_PREFIX: &str = "/org/moed/Moed1/request";

pub const ENGINE_INTERFACE: &str = "org.moed.Moed1.Engine";
pub const MODELS_INTERFACE: &str = "org.moed.Moed1.Models";
pub const PLUGINS_INTERFACE: &str = "org.moed.Moed1.Plugins";
pub const KNOWLEDGE_INTERFACE: &str = "org.moed.Moed1.Knowledge";
pub const REQUEST_INTERFACE: &str = "org.moed.Moed1.Request";

/// The request option (type `h`) by which a bridge such as `moed-http` passes the client
/// connection it serves: the daemon reads the socket's peer credentials itself and serves the
/// request as that user (CONTRACT.md, *Requests on behalf of a socket's peer*).
pub const CLIENT_SOCKET_OPTION: &str = "client_socket";

/// The prefix of every error name the daemon replies with.
pub const ERROR_PREFIX: &str = "org.moed.Moed1.Error";

/// Polkit action ids (data file: `systemd/org.moed.policy`).
pub mod actions {
    /// Load, unload and switch models; reset expert statistics.
    pub const MANAGE_MODELS: &str = "org.moed.manage-models";
    /// Install, enable, disable, reload and configure plugins.
    pub const MANAGE_PLUGINS: &str = "org.moed.manage-plugins";
    /// Add documents to the knowledge store.
    pub const MANAGE_KNOWLEDGE: &str = "org.moed.manage-knowledge";
}
