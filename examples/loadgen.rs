//! A StatsD load generator that also reads back what tallyd made of the load: lines received
//! and applied, loss, tallyd's CPU time and memory, and what one `/metrics` scrape costs.
//!
//! It sends lines `<prefix>.<i>` (i cycling over `--names`; `--mode airflow` sends Apache
//! Airflow's names instead), each with a DogStatsD tag `|#v:<j>` when `--label-values` is
//! above 1 (j advancing once per round of names, so there are names × label values distinct
//! series) and with `--tags N` fixed tags before it (an application's environment, service,
//! host...), packed newline-separated into datagrams of at most `--datagram-bytes`, or of at
//! most `--lines-per-datagram` lines. With `--rate` it paces with a token bucket refilled every ~1 ms;
//! without, it sends flat out. It stops after `--count` lines or `--duration`, whichever comes
//! first. Loopback targets only.
//!
//! Before sending it scrapes `--http` once; after, it scrapes until `tallyd_lines_total` and
//! `tallyd_updates_total` have not moved for `--settle` (with `--wait-hibernation`, also until
//! `tallyd_metric_actors` is 0), then takes `--scrapes` timed scrapes, and prints one
//! `key=value` line (or a JSON object with `--json`):
//! `sent`, `received` (`tallyd_lines_total` delta), `applied` (`tallyd_updates_total` delta),
//! `loss_pct` (sent but not applied), `kernel_drops` (datagrams), and with `--pid`
//! `cpu_s` (the run time of its threads from `/proc/PID/task/*/schedstat`, else utime + stime
//! from `/proc/PID/stat`; from just before sending to the first scrape that showed the final
//! counts), `cpu_s_per_million` (per million applied), `peak_rss_mb`
//! (`VmHWM`) and `rss_mb` (`VmRSS`, after the timed scrapes; with `--wait-hibernation`, once it
//! has stopped moving, up to 5 s later, and `rss_after_scrapes_mb` the reading right after the
//! scrapes); `scrape_ms` (median of the timed scrapes, connect to last byte, each read into
//! the buffer the one before was read into, as a scraper that pools its buffers reads) and
//! `scrape_bytes`.
//!
//! With `--effect`, what the load did is read from the families it sent to instead of from
//! tallyd's own metrics, so the same run measures any StatsD server (statsd_exporter too):
//! `applied` is the sum of their counters, gauges (sent as `+1`) and observer counts.
//!
//! `--mode latency` instead sends one gauge line at a time and polls `/metrics` every 1 ms
//! until its value shows: `latency_ms_*` is the time from the send to the scrape that saw it
//! (`latency_first_ms` is the first probe, which also creates the family).
//!
//! With a command after `--`, the command sends (e.g. the C load generator the targets were
//! measured with) and `sent` is read from the `lines=` in its output.
//!
//! Start tallyd (`cargo run --release`, or `target/release/tallyd`), then:
//!
//! ```text
//! cargo build --release --example loadgen
//! target/release/examples/loadgen --mode counter --rate 100000 --count 1000000 --pid $(pidof tallyd)
//! target/release/examples/loadgen --mode timer --names 1000 --label-values 100 --count 100000 --scrapes 3
//! target/release/examples/loadgen --mode mixed --duration 5 --json            # flat out
//! target/release/examples/loadgen --mode latency --probes 20
//! target/release/examples/loadgen --pid $(pidof tallyd) -- target/statsd_loadgen -p 9125 -r 1200000 -n 3600000
//! ```
//!
//! `benches/run.sh` runs the whole benchmark matrix with it.

use clap::{Parser, ValueEnum};
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs, UdpSocket};
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug, PartialEq, ValueEnum)]
enum Mode {
    /// `:1|c`
    Counter,
    /// `:<v>|g`, v from a table of 100 values
    Gauge,
    /// `:<v>|ms`, v from a table of 100 values (0.5–50 ms)
    Timer,
    /// Counters, gauges and timers by name: name i has type i mod 3
    Mixed,
    /// `:<v>|d`, v from a table of 100 values (0.5–50)
    Distribution,
    /// `:<member>|s`, members from a table of 100
    Set,
    /// The names Apache Airflow sends (tasks, DAG runs, pools, executors, operators), with
    /// their types, for its statsd_exporter mapping file (benches/data/airflow-statsd-mappings.yml)
    Airflow,
    /// One gauge line at a time, timed until /metrics shows it
    Latency,
}

