//! Hostile and unlucky clients against the real binary on loopback: connections held open or
//! trickled, file descriptors run out. Each test reproduces the attack, bounded in count and
//! time, and checks that tallyd keeps serving, with what it refused counted.

mod common;

use common::{command, Tallyd, DEADLINE};
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::time::{Duration, Instant};

/// `command` with its open file limit set to `soft` and `hard` before tallyd starts.
fn with_open_file_limit(extra: &[&str], soft: u64, hard: u64) -> std::process::Command {
    let mut command = command(extra, &[]);
    // SAFETY: between fork and exec only setrlimit runs, which is async-signal-safe.
    unsafe {
        command.pre_exec(move || {
            nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE, soft, hard)
                .map_err(std::io::Error::from)
        });
    }
    command
}

/// True once the server has closed `stream` (end of stream or reset), within the deadline.
fn closed_by_server(stream: &mut TcpStream) -> bool {
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut byte = [0u8; 1];
    match stream.read(&mut byte) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => matches!(
            e.kind(),
            ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted
        ),
    }
}

/// CPU time (user and system) of process `pid` so far.
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name, which ends with the last ')': utime is the 12th, stime
    // the 13th; in clock ticks of 1/100 s.
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    Duration::from_millis(ticks * 10)
}

#[test]
fn the_open_file_limit_is_raised_to_the_hard_limit() {
    let t = Tallyd::start_command(with_open_file_limit(&[], 256, 4096));
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", t.pid())).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    let fields: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(&fields[3..5], ["4096", "4096"], "{line}");
    assert!(
        t.logs()
            .iter()
            .any(|l| l.contains("open file limit raised") && l.contains("from=256")),
        "{:#?}",
        t.logs()
    );
    assert_eq!(t.scrape().value("process_max_fds", &[]), Some(4096.0));
}

#[test]
fn statsd_tcp_connections_past_the_limit_are_closed_and_counted() {
    let t = Tallyd::start(&["--statsd.tcp-max-connections=4"]);
    let mut held: Vec<TcpStream> = (0..4)
        .map(|i| {
            let mut stream = TcpStream::connect(t.tcp).unwrap();
            stream
                .write_all(format!("held:1|c|#conn:{i}\n").as_bytes())
                .unwrap();
            stream
        })
        .collect();
    t.wait_value("tallyd_tcp_connections_open", &[], 4.0);
    for _ in 0..3 {
        let mut extra = TcpStream::connect(t.tcp).unwrap();
        assert!(closed_by_server(&mut extra), "a fifth connection is closed");
    }
    let e = t.wait_value("tallyd_tcp_connections_refused_total", &[], 3.0);
    assert_eq!(e.value("tallyd_tcp_connections_limit", &[]), Some(4.0));
    assert_eq!(e.value("tallyd_tcp_connections_open", &[]), Some(4.0));
    for i in 0..4 {
        let conn = i.to_string();
        assert_eq!(e.value("held", &[("conn", &conn)]), Some(1.0));
    }
    // The held connections still deliver; one closed frees a slot for a new one.
    held[0].write_all(b"held:1|c|#conn:0\n").unwrap();
    t.wait_value("held", &[("conn", "0")], 2.0);
    drop(held.remove(0));
    t.wait_value("tallyd_tcp_connections_open", &[], 3.0);
    t.send_tcp(b"late:1|c\n");
    let e = t.wait_value("late", &[], 1.0);
    assert_eq!(
        e.value("tallyd_tcp_connections_refused_total", &[]),
        Some(3.0)
    );
    assert_eq!(t.get("/-/healthy").0, 200);
}

