//! The registry actor: spawns the family actor for each family name on first use, answers the
//! listeners' look-ups (they cache the answer), and supervises every family actor: a failed one
//! is restarted empty and the restart counted, while the others keep running.
//!
//! It also keeps every metric name each family's exposition uses (`x`, and `x_sum`, `x_count`,
//! `x_bucket` for observers; a summary keeps `x_bucket` too, as statsd_exporter does), so that
//! a new family whose names would collide with another's, such as a counter `x_count` beside a
//! summary `x`, is refused before it exists.
//!
//! A family whose series have all expired asks to retire. The registry forgets its actor, so
//! that no new look-up finds it, and drains it: what is already in its mailbox is applied,
//! anything sent later fails and is looked up again. Look-ups of the name meanwhile wait. When
//! the actor has stopped, a family that received updates while retiring is restarted with its
//! state, and the waiting look-ups get the new actor; otherwise the family is gone.
//!
//! An idle family asks to hibernate, which goes the same way except that the registry keeps
//! the stopped actor's state (and the family's names), and the next look-up of the family
//! spawns its actor again with that state, or, past the live limit, the registry applies
//! what the family was sent where it hibernates (see `room`). Its snapshot stays with the
//! aggregator meanwhile, so its series never leave /metrics.

mod handlers;
mod room;

use ractor::actor::ActorRuntime;
use ractor::{
    Actor, ActorId, ActorProcessingErr, ActorRef, DerivedActorRef, RpcReplyPort, SupervisionEvent,
};
use rustc_hash::FxHashMap;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;
use tracing::debug;

use crate::actors::aggregator::AggregatorMsg;
use crate::actors::family::{
    FamilyActor, FamilyArgs, FamilyContext, FamilyLink, FamilyMsg, FamilySpec, FamilyState,
    Hibernating, IdleDue, StopReason, StopRequest,
};
use crate::barrier::Ticket;
use crate::limits::shrink;
use crate::update::Batch;

/// Why a new family was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// One of its exposed names belongs to this other family.
    Clash(Arc<str>),
    /// Every series of `limits.max_series` is taken: it could not hold its first one.
    Full,
    /// No room for its actor under `limits.max_live_families` just now: room is being made,
    /// and [`RegistryMsg::WaitForRoom`] answers once there is.
    NoRoom,
}

/// The answer to a look-up of one family.
pub type FamilyAnswer = Result<Arc<FamilyLink>, Refusal>;

/// Messages the registry handles.
#[derive(Debug)]
pub enum RegistryMsg {
    /// The family actors for these specs, each spawned if there is none; one answer per spec,
    /// in order. The reply waits for a family that is retiring; a family for whose actor
    /// there is no room is answered [`Refusal::NoRoom`] at once.
    Lookup(Vec<FamilySpec>, RpcReplyPort<Vec<FamilyAnswer>>),
    /// The family actors for these specs, as `Lookup` answers, but waiting for room when
    /// there is none: answered as soon as the first ones have an actor, with the answers for
    /// as many as there was room for, in order (at least one); the asker sends their batches
    /// and asks again for the rest.
    WaitForRoom(Vec<FamilySpec>, RpcReplyPort<Vec<FamilyAnswer>>),
    /// The batches of families for whose actor there was no room (a look-up answered
    /// [`Refusal::NoRoom`]): each family that needs no actor yet, a new one or a hibernating
    /// one not updated steadily, has its batch applied where it hibernates; the reply gives
    /// back, in order, the batches of the others, to be sent once there is room for their
    /// actors (`WaitForRoom`).
    Adopt(Vec<(FamilySpec, Batch)>, RpcReplyPort<Vec<Option<Batch>>>),
    /// Make a family fail on purpose; replies whether the family exists.
    InjectFault(Arc<str>, RpcReplyPort<bool>),
    /// Whether each of these families is hibernating, in order (for `/api/v1/families`).
    Hibernating(Vec<Arc<str>>, RpcReplyPort<Vec<bool>>),
    /// A family actor asks to be drained and stopped: it holds no series left, or it is idle
    /// and its state is to be kept for its next update.
    Stop(StopRequest),
    /// A scrape's ticket for a family that was draining when a listener passed it on: held
    /// until the family has stopped, and so published.
    HoldTicket(Arc<str>, Ticket),
    /// Ask every live family idle long enough to hibernate to check (sent by the registry to
    /// itself while families are live, see `next_sweep_in`).
    IdleSweep,
    /// Try again to make room for the families that wait (sent by the registry to itself
    /// while none of the live families could be made to hibernate yet, see `room`).
    MakeRoom,
}

