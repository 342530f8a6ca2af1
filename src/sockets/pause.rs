//! A datagram reader's pauses between reads: how long ([`udp_pause`]), and the kernel timer
//! that ends them ([`PauseClock`]).

use nix::errno::Errno;
use nix::sys::time::TimeSpec;
use nix::sys::timerfd::{ClockId, Expiration, TimerFd, TimerFlags, TimerSetTimeFlags};
use std::io;
use std::os::fd::{AsFd, AsRawFd, RawFd};
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

/// How fast the kernel may fill a UDP socket's receive buffer while its reader pauses, in bytes
/// of buffer a second: 128 MiB/s is about 57,000 datagrams of 1,400 bytes a second (each takes
/// about 2.1–2.3 KiB of buffer), what tallyd reads flat out on 2 cores (5 million counter lines
/// a second). A sender faster than that overflows the buffer whether the reader pauses or not;
/// up to it, a pause never does.
const FILL_RATE: f64 = 128.0 * 1024.0 * 1024.0;

/// The pause of a UDP reader after a read that found few datagrams (see [`super::serve_datagrams`]):
/// `configured` (`statsd.receive_coalesce`), shortened so that the socket's receive buffer
/// holds what can arrive meanwhile at `FILL_RATE`. (A Unix datagram reader does not pause:
/// its queue is a few datagrams long, `net.unix.max_dgram_qlen`, and refuses senders when full.)
pub(crate) fn udp_pause(udp: &std::net::UdpSocket, configured: Duration) -> Duration {
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

#[cfg(test)]
mod tests {
    use super::*;

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
