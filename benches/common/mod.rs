//! Datagrams shaped like the load generator's (`shared/tools/statsd_loadgen.c`): lines for
//! `<prefix>.<i>` with i cycling over `names`, packed into datagrams of at most 1,400 bytes.
#![allow(dead_code)] // each bench uses a part

/// Datagrams of `lines_per_datagram` lines each, `count` of them, cycling over `names` names.
pub fn datagrams(
    suffix: &str,
    prefix: &str,
    names: usize,
    max_bytes: usize,
    count: usize,
) -> Vec<Vec<u8>> {
    let mut out = Vec::with_capacity(count);
    let mut seq = 0usize;
    for _ in 0..count {
        let mut d = Vec::with_capacity(max_bytes);
        loop {
            let line = format!("{prefix}.{}{suffix}", seq % names);
            if !d.is_empty() && d.len() + 1 + line.len() > max_bytes {
                break;
            }
            if !d.is_empty() {
                d.push(b'\n');
            }
            d.extend_from_slice(line.as_bytes());
            seq += 1;
        }
        out.push(d);
    }
    out
}

/// Lines in a datagram.
pub fn lines(datagram: &[u8]) -> u64 {
    datagram.split(|&b| b == b'\n').count() as u64
}

/// Counter datagrams as the load generator sends them (~88 lines each).
pub fn counters(names: usize, count: usize) -> Vec<Vec<u8>> {
    datagrams(":1|c", "app.req", names, 1400, count)
}

/// Timer datagrams as the load generator sends them (~70 lines each).
pub fn timers(names: usize, count: usize) -> Vec<Vec<u8>> {
    datagrams(":12.5|ms", "app.lat", names, 1400, count)
}

/// DogStatsD counters with two tags and a sample rate.
pub fn tagged(names: usize, count: usize) -> Vec<Vec<u8>> {
    datagrams(
        ":1|c|@0.5|#region:eu,tier:web",
        "app.req",
        names,
        1400,
        count,
    )
}