#[test]
fn statsd_tcp_connections_that_send_no_line_cannot_keep_a_sender_out() {
    let t = Tallyd::start(&["--statsd.tcp-max-connections=4"]);
    // Every slot taken: two connections that send nothing, two that trickle a partial line.
    let mut held: Vec<TcpStream> = (0..4).map(|_| TcpStream::connect(t.tcp).unwrap()).collect();
    t.wait_value("tallyd_tcp_connections_open", &[], 4.0);
    held[2].write_all(b"part").unwrap();
    held[3].write_all(b"ial").unwrap();
    // Longer than a new connection's first bytes may take to arrive.
    std::thread::sleep(Duration::from_millis(50));
    // Clients that send a line as they connect, one after another, each get a slot.
    for i in 0..3 {
        t.send_tcp(format!("sender:1|c|#i:{i}\n").as_bytes());
    }
    let e = t.wait_value("sender", &[("i", "2")], 1.0);
    assert_eq!(e.value("sender", &[("i", "0")]), Some(1.0));
    assert_eq!(
        e.value("tallyd_tcp_connections_refused_total", &[]),
        Some(0.0)
    );
    // At least the first sender took a slot (later ones may find the slot of one before
    // them, closed by its client); the connection that waited longest went first.
    let evicted = e
        .value("tallyd_tcp_connections_evicted_total", &[])
        .unwrap();
    assert!(evicted >= 1.0, "evicted {evicted}");
    assert!(closed_by_server(&mut held[0]));
}

#[test]
fn statsd_tcp_connections_that_complete_no_line_are_closed_when_idle() {
    let t = Tallyd::start(&["--statsd.tcp-idle-timeout=300ms"]);
    let mut silent = TcpStream::connect(t.tcp).unwrap();
    let mut trickle = TcpStream::connect(t.tcp).unwrap();
    let mut chatty = TcpStream::connect(t.tcp).unwrap();
    let start = Instant::now();
    // For a second: a byte every 50 ms that never ends a line, and a line every 50 ms.
    let mut sent_lines = 0;
    while start.elapsed() < Duration::from_secs(1) {
        let _ = trickle.write_all(b"x");
        chatty.write_all(b"chatty:1|c\n").unwrap();
        sent_lines += 1;
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        closed_by_server(&mut silent),
        "a silent connection is closed"
    );
    assert!(
        closed_by_server(&mut trickle),
        "a trickle without a line is closed"
    );
    let e = t.wait_value("chatty", &[], f64::from(sent_lines));
    assert_eq!(e.value("tallyd_tcp_idle_closed_total", &[]), Some(2.0));
    // The connection that sent lines is still open.
    chatty.write_all(b"chatty:1|c\n").unwrap();
    let e = t.wait_value("chatty", &[], f64::from(sent_lines + 1));
    assert_eq!(e.value("tallyd_tcp_connections_open", &[]), Some(1.0));
}

