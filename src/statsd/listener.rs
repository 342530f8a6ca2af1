//! The StatsD sockets: a UDP or Unix datagram reader that takes up to `receive_batch` ready
//! datagrams at a time, several to a system call ([`super::receive`]), pausing
//! `receive_coalesce` after a read that found few, so that a steady stream is read in batches;
//! and a TCP acceptor with one task per connection reading newline-separated lines. Each task
//! owns its [`Batcher`] and [`Router`]; nothing is shared on the hot path but the telemetry
//! counters. What a task reads waits in its batcher for the flush window
//! (`statsd.event_flush_interval` after the first sample, or sooner once
//! `statsd.event_flush_threshold` updates are held), then each touched family gets one
//! message. Both stop reading when the shutdown token fires, after dispatching what they have.

use nix::errno::Errno;
use nix::sys::time::TimeSpec;
use nix::sys::timerfd::{ClockId, Expiration, TimerFd, TimerFlags, TimerSetTimeFlags};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::unix::AsyncFd;
use tokio::io::AsyncReadExt;
use tokio::io::Interest;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::{Instant, Sleep};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::barrier::{Barrier, Ticket};
use crate::ingest::{Batcher, IngestConfig};
use crate::limits::QueueBound;
use crate::registry::RegistryMsg;
use crate::router::{Router, PRUNE_EVERY};
use crate::statsd::parse::RejectReason;
use crate::statsd::receive::{Datagram, Datagrams, RECEIVE_MANY};
use crate::telemetry::{ListenerKind, Telemetry};
use ractor::ActorRef;

