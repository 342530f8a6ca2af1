//! StatsD over UDP or a Unix datagram socket: a reader that takes up to `receive_batch` ready
//! datagrams at a time, several to a system call ([`super::receive`]), pausing after a read
//! that found few ([`super::pause`]), so that a steady stream is read in batches.

use prometheus::IntCounter;
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::time::Duration;
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::pause::{charged, estimated_charge, Pause, PauseClock};
use super::receive::{Datagram, Datagrams, RECEIVE_MANY};
use super::{DatagramSocket, ListenerContext};
use crate::ingest::{Batcher, Due, Pipeline};

/// Largest UDP payload.
const MAX_DATAGRAM: usize = 65_535;
/// How often a datagram socket the runtime cannot watch is read.
const POLL_UNWATCHED: Duration = Duration::from_millis(10);

/// When a datagram reader reads next.
#[derive(Clone, Copy, Debug)]
enum Next {
    /// At once: the last read stopped before the socket said it was empty.
    Now,
    /// At this time, without asking the runtime: the last read took few datagrams, so the
    /// next ones are left to gather in the socket buffer (see [`super::udp_pause`]).
    At(Instant),
    /// When the socket becomes readable.
    Readable,
}

/// Reads datagrams until `shutdown`: waits for one, takes every further datagram already
/// queued (up to `receive_batch`), then sends each touched family one message when its flush
/// window says so. After a read that found fewer than `receive_batch` datagrams, the reader
/// pauses (see [`Pause`]) before reading again, so that a steady stream costs one wake-up per
/// pause rather than one per datagram; after a read that found none, it
/// waits for the socket. Scrapes and shutdown do not wait for a pause: they read what the
/// socket holds. At shutdown it also applies what the socket buffer still holds.
pub(crate) async fn serve_datagrams(
    socket: DatagramSocket,
    pause: Pause,
    ctx: ListenerContext,
    shutdown: CancellationToken,
) {
    // Reads must never block a runtime worker.
    if let Err(e) = socket.set_nonblocking() {
        warn!(error = %e, "cannot make the StatsD socket non-blocking; not reading it");
        return;
    }
    let mut pipe = ctx.pipelines.pipeline(socket.kind());
    let mut reader = Reader::new(&socket, &ctx, &pause);
    // What the kernel holds when a scrape comes, or at shutdown, arrived before it: read
    // however much a pause let gather, bounded in case a sender keeps sending.
    let drain = 1024;
    loop {
        if reader.watch() {
            pipe.waiting();
        }
        tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            due = pipe.due() => {
                if matches!(due, Due::Scrape(_)) {
                    reader.drain(&mut pipe, drain).await;
                }
                pipe.handle(due).await;
                continue;
            }
            watched = reader.ready() => if !watched {
                reader.unwatch();
            }
        }
        let read = reader.read(&mut pipe.batcher, ctx.receive_batch);
        if reader.plan(&read, &pause) {
            pipe.pausing();
        }
        pipe.after_read().await;
    }
    reader.drain(&mut pipe, drain).await;
    pipe.flush().await;
}

/// A datagram reader's socket, buffers, and when it reads next.
struct Reader<'s> {
    socket: &'s DatagramSocket,
    ctx: &'s ListenerContext,
    buf: Datagrams,
    next: Next,
    /// The socket's registration with the runtime: dropped for a pause, so that what arrives
    /// meanwhile wakes nothing.
    registered: Option<AsyncFd<BorrowedFd<'s>>>,
    /// The runtime could not watch the socket this time: it is polled instead.
    unwatched: bool,
    /// That was logged (once).
    warned: bool,
    /// Ends the pauses; `None` where the system has no timerfd.
    clock: Option<PauseClock>,
    pacer: Pacer,
    /// `tallyd_packets_total` of the socket's listener.
    packets: IntCounter,
    /// The kernel says what the receive buffer holds (see [`charged`]), which sizes the
    /// pauses: a UDP socket that pauses, until the kernel does not.
    charges: bool,
}

/// What a datagram reader's next pause is sized by.
#[derive(Debug)]
struct Pacer {
    /// Bytes and datagrams read since the last pause was planned, and when that was.
    taken: (usize, u64),
    planned: Instant,
    /// What the receive buffer held, as the kernel charged it, at the first read since the
    /// last pause was planned, and when: what came since, which sizes the next pause when the
    /// kernel says it (see [`charged`]).
    charged: Option<(usize, Instant)>,
    /// The last pause, `None` after a wait for input: a pause grows at most twofold from one
    /// to the next, so that a stream that starts is first read after short ones.
    last_pause: Option<Duration>,
}

