//! Binding the sockets the settings ask for: UDP with its receive buffer, TCP, a Unix datagram
//! socket with its permissions, and the HTTP server's.

use anyhow::Context as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use tokio::net::{TcpListener, UdpSocket, UnixDatagram};
use tracing::{info, warn};

use crate::config::{self, Settings, DEFAULT_READ_BUFFER};

/// The sockets tallyd serves, bound before [`crate::daemon::run`] so callers (and tests) can bind port 0 and
/// read the real addresses.
#[derive(Debug)]
pub struct Sockets {
    /// The StatsD sockets.
    pub statsd: StatsdSockets,
    /// The HTTP server.
    pub http: TcpListener,
}

/// The StatsD sockets, each unless disabled.
#[derive(Debug)]
pub struct StatsdSockets {
    /// StatsD over UDP.
    pub udp: Option<UdpSocket>,
    /// StatsD over TCP.
    pub tcp: Option<TcpListener>,
    /// StatsD over a Unix datagram socket, with its file (removed at exit).
    pub unixgram: Option<(UnixDatagram, SocketFile)>,
}

/// The file of a bound Unix socket: its path, and which file it is, so that tallyd removes it
/// at exit only while it is still its own.
#[derive(Clone, Debug)]
pub struct SocketFile {
    path: PathBuf,
    /// Device and inode of the file tallyd bound.
    id: (u64, u64),
}

impl SocketFile {
    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Removes the file, unless it is no longer the one tallyd bound (something replaced it).
    pub fn remove_if_own(&self) {
        use std::os::unix::fs::MetadataExt;
        if let Ok(meta) = std::fs::symlink_metadata(&self.path) {
            if (meta.dev(), meta.ino()) == self.id {
                let _ = std::fs::remove_file(&self.path);
            }
        }
    }
}

impl Sockets {
    /// Binds every socket the settings ask for; an error names the setting.
    pub async fn bind(settings: &Settings) -> anyhow::Result<Sockets> {
        let addr = |key: &str, value: &str| {
            config::resolve(value).map_err(|e| anyhow::anyhow!("{key}: {e}"))
        };
        let udp = match settings.statsd.listen_udp.as_str() {
            "" => None,
            a => Some(
                bind_udp(addr("statsd.listen_udp", a)?, settings.statsd.read_buffer)
                    .with_context(|| format!("cannot bind StatsD UDP on {a}"))?,
            ),
        };
        let tcp = match settings.statsd.listen_tcp.as_str() {
            "" => None,
            a => Some(
                bind_tcp(addr("statsd.listen_tcp", a)?)
                    .with_context(|| format!("cannot bind StatsD TCP on {a}"))?,
            ),
        };
        let unixgram = match settings.statsd.listen_unixgram.as_str() {
            "" => None,
            path => Some(bind_unixgram(
                Path::new(path),
                &settings.statsd.unixsocket_mode,
            )?),
        };
        let web = &settings.web.listen_address;
        let http = if settings.web.systemd_socket {
            systemd_socket()?
        } else {
            bind_tcp(addr("web.listen_address", web)?)
                .with_context(|| format!("cannot bind HTTP on {web}"))?
        };
        Ok(Sockets {
            statsd: StatsdSockets { udp, tcp, unixgram },
            http,
        })
    }

    /// The addresses bound (the path of the Unix socket), or "off": UDP, TCP, Unix, HTTP.
    pub(crate) fn describe(&self) -> [String; 4] {
        let statsd = &self.statsd;
        let udp = statsd.udp.as_ref().and_then(|s| s.local_addr().ok());
        let tcp = statsd.tcp.as_ref().and_then(|s| s.local_addr().ok());
        let show = |a: Option<std::net::SocketAddr>| a.map_or("off".into(), |a| a.to_string());
        let unixgram = statsd
            .unixgram
            .as_ref()
            .map_or("off".into(), |(_, file)| file.path().display().to_string());
        [
            show(udp),
            show(tcp),
            unixgram,
            show(self.http.local_addr().ok()),
        ]
    }
}

/// A socket of type `ty` bound to `addr`. Every IPv6 address (`[::]`, what `:port` means)
/// takes IPv4 too, as Go's listeners do; where the system has no IPv6, every IPv4 address.
fn bound(
    addr: SocketAddr,
    ty: socket2::Type,
    prepare: impl Fn(&socket2::Socket) -> std::io::Result<()>,
) -> std::io::Result<socket2::Socket> {
    use socket2::{Domain, Socket};
    let bind = |addr: SocketAddr| -> std::io::Result<Socket> {
        let socket = Socket::new(Domain::for_address(addr), ty, None)?;
        if addr.is_ipv6() && addr.ip().is_unspecified() {
            socket.set_only_v6(false)?;
        }
        prepare(&socket)?;
        socket.set_nonblocking(true)?;
        socket.bind(&addr.into())?;
        Ok(socket)
    };
    match bind(addr) {
        Err(e)
            if addr.is_ipv6()
                && addr.ip().is_unspecified()
                && matches!(e.raw_os_error(), Some(errno) if no_ipv6(errno)) =>
        {
            info!(%addr, error = %e, "no IPv6 here: listening on every IPv4 address");
            bind(SocketAddr::from(([0, 0, 0, 0], addr.port())))
        }
        other => other,
    }
}

/// True for the errors of a system without IPv6 (a kernel booted with `ipv6.disable=1`, or a
/// network namespace without an IPv6 address).
fn no_ipv6(errno: i32) -> bool {
    use nix::errno::Errno;
    [
        Errno::EAFNOSUPPORT,
        Errno::EADDRNOTAVAIL,
        Errno::EPROTONOSUPPORT,
    ]
    .contains(&Errno::from_raw(errno))
}

