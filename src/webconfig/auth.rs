//! `basic_auth_users`: user names and bcrypt hashes, and the check of an `Authorization`
//! header against them, in constant time for the names and with a password that passed bcrypt
//! remembered per user.

use base64::Engine as _;
use hyper::header::HeaderValue;
use std::collections::BTreeMap;
use std::sync::Mutex;

use crate::yaml::{Errors, Problem};

/// `basic_auth_users`: user names and bcrypt hashes.
#[derive(Debug)]
pub struct BasicAuth {
    users: Vec<(Vec<u8>, String)>,
    /// The password that last passed bcrypt, per user (same index as `users`).
    verified: Mutex<Vec<Option<Vec<u8>>>>,
    /// One bcrypt at a time, as in exporter-toolkit: a flood of wrong passwords then costs one
    /// core, not all of them, and scrapes with remembered passwords are not held up.
    bcrypt_turn: tokio::sync::Mutex<()>,
}

impl BasicAuth {
    pub(super) fn new(
        users: BTreeMap<String, String>,
        errors: &Errors<'_>,
    ) -> Result<Self, Problem> {
        for (user, hash) in &users {
            hash.parse::<bcrypt::HashParts>().map_err(|e| {
                errors.at(
                    format!("basic_auth_users.{user}"),
                    format!("not a bcrypt hash: {e}"),
                )
            })?;
        }
        let users: Vec<(Vec<u8>, String)> = users
            .into_iter()
            .map(|(user, hash)| (user.into_bytes(), hash))
            .collect();
        Ok(BasicAuth {
            verified: Mutex::new(vec![None; users.len()]),
            users,
            bcrypt_turn: tokio::sync::Mutex::new(()),
        })
    }

    /// Whether an `Authorization` header carries the password of a configured user.
    pub async fn check(&self, authorization: Option<&HeaderValue>) -> bool {
        let Some((user, password)) = authorization.and_then(credentials) else {
            return false;
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
                return true;
            }
        }
        // An unknown user is checked against a real hash too, so that it takes as long as a
        // known user with a wrong password.
        let hash = self.users[found.unwrap_or(0)].1.clone();
        let turn = self.bcrypt_turn.lock().await;
        let checked = password.clone();
        // bcrypt is deliberately slow; it runs off the async workers.
        let matches =
            tokio::task::spawn_blocking(move || bcrypt::verify(&checked, &hash).unwrap_or(false))
                .await
                .unwrap_or(false);
        drop(turn);
        match found {
            Some(i) if matches => {
                self.verified.lock().unwrap_or_else(|e| e.into_inner())[i] = Some(password);
                true
            }
            _ => false,
        }
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
