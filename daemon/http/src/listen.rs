//! Where clients connect: the sockets systemd passes (`LISTEN_FDS`, sd_listen_fds(3)) or those
//! the bridge binds itself (`--listen`), each accepted connection labelled with what the bridge
//! knows of its peer.

use std::os::fd::{AsFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::extract::connect_info::Connected;
use axum::serve::{IncomingStream, Listener};
use nix::sys::socket::{AddressFamily, SockaddrLike, SockaddrStorage, getsockname};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};

/// The first fd systemd passes.
const SD_LISTEN_FDS_START: RawFd = 3;
/// More than any unit of ours passes; a larger count is a broken environment.
const MAX_LISTEN_FDS: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    #[error("LISTEN_FDS: {0}")]
    Environment(String),
    #[error("socket {fd} from systemd: {why}")]
    Passed { fd: RawFd, why: String },
    #[error("binding {path}: {source}")]
    Bind {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("no socket to serve: run under moed-http.socket or pass --listen PATH")]
    Nothing,
}

/// A listening socket of either kind, non-blocking, for tokio to take over inside the runtime.
pub enum Socket {
    Unix(std::os::unix::net::UnixListener),
    Tcp(std::net::TcpListener),
}

/// The sockets systemd passed to this process, if any (and clears the variables so children do
/// not take them).
pub fn from_systemd() -> Result<Vec<Socket>, ListenError> {
    let pid = std::env::var("LISTEN_PID").ok();
    let fds = std::env::var("LISTEN_FDS").ok();
    // SAFETY (of the environment calls): run at start, before any thread is spawned.
    unsafe {
        std::env::remove_var("LISTEN_PID");
        std::env::remove_var("LISTEN_FDS");
        std::env::remove_var("LISTEN_FDNAMES");
    }
    let (Some(pid), Some(fds)) = (pid, fds) else {
        return Ok(Vec::new());
    };
    if pid.trim().parse::<u32>().ok() != Some(std::process::id()) {
        // Meant for another process (sd_listen_fds ignores them likewise).
        return Ok(Vec::new());
    }
    let count: usize = fds.trim().parse().map_err(|_| {
        ListenError::Environment(format!("{} is not a count", moed_dbus::wire::quote(&fds)))
    })?;
    if count > MAX_LISTEN_FDS {
        return Err(ListenError::Environment(format!(
            "{count} sockets, at most {MAX_LISTEN_FDS}"
        )));
    }
    let mut sockets = Vec::with_capacity(count);
    for i in 0..count {
        let fd = SD_LISTEN_FDS_START + i as RawFd;
        // SAFETY: systemd passes fds 3..3+LISTEN_FDS to this process (LISTEN_PID checked above),
        // open and owned by nobody else in it; each is taken exactly once.
        let owned = unsafe { OwnedFd::from_raw_fd(fd) };
        sockets.push(socket(fd, owned)?);
    }
    Ok(sockets)
}

fn socket(fd: RawFd, owned: OwnedFd) -> Result<Socket, ListenError> {
    let why = |why: String| ListenError::Passed { fd, why };
    let family = getsockname::<SockaddrStorage>(fd)
        .map_err(|e| why(format!("not a socket ({e})")))?
        .family();
    match family {
        Some(AddressFamily::Unix) => {
            let std = std::os::unix::net::UnixListener::from(owned);
            std.set_nonblocking(true).map_err(|e| why(e.to_string()))?;
            Ok(Socket::Unix(std))
        }
        Some(AddressFamily::Inet | AddressFamily::Inet6) => {
            let std = std::net::TcpListener::from(owned);
            std.set_nonblocking(true).map_err(|e| why(e.to_string()))?;
            Ok(Socket::Tcp(std))
        }
        other => Err(why(format!("unsupported address family {other:?}"))),
    }
}

/// Binds a unix socket at `path` (replacing a stale one), mode 0666: who may call is decided by
/// moed from the caller's credentials, as on D-Bus.
pub fn bind_unix(path: &Path) -> Result<Socket, ListenError> {
    let err = |source| ListenError::Bind {
        path: path.to_path_buf(),
        source,
    };
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(err(e)),
    }
    let listener = std::os::unix::net::UnixListener::bind(path).map_err(err)?;
    listener.set_nonblocking(true).map_err(err)?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666)).map_err(err)?;
    Ok(Socket::Unix(listener))
}

