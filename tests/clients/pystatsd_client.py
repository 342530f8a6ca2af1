"""Drives tallyd with pystatsd (the `statsd` package), for tests/clients.rs.

Usage: pystatsd_client.py SCENARIO HOST PORT

Each scenario sends a fixed set of metrics and exits; the Rust test asserts what tallyd makes
of them. The script prints what it cannot know in advance (how many sampled calls were sent).
"""

import random
import sys
from datetime import timedelta

import statsd


def udp(host, port):
    c = statsd.StatsClient(host, port, prefix="app")
    c.incr("requests")  # app.requests:1|c
    c.incr("requests", 4)  # app.requests:4|c
    c.decr("requests")  # app.requests:-1|c: tallyd rejects negative counters
    c.incr("bytes", 1.5)  # a fractional count
    c.gauge("pool.size", 10)  # app.pool.size:10|g
    c.gauge("pool.size", 3, delta=True)  # +3|g
    c.gauge("pool.size", -2, delta=True)  # -2|g
    # A negative absolute gauge: pystatsd sends "0|g" then "-7|g" in one datagram.
    c.gauge("temperature", -7)
    c.timing("db.query", 12.5)  # 12.500000|ms
    c.timing("db.query", timedelta(milliseconds=250))  # 250.000000|ms
    c.set("users", "alice")  # app.users:alice|s
    c.set("users", "bob")
    c.set("users", "alice")  # a member already counted
    with c.timer("block"):  # one timing of whatever this block takes
        sum(range(1000))
    # A pipeline: three lines in one datagram.
    with c.pipeline() as p:
        p.incr("batch.items", 2)
        p.timing("batch.time", 5)
        p.gauge("batch.size", 3)
    c.close()


def sampled(host, port):
    # pystatsd drops a sampled call when random.random() > rate, and otherwise sends it with
    # "|@rate". A fixed seed makes which calls are sent the same on every run.
    random.seed(2025)
    c = statsd.StatsClient(host, port)
    hits = timings = 0
    for _ in range(20):
        before = random.getstate()
        c.incr("sampled.hits", rate=0.5)
        random.setstate(before)
        hits += random.random() <= 0.5
    for _ in range(10):
        before = random.getstate()
        c.timing("sampled.time", 250, rate=0.25)
        random.setstate(before)
        timings += random.random() <= 0.25
    c.close()
    print(f"sent hits={hits} timings={timings}")


def tcp(host, port):
    c = statsd.TCPStatsClient(host, port, prefix="app", timeout=5)
    c.incr("requests", 3)
    c.gauge("pool.size", 10)
    c.gauge("pool.size", -4, delta=True)
    c.timing("db.query", 125)
    c.decr("requests")  # rejected as a negative counter; the connection stays open
    with c.pipeline() as p:  # one write: "a\nb\nc\n"
        p.incr("requests", 2)
        p.timing("db.query", 375)
        p.gauge("pool.size", 1, delta=True)
    c.close()


SCENARIOS = {"udp": udp, "sampled": sampled, "tcp": tcp}

if __name__ == "__main__":
    scenario, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    SCENARIOS[scenario](host, port)