impl From<StopRequest> for RegistryMsg {
    fn from(request: StopRequest) -> Self {
        RegistryMsg::Stop(request)
    }
}

impl TryFrom<RegistryMsg> for StopRequest {
    type Error = RegistryMsg;

    fn try_from(message: RegistryMsg) -> Result<Self, RegistryMsg> {
        match message {
            RegistryMsg::Stop(request) => Ok(request),
            other => Err(other),
        }
    }
}

/// A live family actor, its spec, and when it may be idle enough to hibernate.
#[derive(Debug)]
struct Live {
    actor: ActorRef<FamilyMsg>,
    /// What the listeners cache; cut once the actor has stopped.
    link: Arc<FamilyLink>,
    spec: FamilySpec,
    idle: IdleDue,
}

/// The shortest time between two idle sweeps: half of `hibernate_after`, so a family
/// hibernates at most that much later than due (between 10 ms and 1 s). A sweep reads every
/// live family's [`IdleDue`], and wakes the runtime to do so.
fn idle_sweep_every(hibernate_after: Duration) -> Duration {
    (hibernate_after / 2).clamp(Duration::from_millis(10), Duration::from_secs(1))
}

/// When the next idle sweep is due, `earliest` ms after a sweep that asked no family to
/// check (the earliest time any live family was set to be due, if any): then, but at least
/// [`idle_sweep_every`] and at most twice that (or `hibernate_after`, if less) later. A family
/// updated after the sweep is due `hibernate_after` after its update at the earliest, so not
/// before the next sweep; one that was asked to check sets its time again, which may be
/// sooner: after a sweep that asked any family, the next comes [`idle_sweep_every`] later.
/// Families that stay busy thus cost half as many sweeps as a fixed cadence of
/// [`idle_sweep_every`].
fn next_sweep_in(hibernate_after: Duration, asked: bool, earliest: Option<u64>) -> Duration {
    let every = idle_sweep_every(hibernate_after);
    let longest = (every * 2).min(hibernate_after).max(every);
    match (asked, earliest) {
        (false, Some(ms)) => Duration::from_millis(ms).clamp(every, longest),
        (false, None) => longest,
        (true, _) => every,
    }
}

/// The actor; its state is [`RegistryState`].
#[derive(Debug)]
pub struct RegistryActor;

/// What the registry is started with.
#[derive(Debug)]
pub struct RegistryArgs {
    /// What every family actor shares.
    pub families: Arc<FamilyContext>,
    /// Live family actors at most, retiring ones included (`limits.max_live_families`).
    pub max_live: usize,
}

/// Live family actors by name, names by actor id, and which family derives each name it
/// exposes besides its own (a summary's `_sum`, say).
#[derive(Debug)]
pub struct RegistryState {
    ctx: Arc<FamilyContext>,
    /// Where the family actors send their [`StopRequest`]s: this registry.
    stop_requests: DerivedActorRef<StopRequest>,
    families: FxHashMap<Arc<str>, Live>,
    names: FxHashMap<ActorId, Arc<str>>,
    claims: FxHashMap<Arc<str>, Arc<str>>,
    /// Families being drained before they stop, with the look-ups waiting for them.
    retiring: FxHashMap<Arc<str>, Retiring>,
    /// Families hibernating (stopped while idle or to make room, or born so), with their state.
    hibernating: Hibernating,
    /// An idle sweep is due: one is scheduled at a time, and only while families are live,
    /// so that a registry with none (all hibernated, say) wakes for nothing.
    sweep_due: bool,
    /// Live family actors at most (see `room`).
    max_live: usize,
    /// Waits for room for families' actors, in arrival order.
    waiting_room: VecDeque<(Vec<FamilySpec>, RpcReplyPort<Vec<FamilyAnswer>>)>,
    /// A `MakeRoom` is on its way.
    room_retry: bool,
}

/// A family on its way out.
#[derive(Debug)]
struct Retiring {
    spec: FamilySpec,
    actor: ActorRef<FamilyMsg>,
    link: Arc<FamilyLink>,
    since: std::time::Instant,
    /// Hibernating rather than retiring: the state is to be kept.
    hibernate: bool,
    /// Look-ups that named it, each waiting for the new actor.
    waiting: Vec<PendingLookup>,
    /// Scrapes waiting for it to publish, which it does as it stops.
    tickets: Vec<Ticket>,
}

