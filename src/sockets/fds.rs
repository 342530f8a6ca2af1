//! File descriptors. tallyd raises its soft open-file limit to the hard one as it starts, as
//! Go programs do, so that what bounds its connections is its own limits
//! (`statsd.tcp_max_connections`, `web.max_connections`), not a soft limit of 1,024 that
//! systemd and many shells set. An accept loop that fails nonetheless (out of descriptors)
//! backs off rather than spin ([`AcceptBackoff`]).

use nix::sys::resource::{getrlimit, setrlimit, Resource};
use std::io;
use std::time::Duration;
use tracing::{info, warn};

use crate::telemetry::{LogLimiter, Telemetry};

/// Accept failures logged per second, across listeners.
static ACCEPT_LOG: LogLimiter = LogLimiter::new(1);
/// The first wait after a failed accept; each further failure doubles it.
const FIRST_WAIT: Duration = Duration::from_millis(5);
/// The longest wait between two accepts that fail.
const LONGEST_WAIT: Duration = Duration::from_secs(1);

/// Raises the soft limit on open files to the hard limit, and logs it; returns the soft
/// limit now in force, if it could be read.
pub fn raise_open_file_limit() -> Option<u64> {
    let (soft, hard) = match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok(limits) => limits,
        Err(e) => {
            warn!(error = %e, "cannot read the open file limit");
            return None;
        }
    };
    if soft >= hard {
        return Some(soft);
    }
    match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
        Ok(()) => {
            info!(
                from = soft,
                to = hard,
                "open file limit raised to the hard limit"
            );
            Some(hard)
        }
        Err(e) => {
            warn!(error = %e, soft, hard, "cannot raise the open file limit");
            Some(soft)
        }
    }
}

/// What an accept loop does after a failed accept: counts it, logs it (at most once a second
/// across listeners), and waits before the next accept, from 5 ms doubling to 1 s, so that a
/// loop that cannot accept (out of file descriptors, most often) neither spins nor floods the
/// log. The loop waits as it sees fit: the StatsD TCP acceptor keeps answering scrapes.
#[derive(Debug, Default)]
pub(crate) struct AcceptBackoff {
    wait: Option<Duration>,
}

impl AcceptBackoff {
    /// An accept succeeded: the next failure waits the shortest time again.
    pub(crate) fn accepted(&mut self) {
        self.wait = None;
    }

    /// An accept of `listener` (`statsd_tcp`, `http`) failed with `error`: counts and logs it;
    /// returns how long to wait before the next accept.
    pub(crate) fn failed(
        &mut self,
        telemetry: &Telemetry,
        listener: &str,
        error: &io::Error,
    ) -> Duration {
        telemetry.accept_errors.with_label_values(&[listener]).inc();
        let wait = self.wait.map_or(FIRST_WAIT, |w| (w * 2).min(LONGEST_WAIT));
        self.wait = Some(wait);
        if let Some(suppressed) = ACCEPT_LOG.allow() {
            warn!(listener, %error, ?wait, suppressed, "accept failed; waiting before the next");
        }
        wait
    }
}
