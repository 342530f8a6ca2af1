//! The StatsD sockets, and nothing but reading them: a UDP or Unix datagram reader
//! (`serve_datagrams`) and a TCP acceptor with a task per connection (`serve_tcp`), whose
//! connection slots (`Slots`, shared with the HTTP server) keep silent clients from holding
//! the cap; each
//! task handing what it reads to its own `Pipeline` (see [`crate::ingest`]), which owns
//! everything from there to the family actors. Nothing is shared on the hot path but the
//! telemetry counters. Both stop reading when the shutdown token fires, after dispatching what
//! they hold. [`Sockets::bind`] binds them before the daemon starts, so that callers (and
//! tests) can bind port 0 and read the real addresses.

mod bind;
mod datagram;
mod fds;
mod pause;
mod receive;
mod slots;
mod tcp;

use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::Arc;

use crate::config::Settings;
use crate::ingest::PipelineContext;
use crate::telemetry::{ListenerKind, Telemetry};
pub use bind::{SocketFile, Sockets, StatsdSockets};
pub(crate) use datagram::serve_datagrams;
pub use fds::raise_open_file_limit;
pub(crate) use fds::AcceptBackoff;
pub(crate) use pause::{udp_pause, Pause};
pub(crate) use slots::{Holder, Slots};
pub(crate) use tcp::serve_tcp;

/// What every listener task needs.
#[derive(Clone, Debug)]
pub(crate) struct ListenerContext {
    /// Self-metrics (packets, TCP connections).
    pub(crate) telemetry: Arc<Telemetry>,
    /// Datagrams read in one go, at most.
    pub(crate) receive_batch: usize,
    /// Longest TCP line.
    pub(crate) tcp_max_line_bytes: usize,
    /// StatsD TCP connections open at once, at most.
    pub(crate) tcp_max_connections: usize,
    /// How long a TCP connection may go without completing a line; `None`: forever.
    pub(crate) tcp_idle_timeout: Option<std::time::Duration>,
    /// Longest datagram accepted.
    pub(crate) max_datagram_bytes: usize,
    /// Makes each task's way to the family actors.
    pub(crate) pipelines: Arc<PipelineContext>,
}

impl ListenerContext {
    /// The context `settings` ask for.
    pub(crate) fn new(
        settings: &Settings,
        telemetry: Arc<Telemetry>,
        pipelines: Arc<PipelineContext>,
    ) -> Self {
        ListenerContext {
            telemetry,
            receive_batch: settings.statsd.receive_batch,
            tcp_max_line_bytes: settings.statsd.tcp_max_line_bytes,
            tcp_max_connections: settings.statsd.tcp_max_connections,
            tcp_idle_timeout: Some(settings.statsd.tcp_idle_timeout).filter(|t| !t.is_zero()),
            max_datagram_bytes: settings.limits.max_datagram_bytes,
            pipelines,
        }
    }
}

/// A datagram socket: UDP, or a Unix datagram socket. Read directly, not through the runtime,
/// which only tells when one becomes readable: the socket is registered with the runtime while
/// its reader waits for a first datagram, and not while it pauses between reads (see
/// [`serve_datagrams`]), so that the datagrams arriving meanwhile wake nothing.
#[derive(Debug)]
pub(crate) enum DatagramSocket {
    /// StatsD over UDP.
    Udp(std::net::UdpSocket),
    /// StatsD over a Unix datagram socket.
    Unix(std::os::unix::net::UnixDatagram),
}

impl DatagramSocket {
    /// Another handle on the same socket, for another reader: each registers its own.
    pub(crate) fn try_clone(&self) -> io::Result<Self> {
        Ok(match self {
            DatagramSocket::Udp(s) => DatagramSocket::Udp(s.try_clone()?),
            DatagramSocket::Unix(s) => DatagramSocket::Unix(s.try_clone()?),
        })
    }

    pub(crate) fn set_nonblocking(&self) -> io::Result<()> {
        match self {
            DatagramSocket::Udp(s) => s.set_nonblocking(true),
            DatagramSocket::Unix(s) => s.set_nonblocking(true),
        }
    }

    pub(crate) fn kind(&self) -> ListenerKind {
        match self {
            DatagramSocket::Udp(_) => ListenerKind::Udp,
            DatagramSocket::Unix(_) => ListenerKind::Unixgram,
        }
    }
}

impl AsFd for DatagramSocket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            DatagramSocket::Udp(s) => s.as_fd(),
            DatagramSocket::Unix(s) => s.as_fd(),
        }
    }
}