/// A look-up with answers still missing: the reply, the answers so far (a `None` for each
/// retiring family) and how many are missing.
#[derive(Debug)]
struct PendingLookup {
    reply: Arc<std::sync::Mutex<PartialAnswer>>,
    index: usize,
}

#[derive(Debug)]
struct PartialAnswer {
    reply: Option<RpcReplyPort<Vec<FamilyAnswer>>>,
    answers: Vec<Option<FamilyAnswer>>,
    missing: usize,
}

impl PendingLookup {
    /// Fills in one answer; sends the reply once every answer is in.
    fn answer(self, answer: FamilyAnswer) {
        let mut partial = self.reply.lock().unwrap_or_else(|e| e.into_inner());
        partial.answers[self.index] = Some(answer);
        partial.missing -= 1;
        if partial.missing == 0 {
            if let Some(reply) = partial.reply.take() {
                let answers = partial.answers.drain(..).flatten().collect();
                let _ = reply.send(answers);
            }
        }
    }
}

impl RegistryState {
    /// The family that already uses one of the names `spec` would expose: one that derives
    /// it (`claims`), or one of that name.
    fn clash(&self, spec: &FamilySpec) -> Option<Refusal> {
        spec.exposed_names().find_map(|name| {
            if let Some(owner) = self.claims.get(&name) {
                return Some(Refusal::Clash(owner.clone()));
            }
            (name != spec.name && self.has_family(&name)).then_some(Refusal::Clash(name))
        })
    }

    /// True when a family of this name is live, retiring or hibernating.
    fn has_family(&self, name: &str) -> bool {
        self.families.contains_key(name)
            || self.retiring.contains_key(name)
            || self.hibernating.contains(name)
    }

    /// Spawns a new family, with its first series taken from the budget now: a burst of new
    /// names past `limits.max_series` is refused here, before any of them costs an actor.
    fn spawn_new(
        &mut self,
        myself: &ActorRef<RegistryMsg>,
        spec: FamilySpec,
    ) -> Result<FamilyAnswer, ActorProcessingErr> {
        if let Some(clash) = self.clash(&spec) {
            return Ok(Err(clash));
        }
        if !self.ctx.budget.try_take() {
            return Ok(Err(Refusal::Full));
        }
        let state = FamilyState::with_reserved_series(spec.clone(), self.ctx.clone());
        Ok(Ok(self.spawn(myself, spec, Some(Box::new(state)))?))
    }

    /// Spawns a family actor without waiting for it to start (its `pre_start` cannot fail):
    /// a burst of new names then costs one task each, not one round trip each, and batches
    /// sent meanwhile wait in its mailbox.
    fn spawn(
        &mut self,
        myself: &ActorRef<RegistryMsg>,
        spec: FamilySpec,
        restore: Option<Box<FamilyState>>,
    ) -> Result<Arc<FamilyLink>, ActorProcessingErr> {
        let idle = IdleDue::new();
        let args = FamilyArgs {
            spec: spec.clone(),
            ctx: self.ctx.clone(),
            restore,
            idle: idle.clone(),
        };
        let handler = FamilyActor {
            supervisor: self.stop_requests.clone(),
        };
        let (actor, _) =
            ActorRuntime::spawn_linked_instant(None, handler, args, myself.get_cell())?;
        for name in spec.reserved_names() {
            self.claims.insert(name, spec.name.clone());
        }
        self.names.insert(actor.get_id(), spec.name.clone());
        let link = FamilyLink::new(actor.clone());
        let live = Live {
            actor,
            link: link.clone(),
            spec,
            idle,
        };
        self.families.insert(live.spec.name.clone(), live);
        self.count_actors();
        self.schedule_sweep(myself);
        Ok(link)
    }

    /// Schedules the next idle sweep, if none is due and some family could hibernate: `in_`
    /// from now, given `hibernate_after`.
    fn schedule_sweep_in(
        &mut self,
        myself: &ActorRef<RegistryMsg>,
        in_: impl FnOnce(Duration) -> Duration,
    ) {
        let Some(after) = self.ctx.hibernate_after else {
            return;
        };
        if !self.sweep_due && !self.families.is_empty() {
            self.sweep_due = true;
            myself.send_after(in_(after), || RegistryMsg::IdleSweep);
        }
    }