#[derive(Debug, Parser)]
#[command(about = "StatsD load generator for tallyd (loopback only); see the source's header.")]
struct Args {
    /// What to send.
    #[arg(long, value_enum, default_value = "counter")]
    mode: Mode,
    /// tallyd's StatsD UDP address (loopback).
    #[arg(long, default_value = "127.0.0.1:9125")]
    statsd: String,
    /// tallyd's HTTP address (loopback).
    #[arg(long, default_value = "127.0.0.1:9102")]
    http: String,
    /// The scrape path.
    #[arg(long, default_value = "/metrics")]
    metrics_path: String,
    /// Lines per second; 0 sends flat out.
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// Lines to send (default 1,000,000 unless --duration is given).
    #[arg(long)]
    count: Option<u64>,
    /// Seconds to send for (with --count: whichever comes first).
    #[arg(long)]
    duration: Option<f64>,
    /// Distinct names.
    #[arg(long, default_value_t = 1000)]
    names: usize,
    /// Distinct values of the tag `v`; 1 sends no tag.
    #[arg(long, default_value_t = 1)]
    label_values: usize,
    /// DogStatsD tags on each line: the tag `v` (see --label-values) and up to 7 fixed ones
    /// before it (`env:production`, `service:checkout`, ...); 0 sends none but `v`.
    #[arg(long, default_value_t = 0)]
    tags: usize,
    /// Largest datagram, bytes.
    #[arg(long, default_value_t = 1400)]
    datagram_bytes: usize,
    /// Lines in one datagram at most; 0 packs as many as fit (1: what an unbuffered client
    /// sends).
    #[arg(long, default_value_t = 0)]
    lines_per_datagram: u64,
    /// Sending threads, each with its own socket, as separate clients send; the lines and the
    /// rate are shared out among them.
    #[arg(long, default_value_t = 1)]
    senders: usize,
    /// Read what the load did from the families it sent to, not from tallyd's own metrics,
    /// so that any StatsD server can be measured (statsd_exporter too): `applied` is the sum
    /// of the counters, the gauges (sent as `+1`) and the observers' `_count`s whose names
    /// start with the prefix, and `series` the series among them.
    #[arg(long)]
    effect: bool,
    /// Name prefix (default app.req, app.gauge, app.lat, app.mix or loadgen.latency by mode).
    #[arg(long)]
    prefix: Option<String>,
    /// tallyd's process id, for its CPU time and memory.
    #[arg(long)]
    pid: Option<u32>,
    /// Timed scrapes after the load has settled.
    #[arg(long, default_value_t = 1)]
    scrapes: usize,
    /// The counts are final once unchanged for this many seconds.
    #[arg(long, default_value_t = 0.5)]
    settle: f64,
    /// After the counts settle, wait (up to --settle-timeout) until no family actor is live:
    /// every family idle and hibernated, as a sender that stopped leaves them.
    #[arg(long)]
    wait_hibernation: bool,
    /// Give up waiting for the counts to settle after this many seconds.
    #[arg(long, default_value_t = 120.0)]
    settle_timeout: f64,
    /// Latency probes (--mode latency).
    #[arg(long, default_value_t = 20)]
    probes: usize,
    /// After the timed scrapes, wait this many seconds and read the resident size again
    /// (`rss_later_mb`).
    #[arg(long, default_value_t = 0.0)]
    rss_after: f64,
    /// Ask for gzipped scrapes (as Prometheus does); scrape_bytes is then the compressed size.
    #[arg(long)]
    gzip: bool,
    /// Only send; do not scrape tallyd.
    #[arg(long)]
    no_scrape: bool,
    /// Print a JSON object instead of key=value pairs.
    #[arg(long)]
    json: bool,
    /// A command that sends the load instead (its output must contain `lines=<sent>`).
    #[arg(last = true)]
    exec: Vec<String>,
}

/// A value of the report.
enum Val {
    Bool(bool),
    Int(u64),
    Num(f64, usize),
    Text(String),
}

