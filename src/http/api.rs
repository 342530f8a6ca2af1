//! The JSON API under `/api/v1/` (off with `--no-web.enable-api`), which the status page at `/`
//! ([`super::page`]) is built on:
//! - `status`: version, uptime, listeners, totals and rates, rejections by reason, limits and
//!   their use, memory, the mapping file's state, the push's counts, and the history behind
//!   the page's chart;
//! - `families?sort=rate|series&limit=N`: the busiest or largest families;
//! - `rejected?limit=N`: the last refused lines, newest first;
//! - `unmapped?limit=N`: the names no mapping rule matched, most lines first;
//! - `mapping?name=NAME&type=TYPE`: how a name maps, as `--explain` says it.
//!
//! What they read is kept in bounded memory by [`crate::telemetry::recent`]; `families` asks
//! the aggregator for its last snapshots (without waiting for a flush) and the registry which
//! of those hibernate.

use hyper::StatusCode;
use ractor::rpc::CallResult;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::{HttpContext, Reply, SCRAPE_TIMEOUT};
use crate::actors::aggregator::AggregatorMsg;
use crate::actors::registry::RegistryMsg;
use crate::exposition::Scrape;
use crate::ingest::IngestConfig;
use crate::limits::{QueueBound, SeriesBudget};
use crate::mapping::explain::explain;
use crate::telemetry::recent::{self, Point, HISTORY_STEP, REJECTED_KEPT, UNMAPPED_KEPT};
use crate::telemetry::{DropStage, ListenerKind};

/// Seconds of history the rates of `status` are taken over.
const RATE_SPAN: Duration = Duration::from_secs(10);
/// Families `families` lists when no limit is given.
const DEFAULT_FAMILIES: usize = 100;
/// Names `unmapped` lists when no limit is given.
const DEFAULT_UNMAPPED: usize = 100;

/// What the API reads beyond the telemetry.
#[derive(Debug)]
pub(crate) struct Api {
    /// The mapping rules and what applies where none does.
    pub(crate) ingest: Arc<IngestConfig>,
    /// The series budget, for its use.
    pub(crate) budget: Arc<SeriesBudget>,
    /// The mailbox bound, for its use.
    pub(crate) queue: Arc<QueueBound>,
    /// The limits in force, by setting name.
    pub(crate) limits: ApiLimits,
    /// The mapping file named in the settings (empty: none).
    pub(crate) mapping_file: String,
    /// Each StatsD listener's address (`off` when off), and the HTTP one.
    pub(crate) addresses: [String; 4],
    /// The push, when `--remote-write.url` is set.
    pub(crate) remote_write: Option<PushStatus>,
}

/// What `status` says of the push.
#[derive(Debug)]
pub(crate) struct PushStatus {
    /// Where to, without credentials.
    pub(crate) url: String,
    /// Time between pushes.
    pub(crate) interval: Duration,
    /// Its counts.
    pub(crate) metrics: crate::telemetry::RemoteWriteMetrics,
}

/// The limits `status` shows with their use.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ApiLimits {
    /// `limits.max_series`.
    pub(crate) max_series: usize,
    /// `limits.max_live_families`.
    pub(crate) max_live_families: usize,
    /// `limits.max_series_per_family`.
    pub(crate) max_series_per_family: usize,
    /// `limits.max_queued_updates`.
    pub(crate) max_queued_updates: usize,
    /// `statsd.tcp_max_connections`.
    pub(crate) tcp_max_connections: usize,
}

/// Routes a `GET` under `/api/v1/`; `None` for a path that is not the API's.
pub(crate) async fn route(
    ctx: &HttpContext,
    api: &Api,
    path: &str,
    query: Option<&str>,
) -> Option<Reply> {
    let query = Query(query.unwrap_or_default());
    let reply = match path {
        "/api/v1/status" => {
            let scrape = snapshots(ctx).await;
            json(StatusCode::OK, &status(ctx, api, scrape.as_ref()))
        }
        "/api/v1/families" => answer(families(ctx, &query).await),
        "/api/v1/rejected" => answer(rejected(ctx, &query)),
        "/api/v1/unmapped" => answer(unmapped(ctx, &query)),
        "/api/v1/mapping" => answer(mapping(ctx, &api.ingest, &query)),
        _ => return None,
    };
    Some(reply)
}

