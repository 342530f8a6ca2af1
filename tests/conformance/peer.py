#!/usr/bin/env python3
"""Runs the conformance cases under tests/conformance/ against the real statsd_exporter.

Every case goes through a fresh statsd_exporter process (one per transport for files with
`transports`), the way tests/conformance.rs runs tallyd: its packets are sent over real UDP or
TCP sockets, /metrics is scraped and parsed, and the user series are compared with the case's
`expect` (or, for `lookups`, what each lookup changed).  Every case where statsd_exporter shows
something else is reported, with what it shows, written as `expect`/`lookups` entries.

    python3 tests/conformance/peer.py --peer /path/to/statsd_exporter [--only SUBSTRING]

A case where tallyd differs on purpose keeps statsd_exporter's result in `expect` (checked here
like any other) and tallyd's in `tallyd`.  Exit status: 0 when every case agrees, 1 otherwise.

How a packet is known to be applied: statsd_exporter has no barrier, so after each packet the
script waits until its own counters show the packet read (statsd_exporter_udp_packets_total or
statsd_exporter_tcp_connections_total, and statsd_exporter_lines_total), then sends a sentinel
datagram `peer_sentinel_K:-K.25|c` and waits for the exporter's debug log to show that event
handled (a negative counter is refused before anything is registered, so it exposes nothing).
Events reach the exporter through one queue, flushed at once (--statsd.event-flush-threshold=1),
and are applied in order by one goroutine, so the sentinel's log line means every event before it
is on /metrics.  Where a mapping drops the sentinel (no log line), the script falls back to
waiting until statsd_exporter's event counters stay still.

A case with `bytes: true` may carry bytes that are not UTF-8: in its `in` packets each `\\xNN`
(backslash, x, two hex digits, literally in the string) is sent as the byte 0xNN.

Needs Python 3.8+ and PyYAML.
"""

import argparse
import math
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

try:
    import yaml
except ImportError:
    sys.exit(
        "peer.py needs PyYAML, which is not importable here. Install it with\n"
        "  python3 -m pip install --user pyyaml\n"
        "or into a virtual environment:\n"
        "  python3 -m venv /tmp/peer-venv && /tmp/peer-venv/bin/pip install pyyaml\n"
        "  /tmp/peer-venv/bin/python tests/conformance/peer.py --peer ...\n"
        "(Debian/Ubuntu: apt-get install python3-yaml)"
    )

ROOT = os.path.dirname(os.path.abspath(__file__))
DEADLINE = 10.0
OWN_PREFIXES = ("statsd_exporter_", "statsd_metric_mapper_", "go_", "process_", "promhttp_")


# --- YAML, read as YAML 1.2 (like the Rust runner's serde_saphyr), not PyYAML's YAML 1.1 -----

class Loader(yaml.SafeLoader):
    pass


Loader.yaml_implicit_resolvers = {
    k: [(tag, rx) for tag, rx in v
        if tag not in ("tag:yaml.org,2002:bool", "tag:yaml.org,2002:int",
                       "tag:yaml.org,2002:float")]
    for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
    list("tTfF"))
Loader.add_implicit_resolver(
    "tag:yaml.org,2002:int", re.compile(r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$"),
    list("-+0123456789"))
Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
               r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"),
    list("-+0123456789."))


def _construct_int(loader, node):
    text = loader.construct_scalar(node)
    return int(text, 0) if text.startswith(("0o", "0x")) else int(text)


def _construct_float(loader, node):
    text = loader.construct_scalar(node).lower()
    special = {".inf": math.inf, "+.inf": math.inf, "-.inf": -math.inf, ".nan": math.nan}
    return special[text] if text in special else float(text)


Loader.add_constructor("tag:yaml.org,2002:int", _construct_int)
Loader.add_constructor("tag:yaml.org,2002:float", _construct_float)


def duration(text):
    """humantime-style `2.5s`, `100ms`, `1m2s` in seconds."""
    if isinstance(text, (int, float)):
        return float(text)
    total, rest = 0.0, str(text).replace(" ", "")
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "us": 1e-6, "ns": 1e-9}
    for number, unit in re.findall(r"([0-9.]+)([a-z]+)", rest):
        total += float(number) * units[unit]
    return total


# --- the exposition ---------------------------------------------------------------------------