impl Pacer {
    fn new(now: Instant) -> Self {
        Pacer {
            taken: (0, 0),
            planned: now,
            charged: None,
            last_pause: None,
        }
    }

    /// True before the first read since the last pause was planned: the one the receive
    /// buffer's charge is taken at.
    fn first_read(&self) -> bool {
        self.taken == (0, 0) && self.charged.is_none()
    }

    /// Notes what the receive buffer held, as the kernel charged it, at the first read since
    /// the last pause was planned.
    fn charge(&mut self, bytes: usize, at: Instant) {
        self.charged = Some((bytes, at));
    }

    /// Counts a read's datagrams toward the next pause.
    fn took(&mut self, bytes: usize, datagrams: u64) {
        self.taken = (self.taken.0 + bytes, self.taken.1 + datagrams);
    }

    /// When to read next, at `now`, after a read that `emptied` the socket or not. A read
    /// that stopped at `receive_batch` is followed by another at once, and the next pause is
    /// sized by what all of them took since the last one was planned: sized by the last
    /// read alone, the few datagrams that came during the reads before it would read as a
    /// flood, and the pauses would fall to their shortest.
    fn next(&mut self, emptied: bool, unwatched: bool, pause: &Pause, now: Instant) -> Next {
        if !emptied {
            return Next::Now;
        }
        let (bytes, datagrams) = std::mem::take(&mut self.taken);
        let planned = std::mem::replace(&mut self.planned, now);
        // What came since the last plan: as the kernel charged it when it says, and the
        // datagrams read do not show that more came than it saw; else counted high.
        let filled = match self.charged.take() {
            Some((charged, at)) if charged >= bytes => (charged, at),
            _ => (estimated_charge(bytes, datagrams), now),
        };
        if unwatched {
            Next::At(now + POLL_UNWATCHED)
        } else if pause.is_zero() {
            Next::Readable
        } else if datagrams == 0 {
            // Nothing came during the pause: a pause twice as long, until one of
            // `statsd.receive_coalesce` finds nothing either; then, or when a wait for input
            // found nothing, wait for input. A sparse stream is thus read after pauses long
            // enough to find something, not woken for by each datagram.
            match self.last_pause {
                Some(last) if last < pause.longest() => {
                    let wait = (last * 2).min(pause.longest());
                    self.last_pause = Some(wait);
                    Next::At(now + wait)
                }
                _ => {
                    self.last_pause = None;
                    Next::Readable
                }
            }
        } else {
            let sized = pause.after(filled.0, filled.1.saturating_duration_since(planned));
            let grown = self.last_pause.map_or(pause.shortest(), |last| last * 2);
            let wait = sized.min(grown);
            self.last_pause = Some(wait);
            Next::At(now + wait)
        }
    }
}

impl<'s> Reader<'s> {
    fn new(socket: &'s DatagramSocket, ctx: &'s ListenerContext, pause: &Pause) -> Self {
        Reader {
            socket,
            ctx,
            buf: Datagrams::new(ctx.max_datagram_bytes.min(MAX_DATAGRAM)),
            next: Next::Readable,
            registered: None,
            unwatched: false,
            warned: false,
            clock: PauseClock::new(),
            pacer: Pacer::new(Instant::now()),
            packets: ctx.telemetry.packets_counter(socket.kind()),
            charges: matches!(socket, DatagramSocket::Udp(_)) && !pause.is_zero(),
        }
    }

    /// Registers the socket with the runtime before a wait for input, or drops its
    /// registration before a pause; true when the reader is about to wait for input.
    fn watch(&mut self) -> bool {
        match self.next {
            Next::Readable if self.registered.is_none() => {
                // SAFETY: the borrowed descriptor stays open, and the same, for as long as the
                // registration lives: it cannot outlive the borrow of `socket`.
                let fd = unsafe {
                    AsyncFd::register_with_interest(self.socket.as_fd(), Interest::READABLE)
                };
                match fd {
                    Ok(fd) => self.registered = Some(fd),
                    Err(e) => {
                        if !self.warned {
                            warn!(error = %e, "cannot watch the StatsD socket; polling it");
                            self.warned = true;
                        }
                        self.unwatched = true;
                        self.next = Next::At(Instant::now() + POLL_UNWATCHED);
                    }
                }
            }
            Next::At(_) => self.registered = None,
            _ => {}
        }
        matches!(self.next, Next::Readable) || self.unwatched
    }

