//! Who may do what: reads and inference for any local user (or `access.allowed_group`), managing
//! models and plugins through an [`Authorizer`]: polkit on a real system, or group membership.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use moed_dbus::MoedError;
use moed_service::client_files::Identity;
use moed_service::service::Client;
use zbus::Connection;
use zbus::message::{Flags, Header};
use zbus::names::BusName;
use zbus_polkit::policykit1::{AuthorityProxy, CheckAuthorizationFlags, Subject};

use crate::config::{AccessConfig, AuthorizerKind};

/// The peer behind a method call, from the bus's own record of its credentials.
#[derive(Debug, Clone)]
pub struct Caller {
    pub unique_name: String,
    pub uid: u32,
    pub pid: Option<u32>,
    pub gids: Vec<u32>,
    /// The call allows interactive authorization (polkit may ask for a password).
    pub interactive: bool,
}

impl Caller {
    /// Asks the bus for the sender's credentials (`GetConnectionCredentials`).
    pub async fn from_header(conn: &Connection, header: &Header<'_>) -> Result<Caller, MoedError> {
        let sender = header
            .sender()
            .ok_or_else(|| MoedError::AccessDenied("the call carries no sender".into()))?;
        let dbus = zbus::fdo::DBusProxy::new(conn).await.map_err(|e| {
            MoedError::Failed(format!("asking the bus for caller credentials: {e}"))
        })?;
        let creds = dbus
            .get_connection_credentials(BusName::from(sender.clone()))
            .await
            .map_err(|e| {
                MoedError::Failed(format!("asking the bus for caller credentials: {e}"))
            })?;
        let uid = creds.unix_user_id().ok_or_else(|| {
            MoedError::AccessDenied("the bus did not report the caller's user id".into())
        })?;
        Ok(Caller {
            unique_name: sender.to_string(),
            uid,
            pid: creds.process_id(),
            gids: creds.unix_group_ids().cloned().unwrap_or_default(),
            interactive: header
                .primary()
                .flags()
                .contains(Flags::ALLOW_INTERACTIVE_AUTH),
        })
    }

    pub fn is_root(&self) -> bool {
        self.uid == 0
    }

    /// The caller as the service knows clients: its bus name (its requests are cancelled when
    /// it leaves the bus) and uid.
    pub fn client(&self) -> Client {
        Client {
            key: self.unique_name.clone(),
            uid: self.uid,
        }
    }

    /// The identity to check this caller's paths with; `None` for root, who may read anything.
    pub fn identity(&self) -> Option<Identity> {
        (!self.is_root()).then(|| Identity {
            uid: self.uid,
            gids: self.gids.clone(),
        })
    }
}

/// A privileged operation, named by its polkit action id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    ManageModels,
    ManagePlugins,
    ManageKnowledge,
}

impl Action {
    pub fn id(self) -> &'static str {
        match self {
            Action::ManageModels => moed_dbus::actions::MANAGE_MODELS,
            Action::ManagePlugins => moed_dbus::actions::MANAGE_PLUGINS,
            Action::ManageKnowledge => moed_dbus::actions::MANAGE_KNOWLEDGE,
        }
    }
}

pub type AuthFuture<'a> = Pin<Box<dyn Future<Output = Result<(), MoedError>> + Send + 'a>>;

/// Decides privileged actions for callers who are neither root nor in `access.admin_group`.
pub trait Authorizer: Send + Sync {
    fn authorize<'a>(
        &'a self,
        caller: &'a Caller,
        header: &'a Header<'a>,
        action: Action,
    ) -> AuthFuture<'a>;
    fn name(&self) -> &'static str;
}

/// How polkit is told who is asking.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubjectMode {
    /// The caller's unique bus name, which polkit resolves through the system bus itself.
    BusName,
    /// The caller's pid and uid: a bus name on a session bus means nothing to polkit.
    Process,
}

impl SubjectMode {
    /// The mode for a daemon on the system bus (`true`) or a session bus.
    pub fn for_bus(system_bus: bool) -> SubjectMode {
        if system_bus {
            SubjectMode::BusName
        } else {
            SubjectMode::Process
        }
    }
}

