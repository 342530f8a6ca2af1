//! Routing: delivers each family's batch to its family actor, one message per family per
//! receive batch. Each listener task has its own [`Router`] with a cache from family name to
//! actor, so the registry is asked only on a miss, and a dead actor (restarted by the registry)
//! is looked up again without losing the batch.

use ractor::{rpc::CallResult, ActorRef, MessagingErr};
use rustc_hash::FxHashMap;
use std::sync::Arc;
use std::time::Duration;
use tracing::warn;

use crate::family::FamilyMsg;
use crate::ingest::Batcher;
use crate::registry::RegistryMsg;
use crate::telemetry::{LogLimiter, Telemetry};
use crate::update::Update;

/// Entries past which the cache starts over, so it stays bounded with endless new names.
const CACHE_LIMIT: usize = 100_000;
/// Delivery failures logged per second, across listeners.
static DROP_LOG: LogLimiter = LogLimiter::new(10);
/// How long a look-up may take before the batch is counted as dropped.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);

/// A listener's route to the family actors.
#[derive(Debug)]
pub struct Router {
    registry: ActorRef<RegistryMsg>,
    telemetry: Arc<Telemetry>,
    actors: FxHashMap<Arc<str>, ActorRef<FamilyMsg>>,
}

impl Router {
    /// A router with an empty cache.
    pub fn new(registry: ActorRef<RegistryMsg>, telemetry: Arc<Telemetry>) -> Self {
        Router {
            registry,
            telemetry,
            actors: FxHashMap::default(),
        }
    }

    /// Sends every batch the batcher holds to its family actor.
    pub async fn dispatch(&mut self, batcher: &mut Batcher) {
        for (family, updates) in batcher.take() {
            self.send(family, updates).await;
        }
    }

    async fn send(&mut self, family: Arc<str>, updates: Vec<Update>) {
        let n = updates.len() as u64;
        let mut message = FamilyMsg::Apply(updates);
        // A cached actor may have failed and been replaced: one retry after a fresh look-up.
        for _ in 0..2 {
            let Some(actor) = self.actor(&family).await else {
                break;
            };
            match actor.cast(message) {
                Ok(()) => return,
                Err(MessagingErr::SendErr(returned)) => {
                    self.actors.remove(&family);
                    message = returned;
                }
                Err(_) => break,
            }
        }
        self.telemetry.updates_dropped.inc_by(n);
        if let Some(suppressed) = DROP_LOG.allow() {
            warn!(metric = %family, updates = n, suppressed, "could not deliver updates to the family actor");
        }
    }

    async fn actor(&mut self, family: &Arc<str>) -> Option<ActorRef<FamilyMsg>> {
        if let Some(actor) = self.actors.get(family) {
            return Some(actor.clone());
        }
        let asked = self
            .registry
            .call(
                |reply| RegistryMsg::Lookup(family.clone(), reply),
                Some(LOOKUP_TIMEOUT),
            )
            .await;
        match asked {
            Ok(CallResult::Success(actor)) => {
                if self.actors.len() >= CACHE_LIMIT {
                    self.actors.clear();
                }
                self.actors.insert(family.clone(), actor.clone());
                Some(actor)
            }
            _ => None,
        }
    }
}
