//! `basic_auth_users`: user names and bcrypt hashes, and the check of an `Authorization`
//! header against them: in constant time for the names, with a password that passed bcrypt
//! remembered per user, a bounded number of checks at once, and every failure as slow as the
//! costliest hash, so that the time taken tells nothing of the names or their costs.

use base64::Engine as _;
use hyper::header::HeaderValue;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use crate::yaml::{Errors, Problem};

/// `basic_auth_users`: user names and bcrypt hashes.
#[derive(Debug)]
pub struct BasicAuth {
    users: Vec<(Vec<u8>, String)>,
    /// The user whose hash has the highest bcrypt cost: what an unknown user is checked
    /// against, and what every failed check takes as long as.
    costliest: usize,
    /// The password that last passed bcrypt, per user (same index as `users`).
    verified: Mutex<Vec<Option<Vec<u8>>>>,
    /// One bcrypt at a time, as in exporter-toolkit: a flood of wrong passwords then costs one
    /// core, not all of them, and scrapes with remembered passwords are not held up.
    bcrypt_turn: tokio::sync::Mutex<()>,
    /// Checks running or waiting for their turn (see [`BasicAuth::check`]).
    checks: AtomicUsize,
    /// How long the last bcrypt of the costliest hash took.
    costliest_time: Mutex<Option<Duration>>,
}

/// What [`BasicAuth::check`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The password of a configured user.
    Allowed,
    /// No credentials, an unknown user or a wrong password.
    Denied,
    /// `web.max_password_checks` checks were already running or waiting: not checked.
    Busy,
}

/// Gives back a check's place when the check ends, or its request is dropped.
struct CheckPlace<'a>(&'a AtomicUsize);

impl Drop for CheckPlace<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl BasicAuth {
    pub(super) fn new(
        users: BTreeMap<String, String>,
        errors: &Errors<'_>,
    ) -> Result<Self, Problem> {
        let mut costs = Vec::with_capacity(users.len());
        for (user, hash) in &users {
            let parts = hash.parse::<bcrypt::HashParts>().map_err(|e| {
                errors.at(
                    format!("basic_auth_users.{user}"),
                    format!("not a bcrypt hash: {e}"),
                )
            })?;
            costs.push(parts.get_cost());
        }
        let costliest = (0..costs.len()).max_by_key(|&i| costs[i]).unwrap_or(0);
        let users: Vec<(Vec<u8>, String)> = users
            .into_iter()
            .map(|(user, hash)| (user.into_bytes(), hash))
            .collect();
        Ok(BasicAuth {
            verified: Mutex::new(vec![None; users.len()]),
            users,
            costliest,
            bcrypt_turn: tokio::sync::Mutex::new(()),
            checks: AtomicUsize::new(0),
            costliest_time: Mutex::new(None),
        })
    }

    /// Whether an `Authorization` header carries the password of a configured user. A
    /// password that passed bcrypt is remembered for its user and answers at once. Otherwise
    /// the check takes a place among `max_checks`, or is [`Verdict::Busy`] without one, and
    /// waits for its turn (one bcrypt at a time); a failed check holds its turn for as long
    /// as a bcrypt of the costliest hash takes, so that neither an unknown user nor a user's
    /// cost shows in the time it takes, alone or beside others.
    pub async fn check(&self, authorization: Option<&HeaderValue>, max_checks: usize) -> Verdict {
        let Some((user, password)) = authorization.and_then(credentials) else {
            return Verdict::Denied;
        };
        // Every name is compared, in constant time, so the time taken does not tell which
        // names exist.
        let mut found = None;
        for (i, (name, _)) in self.users.iter().enumerate() {
            if constant_time_eq(name, &user) {
                found = Some(i);
            }
        }
        if let Some(i) = found {
            let verified = self.verified.lock().unwrap_or_else(|e| e.into_inner());
            if verified[i]
                .as_deref()
                .is_some_and(|known| constant_time_eq(known, &password))
            {
                return Verdict::Allowed;
            }
        }
        if self.checks.fetch_add(1, Ordering::Relaxed) >= max_checks {
            self.checks.fetch_sub(1, Ordering::Relaxed);
            return Verdict::Busy;
        }
        let _place = CheckPlace(&self.checks);
        // A failed check holds the turn for as long as a check of the costliest hash, so that
        // checks in parallel tell no more than one alone.
        let turn = self.bcrypt_turn.lock().await;
        let started = tokio::time::Instant::now();
        // An unknown user is checked against the costliest hash.
        let user = found.unwrap_or(self.costliest);
        if self.bcrypt(user, &password).await {
            if let Some(i) = found {
                self.verified.lock().unwrap_or_else(|e| e.into_inner())[i] = Some(password);
                return Verdict::Allowed;
            }
        }
        // A failure takes as long as one against the costliest hash: measured by checking
        // that hash too, the first time.
        let known = *self
            .costliest_time
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        match known {
            Some(time) => tokio::time::sleep_until(started + time).await,
            None if user != self.costliest => {
                self.bcrypt(self.costliest, &password).await;
            }
            None => {}
        }
        drop(turn);
        Verdict::Denied
    }

    /// Checks `password` against user `i`'s hash off the async workers (bcrypt is
    /// deliberately slow), in the caller's turn; times the costliest hash.
    async fn bcrypt(&self, i: usize, password: &[u8]) -> bool {
        let hash = self.users[i].1.clone();
        let checked = password.to_vec();
        let started = std::time::Instant::now();
        let matches =
            tokio::task::spawn_blocking(move || bcrypt::verify(&checked, &hash).unwrap_or(false))
                .await
                .unwrap_or(false);
        if i == self.costliest {
            *self
                .costliest_time
                .lock()
                .unwrap_or_else(|e| e.into_inner()) = Some(started.elapsed());
        }
        matches
    }
}

/// User and password of `Basic base64(user:password)`.
fn credentials(header: &HeaderValue) -> Option<(Vec<u8>, Vec<u8>)> {
    let value = header.as_bytes();
    let (scheme, encoded) = value.split_at_checked(6)?;
    if !scheme.eq_ignore_ascii_case(b"basic ") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim_ascii())
        .ok()?;
    let colon = decoded.iter().position(|&b| b == b':')?;
    Some((decoded[..colon].to_vec(), decoded[colon + 1..].to_vec()))
}

/// Compares without stopping at the first difference (the length is not secret).
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}