/// The paths [`route`] serves.
pub(crate) const PATHS: [&str; 5] = [
    "/api/v1/status",
    "/api/v1/families",
    "/api/v1/rejected",
    "/api/v1/unmapped",
    "/api/v1/mapping",
];

/// A request's query string.
pub(crate) struct Query<'a>(pub(crate) &'a str);

impl Query<'_> {
    /// Every value of `key`, decoded; the last one wins.
    pub(crate) fn get(&self, key: &str) -> Option<String> {
        form_urlencoded::parse(self.0.as_bytes())
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.into_owned())
            .last()
    }

    /// `limit` as a number (`default` when absent), at most `most`.
    fn limit(&self, default: usize, most: usize) -> Result<usize, ApiError> {
        match self.get("limit") {
            None => Ok(default.min(most)),
            Some(n) => n
                .parse::<usize>()
                .map(|n| n.min(most))
                .map_err(|_| ApiError::bad("limit is a number")),
        }
    }
}

/// Why the API could not answer, and with what status.
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    fn bad(message: &str) -> Self {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
        }
    }

    pub(crate) fn unavailable(what: &str) -> Self {
        ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            message: format!("{what} unavailable"),
        }
    }

    /// The message.
    pub(crate) fn message(&self) -> &str {
        &self.message
    }
}

fn answer(result: Result<Value, ApiError>) -> Reply {
    match result {
        Ok(value) => json(StatusCode::OK, &value),
        Err(e) => json(e.status, &json!({ "error": e.message })),
    }
}

/// A time as RFC 3339, in UTC, to the millisecond.
pub(crate) fn rfc3339(at: SystemTime) -> String {
    humantime::format_rfc3339_millis(at).to_string()
}

/// The families' last snapshots and rates, as the aggregator holds them (no rendering, no
/// scrape barrier); `None` when it does not answer.
pub(crate) async fn snapshots(ctx: &HttpContext) -> Option<Scrape> {
    match ctx
        .aggregator
        .call(AggregatorMsg::Scrape, Some(SCRAPE_TIMEOUT))
        .await
    {
        Ok(CallResult::Success(scrape)) => Some(scrape),
        _ => None,
    }
}