def _unescape(value):
    out, i = [], 0
    while i < len(value):
        c = value[i]
        if c == "\\" and i + 1 < len(value):
            nxt = value[i + 1]
            out.append("\n" if nxt == "n" else nxt)
            i += 2
        else:
            out.append(c)
            i += 1
    return "".join(out)


def _parse_sample(line):
    brace = line.find("{")
    space = line.find(" ")
    labels = {}
    if brace != -1 and (space == -1 or brace < space):
        name, i = line[:brace], brace + 1
        while line[i] != "}":
            eq = line.index("=", i)
            key = line[i:eq].strip().lstrip(",").strip()
            j = eq + 2  # past ="
            start = j
            while line[j] != '"':
                j += 2 if line[j] == "\\" else 1
            labels[key] = _unescape(line[start:j])
            i = j + 1
            if line[i] == ",":
                i += 1
        rest = line[i + 1:].strip()
    else:
        name, rest = line[:space], line[space + 1:].strip()
    value = rest.split()[0]
    value = {"+Inf": math.inf, "-Inf": -math.inf, "NaN": math.nan}.get(value) \
        if value in ("+Inf", "-Inf", "NaN") else float(value)
    return name, labels, value


def own(name):
    return name.startswith(OWN_PREFIXES)


class Scrape:
    """A scrape: user samples by (name, labels), each user family's type, and the exporter's
    own samples."""

    def __init__(self, text):
        self.text = text
        self.samples = {}
        self.types = {}
        self.internal = {}
        for line in text.splitlines():
            if line.startswith("# TYPE "):
                name, kind = line[7:].split(" ", 1)
                if not own(name):
                    self.types[name] = kind.strip()
                continue
            if not line or line.startswith("#"):
                continue
            name, labels, value = _parse_sample(line)
            key = (name, tuple(sorted(labels.items())))
            (self.internal if own(name) else self.samples)[key] = value

    def family(self, sample):
        if sample in self.types:
            return sample, self.types[sample]
        for suffix in ("_sum", "_count", "_bucket"):
            if sample.endswith(suffix) and sample[: -len(suffix)] in self.types:
                base = sample[: -len(suffix)]
                return base, self.types[base]
        return sample, "untyped"

    def key(self, name, labels):
        family, kind = self.family(name)
        return family, kind, tuple((k, v) for k, v in labels if k not in ("le", "quantile"))

    def series(self):
        return {self.key(n, l) for n, l in self.samples}

    def get(self, name, labels):
        return self.samples.get((name, labels))

    def bounds(self, key, label):
        out = []
        for name, labels in self.samples:
            if self.key(name, labels) == key:
                v = dict(labels).get(label)
                if v is not None:
                    try:
                        f = float(v)
                    except ValueError:
                        continue
                    if math.isfinite(f):
                        out.append(f)
        return sorted(out)

    def own_sum(self, name, **match):
        total = 0.0
        for (n, labels), v in self.internal.items():
            if n == name and all(dict(labels).get(k) == w for k, w in match.items()):
                total += v
        return total


def close(got, want):
    return got == want or abs(got - want) <= max(abs(want), 1e-12) * 1e-9


# --- how a series is written in a case file ---------------------------------------------------

def num(v):
    if v is None:
        return "null"
    if isinstance(v, float) and v.is_integer() and abs(v) < 1e15:
        return str(int(v))
    return repr(v)


def yaml_str(s):
    if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", s) and s.lower() not in (
            "true", "false", "null", "yes", "no", "on", "off", "y", "n", "value"):
        return s
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def labels_yaml(labels):
    return "{" + ", ".join(f"{yaml_str(k)}: {yaml_str(v)}" for k, v in labels) + "}"


def expect_entry(scrape, key):
    family, kind, labels = key
    head = f"{kind}: {yaml_str(family)}"
    if labels:
        head += f", labels: {labels_yaml(labels)}"
    if kind in ("counter", "gauge", "untyped"):
        return "{" + head + f", value: {num(scrape.get(family, labels))}" + "}"
    return ("{" + head + f", count: {num(scrape.get(family + '_count', labels))}"
            f", sum: {num(scrape.get(family + '_sum', labels))}" + "}")


def shown(scrape):
    return [expect_entry(scrape, k) for k in sorted(scrape.series())]


