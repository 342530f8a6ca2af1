//! Push: every series on `/metrics`, sent at each `remote_write.interval` to a receiver of
//! Prometheus remote write 1.0 (Prometheus with `--web.enable-remote-write-receiver`, Mimir,
//! Thanos, VictoriaMetrics, Grafana Cloud), for jobs that end before a scrape and hosts with no
//! Prometheus.
//!
//! Each push reads the exposition as a scrape does (through the scrape barrier, in the
//! protobuf form, shared with scrapes that ask at once), one family at a time, and turns it
//! into series of one sample each, as Prometheus would store that scrape: a summary into its
//! quantiles, `_sum` and `_count`, a histogram into its classic `_bucket`s (with `+Inf`),
//! `_sum` and `_count`. The series go in requests of at most `max_samples_per_send` samples,
//! protobuf compressed with snappy ([`prompb`]), into a queue of at most `queue_bytes`: past
//! it, the oldest request waiting is dropped, and its samples counted. One sender
//! ([`client`]) sends them in order, again after a network error, a timeout, a 5xx or a 429
//! (waiting 100 ms, doubling up to 5 s), never again after another 4xx. At shutdown, once the
//! families have published their last values, a final push is made and the queue given
//! `remote_write.timeout` to empty.

mod client;
mod prompb;

use bytes::Bytes;
use prost::Message;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tokio::sync::Notify;
use tracing::{info, warn};

use crate::config::RemoteWriteSettings;
use crate::exposition::proto::{MetricFamily, MetricType};
use crate::exposition::text;
use crate::telemetry::{LogLimiter, RemoteWriteMetrics};
use client::{Client, Outcome};
use prompb::{Label, MetricMetadata, Sample, TimeSeries, WriteRequest};

/// First wait before a request is sent again; it doubles at each failure, up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(100);
/// Longest wait before a request is sent again.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// At most one log line a second about failed pushes.
static PUSH_LOG: LogLimiter = LogLimiter::new(1);

/// Reads the exposition for a push: the protobuf form, as a scrape would read it now.
pub(crate) trait Exposition: Send + Sync + 'static {
    /// Delimited `MetricFamily` messages, or `None` when the exposition cannot be read.
    fn read(&self) -> impl std::future::Future<Output = Option<Bytes>> + Send;
}

/// `Name: value`, as a header name and value; an error saying what is wrong.
pub(crate) fn header(
    text: &str,
) -> Result<(hyper::header::HeaderName, hyper::header::HeaderValue), String> {
    let (name, value) = text
        .split_once(':')
        .ok_or_else(|| format!("{text:?} is not `Name: value`"))?;
    let name: hyper::header::HeaderName = name
        .trim()
        .parse()
        .map_err(|_| format!("{:?} is not a header name", name.trim()))?;
    let value: hyper::header::HeaderValue = value
        .trim()
        .parse()
        .map_err(|_| format!("{:?} is not a header value", value.trim()))?;
    const OWN: [&str; 6] = [
        "content-type",
        "content-encoding",
        "content-length",
        "host",
        "user-agent",
        "x-prometheus-remote-write-version",
    ];
    if OWN.contains(&name.as_str()) {
        return Err(format!("{name} is set by tallyd"));
    }
    Ok((name, value))
}

/// `name=value`, as a label; an error saying what is wrong.
pub(crate) fn label(text: &str) -> Result<(String, String), String> {
    let (name, value) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?} is not `name=value`"))?;
    let valid = name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !name.starts_with("__");
    if !valid {
        return Err(format!(
            "{name:?} is not a label name ([a-zA-Z_][a-zA-Z0-9_]*, not starting with __)"
        ));
    }
    Ok((name.to_owned(), value.to_owned()))
}

