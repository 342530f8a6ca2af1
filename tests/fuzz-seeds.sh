#!/usr/bin/env bash
# Seeds the fuzz corpora (tests/fuzz/corpus/<target>/) from the test suite, so that fuzzing
# starts from every line the tests already use:
#   - every line and every datagram (paragraph) of tests/golden/*/input.statsd;
#   - every StatsD-looking string literal in tests/*.rs and src/**/tests.rs (byte strings
#     b"…", and "…" strings holding a ':' and a '|'), Rust escapes decoded, `\`-newline
#     continuations joined;
#   - every mapping file (tests/data/mapping/*.yml, tests/golden/*/mapping.yml) and every YAML
#     raw string in the mapping tests, for mapper_yaml;
#   - the StatsD names of all of the above, for mapper.
# Each input gets the leading selector byte its target reads (see tests/fuzz/fuzz_targets/*.rs).
# Files are named by the SHA-1 of their content, as libFuzzer names them: running this again
# adds nothing twice and never deletes what fuzzing has grown.
#
# Usage: bash tests/fuzz-seeds.sh            (from anywhere; needs python3)
set -euo pipefail
cd "$(dirname "$0")/.."

python3 - <<'PY'
import glob, hashlib, os, re

OUT = "tests/fuzz/corpus"

def save(target, data):
    d = os.path.join(OUT, target)
    os.makedirs(d, exist_ok=True)
    path = os.path.join(d, hashlib.sha1(data).hexdigest())
    if not os.path.exists(path):
        with open(path, "wb") as f:
            f.write(data)
        return 1
    return 0

def unescape(body):
    """Decodes the escapes of a Rust (byte) string literal's body to bytes."""
    out = bytearray()
    i = 0
    while i < len(body):
        c = body[i]
        if c != "\\":
            out += c.encode()
            i += 1
            continue
        n = body[i + 1]
        if n == "\n":  # continuation: skip the newline and the next line's indent
            i += 2
            while i < len(body) and body[i] in " \t\r\n":
                i += 1
            continue
        simple = {"n": b"\n", "r": b"\r", "t": b"\t", "\\": b"\\", '"': b'"', "'": b"'", "0": b"\0"}
        if n in simple:
            out += simple[n]
            i += 2
        elif n == "x":
            out.append(int(body[i + 2 : i + 4], 16))
            i += 4
        elif n == "u":
            end = body.index("}", i)
            out += chr(int(body[i + 3 : end], 16)).encode()
            i = end + 1
        else:
            out += ("\\" + n).encode()
            i += 2
    return bytes(out)

LIT = re.compile(r'(b?)"((?:[^"\\]|\\.|\\\n)*)"', re.S)
RAW = re.compile(r'r(#+)"(.*?)"\1', re.S)

datagrams, lines, yamls, names = [], [], [], []

for path in sorted(glob.glob("tests/golden/*/input.statsd")):
    text = open(path, "rb").read()
    for para in re.split(rb"\n\s*\n", text):
        if para.strip():
            datagrams.append((path, para.strip(b"\n")))
    lines += [l for l in text.split(b"\n") if l.strip()]

sources = sorted(glob.glob("tests/*.rs") + glob.glob("src/**/tests.rs", recursive=True))
for path in sources:
    src = open(path, encoding="utf-8").read()
    for raw in RAW.finditer(src):
        body = raw.group(2)
        if "mappings:" in body or "defaults:" in body:
            yamls.append(body.encode())
    # Raw strings out of the way, so their quotes do not confuse the plain-literal scan.
    src = RAW.sub('""', src)
    for m in LIT.finditer(src):
        is_bytes, body = m.group(1), m.group(2)
        try:
            data = unescape(body)
        except (ValueError, IndexError):
            continue
        if not data:
            continue
        statsd = b":" in data and b"|" in data
        if "mappings:" in body or "defaults:" in body:
            yamls.append(data)
        elif statsd or (is_bytes and len(data) < 70000):
            if len(data) > 70000:
                continue
            datagrams.append((path, data))
            lines += [l for l in data.split(b"\n") if l.strip()]
        elif re.fullmatch(r"[A-Za-z0-9_.*$-]+\.[A-Za-z0-9_.*$-]+", body):
            names.append(data)  # e.g. "client.web.request.get" in the mapping tests

for path in sorted(glob.glob("tests/data/mapping/*.yml") + glob.glob("tests/golden/*/mapping.yml")):
    yamls.append(open(path, "rb").read())

def line_class(line):
    t = line.split(b"|")[1].split(b":")[0] if b"|" in line else b""
    return {b"c": 0, b"g": 1, b"s": 1}.get(t, 2)

added = {"parse_line": 0, "mapper": 0, "mapper_yaml": 0, "ingest": 0}
for line in lines:
    for styles in (0x0F, 0x01):
        added["parse_line"] += save("parse_line", bytes([styles]) + line)
    name = line.split(b":")[0]
    for mapper in (0, 1, 2):
        added["mapper"] += save("mapper", bytes([line_class(line) | mapper << 2]) + name)
for name in names:
    for mapper in (0, 2):
        added["mapper"] += save("mapper", bytes([mapper << 2]) + name)
for path, data in datagrams:
    mapping = 0x20 if "golden/mapping" in path else 0x10 if "mapping" in path else 0
    histogram = 0x40 if "histogram" in path else 0
    for extra in (0, 0x80):
        added["ingest"] += save("ingest", bytes([0x0F | mapping | histogram | extra]) + data)
for y in yamls:
    added["mapper_yaml"] += save("mapper_yaml", y)

for target, n in added.items():
    total = len(os.listdir(os.path.join(OUT, target)))
    print(f"{target}: {n} new seeds, {total} in {OUT}/{target}")
PY