#[test]
fn out_of_file_descriptors_the_accept_loops_wait_instead_of_spinning() {
    // 48 descriptors, soft and hard: the connections below take what is left, and accepts fail
    // (EMFILE) while they stay open.
    let t = Tallyd::start_command(with_open_file_limit(
        &["--statsd.tcp-max-connections=1000"],
        48,
        48,
    ));
    let held: Vec<TcpStream> = (0..60)
        .map(|_| TcpStream::connect(t.tcp).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let before = cpu_time(t.pid());
    std::thread::sleep(Duration::from_secs(2));
    let spent = cpu_time(t.pid()) - before;
    assert!(
        spent < Duration::from_millis(500),
        "{spent:?} of CPU in 2 s"
    );
    let failures = t
        .logs()
        .iter()
        .filter(|l| l.contains("accept failed"))
        .count();
    assert!(
        (1..=5).contains(&failures),
        "{failures} accept failures logged"
    );
    drop(held);
    // Descriptors back: it accepts again, and counted the failures.
    t.send_tcp(b"after:1|c\n");
    let e = t.wait_value("after", &[], 1.0);
    assert!(
        e.value("tallyd_accept_errors_total", &[("listener", "statsd_tcp")])
            .unwrap()
            >= 1.0
    );
}

#[test]
fn a_scrape_shows_the_lines_of_tcp_connections_that_already_closed() {
    let t = Tallyd::start(&[]);
    // A hundred clients that each connect, send a line and close, as `nc` does and clients
    // that reconnect for every flush.
    for _ in 0..100 {
        t.send_tcp(b"st:1|c\n");
    }
    t.wait_for("every connection accepted and closed", |e| {
        e.value("tallyd_tcp_connections_total", &[]) == Some(100.0)
            && e.value("tallyd_tcp_connections_open", &[]) == Some(0.0)
    });
    // The next scrape has every line, though no connection is left to flush for it and the
    // family's publish interval (15 s) has not passed.
    let e = t.scrape();
    assert_eq!(e.value("st", &[]), Some(100.0));
    assert_eq!(e.value("tallyd_updates_total", &[]), Some(100.0));
}

#[test]
fn a_second_tallyd_does_not_take_a_live_unix_socket() {
    let socket = common::SocketDir::new("taken");
    let (path, flag) = (&socket.path, &socket.flag);
    let first = Tallyd::start(&[flag]);
    // The second refuses to start, and leaves the first's socket alone.
    let (code, stderr) = common::start_fails(&[flag], &[]);
    assert_ne!(code, Some(0));
    assert!(stderr.contains("is in use by another process"), "{stderr}");
    let client = std::os::unix::net::UnixDatagram::unbound().unwrap();
    client.send_to(b"first.still:1|c", path).unwrap();
    first.wait_value("first_still", &[], 1.0);
    drop(first);
    // A socket file left behind with no reader is stale: replaced.
    let stale = std::os::unix::net::UnixDatagram::bind(path);
    drop(stale);
    assert!(path.exists());
    let next = Tallyd::start(&[flag]);
    client.send_to(b"next:1|c", path).unwrap();
    next.wait_value("next", &[], 1.0);
    drop(next);
}

#[test]
fn tallyd_leaves_a_unix_socket_that_replaced_its_own_at_exit() {
    let socket = common::SocketDir::new("replaced");
    let (path, flag) = (&socket.path, &socket.flag);
    let mut t = Tallyd::start(&[flag]);
    // Someone else's socket now stands at the path.
    std::fs::remove_file(path).unwrap();
    let other = std::os::unix::net::UnixDatagram::bind(path).unwrap();
    t.signal_and_wait(nix::sys::signal::Signal::SIGTERM);
    assert!(
        path.exists(),
        "tallyd removed a socket that was not its own"
    );
    drop(other);
}

#[test]
fn user_signals_and_alarms_do_not_end_tallyd() {
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;
    let t = Tallyd::start(&[]);
    for signal in [Signal::SIGUSR1, Signal::SIGUSR2, Signal::SIGALRM] {
        kill(Pid::from_raw(t.pid() as i32), signal).unwrap();
    }
    t.send_udp(b"alive:1|c");
    t.wait_value("alive", &[], 1.0);
    assert_eq!(t.get("/-/healthy").0, 200);
    let ignored = t
        .logs()
        .iter()
        .filter(|l| l.contains("signal ignored"))
        .count();
    assert_eq!(ignored, 3, "{:#?}", t.logs());
}

#[test]
fn a_mapping_file_that_never_ends_is_refused_at_once() {
    let started = Instant::now();
    let (code, stderr) = common::start_fails(&["--statsd.mapping-config=/dev/zero"], &[]);
    assert_eq!(code, Some(2));
    assert!(
        stderr.contains("/dev/zero") && stderr.contains("larger than 16 MiB"),
        "{stderr}"
    );
    assert!(started.elapsed() < DEADLINE);
}

#[test]
fn scrapes_that_ask_at_once_share_one_rendering() {
    let t = Tallyd::start(&[]);
    // 20,000 series: an exposition of about 1 MB.
    for name in 0..200 {
        let lines: Vec<String> = (0..100)
            .map(|v| format!("big.n{name}:1|c|#v:{v}"))
            .collect();
        t.send_udp(lines.join("\n").as_bytes());
    }
    t.wait_value("tallyd_series", &[("type", "counter")], 20_000.0);
    let before = t
        .scrape()
        .value("tallyd_scrape_renders_total", &[])
        .unwrap();
    let start = std::sync::Barrier::new(32);
    let bodies: Vec<String> = std::thread::scope(|s| {
        let scrapes: Vec<_> = (0..32)
            .map(|_| {
                s.spawn(|| {
                    start.wait();
                    t.scrape_text()
                })
            })
            .collect();
        scrapes.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for body in &bodies {
        let e = common::Exposition::parse(body);
        assert_eq!(e.value("big_n199", &[("v", "99")]), Some(1.0));
    }
    // This scrape renders once more. A rendering serves every scrape that asked before it
    // began, so the 32 cost as many as their arrivals spread over renderings, not 32.
    let renders = t
        .scrape()
        .value("tallyd_scrape_renders_total", &[])
        .unwrap()
        - before
        - 1.0;
    assert!(
        renders <= 8.0,
        "{renders} renderings for 32 scrapes at once"
    );
}

#[test]
fn type_conflicts_name_at_most_the_listed_number_of_metrics() {
    let t = Tallyd::start(&["--limits.max-family-self-metrics=5"]);
    let counters: Vec<String> = (0..10).map(|i| format!("conflict.n{i}:1|c")).collect();
    t.send_udp(counters.join("\n").as_bytes());
    t.wait_value("tallyd_metric_families", &[], 10.0);
    // Each family gets a gauge sample: ten conflicts, five of them named.
    let gauges: Vec<String> = (0..10).map(|i| format!("conflict.n{i}:2|g")).collect();
    t.send_udp(gauges.join("\n").as_bytes());
    let e = t.wait_for("ten conflicts", |e| {
        e.sum("tallyd_type_conflicts_total") == 10.0
    });
    let named = (0..10)
        .filter(|i| {
            let metric = format!("conflict_n{i}");
            e.value(
                "tallyd_type_conflicts_total",
                &[("metric", &metric), ("type", "gauge")],
            ) == Some(1.0)
        })
        .count();
    assert_eq!(named, 5);
    assert_eq!(
        e.value(
            "tallyd_type_conflicts_total",
            &[("metric", ""), ("type", "gauge")]
        ),
        Some(5.0)
    );
}

#[test]
fn a_gauge_driven_past_the_largest_number_stays_infinite_not_nan() {
    let t = Tallyd::start(&[]);
    // As statsd_exporter applies them one by one: +1e308 twice makes +Inf, and -1e308 twice
    // leaves it there.
    t.send_udp(b"edge:0|g");
    t.wait_value("edge", &[], 0.0);
    t.send_udp(b"edge:+1e308|g\nedge:+1e308|g");
    t.wait_value("edge", &[], f64::INFINITY);
    t.send_udp(b"edge:-1e308|g\nedge:-1e308|g");
    t.wait_for("both shifts applied", |e| {
        e.value("tallyd_updates_total", &[]) == Some(5.0)
    });
    assert_eq!(t.scrape().value("edge", &[]), Some(f64::INFINITY));
}

#[test]
fn control_characters_in_tag_values_never_reach_the_exposition() {
    let t = Tallyd::start(&[]);
    t.send_udp(b"ctl:1|c|#a:x\0y,b:ok\nctl:1|c|#a:x\ry,b:ok\nctl:1|c|#a:\x1b[2J,b:ok");
    let e = t.wait_value("ctl", &[("b", "ok")], 3.0);
    assert_eq!(e.value("tallyd_tag_errors_total", &[]), Some(3.0));
    let text = t.scrape_text();
    assert!(
        !text.bytes().any(|b| b.is_ascii_control() && b != b'\n'),
        "a control character in the exposition"
    );
    common::promtool_check(&text);
}

#[test]
fn control_characters_in_names_never_reach_mapped_label_values() {
    let dir = common::SocketDir::new("control-mapped");
    let mapping = dir.path.with_file_name("mapping.yml");
    std::fs::write(
        &mapping,
        "mappings:\n- match: \"*.c\"\n  name: cap\n  labels:\n    x: \"$1\"\n    y: fixed\n",
    )
    .unwrap();
    let t = Tallyd::start(&[&format!("--statsd.mapping-config={}", mapping.display())]);
    t.send_udp(b"a\0b.c:1|c\nq\rz.c:1|c\nok.c:1|c");
    t.wait_value("cap", &[("x", "ok"), ("y", "fixed")], 1.0);
    let e = t.wait_value("cap", &[("y", "fixed")], 2.0);
    assert_eq!(e.value("tallyd_tag_errors_total", &[]), Some(2.0));
    let text = t.scrape_text();
    assert!(!text.bytes().any(|b| b.is_ascii_control() && b != b'\n'));
}

/// A mapping file of `rules` glob rules, each with a name and a label, written in `dir`; the
/// flag that names it.
fn many_rules(dir: &common::SocketDir, rules: usize) -> String {
    let path = dir.path.with_file_name("mapping.yml");
    let mut yaml = String::from("mappings:\n");
    for i in 0..rules {
        yaml.push_str(&format!(
            "- match: \"app{i}.*.count\"\n  name: \"app{i}_count\"\n  labels:\n    x: \"$1\"\n"
        ));
    }
    std::fs::write(&path, yaml).unwrap();
    format!("--statsd.mapping-config={}", path.display())
}

#[test]
fn a_mapping_file_of_40_000_rules_loads() {
    let socket = common::SocketDir::new("bigmapping");
    let flag = many_rules(&socket, 40_000);
    let output = command(&[&flag, "--check-config"], &[])
        .stdout(std::process::Stdio::piped())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(stdout.contains("40000 rules"), "{stdout}");
}

#[test]
fn a_long_reload_does_not_hold_up_the_probes() {
    let socket = common::SocketDir::new("longreload");
    let t = Tallyd::start(&[&many_rules(&socket, 20_000)]);
    let reloaded = || {
        t.scrape()
            .value("tallyd_config_reloads_total", &[("outcome", "success")])
            .unwrap()
    };
    let before = reloaded();
    let pid = nix::unistd::Pid::from_raw(t.pid() as i32);
    let asked = Instant::now();
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP).unwrap();
    // Probes all through the reload, each timed.
    let mut slowest = Duration::ZERO;
    let took = loop {
        let probe = Instant::now();
        assert_eq!(t.get("/-/healthy").0, 200);
        slowest = slowest.max(probe.elapsed());
        if reloaded() > before {
            break asked.elapsed();
        }
        assert!(asked.elapsed() < DEADLINE, "the reload did not finish");
        std::thread::sleep(Duration::from_millis(10));
    };
    // 20,000 rules take a while to compile (over a second in a debug build); a probe that
    // waited for them would take as long.
    assert!(
        slowest * 3 < took,
        "slowest probe {slowest:?} during a reload of {took:?}"
    );
}

#[test]
fn clients_that_hold_http_connections_silent_cannot_keep_scrapes_out() {
    let t = Tallyd::start_with_env(&[], &[("TALLYD_WEB__MAX_CONNECTIONS", "8")]);
    // Eight connections that send nothing: every slot taken, for the 10 s header timeout.
    let silent: Vec<TcpStream> = (0..8)
        .map(|_| TcpStream::connect(t.http).unwrap())
        .collect();
    // Silent for longer than a connection may wait before it can be closed for another.
    std::thread::sleep(Duration::from_millis(1_100));
    // Probes and scrapes still get answers: the first takes the slot of a silent connection.
    for _ in 0..5 {
        assert_eq!(t.get("/-/healthy").0, 200);
    }
    let e = t.scrape();
    assert!(
        e.value("tallyd_http_connections_evicted_total", &[])
            .unwrap()
            >= 1.0
    );
    assert_eq!(
        e.value("tallyd_http_connections_rejected_total", &[]),
        Some(0.0)
    );
    drop(silent);
}