/// `url` as the status shows it: without the user and password it may hold.
pub(crate) fn shown_url(url: &str) -> String {
    match url.parse::<hyper::Uri>() {
        Ok(uri) => {
            let host = uri.authority().map_or("", |a| a.as_str());
            let host = host.rsplit_once('@').map_or(host, |(_, host)| host);
            let path = uri.path_and_query().map_or("", |p| p.path());
            format!("{}://{host}{path}", uri.scheme_str().unwrap_or("http"))
        }
        Err(_) => String::new(),
    }
}

/// A request ready to send, of the push that made it.
#[derive(Debug)]
struct Request {
    body: Bytes,
    samples: u64,
    push: u64,
}

/// The requests waiting, oldest first, and their bytes; the first may be being sent.
#[derive(Debug, Default)]
struct Queue {
    requests: VecDeque<Request>,
    bytes: usize,
    /// The first request is being sent: the sender gives it up itself, if it must.
    sending: bool,
    /// A push waits for room: the request being sent, if of an older push, gives way to it
    /// at its next failure.
    waiting: Option<u64>,
}

/// What the pushing task and the sending task share.
#[derive(Debug)]
struct Shared {
    queue: Mutex<Queue>,
    /// A request was queued.
    queued: Notify,
    /// A request left the queue.
    dequeued: Notify,
    /// The queue became empty.
    emptied: Notify,
    limit: usize,
    metrics: RemoteWriteMetrics,
}

impl Shared {
    fn queue(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Queues `request` if there is room, making room by dropping the oldest requests of
    /// older pushes that are not being sent; gives it back when there is none (a request of
    /// its own push, or the one being sent, holds it), to be queued once one has left.
    /// Alone in the queue, a request is queued whatever its size.
    fn try_push(&self, request: Request) -> Result<(), Request> {
        let mut queue = self.queue();
        let first = usize::from(queue.sending);
        while queue.bytes + request.body.len() > self.limit {
            let older = queue
                .requests
                .get(first)
                .is_some_and(|r| r.push < request.push);
            if !older {
                break;
            }
            if let Some(old) = queue.requests.remove(first) {
                queue.bytes -= old.body.len();
                self.metrics.dropped.inc_by(old.samples);
            }
        }
        if queue.bytes + request.body.len() > self.limit && !queue.requests.is_empty() {
            queue.waiting = Some(request.push);
            return Err(request);
        }
        queue.waiting = None;
        queue.bytes += request.body.len();
        queue.requests.push_back(request);
        self.metrics.queue_bytes.set(queue.bytes as i64);
        drop(queue);
        self.queued.notify_one();
        Ok(())
    }

    /// Queues `request`, waiting for room (see [`Shared::try_push`]).
    async fn push(&self, mut request: Request) {
        loop {
            let dequeued = self.dequeued.notified();
            match self.try_push(request) {
                Ok(()) => return,
                Err(back) => request = back,
            }
            dequeued.await;
        }
    }

    /// The first request, marked as being sent.
    fn first(&self) -> Option<(Bytes, u64)> {
        let mut queue = self.queue();
        let first = queue.requests.front().map(|r| (r.body.clone(), r.samples));
        queue.sending = first.is_some();
        first
    }

    /// Takes the first request off the queue, sent or given up.
    fn done(&self) {
        let mut queue = self.queue();
        if let Some(old) = queue.requests.pop_front() {
            queue.bytes -= old.body.len();
        }
        queue.sending = false;
        self.metrics.queue_bytes.set(queue.bytes as i64);
        let empty = queue.requests.is_empty();
        drop(queue);
        self.dequeued.notify_one();
        if empty {
            self.emptied.notify_waiters();
        }
    }

    /// True when a newer push waits for the room the request being sent holds.
    fn gives_way(&self) -> bool {
        let queue = self.queue();
        let sent = queue.requests.front().map(|r| r.push);
        matches!((queue.waiting, sent), (Some(newer), Some(sent)) if sent < newer)
    }

    fn is_empty(&self) -> bool {
        self.queue().requests.is_empty()
    }

    /// Drops whatever is still queued, counting its samples (shutdown).
    fn drop_all(&self) {
        let mut queue = self.queue();
        let samples: u64 = queue.requests.drain(..).map(|r| r.samples).sum();
        queue.bytes = 0;
        self.metrics.dropped.inc_by(samples);
        self.metrics.queue_bytes.set(0);
    }
}

/// The running push: see the module.
#[derive(Debug)]
pub(crate) struct RemoteWrite {
    shared: Arc<Shared>,
    pusher: tokio::task::JoinHandle<()>,
    sender: tokio::task::JoinHandle<()>,
    timeout: Duration,
    final_push: Arc<Notify>,
}

/// What a push is made from.
#[derive(Debug)]
struct Pusher {
    labels: Vec<(String, String)>,
    max_samples: usize,
    /// Pushes made so far.
    pushes: u64,
}

impl RemoteWrite {
    /// Starts pushing what `exposition` reads to `settings.url`, counting in `metrics`; an
    /// error naming the setting when a file it names cannot be used.
    pub(crate) fn start(
        settings: &RemoteWriteSettings,
        exposition: impl Exposition,
        metrics: RemoteWriteMetrics,
    ) -> anyhow::Result<RemoteWrite> {
        let client = Client::new(settings)?;
        metrics.queue_bytes_limit.set(settings.queue_bytes as i64);
        let shared = Arc::new(Shared {
            queue: Mutex::default(),
            queued: Notify::new(),
            dequeued: Notify::new(),
            emptied: Notify::new(),
            limit: settings.queue_bytes,
            metrics,
        });
        let labels = settings
            .labels
            .iter()
            .map(|l| label(l).map_err(|e| anyhow::anyhow!("--remote-write.label: {e}")))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let mut pusher = Pusher {
            labels,
            max_samples: settings.max_samples_per_send,
            pushes: 0,
        };
        let final_push = Arc::new(Notify::new());
        let interval = settings.interval;
        let pushing = {
            let (shared, final_push) = (shared.clone(), final_push.clone());
            tokio::spawn(async move {
                let mut every = tokio::time::interval(interval);
                every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                every.tick().await;
                loop {
                    // The final push's permit outlasts a push under way when it is asked.
                    let last = tokio::select! {
                        biased;
                        _ = final_push.notified() => true,
                        _ = every.tick() => false,
                    };
                    pusher.push(&exposition, &shared).await;
                    if last {
                        break;
                    }
                }
            })
        };
        let sending = tokio::spawn(send(client, shared.clone()));
        info!(url = %shown_url(&settings.url), ?interval, "remote write on");
        Ok(RemoteWrite {
            shared,
            pusher: pushing,
            sender: sending,
            timeout: settings.timeout,
            final_push,
        })
    }

