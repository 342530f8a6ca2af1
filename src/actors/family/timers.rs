//! A family's timers. Each is a task that sends the family a message later, and holds the
//! family's actor (its mailboxes, some 7 KB) until it fires. The family keeps their handles
//! and cancels them when it restarts and when its state is dropped, so a family that stops,
//! as thousands do in a burst of new names, frees its actor at once rather than up to a
//! publish interval later.

use ractor::concurrency::JoinHandle;
use ractor::{ActorRef, MessagingErr};
use std::time::Duration;

use super::FamilyMsg;

/// A timer's message.
#[derive(Clone, Copy, Debug)]
pub(super) enum Timer {
    Publish,
    Refresh,
    Expire,
    FirstBatchDue,
}

impl Timer {
    fn message(self) -> FamilyMsg {
        match self {
            Timer::Publish => FamilyMsg::Publish,
            Timer::Refresh => FamilyMsg::Refresh,
            Timer::Expire => FamilyMsg::Expire,
            Timer::FirstBatchDue => FamilyMsg::FirstBatchDue,
        }
    }
}

type Handle = JoinHandle<Result<(), MessagingErr<FamilyMsg>>>;

/// The pending timer of each kind, if any.
#[derive(Debug, Default)]
pub(super) struct Timers([Option<Handle>; 4]);

impl Timers {
    /// Sends `timer`'s message after `after`, in place of one of its kind still pending.
    pub(super) fn set(&mut self, myself: &ActorRef<FamilyMsg>, timer: Timer, after: Duration) {
        let handle = myself.send_after(after, move || timer.message());
        if let Some(replaced) = self.0[timer as usize].replace(handle) {
            replaced.abort();
        }
    }

    /// Cancels every pending timer.
    pub(super) fn cancel_all(&mut self) {
        for handle in self.0.iter_mut().filter_map(Option::take) {
            handle.abort();
        }
    }
}

impl Drop for Timers {
    fn drop(&mut self) {
        self.cancel_all();
    }
}
