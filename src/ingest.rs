//! From received bytes to per-family batches, and on to the family actors: each listener
//! task's `Pipeline` holds a [`Batcher`], which parses lines, resolves each name through the
//! mapping rules (or escapes it when none applies), turns tags into labels and groups the
//! updates by family, so that each family actor gets one message per flush, never one per
//! line; and a [`Router`](crate::routing::Router), which delivers them when the flush window
//! closes. Between flushes samples of one series are combined where that is exact (counter
//! increments summed, gauge sets and shifts folded), so a busy series costs its family one
//! update per flush.
//!
//! - `batcher`: lines → updates, with the line cache (`lines`) and the separators of a
//!   datagram found at once (`marks`);
//! - `resolve`: a name and its tags → a family and a series;
//! - `pending`: the updates held, by series, until the flush;
//! - `unmapped`: the lines of each name no mapping rule matched, for `/api/v1/unmapped`;
//! - `pipeline`: the flush window, the router, the scrapes that wait;
//! - [`relay`]: every line read, sent on to another StatsD server (`--statsd.relay.address`).

mod batcher;
mod lines;
mod marks;
mod pending;
mod pipeline;
pub mod relay;
mod resolve;
pub(crate) mod unmapped;

use arc_swap::ArcSwap;
use std::sync::Arc;
use std::time::Duration;

use crate::config::{CacheType, Settings};
use crate::mapping::Mapper;
use crate::statsd::parse::TagStyles;
use crate::update::{FamilyMeta, DEFAULT_HELP};
pub use batcher::Batcher;
pub(crate) use pipeline::{Due, Pipeline, PipelineContext};

/// How lines become updates: shared by every listener.
#[derive(Debug)]
pub struct IngestConfig {
    /// Tag styles to parse.
    pub styles: TagStyles,
    /// Help, observer settings and TTL of unmapped families when there is no mapping file.
    pub default_meta: Arc<FamilyMeta>,
    /// The TTL of series whose mapping sets none; `None`: forever.
    pub default_ttl: Option<Duration>,
    /// Most tags on one line.
    pub max_tags: usize,
    /// Most bytes in a label name or value.
    pub max_label_bytes: usize,
    /// A mapping file is configured: unmapped names take its defaults and are counted.
    pub mapping_file: bool,
    /// Each listener's mapping cache: how many names, and which one a full cache forgets.
    pub cache: (usize, CacheType),
    /// The mapping rules; a reload swaps them whole, and each batcher picks the new ones up at
    /// its next receive.
    pub mapper: ArcSwap<Mapper>,
    /// Where every line read is relayed, if anywhere.
    pub relay: Option<Arc<relay::RelayTarget>>,
}

impl IngestConfig {
    /// Lines parsed and limited as `settings` say, names mapped with `mapper`.
    pub fn new(settings: &Settings, mapper: Mapper) -> Self {
        let default_ttl = Some(settings.statsd.default_ttl).filter(|ttl| !ttl.is_zero());
        IngestConfig {
            styles: settings.statsd.tag_styles(),
            default_meta: Arc::new(FamilyMeta {
                help: DEFAULT_HELP.into(),
                observer: settings.observer.clone(),
                ttl: default_ttl,
            }),
            default_ttl,
            max_tags: settings.limits.max_tags_per_line,
            max_label_bytes: settings.limits.max_label_bytes,
            mapping_file: !settings.statsd.mapping_config.is_empty(),
            cache: (settings.statsd.cache_size, settings.statsd.cache_type),
            mapper: ArcSwap::from_pointee(mapper),
            relay: None,
        }
    }

    /// What applies where the mapping file says nothing, as `--explain` and
    /// `/api/v1/mapping` need it.
    pub fn fallback(&self) -> crate::mapping::explain::Fallback<'_> {
        crate::mapping::explain::Fallback {
            mapping_file: self.mapping_file,
            observer: &self.default_meta.observer,
            default_ttl: self.default_ttl,
        }
    }
}