#[derive(Default)]
struct Report(Vec<(&'static str, Val)>);

impl Report {
    fn bool(&mut self, key: &'static str, v: bool) {
        self.0.push((key, Val::Bool(v)));
    }
    fn int(&mut self, key: &'static str, v: u64) {
        self.0.push((key, Val::Int(v)));
    }
    fn num(&mut self, key: &'static str, v: f64, decimals: usize) {
        self.0.push((key, Val::Num(v, decimals)));
    }
    fn text(&mut self, key: &'static str, v: impl Into<String>) {
        self.0.push((key, Val::Text(v.into())));
    }

    fn print(&self, json: bool) {
        let fmt = |v: &Val, quote: bool| match v {
            Val::Bool(b) => b.to_string(),
            Val::Int(n) => n.to_string(),
            Val::Num(x, _) if !x.is_finite() => if quote { "null" } else { "NaN" }.to_owned(),
            Val::Num(x, d) => format!("{x:.d$}"),
            Val::Text(s) if quote => {
                format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
            }
            Val::Text(s) => s.clone(),
        };
        let fields: Vec<String> = self
            .0
            .iter()
            .map(|(k, v)| {
                if json {
                    format!("\"{k}\":{}", fmt(v, true))
                } else {
                    format!("{k}={}", fmt(v, false))
                }
            })
            .collect();
        if json {
            println!("{{{}}}", fields.join(","));
        } else {
            println!("{}", fields.join(" "));
        }
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(report) => {
            report.print(args.json);
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("loadgen: {error}");
            ExitCode::FAILURE
        }
    }
}

fn fail(message: impl Into<String>) -> io::Error {
    io::Error::other(message.into())
}

/// The address, which must be a loopback one.
fn loopback(addr: &str) -> io::Result<SocketAddr> {
    let addr = addr
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| fail(format!("{addr}: no address")))?;
    if !addr.ip().is_loopback() {
        return Err(fail(format!("refusing non-loopback target {addr}")));
    }
    Ok(addr)
}

fn run(args: &Args) -> io::Result<Report> {
    if args.names == 0 || args.label_values == 0 || args.datagram_bytes < 64 {
        return Err(fail(
            "--names and --label-values must be at least 1, --datagram-bytes 64",
        ));
    }
    if args.datagram_bytes > 65_000 {
        return Err(fail("--datagram-bytes must be at most 65000"));
    }
    if args.effect && args.mode == Mode::Set {
        return Err(fail("--effect counts lines by value: not with --mode set"));
    }
    let http = if args.no_scrape {
        None
    } else {
        Some(Scraper {
            addr: loopback(&args.http)?,
            path: args.metrics_path.clone(),
            gzip: args.gzip,
            buffer: Default::default(),
        })
    };
    let mut report = Report::default();
    if args.mode == Mode::Latency && args.exec.is_empty() {
        let http = http.ok_or_else(|| fail("--mode latency needs /metrics"))?;
        latency(args, &http, &mut report)?;
        return Ok(report);
    }

    let proc_ = args.pid.map(Proc::new).transpose()?;
    let before = http.as_ref().map(|h| h.get()).transpose()?;
    let cpu_before = proc_.as_ref().map(Proc::cpu_seconds).transpose()?;

    let sending = Instant::now();
    let sent = if args.exec.is_empty() {
        send(args, &mut report)?
    } else {
        exec(&args.exec, &mut report)?
    };
    let send_seconds = sending.elapsed().as_secs_f64();
    let (Some(http), Some(before)) = (http, before) else {
        return Ok(report);
    };

    let family_prefix = prefix(args).replace(|c: char| !c.is_ascii_alphanumeric(), "_");
    // Scrape until the counts stand still for `settle`; the CPU time is read just before the
    // first scrape that showed the final counts, so later scrapes do not count. Scrapes are
    // spaced at least four times their own time apart (and 100 ms): a scrape of a million
    // series, and reading it here, must not take the cores from a server still catching up.
    let settle_start = Instant::now();
    let mut last: Option<(f64, f64)> = None;
    let mut since = Instant::now();
    let mut cpu_at_last = None;
    let mut settled = false;
    let mut after = before.clone();
    while settle_start.elapsed().as_secs_f64() < args.settle_timeout {
        let cpu = proc_.as_ref().map(Proc::cpu_seconds).transpose()?;
        let scraping = Instant::now();
        let scrape = http.get()?;
        let counts = if args.effect {
            scrape.effect(&family_prefix)
        } else {
            (
                scrape.value("tallyd_lines_total"),
                scrape.value("tallyd_updates_total"),
            )
        };
        if last != Some(counts) {
            last = Some(counts);
            since = Instant::now();
            cpu_at_last = cpu;
        } else if since.elapsed().as_secs_f64() >= args.settle {
            settled = true;
            after = scrape;
            break;
        }
        after = scrape;
        std::thread::sleep(Duration::from_millis(100).max(scraping.elapsed() * 4));
    }
    let settle_ms = settle_start.elapsed().as_secs_f64() * 1e3;
    if args.wait_hibernation {
        let start = Instant::now();
        while after.value("tallyd_metric_actors") > 0.0
            && settle_start.elapsed().as_secs_f64() < args.settle_timeout
        {
            std::thread::sleep(Duration::from_millis(250));
            after = http.get()?;
        }
        report.num(
            "hibernation_wait_ms",
            start.elapsed().as_secs_f64() * 1e3,
            0,
        );
    }
    report.num("actors", after.value("tallyd_metric_actors"), 0);

    let mut times = Vec::new();
    let mut size = 0;
    for _ in 0..args.scrapes {
        let scrape = http.get()?;
        times.push(scrape.elapsed.as_secs_f64() * 1e3);
        size = scrape.wire_bytes;
        after = scrape;
    }

    let delta = |name| after.value(name) - before.value(name);
    let received = delta("tallyd_lines_total");
    let applied = if args.effect {
        after.effect(&family_prefix).0 - before.effect(&family_prefix).0
    } else {
        delta("tallyd_updates_total")
    };
    report.num("received", received, 0);
    report.num("applied", applied, 0);
    report.num("applied_rate", applied / send_seconds, 0);
    report.num("rejected", delta("tallyd_lines_rejected_total"), 0);
    report.num("loss_pct", (1.0 - applied / sent as f64) * 100.0, 4);
    report.num("kernel_drops", delta("tallyd_udp_kernel_drops_total"), 0);
    let series = if args.effect {
        after.effect(&family_prefix).1
    } else {
        after.value("tallyd_series")
    };
    report.num("series", series, 0);
    report.num("families", after.value("tallyd_metric_families"), 0);
    report.bool("settled", settled);
    report.num("settle_ms", settle_ms, 0);
    if let (Some(p), Some(c0), Some(c1)) = (&proc_, cpu_before, cpu_at_last) {
        let cpu = c1 - c0;
        report.num("cpu_s", cpu, 2);
        report.num("cpu_s_per_million", cpu / (applied / 1e6), 3);
        let (hwm, rss) = p.memory_kb()?;
        report.num("peak_rss_mb", hwm as f64 / 1024.0, 1);
        if args.wait_hibernation {
            // The last families to hibernate, and the listeners' caches, are handed back to
            // the allocator a little later: wait until the resident size stops moving.
            report.num("rss_after_scrapes_mb", rss as f64 / 1024.0, 1);
            report.num("rss_mb", p.steady_rss_kb(rss)? as f64 / 1024.0, 1);
        } else {
            report.num("rss_mb", rss as f64 / 1024.0, 1);
        }
        if args.rss_after > 0.0 {
            std::thread::sleep(Duration::from_secs_f64(args.rss_after));
            report.num("rss_later_mb", p.memory_kb()?.1 as f64 / 1024.0, 1);
        }
    }
    if !times.is_empty() {
        report.num("scrape_ms", median(&mut times), 2);
        report.num(
            "scrape_ms_max",
            times.iter().copied().fold(0.0, f64::max),
            2,
        );
        report.int("scrape_bytes", size as u64);
    }
    Ok(report)
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

/// The lines to send, rendered from parts made once.
struct Lines {
    /// Each name (`<prefix>.<i>`, or Airflow's), with the index of its type in `values`.
    names: Vec<(Vec<u8>, usize)>,
    /// The tags per label value: `|#<fixed tags>,v:<j>` (one empty entry without tags).
    tags: Vec<Vec<u8>>,
    /// `:<value>|<type>` per type (counter, gauge, timer, distribution, set), 100 each.
    values: [Vec<Vec<u8>>; 5],
    /// Lines in a datagram at most (0: as many as fit).
    per_datagram: u64,
}

/// Tags a DogStatsD client adds to every line, as an application's environment sets them.
const FIXED_TAGS: [&str; 7] = [
    "env:production",
    "service:checkout",
    "region:eu-west-1",
    "host:web-7f9c4d-x2k8p",
    "version:1.42.0",
    "team:payments",
    "kube_namespace:shop",
];

/// Airflow's names, by template (`{d}` a DAG, `{t}` a task, `{p}` a pool or executor, `{o}` an
/// operator), with the type index each is sent as.
const AIRFLOW: [(&str, usize); 17] = [
    ("airflow.dag.{d}.{t}.duration", 2),
    ("airflow.dagrun.duration.success.{d}", 2),
    ("airflow.dagrun.duration.failed.{d}", 2),
    ("airflow.dagrun.schedule_delay.{d}", 2),
    ("airflow.dagrun.dependency-check.{d}.{t}", 2),
    ("airflow.dag_processing.last_runtime.{d}_dag", 1),
    ("airflow.dag_processing.last_run.seconds_ago.{d}_dag", 1),
    ("airflow.pool.open_slots.{p}", 1),
    ("airflow.pool.used_slots.{p}", 1),
    ("airflow.pool.starving_tasks.{p}", 1),
    ("airflow.executor.open_slots.{p}", 1),
    ("airflow.executor.queued_tasks.{p}", 1),
    ("airflow.executor.running_tasks.{p}", 1),
    ("airflow.operator_successes_{o}", 0),
    ("airflow.operator_failures_{o}", 0),
    ("airflow.scheduler_heartbeat", 0),
    // Matched by no rule: escaped as they are.
    ("airflow.ti.finish.{d}.{t}.success", 0),
];

/// Airflow's names: every template over 20 DAGs of 10 tasks, 4 pools, 10 operators.
fn airflow_names() -> Vec<(Vec<u8>, usize)> {
    let operators = [
        "PythonOperator",
        "BashOperator",
        "KubernetesPodOperator",
        "EmptyOperator",
        "S3ToRedshiftOperator",
        "SparkSubmitOperator",
        "HttpSensor",
        "SqlSensor",
        "EmailOperator",
        "BranchPythonOperator",
    ];
    let mut names = Vec::new();
    for (template, kind) in AIRFLOW {
        let dags: Vec<String> = if template.contains("{d}") {
            (0..20).map(|d| format!("etl_dag_{d}")).collect()
        } else {
            vec![String::new()]
        };
        for dag in &dags {
            let tasks = if template.contains("{t}") { 10 } else { 1 };
            for t in 0..tasks {
                let pools: Vec<String> = if template.contains("{p}") {
                    (0..4).map(|p| format!("pool_{p}")).collect()
                } else {
                    vec![String::new()]
                };
                for pool in &pools {
                    let ops: &[&str] = if template.contains("{o}") {
                        &operators
                    } else {
                        &[""]
                    };
                    for op in ops {
                        let name = template
                            .replace("{d}", dag)
                            .replace("{t}", &format!("task_{t}"))
                            .replace("{p}", pool)
                            .replace("{o}", op);
                        names.push((name.into_bytes(), kind));
                    }
                }
            }
        }
    }
    names
}

impl Lines {
    fn new(args: &Args) -> Self {
        let prefix = prefix(args);
        let table = |suffix: &str| -> Vec<Vec<u8>> {
            (0..100)
                .map(|k| format!(":{:.1}|{suffix}", 0.5 + k as f64 * 0.5).into_bytes())
                .collect()
        };
        let gauges = if args.effect {
            vec![b":+1|g".to_vec()]
        } else {
            table("g")
        };
        let names = match args.mode {
            Mode::Airflow => airflow_names(),
            mode => (0..args.names)
                .map(|i| {
                    let kind = match mode {
                        Mode::Counter => 0,
                        Mode::Gauge | Mode::Latency => 1,
                        Mode::Timer => 2,
                        Mode::Distribution => 3,
                        Mode::Set => 4,
                        Mode::Mixed | Mode::Airflow => i % 3,
                    };
                    (format!("{prefix}.{i}").into_bytes(), kind)
                })
                .collect(),
        };
        let fixed = FIXED_TAGS[..args.tags.saturating_sub(1).min(FIXED_TAGS.len())].join(",");
        let tags = if args.label_values > 1 || args.tags > 0 {
            (0..args.label_values)
                .map(|j| {
                    let sep = if fixed.is_empty() { "" } else { "," };
                    format!("|#{fixed}{sep}v:{j}").into_bytes()
                })
                .collect()
        } else {
            vec![Vec::new()]
        };
        let members = (0..100).map(|k| format!(":member-{k}|s").into_bytes());
        Lines {
            names,
            tags,
            values: [
                vec![b":1|c".to_vec()],
                gauges,
                table("ms"),
                table("d"),
                members.collect(),
            ],
            per_datagram: args.lines_per_datagram,
        }
    }

    /// Lines before the sequence repeats: every name with every tag value.
    fn cycle(&self) -> u64 {
        (self.names.len() * self.tags.len()) as u64
    }

    /// Appends line `seq` to `out` (after a newline unless first), which holds `held` lines,
    /// if it fits in `max` bytes and under the lines allowed in a datagram.
    fn push(&self, seq: u64, out: &mut Vec<u8>, held: u64, max: usize) -> bool {
        if self.per_datagram > 0 && held >= self.per_datagram {
            return false;
        }
        let n = self.names.len() as u64;
        let i = (seq % n) as usize;
        let j = ((seq / n) % self.tags.len() as u64) as usize;
        let round = seq / (n * self.tags.len() as u64);
        let (name, kind) = &self.names[i];
        let values = &self.values[*kind];
        let value = &values[(i + j + round as usize) % values.len()];
        let tag = &self.tags[j];
        let sep = usize::from(!out.is_empty());
        if out.len() + sep + name.len() + value.len() + tag.len() > max {
            return false;
        }
        if sep == 1 {
            out.push(b'\n');
        }
        out.extend_from_slice(name);
        out.extend_from_slice(value);
        out.extend_from_slice(tag);
        true
    }
}

/// The names' prefix: `--prefix`, or the mode's.
fn prefix(args: &Args) -> String {
    args.prefix.clone().unwrap_or_else(|| {
        match args.mode {
            Mode::Counter => "app.req",
            Mode::Gauge => "app.gauge",
            Mode::Timer => "app.lat",
            Mode::Mixed => "app.mix",
            Mode::Distribution => "app.dist",
            Mode::Set => "app.set",
            Mode::Airflow => "airflow",
            Mode::Latency => "loadgen.latency",
        }
        .to_owned()
    })
}

/// Linux's "no buffer space available", which a full send buffer may also give.
const ENOBUFS: i32 = 105;

fn udp_socket(target: SocketAddr) -> io::Result<UdpSocket> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::for_address(target), Type::DGRAM, None)?;
    // Room for bursts: the kernel drops at tallyd's receive buffer, never here.
    socket.set_send_buffer_size(4 << 20)?;
    socket.connect(&target.into())?;
    Ok(socket.into())
}

