//! Relay (`--statsd.relay.address`): a tallyd relaying every line it reads to a second tallyd,
//! over real sockets, and a relay whose target is down.

mod common;

use common::{start_fails, user_part, Tallyd};
use std::net::UdpSocket;

/// Lines of every kind, one of them refused by tallyd and one too long for a 200-byte packet:
/// 120 in all, over UDP (in datagrams of 10 lines) and TCP.
/// Returns the lines sent, the lines to relay and their bytes with a newline each.
fn traffic(a: &Tallyd) -> (usize, usize, usize) {
    let mut lines = Vec::new();
    for i in 0..100 {
        lines.push(format!("relay.requests:1|c|#route:/r{},env:test", i % 7));
    }
    lines.extend(
        [
            "relay.latency:12.5|ms|@0.5|#route:/a",
            "relay.size:300|h",
            "relay.depth:7|g",
            "relay.depth:+2|g",
            "relay.users:alice|s",
            "relay.users:bob|s",
            "relay,k=v:3|c",
            "not a line",
        ]
        .map(str::to_owned),
    );
    let too_long = format!("relay.long:1|c|#tag:{}", "x".repeat(200));
    lines.push(too_long.clone());
    let udp: Vec<&String> = lines.iter().collect();
    for datagram in udp.chunks(10) {
        let text: Vec<&str> = datagram.iter().map(|l| l.as_str()).collect();
        a.send_udp(text.join("\n").as_bytes());
    }
    let tcp = "relay.tcp:5|c\nrelay.tcp:6|c\n";
    a.send_tcp(tcp.as_bytes());
    let relayed = lines.len() - 1 + 2;
    let bytes = lines.iter().map(|l| l.len() + 1).sum::<usize>() - (too_long.len() + 1);
    (lines.len() + 2, relayed, bytes + tcp.len())
}

#[test]
fn a_tallyd_relays_every_line_it_reads_to_a_second_tallyd() {
    let b = Tallyd::start(&[]);
    let relay = format!("--statsd.relay.address={}", b.udp);
    let a = Tallyd::start(&[
        &relay,
        "--statsd.relay.packet-length=200",
        "--statsd.event-flush-interval=0s",
    ]);
    let (all, relayed, relayed_bytes) = traffic(&a);
    let target = [("target", &*b.udp.to_string())];
    let ea = a.wait_value("tallyd_relay_lines_total", &target, relayed as f64);
    assert_eq!(ea.value("tallyd_lines_total", &[]), Some(all as f64));
    let dropped = |reason| {
        ea.value(
            "tallyd_relay_lines_dropped_total",
            &[("target", &*b.udp.to_string()), ("reason", reason)],
        )
    };
    assert_eq!(dropped("too_long"), Some(1.0));
    assert_eq!(dropped("send_failed"), Some(0.0));
    assert_eq!(
        ea.value("tallyd_relay_send_errors_total", &target),
        Some(0.0)
    );
    // Packed: no packet over 200 bytes, several lines to most packets (each datagram's lines
    // go out at its flush, so a packet never spans two datagrams).
    let packets = ea.value("tallyd_relay_packets_total", &target).unwrap();
    assert!(
        packets * 200.0 >= relayed_bytes as f64 && packets <= relayed as f64 / 3.0,
        "{packets} packets for {relayed} lines of {relayed_bytes} bytes"
    );

    // B got every relayed line, in those packets, and shows what A shows.
    let eb = b.wait_value("tallyd_lines_total", &[], relayed as f64);
    assert_eq!(
        eb.value("tallyd_packets_total", &[("listener", "udp")]),
        Some(packets)
    );
    assert_eq!(
        eb.rejected("malformed_line"),
        1.0,
        "the bad line is relayed too"
    );
    let (a_text, b_text) = (a.scrape_text(), b.scrape_text());
    let (a_user, b_user) = (user_part(&a_text), user_part(&b_text));
    assert!(a_user.contains("relay_requests{env=\"test\",route=\"/r3\"} 14"));
    assert!(a_user.contains("relay_tcp 11"));
    assert!(a_user.contains("relay_long"));
    // The over-long line is the one difference.
    let without_long: String = a_user
        .lines()
        .filter(|l| !l.contains("relay_long"))
        .map(|l| format!("{l}\n"))
        .collect();
    assert_eq!(without_long, b_user);
}

#[test]
fn a_relay_whose_target_is_down_drops_and_counts_without_slowing_ingest() {
    // A port nobody listens on: the kernel answers the first packet with "port unreachable",
    // and the next send fails.
    let port = UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let relay = format!("--statsd.relay.address={port}");
    let a = Tallyd::start(&[
        &relay,
        "--statsd.relay.packet-length=100",
        "--statsd.event-flush-interval=0s",
    ]);
    for i in 0..50 {
        a.send_udp(format!("down.requests:1|c|#i:{}", i % 5).as_bytes());
        // One flush each, so one relay packet each.
        a.wait_value("tallyd_lines_total", &[], (i + 1) as f64);
    }
    let target = [("target", &*port.to_string())];
    let e = a.wait_value("down_requests", &[("i", "4")], 10.0);
    let sent = e.value("tallyd_relay_lines_total", &target).unwrap();
    let failed = e
        .value(
            "tallyd_relay_lines_dropped_total",
            &[("target", &*port.to_string()), ("reason", "send_failed")],
        )
        .unwrap();
    assert_eq!(sent + failed, 50.0, "every line counted once");
    assert!(failed >= 20.0, "refused sends are counted: {failed}");
    assert_eq!(
        e.value("tallyd_relay_send_errors_total", &target),
        Some(failed)
    );
    assert!(a.logs().iter().any(|l| l.contains("relay packet not sent")));
}

#[test]
fn relay_settings_that_cannot_work_name_their_flag() {
    let (code, stderr) = start_fails(&["--statsd.relay.packet-length=10"], &[]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("--statsd.relay.packet-length"), "{stderr}");
    let (code, stderr) = start_fails(&["--statsd.relay.address=no-port"], &[]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("--statsd.relay.address"), "{stderr}");
    // A name that does not resolve is found when the relay starts (checking a configuration
    // needs no DNS): tallyd exits 1, naming the flag.
    let (code, stderr) = start_fails(&["--statsd.relay.address=no-such-host.invalid:9125"], &[]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("--statsd.relay.address"), "{stderr}");
}
