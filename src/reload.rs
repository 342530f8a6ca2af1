//! Reloading the mapping file, on SIGHUP or `POST /-/reload` (with `--web.enable-lifecycle`):
//! the file is read and checked whole; only a valid one replaces the rules in force, which the
//! listeners pick up at their next receive. Every attempt is counted by outcome and logged.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;
use tracing::{error, info};

use crate::ingest::IngestConfig;
use crate::mapping::{Mapper, MappingError};
use crate::telemetry::Telemetry;

/// Loads the mapping file named by the settings, or no rules when none is named.
pub fn load(path: &str) -> Result<Mapper, MappingError> {
    if path.is_empty() {
        Ok(Mapper::default())
    } else {
        Mapper::load(path.as_ref())
    }
}

/// What a reload needs.
#[derive(Debug)]
pub struct Reloader {
    path: PathBuf,
    ingest: Arc<IngestConfig>,
    telemetry: Arc<Telemetry>,
}

impl Reloader {
    /// Reloads `path` into `ingest` when asked.
    pub fn new(path: PathBuf, ingest: Arc<IngestConfig>, telemetry: Arc<Telemetry>) -> Self {
        Reloader {
            path,
            ingest,
            telemetry,
        }
    }

    /// As [`Reloader::reload`], on a blocking thread: compiling a large mapping file takes a
    /// while (a 20,000-rule file about half a second), which must not hold up a runtime worker
    /// and the requests it serves (`/-/healthy`, scrapes). `None` if the reload task was lost
    /// (it panicked, which nothing in it does).
    pub async fn reload_in_background(self: &Arc<Self>) -> Option<Result<usize, MappingError>> {
        let reloader = self.clone();
        tokio::task::spawn_blocking(move || reloader.reload())
            .await
            .ok()
    }

    /// Loads the file again; on success the new rules replace the old and the number of rules
    /// is returned, on failure the old rules stay in force and the error is returned.
    pub fn reload(&self) -> Result<usize, MappingError> {
        if self.path.as_os_str().is_empty() {
            // No mapping file: nothing to reload, nothing to count (as statsd_exporter).
            tracing::warn!("reload asked, but no mapping file is configured");
            return Ok(0);
        }
        match Mapper::load(&self.path) {
            Ok(mapper) => {
                for warning in mapper.warnings() {
                    tracing::warn!("mapping file: {warning}");
                }
                let rules = mapper.len();
                // Before the swap: counts made under the new rules are of the new generation.
                self.telemetry.recent.clear_unmapped();
                self.ingest.mapper.store(Arc::new(mapper));
                self.telemetry.mapping_loaded.set(rules as i64);
                self.telemetry.reload(true);
                self.telemetry.recent.mapping_loaded(SystemTime::now());
                info!(path = %self.path.display(), rules, "mapping file reloaded");
                Ok(rules)
            }
            Err(e) => {
                self.telemetry.reload(false);
                self.telemetry
                    .recent
                    .mapping_failed(SystemTime::now(), e.to_string());
                error!(error = %e, "mapping file reload failed; the previous rules stay in force");
                Err(e)
            }
        }
    }
}