/// What the bridge knows of a connection's peer.
#[derive(Clone, Debug)]
pub struct Peer {
    /// A duplicate of the connection's fd: passed to moed (unix), and watched for hang-up.
    pub fd: Arc<OwnedFd>,
    /// A loopback TCP connection: identified by bearer token, not by credentials.
    pub tcp: bool,
}

impl Peer {
    fn new(stream: &impl AsFd, tcp: bool) -> Option<Peer> {
        match stream.as_fd().try_clone_to_owned() {
            Ok(fd) => Some(Peer {
                fd: Arc::new(fd),
                tcp,
            }),
            Err(e) => {
                log::warn!("dropping a connection: duplicating its fd: {e}");
                None
            }
        }
    }

    /// Resolves when the client has closed its end (or the connection failed): a request
    /// running for it is then cancelled. Waiting for readiness does not consume data, so the
    /// HTTP server's reads are unaffected.
    pub async fn closed(&self) {
        let Ok(fd) = self.fd.try_clone() else {
            return std::future::pending().await;
        };
        // SAFETY: the AsyncFd owns `fd`, which stays open and the same until it is dropped.
        let Ok(watch) = (unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }) else {
            return std::future::pending().await;
        };
        loop {
            let Ok(mut guard) = watch.ready(Interest::READABLE).await else {
                return;
            };
            if guard.ready().is_read_closed() || guard.ready().is_error() {
                return;
            }
            // Data of a next request: hyper's to read; wait for the next event.
            guard.clear_ready();
        }
    }
}

/// The "address" of an accepted connection, as handlers get it (`ConnectInfo<PeerAddr>`):
/// `None` when its fd could not be duplicated (the request is then refused).
#[derive(Clone, Debug)]
pub struct PeerAddr(pub Option<Peer>);

impl Connected<IncomingStream<'_, UnixPeers>> for PeerAddr {
    fn connect_info(stream: IncomingStream<'_, UnixPeers>) -> Self {
        stream.remote_addr().clone()
    }
}

impl Connected<IncomingStream<'_, TcpPeers>> for PeerAddr {
    fn connect_info(stream: IncomingStream<'_, TcpPeers>) -> Self {
        stream.remote_addr().clone()
    }
}

/// Unix connections, each with its [`Peer`].
pub struct UnixPeers(pub UnixListener);
/// TCP connections (loopback, token-authenticated), each with its [`Peer`].
pub struct TcpPeers(pub TcpListener);

async fn accept_error(e: std::io::Error) {
    // Out of fds or memory: back off rather than spin (as axum's own listeners do).
    log::warn!("accepting a connection: {e}");
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
}

impl Listener for UnixPeers {
    type Io = UnixStream;
    type Addr = PeerAddr;

    async fn accept(&mut self) -> (UnixStream, PeerAddr) {
        loop {
            match self.0.accept().await {
                Ok((stream, _)) => {
                    let peer = Peer::new(&stream, false);
                    return (stream, PeerAddr(peer));
                }
                Err(e) => accept_error(e).await,
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<PeerAddr> {
        Ok(PeerAddr(None))
    }
}

impl Listener for TcpPeers {
    type Io = TcpStream;
    type Addr = PeerAddr;

    async fn accept(&mut self) -> (TcpStream, PeerAddr) {
        loop {
            match self.0.accept().await {
                Ok((stream, _)) => {
                    let peer = Peer::new(&stream, true);
                    return (stream, PeerAddr(peer));
                }
                Err(e) => accept_error(e).await,
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<PeerAddr> {
        Ok(PeerAddr(None))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn closed_resolves_when_the_client_hangs_up() {
        let (a, b) = UnixStream::pair().expect("pair");
        let peer = Peer::new(&a, false).expect("peer");
        let watch = tokio::spawn(async move { peer.closed().await });
        b.writable().await.expect("writable");
        b.try_write(b"GET / HTTP/1.1\r\n").expect("write");
        tokio::task::yield_now().await;
        assert!(!watch.is_finished(), "data is not a hang-up");
        drop(b);
        tokio::time::timeout(std::time::Duration::from_secs(10), watch)
            .await
            .expect("noticed")
            .expect("joined");
    }
}