/// Asks polkit (`org.freedesktop.PolicyKit1` on the system bus) about the calling process.
pub struct PolkitAuthorizer {
    system_bus: tokio::sync::OnceCell<Connection>,
    subject: SubjectMode,
}

impl PolkitAuthorizer {
    pub fn new(subject: SubjectMode) -> Self {
        PolkitAuthorizer {
            system_bus: tokio::sync::OnceCell::new(),
            subject,
        }
    }

    async fn check(
        &self,
        caller: &Caller,
        header: &Header<'_>,
        action: Action,
    ) -> Result<(), MoedError> {
        let unavailable = |e: &dyn std::fmt::Display| {
            MoedError::AccessDenied(format!(
                "{} needs polkit authorization ({}), but polkit could not be asked: {e}; run as root or configure access.admin_group",
                action.id(),
                action.id()
            ))
        };
        let conn = self
            .system_bus
            .get_or_try_init(|| async { Connection::system().await })
            .await
            .map_err(|e| unavailable(&e))?;
        let authority = AuthorityProxy::new(conn)
            .await
            .map_err(|e| unavailable(&e))?;
        // The subject is the caller's bus name, which polkit resolves through the bus; that is
        // only meaningful on the system bus, so a session daemon falls back to the caller's pid.
        let subject = match caller.pid {
            Some(pid) if header.sender().is_some() && self.subject == SubjectMode::Process => {
                Subject::new_for_pid(pid, None, Some(caller.uid)).map_err(|e| unavailable(&e))?
            }
            _ => Subject::new_for_message_header(header).map_err(|e| unavailable(&e))?,
        };
        let flags = if caller.interactive {
            CheckAuthorizationFlags::ALLOW_USER_INTERACTION
        } else {
            CheckAuthorizationFlags::empty()
        };
        let result = authority
            .check_authorization(&subject, action.id(), &Default::default(), flags, "")
            .await
            .map_err(|e| unavailable(&e))?;
        if result.is_authorized {
            Ok(())
        } else {
            Err(MoedError::AccessDenied(format!(
                "not authorized for polkit action {}{}; ask an administrator, or run as root",
                action.id(),
                if result.is_challenge {
                    " (authentication is possible: call with interactive authorization allowed, e.g. from a session with a polkit agent)"
                } else {
                    ""
                }
            )))
        }
    }
}

impl Authorizer for PolkitAuthorizer {
    fn authorize<'a>(
        &'a self,
        caller: &'a Caller,
        header: &'a Header<'a>,
        action: Action,
    ) -> AuthFuture<'a> {
        Box::pin(self.check(caller, header, action))
    }
    fn name(&self) -> &'static str {
        "polkit"
    }
}

/// Denies privileged actions to everyone but root and `access.admin_group` (both checked before
/// any authorizer is asked): for hosts without polkit, and the integration tests.
pub struct GroupAuthorizer;

impl Authorizer for GroupAuthorizer {
    fn authorize<'a>(
        &'a self,
        _caller: &'a Caller,
        _header: &'a Header<'a>,
        action: Action,
    ) -> AuthFuture<'a> {
        Box::pin(async move {
            Err(MoedError::AccessDenied(format!(
                "{} is allowed only to root and members of access.admin_group (access.authorizer = \"group\")",
                action.id()
            )))
        })
    }
    fn name(&self) -> &'static str {
        "group"
    }
}

/// `access.bridge_group` when not configured and a group of this name exists (moed.sysusers
/// creates it with the user `moed-http.service` runs as).
pub const DEFAULT_BRIDGE_GROUP: &str = "moed-http";

/// The access rules in force; replaced as a whole on SIGHUP.
pub struct AccessPolicy {
    allowed_gid: Option<(String, u32)>,
    admin_gid: Option<(String, u32)>,
    bridge_gid: Option<(String, u32)>,
    authorizer: Arc<dyn Authorizer>,
    subject: SubjectMode,
}

