//! Room for live family actors: at most `limits.max_live_families` at once, retiring ones
//! included, whatever arrives and however fast. A look-up of many families answers those
//! without room [`Refusal::NoRoom`](super::Refusal::NoRoom) at once. The router then hands
//! their batches over (`Adopt`): a family that needs no actor yet, one whose batch does not
//! make it steady (a new name in a burst, a hibernating family updated now and then), has its
//! batch applied where it hibernates, with no actor spawned and none made to hibernate. The
//! others the router waits for (`WaitForRoom`): the live families whose idle time is up
//! soonest (the least recently updated) hibernate at once, of those that may (no TTL, no set
//! still counting), and the wait is answered as soon as the first of the waiting families
//! fit, so that their batches go on while the rest wait, and their actors can in turn make
//! room. When none may hibernate and none is on its way out, the families that wait are
//! refused for now, and their samples counted as undeliverable. So a burst of new names costs
//! a bounded number of actors at any moment, and a few microseconds a family past them.

use ractor::{ActorProcessingErr, ActorRef, RpcReplyPort};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{FamilyAnswer, Refusal, RegistryMsg, RegistryState};
use crate::actors::aggregator::AggregatorMsg;
use crate::actors::family::{FamilySpec, FamilyState, StopReason, StopRequest};
use crate::update::{Batch, Kind};

/// Live families hibernated at least at once when room is made, as a share of the limit: one
/// walk over the live families pays for many look-ups.
const EVICT_SHARE: usize = 16;
/// The most series a hibernating family may hold to be updated where it hibernates: the
/// registry makes its state and renders all of them again for each batch, where a live actor
/// renders only the series a batch changed. A family of more has its actor back.
const IN_PLACE_SERIES: usize = 64;
/// How soon room is tried for again when no live family could be made to hibernate yet.
const ROOM_RETRY: Duration = Duration::from_millis(10);

/// What a look-up of one family gets now.
pub(super) enum Now {
    /// Its answer.
    Answer(FamilyAnswer),
    /// Nothing yet: the family is retiring, and is answered when it is back.
    AfterRetiring,
    /// Nothing yet: its actor waits for room.
    AfterRoom,
}

impl RegistryState {
    /// True while one more actor fits under the limit.
    fn has_room(&self) -> bool {
        self.families.len() + self.retiring.len() < self.max_live
    }

    /// The answer for `spec` now: its live actor, or one woken or spawned if there is room.
    pub(super) fn answer_now(
        &mut self,
        myself: &ActorRef<RegistryMsg>,
        spec: FamilySpec,
    ) -> Result<Now, ActorProcessingErr> {
        if self.retiring.contains_key(&spec.name) {
            return Ok(Now::AfterRetiring);
        }
        if let Some(live) = self.families.get(&spec.name) {
            return Ok(Now::Answer(Ok(live.link.clone())));
        }
        if !self.has_room() {
            return Ok(Now::AfterRoom);
        }
        Ok(Now::Answer(match self.wake(myself, &spec.name)? {
            Some(link) => Ok(link),
            None => self.spawn_new(myself, spec)?,
        }))
    }

    /// `WaitForRoom`: answers the first of `specs` that fit now, or queues the request
    /// until they do, and makes room for every family waiting.
    pub(super) fn wait_for_room(
        &mut self,
        myself: &ActorRef<RegistryMsg>,
        specs: Vec<FamilySpec>,
        reply: RpcReplyPort<Vec<FamilyAnswer>>,
    ) -> Result<(), ActorProcessingErr> {
        self.waiting_room.push_back((specs, reply));
        self.admit_waiting(myself)
    }

    /// The answers for the first of `specs` that can be answered now, in order, up to the
    /// first that must wait (for room, or for its family to be back from retiring).
    fn answer_prefix(
        &mut self,
        myself: &ActorRef<RegistryMsg>,
        specs: &[FamilySpec],
    ) -> Result<Vec<FamilyAnswer>, ActorProcessingErr> {
        let mut answers = Vec::new();
        for spec in specs {
            match self.answer_now(myself, spec.clone())? {
                Now::Answer(answer) => answers.push(answer),
                Now::AfterRetiring | Now::AfterRoom => break,
            }
        }
        Ok(answers)
    }

    /// `Adopt`: applies each batch whose family needs no actor yet where the family
    /// hibernates (see [`RegistryMsg::Adopt`]); gives back the others, in order.
    pub(super) fn adopt(&mut self, batches: Vec<(FamilySpec, Batch)>) -> Vec<Option<Batch>> {
        let now = Instant::now();
        batches
            .into_iter()
            .map(|(spec, batch)| self.adopt_one(spec, batch, now))
            .collect()
    }