/// What one sender sent: lines, datagrams, send errors.
type Sent = (u64, u64, u64);

/// Sends the load, from `--senders` threads, each with its own socket (so its own source
/// port, as separate clients have); returns the lines sent.
fn send(args: &Args, report: &mut Report) -> io::Result<u64> {
    let target = loopback(&args.statsd)?;
    let lines = Lines::new(args);
    let count = match (args.count, args.duration) {
        (Some(n), _) => n,
        (None, Some(_)) => u64::MAX,
        (None, None) => 1_000_000,
    };
    let senders = args.senders.max(1) as u64;
    let start = Instant::now();
    let results: Vec<io::Result<Sent>> = std::thread::scope(|scope| {
        let threads: Vec<_> = (0..senders)
            .map(|i| {
                // An equal share of the lines and the rate; each sender starts at another
                // point of the names' cycle.
                let share = count / senders + u64::from(i < count % senders);
                let first = i * lines.cycle() / senders;
                let lines = &lines;
                scope.spawn(move || {
                    let socket = udp_socket(target)?;
                    let rate = args.rate / senders as f64;
                    send_share(args, &socket, lines, (first, share), rate, start)
                })
            })
            .collect();
        threads
            .into_iter()
            .map(|t| t.join().unwrap_or_else(|_| Err(fail("a sender panicked"))))
            .collect()
    });
    let (mut sent, mut datagrams, mut errors) = (0, 0, 0);
    for result in results {
        let (l, d, e) = result?;
        (sent, datagrams, errors) = (sent + l, datagrams + d, errors + e);
    }
    let seconds = start.elapsed().as_secs_f64();
    report.text("mode", format!("{:?}", args.mode).to_lowercase());
    report.num("target_rate", args.rate, 0);
    report.int("names", lines.names.len() as u64);
    report.int("label_values", args.label_values as u64);
    report.int("senders", senders);
    report.int("sent", sent);
    report.int("datagrams", datagrams);
    report.num(
        "lines_per_datagram",
        sent as f64 / datagrams.max(1) as f64,
        1,
    );
    report.num("seconds", seconds, 3);
    report.num("rate", sent as f64 / seconds, 0);
    report.int("send_errors", errors);
    Ok(sent)
}

