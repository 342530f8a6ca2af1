//! The status page at `/`: one HTML page, with no external asset, rendered here from what the
//! API answers ([`super::api`]), so that it reads without JavaScript: version and uptime,
//! lines per second with a chart of the last ten minutes (inline SVG), packets per listener,
//! kernel drops, rejections by reason, each limit and its use, the busiest and the largest
//! families, the last refused lines, the top unmapped names, the mapping file's state, the
//! push's counts, and a form that explains how a name maps (`/?name=NAME&type=TYPE`). A short inline script
//! fetches the page again every few seconds and swaps in its live part.
//!
//! Everything a sender chose (names, lines, labels) is escaped by `maud`.

use maud::{html, Markup, PreEscaped, DOCTYPE};
use serde_json::Value;
use std::sync::LazyLock;

use super::api::{self, Api, Query};
use super::HttpContext;

/// Rows of each list on the page.
const ROWS: usize = 10;
/// Refused lines shown.
const REFUSED_ROWS: usize = 20;
/// Seconds between two refreshes of the live part.
const REFRESH_SECONDS: u32 = 5;
/// The chart's size, in SVG units.
const CHART: (f64, f64) = (720.0, 140.0);

/// What the page's script does: fetch the page again every [`REFRESH_SECONDS`] and swap in
/// its live part, leaving the form (and what is typed in it) alone.
const SCRIPT_TEMPLATE: &str = r#"
setInterval(async () => {
  try {
    const r = await fetch(location.href, { cache: "no-store" });
    if (!r.ok) return;
    const page = new DOMParser().parseFromString(await r.text(), "text/html");
    const live = page.getElementById("live");
    if (live) document.getElementById("live").replaceWith(live);
  } catch (e) { /* the next try may reach tallyd again */ }
}, REFRESH_MS);
"#;

/// The page's script, and the `Content-Security-Policy` that lets it run (by its hash) and
/// fetch from tallyd, and nothing else run or load.
static SCRIPT: LazyLock<(String, String)> = LazyLock::new(|| {
    use base64::Engine as _;
    let script = SCRIPT_TEMPLATE.replace("REFRESH_MS", &(REFRESH_SECONDS * 1000).to_string());
    let digest = ring::digest::digest(&ring::digest::SHA256, script.as_bytes());
    let hash = base64::engine::general_purpose::STANDARD.encode(digest.as_ref());
    let policy = format!(
        "default-src 'none'; script-src 'sha256-{hash}'; style-src 'unsafe-inline'; \
         connect-src 'self'; form-action 'self'; frame-ancestors 'none'"
    );
    (script, policy)
});

/// The `Content-Security-Policy` the page is sent with.
pub(crate) fn policy() -> &'static str {
    &SCRIPT.1
}

