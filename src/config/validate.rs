//! The checks types cannot express, one section at a time; each failure names the offending
//! key, and the loader adds where its value came from.

use std::time::Duration;

use super::{
    resolve, ActorSettings, LimitSettings, ObserverSettings, RemoteWriteSettings, Settings,
    ShutdownSettings, StatsdSettings, WebSettings,
};

/// The offending key and what is wrong with its value.
pub(super) type Invalid = (&'static str, String);

impl Settings {
    /// Checks every section, in the order their keys are reported.
    pub(super) fn validate(&self) -> Result<(), Invalid> {
        self.check_addresses()?;
        self.web.check()?;
        self.observer.check()?;
        self.statsd.check()?;
        self.limits.check()?;
        self.shutdown.check()?;
        self.actors.check()?;
        self.remote_write.check()
    }

    /// The listen addresses resolve; only the StatsD ones may be empty (disabled).
    fn check_addresses(&self) -> Result<(), Invalid> {
        for (key, addr, may_be_empty) in [
            ("statsd.listen_udp", &self.statsd.listen_udp, true),
            ("statsd.listen_tcp", &self.statsd.listen_tcp, true),
            ("web.listen_address", &self.web.listen_address, false),
        ] {
            if !(may_be_empty && addr.is_empty()) {
                resolve(addr).map_err(|e| (key, e))?;
            }
        }
        Ok(())
    }
}

impl WebSettings {
    fn check(&self) -> Result<(), Invalid> {
        if !self.telemetry_path.starts_with('/') || self.telemetry_path.starts_with("/-/") {
            return Err((
                "web.telemetry_path",
                "must start with / and not with /-/".into(),
            ));
        }
        if self.max_connections == 0 {
            return Err(("web.max_connections", "must be at least 1".into()));
        }
        if self.max_password_checks == 0 {
            return Err(("web.max_password_checks", "must be at least 1".into()));
        }
        for (key, timeout) in [
            ("web.header_timeout", self.header_timeout),
            ("web.request_timeout", self.request_timeout),
        ] {
            if timeout < Duration::from_millis(1) {
                return Err((key, "must be at least 1ms".into()));
            }
        }
        if self.max_header_bytes < 8192 {
            return Err(("web.max_header_bytes", "must be at least 8192".into()));
        }
        Ok(())
    }
}

impl ObserverSettings {
    fn check(&self) -> Result<(), Invalid> {
        let b = &self.buckets;
        if b.is_empty() || b.iter().any(|v| !v.is_finite()) || b.windows(2).any(|w| w[0] >= w[1]) {
            return Err((
                "observer.buckets",
                "must be finite, strictly ascending and not empty".into(),
            ));
        }
        for q in &self.quantiles {
            if !(q.quantile > 0.0 && q.quantile < 1.0 && q.error > 0.0 && q.error < 1.0) {
                return Err((
                    "observer.quantiles",
                    format!(
                        "quantile {} error {}: both must be in (0, 1)",
                        q.quantile, q.error
                    ),
                ));
            }
        }
        if !self.native_histogram_bucket_factor.is_finite() {
            return Err((
                "observer.native_histogram_bucket_factor",
                "must be a finite number (1 or less: no native histograms)".into(),
            ));
        }
        Ok(())
    }
}

impl StatsdSettings {
    fn check(&self) -> Result<(), Invalid> {
        if self.tcp_max_connections == 0 {
            return Err(("statsd.tcp_max_connections", "must be at least 1".into()));
        }
        if self.tcp_max_line_bytes == 0 || self.receive_batch == 0 {
            let key = if self.receive_batch == 0 {
                "statsd.receive_batch"
            } else {
                "statsd.tcp_max_line_bytes"
            };
            return Err((key, "must be at least 1".into()));
        }
        let mode = &self.unixsocket_mode;
        if u32::from_str_radix(mode, 8).map_or(true, |m| m > 0o777) {
            return Err((
                "statsd.unixsocket_mode",
                format!("{mode:?} is not an octal mode like 755"),
            ));
        }
        // The kernel takes an int and doubles it: past 1 GiB a request would wrap.
        if self.read_buffer > 1 << 30 {
            return Err((
                "statsd.read_buffer",
                "must be at most 1073741824 (1 GiB)".into(),
            ));
        }
        if self.receive_coalesce > Duration::from_millis(100) {
            return Err(("statsd.receive_coalesce", "must be at most 100ms".into()));
        }
        if self.event_flush_interval > Duration::from_secs(10) {
            return Err(("statsd.event_flush_interval", "must be at most 10s".into()));
        }
        if self.event_flush_threshold == 0 {
            return Err(("statsd.event_flush_threshold", "must be at least 1".into()));
        }
        if !(64..=65_507).contains(&self.relay_packet_length) {
            return Err((
                "statsd.relay_packet_length",
                "must be between 64 and 65507 (the largest UDP payload)".into(),
            ));
        }
        // Only its form: the name is resolved once, when the relay starts, so that checking
        // a configuration needs no DNS.
        let relay = &self.relay_address;
        let well_formed = relay.rsplit_once(':').is_some_and(|(host, port)| {
            !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0)
        });
        if !relay.is_empty() && !well_formed {
            return Err((
                "statsd.relay_address",
                format!("{relay:?} is not a host:port"),
            ));
        }
        if self.set_window < Duration::from_millis(4) {
            return Err(("statsd.set_window", "must be at least 4ms".into()));
        }
        Ok(())
    }
}