# --- a statsd_exporter process ----------------------------------------------------------------

_port_lock = threading.Lock()
_ports_given = set()


def free_port():
    """A loopback port free for both TCP and UDP, not handed out before in this run."""
    with _port_lock:
        for _ in range(200):
            t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            t.bind(("127.0.0.1", 0))
            port = t.getsockname()[1]
            u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                u.bind(("127.0.0.1", port))
            except OSError:
                continue
            finally:
                t.close()
                u.close()
            if port not in _ports_given:
                _ports_given.add(port)
                return port
    raise RuntimeError("no free port")


class StartError(Exception):
    pass


class CaseError(Exception):
    pass


SENTINEL_NEGATIVE = re.compile(r'msg="counter must be non-negative value".*event_value=(\S+)')
SENTINEL_EMPTY = re.compile(r'msg="The mapping generates an empty metric name".*'
                            r'metric_name=(peer_sentinel_\d+)')
_sentinel_lock = threading.Lock()
_sentinel_next = [1000]


class Peer:
    def __init__(self, binary, args):
        last = None
        for _ in range(3):
            self.http, self.statsd = free_port(), free_port()
            cmd = [binary,
                   f"--web.listen-address=127.0.0.1:{self.http}",
                   f"--statsd.listen-udp=127.0.0.1:{self.statsd}",
                   f"--statsd.listen-tcp=127.0.0.1:{self.statsd}",
                   "--statsd.event-flush-threshold=1",
                   "--statsd.event-flush-interval=50ms",
                   "--log.level=debug"] + list(args)
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL,
                                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            self.log = []
            self.cond = threading.Condition()
            threading.Thread(target=self._read_log, daemon=True).start()
            try:
                self._wait_ready()
                break
            except StartError as e:
                last = e
                if "address already in use" not in str(e):
                    raise
        else:
            raise last
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sent_udp = 0
        self.sent_tcp = 0
        self.sent_lines = 0
        self.fallbacks = 0

    def _read_log(self):
        for raw in self.proc.stderr:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            with self.cond:
                self.log.append(line)
                self.cond.notify_all()

    def log_text(self):
        with self.cond:
            return "\n".join(self.log)

    def _wait_ready(self):
        start = time.monotonic()
        while time.monotonic() - start < DEADLINE:
            if self.proc.poll() is not None:
                time.sleep(0.05)
                raise StartError(f"exited with status {self.proc.returncode}:\n"
                                 + self.log_text())
            try:
                self.scrape_text()
                return
            except OSError:
                time.sleep(0.02)
        self.stop()
        raise StartError("/metrics did not answer within %ss:\n%s" % (DEADLINE, self.log_text()))

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        try:
            self.udp.close()
        except AttributeError:
            pass

    def scrape_text(self):
        with urllib.request.urlopen(f"http://127.0.0.1:{self.http}/metrics", timeout=5) as r:
            return r.read().decode("utf-8")

    def scrape(self):
        return Scrape(self.scrape_text())

    def _send_udp(self, data):
        self.udp.sendto(data, ("127.0.0.1", self.statsd))
        self.sent_udp += 1
        self.sent_lines += len(data.split(b"\n"))

    def _wait_read(self):
        """Until statsd_exporter counts every datagram, connection and line sent."""
        start = time.monotonic()
        while True:
            s = self.scrape()
            got = (s.own_sum("statsd_exporter_udp_packets_total"),
                   s.own_sum("statsd_exporter_tcp_connections_total"),
                   s.own_sum("statsd_exporter_lines_total"))
            if s.own_sum("statsd_exporter_udp_packet_drops_total"):
                raise CaseError("statsd_exporter dropped a UDP packet")
            if got == (self.sent_udp, self.sent_tcp, self.sent_lines):
                return
            if time.monotonic() - start > DEADLINE:
                raise CaseError(f"packets not read within {DEADLINE}s: counters {got}, sent "
                                f"{(self.sent_udp, self.sent_tcp, self.sent_lines)}")
            time.sleep(0.005)

    def _handled(self, s):
        return (s.own_sum("statsd_exporter_events_total")
                + s.own_sum("statsd_exporter_events_conflict_total")
                + s.own_sum("statsd_exporter_events_error_total")
                + s.own_sum("statsd_exporter_events_actions_total", action="drop"))

    def barrier(self):
        """Until every event of what was sent is applied (see the module's doc)."""
        self._wait_read()
        time.sleep(0.01)  # the last line read may still be being parsed and queued
        with _sentinel_lock:
            k = _sentinel_next[0]
            _sentinel_next[0] += 1
        value = -(k + 0.25)
        with self.cond:
            seen = len(self.log)
        self._send_udp(f"peer_sentinel_{k}:{value!r}|c".encode())
        start = time.monotonic()
        with self.cond:
            while time.monotonic() - start < 1.0:
                for line in self.log[seen:]:
                    m = SENTINEL_NEGATIVE.search(line)
                    if m:
                        try:
                            if float(m.group(1)) == value:
                                return
                        except ValueError:
                            pass
                    m = SENTINEL_EMPTY.search(line)
                    if m and m.group(1) == f"peer_sentinel_{k}":
                        return
                self.cond.wait(0.05)
        # The mapping dropped (or rescaled) the sentinel: wait for the counters to stay still.
        self.fallbacks += 1
        self._wait_read()
        last, still = None, 0
        start = time.monotonic()
        while still < 4:
            h = self._handled(self.scrape())
            still = still + 1 if h == last else 0
            last = h
            if time.monotonic() - start > DEADLINE:
                raise CaseError("statsd_exporter's event counters did not settle")
            time.sleep(0.05)

    def send(self, transport, packet):
        """Sends one packet (str, UTF-8-encoded, or bytes as they are) and waits until it is
        applied."""
        data = packet if isinstance(packet, bytes) else packet.encode("utf-8")
        if transport == "udp":
            self._send_udp(data)
        else:
            with socket.create_connection(("127.0.0.1", self.statsd), timeout=5) as s:
                s.sendall(data)
            self.sent_tcp += 1
            lines = data.split(b"\n")
            if lines and lines[-1] == b"":
                lines.pop()
            self.sent_lines += len(lines)
        self.barrier()
        return self.scrape()


