//! # tallyd
//!
//! A StatsD / DogStatsD to Prometheus daemon, built to run next to an application: lines come
//! in over UDP, TCP or a Unix datagram socket, each metric family is owned by its own actor
//! while it is active, and Prometheus scrapes the result on `/metrics`. This page is the map
//! of the code; docs/OPERATIONS.md is the operator's manual.
//!
//! ## Layout
//! The data path, top to bottom; each module uses only those below it on the path, and the
//! shared pieces after it.
//! - [`statsd`]: the line protocol, pure: one line of bytes in, a parsed line or a rejection
//!   reason out, without allocating.
//! - [`sockets`]: binds and reads the StatsD sockets: a datagram reader per UDP or Unix socket
//!   (many datagrams per system call, pausing between reads), a task per TCP connection; and
//!   the connection slots under a cap that StatsD TCP and HTTP share.
//! - [`ingest`]: each listener task's pipeline: lines → per-family batches of
//!   [`update::Update`]s (names mapped or escaped, tags made labels, samples of a series
//!   combined, a series' observations gathered), held for the flush window; and every line
//!   read, relayed to another StatsD server when asked ([`ingest::relay`]).
//! - [`routing`]: delivers each batch to its family actor, one message per family per flush,
//!   through a per-task cache of actors.
//! - [`actors`]: the [`registry`](actors::registry) that spawns, finds, supervises and
//!   hibernates the [`family`](actors::family) actors, each of which owns one family's series
//!   (a summary's observations in a DDSketch of its own, a histogram's in fixed and native
//!   buckets);
//!   the [`aggregator`](actors::aggregator) that collects their snapshots and computes the
//!   totals and rates each scrape shows.
//! - [`exposition`]: what a family publishes and a scrape reads, written in the Prometheus
//!   text format by one writer ([`exposition::text`]), or in the protobuf format, which
//!   carries native histograms, for a scraper that asks ([`exposition::proto`]).
//! - `http`: `/metrics` (text or protobuf, as the scraper's `Accept` prefers), `/-/healthy`,
//!   `/-/ready`, `/-/reload`; the JSON API under `/api/v1/` (`status`, `families`,
//!   `rejected`, `unmapped`, `mapping`) and the status page at `/` built on it; timeouts, the
//!   connection cap, and [`webconfig`] (exporter-toolkit's `--web.config.file`: TLS with certificates
//!   that rotate, basic auth with a bounded number of password checks).
//! - `remote_write`: the exposition, read as a scrape reads it, pushed to a Prometheus
//!   remote-write receiver at each interval (`--remote-write.url`), with a bounded queue and
//!   a final push at shutdown.
//! - [`daemon`]: starts the actor tree, the listeners and the HTTP server on bound sockets,
//!   and shuts them down in order.
//!
//! Shared by the path: [`config`] (defaults, TOML file, `TALLYD_…` environment,
//! statsd_exporter's flags), [`mapping`] (statsd_exporter's mapping file, and
//! [`mapping::explain`] for `--explain`), [`names`]
//! (Prometheus name escaping), [`update`] (what travels from ingest to a family), [`limits`]
//! (the series budget and the mailbox bound), [`barrier`] (what a scrape waits for),
//! [`telemetry`] (tallyd's own metrics, and in [`telemetry::recent`] what the status page
//! shows that counts cannot: the last refused lines, the unmapped names, the history), [`rate`] (update rates), [`reload`] (the mapping
//! file on SIGHUP or `POST /-/reload`), [`memory`] (giving freed memory back), [`yaml`]
//! (strict YAML with key paths and locations in errors), [`files`] (reading the files tallyd
//! is given, bounded in size).
//!
//! ## The actor tree
//! ```text
//!  listener tasks ──Apply(batch)──▶ FamilyActor "checkout_requests" ─┐
//!   (sockets → ingest → routing)   FamilyActor "db_query"          ├─Publish(snapshot)─▶ AggregatorActor
//!        │ (cache miss)                 ▲ StopRequest ▼              ┘                        ▲
//!        └──Lookup──▶ RegistryActor ─supervises─▶ every FamilyActor       HTTP /metrics ──Scrape─┘
//! ```
//! Before it asks the aggregator, a scrape passes the [`barrier`]: every listener task sends
//! what it holds, and every family it reached since the last scrape publishes (`Sync`). A
//! family with no series left, or idle for `actors.hibernate_after`, asks the registry to stop
//! it (`StopRequest`); a hibernating family is then its snapshot, which the aggregator holds,
//! and a 64-byte record of what else its actor needs to wake, which the registry holds
//! ([`actors::family::Dormant`]), until its next update wakes it. Past
//! `limits.max_live_families`, a family that needs no actor yet (a new one in a burst, or a
//! small hibernating one updated now and then) is born or updated where it hibernates
//! instead: the listener hands its batch to the registry (`Adopt`), which applies it to the
//! record.
//!
//! The modules the benchmarks and fuzzers drive directly are public; the HTTP server is not.
#![warn(missing_docs, unreachable_pub)]

pub mod actors;
pub mod barrier;
pub mod config;
pub mod daemon;
pub mod exposition;
pub mod files;
pub(crate) mod http;
pub mod ingest;
pub mod limits;
pub mod mapping;
pub mod memory;
pub mod names;
pub mod rate;
pub mod reload;
pub(crate) mod remote_write;
pub mod routing;
pub mod sockets;
pub mod statsd;
pub mod telemetry;
pub mod update;
pub mod webconfig;
pub mod yaml;
