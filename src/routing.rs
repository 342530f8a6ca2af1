//! Routing: delivers each family's batch to its family actor, one message per family per
//! flush. Each listener task has its own [`Router`] with a cache from family name to
//! actor, so the registry is asked only on a miss, and a dead actor (restarted by the registry)
//! is looked up again without losing the batch. A family the registry refuses has its samples
//! counted: as type conflicts when its names would collide with another family's, as
//! `max_series` refusals when the series budget is full. The router also remembers the
//! families it sent a batch to since the last scrape, for the [`crate::barrier`].

use ractor::{rpc::CallResult, ActorRef, MessagingErr};
use rustc_hash::FxHashMap;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::warn;

use crate::actors::family::{FamilyLink, FamilyMsg, FamilySpec};
use crate::actors::registry::{FamilyAnswer, Refusal, RegistryMsg};
use crate::barrier::Ticket;
use crate::limits::{shrink, QueueBound, Queued};
use crate::telemetry::{DropStage, LogLimiter, Telemetry};
use crate::update::{Batch, Update};

/// Entries past which the cache starts over, so it stays bounded with endless new names.
const CACHE_LIMIT: usize = 100_000;
/// Delivery failures logged per second, across listeners.
static DROP_LOG: LogLimiter = LogLimiter::new(10);
/// How long a look-up may take before the batch is counted as dropped.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);
/// Families waited for at once when the registry has no room for their actors (see
/// [`Router::send_when_room`]).
const WAIT_CHUNK: usize = 1024;

/// A listener's route to the family actors.
#[derive(Debug)]
pub struct Router {
    registry: ActorRef<RegistryMsg>,
    telemetry: Arc<Telemetry>,
    bound: Arc<QueueBound>,
    actors: FxHashMap<Arc<str>, CachedFamily>,
    /// Families sent a batch since the last scrape barrier, with the actor that got it.
    touched: FxHashMap<Arc<str>, Arc<FamilyLink>>,
    /// When the cache was last cleared of stopped actors.
    pruned: Instant,
}

/// How often the cache lets go of the links to actors that have stopped (retired,
/// hibernated or failed): at a dispatch, and on the listener's tick once no traffic has come
/// for this long.
pub const PRUNE_EVERY: Duration = Duration::from_millis(250);

/// What a family's first batch says it is, in case it has to be born.
fn spec(family: &Arc<str>, batch: &Batch) -> FamilySpec {
    FamilySpec {
        name: family.clone(),
        kind: batch.updates.list[0].op.kind(),
        meta: batch.meta.clone(),
    }
}

/// Families a router sent a batch to since the last scrape, on their way to another router.
#[derive(Debug)]
pub struct Touched(FxHashMap<Arc<str>, Arc<FamilyLink>>);

/// What the cache knows about a family name.
#[derive(Debug)]
enum CachedFamily {
    /// Its actor.
    Actor(Arc<FamilyLink>),
    /// Refused by the registry at this instant; asked again after [`recheck`], since the
    /// family it clashed with may go away, or series may expire and make room.
    Refused(Refusal, Instant),
}

/// True for an actor that is draining or stopped: it takes no new message.
fn stopping(link: &FamilyLink) -> bool {
    use ractor::ActorStatus;
    link.actor().is_none_or(|actor| {
        matches!(
            actor.get_status(),
            ActorStatus::Draining | ActorStatus::Stopping | ActorStatus::Stopped
        )
    })
}

/// True for an actor that has yet to stop: a draining one still publishes as it stops.
fn not_stopped(link: &FamilyLink) -> bool {
    link.actor()
        .is_some_and(|actor| actor.get_status() != ractor::ActorStatus::Stopped)
}

/// How long a refused family name stays refused in the cache.
fn recheck(refusal: &Refusal) -> Duration {
    match refusal {
        Refusal::Clash(_) => Duration::from_secs(5),
        Refusal::Full => Duration::from_secs(1),
        // Asked again at once, waiting for room (see `Router::route`).
        Refusal::NoRoom => Duration::ZERO,
    }
}