    /// Makes a final push of what the exposition holds now, gives it and the queue
    /// `remote_write.timeout` to be sent, then stops; what is left is counted as dropped.
    pub(crate) async fn finish(mut self) {
        self.final_push.notify_one();
        let emptied = async {
            let _ = (&mut self.pusher).await;
            loop {
                let emptied = self.shared.emptied.notified();
                if self.shared.is_empty() {
                    break;
                }
                emptied.await;
            }
        };
        if tokio::time::timeout(self.timeout, emptied).await.is_err() {
            warn!("remote write: the queue did not empty in time; its requests are dropped");
        }
        self.pusher.abort();
        self.sender.abort();
        self.shared.drop_all();
    }
}

impl Pusher {
    /// Reads the exposition and queues it as requests, a family at a time, each request as
    /// soon as it is full: a push holds the exposition and one request being filled.
    async fn push(&mut self, exposition: &impl Exposition, shared: &Shared) {
        let Some(mut body) = exposition.read().await else {
            if let Some(suppressed) = PUSH_LOG.allow() {
                warn!(
                    suppressed,
                    "remote write: the exposition could not be read; no push"
                );
            }
            return;
        };
        self.pushes += 1;
        let at = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        let mut request = WriteRequest::default();
        while !body.is_empty() {
            let Ok(family) = MetricFamily::decode_length_delimited(&mut body) else {
                warn!("remote write: the exposition did not decode; the rest of this push is left out");
                break;
            };
            request.metadata.push(metadata(&family));
            let mut full = Vec::new();
            series(&family, &self.labels, at, |one| {
                request.timeseries.push(one);
                if request.timeseries.len() == self.max_samples {
                    full.push(encode(&std::mem::take(&mut request), self.pushes));
                }
            });
            for ready in full {
                shared.push(ready).await;
                // Encoding a request takes a while: let the runtime's other tasks run.
                tokio::task::yield_now().await;
            }
        }
        if !request.timeseries.is_empty() || !request.metadata.is_empty() {
            shared.push(encode(&request, self.pushes)).await;
        }
    }
}

/// A request of push number `push`, as protobuf compressed with snappy (the block format, as
/// remote write wants).
fn encode(request: &WriteRequest, push: u64) -> Request {
    let plain = request.encode_to_vec();
    let body = snap::raw::Encoder::new()
        .compress_vec(&plain)
        .unwrap_or_default();
    Request {
        body: Bytes::from(body),
        samples: request.timeseries.len() as u64,
        push,
    }
}

/// The family's type and help, as remote write's metadata says them.
fn metadata(family: &MetricFamily) -> MetricMetadata {
    let r#type = match MetricType::try_from(family.r#type.unwrap_or_default()) {
        Ok(MetricType::Counter) => 1,
        Ok(MetricType::Gauge) => 2,
        Ok(MetricType::Histogram) => 3,
        Ok(MetricType::Summary) => 5,
        _ => 0,
    };
    MetricMetadata {
        r#type,
        metric_family_name: family.name.clone().unwrap_or_default(),
        help: family.help.clone().unwrap_or_default(),
    }
}

