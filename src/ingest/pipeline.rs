//! A listener task's way from the bytes it reads to the family actors: its [`Batcher`], which
//! turns lines into per-family batches, its [`Router`], which delivers them, the flush window
//! that says when, and the scrapes waiting for it (see [`crate::barrier`]). What a task reads
//! waits in its batcher for the flush window (`statsd.event_flush_interval` after the first
//! sample, or sooner once `statsd.event_flush_threshold` updates are held, observations
//! counted by their room: see [`Batcher::held`]), then each touched family gets one message.

use ractor::ActorRef;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::{Instant, Sleep};

use super::{Batcher, IngestConfig};
use crate::actors::registry::RegistryMsg;
use crate::barrier::{Barrier, Ticket};
use crate::limits::QueueBound;
use crate::routing::{Router, Touched, PRUNE_EVERY};
use crate::telemetry::{ListenerKind, Telemetry};

/// What every listener task's pipeline is made from.
#[derive(Debug)]
pub(crate) struct PipelineContext {
    /// Where look-ups go on a cache miss.
    pub(crate) registry: ActorRef<RegistryMsg>,
    /// Self-metrics.
    pub(crate) telemetry: Arc<Telemetry>,
    /// Longest time a sample is held before its family gets it (zero: after every receive).
    pub(crate) flush_interval: Duration,
    /// Updates held, after combining, that close the window early.
    pub(crate) flush_threshold: usize,
    /// Room for updates waiting in family mailboxes.
    pub(crate) queue: Arc<QueueBound>,
    /// How lines become updates.
    pub(crate) ingest: Arc<IngestConfig>,
    /// What scrapes wait on.
    pub(crate) barrier: Arc<Barrier>,
}

impl PipelineContext {
    /// A new pipeline for a task of `listener`.
    pub(crate) fn pipeline(&self, listener: ListenerKind) -> Pipeline {
        Pipeline {
            batcher: Batcher::new(self.telemetry.clone(), self.ingest.clone(), listener),
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
pub(crate) struct Pipeline {
    /// Where the task puts what it reads.
    pub(crate) batcher: Batcher,
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
pub(crate) enum Due {
    /// The flush window closed.
    Flush,
    /// Time to prune the router's cache.
    Prune,
    /// A scrape waits: flush, and have every family reached since the last one publish.
    Scrape(Ticket),
}

impl Pipeline {
    /// Waits for what comes due next; cancel-safe, so it can race a read.
    pub(crate) async fn due(&mut self) -> Due {
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
    pub(crate) async fn handle(&mut self, due: Due) {
        match due {
            Due::Flush => self.dispatch(true).await,
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
    pub(crate) fn waiting(&mut self) {
        crate::memory::release_freed_memory();
        if self.prune.is_none() && !(self.router.is_empty() && self.batcher.is_idle()) {
            self.prune = Some(Box::pin(tokio::time::sleep(PRUNE_EVERY)));
        }
    }

    /// The task pauses between reads (see [`crate::sockets`]): it is busy, and the prune
    /// timer stops.
    pub(crate) fn pausing(&mut self) {
        self.prune = None;
    }

    /// After a read: flushes if the window says so.
    pub(crate) async fn after_read(&mut self) {
        if self.window.flush_now(&self.batcher) {
            self.flush().await;
        }
    }

    /// Sends every held update to its family; the window closes.
    pub(crate) async fn flush(&mut self) {
        self.dispatch(false).await;
    }

    /// Sends every held update to its family, saying whether the window closed on the clock.
    async fn dispatch(&mut self, clocked: bool) {
        self.window.armed = false;
        let mut batches = self.batcher.take();
        for (_, batch) in &mut batches {
            batch.updates.clocked = clocked;
        }
        self.router.dispatch(batches).await;
    }

    /// As the task ends: sends every held update to its family, and gives back the families
    /// reached since the last scrape, for a task that goes on to [`adopt`](Self::adopt).
    pub(crate) async fn finish(mut self) -> Touched {
        self.flush().await;
        self.router.take_touched()
    }

    /// Takes on the families an ended task reached since the last scrape: the next scrape
    /// waits until they have published.
    pub(crate) fn adopt(&mut self, touched: Touched) {
        self.router.adopt(touched);
        self.waiting();
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