const STYLE: &str = "
body{font:14px/1.4 system-ui,sans-serif;margin:0 auto;max-width:1100px;padding:0 16px;color:#1d2433}
h1{font-size:22px;margin:16px 0 4px}h2{font-size:16px;margin:22px 0 6px;border-bottom:1px solid #dde}
table{border-collapse:collapse;width:100%}td,th{text-align:left;padding:2px 8px 2px 0;vertical-align:top}
th{font-weight:600;color:#555}td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}
code,pre{font:12px ui-monospace,monospace}pre{background:#f4f5f8;padding:8px;overflow:auto}
.grid{display:grid;grid-template-columns:repeat(auto-fit,minmax(320px,1fr));gap:0 32px}
.muted{color:#777}.bad{color:#b00020}nav a{margin-right:14px}
svg{background:#f8f9fb;border:1px solid #e3e5ea;width:100%;height:auto}
meter{width:140px}td code{word-break:break-all}
";

/// The page; `query` may ask to explain a name (`name`, `type`).
pub(crate) async fn render(ctx: &HttpContext, api: &Api, query: Option<&str>) -> String {
    let query = Query(query.unwrap_or_default());
    // One read of the families' snapshots for the status and both lists.
    let scrape = api::snapshots(ctx).await;
    let status = api::status(ctx, api, scrape.as_ref());
    let (busiest, largest) = match &scrape {
        Some(scrape) => (
            api::ranked(ctx, scrape, false, ROWS).await,
            api::ranked(ctx, scrape, true, ROWS).await,
        ),
        None => (
            Err(api::ApiError::unavailable("aggregator")),
            Err(api::ApiError::unavailable("aggregator")),
        ),
    };
    let refused = api::rejected(ctx, &Query(&format!("limit={REFUSED_ROWS}"))).unwrap_or_default();
    let unmapped = api::unmapped(ctx, &Query(&format!("limit={ROWS}"))).unwrap_or_default();
    let asked = query.get("name").filter(|n| !n.is_empty());
    let explained = asked
        .as_ref()
        .map(|_| api::mapping(ctx, &api.ingest, &query));
    let statsd_type = query.get("type").unwrap_or_else(|| "c".into());
    let markup = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { "tallyd" }
                style { (PreEscaped(STYLE)) }
            }
            body {
                h1 { "tallyd " span.muted { (str(&status["version"])) } }
                nav {
                    a href=(ctx.telemetry_path) { "Metrics" }
                    a href="/-/healthy" { "Health" }
                    a href="/-/ready" { "Readiness" }
                    a href="/api/v1/status" { "API: status" }
                    a href="/api/v1/families" { "families" }
                    a href="/api/v1/rejected" { "rejected" }
                    a href="/api/v1/unmapped" { "unmapped" }
                }
                div #live { (live(&status, &busiest, &largest, &refused, &unmapped)) }
                h2 { "Explain a name" }
                form method="get" action="/" {
                    input name="name" placeholder="StatsD name, e.g. api.requests" size="48"
                        value=(asked.as_deref().unwrap_or_default());
                    " "
                    select name="type" {
                        @for t in ["c", "g", "ms", "h", "d", "s"] {
                            option value=(t) selected[t == statsd_type] { (t) }
                        }
                    }
                    " "
                    button type="submit" { "Explain" }
                }
                @match explained {
                    Some(Ok(explanation)) => pre #explanation {
                        (serde_json::to_string_pretty(&explanation).unwrap_or_default())
                    },
                    Some(Err(e)) => p.bad #explanation { (e.message()) },
                    None => {},
                }
                script { (PreEscaped(&SCRIPT.0)) }
            }
        }
    };
    markup.into_string()
}

/// The part of the page the script refreshes.
fn live(
    status: &Value,
    busiest: &Result<Value, api::ApiError>,
    largest: &Result<Value, api::ApiError>,
    refused: &Value,
    unmapped: &Value,
) -> Markup {
    let memory = &status["memory"];
    html! {
        p.muted {
            "Up " (duration(status["uptime_seconds"].as_f64().unwrap_or_default()))
            ", since " (str(&status["started"]))
            ". Resident memory " (bytes(&memory["resident_bytes"]))
            ", peak " (bytes(&memory["peak_bytes"])) "."
        }
        h2 { "Lines per second" }
        p {
            strong #lines-rate { (number(status["lines"]["per_second"].as_f64().unwrap_or_default())) }
            " lines/s, " (status["lines"]["total"]) " in all; "
            (number(status["rejected"]["per_second"].as_f64().unwrap_or_default()))
            " refused/s. Kernel drops: " (status["kernel_drops"]) "."
        }
        (chart(&status["history"]))
        div.grid {
            div {
                h2 { "Listeners" }
                table #listeners {
                    tr { th { "listener" } th { "address" } th.n { "packets" } }
                    @for l in list(&status["listeners"]) {
                        tr { td { (str(&l["listener"])) } td { code { (str(&l["address"])) } } td.n { (l["packets"]) } }
                    }
                }
                h2 { "Limits" }
                table #limits {
                    tr { th { "setting" } th.n { "used" } th.n { "limit" } th {} }
                    @for l in list(&status["limits"]) {
                        tr {
                            td { code { (str(&l["name"])) } }
                            td.n { @if l["used"].is_null() { "—" } @else { (l["used"]) } }
                            td.n { (l["limit"]) }
                            td { meter min="0" max=(l["limit"]) value=(l["used"].as_u64().unwrap_or(0)) {} }
                        }
                    }
                }
                p {
                    "Families: " (status["families"]["live"]) " live, "
                    (status["families"]["hibernating"]) " hibernating. Updates dropped: "
                    @for (stage, n) in object(&status["updates_dropped"]) { (stage) " " (n) "; " }
                }
            }
            div {
                h2 { "Rejected lines by reason" }
                table #reasons {
                    tr { th { "reason" } th.n { "lines" } }
                    @for (reason, n) in object(&status["rejected"]["by_reason"]) {
                        @if n.as_u64().unwrap_or_default() > 0 {
                            tr { td { code { (reason) } } td.n { (n) } }
                        }
                    }
                }
                @if status["rejected"]["total"].as_u64().unwrap_or_default() == 0 {
                    p.muted { "None." }
                }
                h2 { "Mapping file" }
                (mapping(&status["mapping"]))
                h2 { "Remote write" }
                (push(&status["remote_write"]))
            }
        }
        div.grid {
            div {
                h2 { "Busiest families" }
                (families(busiest, "busiest"))
            }
            div {
                h2 { "Largest families" }
                (families(largest, "largest"))
            }
        }
        h2 { "Last refused lines" }
        table #refused {
            tr { th { "time" } th { "listener" } th { "reason" } th { "line" } }
            @for r in list(refused) {
                tr {
                    td.muted title=(str(&r["time"])) { (time_of_day(str(&r["time"]))) }
                    td { (str(&r["listener"])) }
                    td { code { (str(&r["reason"])) } }
                    td { code { (str(&r["line"])) } }
                }
            }
        }
        @if list(refused).next().is_none() { p.muted { "None." } }
        h2 { "Top unmapped names" }
        @if status["mapping"]["file"].is_null() {
            p.muted { "No mapping file: every name is used as it comes, escaped." }
        } @else {
            table #unmapped {
                tr { th { "StatsD name" } th.n { "lines" } }
                @for u in list(unmapped) {
                    tr { td { code { (str(&u["name"])) } } td.n { (u["lines"]) } }
                }
            }
            @if list(unmapped).next().is_none() { p.muted { "Every name matched a rule." } }
        }
    }
}

