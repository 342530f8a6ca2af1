//! A datagram reader's pauses between reads: how long ([`udp_pause`]), sized by what the
//! kernel charged the receive buffer ([`charged`]), and the kernel timer that ends them
//! ([`PauseClock`]).

use nix::errno::Errno;
use nix::sys::time::TimeSpec;
use nix::sys::timerfd::{ClockId, Expiration, TimerFd, TimerFlags, TimerSetTimeFlags};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::time::Duration;
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::time::Instant;
use tracing::info;

/// A datagram reader's clock for its pauses: a kernel timer (`timerfd`) that the runtime
/// watches like a socket. The runtime's own timers sit on a wheel that wakes its thread at
/// every 64 ms boundary a deadline lies past, to move the timer to a finer slot: most pauses
/// of 50 ms would cost two wake-ups instead of one.
pub(super) struct PauseClock(AsyncFd<Timer>);

/// A timerfd, as the runtime takes a descriptor.
struct Timer(TimerFd);

impl AsRawFd for Timer {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_fd().as_raw_fd()
    }
}

impl PauseClock {
    /// A clock, or `None` where the system has no timerfd (the runtime's timers serve then).
    pub(super) fn new() -> Option<Self> {
        let flags = TimerFlags::TFD_NONBLOCK | TimerFlags::TFD_CLOEXEC;
        let timer = TimerFd::new(ClockId::CLOCK_MONOTONIC, flags).ok()?;
        // SAFETY: `Timer` owns its descriptor, which stays open, and the same, until the
        // `AsyncFd` that owns the `Timer` is dropped.
        unsafe { AsyncFd::register_with_interest(Timer(timer), Interest::READABLE) }
            .ok()
            .map(PauseClock)
    }

    /// Waits until `at`; cancel-safe: the next call sets the timer again.
    pub(super) async fn until(&self, at: Instant) -> io::Result<()> {
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

/// How fast a sender may fill a UDP socket's receive buffer while its reader pauses, in bytes
/// of buffer a second: one-line datagrams sent flat out on loopback come at about 1.3 million
/// a second and take about 830 bytes of buffer each (1.1 GB/s); this is twice that. The
/// shortest pause is the time in which the buffer fills at this rate, so that the pause sized
/// from the rate a reader saw (a quarter of the buffer at that rate) is never held longer.
const FILL_RATE: f64 = 2.0 * 1024.0 * 1024.0 * 1024.0;

/// What a datagram takes of the receive buffer beyond its bytes, counted high, where the
/// kernel does not say what it charged (see [`charged`]): its bookkeeping is about 0.8 to
/// 0.9 KiB a datagram on loopback, and a network card's driver may charge a page fragment of
/// 2 to 4 KiB whatever the datagram's size.
const DATAGRAM_OVERHEAD: usize = 2048;

/// What `bytes` read in `datagrams` took of the receive buffer, counted high (see
/// [`DATAGRAM_OVERHEAD`]).
pub(crate) fn estimated_charge(bytes: usize, datagrams: u64) -> usize {
    bytes + datagrams as usize * DATAGRAM_OVERHEAD
}

/// The bytes a socket's receive buffer holds now, as the kernel charges them (what it
/// compares with the buffer's size to drop a datagram): `SO_MEMINFO`'s
/// `SK_MEMINFO_RMEM_ALLOC`. `None` where the kernel does not say (before Linux 4.6).
pub(crate) fn charged(socket: BorrowedFd<'_>) -> Option<usize> {
    // The first of the values `SO_MEMINFO` gives is `SK_MEMINFO_RMEM_ALLOC`: the kernel
    // writes as many as there is room for.
    const _: () = assert!(libc::SK_MEMINFO_RMEM_ALLOC == 0);
    let mut rmem = 0u32;
    let mut len = std::mem::size_of_val(&rmem) as libc::socklen_t;
    // SAFETY: `rmem` is writable for `len` bytes, which the kernel fills at most.
    let done = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_MEMINFO,
            (&raw mut rmem).cast(),
            &mut len,
        )
    };
    (done == 0 && len as usize == std::mem::size_of_val(&rmem)).then_some(rmem as usize)
}

/// The share of the receive buffer a pause is planned to fill at the rate the last one did:
/// traffic four times as fast as that still fits.
const PLANNED_FILL: f64 = 0.25;