/// True for a cached route still good: not an actor on its way out, nor a refusal old enough
/// to ask again.
fn current(route: &CachedFamily) -> bool {
    match route {
        CachedFamily::Actor(link) => !stopping(link),
        CachedFamily::Refused(refusal, at) => at.elapsed() < recheck(refusal),
    }
}

impl Router {
    /// A router with an empty cache, sending within `bound`.
    pub fn new(
        registry: ActorRef<RegistryMsg>,
        telemetry: Arc<Telemetry>,
        bound: Arc<QueueBound>,
    ) -> Self {
        Router {
            registry,
            telemetry,
            bound,
            actors: FxHashMap::default(),
            touched: FxHashMap::default(),
            pruned: Instant::now(),
        }
    }

    /// True when the cache holds no route (actor or refusal) and no family awaits a scrape:
    /// nothing a prune could let go of.
    pub fn is_empty(&self) -> bool {
        self.actors.is_empty() && self.touched.is_empty()
    }

    /// Lets go of the cached actors that have stopped, and of refusals old enough to ask again.
    pub fn prune(&mut self) {
        self.pruned = Instant::now();
        self.actors.retain(|_, route| current(route));
        // A stopped family published as it stopped; a draining one has yet to.
        self.touched.retain(|_, link| not_stopped(link));
        shrink(&mut self.actors);
        shrink(&mut self.touched);
    }

    /// The families sent a batch since the last scrape, taken: for a task that ends (a TCP
    /// connection) to hand to one that goes on, whose next scrape then waits for them too.
    pub fn take_touched(&mut self) -> Touched {
        Touched(std::mem::take(&mut self.touched))
    }

    /// Takes on the families another router sent a batch to (see [`Router::take_touched`]).
    pub fn adopt(&mut self, touched: Touched) {
        self.touched.extend(touched.0);
    }

    /// Passes a scrape's ticket to every family sent a batch since the last scrape, behind
    /// that batch in its mailbox: the scrape waits until they have all published. A family
    /// draining (retiring or hibernating) takes no message but still applies what it has and
    /// publishes as it stops: the registry holds its ticket until then.
    pub fn sync(&mut self, ticket: &Ticket) {
        for (family, link) in self.touched.drain() {
            // A link cut: the actor stopped, and published as it did.
            let Some(actor) = link.actor() else { continue };
            if let Err(MessagingErr::SendErr(FamilyMsg::Sync(ticket))) =
                actor.cast(FamilyMsg::Sync(ticket.clone()))
            {
                let _ = self.registry.cast(RegistryMsg::HoldTicket(family, ticket));
            }
        }
    }

    /// Sends each batch to its family actor. The families not in the cache are looked up
    /// together, in one call to the registry.
    pub async fn dispatch(&mut self, batches: Vec<(Arc<str>, Batch)>) {
        if self.pruned.elapsed() >= PRUNE_EVERY {
            self.prune();
        }
        let unknown: Vec<FamilySpec> = batches
            .iter()
            .filter(|(family, _)| self.cached(family).is_none())
            .map(|(family, batch)| spec(family, batch))
            .collect();
        if !unknown.is_empty() {
            self.look_up(unknown).await;
        }
        let mut later = Vec::new();
        for (family, batch) in batches {
            if self.waits_for_room(&family) {
                later.push((family, batch));
            } else {
                self.send(family, batch).await;
            }
        }
        let later = self.apply_hibernating(later).await;
        self.send_when_room(later).await;
    }

    /// Hands the registry the batches of families it had no room for: those that need no
    /// actor yet are applied where they hibernate (see [`RegistryMsg::Adopt`]). Returns the
    /// others, to wait for room. Batches the registry did not answer for in time are dropped
    /// and counted (the registry does not apply what it finds its asker stopped waiting for).
    async fn apply_hibernating(
        &mut self,
        later: Vec<(Arc<str>, Batch)>,
    ) -> VecDeque<(Arc<str>, Batch)> {
        if later.is_empty() {
            return VecDeque::new();
        }
        let mut names = Vec::with_capacity(later.len());
        let mut batches = Vec::with_capacity(later.len());
        for (family, batch) in later {
            names.push((family.clone(), batch.samples()));
            batches.push((spec(&family, &batch), batch));
        }
        match self.ask(|reply| RegistryMsg::Adopt(batches, reply)).await {
            Some(back) => names
                .into_iter()
                .zip(back)
                .filter_map(|((family, _), batch)| Some((family, batch?)))
                .collect(),
            None => {
                for (family, samples) in names {
                    self.drop_batch(&family, DropStage::Undeliverable, samples);
                }
                VecDeque::new()
            }
        }
    }

