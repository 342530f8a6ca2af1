//! The registry actor: spawns the family actor for each family name on first use, answers the
//! listeners' look-ups (they cache the answer), and supervises every family actor: a failed one
//! is restarted empty and the restart counted, while the others keep running.
//!
//! It also keeps every metric name each family's exposition uses (`x`, and `x_sum`, `x_count`,
//! `x_bucket` for observers), so that a new family whose names would collide with another's,
//! such as a counter `x_count` beside a summary `x`, is refused before it exists.

use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use rustc_hash::FxHashMap;
use std::sync::Arc;
use tracing::{debug, warn};

use crate::aggregator::AggregatorMsg;
use crate::family::{FamilyActor, FamilyArgs, FamilyContext, FamilyMsg, FamilySpec};

/// A new family refused because one of its exposed names belongs to another family.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Clash {
    /// The family that owns the name.
    pub owner: Arc<str>,
}

/// The answer to a look-up.
pub type Lookup = Result<ActorRef<FamilyMsg>, Clash>;

/// Messages the registry handles.
#[derive(Debug)]
pub enum RegistryMsg {
    /// The family actor for a name, spawned from the spec if there is none.
    Lookup(FamilySpec, RpcReplyPort<Lookup>),
    /// Make a family fail on purpose; replies whether the family exists.
    InjectFault(Arc<str>, RpcReplyPort<bool>),
}

/// The actor; its state is [`RegistryState`].
#[derive(Debug)]
pub struct RegistryActor;

/// Live family actors by name, names by actor id, and who owns each exposed name.
#[derive(Debug)]
pub struct RegistryState {
    ctx: Arc<FamilyContext>,
    families: FxHashMap<Arc<str>, (ActorRef<FamilyMsg>, FamilySpec)>,
    names: FxHashMap<ActorId, Arc<str>>,
    claims: FxHashMap<String, Arc<str>>,
}

impl RegistryState {
    fn clash(&self, spec: &FamilySpec) -> Option<Clash> {
        spec.exposed_names().iter().find_map(|name| {
            let owner = self.claims.get(name)?;
            Some(Clash {
                owner: owner.clone(),
            })
        })
    }

    async fn spawn(
        &mut self,
        myself: &ActorRef<RegistryMsg>,
        spec: FamilySpec,
    ) -> Result<ActorRef<FamilyMsg>, ActorProcessingErr> {
        let args = FamilyArgs {
            spec: spec.clone(),
            ctx: self.ctx.clone(),
        };
        let (actor, _) = Actor::spawn_linked(None, FamilyActor, args, myself.get_cell()).await?;
        for name in spec.exposed_names() {
            self.claims.insert(name, spec.name.clone());
        }
        self.names.insert(actor.get_id(), spec.name.clone());
        self.families
            .insert(spec.name.clone(), (actor.clone(), spec));
        self.ctx
            .telemetry
            .metric_actors
            .set(self.families.len() as i64);
        Ok(actor)
    }

    /// Forgets a stopped actor; returns its spec.
    fn forget(&mut self, id: ActorId) -> Option<FamilySpec> {
        let name = self.names.remove(&id)?;
        let (_, spec) = self.families.remove(&name)?;
        for exposed in spec.exposed_names() {
            self.claims.remove(&exposed);
        }
        self.ctx
            .telemetry
            .metric_actors
            .set(self.families.len() as i64);
        Some(spec)
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
            claims: FxHashMap::default(),
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<RegistryMsg>,
        message: RegistryMsg,
        state: &mut RegistryState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            RegistryMsg::Lookup(spec, reply) => {
                let answer = match state.families.get(&spec.name) {
                    Some((actor, _)) => Ok(actor.clone()),
                    None => match state.clash(&spec) {
                        Some(clash) => Err(clash),
                        None => Ok(state.spawn(&myself, spec).await?),
                    },
                };
                let _ = reply.send(answer);
            }
            RegistryMsg::InjectFault(name, reply) => {
                let found = state.families.get(&name);
                if let Some((actor, _)) = found {
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
                if let Some(spec) = state.forget(cell.get_id()) {
                    warn!(metric = %spec.name, %error, "family actor failed; restarting it empty");
                    state.ctx.telemetry.family_restarts.inc();
                    let _ = state
                        .ctx
                        .aggregator
                        .cast(AggregatorMsg::Remove(spec.name.clone()));
                    state.spawn(&myself, spec).await?;
                }
            }
            SupervisionEvent::ActorTerminated(cell, _, reason) => {
                if let Some(spec) = state.forget(cell.get_id()) {
                    debug!(metric = %spec.name, ?reason, "family actor stopped");
                }
            }
            _ => {}
        }
        Ok(())
    }
}