    /// Schedules an idle sweep [`idle_sweep_every`] from now, if none is due.
    fn schedule_sweep(&mut self, myself: &ActorRef<RegistryMsg>) {
        self.schedule_sweep_in(myself, idle_sweep_every);
    }

    /// The family name of actor `id` if that actor is retiring.
    fn retiring_name(&self, id: ActorId) -> Option<Arc<str>> {
        self.names
            .get(&id)
            .filter(|name| self.retiring.contains_key(*name))
            .cloned()
    }

    /// Forgets a stopped actor; returns its spec.
    fn forget(&mut self, id: ActorId) -> Option<FamilySpec> {
        let name = self.names.remove(&id)?;
        let live = self.families.remove(&name)?;
        live.link.cut();
        self.release(&live.spec);
        Some(live.spec)
    }

    fn release(&mut self, spec: &FamilySpec) {
        for reserved in spec.reserved_names() {
            self.claims.remove(&reserved);
        }
        self.count_actors();
    }

    /// `tallyd_metric_actors`: live family actors, retiring ones included; and the
    /// hibernating families. The maps of live actors give back their room when a burst of
    /// them has gone (hibernated, say): a hash map never shrinks by itself.
    fn count_actors(&mut self) {
        shrink(&mut self.families);
        shrink(&mut self.names);
        shrink(&mut self.retiring);
        let live = self.families.len() + self.retiring.len();
        let t = &self.ctx.telemetry;
        t.metric_actors.set(live as i64);
        t.families_hibernating.set(self.hibernating.len() as i64);
    }

    /// Spawns the actor of a hibernating family again, with its state.
    fn wake(
        &mut self,
        myself: &ActorRef<RegistryMsg>,
        name: &str,
    ) -> Result<Option<Arc<FamilyLink>>, ActorProcessingErr> {
        let Some(dormant) = self.hibernating.take(name) else {
            return Ok(None);
        };
        self.ctx.telemetry.family_wakeups.inc();
        let state = Box::new((*dormant).wake(self.ctx.clone()));
        let spec = state.spec();
        self.spawn(myself, spec, Some(state)).map(Some)
    }

    /// Starts draining the actor of a family that asked to stop, if it is still the family's
    /// current one, to retire or hibernate it.
    fn drain(&mut self, myself: &ActorRef<RegistryMsg>, request: StopRequest) {
        let (name, id) = (request.family, request.actor);
        let hibernate = request.reason == StopReason::Hibernate;
        let current = self.families.get(&name);
        if current.is_some_and(|live| live.actor.get_id() == id) {
            if let Some(Live {
                actor, link, spec, ..
            }) = self.families.remove(&name)
            {
                self.retiring.insert(
                    name,
                    Retiring {
                        spec,
                        actor: actor.clone(),
                        link,
                        since: std::time::Instant::now(),
                        hibernate,
                        waiting: Vec::new(),
                        tickets: Vec::new(),
                    },
                );
                // Applies what is queued, refuses what comes after; then stops.
                let _ = actor.drain();
                self.check_room_in(myself, handlers::REAP_AFTER);
            }
        }
    }

    /// A retiring actor has stopped: restart it with its state if updates reached it while it
    /// retired, or fresh if look-ups are waiting; otherwise let the family go.
    async fn retired(
        &mut self,
        myself: &ActorRef<RegistryMsg>,
        name: Arc<str>,
        state: Option<Box<FamilyState>>,
    ) -> Result<(), ActorProcessingErr> {
        let Some(retiring) = self.retiring.remove(&name) else {
            return Ok(());
        };
        retiring.link.cut();
        let revived = state.filter(|s| !s.is_empty());
        if retiring.hibernate {
            match revived {
                Some(state) if retiring.waiting.is_empty() => {
                    debug!(metric = %name, "family hibernating");
                    self.hibernating.insert(state.into_dormant());
                    self.count_actors();
                    return Ok(());
                }
                Some(_) => {}
                // It failed while draining (its state, and so its snapshot, are gone), or it
                // is empty: a new family whose first batch never came, let go at its idle
                // check (see `FamilyActor::pre_start`); removing its snapshot does no harm.
                None => {
                    let _ = self
                        .ctx
                        .aggregator
                        .cast(AggregatorMsg::Remove(name.clone()));
                }
            }
        }
        if revived.is_none() && retiring.waiting.is_empty() {
            self.release(&retiring.spec);
            self.ctx.telemetry.family_retirements.inc();
            debug!(metric = %name, "family retired: no series left");
            return Ok(());
        }
        let spec = retiring.spec;
        self.release(&spec);
        let link = self.spawn(myself, spec, revived)?;
        for pending in retiring.waiting {
            pending.answer(Ok(link.clone()));
        }
        Ok(())
    }
}

