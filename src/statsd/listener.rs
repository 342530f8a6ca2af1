//! The StatsD sockets: a UDP or Unix datagram reader that batches up to `receive_batch` ready
//! datagrams before dispatching, and a TCP acceptor with one task per connection reading newline-separated lines.
//! Each task owns its [`Batcher`] and [`Router`]; nothing is shared on the hot path but the
//! telemetry counters. Both stop reading when the shutdown token fires, after dispatching what
//! they have.

use std::io;
use std::sync::Arc;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream, UdpSocket, UnixDatagram};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::ingest::{Batcher, IngestConfig};
use crate::limits::QueueBound;
use crate::registry::RegistryMsg;
use crate::router::Router;
use crate::statsd::parse::RejectReason;
use crate::telemetry::{ListenerKind, Telemetry};
use ractor::ActorRef;

/// Largest UDP payload.
const MAX_DATAGRAM: usize = 65_535;

/// What every listener task needs.
#[derive(Clone, Debug)]
pub struct ListenerContext {
    /// Where look-ups go on a cache miss.
    pub registry: ActorRef<RegistryMsg>,
    /// Self-metrics.
    pub telemetry: Arc<Telemetry>,
    /// Datagrams read before a dispatch, at most.
    pub receive_batch: usize,
    /// Longest TCP line.
    pub tcp_max_line_bytes: usize,
    /// Longest datagram accepted.
    pub max_datagram_bytes: usize,
    /// Room for updates waiting in family mailboxes.
    pub queue: Arc<QueueBound>,
    /// How lines become updates.
    pub ingest: Arc<IngestConfig>,
}

impl ListenerContext {
    fn pipeline(&self) -> (Batcher, Router) {
        (
            Batcher::new(self.telemetry.clone(), self.ingest.clone()),
            Router::new(
                self.registry.clone(),
                self.telemetry.clone(),
                self.queue.clone(),
            ),
        )
    }
}

/// A datagram socket: UDP, or a Unix datagram socket.
#[derive(Debug)]
pub enum DatagramSocket {
    /// StatsD over UDP.
    Udp(UdpSocket),
    /// StatsD over a Unix datagram socket.
    Unix(UnixDatagram),
}

impl DatagramSocket {
    async fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            DatagramSocket::Udp(s) => s.recv(buf).await,
            DatagramSocket::Unix(s) => s.recv(buf).await,
        }
    }

    fn try_recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            DatagramSocket::Udp(s) => s.try_recv(buf),
            DatagramSocket::Unix(s) => s.try_recv(buf),
        }
    }

    fn kind(&self) -> ListenerKind {
        match self {
            DatagramSocket::Udp(_) => ListenerKind::Udp,
            DatagramSocket::Unix(_) => ListenerKind::Unixgram,
        }
    }
}

/// Reads datagrams until `shutdown` (several tasks may read one socket): waits for one, takes every further datagram already
/// queued (up to `receive_batch`), then sends each touched family one message. At shutdown it
/// also applies what the socket buffer still holds.
pub async fn serve_datagrams(
    socket: Arc<DatagramSocket>,
    ctx: ListenerContext,
    shutdown: CancellationToken,
) {
    let (mut batcher, mut router) = ctx.pipeline();
    // One byte more than the limit, so that a datagram over it shows as such.
    let mut buf = vec![0u8; ctx.max_datagram_bytes.min(MAX_DATAGRAM) + 1];
    let kind = socket.kind();
    loop {
        let first = tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            got = socket.recv(&mut buf) => got,
        };
        let packets = read_batch(&socket, &mut buf, &mut batcher, first, ctx.receive_batch);
        ctx.telemetry.packets(kind, packets);
        router.dispatch(&mut batcher).await;
    }
    // What the kernel already holds was sent before shutdown: apply it too (bounded, in case
    // a sender keeps sending).
    let rest = socket.try_recv(&mut buf);
    let packets = read_batch(
        &socket,
        &mut buf,
        &mut batcher,
        rest,
        ctx.receive_batch * 1024,
    );
    ctx.telemetry.packets(kind, packets);
    router.dispatch(&mut batcher).await;
}

/// Ingests `first` and then every datagram already queued, up to `limit`; returns how many.
fn read_batch(
    socket: &DatagramSocket,
    buf: &mut [u8],
    batcher: &mut Batcher,
    first: io::Result<usize>,
    limit: usize,
) -> u64 {
    let mut packets = 0;
    let mut next = first;
    loop {
        match next {
            Ok(n) if n == buf.len() => {
                packets += 1;
                batcher.reject_datagram(&buf[..n]);
            }
            Ok(n) => {
                packets += 1;
                batcher.ingest(&buf[..n]);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            // ICMP errors and the like concern one peer, not the socket: keep reading.
            Err(e) => debug!(error = %e, "datagram receive error"),
        }
        if packets >= limit {
            break;
        }
        next = socket.try_recv(buf);
    }
    packets as u64
}

/// Accepts StatsD TCP connections until `shutdown`, each served by its own task; waits for
/// those tasks to dispatch what they received before returning.
pub async fn serve_tcp(listener: TcpListener, ctx: ListenerContext, shutdown: CancellationToken) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    ctx.telemetry.tcp_connections.inc();
                    debug!(%peer, "StatsD TCP connection");
                    connections.spawn(serve_connection(stream, ctx.clone(), shutdown.clone()));
                }
                Err(e) => warn!(error = %e, "StatsD TCP accept failed"),
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    while connections.join_next().await.is_some() {}
}

async fn serve_connection(
    mut stream: TcpStream,
    ctx: ListenerContext,
    shutdown: CancellationToken,
) {
    let (mut batcher, mut router) = ctx.pipeline();
    let mut buf = Vec::with_capacity(16 * 1024);
    loop {
        if buf.capacity() - buf.len() < 4096 {
            buf.reserve(16 * 1024);
        }
        let read = tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            read = stream.read_buf(&mut buf) => read,
        };
        let n = match read {
            Ok(n) => n,
            Err(e) => {
                ctx.telemetry.tcp_connection_errors.inc();
                debug!(error = %e, "StatsD TCP read error");
                break;
            }
        };
        if n > 0 {
            ctx.telemetry.packets(ListenerKind::Tcp, 1);
        }
        // At end of stream the last line needs no newline.
        let complete = if n == 0 {
            buf.len()
        } else {
            buf.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1)
        };
        let too_long = buf[..complete]
            .split(|&b| b == b'\n')
            .any(|line| line.len() > ctx.tcp_max_line_bytes)
            || buf.len() - complete > ctx.tcp_max_line_bytes;
        if too_long {
            // Like statsd_exporter: count it, drop the connection, keep what came before.
            let lines = buf[..complete].split(|&b| b == b'\n');
            for line in lines.take_while(|l| l.len() <= ctx.tcp_max_line_bytes) {
                batcher.ingest(line);
            }
            batcher.reject_unparsed(RejectReason::LineTooLong, &buf[..256.min(buf.len())]);
            ctx.telemetry.tcp_too_long_lines.inc();
            warn!(
                limit = ctx.tcp_max_line_bytes,
                "StatsD TCP line too long; closing the connection"
            );
            break;
        }
        batcher.ingest(&buf[..complete]);
        buf.drain(..complete);
        router.dispatch(&mut batcher).await;
        if n == 0 {
            break;
        }
    }
    router.dispatch(&mut batcher).await;
}