impl AccessPolicy {
    /// Resolves the configured groups; an unknown group is an error naming the key. `subject`
    /// says how polkit is told who calls (it follows the bus served).
    pub fn new(
        config: &AccessConfig,
        subject: SubjectMode,
    ) -> Result<AccessPolicy, crate::config::ConfigError> {
        let resolve = |key: &str,
                       name: &Option<String>|
         -> Result<Option<(String, u32)>, crate::config::ConfigError> {
            match name {
                None => Ok(None),
                Some(name) => match nix::unistd::Group::from_name(name) {
                    Ok(Some(group)) => Ok(Some((name.clone(), group.gid.as_raw()))),
                    Ok(None) => Err(crate::config::ConfigError::Invalid {
                        key: key.to_string(),
                        message: format!("group '{name}' does not exist"),
                    }),
                    Err(e) => Err(crate::config::ConfigError::Invalid {
                        key: key.to_string(),
                        message: format!("cannot look up group '{name}': {e}"),
                    }),
                },
            }
        };
        let authorizer: Arc<dyn Authorizer> = match config.authorizer {
            AuthorizerKind::Polkit => Arc::new(PolkitAuthorizer::new(subject)),
            AuthorizerKind::Group => Arc::new(GroupAuthorizer),
        };
        Ok(AccessPolicy {
            allowed_gid: resolve("access.allowed_group", &config.allowed_group)?,
            admin_gid: resolve("access.admin_group", &config.admin_group)?,
            bridge_gid: match &config.bridge_group {
                Some(_) => resolve("access.bridge_group", &config.bridge_group)?,
                // The packaged bridge's group, when the package created it.
                None => nix::unistd::Group::from_name(DEFAULT_BRIDGE_GROUP)
                    .ok()
                    .flatten()
                    .map(|g| (DEFAULT_BRIDGE_GROUP.to_string(), g.gid.as_raw())),
            },
            authorizer,
            subject,
        })
    }

    /// How polkit is told who calls; a reloaded policy keeps it (the bus does not change).
    pub fn subject(&self) -> SubjectMode {
        self.subject
    }

    fn in_group(caller: &Caller, group: &Option<(String, u32)>) -> bool {
        group
            .as_ref()
            .is_some_and(|(_, gid)| caller.gids.contains(gid))
    }

    /// Inference and reading.
    pub fn check_use(&self, caller: &Caller) -> Result<(), MoedError> {
        let Some((name, _)) = &self.allowed_gid else {
            return Ok(());
        };
        // A bridge relays others' requests (each then checked as its client) and reads the
        // model list for them.
        if caller.is_root()
            || Self::in_group(caller, &self.allowed_gid)
            || Self::in_group(caller, &self.admin_gid)
            || Self::in_group(caller, &self.bridge_gid)
        {
            return Ok(());
        }
        Err(MoedError::AccessDenied(format!(
            "using moed needs membership in group '{name}' (access.allowed_group); ask an administrator to add your user to it"
        )))
    }

    /// Passing a client's socket to be served as its peer (option `client_socket`): root and
    /// members of `access.bridge_group` only, so a user cannot spend a connection another user
    /// made to a socket of theirs.
    pub fn check_bridge(&self, caller: &Caller) -> Result<(), MoedError> {
        if caller.is_root() || Self::in_group(caller, &self.bridge_gid) {
            return Ok(());
        }
        Err(MoedError::AccessDenied(format!(
            "option '{}' (requests on behalf of a socket's peer) is allowed only to root and members of access.bridge_group{}",
            moed_dbus::CLIENT_SOCKET_OPTION,
            match &self.bridge_gid {
                Some((name, _)) => format!(" ('{name}')"),
                None => " (not set)".to_string(),
            }
        )))
    }

    /// A privileged action: root and `admin_group` always; others as the authorizer decides.
    pub fn authorizer(&self, caller: &Caller) -> Option<Arc<dyn Authorizer>> {
        if caller.is_root() || Self::in_group(caller, &self.admin_gid) {
            None
        } else {
            Some(self.authorizer.clone())
        }
    }

    pub fn authorizer_name(&self) -> &'static str {
        self.authorizer.name()
    }
}