/// `status`: see the module; `scrape` gives the largest family's series.
pub(crate) fn status(ctx: &HttpContext, api: &Api, scrape: Option<&Scrape>) -> Value {
    let t = &ctx.telemetry;
    let started = t.recent.started();
    let uptime = SystemTime::now()
        .duration_since(started)
        .unwrap_or_default();
    let now = recent::point(t);
    let history = t.recent.history();
    let per_second = |of: fn(&Point) -> u64| rate(&history, &now, of);
    let listeners: Vec<Value> = ListenerKind::ALL
        .iter()
        .zip(&api.addresses)
        .filter(|(_, address)| *address != "off")
        .map(|(kind, address)| {
            json!({
                "listener": kind.as_str(),
                "address": address,
                "packets": t.packets_of(*kind),
            })
        })
        .collect();
    let by_reason: serde_json::Map<String, Value> = t
        .rejected_by_reason()
        .map(|(reason, n)| (reason.as_str().to_owned(), n.into()))
        .collect();
    let dropped: serde_json::Map<String, Value> = DropStage::ALL
        .iter()
        .map(|stage| (stage.as_str().to_owned(), t.dropped_at(*stage).into()))
        .collect();
    let limit = |name: &str, limit: usize, used: Option<usize>| json!({ "name": name, "limit": limit, "used": used });
    // The largest family's series (null without the snapshots).
    let largest = scrape.map(|s| s.families.iter().map(|f| f.series).max().unwrap_or(0));
    let l = api.limits;
    let limits = vec![
        limit("limits.max_series", l.max_series, Some(api.budget.used())),
        limit(
            "limits.max_series_per_family",
            l.max_series_per_family,
            largest,
        ),
        limit(
            "limits.max_live_families",
            l.max_live_families,
            Some(t.metric_actors.get().max(0) as usize),
        ),
        limit(
            "limits.max_queued_updates",
            l.max_queued_updates,
            Some(api.queue.queued()),
        ),
        limit(
            "statsd.tcp_max_connections",
            l.tcp_max_connections,
            Some(t.tcp_connections_open.get().max(0) as usize),
        ),
    ];
    let mapping = t.recent.mapping();
    // The rates between points of the history, and from the last to now.
    let mut timeline = history.clone();
    timeline.push(now);
    let points: Vec<Value> = timeline
        .windows(2)
        // A span the clock stepped back over (or none) has no rate.
        .filter(|pair| pair[1].at > pair[0].at)
        .map(|pair| {
            let span = pair[1].at - pair[0].at;
            json!({
                "at": pair[1].at,
                "lines_per_second": (pair[1].lines.saturating_sub(pair[0].lines)) as f64 / span,
                "rejected_per_second": (pair[1].rejected.saturating_sub(pair[0].rejected)) as f64 / span,
            })
        })
        .collect();
    json!({
        "version": env!("CARGO_PKG_VERSION"),
        "started": rfc3339(started),
        "uptime_seconds": uptime.as_secs_f64(),
        "http_address": api.addresses[3],
        "listeners": listeners,
        "lines": { "total": now.lines, "per_second": per_second(|p| p.lines) },
        "samples": { "total": now.samples, "per_second": per_second(|p| p.samples) },
        "rejected": {
            "total": now.rejected,
            "per_second": per_second(|p| p.rejected),
            "by_reason": by_reason,
        },
        "unmapped_samples": t.mapping_unmapped.get(),
        "kernel_drops": t.udp_drops.drops(),
        "updates_dropped": dropped,
        "families": {
            "live": t.metric_actors.get(),
            "hibernating": t.families_hibernating.get(),
        },
        "limits": limits,
        "memory": {
            "resident_bytes": crate::telemetry::resident_bytes(),
            "peak_bytes": crate::telemetry::peak_resident_bytes(),
        },
        "mapping": {
            "file": (!api.mapping_file.is_empty()).then_some(&api.mapping_file),
            "rules": api.ingest.mapper.load().len(),
            "loaded_at": mapping.loaded.map(rfc3339),
            "failed_at": mapping.failed.as_ref().map(|(at, _)| rfc3339(*at)),
            "error": mapping.failed.map(|(_, error)| error),
        },
        "history": {
            "step_seconds": HISTORY_STEP.as_secs(),
            "points": points,
        },
        "remote_write": api.remote_write.as_ref().map(|push| {
            let m = &push.metrics;
            let last = m.last_success.get();
            json!({
                "url": push.url,
                "interval_seconds": push.interval.as_secs_f64(),
                "samples": {
                    "sent": m.sent.get(),
                    "failed": m.failed.get(),
                    "dropped": m.dropped.get(),
                },
                "queue_bytes": m.queue_bytes.get(),
                "queue_bytes_limit": m.queue_bytes_limit.get(),
                "last_success": (last > 0).then(|| {
                    rfc3339(SystemTime::UNIX_EPOCH + Duration::from_secs(last as u64))
                }),
            })
        }),
    })
}

/// Per second, from the newest point of `history` at least [`RATE_SPAN`] before `now` (or the
/// oldest there is) to `now`; 0 without history.
fn rate(history: &[Point], now: &Point, of: fn(&Point) -> u64) -> f64 {
    let span = RATE_SPAN.as_secs_f64();
    let Some(from) = history
        .iter()
        .rev()
        .find(|p| now.at - p.at >= span)
        .or_else(|| history.first())
    else {
        return 0.0;
    };
    let seconds = now.at - from.at;
    match seconds > 0.0 {
        true => of(now).saturating_sub(of(from)) as f64 / seconds,
        false => 0.0,
    }
}

/// `families?sort=rate|series&limit=N`: the families, busiest (by update rate, the default) or
/// largest (by series) first, at most `N` (default 100): name, type, series, updates,
/// updates per second over the last 10 s, and `live` or `hibernating`.
pub(crate) async fn families(ctx: &HttpContext, query: &Query<'_>) -> Result<Value, ApiError> {
    let by_series = match query.get("sort").as_deref() {
        None | Some("rate") => false,
        Some("series") => true,
        Some(_) => return Err(ApiError::bad("sort is rate or series")),
    };
    let limit = query.limit(DEFAULT_FAMILIES, usize::MAX)?;
    let scrape = snapshots(ctx)
        .await
        .ok_or_else(|| ApiError::unavailable("aggregator"))?;
    ranked(ctx, &scrape, by_series, limit).await
}

