//! Certificates that rotate: the TLS configuration new connections use, loaded again from the
//! web configuration file when it, or a certificate, key or client CA file it names, changes
//! (a cert-manager renewal, a Kubernetes Secret updated in place). The files are looked at
//! every [`CHECK_EVERY`]; a file that cannot be used keeps the configuration in force, logged
//! and counted.

use arc_swap::ArcSwap;
use rustls::ServerConfig;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tracing::{info, warn};

use super::WebConfig;
use crate::telemetry::Telemetry;

/// How often the files are looked at.
pub const CHECK_EVERY: Duration = Duration::from_secs(1);

/// What tells one version of a file from the next: its inode (a Secret's volume swaps in new
/// files), modification time and length; `None` for a file that cannot be read.
type Stamp = Option<(u64, i64, i64, u64)>;

fn stamp(path: &PathBuf) -> Stamp {
    std::fs::metadata(path)
        .ok()
        .map(|m| (m.ino(), m.mtime(), m.mtime_nsec(), m.len()))
}

/// The TLS configuration in force, and the files it came from as they were.
#[derive(Debug)]
pub struct Rotation {
    config_file: PathBuf,
    current: ArcSwap<ServerConfig>,
    seen: Mutex<Vec<(PathBuf, Stamp)>>,
}

impl Rotation {
    /// The rotation of `web`'s TLS configuration; `None` when it serves plain HTTP.
    pub fn new(web: &WebConfig) -> Option<Rotation> {
        let (tls, config_file) = (web.tls.clone()?, web.path.clone()?);
        Some(Rotation {
            seen: Mutex::new(Self::stamps(&config_file, &web.tls_files)),
            config_file,
            current: ArcSwap::new(tls),
        })
    }

    fn stamps(config_file: &PathBuf, files: &[PathBuf]) -> Vec<(PathBuf, Stamp)> {
        std::iter::once(config_file)
            .chain(files)
            .map(|path| (path.clone(), stamp(path)))
            .collect()
    }

    /// The configuration for a new connection.
    pub fn current(&self) -> Arc<ServerConfig> {
        self.current.load_full()
    }

    /// Loads the configuration again if a file changed since it was last looked at; a new
    /// configuration that works replaces the one in force. Blocking (it reads files).
    pub fn check(&self, telemetry: &Telemetry) {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if seen.iter().all(|(path, was)| stamp(path) == *was) {
            return;
        }
        match WebConfig::load(&self.config_file) {
            Ok(WebConfig {
                tls: Some(tls),
                tls_files,
                ..
            }) => {
                *seen = Self::stamps(&self.config_file, &tls_files);
                self.current.store(tls);
                telemetry.tls_reload(true);
                info!(file = %self.config_file.display(), "TLS certificates loaded again");
            }
            Ok(_) => {
                // TLS cannot be turned off without a restart: the listener stays TLS.
                *seen = Self::stamps(&self.config_file, &[]);
                telemetry.tls_reload(false);
                warn!(file = %self.config_file.display(), "web config file no longer names a certificate; keeping the one in force until a restart");
            }
            Err(e) => {
                // Looked at again when a file changes once more (a renewal written in steps).
                *seen = seen
                    .iter()
                    .map(|(path, _)| (path.clone(), stamp(path)))
                    .collect();
                telemetry.tls_reload(false);
                warn!(error = %e, "TLS certificates not loaded again; keeping the ones in force");
            }
        }
    }
}