fn families(list_of: &Result<Value, api::ApiError>, id: &str) -> Markup {
    match list_of {
        Err(e) => html! { p.bad { (e.message()) } },
        Ok(families) => html! {
            table id=(id) {
                tr { th { "family" } th { "type" } th.n { "series" } th.n { "updates/s" } th { "state" } }
                @for f in list(families) {
                    tr {
                        td { code { (str(&f["name"])) } }
                        td { (str(&f["type"])) }
                        td.n { (f["series"]) }
                        td.n { (number(f["rate"].as_f64().unwrap_or_default())) }
                        td { (str(&f["state"])) }
                    }
                }
            }
        },
    }
}

fn mapping(mapping: &Value) -> Markup {
    html! {
        @if mapping["file"].is_null() {
            p.muted #mapping { "None (--statsd.mapping-config)." }
        } @else {
            p #mapping {
                code { (str(&mapping["file"])) } ": " (mapping["rules"]) " rules"
                @if let Some(at) = mapping["loaded_at"].as_str() { ", loaded " (at) }
                "."
                @if let Some(error) = mapping["error"].as_str() {
                    br;
                    span.bad {
                        "A reload failed at " (str(&mapping["failed_at"]))
                        "; the rules in force stay: " (error)
                    }
                }
            }
        }
    }
}