/// The families of `scrape`, busiest or largest (`by_series`) first, at most `limit`, as
/// `families` lists them.
pub(crate) async fn ranked(
    ctx: &HttpContext,
    scrape: &Scrape,
    by_series: bool,
    limit: usize,
) -> Result<Value, ApiError> {
    let mut order: Vec<usize> = (0..scrape.families.len()).collect();
    let key = |i: &usize| match by_series {
        true => scrape.families[*i].series as f64,
        false => scrape.rates[*i],
    };
    order.sort_by(|a, b| key(b).total_cmp(&key(a)).then(a.cmp(b)));
    order.truncate(limit);
    let names: Vec<Arc<str>> = order
        .iter()
        .map(|&i| scrape.families[i].name.clone())
        .collect();
    let hibernating = ctx
        .registry
        .call(
            |reply| RegistryMsg::Hibernating(names, reply),
            Some(SCRAPE_TIMEOUT),
        )
        .await;
    let Ok(CallResult::Success(hibernating)) = hibernating else {
        return Err(ApiError::unavailable("registry"));
    };
    let list = order
        .iter()
        .zip(hibernating)
        .map(|(&i, asleep)| {
            let family = &scrape.families[i];
            json!({
                "name": &*family.name,
                "type": family.family_type.as_str(),
                "series": family.series,
                "updates": family.updates,
                "rate": scrape.rates[i],
                "state": if asleep { "hibernating" } else { "live" },
            })
        })
        .collect();
    Ok(Value::Array(list))
}

/// `rejected?limit=N`: the refused lines kept, newest first, at most `N` (default and most
/// 1,000): time, listener, reason, the line (its first 512 bytes, invalid UTF-8 replaced),
/// and its whole length.
pub(crate) fn rejected(ctx: &HttpContext, query: &Query<'_>) -> Result<Value, ApiError> {
    let limit = query.limit(REJECTED_KEPT, REJECTED_KEPT)?;
    let list = ctx
        .telemetry
        .recent
        .rejected(limit)
        .into_iter()
        .map(|r| {
            json!({
                "time": rfc3339(r.at),
                "listener": r.listener.as_str(),
                "reason": r.reason.as_str(),
                "line": String::from_utf8_lossy(&r.line),
                "length": r.length,
            })
        })
        .collect();
    Ok(Value::Array(list))
}

/// `unmapped?limit=N`: the StatsD names no mapping rule matched since the mapping file was
/// last loaded, most lines first, at most `N` (default 100, most 1,000): each with its lines,
/// which may be over by at most `error` (see [`crate::telemetry::recent`]).
pub(crate) fn unmapped(ctx: &HttpContext, query: &Query<'_>) -> Result<Value, ApiError> {
    let limit = query.limit(DEFAULT_UNMAPPED, UNMAPPED_KEPT)?;
    let list = ctx
        .telemetry
        .recent
        .top_unmapped(limit)
        .into_iter()
        .map(|(name, lines, error)| json!({ "name": &*name, "lines": lines, "error": error }))
        .collect();
    Ok(Value::Array(list))
}

/// `mapping?name=NAME&type=TYPE`: how the mapping file maps a name, as `--explain` says it
/// (see [`crate::mapping::explain`]); 400 for a missing name or an unknown type.
pub(crate) fn mapping(
    ctx: &HttpContext,
    ingest: &IngestConfig,
    query: &Query<'_>,
) -> Result<Value, ApiError> {
    let name = query.get("name").unwrap_or_default();
    let statsd_type = query.get("type").unwrap_or_else(|| "c".into());
    if name.is_empty() || name.contains(':') {
        return Err(ApiError::bad(
            "give ?name=NAME (without `:`) and, if not a counter, &type=c|g|ms|h|d|s",
        ));
    }
    let asked = format!("{name}:{statsd_type}");
    let mapper = ingest.mapper.load();
    let explained = explain(
        &mapper,
        ingest.fallback(),
        |n| ctx.telemetry.is_reserved(n),
        &asked,
    )
    .map_err(|e| ApiError::bad(&e))?;
    serde_json::to_value(&explained).map_err(|e| ApiError {
        status: StatusCode::INTERNAL_SERVER_ERROR,
        message: e.to_string(),
    })
}

/// A JSON reply.
pub(crate) fn json(status: StatusCode, body: &Value) -> Reply {
    let mut response = hyper::Response::new(http_body_util::Full::new(bytes::Bytes::from(
        body.to_string(),
    )));
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    response
}
