//! Routing: delivers each family's batch to its family actor, one message per family per
//! receive batch. Each listener task has its own [`Router`] with a cache from family name to
//! actor, so the registry is asked only on a miss, and a dead actor (restarted by the registry)
//! is looked up again without losing the batch. A family the registry refuses (its names
//! would collide with another family's) has its samples counted as type conflicts.

use ractor::{rpc::CallResult, ActorRef, MessagingErr};
use rustc_hash::FxHashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::warn;

use crate::family::{FamilyMsg, FamilySpec};
use crate::ingest::{Batch, Batcher};
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
    actors: FxHashMap<Arc<str>, Route>,
}

/// What the cache knows about a family name.
#[derive(Debug)]
enum Route {
    /// Its actor.
    Actor(ActorRef<FamilyMsg>),
    /// Refused by the registry at this instant; asked again after [`CLASH_RECHECK`], since the
    /// family it clashed with may go away.
    Clash(Instant),
}

/// How long a refused family name stays refused in the cache.
const CLASH_RECHECK: Duration = Duration::from_secs(5);

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
        for (family, batch) in batcher.take() {
            self.send(family, batch).await;
        }
    }

    async fn send(&mut self, family: Arc<str>, batch: Batch) {
        let n = batch.updates.len() as u64;
        let spec = FamilySpec {
            name: family.clone(),
            kind: batch.updates[0].op.kind(),
            meta: batch.meta,
        };
        let mut message = FamilyMsg::Apply(batch.updates);
        // A cached actor may have failed and been replaced: one retry after a fresh look-up.
        for _ in 0..2 {
            let actor = match self.route(&spec).await {
                Some(Route::Actor(actor)) => actor,
                Some(Route::Clash(_)) => {
                    if let FamilyMsg::Apply(updates) = &message {
                        self.count_clash(&family, updates);
                    }
                    return;
                }
                None => break,
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

    async fn route(&mut self, spec: &FamilySpec) -> Option<Route> {
        match self.actors.get(&spec.name) {
            Some(Route::Actor(actor)) => return Some(Route::Actor(actor.clone())),
            Some(Route::Clash(at)) if at.elapsed() < CLASH_RECHECK => {
                return Some(Route::Clash(*at));
            }
            _ => {}
        }
        let asked = self
            .registry
            .call(
                |reply| RegistryMsg::Lookup(spec.clone(), reply),
                Some(LOOKUP_TIMEOUT),
            )
            .await;
        let (cached, answer) = match asked {
            Ok(CallResult::Success(Ok(actor))) => {
                (Route::Actor(actor.clone()), Route::Actor(actor))
            }
            Ok(CallResult::Success(Err(clash))) => {
                if let Some(suppressed) = DROP_LOG.allow() {
                    warn!(metric = %spec.name, clashes_with = %clash.owner, suppressed, "metric names collide with another family; samples refused");
                }
                let now = Instant::now();
                (Route::Clash(now), Route::Clash(now))
            }
            _ => return None,
        };
        if self.actors.len() >= CACHE_LIMIT {
            self.actors.clear();
        }
        self.actors.insert(spec.name.clone(), cached);
        Some(answer)
    }

    /// Counts a refused family's samples as type conflicts, by sample type.
    fn count_clash(&self, family: &str, updates: &[Update]) {
        let mut by_kind: FxHashMap<&'static str, u64> = FxHashMap::default();
        for update in updates {
            *by_kind.entry(update.op.kind().as_str()).or_default() += 1;
        }
        for (kind, n) in by_kind {
            self.telemetry.type_conflict(family, kind, n);
        }
    }
}
