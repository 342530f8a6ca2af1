//! The StatsD sockets: a UDP or Unix datagram reader that takes up to `receive_batch` ready
//! datagrams at a time, and a TCP acceptor with one task per connection reading
//! newline-separated lines. Each task owns its [`Batcher`] and [`Router`]; nothing is shared on
//! the hot path but the telemetry counters. What a task reads waits in its batcher for the
//! flush window (`statsd.event_flush_interval` after the first sample, or sooner once
//! `statsd.event_flush_threshold` updates are held), then each touched family gets one
//! message. Both stop reading when the shutdown token fires, after dispatching what they have.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream, UdpSocket, UnixDatagram};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::{Instant, Sleep};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::barrier::{Barrier, Ticket};
use crate::ingest::{Batcher, IngestConfig};
use crate::limits::QueueBound;
use crate::registry::RegistryMsg;
use crate::router::{Router, PRUNE_EVERY};
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
    /// Datagrams read in one go, at most.
    pub receive_batch: usize,
    /// Longest time a sample is held before its family gets it (zero: after every receive).
    pub flush_interval: Duration,
    /// Updates held, after combining, that close the window early.
    pub flush_threshold: usize,
    /// Longest TCP line.
    pub tcp_max_line_bytes: usize,
    /// Longest datagram accepted.
    pub max_datagram_bytes: usize,
    /// Room for updates waiting in family mailboxes.
    pub queue: Arc<QueueBound>,
    /// How lines become updates.
    pub ingest: Arc<IngestConfig>,
    /// What scrapes wait on.
    pub barrier: Arc<Barrier>,
}

impl ListenerContext {
    fn pipeline(&self) -> Pipeline {
        // Lets an idle task's router drop stopped actors (hibernated families) all the same.
        let mut prune = tokio::time::interval_at(Instant::now() + PRUNE_EVERY, PRUNE_EVERY);
        prune.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Pipeline {
            batcher: Batcher::new(self.telemetry.clone(), self.ingest.clone()),
            router: Router::new(
                self.registry.clone(),
                self.telemetry.clone(),
                self.queue.clone(),
            ),
            window: FlushWindow {
                interval: self.flush_interval,
                threshold: self.flush_threshold,
                timer: Box::pin(tokio::time::sleep(Duration::ZERO)),
                armed: false,
            },
            prune,
            scrapes: self.barrier.join(),
        }
    }
}

/// A listener task's way from bytes to the family actors: its batcher and router, its flush
/// window, the tick on which the router lets go of stopped actors, and the scrapes waiting
/// for it.
#[derive(Debug)]
struct Pipeline {
    batcher: Batcher,
    router: Router,
    window: FlushWindow,
    prune: tokio::time::Interval,
    scrapes: mpsc::UnboundedReceiver<Ticket>,
}

/// What came due while a task waited for input.
enum Due {
    /// The flush window closed.
    Flush,
    /// Time to prune the router's cache.
    Prune,
    /// A scrape waits: flush, and have every family reached since the last one publish.
    Scrape(Ticket),
}

impl Pipeline {
    /// Waits for what comes due next; cancel-safe, so it can race a read.
    async fn due(&mut self) -> Due {
        tokio::select! {
            () = self.window.closed(), if self.window.armed => Due::Flush,
            _ = self.prune.tick() => Due::Prune,
            // The barrier outlives every task: the channel never closes under one.
            Some(ticket) = self.scrapes.recv() => Due::Scrape(ticket),
        }
    }

    /// Does what came due.
    async fn handle(&mut self, due: Due) {
        match due {
            Due::Flush => self.flush().await,
            Due::Prune => {
                self.router.prune();
                self.batcher.idle_tick(std::time::Instant::now());
            }
            Due::Scrape(ticket) => {
                self.flush().await;
                self.router.sync(&ticket);
            }
        }
    }

    /// After a read: flushes if the window says so.
    async fn after_read(&mut self) {
        if self.window.flush_now(&self.batcher) {
            self.flush().await;
        }
    }

    /// Sends every held update to its family; the window closes.
    async fn flush(&mut self) {
        self.window.armed = false;
        self.router.dispatch(&mut self.batcher).await;
    }
}

/// When a task's held updates go to the family actors: `interval` after the first read since
/// the last flush, or at once when `threshold` updates are held or the interval is zero.
#[derive(Debug)]
struct FlushWindow {
    interval: Duration,
    threshold: usize,
    /// Reset, not re-created, at each window: one timer registration per window.
    timer: Pin<Box<Sleep>>,
    /// The timer runs: something is held.
    armed: bool,
}

impl FlushWindow {
    /// After a read: true when the batcher must flush now; otherwise opens the window if
    /// something is held and it is not open yet.
    fn flush_now(&mut self, batcher: &Batcher) -> bool {
        if !batcher.has_pending() {
            return false;
        }
        if self.interval.is_zero() || batcher.held() >= self.threshold {
            self.armed = false;
            return true;
        }
        if !self.armed {
            self.armed = true;
            self.timer.as_mut().reset(Instant::now() + self.interval);
        }
        false
    }

    /// Waits until the open window closes; only to be polled while `armed`.
    async fn closed(&mut self) {
        self.timer.as_mut().await;
        self.armed = false;
    }
}

/// How [`DatagramSocket::try_recv`] learns whether a datagram is queued.
#[derive(Clone, Copy, Debug)]
enum Ask {
    Cached,
    Kernel,
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

