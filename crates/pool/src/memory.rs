//! What a request's retries avoid: the members that failed it, by its idempotency key, for a
//! minute, so that a retry from a layer above goes to another member first.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

/// How long the pool remembers which members failed a request, for its retries.
const REMEMBER: Duration = Duration::from_secs(60);
/// Requests remembered at most.
const REMEMBERED: usize = 10_000;

/// Members that failed a request, by its idempotency key.
#[derive(Debug, Default)]
pub(crate) struct Failures {
    failed: Mutex<HashMap<String, (Instant, Vec<usize>)>>,
}

impl Failures {
    /// The members that failed the request with this key in the last minute.
    pub(crate) fn remembered(&self, key: &str) -> Vec<usize> {
        let mut failed = self.failed.lock().unwrap_or_else(PoisonError::into_inner);
        match failed.get(key) {
            Some((at, members)) if at.elapsed() < REMEMBER => members.clone(),
            Some(_) => {
                failed.remove(key);
                Vec::new()
            }
            None => Vec::new(),
        }
    }

    /// `member` failed the request with this key.
    pub(crate) fn remember(&self, key: &str, member: usize) {
        let mut failed = self.failed.lock().unwrap_or_else(PoisonError::into_inner);
        if failed.len() >= REMEMBERED {
            failed.retain(|_, (at, _)| at.elapsed() < REMEMBER);
            if failed.len() >= REMEMBERED {
                failed.clear();
            }
        }
        let entry = failed
            .entry(key.to_owned())
            .or_insert_with(|| (Instant::now(), Vec::new()));
        entry.0 = Instant::now();
        if !entry.1.contains(&member) {
            entry.1.push(member);
        }
    }
}