/// The series a scrape of `family` makes, each with its one sample at `at` (milliseconds),
/// with `extra` labels where the series has none of that name, given to `out` one by one.
fn series(
    family: &MetricFamily,
    extra: &[(String, String)],
    at: i64,
    mut out: impl FnMut(TimeSeries),
) {
    let name = family.name.as_deref().unwrap_or_default();
    for metric in &family.metric {
        let own: Vec<(&str, &str)> = metric
            .label
            .iter()
            .map(|l| {
                (
                    l.name.as_deref().unwrap_or_default(),
                    l.value.as_deref().unwrap_or_default(),
                )
            })
            .collect();
        let mut add = |suffix: &str, bound: Option<(&str, f64)>, value: f64| {
            let mut labels: Vec<Label> = own
                .iter()
                .map(|(n, v)| Label {
                    name: (*n).to_owned(),
                    value: (*v).to_owned(),
                })
                .collect();
            for (n, v) in extra {
                if !own.iter().any(|(own, _)| own == n) {
                    labels.push(Label {
                        name: n.clone(),
                        value: v.clone(),
                    });
                }
            }
            if let Some((label, bound)) = bound {
                let mut value = String::new();
                text::number(&mut value, bound);
                labels.push(Label {
                    name: label.to_owned(),
                    value,
                });
            }
            labels.push(Label {
                name: "__name__".into(),
                value: format!("{name}{suffix}"),
            });
            labels.sort_by(|a, b| a.name.cmp(&b.name));
            out(TimeSeries {
                labels,
                samples: vec![Sample {
                    value,
                    timestamp: at,
                }],
            });
        };
        let value = |v: &Option<crate::exposition::proto::Value>| {
            v.as_ref().and_then(|v| v.value).unwrap_or_default()
        };
        if let Some(summary) = &metric.summary {
            for q in &summary.quantile {
                let bound = q.quantile.unwrap_or_default();
                add("", Some(("quantile", bound)), q.value.unwrap_or_default());
            }
            add("_sum", None, summary.sample_sum.unwrap_or_default());
            add(
                "_count",
                None,
                summary.sample_count.unwrap_or_default() as f64,
            );
        } else if let Some(histogram) = &metric.histogram {
            let count = histogram.sample_count.unwrap_or_default() as f64;
            let mut infinite = false;
            for bucket in &histogram.bucket {
                let bound = bucket.upper_bound.unwrap_or(f64::INFINITY);
                infinite |= bound == f64::INFINITY;
                let n = bucket.cumulative_count.unwrap_or_default() as f64;
                add("_bucket", Some(("le", bound)), n);
            }
            if !infinite {
                add("_bucket", Some(("le", f64::INFINITY)), count);
            }
            add("_sum", None, histogram.sample_sum.unwrap_or_default());
            add("_count", None, count);
        } else if metric.counter.is_some() {
            add("", None, value(&metric.counter));
        } else if metric.gauge.is_some() {
            add("", None, value(&metric.gauge));
        } else {
            add("", None, value(&metric.untyped));
        }
    }
}