/// One sender: `count` lines from line `first` on, at `rate` lines/s (0: flat out), until
/// `--duration` after `start`.
fn send_share(
    args: &Args,
    socket: &UdpSocket,
    lines: &Lines,
    (first, count): (u64, u64),
    rate: f64,
    start: Instant,
) -> io::Result<Sent> {
    let paced = rate > 0.0;
    // Tokens for ~1 ms of traffic trigger a batch; the bucket holds 2 ms, so a late wake-up
    // (sleep overshoots by tens of µs) is made up without bursting.
    let batch = (rate / 1000.0).max(1.0);
    let bucket = 2.0 * batch;
    let deadline = args.duration.map(|s| start + Duration::from_secs_f64(s));
    let (mut sent, mut datagrams, mut errors, mut seq) = (0u64, 0u64, 0u64, first);
    let mut buf = Vec::with_capacity(args.datagram_bytes);
    while sent < count {
        let now = Instant::now();
        if deadline.is_some_and(|d| now >= d) {
            break;
        }
        // How many lines this round may send.
        let budget = if paced {
            let owed = now.duration_since(start).as_secs_f64() * rate - sent as f64;
            if owed < batch {
                let wait = (batch - owed) / rate;
                if wait > 150e-6 {
                    std::thread::sleep(Duration::from_secs_f64(wait * 0.9));
                } else {
                    std::hint::spin_loop();
                }
                continue;
            }
            owed.min(bucket) as u64
        } else {
            // Flat out: 64 full datagrams between clock reads.
            64 * args.datagram_bytes as u64
        };
        let until = sent.saturating_add(budget.max(1)).min(count);
        while sent < until {
            buf.clear();
            let mut n = 0;
            // Full datagrams, as a client library packs them; only the last one is short.
            while sent + n < count && lines.push(seq + n, &mut buf, n, args.datagram_bytes) {
                n += 1;
            }
            if n == 0 {
                return Err(fail("a single line is longer than --datagram-bytes"));
            }
            loop {
                match socket.send(&buf) {
                    Ok(_) => {
                        sent += n;
                        datagrams += 1;
                    }
                    // The send buffer is full: wait for it, and send the same datagram.
                    Err(e)
                        if e.kind() == io::ErrorKind::WouldBlock
                            || e.raw_os_error() == Some(ENOBUFS) =>
                    {
                        errors += 1;
                        std::thread::sleep(Duration::from_micros(50));
                        continue;
                    }
                    // E.g. ECONNREFUSED when nothing listens: not sent, counted.
                    Err(_) => errors += 1,
                }
                break;
            }
            seq += n;
        }
    }
    Ok((sent, datagrams, errors))
}

