//! A family's actor as the listeners' caches hold it. The registry cuts the link once the
//! actor has stopped, so a cache that still names a stopped family (a burst of new names
//! stops thousands of them between two prunes of a cache) holds a few bytes, not the actor
//! and its mailboxes.

use arc_swap::ArcSwapOption;
use ractor::ActorRef;
use std::sync::Arc;

use super::FamilyMsg;

/// A link to one family actor; empty once that actor has stopped.
#[derive(Debug)]
pub struct FamilyLink(ArcSwapOption<ActorRef<FamilyMsg>>);

impl FamilyLink {
    /// A link to `actor`.
    pub fn new(actor: ActorRef<FamilyMsg>) -> Arc<Self> {
        Arc::new(FamilyLink(ArcSwapOption::from_pointee(actor)))
    }

    /// The actor, unless it has stopped and the registry cut the link.
    pub fn actor(&self) -> Option<Arc<ActorRef<FamilyMsg>>> {
        self.0.load_full()
    }

    /// Lets go of the actor, which has stopped.
    pub fn cut(&self) {
        self.0.store(None);
    }
}