# --- a case -----------------------------------------------------------------------------------

RAW_BYTE = re.compile(r"\\x([0-9a-fA-F]{2})")


def packet_bytes(case, packet):
    """A packet of `in` as the bytes sent: UTF-8, except that with `bytes: true` each `\\xNN`
    (backslash, x, two hex digits, literally in the string) is the byte 0xNN."""
    text = str(packet)
    raw = case.get("bytes", False)
    if not isinstance(raw, bool):
        raise CaseError(f"`bytes` is true or false, not {raw!r}")
    if not raw:
        return text.encode("utf-8")
    out, last = bytearray(), 0
    for m in RAW_BYTE.finditer(text):
        out += text[last:m.start()].encode("utf-8")
        out.append(int(m.group(1), 16))
        last = m.end()
    out += text[last:].encode("utf-8")
    return bytes(out)


def expected_key(e):
    kinds = [k for k in ("counter", "gauge", "summary", "histogram") if e.get(k) is not None]
    if len(kinds) != 1:
        raise CaseError("an expect entry names exactly one of counter, gauge, summary, histogram")
    kind = kinds[0]
    labels = tuple(sorted((str(k), str(v)) for k, v in (e.get("labels") or {}).items()))
    return (str(e[kind]), kind, labels)


def check_expect(scrape, expect):
    """The differences between what a scrape shows and `expect`, as lines (none: agrees)."""
    wanted = {}
    for e in expect:
        wanted[expected_key(e)] = e
    have = scrape.series()
    problems = []
    for k in sorted(set(wanted) - have):
        problems.append(f"missing: {k}")
    for k in sorted(have - set(wanted)):
        problems.append(f"unexpected: {expect_entry(scrape, k)}")
    for key in sorted(set(wanted) & have):
        name, kind, labels = key
        e = wanted[key]
        if kind in ("counter", "gauge"):
            checks = [(name, e.get("value"))]
        else:
            checks = [(name + "_count", e.get("count")), (name + "_sum", e.get("sum"))]
        for sample, want in checks:
            if want is None:
                continue
            got = scrape.get(sample, labels)
            if got is None or not close(got, float(want)):
                problems.append(f"{sample}{dict(labels)} is {num(got)}, expected {num(want)}")
    return problems