/// Runs the sending command; returns the lines it says it sent.
fn exec(command: &[String], report: &mut Report) -> io::Result<u64> {
    let output = Command::new(&command[0]).args(&command[1..]).output()?;
    if !output.status.success() {
        return Err(fail(format!(
            "{} failed ({}): {}",
            command[0],
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let field = |key: &str| {
        stdout
            .split_whitespace()
            .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
    };
    let sent: u64 = field("lines").and_then(|v| v.parse().ok()).ok_or_else(|| {
        fail(format!(
            "no lines=N in the output of {}: {stdout}",
            command[0]
        ))
    })?;
    report.text("mode", "exec");
    report.int("sent", sent);
    for key in ["datagrams", "seconds", "rate", "send_errors"] {
        if let Some(v) = field(key) {
            report.text(key, v.to_owned());
        }
    }
    Ok(sent)
}

/// Probes: one gauge line, then /metrics every 1 ms until it shows the value.
fn latency(args: &Args, http: &Scraper, report: &mut Report) -> io::Result<()> {
    let target = loopback(&args.statsd)?;
    let socket = udp_socket(target)?;
    // A name of this run only, so an older value can never be taken for this one.
    let prefix = args.prefix.as_deref().unwrap_or("loadgen.latency");
    let name = format!("{prefix}.{}", std::process::id());
    let family = name.replace(|c: char| !c.is_ascii_alphanumeric(), "_");
    let mut times = Vec::with_capacity(args.probes);
    for k in 1..=args.probes.max(1) {
        socket.send(format!("{name}:{k}|g").as_bytes())?;
        let sent = Instant::now();
        let mut tick = sent;
        loop {
            let scrape = http.get()?;
            if scrape.value(&family) == k as f64 {
                times.push(sent.elapsed().as_secs_f64() * 1e3);
                break;
            }
            if sent.elapsed() > Duration::from_secs(10) {
                return Err(fail(format!("{family} {k} not on /metrics after 10 s")));
            }
            tick += Duration::from_millis(1);
            if let Some(wait) = tick.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
        }
    }
    let first = times[0];
    let mut rest = times[1..].to_vec();
    report.text("mode", "latency");
    report.int("probes", times.len() as u64);
    report.num("latency_first_ms", first, 2);
    if !rest.is_empty() {
        report.num("latency_ms_median", median(&mut rest), 2);
        report.num("latency_ms_min", rest[0], 2);
        report.num("latency_ms_max", rest[rest.len() - 1], 2);
    }
    Ok(())
}

/// GETs of /metrics over plain HTTP/1.1, one connection each, timed from connect to last byte.
struct Scraper {
    addr: SocketAddr,
    path: String,
    gzip: bool,
    /// What the last scrape read, emptied and read into again: a scrape is timed as a
    /// scraper that keeps its buffers reads it (Prometheus pools its scrape buffers), not
    /// with this program's first writes to a fresh 100 MB.
    buffer: std::cell::RefCell<Vec<u8>>,
}

#[derive(Clone)]
struct Scrape {
    body: String,
    elapsed: Duration,
    wire_bytes: usize,
}

impl Scraper {
    fn get(&self) -> io::Result<Scrape> {
        let start = Instant::now();
        let mut stream = TcpStream::connect_timeout(&self.addr, Duration::from_secs(5))
            .map_err(|e| fail(format!("cannot reach tallyd at {}: {e}", self.addr)))?;
        stream.set_read_timeout(Some(Duration::from_secs(60)))?;
        let encoding = if self.gzip {
            "Accept-Encoding: gzip\r\n"
        } else {
            ""
        };
        write!(
            stream,
            "GET {} HTTP/1.1\r\nHost: {}\r\n{encoding}Connection: close\r\n\r\n",
            self.path, self.addr
        )?;
        let mut raw = self.buffer.take();
        raw.clear();
        stream.read_to_end(&mut raw)?;
        let elapsed = start.elapsed();
        let scrape = Self::parse(&raw, elapsed, &self.path);
        self.buffer.replace(raw);
        scrape
    }

    /// The scrape in a response read whole in `raw`.
    fn parse(raw: &[u8], elapsed: Duration, path: &str) -> io::Result<Scrape> {
        let split = raw
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .ok_or_else(|| fail("malformed HTTP response"))?;
        let head = String::from_utf8_lossy(&raw[..split]).to_ascii_lowercase();
        if !head.starts_with("http/1.1 200") {
            let status = head.lines().next().unwrap_or_default().to_owned();
            return Err(fail(format!("GET {path}: {status}")));
        }
        let mut body = raw[split + 4..].to_vec();
        if head.contains("transfer-encoding: chunked") {
            body = dechunk(&body)?;
        }
        let wire_bytes = body.len();
        if head.contains("content-encoding: gzip") {
            let mut plain = Vec::new();
            flate2::read::GzDecoder::new(&body[..]).read_to_end(&mut plain)?;
            body = plain;
        }
        let body = String::from_utf8(body).map_err(|_| fail("the scrape is not UTF-8"))?;
        Ok(Scrape {
            body,
            elapsed,
            wire_bytes,
        })
    }
}

fn dechunk(mut raw: &[u8]) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = raw
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or_else(|| fail("bad chunk"))?;
        let size = std::str::from_utf8(&raw[..eol])
            .ok()
            .and_then(|s| usize::from_str_radix(s.split(';').next()?.trim(), 16).ok())
            .ok_or_else(|| fail("bad chunk size"))?;
        if size == 0 {
            return Ok(out);
        }
        let data = raw
            .get(eol + 2..eol + 2 + size)
            .ok_or_else(|| fail("short chunk"))?;
        out.extend_from_slice(data);
        raw = raw
            .get(eol + 4 + size..)
            .ok_or_else(|| fail("short chunk"))?;
    }
}

impl Scrape {
    /// What the load did to the families whose names start with `prefix`: the sum of their
    /// counters and gauges and of their observers' `_count`s, and how many series that is
    /// (quantile, bucket and `_sum` lines left out).
    fn effect(&self, prefix: &str) -> (f64, f64) {
        let (mut sum, mut series) = (0.0, 0.0);
        for line in self.body.lines().filter(|l| l.starts_with(prefix)) {
            let Some((head, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let name = head.split('{').next().unwrap_or(head);
            if name.ends_with("_sum") || name.ends_with("_bucket") || head.contains("quantile=\"") {
                continue;
            }
            if let Ok(v) = value.parse::<f64>() {
                sum += v;
                series += 1.0;
            }
        }
        (sum, series)
    }

    /// The sum of every sample of `metric` (0 when absent).
    fn value(&self, metric: &str) -> f64 {
        self.body
            .lines()
            .filter(|line| {
                line.strip_prefix(metric)
                    .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
            })
            .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }
}

/// tallyd's process, read from /proc.
struct Proc {
    pid: u32,
    ticks_per_second: f64,
}

impl Proc {
    fn new(pid: u32) -> io::Result<Self> {
        std::fs::metadata(format!("/proc/{pid}/stat"))
            .map_err(|e| fail(format!("no process {pid}: {e}")))?;
        // USER_HZ; 100 on every Linux we know of, asked anyway.
        let ticks_per_second = Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok()?.trim().parse().ok())
            .unwrap_or(100.0);
        Ok(Proc {
            pid,
            ticks_per_second,
        })
    }

    /// CPU time, seconds: the run time of its threads, in nanoseconds, from
    /// `/proc/PID/task/*/schedstat` (a thread that ended is missed: tallyd's live as long as
    /// it does); where the kernel keeps no schedstat, utime + stime, in clock ticks (10 ms:
    /// a tenth of what 1,000,000 lines cost).
    fn cpu_seconds(&self) -> io::Result<f64> {
        match self.run_time_ns() {
            Some(ns) => Ok(ns as f64 / 1e9),
            None => self.cpu_ticks_seconds(),
        }
    }

    fn run_time_ns(&self) -> Option<u64> {
        let tasks = std::fs::read_dir(format!("/proc/{}/task", self.pid)).ok()?;
        let mut sum = 0;
        for task in tasks {
            let schedstat = std::fs::read_to_string(task.ok()?.path().join("schedstat")).ok()?;
            sum += schedstat.split_whitespace().next()?.parse::<u64>().ok()?;
        }
        Some(sum)
    }

    /// utime + stime, seconds.
    fn cpu_ticks_seconds(&self) -> io::Result<f64> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid))?;
        // Fields after the command name, which is in parentheses and may hold spaces:
        // state is field 3, utime 14 and stime 15.
        let rest = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let tick = |i: usize| fields.get(i - 3).and_then(|f| f.parse::<f64>().ok());
        match (tick(14), tick(15)) {
            (Some(u), Some(s)) => Ok((u + s) / self.ticks_per_second),
            _ => Err(fail(format!("cannot read /proc/{}/stat", self.pid))),
        }
    }

    /// (VmHWM, VmRSS) in kB.
    fn memory_kb(&self) -> io::Result<(u64, u64)> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid))?;
        let field = |key: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
                .unwrap_or(0)
        };
        Ok((field("VmHWM:"), field("VmRSS:")))
    }

    /// `VmRSS` once two readings 500 ms apart are within 1% of each other (at most 5 s after
    /// `first`, the reading before).
    fn steady_rss_kb(&self, first: u64) -> io::Result<u64> {
        let mut last = first;
        for _ in 0..10 {
            std::thread::sleep(Duration::from_millis(500));
            let (_, rss) = self.memory_kb()?;
            if rss.abs_diff(last) * 100 <= last {
                return Ok(rss);
            }
            last = rss;
        }
        Ok(last)
    }
}
