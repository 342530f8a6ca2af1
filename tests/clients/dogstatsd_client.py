"""Drives tallyd with Datadog's DogStatsD client (the `datadog` package), for tests/clients.rs.

Usage: dogstatsd_client.py SCENARIO HOST PORT

Client telemetry (datadog.dogstatsd.client.* counters) is disabled: with it on, the client
sends its own counters at most every 10 s, so what tallyd receives would depend on timing.
"""

import sys
import time

from datadog.dogstatsd import DogStatsd


def unbuffered(host, port):
    # One datagram per call. The namespace, constant tags, container id and cardinality go on
    # every line (…|#tags|c:…|e:…|card:low); DD_EXTERNAL_ENV, set by the test, adds |e:….
    s = DogStatsd(
        host,
        port,
        namespace="shop",
        constant_tags=["env:test"],
        container_id="4f1c2b9e",
        cardinality="low",
        disable_telemetry=True,
    )
    s.increment("checkout.requests", tags=["region:eu", "payment:card"])
    s.increment("checkout.requests", tags=["region:eu", "payment:card"])
    s.increment("checkout.requests", 3, tags=["region:us", "payment:card"])
    s.decrement("checkout.requests", tags=["region:eu", "payment:card"])  # -1|c: rejected
    s.count("checkout.items", 7)
    s.gauge("queue.depth", 42, tags=["queue:orders"])
    s.gauge("queue.depth", 40, tags=["queue:orders"])
    # DogStatsD has no relative gauges, but "-5|g" is one to tallyd (and statsd_exporter).
    s.gauge("temperature", 10)
    s.gauge("temperature", -5)
    s.gauge_with_timestamp("backlog", 12, 1713804588)  # …|T1713804588
    s.histogram("payload.size", 300, tags=["route:/api"])
    s.histogram("payload.size", 500, tags=["route:/api"])
    s.distribution("render.time", 1.5, tags=["page:home"])
    s.distribution("render.time", 2.5, tags=["page:home"])
    s.timing("db.query", 12.5, tags=["db:main"])
    s.timing("db.query", 250, tags=["db:main"])
    s.set("visitors", "alice")
    s.set("visitors", "bob")
    # Not metrics: "_e{6,14}:Deploy|v1.2.3 shipped|t:info|#…" and "_sc|db.up|0|#…|m:fine|…".
    s.event("Deploy", "v1.2.3 shipped", alert_type="info", tags=["team:web"])
    s.service_check("db.up", DogStatsd.OK, tags=["db:main"], message="fine")
    # timed() reports seconds in an "ms" metric unless use_ms is set.
    with s.timed("job.seconds"):
        time.sleep(0.02)
    with s.timed("job.millis", use_ms=True):
        time.sleep(0.02)
    s.close_socket()


def buffered(host, port):
    # Buffering packs lines into one datagram until flush(); aggregation sums counts and keeps
    # the last gauge per context until flush_aggregated_metrics(). Nothing else is sent.
    s = DogStatsd(
        host,
        port,
        disable_buffering=False,
        disable_aggregation=False,
        flush_interval=60,
        disable_telemetry=True,
    )
    for _ in range(3):
        s.increment("agg.requests", tags=["route:/"])
    s.increment("agg.requests", 2, tags=["route:/cart"])
    s.gauge("agg.workers", 1)
    s.gauge("agg.workers", 7)
    s.histogram("agg.size", 5)
    s.histogram("agg.size", 6)
    s.distribution("agg.latency", 0.5)
    s.flush_aggregated_metrics()
    s.flush()
    s.close_socket()


def untagged(host, port):
    # Lines without tags that still carry extension fields: "plain.requests:1|c|e:…|card:low".
    s = DogStatsd(host, port, cardinality="low", disable_telemetry=True)
    s.increment("plain.requests")
    s.increment("plain.requests")
    s.gauge("plain.depth", 3)
    s.distribution("plain.latency", 0.5)
    s.close_socket()


SCENARIOS = {"unbuffered": unbuffered, "buffered": buffered, "untagged": untagged}

if __name__ == "__main__":
    scenario, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    SCENARIOS[scenario](host, port)