/// How long a UDP reader pauses after a read that found few datagrams (see
/// [`super::serve_datagrams`]): long enough that a steady stream costs few wake-ups, short
/// enough that the socket's receive buffer holds what arrives meanwhile.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Pause {
    /// The receive buffer, in bytes.
    buffer: usize,
    /// The pause after which the buffer is full at [`FILL_RATE`]: never overflowed by a sender
    /// on this machine (`statsd.receive_coalesce` if shorter).
    shortest: Duration,
    /// `statsd.receive_coalesce`.
    longest: Duration,
}

impl Pause {
    /// No pause: the reader reads as datagrams come (a Unix datagram socket, whose queue is a
    /// few datagrams long, `net.unix.max_dgram_qlen`, and refuses senders when full).
    pub(crate) const NONE: Pause = Pause {
        buffer: 0,
        shortest: Duration::ZERO,
        longest: Duration::ZERO,
    };

    /// The pause after `filled` bytes of the buffer (as the kernel charged them, or
    /// [`estimated_charge`]) filled over `since` (from the read before): the time in which that
    /// rate fills a quarter of the buffer,
    /// between the shortest pause and `statsd.receive_coalesce`. With a large buffer (root, or
    /// `net.core.rmem_max` raised) that is `statsd.receive_coalesce`; with a node's usual
    /// 208 KiB, a moderate stream still costs tens of wake-ups a second rather than hundreds.
    pub(crate) fn after(&self, filled: usize, since: Duration) -> Duration {
        if filled == 0 || since.is_zero() {
            return self.shortest;
        }
        let rate = filled as f64 / since.as_secs_f64();
        let fits = Duration::from_secs_f64(self.buffer as f64 * PLANNED_FILL / rate);
        fits.clamp(self.shortest, self.longest)
    }

    /// The pauses of a reader whose receive buffer holds `buffer` bytes, up to `configured`
    /// (`statsd.receive_coalesce`).
    pub(crate) fn for_buffer(buffer: usize, configured: Duration) -> Self {
        Pause {
            buffer,
            shortest: configured.min(Duration::from_secs_f64(buffer as f64 / FILL_RATE)),
            longest: configured,
        }
    }

    /// The shortest pause: what the buffer holds at the fastest rate.
    pub(crate) fn shortest(&self) -> Duration {
        self.shortest
    }

    /// The longest pause: `statsd.receive_coalesce`.
    pub(crate) fn longest(&self) -> Duration {
        self.longest
    }

    /// True when the reader never pauses.
    pub(crate) fn is_zero(&self) -> bool {
        self.longest.is_zero()
    }
}

/// The pauses of a UDP reader (see [`Pause`]), from its receive buffer and `configured`
/// (`statsd.receive_coalesce`).
pub(crate) fn udp_pause(udp: &std::net::UdpSocket, configured: Duration) -> Pause {
    let buffer = socket2::SockRef::from(udp).recv_buffer_size().unwrap_or(0);
    let pause = Pause::for_buffer(buffer, configured);
    if pause.shortest < configured {
        info!(
            receive_buffer = buffer,
            shortest_pause = ?pause.shortest,
            "UDP pauses between reads follow the traffic, from what the receive buffer holds at full rate up to statsd.receive_coalesce (see net.core.rmem_max)"
        );
    }
    pause
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pause_fills_a_quarter_of_the_buffer_at_the_last_rate_within_bounds() {
        let ms = Duration::from_millis;
        // A node's usual rmem_max, doubled by the kernel: 416 KiB.
        let pause = Pause {
            buffer: 425_984,
            shortest: ms(3),
            longest: ms(100),
        };
        // 1,136 datagrams of 1,400 bytes a second (100,000 counter lines) as the kernel
        // charges them on loopback, 2,304 bytes each: 2.6 MB/s, a quarter of the buffer in
        // 41 ms; counted high when the kernel does not say: 3.9 MB/s, 27 ms.
        let after = pause.after(113 * 2_304, ms(100));
        assert!((ms(40)..=ms(41)).contains(&after), "{after:?}");
        let after = pause.after(estimated_charge(113 * 1_400, 113), ms(100));
        assert!((ms(27)..=ms(28)).contains(&after), "{after:?}");
        // A hundred times as fast: the shortest pause; a trickle: the longest.
        assert_eq!(
            pause.after(estimated_charge(113_600 * 1_400, 113_600), ms(100)),
            ms(3)
        );
        assert_eq!(pause.after(estimated_charge(100, 1), ms(100)), ms(100));
        // Nothing read, or no time: the shortest.
        assert_eq!(pause.after(0, ms(100)), ms(3));
        assert_eq!(pause.after(2_304, Duration::ZERO), ms(3));
        assert!(Pause::NONE.is_zero() && !pause.is_zero());
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
