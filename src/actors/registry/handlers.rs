//! What the registry does with each message and supervision event: look-ups, idle sweeps,
//! fault injection, and the actors that failed or stopped.

use ractor::{ActorCell, ActorProcessingErr, ActorRef, RpcReplyPort};
use std::sync::Arc;
use tracing::{debug, warn};

use super::room::Now;
use super::{
    next_sweep_in, FamilyAnswer, PartialAnswer, PendingLookup, Refusal, RegistryMsg, RegistryState,
};
use crate::actors::aggregator::AggregatorMsg;
use crate::actors::family::{FamilyMsg, FamilySpec, FamilyState, IdleDue};

/// How long a retiring family's actor may be stopped before the registry stops waiting for
/// its termination (see [`RegistryState::reap_stopped`]).
pub(super) const REAP_AFTER: std::time::Duration = std::time::Duration::from_millis(500);

/// What the registry does with each message and supervision event.
impl RegistryState {
    /// `Lookup`: each family's actor, woken or spawned if there is none; a family that is
    /// retiring is answered when it is back (see [`RegistryState::retired`]), one for which
    /// there is no room is refused for now: the asker then hands its batch over to be
    /// applied where it hibernates (`Adopt`), or waits for room (`WaitForRoom`), which is
    /// made then (see `room`).
    pub(super) fn lookup(
        &mut self,
        myself: &ActorRef<RegistryMsg>,
        specs: Vec<FamilySpec>,
        reply: RpcReplyPort<Vec<FamilyAnswer>>,
    ) -> Result<(), ActorProcessingErr> {
        let mut answers = Vec::with_capacity(specs.len());
        let mut retiring = Vec::new();
        for (index, spec) in specs.into_iter().enumerate() {
            match self.answer_now(myself, spec.clone())? {
                Now::Answer(answer) => answers.push(Some(answer)),
                Now::AfterRoom => answers.push(Some(Err(Refusal::NoRoom))),
                Now::AfterRetiring => {
                    answers.push(None);
                    retiring.push((index, spec.name));
                }
            }
        }
        if retiring.is_empty() {
            let _ = reply.send(answers.into_iter().flatten().collect());
            return Ok(());
        }
        let partial = Arc::new(std::sync::Mutex::new(PartialAnswer {
            reply: Some(reply),
            missing: retiring.len(),
            answers,
        }));
        for (index, name) in retiring {
            if let Some(r) = self.retiring.get_mut(&name) {
                r.waiting.push(PendingLookup {
                    reply: partial.clone(),
                    index,
                });
            }
        }
        Ok(())
    }

    /// `IdleSweep`: asks every live family whose idle time has come to check, and schedules
    /// the next sweep (see `next_sweep_in`).
    pub(super) async fn idle_sweep(
        &mut self,
        myself: &ActorRef<RegistryMsg>,
    ) -> Result<(), ActorProcessingErr> {
        self.reap_stopped(myself).await?;
        let now = IdleDue::clock(std::time::Instant::now());
        let (mut asked, mut earliest) = (false, None::<u64>);
        for live in self.families.values() {
            if live.idle.take_due(now) {
                let _ = live.actor.cast(FamilyMsg::IdleCheck);
                asked = true;
            } else if let Some(at) = live.idle.at() {
                earliest = Some(earliest.map_or(at, |e| e.min(at)));
            }
        }
        self.sweep_due = false;
        let earliest = earliest.map(|at| at.saturating_sub(now));
        self.schedule_sweep_in(myself, |after| next_sweep_in(after, asked, earliest));
        Ok(())
    }

    /// Retiring families whose actor has stopped without its termination reaching the
    /// registry (ractor reports no stop of an actor drained before it was linked to its
    /// supervisor, which `room` avoids by draining running actors only): handled as a failure
    /// while draining, its state gone and counted as a restart, so that neither the look-ups
    /// waiting for the family nor the room it holds wait forever.
    pub(super) async fn reap_stopped(
        &mut self,
        myself: &ActorRef<RegistryMsg>,
    ) -> Result<(), ActorProcessingErr> {
        let stopped: Vec<(Arc<str>, ractor::ActorId)> = self
            .retiring
            .iter()
            .filter(|(_, r)| {
                r.actor.get_status() == ractor::ActorStatus::Stopped
                    && r.since.elapsed() >= REAP_AFTER
            })
            .map(|(name, r)| (name.clone(), r.actor.get_id()))
            .collect();
        for (name, id) in stopped {
            warn!(metric = %name, "retiring family actor stopped unseen; restarting it empty");
            self.ctx.telemetry.family_restarts.inc();
            self.names.remove(&id);
            self.retired(myself, name, None).await?;
        }
        Ok(())
    }

    /// `InjectFault`: makes the family's actor fail (woken first if it hibernates).
    pub(super) fn inject_fault(
        &mut self,
        myself: &ActorRef<RegistryMsg>,
        name: &str,
        reply: RpcReplyPort<bool>,
    ) -> Result<(), ActorProcessingErr> {
        self.wake(myself, name)?;
        let found = self.families.get(name);
        if let Some(live) = found {
            warn!(metric = %name, "injecting a fault into the family actor");
            let _ = live.actor.cast(FamilyMsg::Fail);
        }
        let _ = reply.send(found.is_some());
        Ok(())
    }

    /// A family actor failed: one draining has its state gone, as with any failure; any
    /// other is restarted empty, off /metrics until it has series again.
    pub(super) async fn failed(
        &mut self,
        myself: &ActorRef<RegistryMsg>,
        cell: ActorCell,
        error: ActorProcessingErr,
    ) -> Result<(), ActorProcessingErr> {
        let id = cell.get_id();
        if let Some(name) = self.retiring_name(id) {
            warn!(metric = %name, %error, "retiring family actor failed");
            self.ctx.telemetry.family_restarts.inc();
            self.names.remove(&id);
            self.retired(myself, name, None).await?;
        } else if let Some(spec) = self.forget(id) {
            warn!(metric = %spec.name, %error, "family actor failed; restarting it empty");
            let _ = self
                .ctx
                .aggregator
                .cast(AggregatorMsg::Remove(spec.name.clone()));
            self.ctx.telemetry.family_restarts.inc();
            self.spawn(myself, spec, None)?;
        }
        self.admit_waiting(myself)
    }

    /// A family actor stopped, with its state: one draining has retired or hibernated.
    pub(super) async fn terminated(
        &mut self,
        myself: &ActorRef<RegistryMsg>,
        cell: ActorCell,
        state: Option<Box<FamilyState>>,
    ) -> Result<(), ActorProcessingErr> {
        let id = cell.get_id();
        if let Some(name) = self.retiring_name(id) {
            self.names.remove(&id);
            self.retired(myself, name, state).await?;
        } else if let Some(spec) = self.forget(id) {
            debug!(metric = %spec.name, "family actor stopped");
        }
        self.admit_waiting(myself)
    }
}