    /// Sends the batches of families for whose actor the registry had no room, as room is
    /// made: [`WAIT_CHUNK`] families at a time are waited for, and the registry answers once
    /// the first of them fit, so each batch goes as soon as its actor exists. The cache lets
    /// go of stopped actors meanwhile, as at a dispatch: a burst of new names makes many.
    async fn send_when_room(&mut self, mut later: VecDeque<(Arc<str>, Batch)>) {
        while !later.is_empty() {
            let n = later.len().min(WAIT_CHUNK);
            let specs: Vec<FamilySpec> = later
                .iter()
                .take(n)
                .map(|(family, batch)| spec(family, batch))
                .collect();
            let answers = self.wait_for_room(specs).await;
            if answers.is_empty() {
                // No room in time: these and the rest are dropped, and counted, rather than
                // keep the listener from its socket for another timeout each.
                for (family, batch) in later.drain(..) {
                    self.actors.remove(&family);
                    self.drop_batch(&family, DropStage::Undeliverable, batch.samples());
                }
                return;
            }
            let now = Instant::now();
            for answer in answers {
                if let Some((family, batch)) = later.pop_front() {
                    let spec = spec(&family, &batch);
                    self.cache(&spec, answer, now);
                    // Refused for now (`NoRoom`): `send` drops and counts it.
                    self.send(family, batch).await;
                }
            }
            if self.pruned.elapsed() >= PRUNE_EVERY {
                self.prune();
            }
        }
    }

    async fn send(&mut self, family: Arc<str>, batch: Batch) {
        let n = batch.samples();
        let spec = spec(&family, &batch);
        let mut link = match self.route(&spec).await {
            Some(CachedFamily::Actor(link)) => link,
            Some(CachedFamily::Refused(Refusal::Clash(_), _)) => {
                return self.count_clash(&family, &batch.updates.list)
            }
            Some(CachedFamily::Refused(Refusal::Full, _)) => {
                // As the family would have counted it, had it been let in.
                return self.telemetry.series_refused("max_series", n);
            }
            // No room in time, or none to be made (see `Router::route`); a `NoRoom` refusal is
            // never current, so `route` gives `None` for it.
            Some(CachedFamily::Refused(Refusal::NoRoom, _)) | None => {
                return self.drop_batch(&family, DropStage::Undeliverable, n)
            }
        };
        let queued = match Queued::reserve(&self.bound, batch.updates) {
            Ok(queued) => queued,
            Err(_) => return self.drop_batch(&family, DropStage::QueueFull, n),
        };
        let mut message = FamilyMsg::Apply(queued);
        // A cached actor may have failed, retired or been replaced: one retry after a fresh
        // look-up.
        for attempt in 0..2 {
            let sent = match link.actor() {
                Some(actor) => actor.cast(message),
                None => Err(MessagingErr::SendErr(message)),
            };
            match sent {
                Ok(()) => {
                    self.touched.insert(family, link);
                    return;
                }
                Err(MessagingErr::SendErr(returned)) if attempt == 0 => {
                    self.actors.remove(&family);
                    message = returned;
                    match self.route(&spec).await {
                        Some(CachedFamily::Actor(fresh)) => link = fresh,
                        _ => break,
                    }
                }
                Err(_) => break,
            }
        }
        self.drop_batch(&family, DropStage::Undeliverable, n);
    }

    fn drop_batch(&self, family: &str, stage: DropStage, n: u64) {
        self.telemetry.dropped(stage, n);
        if let Some(suppressed) = DROP_LOG.allow() {
            warn!(
                metric = family,
                updates = n,
                stage = stage.as_str(),
                suppressed,
                "updates dropped before reaching their family actor"
            );
        }
    }

