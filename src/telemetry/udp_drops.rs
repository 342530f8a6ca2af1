//! What the kernel knows about tallyd's UDP sockets: datagrams it dropped because the receive
//! buffer was full, read from `/proc/net/udp` and `/proc/net/udp6` by socket inode and
//! exported as `tallyd_udp_kernel_drops_total`. No StatsD server we know of exports this.

use prometheus::core::{Collector, Desc};
use prometheus::proto::{self, MetricFamily, MetricType};
use std::sync::{Arc, Mutex};

const NAME: &str = "tallyd_udp_kernel_drops_total";
const HELP: &str = "Datagrams the kernel dropped for tallyd's UDP sockets (receive buffer full), from /proc/net/udp.";

/// A collector reading the drop counts of the registered sockets at every scrape. Clones
/// share the sockets they watch.
#[derive(Clone, Debug)]
pub struct UdpDrops {
    desc: Desc,
    inodes: Arc<Mutex<Vec<u64>>>,
}

impl UdpDrops {
    /// A collector with no sockets yet.
    pub fn new() -> Self {
        UdpDrops {
            desc: Desc::new(NAME.into(), HELP.into(), vec![], Default::default())
                .expect("valid static metric"),
            inodes: Arc::default(),
        }
    }

    /// Watches the socket behind `fd`.
    pub fn watch(&self, fd: &impl std::os::fd::AsFd) {
        use std::os::unix::fs::MetadataExt;
        // The socket's inode, as /proc/net/udp lists it.
        let file = fd.as_fd().try_clone_to_owned().map(std::fs::File::from);
        if let Ok(meta) = file.and_then(|f| f.metadata()) {
            self.inodes
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(meta.ino());
        }
    }

    /// Datagrams the kernel dropped so far for the watched sockets.
    pub fn drops(&self) -> u64 {
        let inodes = self
            .inodes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        ["/proc/net/udp", "/proc/net/udp6"]
            .iter()
            .filter_map(|path| std::fs::read_to_string(path).ok())
            .map(|table| drops_in(&table, &inodes))
            .sum()
    }
}

impl Default for UdpDrops {
    fn default() -> Self {
        Self::new()
    }
}

/// Sums the `drops` column (the last) of the rows whose `inode` column (the tenth) is one of
/// `inodes`.
fn drops_in(table: &str, inodes: &[u64]) -> u64 {
    table
        .lines()
        .skip(1)
        .filter_map(|row| {
            let fields: Vec<&str> = row.split_whitespace().collect();
            let inode: u64 = fields.get(9)?.parse().ok()?;
            let drops: u64 = fields.last()?.parse().ok()?;
            inodes.contains(&inode).then_some(drops)
        })
        .sum()
}

impl Collector for UdpDrops {
    fn desc(&self) -> Vec<&Desc> {
        vec![&self.desc]
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let mut counter = proto::Counter::default();
        counter.set_value(self.drops() as f64);
        let mut metric = proto::Metric::default();
        metric.set_counter(counter);
        let mut family = MetricFamily::default();
        family.set_name(NAME.into());
        family.set_help(HELP.into());
        family.set_field_type(MetricType::COUNTER);
        family.set_metric(vec![metric]);
        vec![family]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_drops_of_our_inodes() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops\n\
  100: 0100007F:23A5 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 4242 2 0000000000000000 17\n\
  101: 0100007F:23A6 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 9999 2 0000000000000000 5\n";
        assert_eq!(drops_in(table, &[4242]), 17);
        assert_eq!(drops_in(table, &[4242, 9999]), 22);
        assert_eq!(drops_in(table, &[1]), 0);
    }

    #[test]
    fn a_real_socket_is_found() {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let drops = UdpDrops::new();
        drops.watch(&socket);
        let families = drops.collect();
        assert_eq!(families[0].get_metric()[0].get_counter().get_value(), 0.0);
        assert_eq!(drops.inodes.lock().unwrap().len(), 1);
    }
}