impl Actor for RegistryActor {
    type Msg = RegistryMsg;
    type State = RegistryState;
    type Arguments = RegistryArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<RegistryMsg>,
        args: RegistryArgs,
    ) -> Result<RegistryState, ActorProcessingErr> {
        let ctx = args.families;
        ctx.telemetry.max_live_families.set(args.max_live as i64);
        Ok(RegistryState {
            hibernating: Hibernating::new(ctx.clone()),
            ctx,
            max_live: args.max_live.max(1),
            waiting_room: VecDeque::new(),
            room_retry: false,
            stop_requests: myself.get_derived(),
            families: FxHashMap::default(),
            names: FxHashMap::default(),
            claims: FxHashMap::default(),
            retiring: FxHashMap::default(),
            sweep_due: false,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<RegistryMsg>,
        message: RegistryMsg,
        state: &mut RegistryState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            RegistryMsg::Lookup(specs, reply) => state.lookup(&myself, specs, reply)?,
            RegistryMsg::WaitForRoom(specs, reply) => state.wait_for_room(&myself, specs, reply)?,
            RegistryMsg::Adopt(batches, reply) => {
                // An asker that stopped waiting (timed out) counted these batches as
                // undeliverable: they are not applied.
                if !reply.is_closed() {
                    let _ = reply.send(state.adopt(batches));
                }
            }
            RegistryMsg::IdleSweep => state.idle_sweep(&myself).await?,
            RegistryMsg::MakeRoom => {
                state.room_retry = false;
                state.reap_stopped(&myself).await?;
                state.admit_waiting(&myself)?;
                if !state.retiring.is_empty() {
                    state.check_room_in(&myself, handlers::REAP_AFTER);
                }
            }
            RegistryMsg::Stop(request) => state.drain(&myself, request),
            RegistryMsg::HoldTicket(name, ticket) => {
                // Still retiring: held until it has stopped. Otherwise it has stopped and
                // published already, and the ticket goes now.
                if let Some(retiring) = state.retiring.get_mut(&name) {
                    retiring.tickets.push(ticket);
                }
            }
            RegistryMsg::InjectFault(name, reply) => state.inject_fault(&myself, &name, reply)?,
            RegistryMsg::Hibernating(names, reply) => {
                let _ = reply.send(
                    names
                        .iter()
                        .map(|name| state.hibernating.contains(name))
                        .collect(),
                );
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<RegistryMsg>,
        event: SupervisionEvent,
        state: &mut RegistryState,
    ) -> Result<(), ActorProcessingErr> {
        match event {
            SupervisionEvent::ActorFailed(cell, error) => state.failed(&myself, cell, error).await,
            SupervisionEvent::ActorTerminated(cell, boxed, _) => {
                let family = boxed.and_then(|mut b| b.take::<FamilyState>().ok());
                state.terminated(&myself, cell, family.map(Box::new)).await
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sweep_that_asked_no_family_waits_for_the_earliest_due_within_bounds() {
        let ms = Duration::from_millis;
        let second = Duration::from_secs(1);
        // Asked a family: it may be due again soon.
        assert_eq!(next_sweep_in(second, true, Some(5_000)), ms(500));
        // Otherwise the earliest due, between half and all of `hibernate_after`.
        assert_eq!(next_sweep_in(second, false, Some(100)), ms(500));
        assert_eq!(next_sweep_in(second, false, Some(800)), ms(800));
        assert_eq!(next_sweep_in(second, false, Some(5_000)), second);
        assert_eq!(next_sweep_in(second, false, None), second);
        // Long `hibernate_after`: between 1 s and 2 s.
        let ten = Duration::from_secs(10);
        assert_eq!(next_sweep_in(ten, false, Some(1_500)), ms(1_500));
        assert_eq!(next_sweep_in(ten, false, None), 2 * second);
        // Short: never later than `hibernate_after`, never sooner than 10 ms.
        assert_eq!(next_sweep_in(ms(10), false, None), ms(10));
        assert_eq!(next_sweep_in(ms(30), false, Some(100)), ms(30));
    }
}
