//! Requests on behalf of a socket's peer: a bridge (`moed-http`) passes the client connection it
//! accepted (option `client_socket`), and the daemon reads that socket's credentials from the
//! kernel itself. The bridge cannot name another user: `SO_PEERCRED` and `SO_PEERGROUPS` are what
//! the connecting process was when it called `connect(2)`, not what the fd's holder says.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd};

use moed_dbus::options::OptionDict;
use moed_dbus::{CLIENT_SOCKET_OPTION, MoedError};
use nix::sys::socket::{
    AddressFamily, SockType, SockaddrLike, SockaddrStorage, getpeername, getsockname, getsockopt,
    sockopt,
};
use zbus::Variant;

use super::auth::Caller;

/// Most supplementary groups read from a peer (the kernel's `NGROUPS_MAX`).
const MAX_GROUPS: usize = 65536;

/// `SO_PEERGROUPS` (Linux 4.13), the same value on every architecture moed is built for; libc
/// does not export it.
const SO_PEERGROUPS: libc::c_int = 59;

/// The `client_socket` option's fd, when the options carry one; a value of another type is
/// `InvalidArgument`.
pub fn client_socket(options: &OptionDict) -> Result<Option<BorrowedFd<'_>>, MoedError> {
    let Some(value) = options.get(CLIENT_SOCKET_OPTION) else {
        return Ok(None);
    };
    let mut value: &Variant<'_> = value;
    while let Variant::Variant(inner) = value {
        value = inner;
    }
    match value {
        Variant::Fd(fd) => Ok(Some(fd.as_fd())),
        other => Err(MoedError::InvalidArgument(format!(
            "option '{CLIENT_SOCKET_OPTION}': expected a file descriptor (type h), got type {}",
            other.value_signature()
        ))),
    }
}

/// The caller the bridge speaks for: the peer of `socket`, keeping the bridge's bus name (its
/// requests end when it leaves the bus, and only it may cancel them).
pub fn delegated(bridge: &Caller, socket: BorrowedFd<'_>) -> Result<Caller, MoedError> {
    let refuse = |why: &str| {
        MoedError::InvalidArgument(format!(
            "option '{CLIENT_SOCKET_OPTION}': {why}; pass the connected unix stream socket of the client"
        ))
    };
    let sock_type = getsockopt(&socket, sockopt::SockType).map_err(|_| refuse("not a socket"))?;
    let family = getsockname::<SockaddrStorage>(socket.as_raw_fd())
        .ok()
        .and_then(|a| a.family());
    if sock_type != SockType::Stream || family != Some(AddressFamily::Unix) {
        return Err(refuse("not a unix stream socket"));
    }
    // A listening socket reports its own creator as "peer": only a connected one has a peer.
    if getpeername::<SockaddrStorage>(socket.as_raw_fd()).is_err() {
        return Err(refuse("it is not connected"));
    }
    if !host_user_namespace() {
        return Err(MoedError::Failed(format!(
            "option '{CLIENT_SOCKET_OPTION}': moed runs in a user namespace of its own (PrivateUsers= of its unit), where the kernel reports other users' sockets as user nobody; run it in the host's user namespace (PrivateUsers=no, as moed.service ships) to serve bridged clients"
        )));
    }
    let cred = getsockopt(&socket, sockopt::PeerCredentials)
        .map_err(|e| refuse(&format!("its peer credentials cannot be read ({e})")))?;
    if cred.pid() <= 0 || cred.uid() == u32::MAX {
        return Err(refuse("it is not connected"));
    }
    let gids = peer_groups(socket).map_err(|e| refuse(&format!("its peer's groups: {e}")))?;
    let mut all = Vec::with_capacity(gids.len() + 1);
    all.push(cred.gid());
    all.extend(gids.into_iter().filter(|g| *g != cred.gid()));
    Ok(Caller {
        unique_name: bridge.unique_name.clone(),
        uid: cred.uid(),
        pid: u32::try_from(cred.pid()).ok(),
        gids: all,
        // The HTTP client cannot answer a polkit prompt.
        interactive: false,
    })
}

