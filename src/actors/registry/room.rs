//! Room for live family actors: at most `limits.max_live_families` at once, retiring ones
//! included, whatever arrives and however fast. A look-up that needs one more actor when
//! there is no room has the least recently updated live families hibernate at once (those
//! whose idle check is due soonest: they may hibernate, having no TTL and no set still
//! counting), and waits until one of them has stopped. So a burst of new names costs a
//! bounded number of actors at any moment, each new family taking the place of an older
//! one, rather than an actor per name until they all go idle. A look-up of many families
//! answers those without room [`Refusal::NoRoom`](super::Refusal::NoRoom) at once; the router
//! then waits for each in turn (`WaitForRoom`), so that each gets its batch as soon as its
//! actor exists and can in turn make room.

use ractor::{ActorProcessingErr, ActorRef};
use std::sync::Arc;

use super::{FamilyAnswer, PendingLookup, RegistryMsg, RegistryState};
use crate::actors::family::{FamilySpec, StopReason, StopRequest};

/// Live families hibernated at least at once when room is made, as a share of the limit: one
/// walk over the live families pays for many look-ups.
const EVICT_SHARE: usize = 16;

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
            return Ok(Now::Answer(Ok(live.actor.clone())));
        }
        if !self.has_room() {
            return Ok(Now::AfterRoom);
        }
        Ok(Now::Answer(match self.wake(myself, &spec.name)? {
            Some(actor) => Ok(actor),
            None => self.spawn_new(myself, spec)?,
        }))
    }

    /// Queues a look-up of `spec` until there is room, and makes room for every look-up
    /// waiting.
    pub(super) fn wait_for_room(&mut self, spec: FamilySpec, pending: PendingLookup) {
        self.waiting_room.push_back((spec, pending));
        self.make_room(self.waiting_room.len());
        self.ctx
            .telemetry
            .lookups_waiting
            .set(self.waiting_room.len() as i64);
    }

    /// Makes room for `needed` more actors, beyond the families already on their way out:
    /// the least recently updated live families that may hibernate are drained now.
    pub(super) fn make_room(&mut self, needed: usize) {
        let on_their_way = self.retiring.len();
        if needed == 0 || on_their_way >= needed {
            return;
        }
        let count = (needed - on_their_way).max(self.max_live / EVICT_SHARE);
        for (family, actor) in self.least_recently_updated(count) {
            let request = StopRequest {
                family,
                actor,
                reason: StopReason::Hibernate,
            };
            self.drain(request);
            self.ctx.telemetry.family_evictions.inc();
        }
    }

    /// Up to `count` live families that may hibernate, the least recently updated first.
    fn least_recently_updated(&self, count: usize) -> Vec<(Arc<str>, ractor::ActorId)> {
        let mut candidates: Vec<(u64, &Arc<str>, ractor::ActorId)> = self
            .families
            .iter()
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

    /// Answers the look-ups waiting for room, in arrival order, while there is room (called
    /// whenever an actor has stopped).
    pub(super) fn admit_waiting(
        &mut self,
        myself: &ActorRef<RegistryMsg>,
    ) -> Result<(), ActorProcessingErr> {
        while let Some((spec, pending)) = self.waiting_room.pop_front() {
            let name = spec.name.clone();
            match self.answer_now(myself, spec.clone())? {
                Now::Answer(answer) => pending.answer(answer),
                Now::AfterRetiring => {
                    if let Some(retiring) = self.retiring.get_mut(&name) {
                        retiring.waiting.push(pending);
                    }
                }
                Now::AfterRoom => {
                    self.waiting_room.push_front((spec, pending));
                    break;
                }
            }
        }
        self.ctx
            .telemetry
            .lookups_waiting
            .set(self.waiting_room.len() as i64);
        Ok(())
    }
}