    /// The cached route of a family, unless it is an actor on its way out (retiring,
    /// hibernating) or a refusal old enough to ask again: those are looked up afresh, with the
    /// rest of the flush's unknown families.
    fn cached(&self, family: &str) -> Option<&CachedFamily> {
        self.actors.get(family).filter(|route| current(route))
    }

    /// The family's route: cached, or asked of the registry; a family for whose actor the
    /// registry had no room is waited for.
    async fn route(&mut self, spec: &FamilySpec) -> Option<CachedFamily> {
        if self.cached(&spec.name).is_none() {
            if !self.waits_for_room(&spec.name) {
                self.look_up(vec![spec.clone()]).await;
            }
            if self.waits_for_room(&spec.name) {
                let answer = self.wait_for_room(vec![spec.clone()]).await.pop();
                self.actors.remove(&spec.name);
                if let Some(answer) = answer {
                    self.cache(spec, answer, Instant::now());
                }
            }
        }
        match self.cached(&spec.name)? {
            CachedFamily::Actor(link) => Some(CachedFamily::Actor(link.clone())),
            CachedFamily::Refused(refusal, at) => Some(CachedFamily::Refused(refusal.clone(), *at)),
        }
    }

    /// True when the registry last answered that there was no room for the family's actor.
    fn waits_for_room(&self, family: &str) -> bool {
        matches!(
            self.actors.get(family),
            Some(CachedFamily::Refused(Refusal::NoRoom, _))
        )
    }

    /// Waits until the registry has room for the first of these families' actors: the
    /// answers for as many as fit, in order; none when that took too long.
    async fn wait_for_room(&mut self, specs: Vec<FamilySpec>) -> Vec<FamilyAnswer> {
        self.ask(|reply| RegistryMsg::WaitForRoom(specs, reply))
            .await
            .unwrap_or_default()
    }

    /// The registry's answer to the message `message` makes, if it came within
    /// `LOOKUP_TIMEOUT`.
    async fn ask<T: Send + 'static>(
        &self,
        message: impl FnOnce(ractor::RpcReplyPort<T>) -> RegistryMsg,
    ) -> Option<T> {
        match self.registry.call(message, Some(LOOKUP_TIMEOUT)).await {
            Ok(CallResult::Success(answer)) => Some(answer),
            _ => None,
        }
    }

    /// Asks the registry for the actors of `specs` and caches the answers.
    async fn look_up(&mut self, specs: Vec<FamilySpec>) {
        let asked = self.ask(|reply| RegistryMsg::Lookup(specs.clone(), reply));
        let Some(answers) = asked.await else {
            return;
        };
        if self.actors.len() + answers.len() > CACHE_LIMIT {
            self.actors.clear();
        }
        let now = Instant::now();
        for (spec, answer) in specs.iter().zip(answers) {
            self.cache(spec, answer, now);
        }
    }

    /// Caches the registry's answer about a family, logging a refusal (rate-limited).
    fn cache(&mut self, spec: &FamilySpec, answer: FamilyAnswer, now: Instant) {
        let route = match answer {
            Ok(link) => CachedFamily::Actor(link),
            Err(refusal) => {
                if let Some(suppressed) = DROP_LOG.allow() {
                    match &refusal {
                        Refusal::Clash(owner) => {
                            warn!(metric = %spec.name, clashes_with = %owner, suppressed, "metric names collide with another family; samples refused")
                        }
                        Refusal::Full => {
                            warn!(metric = %spec.name, limit = "max_series", suppressed, "series limit reached: new family refused")
                        }
                        Refusal::NoRoom => {}
                    }
                }
                CachedFamily::Refused(refusal, now)
            }
        };
        self.actors.insert(spec.name.clone(), route);
    }

    /// Counts a refused family's samples as type conflicts, by sample type.
    fn count_clash(&self, family: &str, updates: &[Update]) {
        let mut by_kind: FxHashMap<&'static str, u64> = FxHashMap::default();
        for update in updates {
            *by_kind.entry(update.op.kind().as_str()).or_default() += update.samples;
        }
        for (kind, n) in by_kind {
            self.telemetry.type_conflict(family, kind, n);
        }
    }
}
