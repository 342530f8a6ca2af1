//! The aggregator actor: keeps the latest snapshot each family actor published, and hands a
//! scrape the whole set in one reply. Families push; the aggregator never asks them anything,
//! so it waits on no family actor and ingestion never waits on a scrape. What a scrape waits
//! for before it asks (the families the listeners sent batches to since the last scrape
//! publishing, all at once and bounded in time) is the [`crate::barrier`]'s business.

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use std::collections::BTreeMap;
use std::sync::Arc;

use crate::rate::RateWindow;

/// What a family publishes: its exposition text and its own statistics.
#[derive(Clone, Debug)]
pub struct FamilySnapshot {
    /// The family name.
    pub name: Arc<str>,
    /// The HELP text, escaped as the text format needs (see [`crate::exposition::escaped_help`]).
    pub help: Arc<str>,
    /// The TYPE: `counter`, `gauge`, `summary` or `histogram`.
    pub type_name: &'static str,
    /// Every series in the Prometheus text format, without the HELP and TYPE lines: the
    /// exposition writes those from `help` and `type_name`, so a hibernating family's snapshot
    /// holds no copy of them.
    pub text: String,
    /// Updates applied since the family actor started.
    pub updates: u64,
    /// Number of series.
    pub series: usize,
    /// Sum of the series' values (counters, gauges) or observation sums (observers).
    pub value_sum: f64,
    /// Update counts, to be read as a rate at scrape time.
    pub rate: RateWindow,
}

/// Every family's latest snapshot, sorted by family name.
pub type ScrapeView = Arc<[Arc<FamilySnapshot>]>;

/// Messages the aggregator handles.
#[derive(Debug)]
pub enum AggregatorMsg {
    /// A family's new snapshot, replacing its previous one.
    Publish(Arc<FamilySnapshot>),
    /// A family whose state is gone (it failed and was restarted empty).
    Remove(Arc<str>),
    /// Every snapshot, for a scrape.
    Scrape(RpcReplyPort<ScrapeView>),
}

/// The actor; its state is [`AggregatorState`].
#[derive(Debug)]
pub struct AggregatorActor;

/// Snapshots by family name, and the view last handed out while nothing changed.
#[derive(Debug, Default)]
pub struct AggregatorState {
    families: BTreeMap<Arc<str>, Arc<FamilySnapshot>>,
    view: Option<ScrapeView>,
}

impl Actor for AggregatorActor {
    type Msg = AggregatorMsg;
    type State = AggregatorState;
    type Arguments = ();

    async fn pre_start(
        &self,
        _myself: ActorRef<AggregatorMsg>,
        _args: (),
    ) -> Result<AggregatorState, ActorProcessingErr> {
        Ok(AggregatorState::default())
    }

    async fn handle(
        &self,
        _myself: ActorRef<AggregatorMsg>,
        message: AggregatorMsg,
        state: &mut AggregatorState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            AggregatorMsg::Publish(snapshot) => {
                state.families.insert(snapshot.name.clone(), snapshot);
                state.view = None;
            }
            AggregatorMsg::Remove(name) => {
                state.families.remove(&name);
                state.view = None;
            }
            AggregatorMsg::Scrape(reply) => {
                let view = state
                    .view
                    .get_or_insert_with(|| state.families.values().cloned().collect())
                    .clone();
                // The scraper may have given up (timeout); nothing to do then.
                let _ = reply.send(view);
            }
        }
        Ok(())
    }
}