def lookup_line(lookup, value):
    suffix = {None: "c", "counter": "c", "gauge": "g", "observer": "h"}.get(lookup.get("type"))
    if suffix is None:
        raise CaseError(f"unknown lookup type {lookup.get('type')}")
    return f"{lookup['metric']}:{value}|{suffix}"


def changed_keys(before, after):
    out = set()
    for (name, labels), v in after.samples.items():
        old = before.samples.get((name, labels))
        if old is None or not (old == v or (math.isnan(old) and math.isnan(v))):
            out.add(after.key(name, labels))
    return out


def describe_lookup(after, lookup, changed):
    """What a lookup did, as a lookups entry."""
    parts = [f"metric: {yaml_str(str(lookup['metric']))}"]
    if lookup.get("type"):
        parts.append(f"type: {lookup['type']}")
    if not changed:
        return "{" + ", ".join(parts + ["dropped: true"]) + "}"
    descs = []
    for family, kind, labels in sorted(changed):
        p = list(parts) + [f"name: {yaml_str(family)}"]
        if labels:
            p.append(f"labels: {labels_yaml(labels)}")
        if kind in ("summary", "histogram"):
            p.append(f"observer: {kind}")
            label = "le" if kind == "histogram" else "quantile"
            p.append(f"{'buckets' if kind == 'histogram' else 'quantiles'}: "
                     f"[{', '.join(num(b) for b in after.bounds((family, kind, labels), label))}]")
        elif kind != ("gauge" if lookup.get("type") == "gauge" else "counter"):
            p.append(f"(exposed as {kind})")
        descs.append("{" + ", ".join(p) + "}")
    return " + ".join(descs)


def check_lookup(before, after, lookup, value):
    changed = changed_keys(before, after)
    name = lookup.get("name")
    if name is None:
        if not lookup.get("dropped"):
            return "a lookup has `name` or `dropped: true`"
        return None if not changed else f"dropped, yet changed {sorted(changed)}"
    kind = {"gauge": "gauge", "observer": lookup.get("observer") or "summary"}.get(
        lookup.get("type"), "counter")
    labels = tuple(sorted((str(k), str(v)) for k, v in (lookup.get("labels") or {}).items()))
    key = (str(name), kind, labels)
    if changed != {key}:
        return f"expected {key} to change; changed: {sorted(changed)}"
    for field, label in (("buckets", "le"), ("quantiles", "quantile")):
        if lookup.get(field) is not None:
            got = after.bounds(key, label)
            want = [float(b) for b in lookup[field]]
            if got != want:
                return f"{field} {got}, expected {want}"
    if lookup.get("scale") is not None:
        # The observation (or, for a counter or gauge, the increment) N becomes N x scale.
        # tests/conformance.rs only looks at NAME_sum, which a counter or gauge does not have.
        sample = f"{name}_sum" if kind in ("summary", "histogram") else str(name)
        delta = (after.get(sample, labels) or 0.0) - (before.get(sample, labels) or 0.0)
        want = value * float(lookup["scale"])
        if not close(delta, want):
            return f"{sample} grew by {num(delta)}, expected {num(want)}"
    return None


_mapping_next = [0]


def mapping_file(tmp, case, text):
    with _sentinel_lock:
        n = _mapping_next[0]
        _mapping_next[0] += 1
    path = os.path.join(tmp, f"{n}-{re.sub(r'[^A-Za-z0-9]', '', case['name'])}.yml")
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    return path