/// The listening TCP socket systemd passed (`LISTEN_PID`, `LISTEN_FDS`: the first, file
/// descriptor 3), for `--web.systemd-socket`.
fn systemd_socket() -> anyhow::Result<TcpListener> {
    use std::os::fd::{FromRawFd, OwnedFd};
    const FIRST: i32 = 3;
    let var = |name: &str| std::env::var(name).ok();
    let for_us =
        var("LISTEN_PID").and_then(|pid| pid.parse::<u32>().ok()) == Some(std::process::id());
    let count = var("LISTEN_FDS")
        .and_then(|n| n.parse::<i32>().ok())
        .unwrap_or(0);
    anyhow::ensure!(
        for_us && count >= 1,
        "--web.systemd-socket: systemd passed no socket (LISTEN_PID, LISTEN_FDS); start tallyd from a .socket unit, or drop the flag"
    );
    // SAFETY: descriptor 3 is open: systemd passed it to this process (LISTEN_FDS).
    let passed = unsafe { std::os::fd::BorrowedFd::borrow_raw(FIRST) };
    let socket = socket2::SockRef::from(&passed);
    anyhow::ensure!(
        (socket.r#type().ok(), socket.is_listener().ok()) == (Some(socket2::Type::STREAM), Some(true)),
        "--web.systemd-socket: file descriptor {FIRST} is not a listening TCP socket (ListenStream= in the .socket unit)"
    );
    // SAFETY: systemd hands the descriptor to this process, which takes it once, here.
    let listener = std::net::TcpListener::from(unsafe { OwnedFd::from_raw_fd(FIRST) });
    listener.set_nonblocking(true)?;
    Ok(TcpListener::from_std(listener)?)
}

/// Binds a TCP listener (StatsD or HTTP).
fn bind_tcp(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = bound(addr, socket2::Type::STREAM, |s| s.set_reuse_address(true))?;
    socket.listen(1024)?;
    TcpListener::from_std(socket.into())
}

/// Binds the StatsD UDP socket with the requested receive buffer.
fn bind_udp(addr: SocketAddr, read_buffer: usize) -> std::io::Result<UdpSocket> {
    let socket = bound(addr, socket2::Type::DGRAM, |socket| {
        set_read_buffer(socket, read_buffer)
    })?;
    UdpSocket::from_std(socket.into())
}

/// Sets a UDP socket's receive buffer to `read_buffer` (0: the system's default), past
/// `net.core.rmem_max` where tallyd may.
fn set_read_buffer(socket: &socket2::Socket, read_buffer: usize) -> std::io::Result<()> {
    if read_buffer > 0 {
        socket.set_recv_buffer_size(read_buffer)?;
        // Linux doubles the request for its own bookkeeping, after capping it at rmem_max.
        // A process with CAP_NET_ADMIN (root on a host) may go past the cap, as journald
        // does; any other is refused, and keeps the capped buffer.
        if socket.recv_buffer_size()? < read_buffer.saturating_mul(2) {
            use nix::sys::socket::{setsockopt, sockopt::RcvBufForce};
            if setsockopt(&socket, RcvBufForce, &read_buffer).is_ok() {
                info!(
                    requested = read_buffer,
                    got = socket.recv_buffer_size()?,
                    "UDP receive buffer set past net.core.rmem_max (CAP_NET_ADMIN)"
                );
            }
        }
        let got = socket.recv_buffer_size()?;
        // Capping the default is normal on most hosts: worth a warning only when asked for.
        if got < read_buffer.saturating_mul(2) {
            if read_buffer == DEFAULT_READ_BUFFER {
                info!(
                    requested = read_buffer,
                    got, "UDP receive buffer capped by the kernel (net.core.rmem_max)"
                );
            } else {
                warn!(
                    requested = read_buffer,
                    got, "UDP receive buffer capped by the kernel (net.core.rmem_max)"
                );
            }
        }
    }
    Ok(())
}

/// Binds a Unix datagram socket at `path` with permissions `mode` (octal), replacing a stale
/// socket file left by an earlier run, but never a socket another process still reads (a
/// second tallyd started with the same path, say) nor another kind of file.
fn bind_unixgram(path: &Path, mode: &str) -> anyhow::Result<(UnixDatagram, SocketFile)> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        anyhow::ensure!(
            meta.file_type().is_socket(),
            "statsd.listen_unixgram: {} exists and is not a socket",
            path.display()
        );
        anyhow::ensure!(
            !in_use(path)?,
            "statsd.listen_unixgram: {} is in use by another process (another tallyd?); stop it, or choose another path",
            path.display()
        );
        std::fs::remove_file(path)
            .with_context(|| format!("cannot remove the stale socket {}", path.display()))?;
    }
    let socket = UnixDatagram::bind(path)
        .with_context(|| format!("cannot bind StatsD Unix datagram socket {}", path.display()))?;
    let mode = u32::from_str_radix(mode, 8).context("statsd.unixsocket_mode")?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("cannot set mode {mode:o} on {}", path.display()))?;
    let meta = std::fs::symlink_metadata(path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    let file = SocketFile {
        path: path.to_owned(),
        id: (meta.dev(), meta.ino()),
    };
    Ok((socket, file))
}

/// True when a process has a socket bound at `path`: connecting to it succeeds. A socket file
/// left by a process that has gone refuses the connection.
fn in_use(path: &Path) -> anyhow::Result<bool> {
    let probe = std::os::unix::net::UnixDatagram::unbound().context("a Unix datagram socket")?;
    match probe.connect(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => Ok(false),
        Err(e) => {
            Err(e).with_context(|| format!("cannot tell whether {} is in use", path.display()))
        }
    }
}