/// Largest UDP payload.
const MAX_DATAGRAM: usize = 65_535;
/// How often a datagram socket the runtime cannot watch is read.
const POLL_UNWATCHED: Duration = Duration::from_millis(10);

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
            prune: None,
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
    /// Lets an idle task's router drop stopped actors (hibernated families), and its batcher
    /// its caches, every [`PRUNE_EVERY`] while the task waits for input and they hold
    /// anything. A UDP reader that pauses between reads is busy and prunes at its dispatches:
    /// it stops the timer, which would otherwise wake its thread between its reads.
    prune: Option<Pin<Box<Sleep>>>,
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
        let prune = async {
            match &mut self.prune {
                Some(timer) => timer.await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = self.window.closed(), if self.window.armed => Due::Flush,
            () = prune => Due::Prune,
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
                self.prune = None;
                self.waiting();
            }
            Due::Scrape(ticket) => {
                self.flush().await;
                self.router.sync(&ticket);
            }
        }
    }

    /// The task is about to wait for input: its thread gives back freed memory (a datagram
    /// reader's runtime does not at each park: that one pauses between reads while busy), and
    /// the prune timer starts, if it is not running and there is something to let go of.
    fn waiting(&mut self) {
        crate::memory::release_freed_memory();
        if self.prune.is_none() && !(self.router.is_empty() && self.batcher.is_idle()) {
            self.prune = Some(Box::pin(tokio::time::sleep(PRUNE_EVERY)));
        }
    }

    /// The task pauses between reads (see [`serve_datagrams`]): it is busy, and the prune
    /// timer stops.
    fn pausing(&mut self) {
        self.prune = None;
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

/// A datagram socket: UDP, or a Unix datagram socket. Read directly, not through the runtime,
/// which only tells when one becomes readable: the socket is registered with the runtime while
/// its reader waits for a first datagram, and not while it pauses between reads (see
/// [`serve_datagrams`]), so that the datagrams arriving meanwhile wake nothing.
#[derive(Debug)]
pub enum DatagramSocket {
    /// StatsD over UDP.
    Udp(std::net::UdpSocket),
    /// StatsD over a Unix datagram socket.
    Unix(std::os::unix::net::UnixDatagram),
}

impl DatagramSocket {
    /// Another handle on the same socket, for another reader: each registers its own.
    pub fn try_clone(&self) -> io::Result<Self> {
        Ok(match self {
            DatagramSocket::Udp(s) => DatagramSocket::Udp(s.try_clone()?),
            DatagramSocket::Unix(s) => DatagramSocket::Unix(s.try_clone()?),
        })
    }

    fn set_nonblocking(&self) -> io::Result<()> {
        match self {
            DatagramSocket::Udp(s) => s.set_nonblocking(true),
            DatagramSocket::Unix(s) => s.set_nonblocking(true),
        }
    }

    fn kind(&self) -> ListenerKind {
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

/// When a datagram reader reads next.
#[derive(Clone, Copy, Debug)]
enum Next {
    /// At once: the last read stopped before the socket said it was empty.
    Now,
    /// At this time, without asking the runtime: the last read took few datagrams, so the
    /// next ones are left to gather in the socket buffer (see [`udp_pause`]).
    At(Instant),
    /// When the socket becomes readable.
    Readable,
}

/// A datagram reader's clock for its pauses: a kernel timer (`timerfd`) that the runtime
/// watches like a socket. The runtime's own timers sit on a wheel that wakes its thread at
/// every 64 ms boundary a deadline lies past, to move the timer to a finer slot: most pauses
/// of 50 ms would cost two wake-ups instead of one.
struct PauseClock(AsyncFd<Timer>);

/// A timerfd, as the runtime takes a descriptor.
struct Timer(TimerFd);

impl AsRawFd for Timer {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_fd().as_raw_fd()
    }
}

impl PauseClock {
    /// A clock, or `None` where the system has no timerfd (the runtime's timers serve then).
    fn new() -> Option<Self> {
        let flags = TimerFlags::TFD_NONBLOCK | TimerFlags::TFD_CLOEXEC;
        let timer = TimerFd::new(ClockId::CLOCK_MONOTONIC, flags).ok()?;
        // SAFETY: `Timer` owns its descriptor, which stays open, and the same, until the
        // `AsyncFd` that owns the `Timer` is dropped.
        unsafe { AsyncFd::register_with_interest(Timer(timer), Interest::READABLE) }
            .ok()
            .map(PauseClock)
    }

    /// Waits until `at`; cancel-safe: the next call sets the timer again.
    async fn until(&self, at: Instant) -> io::Result<()> {
        let left = at.saturating_duration_since(Instant::now());
        if left.is_zero() {
            // A zero time would disarm the timer, not fire it.
            return Ok(());
        }
        let expiry = Expiration::OneShot(TimeSpec::from_duration(left));
        self.0.get_ref().0.set(expiry, TimerSetTimeFlags::empty())?;
        loop {
            let mut guard = self.0.readable().await?;
            // Reads the expiry count, which leaves the timer unreadable until it fires again;
            // none yet (a readiness left from an earlier, cancelled wait, whose count the new
            // setting cleared) means the wait goes on.
            let read = nix::unistd::read(self.0.get_ref().0.as_fd(), &mut [0; 8]);
            guard.clear_ready();
            match read {
                Ok(_) => return Ok(()),
                Err(Errno::EAGAIN) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
}

/// How fast the kernel may fill a UDP socket's receive buffer while its reader pauses, in bytes
/// of buffer a second: 128 MiB/s is about 57,000 datagrams of 1,400 bytes a second (each takes
/// about 2.1–2.3 KiB of buffer), what tallyd reads flat out on 2 cores (5 million counter lines
/// a second). A sender faster than that overflows the buffer whether the reader pauses or not;
/// up to it, a pause never does.
const FILL_RATE: f64 = 128.0 * 1024.0 * 1024.0;

/// The pause of a UDP reader after a read that found few datagrams (see [`serve_datagrams`]):
/// `configured` (`statsd.receive_coalesce`), shortened so that the socket's receive buffer
/// holds what can arrive meanwhile at `FILL_RATE`. (A Unix datagram reader does not pause:
/// its queue is a few datagrams long, `net.unix.max_dgram_qlen`, and refuses senders when full.)
pub fn udp_pause(udp: &std::net::UdpSocket, configured: Duration) -> Duration {
    let buffer = socket2::SockRef::from(udp).recv_buffer_size().unwrap_or(0);
    let fits = Duration::from_secs_f64(buffer as f64 / FILL_RATE);
    if fits < configured {
        info!(
            receive_buffer = buffer,
            pause = ?fits,
            "statsd.receive_coalesce shortened to what the UDP receive buffer holds (see net.core.rmem_max)"
        );
    }
    configured.min(fits)
}

/// Reads datagrams until `shutdown`: waits for one, takes every further datagram already
/// queued (up to `receive_batch`), then sends each touched family one message when its flush
/// window says so. After a read that found fewer than `receive_batch` datagrams, the reader
/// pauses for `pause` (see [`udp_pause`]) before reading again, so that a steady stream costs one
/// wake-up per pause rather than one per datagram; after a read that found none, it waits for
/// the socket. Scrapes and shutdown do not wait for a pause: they read what the socket holds.
/// At shutdown it also applies what the socket buffer still holds.
pub async fn serve_datagrams(
    socket: DatagramSocket,
    pause: Duration,
    ctx: ListenerContext,
    shutdown: CancellationToken,
) {
    // Reads must never block a runtime worker.
    if let Err(e) = socket.set_nonblocking() {
        warn!(error = %e, "cannot make the StatsD socket non-blocking; not reading it");
        return;
    }
    let mut pipe = ctx.pipeline();
    let mut buf = Datagrams::new(ctx.max_datagram_bytes.min(MAX_DATAGRAM));
    let kind = socket.kind();
    let mut next = Next::Readable;
    // The socket's registration with the runtime: dropped for a pause, so that what arrives
    // meanwhile wakes nothing.
    let mut registered: Option<AsyncFd<BorrowedFd<'_>>> = None;
    // The runtime could not watch the socket this time: it is polled instead (warned once).
    let (mut unwatched, mut warned) = (false, false);
    let clock = PauseClock::new();
    loop {
        match next {
            Next::Readable if registered.is_none() => {
                // SAFETY: the borrowed descriptor stays open, and the same, for as long as the
                // registration lives: it cannot outlive the borrow of `socket`.
                let fd =
                    unsafe { AsyncFd::register_with_interest(socket.as_fd(), Interest::READABLE) };
                match fd {
                    Ok(fd) => registered = Some(fd),
                    Err(e) => {
                        if !warned {
                            warn!(error = %e, "cannot watch the StatsD socket; polling it");
                            warned = true;
                        }
                        unwatched = true;
                        next = Next::At(Instant::now() + POLL_UNWATCHED);
                    }
                }
            }
            Next::At(_) => registered = None,
            _ => {}
        }
        if matches!(next, Next::Readable) || unwatched {
            pipe.waiting();
        }
        let ready = async {
            match (next, &registered) {
                (Next::Now, _) => tokio::task::consume_budget().await,
                (Next::At(at), _) => match &clock {
                    Some(clock) => {
                        if let Err(e) = clock.until(at).await {
                            debug!(error = %e, "StatsD reader's pause timer");
                            tokio::time::sleep_until(at).await;
                        }
                    }
                    None => tokio::time::sleep_until(at).await,
                },
                (Next::Readable, Some(fd)) => match fd.readable().await {
                    // Cleared before reading: a datagram that comes after the read sets it
                    // again.
                    Ok(mut guard) => guard.clear_ready(),
                    Err(e) => {
                        debug!(error = %e, "StatsD socket readiness");
                        return false;
                    }
                },
                (Next::Readable, None) => std::future::pending().await,
            }
            true
        };
        tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            due = pipe.due() => {
                if matches!(due, Due::Scrape(_)) {
                    // What the socket holds arrived before the scrape: it goes in too, however
                    // much a pause let gather (bounded, as at shutdown).
                    let limit = ctx.receive_batch * 1024;
                    let read = read_batch(&socket, &mut buf, &mut pipe.batcher, limit);
                    ctx.telemetry.packets(kind, read.packets);
                }
                pipe.handle(due).await;
                continue;
            }
            watched = ready => if !watched {
                registered = None;
                unwatched = true;
            }
        }
        let read = read_batch(&socket, &mut buf, &mut pipe.batcher, ctx.receive_batch);
        ctx.telemetry.packets(kind, read.packets);
        next = if !read.emptied {
            Next::Now
        } else if unwatched {
            Next::At(Instant::now() + POLL_UNWATCHED)
        } else if read.packets == 0 || pause.is_zero() {
            Next::Readable
        } else {
            pipe.pausing();
            Next::At(Instant::now() + pause)
        };
        unwatched = false;
        pipe.after_read().await;
    }
    // What the kernel already holds was sent before shutdown: apply it too (bounded, in case
    // a sender keeps sending).
    let read = read_batch(
        &socket,
        &mut buf,
        &mut pipe.batcher,
        ctx.receive_batch * 1024,
    );
    ctx.telemetry.packets(kind, read.packets);
    pipe.flush().await;
}

/// What [`read_batch`] did.
struct Read {
    /// Datagrams read.
    packets: u64,
    /// The socket answered that it holds no more.
    emptied: bool,
}

/// Ingests every datagram already queued, up to `limit` of them. Receive errors count
/// against `limit` too, so that one that persists cannot keep the reader here.
fn read_batch(
    socket: &DatagramSocket,
    buf: &mut Datagrams,
    batcher: &mut Batcher,
    limit: usize,
) -> Read {
    let (mut packets, mut taken) = (0, 0);
    while taken < limit {
        let asked = (limit - taken).min(RECEIVE_MANY);
        match buf.receive(socket.as_fd(), asked) {
            Ok(n) => {
                taken += n;
                packets += n as u64;
                for datagram in buf.received() {
                    match datagram {
                        Datagram::Within(bytes) => batcher.ingest(bytes),
                        Datagram::TooLong(bytes) => batcher.reject_datagram(bytes),
                    }
                }
                if n < asked {
                    // The socket held no more (or an error stopped the call after what it
                    // took, which the next call reports).
                    return Read {
                        packets,
                        emptied: true,
                    };
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                return Read {
                    packets,
                    emptied: true,
                }
            }
            // ICMP errors and the like concern one peer, not the socket: counted against the
            // limit, and the read goes on.
            Err(e) => {
                taken += 1;
                debug!(error = %e, "datagram receive error");
            }
        }
    }
    Read {
        packets,
        emptied: false,
    }
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
        pipe.waiting();
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Settings;
    use crate::mapping::Mapper;

    fn batcher(telemetry: &Arc<Telemetry>) -> Batcher {
        let config = IngestConfig::new(&Settings::default(), Mapper::default());
        Batcher::new(telemetry.clone(), Arc::new(config))
    }

    fn too_large(telemetry: &Telemetry) -> f64 {
        let families = telemetry.gather();
        let rejected = families
            .iter()
            .find(|f| f.name() == "tallyd_lines_rejected_total")
            .unwrap();
        let metric = rejected.get_metric().iter();
        metric
            .filter(|m| m.get_label()[0].value() == "datagram_too_large")
            .map(|m| m.get_counter().get_value())
            .sum()
    }

    /// Datagrams read, whether the socket said it was empty, and the samples the batcher took.
    fn read(
        socket: &DatagramSocket,
        buf: &mut Datagrams,
        batcher: &mut Batcher,
        limit: usize,
    ) -> (u64, bool, u64) {
        let read = read_batch(socket, buf, batcher, limit);
        let samples = batcher.take().iter().map(|(_, b)| b.samples()).sum();
        (read.packets, read.emptied, samples)
    }

    #[test]
    fn a_read_takes_its_limit_over_several_calls_and_says_when_the_socket_is_empty() {
        // A Unix pair queues each datagram before `send` returns (and a pair is not held to
        // net.unix.max_dgram_qlen), so every read below finds exactly what was sent.
        let (ours, theirs) = std::os::unix::net::UnixDatagram::pair().unwrap();
        let socket = DatagramSocket::Unix(ours);
        socket.set_nonblocking().unwrap();
        let telemetry = Arc::new(Telemetry::new());
        let (mut buf, mut batcher) = (Datagrams::new(64), batcher(&telemetry));
        for i in 0..RECEIVE_MANY + 4 {
            theirs.send(format!("n.{i}:1|c").as_bytes()).unwrap();
        }
        theirs.send(&[b'x'; 65]).unwrap();
        theirs.send(b"last:1|c").unwrap();
        // Exactly the limit, over two calls: the socket has not said it is empty.
        let limit = RECEIVE_MANY + 4;
        let all = RECEIVE_MANY as u64 + 4;
        assert_eq!(
            read(&socket, &mut buf, &mut batcher, limit),
            (all, false, all)
        );
        // The over-long datagram is refused whole and counted; the one after it lands.
        assert_eq!(read(&socket, &mut buf, &mut batcher, limit), (2, true, 1));
        assert_eq!(too_large(&telemetry), 1.0);
        assert_eq!(read(&socket, &mut buf, &mut batcher, limit), (0, true, 0));
    }

    #[test]
    fn a_udp_socket_is_read_the_same_way() {
        let ours = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let theirs = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        theirs.connect(ours.local_addr().unwrap()).unwrap();
        let socket = DatagramSocket::Udp(ours);
        socket.set_nonblocking().unwrap();
        let telemetry = Arc::new(Telemetry::new());
        let (mut buf, mut batcher) = (Datagrams::new(64), batcher(&telemetry));
        theirs.send(b"u.a:1|c\nu.b:2|c").unwrap();
        theirs.send(&[b'y'; 100]).unwrap();
        theirs.send(b"u.a:3|c").unwrap();
        // Loopback may queue them a moment after `send` returns: read until all three came.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        let (mut packets, mut samples) = (0, 0);
        while packets < 3 && std::time::Instant::now() < deadline {
            let (p, emptied, s) = read(&socket, &mut buf, &mut batcher, 64);
            assert!(emptied);
            (packets, samples) = (packets + p, samples + s);
            if packets < 3 {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        assert_eq!((packets, samples), (3, 3));
        assert_eq!(too_large(&telemetry), 1.0);
    }

    #[tokio::test]
    async fn the_pause_clock_waits_until_its_deadline_after_a_cancelled_wait_too() {
        let clock = PauseClock::new().expect("a timerfd");
        let ms = Duration::from_millis;
        // A wait cut short, whose timer then fires with no one reading it, and a wait for
        // later: the readiness the first left does not end the second.
        let start = Instant::now();
        let cut = tokio::time::timeout(ms(10), clock.until(start + ms(100))).await;
        assert!(cut.is_err(), "the 100 ms wait was given 10 ms");
        // Past the first deadline: its timer fired, and no one read it.
        tokio::time::sleep_until(start + ms(150)).await;
        clock.until(start + ms(300)).await.unwrap();
        assert!(start.elapsed() >= ms(300));
        // A deadline already past returns at once.
        let before = Instant::now();
        clock.until(before - ms(1)).await.unwrap();
        clock.until(before).await.unwrap();
        assert!(before.elapsed() < ms(50));
    }
}
