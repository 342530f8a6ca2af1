//! The family actor: sole owner of one Prometheus metric family (one name after escaping). It
//! holds the family's type, every series (label set) with its value or observations, its
//! update count and update rate ([`FamilyState`]). It applies batches of updates, refuses
//! updates of another type (counted per metric and type), and publishes a rendered snapshot to
//! the aggregator: within the publish interval of an update, and when a scrape's
//! [`crate::barrier`] asks (`Sync`).
//!
//! Series that see no update for their TTL are removed; a family left with none asks its
//! supervisor to retire it (see [`crate::actors::registry`]). A family without a TTL that sees
//! no update for `hibernate_after` (or, if it gets a batch in every flush window, until it
//! misses one; see [`FamilyContext::hibernate_after`]) asks to hibernate: the registry stops
//! the actor and keeps its state ([`Dormant`]), its snapshot stays with the aggregator, and
//! the next update respawns it with that state.
//! New series are taken from the shared [`SeriesBudget`]; past a limit the update is refused
//! and counted, while existing series keep updating.

mod dormant;
mod idle;
mod link;
pub mod native;
pub mod observer;
mod series;
pub mod set;
mod sketch;
mod state;
mod timers;

use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, DerivedActorRef};
use std::sync::Arc;
use std::time::Duration;

use crate::actors::aggregator::AggregatorMsg;
use crate::barrier::Ticket;
use crate::config::ObserverType;
use crate::limits::{Queued, SeriesBudget};
use crate::telemetry::Telemetry;
use crate::update::{FamilyMeta, Kind};

/// The idle time of a family that never hibernates by itself (see
/// [`FamilyContext::idle_limit`]): ten years.
const NEVER_IDLE: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
pub use dormant::{Dormant, Hibernating};
pub use idle::IdleDue;
pub use link::FamilyLink;
pub use state::FamilyState;

/// What every family actor shares: where to publish, what to count, how to observe.
#[derive(Debug)]
pub struct FamilyContext {
    /// Receives the snapshots.
    pub aggregator: ActorRef<AggregatorMsg>,
    /// Self-metrics (type conflicts).
    pub telemetry: Arc<Telemetry>,
    /// Longest time between an update and its snapshot reaching the aggregator.
    pub publish_interval: Duration,
    /// `statsd.event_flush_interval`: how long a line may wait at its listener before its
    /// family applies it, and how often a family updated steadily gets a batch.
    pub flush_interval: Duration,
    /// Idle time after which a family without a TTL hibernates; `None`: never. A family is
    /// steady when its last three batches came each within a flush window and a half of the
    /// one before, as when it is updated in every window, or when its last batch's window
    /// closed on the clock: its listener held less than its flush threshold, and so sends a
    /// family updated all the time one batch a window. A steady family waits until it has
    /// also missed a whole window, so it is not stopped and respawned between windows however
    /// short this is; a sporadic one (a name sent once every few seconds, or in a burst that
    /// fills windows to their threshold) hibernates after it.
    pub hibernate_after: Option<Duration>,
    /// The window over which a set counts distinct members.
    pub set_window: Duration,
    /// How many series may exist.
    pub budget: Arc<SeriesBudget>,
}

impl FamilyContext {
    /// True for a batch that came `gap` after the one before it, when that is within a flush
    /// window and a half (a window, and the pause that starts the next).
    pub(super) fn steady(&self, gap: Duration) -> bool {
        gap <= self.flush_interval + self.flush_interval / 2
    }

    /// How long a family, steady or not, may go without an update before it hibernates (see
    /// [`FamilyContext::hibernate_after`]). Without `hibernate_after` a family never does by
    /// itself, but may still be made to, to make room for another (see the registry's
    /// `room`): its idle time then counts against [`NEVER_IDLE`], which orders the families
    /// by their last update all the same.
    pub(super) fn idle_limit(&self, steady: bool) -> Duration {
        let after = self.hibernate_after.unwrap_or(NEVER_IDLE);
        if steady {
            after.max(self.flush_interval * 2)
        } else {
            after
        }
    }

    /// How long a series of this TTL is kept after its family last applied it: its TTL, and
    /// the flush window a line may have waited at its listener, so that a series updated more
    /// often than its TTL never expires between two flushes.
    pub(super) fn kept_for(&self, ttl: Duration) -> Duration {
        ttl + self.flush_interval
    }
}

/// Messages a family actor handles.
#[derive(Debug)]
pub enum FamilyMsg {
    /// Apply every update of one receive batch, in order.
    Apply(Queued),
    /// Publish a snapshot now (sent by the actor to itself after an update).
    Publish,
    /// Publish now if anything changed: a scrape waits until the ticket is dropped.
    Sync(Ticket),
    /// Remove the series past their TTL (sent by the actor to itself).
    Expire,
    /// Retire if still empty: the first batch of a new family never came (sent by the actor
    /// to itself, see [`FamilyState`]'s start).
    FirstBatchDue,
    /// Publish a set family again, whose count falls as members age out with no update to
    /// say so (sent by the actor to itself).
    Refresh,
    /// Hibernate if idle long enough (see [`FamilyContext::hibernate_after`]; sent by the
    /// registry's idle sweep once the family's [`IdleDue`] has passed).
    IdleCheck,
    /// Fail on purpose (fault injection for supervision drills): the registry restarts the
    /// family empty.
    Fail,
}

