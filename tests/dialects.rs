//! Every StatsD dialect through the real binary: the four tag styles and switching each off,
//! sets, DogStatsD events and service checks, v1.2/v1.3 fields, and the Unix datagram listener.

mod common;

use common::{promtool_check, Tallyd};

#[test]
fn all_four_tag_styles_become_labels() {
    let t = Tallyd::start(&[]);
    t.send_udp(
        b"dog.req:1|c|#region:eu,tier:web\n\
          influx.req,region=eu,tier=web:2|c\n\
          librato.req#region=eu,tier=web:3|c\n\
          signalfx.req[region=eu,tier=web]:4|c\n\
          signalfx[region=us].suffix:5|c\n\
          dog.req:1|c|#region:eu,tier:web|c:container-1|T1656581400",
    );
    let labels = [("region", "eu"), ("tier", "web")];
    let e = t.wait_value("tallyd_metric_families", &[], 5.0);
    assert_eq!(e.value("dog_req", &labels), Some(1.0));
    // The container id becomes a label, as in statsd_exporter 0.30; the timestamp is ignored.
    let contained = [
        ("container_id", "container-1"),
        ("region", "eu"),
        ("tier", "web"),
    ];
    assert_eq!(e.value("dog_req", &contained), Some(1.0));
    assert_eq!(e.value("influx_req", &labels), Some(2.0));
    assert_eq!(e.value("librato_req", &labels), Some(3.0));
    assert_eq!(e.value("signalfx_req", &labels), Some(4.0));
    assert_eq!(e.value("signalfx_suffix", &[("region", "us")]), Some(5.0));
    assert_eq!(e.rejected("mixed_tagging_styles"), 0.0);
    promtool_check(&e.text);
}

#[test]
fn a_style_switched_off_stays_in_the_name() {
    let t = Tallyd::start(&[
        "--no-statsd.parse-influxdb-tags",
        "--statsd.parse-librato-tags=false",
        "--no-statsd.parse-dogstatsd-tags",
    ]);
    t.send_udp(b"influx.req,region=eu:2|c\nlibrato.req#region=eu:3|c\ndog.req:1|c|#region:eu\nsfx[region=eu]:4|c");
    let e = t.wait_value("tallyd_metric_families", &[], 4.0);
    assert_eq!(e.value("influx_req_region_eu", &[]), Some(2.0));
    assert_eq!(e.value("librato_req_region_eu", &[]), Some(3.0));
    assert_eq!(
        e.value("dog_req", &[]),
        Some(1.0),
        "the |# field is ignored"
    );
    assert_eq!(
        e.value("sfx", &[("region", "eu")]),
        Some(4.0),
        "SignalFX stays on"
    );
}

#[test]
fn mixing_styles_is_rejected_with_its_own_reason() {
    let t = Tallyd::start(&[]);
    t.send_udp(b"a,k=v:1|c|#x:y\nb[k=v]:1|c|#x:y\nc#k=v:1|c|@0.5|#x:y\nok:1|c");
    let e = t.wait_value("ok", &[], 1.0);
    assert_eq!(e.rejected("mixed_tagging_styles"), 3.0);
    // Name styles among themselves are read as statsd_exporter reads them: a SignalFX `[…]`
    // first, else from the first `#` or `,`, the rest of the name being tag text.
    t.send_udp(b"b#k=v,x=y[z=1]:1|c\nc,k=v#x=y:1|c");
    // (prometheus-parse cuts a value at `#`: read that line as text.)
    let e = t.wait_for("c{k=\"v#x=y\"} 1", |e| {
        e.text.lines().any(|l| l == "c{k=\"v#x=y\"} 1")
    });
    assert_eq!(e.value("b_k_v_x_y", &[("z", "1")]), Some(1.0));
    assert_eq!(e.rejected("mixed_tagging_styles"), 3.0);
}

#[test]
fn sets_count_distinct_members() {
    let t = Tallyd::start(&[]);
    t.send_udp(b"users:alice|s|#page:home\nusers:bob|s|#page:home\nusers:alice|s|#page:home\nusers:carol|s|#page:cart");
    t.send_udp(b"users:dave|s|#page:home\nusers:bob|s|#page:home");
    let e = t.wait_value("users", &[("page", "home")], 3.0);
    assert_eq!(e.type_of("users"), Some("gauge"));
    assert_eq!(e.value("users", &[("page", "cart")]), Some(1.0));
    assert_eq!(
        e.value("tallyd_metric_updates_total", &[("metric", "users")]),
        Some(6.0)
    );
    promtool_check(&e.text);
}

#[test]
fn sets_forget_members_after_their_window() {
    // The family neither hibernates (which publishes) nor publishes on its own for a minute:
    // only the falling count's own publish can show it.
    let t = Tallyd::start_with_env(
        &[],
        &[
            ("TALLYD_STATSD__SET_WINDOW", "400ms"),
            ("TALLYD_ACTORS__HIBERNATE_AFTER", "0s"),
            ("TALLYD_ACTORS__PUBLISH_INTERVAL", "60s"),
        ],
    );
    t.send_udp(b"sessions:a|s\nsessions:b|s");
    t.wait_value("sessions", &[], 2.0);
    // Nothing more is sent: the count falls to zero within a window and a quarter, and is
    // published within a second of falling.
    t.wait_value("sessions", &[], 0.0);
}

#[test]
fn events_and_service_checks_are_counted_not_rejected() {
    let t = Tallyd::start(&[]);
    t.send_udp(b"_e{5,4}:title|text|#k:v\n_sc|db.up|0|#k:v\n_sc|db.up|1\nafter:1|c");
    let e = t.wait_value("after", &[], 1.0);
    assert_eq!(
        e.value("tallyd_events_total", &[("type", "event")]),
        Some(1.0)
    );
    assert_eq!(
        e.value("tallyd_events_total", &[("type", "service_check")]),
        Some(2.0)
    );
    assert_eq!(e.rejected("malformed_line"), 0.0);
    assert_eq!(e.value("tallyd_lines_total", &[]), Some(4.0));
}

#[test]
fn unix_datagram_listener() {
    use std::os::unix::fs::PermissionsExt;
    let socket = common::SocketDir::new("unixgram");
    let path = &socket.path;
    let t = Tallyd::start(&[&socket.flag, "--statsd.unixsocket-mode=660"]);
    let mode = std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o660);
    let client = std::os::unix::net::UnixDatagram::unbound().unwrap();
    client
        .send_to(b"unix.req:3|c|#via:uds\nunix.req:4|c|#via:uds", path)
        .unwrap();
    let e = t.wait_value("unix_req", &[("via", "uds")], 7.0);
    assert_eq!(
        e.value("tallyd_packets_total", &[("listener", "unixgram")]),
        Some(1.0)
    );
    drop(t);
}
