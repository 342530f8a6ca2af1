//! The aggregator actor: collects the snapshot each family actor publishes and answers every
//! scrape with all of them and the figures over them: each family's updates per second, their
//! total, and which families the per-family self-metrics list (every family up to
//! `limits.max_family_self_metrics`, past it the busiest). Families push; the aggregator never
//! asks them anything, so it waits on no family actor and ingestion never waits on a scrape.
//! What a scrape waits for before it asks (the families the listeners sent batches to since
//! the last scrape publishing, all at once and bounded in time) is the [`crate::barrier`]'s
//! business.

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use std::borrow::Borrow;
use std::cmp::Ordering;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Instant;

use crate::exposition::{FamilySnapshot, Scrape, Snapshots, AHEAD};
use crate::memory::prefetch_line;
use crate::rate::RateAt;

/// Messages the aggregator handles.
#[derive(Debug)]
pub enum AggregatorMsg {
    /// A family's new snapshot, replacing its previous one.
    Publish(Arc<FamilySnapshot>),
    /// A family whose state is gone (it failed and was restarted empty).
    Remove(Arc<str>),
    /// Every snapshot and the figures over them, for a scrape.
    Scrape(RpcReplyPort<Scrape>),
}

/// The actor; its state is [`AggregatorState`], its argument the most families listed in
/// the per-family self-metrics.
#[derive(Debug)]
pub struct AggregatorActor;

/// A snapshot, ordered and found by its family's name (which it holds: a million families
/// cost a pointer each in the set, not a name and a pointer).
#[derive(Debug)]
struct ByName(Arc<FamilySnapshot>);

impl Borrow<str> for ByName {
    fn borrow(&self) -> &str {
        &self.0.name
    }
}

impl PartialEq for ByName {
    fn eq(&self, other: &Self) -> bool {
        self.0.name == other.0.name
    }
}

impl Eq for ByName {}

impl PartialOrd for ByName {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for ByName {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.name.cmp(&other.0.name)
    }
}

/// Snapshots by family name, and the list last handed out while nothing changed.
#[derive(Debug)]
pub struct AggregatorState {
    families: BTreeSet<ByName>,
    view: Option<Snapshots>,
    max_listed: usize,
}

impl AggregatorState {
    /// Every snapshot, each family's rate at `now` and the totals.
    fn scrape(&mut self, now: Instant) -> Scrape {
        let families = self
            .view
            .get_or_insert_with(|| self.families.iter().map(|s| s.0.clone()).collect())
            .clone();
        let at = RateAt::new(now);
        let rates: Vec<f64> = (0..families.len())
            .map(|i| {
                if let Some(far) = families.get(i + AHEAD) {
                    prefetch_line(&far.rate);
                }
                families[i].rate.per_second_at(at)
            })
            .collect();
        Scrape {
            update_rate: rates.iter().sum(),
            listed: listed(&rates, self.max_listed),
            families,
            rates,
        }
    }
}

/// The families the per-family self-metrics list, as indices in name order: every family up
/// to `max`, past it the `max` busiest by rate (the first in name order among equal rates, so
/// that the list holds still while rates do).
fn listed(rates: &[f64], max: usize) -> Vec<usize> {
    if rates.len() <= max {
        return (0..rates.len()).collect();
    }
    let mut by_rate: Vec<(f64, usize)> = rates.iter().copied().zip(0..).collect();
    let busier = |a: &(f64, usize), b: &(f64, usize)| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1));
    if max > 0 {
        by_rate.select_nth_unstable_by(max - 1, busier);
    }
    let mut chosen: Vec<usize> = by_rate[..max].iter().map(|&(_, i)| i).collect();
    chosen.sort_unstable();
    chosen
}

impl Actor for AggregatorActor {
    type Msg = AggregatorMsg;
    type State = AggregatorState;
    type Arguments = usize;

    async fn pre_start(
        &self,
        _myself: ActorRef<AggregatorMsg>,
        max_listed: usize,
    ) -> Result<AggregatorState, ActorProcessingErr> {
        Ok(AggregatorState {
            families: BTreeSet::new(),
            view: None,
            max_listed,
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<AggregatorMsg>,
        message: AggregatorMsg,
        state: &mut AggregatorState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            AggregatorMsg::Publish(snapshot) => {
                state.families.replace(ByName(snapshot));
                state.view = None;
            }
            AggregatorMsg::Remove(name) => {
                state.families.remove(&*name);
                state.view = None;
            }
            AggregatorMsg::Scrape(reply) => {
                // The scraper may have given up (timeout); nothing to do then.
                let _ = reply.send(state.scrape(Instant::now()));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rate::RateWindow;

    #[test]
    fn past_the_limit_only_the_busiest_families_are_listed() {
        let rates = [5.0, 50.0, 5.0, 70.0, 5.0];
        assert_eq!(listed(&rates, 10), [0, 1, 2, 3, 4]);
        // The two busiest, then ties broken by name order.
        assert_eq!(listed(&rates, 2), [1, 3]);
        assert_eq!(listed(&rates, 3), [0, 1, 3]);
        assert!(listed(&rates, 0).is_empty());
    }

    #[test]
    fn a_scrape_sums_the_rates_of_the_families_published() {
        let now = Instant::now();
        let mut state = AggregatorState {
            families: BTreeSet::new(),
            view: None,
            max_listed: 1,
        };
        for (name, updates) in [("b", 20), ("a", 10)] {
            let mut rate = RateWindow::new(now);
            rate.record(now, updates);
            let snapshot = FamilySnapshot {
                name: name.into(),
                help: "".into(),
                family_type: crate::exposition::FamilyType::Counter,
                text: String::new(),
                native: None,
                updates,
                series: 1,
                value_sum: 0.0,
                rate,
            };
            state.families.insert(ByName(Arc::new(snapshot)));
        }
        let later = now + std::time::Duration::from_secs(2);
        let scrape = state.scrape(later);
        let names: Vec<&str> = scrape.families.iter().map(|s| &*s.name).collect();
        assert_eq!(names, ["a", "b"]);
        let want = [
            RateWindow::per_second(&scrape.families[0].rate, later),
            RateWindow::per_second(&scrape.families[1].rate, later),
        ];
        assert_eq!(scrape.rates, want);
        assert!(want[1] > want[0] && want[0] > 0.0);
        assert_eq!(scrape.update_rate, want[0] + want[1]);
        assert_eq!(scrape.listed, [1]);
    }
}
