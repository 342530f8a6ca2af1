//! # tallyd
//!
//! A StatsD / DogStatsD to Prometheus daemon, built to run next to an application: lines come
//! in over UDP or TCP, each metric family is owned by its own actor, and Prometheus scrapes the
//! result on `/metrics`.
//!
//! ## Layout
//! - [`config`]: settings: defaults, TOML file, `TALLYD_…` environment, statsd_exporter flags.
//! - [`statsd::parse`]: the line protocol, zero-copy, one line at a time.
//! - [`statsd::listener`]: the UDP and TCP sockets, batching receives.
//! - [`mapping`]: statsd_exporter's YAML mapping file: StatsD names → Prometheus names and labels.
//! - [`ingest`]: received bytes → per-family batches of [`update::Update`]s (names escaped by
//!   [`names`], tags turned into labels).
//! - [`router`]: each batch → its family actor, through a per-listener cache.
//! - [`registry`]: spawns, finds and supervises the family actors.
//! - [`family`]: one actor per family: type, series, values, observations, update rate.
//! - [`limits`]: the series budget shared by the family actors.
//! - [`aggregator`]: the latest snapshot of every family, for scrapes.
//! - [`barrier`]: what a scrape waits for, so that it shows every line read before it.
//! - [`exposition`]: the Prometheus text format, assembled per scrape.
//! - [`http`]: `/metrics`, `/-/healthy`, `/-/ready`; timeouts and the connection cap.
//! - [`webconfig`]: exporter-toolkit's `--web.config.file`: TLS, basic auth, headers, rate limit.
//! - [`yaml`]: strict YAML documents with key paths and locations in their errors.
//! - [`telemetry`]: tallyd's own metrics; [`rate`]: update rates; [`kernel`]: the kernel's
//!   UDP drop counts for tallyd's sockets.
//! - [`reload`]: reloading the mapping file on SIGHUP or `POST /-/reload`.
//! - [`daemon`]: binds, starts, and shuts everything down in order.
//!
//! ## The actor tree
//! ```text
//!  UDP/TCP listener tasks ──Apply(batch)──▶ FamilyActor "checkout_requests" ─┐
//!        │ (cache miss)                     FamilyActor "db_query"          ├─Publish(snapshot)─▶ AggregatorActor
//!        └──Lookup──▶ RegistryActor ─supervises─▶ every FamilyActor          ┘                        ▲
//!                                                                              HTTP /metrics ──Scrape─┘
//! ```
//! Before it asks the aggregator, a scrape passes the [`barrier`]: every listener task sends
//! what it holds, and every family it reached since the last scrape publishes (`Sync`).
#![warn(missing_docs, unreachable_pub)]

pub mod actors;
pub mod barrier;
pub mod config;
pub mod daemon;
pub mod exposition;
pub(crate) mod http;
pub mod ingest;
pub mod limits;
pub mod mapping;
pub mod memory;
pub mod names;
pub mod rate;
pub mod reload;
pub mod routing;
pub mod sockets;
pub mod statsd;
pub mod telemetry;
pub mod update;
pub mod webconfig;
pub mod yaml;