def run_case(binary, tmp, file, case, transport):
    """(status, detail): status is pass, fail or error; detail lists what differs and what
    statsd_exporter shows."""
    args = [str(a) for a in (file.get("args") or [])] + [str(a) for a in (case.get("args") or [])]
    if case.get("mapping") is not None:
        args.append(f"--statsd.mapping-config={mapping_file(tmp, case, case['mapping'])}")
    if case.get("refused"):
        port = free_port()
        proc = subprocess.run(
            [binary, "--check-config", f"--web.listen-address=127.0.0.1:{free_port()}",
             f"--statsd.listen-udp=127.0.0.1:{port}", f"--statsd.listen-tcp=127.0.0.1:{port}"]
            + args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            timeout=DEADLINE)
        out = proc.stdout.decode("utf-8", "replace").strip()
        if re.search(r"unknown (long )?flag|error: ", out) and "error loading config" not in out:
            return "error", [f"statsd_exporter does not accept the flags {args}: {out}"]
        if proc.returncode == 0:
            return "fail", ["statsd_exporter accepts this mapping file (--check-config exits 0)"]
        return "pass", []
    try:
        peer = Peer(binary, args)
    except StartError as e:
        text = str(e)
        if re.search(r"unknown (long )?flag|expected argument|error: ", text):
            return "error", [f"statsd_exporter does not accept the flags {args}: {text}"]
        return "fail", [f"statsd_exporter does not start: {text}"]
    try:
        if case.get("lookups") is not None:
            before = peer.scrape()
            problems, actual = [], []
            for i, lookup in enumerate(case["lookups"], 1):
                line = lookup_line(lookup, i)
                after = peer.send(transport, line)
                problem = check_lookup(before, after, lookup, float(i))
                actual.append(describe_lookup(after, lookup, changed_keys(before, after)))
                if problem:
                    problems.append(f"lookup {i} {line!r}: {problem}")
                before = after
            if problems:
                return "fail", problems + ["statsd_exporter shows, lookup by lookup:"] + \
                    [f"  - {a}" for a in actual]
            return "pass", []
        packets = case.get("in")
        packets = [] if packets is None else [packets] if isinstance(packets, str) else packets
        scrape = peer.scrape()
        for packet in packets:
            data = packet_bytes(case, packet)
            if data == b"":
                continue  # an empty packet carries nothing to wait for
            scrape = peer.send(transport, data)
        if case.get("wait") is not None:
            time.sleep(duration(case["wait"]))
            scrape = peer.scrape()
        problems = check_expect(scrape, case.get("expect") or [])
        if problems:
            entries = shown(scrape)
            return "fail", problems + ["statsd_exporter shows:",
                                       "  expect: []" if not entries else "  expect:"] + \
                [f"    - {e}" for e in entries]
        return "pass", []
    except CaseError as e:
        return "error", [str(e), peer.log_text()[-3000:]]
    finally:
        peer.stop()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--peer", required=True, help="the statsd_exporter binary")
    ap.add_argument("--only", help="run only the cases whose label contains this")
    ap.add_argument("--jobs", type=int, default=3, help="cases run at once (default 3)")
    ap.add_argument("--dir", default=ROOT, help="the case files' directory")
    opts = ap.parse_args()
    binary = os.path.abspath(opts.peer)
    if not os.access(binary, os.X_OK):
        sys.exit(f"{binary} is not an executable")

    paths = []
    for dirpath, _, names in os.walk(opts.dir):
        paths += [os.path.join(dirpath, n) for n in names if n.endswith(".yml")]
    paths.sort()
    work = []
    for path in paths:
        with open(path, encoding="utf-8") as f:
            file = yaml.load(f, Loader=Loader)
        rel = os.path.relpath(path, opts.dir)
        transports = file.get("transports") or ["udp"]
        for case in file["cases"]:
            for transport in transports:
                label = f"{rel}: {case['name']} ({transport.capitalize()})"
                if opts.only is None or opts.only in label:
                    work.append((label, file, case, transport))
    if not work:
        sys.exit("no case matches")

    with tempfile.TemporaryDirectory(prefix="peer-conformance-") as tmp:
        def one(item):
            label, file, case, transport = item
            try:
                status, detail = run_case(binary, tmp, file, case, transport)
            except Exception as e:  # noqa: BLE001 - reported, not raised
                status, detail = "error", [f"{type(e).__name__}: {e}"]
            return label, case, status, detail

        with ThreadPoolExecutor(max_workers=max(1, opts.jobs)) as pool:
            results = list(pool.map(one, work))

    counts = {"pass": 0, "fail": 0, "error": 0}
    for label, case, status, detail in results:
        counts[status] += 1
        if status != "pass":
            print(f"{status.upper()} {label}:")
            print("\n".join("    " + d for d in detail))
    print(f"\n{len(results)} cases: {counts['pass']} agree with statsd_exporter, "
          f"{counts['fail']} differ, {counts['error']} could not be run")
    sys.exit(0 if counts["fail"] == 0 and counts["error"] == 0 else 1)


if __name__ == "__main__":
    main()