    /// A datagram already queued, if any. `Cached` trusts the runtime's idea of whether the
    /// socket is readable, which is free but may lag behind the kernel; `Kernel` asks the
    /// kernel, for when everything queued must be read now (a scrape, shutdown).
    fn try_recv(&self, buf: &mut [u8], ask: Ask) -> io::Result<usize> {
        use std::io::Read;
        match (self, ask) {
            (DatagramSocket::Udp(s), Ask::Cached) => s.try_recv(buf),
            (DatagramSocket::Unix(s), Ask::Cached) => s.try_recv(buf),
            // The sockets are non-blocking: an empty one answers WouldBlock.
            (DatagramSocket::Udp(s), Ask::Kernel) => (&*socket2::SockRef::from(s)).read(buf),
            (DatagramSocket::Unix(s), Ask::Kernel) => (&*socket2::SockRef::from(s)).read(buf),
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
    let mut pipe = ctx.pipeline();
    // One byte more than the limit, so that a datagram over it shows as such.
    let mut buf = vec![0u8; ctx.max_datagram_bytes.min(MAX_DATAGRAM) + 1];
    let kind = socket.kind();
    loop {
        let first = tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            due = pipe.due() => {
                if matches!(due, Due::Scrape(_)) {
                    // What the socket holds arrived before the scrape: it goes in too.
                    let limit = ctx.receive_batch * 16;
                    let packets = read_batch(&socket, &mut buf, &mut pipe.batcher, None, limit);
                    ctx.telemetry.packets(kind, packets);
                }
                pipe.handle(due).await;
                continue;
            }
            got = socket.recv(&mut buf) => got,
        };
        let packets = read_batch(
            &socket,
            &mut buf,
            &mut pipe.batcher,
            Some(first),
            ctx.receive_batch,
        );
        ctx.telemetry.packets(kind, packets);
        pipe.after_read().await;
    }
    // What the kernel already holds was sent before shutdown: apply it too (bounded, in case
    // a sender keeps sending).
    let packets = read_batch(
        &socket,
        &mut buf,
        &mut pipe.batcher,
        None,
        ctx.receive_batch * 1024,
    );
    ctx.telemetry.packets(kind, packets);
    pipe.flush().await;
}

/// Ingests `first` (a datagram just received into `buf`) and then every datagram already
/// queued, up to `limit`; returns how many. Without `first`, the kernel is asked what it
/// holds, not the runtime's readiness cache, so nothing queued before the call is missed.
fn read_batch(
    socket: &DatagramSocket,
    buf: &mut [u8],
    batcher: &mut Batcher,
    first: Option<io::Result<usize>>,
    limit: usize,
) -> u64 {
    let ask = if first.is_some() {
        Ask::Cached
    } else {
        Ask::Kernel
    };
    let mut packets = 0;
    let mut next = first.unwrap_or_else(|| socket.try_recv(buf, ask));
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
        next = socket.try_recv(buf, ask);
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
    let mut pipe = ctx.pipeline();
    let mut buf = Vec::with_capacity(16 * 1024);
    loop {
        if buf.capacity() - buf.len() < 4096 {
            buf.reserve(16 * 1024);
        }
        let read = tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            due = pipe.due() => {
                let mut open = true;
                if matches!(due, Due::Scrape(_)) {
                    // What the client sent before the scrape goes in too.
                    match read_queued(&stream, &mut buf) {
                        Ok(Some(n)) => open = consume(&ctx, &mut pipe.batcher, &mut buf, n),
                        Ok(None) => {}
                        Err(e) => {
                            connection_error(&ctx, &e);
                            open = false;
                        }
                    }
                }
                pipe.handle(due).await;
                if !open {
                    break;
                }
                continue;
            }
            read = stream.read_buf(&mut buf) => read,
        };
        let n = match read {
            Ok(n) => n,
            Err(e) => {
                connection_error(&ctx, &e);
                break;
            }
        };
        if !consume(&ctx, &mut pipe.batcher, &mut buf, n) {
            break;
        }
        pipe.after_read().await;
    }
    pipe.flush().await;
}

/// Counts and logs a read error, which ends its connection.
fn connection_error(ctx: &ListenerContext, e: &io::Error) {
    ctx.telemetry.tcp_connection_errors.inc();
    debug!(error = %e, "StatsD TCP read error");
}

/// Reads what the kernel holds for `stream` into `buf` without waiting (at most 1 MiB): the
/// bytes read, `Some(0)` at end of stream, `None` when nothing was there.
fn read_queued(stream: &TcpStream, buf: &mut Vec<u8>) -> io::Result<Option<usize>> {
    use std::io::Read;
    let mut chunk = [0u8; 16 * 1024];
    let mut total = 0;
    while total < 1 << 20 {
        match (&*socket2::SockRef::from(stream)).read(&mut chunk) {
            // Bytes before the end are taken now; the next read sees the end again.
            Ok(0) => return Ok(Some(total)),
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                total += n;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok((total > 0).then_some(total))
}

/// Ingests the complete lines in `buf` after `n` more bytes were read into it (0: end of
/// stream, where the last line needs no newline); false when the connection must close (end
/// of stream, or a line over the limit).
fn consume(ctx: &ListenerContext, batcher: &mut Batcher, buf: &mut Vec<u8>, n: usize) -> bool {
    if n > 0 {
        ctx.telemetry.packets(ListenerKind::Tcp, 1);
    }
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
        return false;
    }
    batcher.ingest(&buf[..complete]);
    buf.drain(..complete);
    n > 0
}