    /// Applies `batch` to its family, kept hibernating, when the family needs no actor: there
    /// is no room for one, the family may hibernate (no TTL, not a set), it is neither live
    /// nor on its way out, the batch does not make it steady, and a hibernating one holds at
    /// most [`IN_PLACE_SERIES`]. A new family is born hibernating so, unless its names clash
    /// or no series is left for it. Gives the batch back otherwise.
    fn adopt_one(&mut self, spec: FamilySpec, mut batch: Batch, now: Instant) -> Option<Batch> {
        let clocked = batch.updates.clocked;
        let may_hibernate = spec.meta.ttl.is_none() && spec.kind != Kind::Set;
        if self.has_room()
            || !may_hibernate
            || self.families.contains_key(&spec.name)
            || self.retiring.contains_key(&spec.name)
        {
            return Some(batch);
        }
        let mut state = match self.hibernating.take(&spec.name) {
            Some(dormant)
                if dormant.steady_with(&self.ctx, now, clocked)
                    || dormant.series() > IN_PLACE_SERIES =>
            {
                self.hibernating.insert(dormant);
                return Some(batch);
            }
            Some(dormant) => (*dormant).wake(self.ctx.clone()),
            None => {
                if FamilyState::first_batch_steady(clocked)
                    || self.clash(&spec).is_some()
                    || !self.ctx.budget.try_take()
                {
                    return Some(batch);
                }
                for name in spec.reserved_names() {
                    self.claims.insert(name, spec.name.clone());
                }
                FamilyState::with_reserved_series(spec, self.ctx.clone())
            }
        };
        state.apply(&mut batch.updates, now);
        batch.updates.recycle();
        self.ctx.telemetry.hibernating_updates.inc();
        if state.is_empty() {
            // Every update refused (and counted): nothing to keep, nor to show.
            let spec = state.spec();
            drop(state);
            let _ = self
                .ctx
                .aggregator
                .cast(AggregatorMsg::Remove(spec.name.clone()));
            self.release(&spec);
        } else {
            self.hibernating.insert(state.into_dormant());
            self.count_actors();
        }
        None
    }

    /// Makes room for `needed` more actors, beyond the families already on their way out:
    /// the least recently updated live families that may hibernate are drained now.
    pub(super) fn make_room(&mut self, myself: &ActorRef<RegistryMsg>, needed: usize) {
        // More than the limit never fit at once: draining that many is all there is to do.
        let needed = needed.min(self.max_live);
        let on_their_way = self.retiring.len();
        if needed == 0 || on_their_way >= needed {
            return;
        }
        let count = (needed - on_their_way).max(self.max_live / EVICT_SHARE);
        for (family, actor) in self.soonest_idle(count) {
            let request = StopRequest {
                family,
                actor,
                reason: StopReason::Hibernate,
            };
            self.drain(myself, request);
            self.ctx.telemetry.family_evictions.inc();
        }
    }

    /// Nothing was made to hibernate for the families that wait, and none is on its way out.
    /// If some live family may hibernate (it has not started yet, or was just asked to check
    /// whether it is idle), room is tried for again shortly; if none may (all have a TTL or
    /// are sets still counting), nothing would make room: the waits are refused for now.
    fn no_room_made(&mut self, myself: &ActorRef<RegistryMsg>) {
        let may_hibernate = self
            .families
            .values()
            .any(|live| live.spec.meta.ttl.is_none() && live.spec.kind != Kind::Set);
        if !may_hibernate {
            for (specs, reply) in self.waiting_room.drain(..) {
                let _ = reply.send(specs.iter().map(|_| Err(Refusal::NoRoom)).collect());
            }
        } else {
            self.check_room_in(myself, ROOM_RETRY);
        }
    }

    /// Sends the registry a `MakeRoom` after `after`, unless one is on its way: while
    /// families wait for room, or are on their way out (see `reap_stopped`).
    pub(super) fn check_room_in(&mut self, myself: &ActorRef<RegistryMsg>, after: Duration) {
        if !self.room_retry {
            self.room_retry = true;
            myself.send_after(after, || RegistryMsg::MakeRoom);
        }
    }

    /// Up to `count` live families that may hibernate, those whose idle time is up soonest
    /// first: the least recently updated, a family updated in every flush window counting as
    /// updated later than it was (it hibernates only once it misses a window).
    fn soonest_idle(&self, count: usize) -> Vec<(Arc<str>, ractor::ActorId)> {
        let mut candidates: Vec<(u64, &Arc<str>, ractor::ActorId)> = self
            .families
            .iter()
            // Only a running actor: one still starting (a woken family is idle from its
            // start) would not be linked to the registry once drained, and its stop would
            // go unreported.
            .filter(|(_, live)| live.actor.get_status() == ractor::ActorStatus::Running)
            .filter_map(|(name, live)| Some((live.idle.at()?, name, live.actor.get_id())))
            .collect();
        if candidates.len() > count {
            candidates.select_nth_unstable_by_key(count, |c| c.0);
            candidates.truncate(count);
        }
        candidates
            .into_iter()
            .map(|(_, name, id)| (name.clone(), id))
            .collect()
    }

    /// Answers the waits for room, in arrival order, while their first family fits; then
    /// makes room for the families still waiting (called whenever an actor has stopped, and
    /// for each new wait).
    pub(super) fn admit_waiting(
        &mut self,
        myself: &ActorRef<RegistryMsg>,
    ) -> Result<(), ActorProcessingErr> {
        // A wait whose asker gave up (timeout) is let go of: its batches are gone.
        self.waiting_room.retain(|(_, reply)| !reply.is_closed());
        while let Some((specs, reply)) = self.waiting_room.pop_front() {
            let answers = self.answer_prefix(myself, &specs)?;
            if answers.is_empty() {
                self.waiting_room.push_front((specs, reply));
                break;
            }
            let _ = reply.send(answers);
        }
        let waiting: usize = self.waiting_room.iter().map(|(specs, _)| specs.len()).sum();
        self.make_room(myself, waiting);
        if !self.waiting_room.is_empty() && self.retiring.is_empty() {
            self.no_room_made(myself);
        }
        let waiting: usize = self.waiting_room.iter().map(|(specs, _)| specs.len()).sum();
        self.ctx.telemetry.lookups_waiting.set(waiting as i64);
        Ok(())
    }
}
