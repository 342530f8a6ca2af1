//! Connection slots under a cap (`web.max_connections`, `statsd.tcp_max_connections`), and
//! taking one back from a client that holds it without asking for anything. When a new
//! connection finds every slot taken, one that waits for a request (an HTTP request's headers,
//! or a StatsD line) is closed to make room, the one that has waited longest first: a
//! connection that has waited at least [`EVICTABLE_AFTER`] (a silent new one, a stalled TLS
//! handshake, a kept-alive one between requests, a StatsD client that trickles bytes), or a
//! new one, at least [`SILENT_AFTER`] old, that has had no request yet and whose socket holds
//! nothing unread. If none can be
//! closed, the new connection waits briefly for a slot to come free. Strangers that open
//! connections and send nothing (slowloris), stall TLS handshakes, or reconnect as fast as they
//! are answered, then cannot keep Prometheus, the kubelet's probes or StatsD clients out, which
//! send as they connect; a connection whose request is being served is never cut.

use nix::sys::socket::{recv, MsgFlags};
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// How long a connection must have waited for a request before it may be closed for another,
/// whatever its socket holds: a kept-alive client may have sent its next requests already,
/// and the server read them ahead (or a StatsD client part of its next line).
const EVICTABLE_AFTER: Duration = Duration::from_secs(1);
/// How long a new connection that has had no request must have sent nothing before it may be
/// closed for another: a client's first bytes may still be on their way as it is accepted.
const SILENT_AFTER: Duration = Duration::from_millis(20);
/// How long a new connection waits for the slot of the one closed for it, or for one to come
/// free when none can be closed.
const SLOT_WAIT: Duration = Duration::from_millis(100);

/// The slots, and the connections that hold them.
#[derive(Debug)]
pub(crate) struct Slots {
    permits: Arc<Semaphore>,
    held: Mutex<Vec<Weak<Holder>>>,
    max: usize,
}

/// A connection's hold on its slot: given back when dropped.
#[derive(Debug)]
pub(crate) struct Slot {
    _permit: OwnedSemaphorePermit,
    pub(crate) holder: Arc<Holder>,
}

/// What the slots know of a connection: since when it has waited for a request (none while one
/// is served), whether it has had one, its socket, and how to close it.
#[derive(Debug)]
pub(crate) struct Holder {
    waiting_since: Mutex<Option<Instant>>,
    served: AtomicBool,
    socket: RawFd,
    close: CancellationToken,
}

impl Holder {
    /// A request's headers are in: the connection is busy.
    pub(crate) fn serving(&self) {
        *self.lock() = None;
        self.served.store(true, Ordering::Relaxed);
    }

    /// The response is done: the connection waits for the next request.
    pub(crate) fn waiting(&self) {
        *self.lock() = Some(Instant::now());
    }

    /// A request came and was served at once (a StatsD line): the connection waits for the
    /// next one from now.
    pub(crate) fn served(&self) {
        *self.lock() = Some(Instant::now());
        self.served.store(true, Ordering::Relaxed);
    }

    /// Completes when the connection is to be closed for another.
    pub(crate) async fn evicted(&self) {
        self.close.cancelled().await;
    }

    /// True when the connection's socket has nothing to read: its client has sent nothing
    /// since it was last read (or has gone). Its socket may be closed already, when its
    /// connection is ending: that only changes whom a new connection takes the slot of.
    fn silent(&self) -> bool {
        let mut byte = [0u8; 1];
        let flags = MsgFlags::MSG_PEEK | MsgFlags::MSG_DONTWAIT;
        !matches!(recv(self.socket, &mut byte, flags), Ok(1))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Instant>> {
        self.waiting_since
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Slots {
    /// `max` slots.
    pub(crate) fn new(max: usize) -> Self {
        Slots {
            permits: Arc::new(Semaphore::new(max)),
            held: Mutex::new(Vec::new()),
            max,
        }
    }

    /// A slot for a new connection on `socket`: a free one, that of the connection that has
    /// waited longest for a request, of those that may be closed, closed for it (one at
    /// most), or one that comes free within [`SLOT_WAIT`]. New connections too young to close
    /// may come of age meanwhile: until one is closed, it looks again every [`SILENT_AFTER`].
    /// `None` when refused; the second element is true when a connection was closed for it.
    pub(crate) async fn take(&self, socket: RawFd) -> Option<(Slot, bool)> {
        if let Ok(permit) = self.permits.clone().try_acquire_owned() {
            return Some((self.hold(permit, socket), false));
        }
        let deadline = Instant::now() + SLOT_WAIT;
        let mut evicted = false;
        loop {
            evicted = evicted || self.evict_longest_waiting();
            let step = if evicted {
                deadline
            } else {
                (Instant::now() + SILENT_AFTER).min(deadline)
            };
            match tokio::time::timeout_at(step, self.permits.clone().acquire_owned()).await {
                Ok(permit) => return Some((self.hold(permit.ok()?, socket), evicted)),
                Err(_) if step >= deadline => return None,
                Err(_) => {}
            }
        }
    }

    fn hold(&self, permit: OwnedSemaphorePermit, socket: RawFd) -> Slot {
        let holder = Arc::new(Holder {
            waiting_since: Mutex::new(Some(Instant::now())),
            served: AtomicBool::new(false),
            socket,
            close: CancellationToken::new(),
        });
        let mut held = self.lock();
        if held.len() >= 2 * self.max {
            held.retain(|h| h.strong_count() > 0);
        }
        held.push(Arc::downgrade(&holder));
        Slot {
            _permit: permit,
            holder,
        }
    }

    /// Closes the connection that has waited longest for a request, of those that may be
    /// closed (see the module's documentation); true if one was.
    fn evict_longest_waiting(&self) -> bool {
        let mut held = self.lock();
        held.retain(|h| h.strong_count() > 0);
        let longest = held
            .iter()
            .filter_map(Weak::upgrade)
            .filter(|h| !h.close.is_cancelled())
            .filter_map(|h| {
                let since = (*h.lock())?;
                let waited = since.elapsed();
                let evictable = waited >= EVICTABLE_AFTER
                    || waited >= SILENT_AFTER && !h.served.load(Ordering::Relaxed) && h.silent();
                evictable.then_some((since, h))
            })
            .min_by_key(|(since, _)| *since);
        match longest {
            Some((_, holder)) => {
                holder.close.cancel();
                true
            }
            None => false,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Weak<Holder>>> {
        self.held
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}