fn push(push: &Value) -> Markup {
    let samples = &push["samples"];
    html! {
        @if push.is_null() {
            p.muted #remote-write { "Off (--remote-write.url)." }
        } @else {
            p #remote-write {
                code { (str(&push["url"])) } ", every " (push["interval_seconds"]) " s. Samples sent "
                (samples["sent"]) ", failed " (samples["failed"]) ", dropped " (samples["dropped"])
                "; queue " (push["queue_bytes"]) " of " (push["queue_bytes_limit"]) " bytes; last success "
                (push["last_success"].as_str().unwrap_or("never")) "."
            }
        }
    }
}

/// Lines and refused lines per second over the history, as an inline SVG chart.
fn chart(history: &Value) -> Markup {
    let points: Vec<(f64, f64, f64)> = list(&history["points"])
        .map(|p| {
            let f = |k: &str| p[k].as_f64().unwrap_or_default();
            (f("at"), f("lines_per_second"), f("rejected_per_second"))
        })
        .collect();
    let (width, height) = CHART;
    let top = points
        .iter()
        .map(|p| p.1.max(p.2))
        .fold(0.0, f64::max)
        .max(1.0);
    let (first, last) = match (points.first(), points.last()) {
        (Some(f), Some(l)) => (f.0, l.0),
        _ => (0.0, 0.0),
    };
    let span = (last - first).max(1.0);
    let path = |of: fn(&(f64, f64, f64)) -> f64| -> String {
        points
            .iter()
            .map(|p| {
                let x = (p.0 - first) / span * width;
                let y = height - of(p) / top * (height - 10.0);
                format!("{x:.1},{y:.1}")
            })
            .collect::<Vec<_>>()
            .join(" ")
    };
    html! {
        svg #chart viewBox=(format!("0 0 {width} {height}")) role="img"
            aria-label="lines per second, last minutes" {
            polyline fill="none" stroke="#2f6fde" stroke-width="2" points=(path(|p| p.1)) {}
            polyline fill="none" stroke="#d33" stroke-width="1.5" points=(path(|p| p.2)) {}
            text x="4" y="12" font-size="11" fill="#555" { (number(top)) "/s" }
        }
        p.muted {
            span style="color:#2f6fde" { "■ lines/s" } " "
            span style="color:#d33" { "■ refused/s" }
            " over the last " (duration(span)) ", a point every "
            (history["step_seconds"]) " s."
            @if points.len() < 2 { " (The chart fills as tallyd runs.)" }
        }
    }
}

/// `12:34:56.789` of an RFC 3339 time.
fn time_of_day(rfc3339: &str) -> &str {
    rfc3339
        .split_once('T')
        .map_or(rfc3339, |(_, time)| time.trim_end_matches('Z'))
}

fn list(value: &Value) -> impl Iterator<Item = &Value> {
    value.as_array().into_iter().flatten()
}

fn object(value: &Value) -> impl Iterator<Item = (&String, &Value)> {
    value.as_object().into_iter().flatten()
}

fn str(value: &Value) -> &str {
    value.as_str().unwrap_or_default()
}

fn number(x: f64) -> String {
    match x {
        x if x >= 100.0 => format!("{x:.0}"),
        x if x >= 1.0 => format!("{x:.1}"),
        x => format!("{x:.2}"),
    }
}

fn duration(seconds: f64) -> String {
    let s = seconds.max(0.0) as u64;
    match s {
        s if s >= 86_400 => format!("{}d {}h", s / 86_400, s % 86_400 / 3600),
        s if s >= 3600 => format!("{}h {}m", s / 3600, s % 3600 / 60),
        s if s >= 60 => format!("{}m {}s", s / 60, s % 60),
        s => format!("{s}s"),
    }
}

fn bytes(value: &Value) -> String {
    match value.as_f64() {
        Some(b) => format!("{:.1} MiB", b / (1024.0 * 1024.0)),
        None => "unknown".into(),
    }
}
