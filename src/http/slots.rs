//! Connection slots under `web.max_connections`, and taking one back from a client that holds
//! it without asking for anything. A connection that has waited at least [`EVICTABLE_AFTER`]
//! for a request's headers (a new one, its TLS handshake included, or a kept-alive one between
//! requests) is closed to make room when a new connection finds every slot taken, the one that
//! has waited longest first. Strangers that open connections and send nothing (slowloris), or
//! start TLS handshakes and stall, then cannot keep Prometheus or the kubelet's probes out; a
//! connection whose request is being served is never cut.

use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// How long a connection must have waited for a request before it may be closed for another.
const EVICTABLE_AFTER: Duration = Duration::from_secs(1);
/// How long a new connection waits for the slot of the one closed for it.
const EVICTION_WAIT: Duration = Duration::from_millis(100);

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
/// is served), and how to close it.
#[derive(Debug)]
pub(crate) struct Holder {
    waiting_since: Mutex<Option<Instant>>,
    close: CancellationToken,
}

impl Holder {
    /// A request's headers are in: the connection is busy.
    pub(crate) fn serving(&self) {
        *self.lock() = None;
    }

    /// The response is done: the connection waits for the next request.
    pub(crate) fn waiting(&self) {
        *self.lock() = Some(Instant::now());
    }

    /// Completes when the connection is to be closed for another.
    pub(crate) async fn evicted(&self) {
        self.close.cancelled().await;
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

    /// A slot for a new connection: a free one, or that of the connection that has waited
    /// longest for a request, closed for it; `None` when every connection is busy or new.
    /// The second element is true when a connection was closed for it.
    pub(crate) async fn take(&self) -> Option<(Slot, bool)> {
        if let Ok(permit) = self.permits.clone().try_acquire_owned() {
            return Some((self.hold(permit), false));
        }
        if !self.evict_longest_waiting() {
            return None;
        }
        let permit = tokio::time::timeout(EVICTION_WAIT, self.permits.clone().acquire_owned())
            .await
            .ok()?
            .ok()?;
        Some((self.hold(permit), true))
    }

    fn hold(&self, permit: OwnedSemaphorePermit) -> Slot {
        let holder = Arc::new(Holder {
            waiting_since: Mutex::new(Some(Instant::now())),
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

    /// Closes the connection that has waited longest for a request, if one has waited at
    /// least [`EVICTABLE_AFTER`]; true if one was.
    fn evict_longest_waiting(&self) -> bool {
        let mut held = self.lock();
        held.retain(|h| h.strong_count() > 0);
        let longest = held
            .iter()
            .filter_map(Weak::upgrade)
            .filter(|h| !h.close.is_cancelled())
            .filter_map(|h| {
                let since = (*h.lock())?;
                (since.elapsed() >= EVICTABLE_AFTER).then_some((since, h))
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