/// Whether this process sees every user id as it is: in a user namespace of its own, the
/// kernel maps the uids of `SO_PEERCRED` into it, and those it does not map read as the
/// overflow uid (nobody), which would serve every bridged client as one user.
fn host_user_namespace() -> bool {
    static HOST: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *HOST.get_or_init(|| {
        std::fs::read_to_string("/proc/self/uid_map").is_ok_and(|map| {
            let fields: Vec<&str> = map.split_whitespace().collect();
            fields == ["0", "0", "4294967295"]
        })
    })
}

/// The peer's supplementary groups as they were at `connect(2)` (`SO_PEERGROUPS`).
fn peer_groups(socket: BorrowedFd<'_>) -> Result<Vec<u32>, nix::Error> {
    let mut groups: Vec<libc::gid_t> = vec![0; 64];
    loop {
        let mut len = libc::socklen_t::try_from(groups.len() * size_of::<libc::gid_t>())
            .map_err(|_| nix::Error::E2BIG)?;
        // SAFETY: the buffer holds `len` bytes of gid_t; the kernel writes at most `len` bytes
        // and sets `len` to what it wrote, or to what it needs with ERANGE.
        let rc = unsafe {
            libc::getsockopt(
                socket.as_raw_fd(),
                libc::SOL_SOCKET,
                SO_PEERGROUPS,
                groups.as_mut_ptr().cast(),
                &mut len,
            )
        };
        let needed = len as usize / size_of::<libc::gid_t>();
        if rc == 0 {
            groups.truncate(needed);
            return Ok(groups);
        }
        let err = nix::Error::last();
        if err != nix::Error::ERANGE || needed <= groups.len() || needed > MAX_GROUPS {
            return Err(err);
        }
        groups.resize(needed, 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::{UnixListener, UnixStream};

    fn bridge() -> Caller {
        Caller {
            unique_name: ":1.7".into(),
            uid: 0,
            pid: Some(1),
            gids: vec![],
            interactive: true,
        }
    }

    #[test]
    fn a_connected_socket_gives_its_peer() {
        let (a, _b) = UnixStream::pair().expect("pair");
        let caller = delegated(&bridge(), a.as_fd()).expect("delegated");
        assert_eq!(caller.uid, nix::unistd::getuid().as_raw());
        assert_eq!(caller.pid, Some(std::process::id()));
        assert_eq!(caller.gids[0], nix::unistd::getgid().as_raw());
        assert_eq!(
            caller.unique_name, ":1.7",
            "the bridge stays the bus client"
        );
        assert!(!caller.interactive);
    }

    #[test]
    fn other_fds_are_refused() {
        let file = std::fs::File::open("/proc/self/status").expect("open");
        let err = delegated(&bridge(), file.as_fd()).expect_err("a file");
        assert!(err.message().contains("not a socket"), "{err}");
        let dir = tempfile::tempdir().expect("tempdir");
        let listener = UnixListener::bind(dir.path().join("s")).expect("bind");
        let err = delegated(&bridge(), listener.as_fd()).expect_err("a listener");
        assert!(err.message().contains("not connected"), "{err}");
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").expect("udp");
        let err = delegated(&bridge(), udp.as_fd()).expect_err("udp");
        assert!(err.message().contains("unix stream"), "{err}");
    }

    #[test]
    fn only_an_fd_is_accepted_as_the_option() {
        let mut options = OptionDict::new();
        assert!(client_socket(&options).expect("none").is_none());
        options.insert(CLIENT_SOCKET_OPTION.into(), 3u32.into());
        let err = client_socket(&options).expect_err("an integer");
        assert!(err.message().contains("type h"), "{err}");
    }
}
