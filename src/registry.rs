//! The registry actor: spawns the family actor for each family name on first use, answers the
//! listeners' look-ups (they cache the answer), and supervises every family actor: a failed one
//! is restarted empty and the restart counted, while the others keep running.

use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use rustc_hash::FxHashMap;
use std::sync::Arc;
use tracing::{debug, warn};

use crate::aggregator::AggregatorMsg;
use crate::family::{FamilyActor, FamilyArgs, FamilyContext, FamilyMsg};

/// Messages the registry handles.
#[derive(Debug)]
pub enum RegistryMsg {
    /// The family actor for a name, spawned if there is none.
    Lookup(Arc<str>, RpcReplyPort<ActorRef<FamilyMsg>>),
    /// Make a family fail on purpose; replies whether the family exists.
    InjectFault(Arc<str>, RpcReplyPort<bool>),
}

/// The actor; its state is [`RegistryState`].
#[derive(Debug)]
pub struct RegistryActor;

/// Live family actors by name, and names by actor id for supervision events.
#[derive(Debug)]
pub struct RegistryState {
    ctx: Arc<FamilyContext>,
    families: FxHashMap<Arc<str>, ActorRef<FamilyMsg>>,
    names: FxHashMap<ActorId, Arc<str>>,
}

impl RegistryState {
    async fn spawn(
        &mut self,
        myself: &ActorRef<RegistryMsg>,
        name: Arc<str>,
    ) -> Result<ActorRef<FamilyMsg>, ActorProcessingErr> {
        let args = FamilyArgs {
            name: name.clone(),
            ctx: self.ctx.clone(),
        };
        let (actor, _) = Actor::spawn_linked(None, FamilyActor, args, myself.get_cell()).await?;
        self.names.insert(actor.get_id(), name.clone());
        self.families.insert(name, actor.clone());
        self.ctx
            .telemetry
            .metric_actors
            .set(self.families.len() as i64);
        Ok(actor)
    }

    fn forget(&mut self, id: ActorId) -> Option<Arc<str>> {
        let name = self.names.remove(&id)?;
        self.families.remove(&name);
        self.ctx
            .telemetry
            .metric_actors
            .set(self.families.len() as i64);
        Some(name)
    }
}

impl Actor for RegistryActor {
    type Msg = RegistryMsg;
    type State = RegistryState;
    type Arguments = Arc<FamilyContext>;

    async fn pre_start(
        &self,
        _myself: ActorRef<RegistryMsg>,
        ctx: Arc<FamilyContext>,
    ) -> Result<RegistryState, ActorProcessingErr> {
        Ok(RegistryState {
            ctx,
            families: FxHashMap::default(),
            names: FxHashMap::default(),
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<RegistryMsg>,
        message: RegistryMsg,
        state: &mut RegistryState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            RegistryMsg::Lookup(name, reply) => {
                let actor = match state.families.get(&name) {
                    Some(actor) => actor.clone(),
                    None => state.spawn(&myself, name).await?,
                };
                let _ = reply.send(actor);
            }
            RegistryMsg::InjectFault(name, reply) => {
                let found = state.families.get(&name);
                if let Some(actor) = found {
                    warn!(metric = %name, "injecting a fault into the family actor");
                    let _ = actor.cast(FamilyMsg::Fail);
                }
                let _ = reply.send(found.is_some());
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
            SupervisionEvent::ActorFailed(cell, error) => {
                if let Some(name) = state.forget(cell.get_id()) {
                    warn!(metric = %name, %error, "family actor failed; restarting it empty");
                    state.ctx.telemetry.family_restarts.inc();
                    let _ = state
                        .ctx
                        .aggregator
                        .cast(AggregatorMsg::Remove(name.clone()));
                    state.spawn(&myself, name).await?;
                }
            }
            SupervisionEvent::ActorTerminated(cell, _, reason) => {
                if let Some(name) = state.forget(cell.get_id()) {
                    debug!(metric = %name, ?reason, "family actor stopped");
                }
            }
            _ => {}
        }
        Ok(())
    }
}
