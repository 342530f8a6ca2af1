//! The scrape barrier: before a scrape reads the aggregator, every listener task reads what
//! its socket already holds and sends what it holds to the families, and every family it
//! reached since the last barrier publishes. So a scrape shows every line that reached
//! tallyd's sockets before it, however long the flush window and the publish interval are,
//! and those can be long enough to keep the cost per family low. Within bounds: a listener
//! reads at most `statsd.receive_batch` × 1,024 datagrams, or 1 MiB from a TCP connection, for
//! a scrape; a TCP connection not yet accepted, or a line without its newline yet, waits for
//! the next one.
//!
//! The scrape hands each listener a [`Ticket`]; a listener passes a clone to each family it
//! reached, after that family's batch, and a family drops its clone once its snapshot is on
//! its way to the aggregator. The scrape goes on when the last clone is dropped, or after a
//! timeout, counted, with whatever was published by then. Scrapes pass one at a time: a
//! listener that passed a family its ticket for one scrape does not pass it again for the
//! next, which must therefore wait until the first is through.

use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// What the scrape waits on: it resumes when the last clone is dropped.
#[derive(Clone, Debug)]
pub struct Ticket {
    _done: Arc<Done>,
}

/// Tells the scrape when dropped, which happens when the last [`Ticket`] is.
#[derive(Debug)]
struct Done(Option<oneshot::Sender<()>>);

impl Drop for Done {
    fn drop(&mut self) {
        if let Some(done) = self.0.take() {
            // The scrape may have timed out and gone.
            let _ = done.send(());
        }
    }
}

/// The listener tasks a scrape waits on, each by the channel its tickets go to.
#[derive(Debug, Default)]
pub struct Barrier {
    listeners: Mutex<Listeners>,
    /// Held by the scrape passing; holds the completion of a pass that timed out, which the
    /// next one waits for first: its tickets are still on their way.
    passing: tokio::sync::Mutex<Option<oneshot::Receiver<()>>>,
}

/// The channels of the listener tasks, some perhaps of tasks that have ended.
#[derive(Debug, Default)]
struct Listeners {
    senders: Vec<mpsc::UnboundedSender<Ticket>>,
    /// The length at which `join` next drops the channels of ended tasks, should no scrape
    /// come to do it (one TCP connection after another, never scraped).
    prune_at: usize,
}

impl Barrier {
    /// A new listener task's channel; the task leaves the barrier by dropping the receiver.
    pub fn join(&self) -> mpsc::UnboundedReceiver<Ticket> {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut listeners = self.lock();
        if listeners.senders.len() >= listeners.prune_at {
            listeners.senders.retain(|tx| !tx.is_closed());
            listeners.prune_at = (2 * listeners.senders.len()).max(64);
        }
        listeners.senders.push(tx);
        rx
    }

    /// Waits for the scrape passing before (and for one that timed out before that), then
    /// hands every listener task a ticket and waits until all of them, and the families they
    /// passed it to, are done; false if that takes longer than `timeout` in all.
    pub async fn pass(&self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        let Ok(mut unfinished) = tokio::time::timeout_at(deadline, self.passing.lock()).await
        else {
            return false;
        };
        if let Some(mut before) = unfinished.take() {
            if tokio::time::timeout_at(deadline, &mut before)
                .await
                .is_err()
            {
                *unfinished = Some(before);
                return false;
            }
        }
        let (done, mut all_done) = oneshot::channel();
        let ticket = Ticket {
            _done: Arc::new(Done(Some(done))),
        };
        // A task that has ended dropped its receiver: it leaves the list here.
        self.lock()
            .senders
            .retain(|tx| tx.send(ticket.clone()).is_ok());
        drop(ticket);
        // The sender cannot be dropped unsent (`Done` sends as it drops): a receive error
        // cannot happen, and would mean done anyway.
        if tokio::time::timeout_at(deadline, &mut all_done)
            .await
            .is_err()
        {
            *unfinished = Some(all_done);
            return false;
        }
        true
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Listeners> {
        // The list stays valid whatever a panicking holder did to it.
        self.listeners
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_scrape_waits_for_every_ticket_and_no_longer() {
        let barrier = Arc::new(Barrier::default());
        assert!(barrier.pass(Duration::from_millis(10)).await, "no listener");
        let mut held = barrier.join();
        // A listener task that ended.
        drop(barrier.join());
        let pass = |timeout| {
            let barrier = barrier.clone();
            tokio::spawn(async move { barrier.pass(timeout).await })
        };
        // One listener keeps its ticket: the scrape times out.
        let waiting = pass(Duration::from_millis(50));
        let late = held.recv().await.expect("a ticket");
        assert!(!waiting.await.unwrap());
        // The next scrape waits for that ticket first, then for its own, which a family
        // holds a clone of.
        let passing = pass(Duration::from_secs(5));
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(held.try_recv().is_err(), "no ticket before the late one");
        drop(late);
        let next = held.recv().await.expect("a second ticket");
        let family = next.clone();
        drop(next);
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!passing.is_finished());
        drop(family);
        assert!(passing.await.unwrap());
        assert_eq!(
            barrier.lock().senders.len(),
            1,
            "the ended listener left the list"
        );
    }

    #[test]
    fn ended_listeners_leave_the_list_without_scrapes() {
        let barrier = Barrier::default();
        for _ in 0..1000 {
            drop(barrier.join());
        }
        let kept = barrier.join();
        assert!(
            barrier.lock().senders.len() <= 64,
            "{}",
            barrier.lock().senders.len()
        );
        drop(kept);
    }

    #[tokio::test]
    async fn a_scrape_waits_for_the_one_before() {
        let barrier = Arc::new(Barrier::default());
        let mut listener = barrier.join();
        let pass = |barrier: &Arc<Barrier>| {
            let barrier = barrier.clone();
            tokio::spawn(async move { barrier.pass(Duration::from_secs(5)).await })
        };
        let first = pass(&barrier);
        // A family still holds the first scrape's ticket.
        let family = listener.recv().await.expect("a ticket");
        let second = pass(&barrier);
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(
            listener.try_recv().is_err(),
            "no ticket before the first is through"
        );
        assert!(!second.is_finished());
        drop(family);
        assert!(first.await.unwrap());
        drop(listener.recv().await.expect("the second ticket"));
        assert!(second.await.unwrap());
    }
}