    /// Waits until it is time to read; cancel-safe. False when the runtime stopped watching
    /// the socket (see [`Reader::unwatch`]).
    async fn ready(&self) -> bool {
        match (self.next, &self.registered) {
            (Next::Now, _) => tokio::task::consume_budget().await,
            (Next::At(at), _) => match &self.clock {
                Some(clock) => {
                    if let Err(e) = clock.until(at).await {
                        debug!(error = %e, "StatsD reader's pause timer");
                        tokio::time::sleep_until(at).await;
                    }
                }
                None => tokio::time::sleep_until(at).await,
            },
            (Next::Readable, Some(fd)) => match fd.readable().await {
                // Cleared before reading: a datagram that comes after the read sets it again.
                Ok(mut guard) => guard.clear_ready(),
                Err(e) => {
                    debug!(error = %e, "StatsD socket readiness");
                    return false;
                }
            },
            (Next::Readable, None) => std::future::pending().await,
        }
        true
    }

    /// The runtime failed to watch the socket: it is polled until the next read.
    fn unwatch(&mut self) {
        self.registered = None;
        self.unwatched = true;
    }

    /// Reads up to `limit` datagrams into `batcher`, counted.
    fn read(&mut self, batcher: &mut Batcher, limit: usize) -> Read {
        if self.charges && self.pacer.first_read() {
            match charged(self.socket.as_fd()) {
                Some(bytes) => self.pacer.charge(bytes, Instant::now()),
                None => self.charges = false,
            }
        }
        let read = read_batch(self.socket, &mut self.buf, batcher, limit);
        self.packets.inc_by(read.packets);
        self.pacer.took(read.bytes, read.packets);
        read
    }

    /// Reads what the socket holds, `receive_batch` datagrams at a time, at most `reads`
    /// times, flushing whenever the flush threshold is reached on the way: what a pause, or
    /// a stall of the families, let gather in the socket buffer (16 MiB may hold millions of
    /// lines) is held a threshold's worth at a time, not all at once.
    async fn drain(&mut self, pipe: &mut Pipeline, reads: usize) {
        for _ in 0..reads {
            let read = self.read(&mut pipe.batcher, self.ctx.receive_batch);
            pipe.after_read().await;
            if read.emptied {
                break;
            }
        }
    }

    /// When to read next after `read`; true when that is after a pause.
    fn plan(&mut self, read: &Read, pause: &Pause) -> bool {
        let unwatched = std::mem::take(&mut self.unwatched);
        self.next = (self.pacer).next(read.emptied, unwatched, pause, Instant::now());
        matches!(self.next, Next::At(_)) && !unwatched
    }
}