/// Why a family actor asks its supervisor to drain and stop it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopReason {
    /// It holds no series (and is off /metrics): what reaches it meanwhile goes to a new one.
    Retire,
    /// It is idle: its state is kept, and so are its series on /metrics.
    Hibernate,
}

/// A family actor's request to its supervisor, the registry, which answers by draining it.
#[derive(Debug)]
pub struct StopRequest {
    /// The family.
    pub family: Arc<str>,
    /// Its actor: the request is void if another actor has taken the family over since.
    pub actor: ActorId,
    /// Why.
    pub reason: StopReason,
}

/// The actor; all its state is in [`FamilyState`].
#[derive(Debug)]
pub struct FamilyActor {
    /// The supervisor, asked to stop the actor (a retirement or a hibernation).
    pub supervisor: DerivedActorRef<StopRequest>,
}

impl FamilyActor {
    fn ask(&self, myself: &ActorRef<FamilyMsg>, state: &FamilyState, reason: Option<StopReason>) {
        if let Some(reason) = reason {
            let request = StopRequest {
                family: state.name(),
                actor: myself.get_id(),
                reason,
            };
            // The supervisor only stops after every family: a failed send means shutdown.
            let _ = self.supervisor.send_message(request);
        }
    }
}

/// A family to spawn: its name, its type (from the first update that names it) and its meta.
#[derive(Clone, Debug)]
pub struct FamilySpec {
    /// The Prometheus family name (escaped, after mapping).
    pub name: Arc<str>,
    /// The family type.
    pub kind: Kind,
    /// Help and observer settings.
    pub meta: Arc<FamilyMeta>,
}

impl FamilySpec {
    /// Every metric name the family's exposition uses: its own, then its
    /// [`derived_names`](Self::derived_names). Two families must not share any of them, or
    /// the exposition would be invalid.
    pub fn exposed_names(&self) -> impl Iterator<Item = Arc<str>> + '_ {
        std::iter::once(self.name.clone()).chain(self.derived_names())
    }

    /// The names the family's exposition uses besides its own: `_sum` and `_count` for a
    /// summary, `_bucket`, `_sum` and `_count` for a histogram, none for the other types.
    pub fn derived_names(&self) -> impl Iterator<Item = Arc<str>> + '_ {
        let suffixes: &[&str] = match (self.kind, self.meta.observer.observer_type) {
            (Kind::Observer, ObserverType::Summary) => &["_sum", "_count"],
            (Kind::Observer, ObserverType::Histogram) => &["_bucket", "_sum", "_count"],
            _ => &[],
        };
        suffixes
            .iter()
            .map(|suffix| format!("{}{suffix}", self.name).into())
    }

    /// The names kept from new families while this one exists: its
    /// [`derived_names`](Self::derived_names), and for a summary `_bucket` too, as
    /// statsd_exporter keeps a counter or gauge `x_bucket` out beside a summary `x`.
    pub fn reserved_names(&self) -> impl Iterator<Item = Arc<str>> + '_ {
        let summary = self.kind == Kind::Observer
            && self.meta.observer.observer_type == ObserverType::Summary;
        self.derived_names()
            .chain(summary.then(|| format!("{}_bucket", self.name).into()))
    }
}

/// Arguments to spawn a family actor.
#[derive(Debug)]
pub struct FamilyArgs {
    /// What the family is.
    pub spec: FamilySpec,
    /// Shared context.
    pub ctx: Arc<FamilyContext>,
    /// The state of a retired actor of this family that received updates while retiring.
    pub restore: Option<Box<FamilyState>>,
    /// Where the actor says when it may be idle (read by the registry).
    pub idle: IdleDue,
}

impl Actor for FamilyActor {
    type Msg = FamilyMsg;
    type State = FamilyState;
    type Arguments = FamilyArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<FamilyMsg>,
        args: FamilyArgs,
    ) -> Result<FamilyState, ActorProcessingErr> {
        let mut state = match args.restore {
            Some(state) => *state,
            None => FamilyState::new(args.spec, args.ctx),
        };
        state.start(&myself, args.idle);
        Ok(state)
    }

    async fn handle(
        &self,
        myself: ActorRef<FamilyMsg>,
        message: FamilyMsg,
        state: &mut FamilyState,
    ) -> Result<(), ActorProcessingErr> {
        let stop = match message {
            FamilyMsg::Apply(mut queued) => state.on_apply(&myself, queued.take()),
            FamilyMsg::IdleCheck => state.on_idle_check(),
            FamilyMsg::Expire => state.on_expire(&myself),
            FamilyMsg::FirstBatchDue => state.on_first_batch_due(),
            FamilyMsg::Publish => {
                state.on_publish(&myself);
                None
            }
            FamilyMsg::Sync(ticket) => {
                state.on_sync(&myself, ticket);
                None
            }
            FamilyMsg::Refresh => {
                state.on_refresh(&myself);
                None
            }
            FamilyMsg::Fail => {
                return Err(format!("fault injected into family {}", state.name()).into());
            }
        };
        self.ask(&myself, state, stop);
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<FamilyMsg>,
        state: &mut FamilyState,
    ) -> Result<(), ActorProcessingErr> {
        state.stop();
        Ok(())
    }
}