/// Sends the queued requests in order until stopped: see the module.
async fn send(client: Client, shared: Arc<Shared>) {
    loop {
        let Some((body, samples)) = shared.first() else {
            let queued = shared.queued.notified();
            if shared.is_empty() {
                queued.await;
            }
            continue;
        };
        let mut backoff = MIN_BACKOFF;
        loop {
            match client.send(body.clone()).await {
                Outcome::Sent => {
                    shared.metrics.sent.inc_by(samples);
                    let now = SystemTime::now()
                        .duration_since(SystemTime::UNIX_EPOCH)
                        .map_or(0, |d| d.as_secs() as i64);
                    shared.metrics.last_success.set(now);
                    break;
                }
                Outcome::Refused(why) => {
                    shared.metrics.failed.inc_by(samples);
                    if let Some(suppressed) = PUSH_LOG.allow() {
                        warn!(%why, samples, suppressed, "remote write: the receiver refused a request; its samples are dropped");
                    }
                    break;
                }
                Outcome::Retry(why) => {
                    if let Some(suppressed) = PUSH_LOG.allow() {
                        warn!(%why, ?backoff, suppressed, "remote write: a request failed; sending it again");
                    }
                    if shared.gives_way() {
                        shared.metrics.dropped.inc_by(samples);
                        break;
                    }
                    shared.metrics.retries.inc();
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
        shared.done();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exposition::proto::{self, Bucket, Histogram, Metric, Quantile, Summary};
    use crate::telemetry::Telemetry;

    fn names_and_values(series: &[TimeSeries]) -> Vec<(String, f64)> {
        series
            .iter()
            .map(|s| {
                let labels: Vec<String> = s
                    .labels
                    .iter()
                    .map(|l| format!("{}={}", l.name, l.value))
                    .collect();
                (labels.join(","), s.samples[0].value)
            })
            .collect()
    }

    #[test]
    fn a_family_becomes_the_series_a_scrape_stores() {
        let histogram = MetricFamily {
            name: Some("latency".into()),
            help: Some("h".into()),
            r#type: Some(MetricType::Histogram as i32),
            metric: vec![Metric {
                label: proto::labels([("route", "/a")]),
                histogram: Some(Histogram {
                    sample_count: Some(3),
                    sample_sum: Some(2.5),
                    bucket: vec![
                        Bucket {
                            cumulative_count: Some(1),
                            upper_bound: Some(0.5),
                        },
                        Bucket {
                            cumulative_count: Some(2),
                            upper_bound: Some(1.0),
                        },
                    ],
                    ..Default::default()
                }),
                ..Default::default()
            }],
        };
        let extra = [("instance".to_owned(), "pod-a".to_owned())];
        let series = series_of(&histogram, &extra, 7);
        assert_eq!(
            names_and_values(&series),
            vec![
                (
                    "__name__=latency_bucket,instance=pod-a,le=0.5,route=/a".into(),
                    1.0
                ),
                (
                    "__name__=latency_bucket,instance=pod-a,le=1,route=/a".into(),
                    2.0
                ),
                (
                    "__name__=latency_bucket,instance=pod-a,le=+Inf,route=/a".into(),
                    3.0
                ),
                ("__name__=latency_sum,instance=pod-a,route=/a".into(), 2.5),
                ("__name__=latency_count,instance=pod-a,route=/a".into(), 3.0),
            ]
        );
        assert!(series.iter().all(|s| s.samples[0].timestamp == 7));
        let summary = MetricFamily {
            name: Some("rt".into()),
            r#type: Some(MetricType::Summary as i32),
            metric: vec![Metric {
                label: proto::labels([("instance", "own")]),
                summary: Some(Summary {
                    sample_count: Some(2),
                    sample_sum: Some(3.0),
                    quantile: vec![Quantile {
                        quantile: Some(0.99),
                        value: Some(2.0),
                    }],
                }),
                ..Default::default()
            }],
            ..Default::default()
        };
        assert_eq!(
            names_and_values(&series_of(&summary, &extra, 0)),
            vec![
                ("__name__=rt,instance=own,quantile=0.99".into(), 2.0),
                ("__name__=rt_sum,instance=own".into(), 3.0),
                ("__name__=rt_count,instance=own".into(), 2.0),
            ],
            "a series' own label wins over an added one"
        );
    }

    fn series_of(family: &MetricFamily, extra: &[(String, String)], at: i64) -> Vec<TimeSeries> {
        let mut out = Vec::new();
        series(family, extra, at, |one| out.push(one));
        out
    }

    #[test]
    fn the_shown_url_has_no_credentials() {
        assert_eq!(
            shown_url("https://user:secret@mimir.example:443/api/v1/push?x=1"),
            "https://mimir.example:443/api/v1/push"
        );
        assert_eq!(
            shown_url("http://h:9090/api/v1/write"),
            "http://h:9090/api/v1/write"
        );
    }

    #[test]
    fn headers_and_labels_are_checked() {
        assert!(header("X-Scope-OrgID: team-a").is_ok());
        assert!(header("no colon").is_err());
        assert!(header("Content-Type: text/plain").is_err());
        assert!(header("Bad Name: x").is_err());
        assert_eq!(label("pod=a=b"), Ok(("pod".into(), "a=b".into())));
        assert!(label("__name__=x").is_err());
        assert!(label("1a=x").is_err());
        assert!(label("novalue").is_err());
    }

    #[test]
    fn a_full_queue_makes_room_for_a_newer_push_only() {
        let telemetry = Telemetry::new();
        let shared = Shared {
            queue: Mutex::default(),
            queued: Notify::new(),
            dequeued: Notify::new(),
            emptied: Notify::new(),
            limit: 10,
            metrics: telemetry.remote_write(),
        };
        let request = |samples: u64, push: u64| Request {
            body: Bytes::from(vec![0; 4]),
            samples,
            push,
        };
        assert!(shared.try_push(request(1, 1)).is_ok());
        assert_eq!(shared.first().map(|(_, n)| n), Some(1), "being sent");
        assert!(shared.try_push(request(2, 1)).is_ok());
        // No room, and nothing of an older push to drop: push 1 waits for room.
        assert!(shared.try_push(request(3, 1)).is_err());
        assert!(
            !shared.gives_way(),
            "the request being sent is of the waiting push"
        );
        // Push 2 makes room by dropping push 1's waiting request (2), not the one being sent.
        assert!(shared.try_push(request(4, 2)).is_ok());
        assert_eq!(shared.metrics.dropped.get(), 2);
        assert!(shared.try_push(request(5, 2)).is_err());
        assert!(
            shared.gives_way(),
            "push 2 waits: push 1's request being sent gives way"
        );
        shared.done();
        assert_eq!(shared.first().map(|(_, n)| n), Some(4));
        shared.done();
        assert!(shared.is_empty());
        assert_eq!(shared.metrics.queue_bytes.get(), 0);
        assert!(shared.try_push(request(6, 3)).is_ok());
        shared.drop_all();
        assert_eq!(shared.metrics.dropped.get(), 2 + 6);
    }
}