/// What [`read_batch`] did.
struct Read {
    /// Datagrams read.
    packets: u64,
    /// Their bytes.
    bytes: usize,
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
    let (mut packets, mut bytes, mut taken) = (0, 0, 0);
    while taken < limit {
        let asked = (limit - taken).min(RECEIVE_MANY);
        match buf.receive(socket.as_fd(), asked) {
            Ok(n) => {
                taken += n;
                packets += n as u64;
                for datagram in buf.received() {
                    match datagram {
                        Datagram::Within(datagram) => {
                            bytes += datagram.len();
                            batcher.ingest(datagram);
                        }
                        Datagram::TooLong(first) => {
                            bytes += first.len();
                            batcher.reject_datagram(first);
                        }
                    }
                }
                if n < asked {
                    // The socket held no more (or an error stopped the call after what it
                    // took, which the next call reports).
                    return Read {
                        packets,
                        bytes,
                        emptied: true,
                    };
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                return Read {
                    packets,
                    bytes,
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
        bytes,
        emptied: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Settings;
    use crate::ingest::IngestConfig;
    use crate::mapping::Mapper;
    use crate::telemetry::{ListenerKind, Telemetry};
    use std::sync::Arc;

    fn batcher(telemetry: &Arc<Telemetry>) -> Batcher {
        let config = IngestConfig::new(&Settings::default(), Mapper::default());
        Batcher::new(telemetry.clone(), Arc::new(config), ListenerKind::Udp)
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

    #[test]
    fn a_pause_is_sized_by_every_read_since_the_last_pause() {
        let ms = Duration::from_millis;
        // A 16 MiB buffer: pauses of 8 ms up to 100 ms.
        let pause = Pause::for_buffer(16 << 20, ms(100));
        let start = Instant::now();
        let mut pacer = Pacer::new(start);
        // A stream starts: the first pause is the shortest, and each next one at most
        // twice the last.
        pacer.took(1_400, 1);
        let mut at = start + ms(1);
        let mut waits = Vec::new();
        for _ in 0..5 {
            let Next::At(next) = pacer.next(true, false, &pause, at) else {
                panic!("a pause");
            };
            waits.push(next - at);
            // 9,000 datagrams of 1,400 bytes a second (100,000 tagged lines): what came
            // during the pause, read 64 at a time, the last read finding the socket empty.
            let came = (9_000 * (next - at).as_millis() / 1_000) as u64;
            at = next;
            let mut left = came;
            while left > 64 {
                pacer.took(64 * 1_400, 64);
                at += ms(1);
                assert!(matches!(pacer.next(false, false, &pause, at), Next::Now));
                left -= 64;
            }
            pacer.took(left as usize * 1_400, left);
            at += ms(1);
        }
        assert_eq!(waits[0], pause.shortest());
        assert_eq!(waits[1], pause.shortest() * 2);
        // 900 datagrams over a pause are 31 MB/s, a quarter of the buffer in 135 ms: the
        // longest pause, however many reads took them.
        assert_eq!(waits[4], ms(100), "{waits:?}");
        // A read that found the socket empty right after one that stopped at the limit:
        // datagrams came since the pause, so this is no empty pause.
        pacer.took(64 * 1_400, 64);
        assert!(matches!(pacer.next(false, false, &pause, at), Next::Now));
        at += ms(1);
        let Next::At(next) = pacer.next(true, false, &pause, at) else {
            panic!("a pause");
        };
        assert_eq!(next - at, ms(100));
        // A pause of the longest that finds nothing: the reader waits for input.
        assert!(matches!(
            pacer.next(true, false, &pause, next),
            Next::Readable
        ));
    }

    #[test]
    fn a_pause_is_sized_by_what_the_kernel_charged_when_it_says() {
        let ms = Duration::from_millis;
        // A node's usual 212,992 bytes, doubled by the kernel: pauses of 0.2 ms up to 100 ms.
        let pause = Pause::for_buffer(425_984, ms(100));
        let start = Instant::now();
        let mut pacer = Pacer::new(start);
        pacer.last_pause = Some(ms(64));
        // 1,136 datagrams of 1,400 bytes a second (100,000 counter lines), charged 2,304 bytes
        // each on loopback: 30 came over the 26 ms before the first read, whose charge sizes
        // the pause (a quarter of the buffer at 2.6 MB/s: 41 ms), not the bytes read nor the
        // time the reads took.
        assert!(pacer.first_read());
        pacer.charge(30 * 2_304, start + ms(26));
        assert!(!pacer.first_read());
        pacer.took(30 * 1_400, 30);
        let at = start + ms(30);
        let Next::At(next) = pacer.next(true, false, &pause, at) else {
            panic!("a pause");
        };
        assert!((ms(40)..=ms(41)).contains(&(next - at)), "{:?}", next - at);
        // Counted high, without the charge: 27 ms for the same datagrams over the same time.
        assert!(pacer.first_read());
        pacer.took(30 * 1_400, 30);
        let then = at + ms(26);
        let Next::At(after) = pacer.next(true, false, &pause, then) else {
            panic!("a pause");
        };
        assert!(
            (ms(26)..=ms(27)).contains(&(after - then)),
            "{:?}",
            after - then
        );
        // More bytes read than the charge said the buffer held: a flood came during the reads,
        // and the estimate over the whole time sizes the pause.
        pacer.charge(2_304, after + ms(1));
        pacer.took(1_000 * 1_400, 1_000);
        let Next::At(last) = pacer.next(true, false, &pause, after + ms(10)) else {
            panic!("a pause");
        };
        let estimated = estimated_charge(1_000 * 1_400, 1_000);
        assert_eq!(
            last - (after + ms(10)),
            pause.after(estimated, after + ms(10) - then)
        );
        assert!(last - (after + ms(10)) < ms(2));
    }

    #[test]
    fn the_kernel_says_what_a_udp_socket_buffer_holds() {
        let ours = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        ours.set_nonblocking(true).unwrap();
        let sender = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        assert_eq!(charged(ours.as_fd()), Some(0));
        for _ in 0..10 {
            sender
                .send_to(&[b'x'; 1_400], ours.local_addr().unwrap())
                .unwrap();
        }
        // Each datagram with the kernel's bookkeeping, within what the estimate counts.
        let held = charged(ours.as_fd()).unwrap();
        assert!(
            (10 * 1_400 < held) && (held <= estimated_charge(10 * 1_400, 10)),
            "{held}"
        );
        let mut buf = [0; 2_048];
        for _ in 0..10 {
            assert_eq!(ours.recv(&mut buf).unwrap(), 1_400);
        }
        assert_eq!(charged(ours.as_fd()), Some(0));
    }
}