impl LimitSettings {
    fn check(&self) -> Result<(), Invalid> {
        for (key, value) in [
            ("limits.max_series", self.max_series),
            ("limits.max_series_per_family", self.max_series_per_family),
            ("limits.max_tags_per_line", self.max_tags_per_line),
            ("limits.max_label_bytes", self.max_label_bytes),
            ("limits.max_queued_updates", self.max_queued_updates),
            ("limits.max_live_families", self.max_live_families),
        ] {
            if value == 0 {
                return Err((key, "must be at least 1".into()));
            }
        }
        if !(64..=65_535).contains(&self.max_datagram_bytes) {
            return Err((
                "limits.max_datagram_bytes",
                "must be between 64 and 65535".into(),
            ));
        }
        Ok(())
    }
}

impl ShutdownSettings {
    fn check(&self) -> Result<(), Invalid> {
        if self.grace_period > Duration::from_secs(600) {
            return Err(("shutdown.grace_period", "must be at most 10m".into()));
        }
        Ok(())
    }
}

impl ActorSettings {
    fn check(&self) -> Result<(), Invalid> {
        let p = self.publish_interval;
        if p.is_zero() || p > Duration::from_secs(60) {
            return Err((
                "actors.publish_interval",
                "must be more than 0 and at most 60s".into(),
            ));
        }
        Ok(())
    }
}

impl RemoteWriteSettings {
    /// The URL (when set), headers and labels are well formed, the numbers in range, and the
    /// credentials and certificates come in their pairs; the files are read when the push
    /// starts (and at each push, for the credentials).
    fn check(&self) -> Result<(), Invalid> {
        if !self.url.is_empty() {
            let uri: Option<hyper::Uri> = self.url.parse().ok();
            let usable = uri.as_ref().is_some_and(|uri| {
                matches!(uri.scheme_str(), Some("http" | "https")) && uri.host().is_some()
            });
            if !usable {
                return Err((
                    "remote_write.url",
                    format!("{:?} is not an http:// or https:// URL", self.url),
                ));
            }
            if uri
                .and_then(|u| u.authority().cloned())
                .is_some_and(|a| a.as_str().contains('@'))
            {
                return Err((
                    "remote_write.url",
                    "holds credentials: give them with the basic auth or bearer token settings"
                        .into(),
                ));
            }
        }
        if self.interval < Duration::from_millis(100) {
            return Err(("remote_write.interval", "must be at least 100ms".into()));
        }
        if self.timeout < Duration::from_millis(1) {
            return Err(("remote_write.timeout", "must be at least 1ms".into()));
        }
        if self.max_samples_per_send == 0 {
            return Err((
                "remote_write.max_samples_per_send",
                "must be at least 1".into(),
            ));
        }
        if self.queue_bytes < 64 << 10 {
            return Err(("remote_write.queue_bytes", "must be at least 65536".into()));
        }
        for header in &self.headers {
            crate::remote_write::header(header).map_err(|e| ("remote_write.headers", e))?;
        }
        for label in &self.labels {
            crate::remote_write::label(label).map_err(|e| ("remote_write.labels", e))?;
        }
        if !self.bearer_token_file.is_empty() && !self.basic_auth_username.is_empty() {
            return Err((
                "remote_write.bearer_token_file",
                "bearer token and basic auth exclude each other".into(),
            ));
        }
        if self.tls_cert_file.is_empty() != self.tls_key_file.is_empty() {
            return Err((
                "remote_write.tls_cert_file",
                "a client certificate needs tls_key_file, and a key tls_cert_file".into(),
            ));
        }
        Ok(())
    }
}
