//! [`RedisStore`]'s options.

use std::sync::{Arc, PoisonError};
use std::time::Duration;

use tollgate_core::DEFAULT_MAX_SCOPES;

use super::RedisStore;

/// The options, shared by a store's clones.
#[derive(Clone, Debug)]
pub(crate) struct Settings {
    pub(crate) prefix: Arc<str>,
    pub(crate) lease_fraction: f64,
    pub(crate) lease_hold: Duration,
    pub(crate) command_timeout: Duration,
    pub(crate) fail_open: bool,
    pub(crate) local_share: f64,
    pub(crate) retry_interval: Duration,
    pub(crate) max_scopes: usize,
}

impl Settings {
    /// How often the worker looks for expired leases and due probes.
    pub(crate) fn tick(&self) -> Duration {
        (self.lease_hold.min(self.retry_interval) / 4)
            .clamp(Duration::from_millis(10), Duration::from_millis(250))
    }
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            prefix: "tollgate:rl".into(),
            lease_fraction: 0.02,
            lease_hold: Duration::from_secs(1),
            command_timeout: Duration::from_millis(250),
            fail_open: true,
            local_share: 1.0,
            retry_interval: Duration::from_secs(1),
            max_scopes: DEFAULT_MAX_SCOPES,
        }
    }
}

impl RedisStore {
    fn configure(self, change: impl FnOnce(&mut Settings)) -> Self {
        let settings = {
            let mut settings = self
                .shared
                .settings
                .write()
                .unwrap_or_else(PoisonError::into_inner);
            change(&mut settings);
            settings.clone()
        };
        // Scopes are rebuilt with the new options.
        let shared = &self.shared;
        let scopes = super::scopes(&shared.table, settings, &shared.clock, &shared.leftovers);
        shared.scopes.store(Arc::new(scopes));
        self
    }

    /// The keys' prefix (default `tollgate:rl`): stores with the same prefix share limits.
    pub fn with_prefix(self, prefix: impl Into<String>) -> Self {
        let prefix: Arc<str> = prefix.into().into();
        self.configure(|s| s.prefix = prefix)
    }

    /// The lease taken with each round trip, as a fraction of each quota (default 0.02; 0 turns
    /// leases off: one round trip per request, exactly the in-memory limits).
    ///
    /// # Panics
    ///
    /// When `fraction` is not within 0..=1.
    pub fn with_lease_fraction(self, fraction: f64) -> Self {
        assert!(
            (0.0..=1.0).contains(&fraction),
            "lease_fraction must be within 0..=1, not {fraction}"
        );
        self.configure(|s| s.lease_fraction = fraction)
    }

    /// How long leased units may wait in this process before going back (default 1 s); also the
    /// refill a leased dimension keeps in reserve.
    pub fn with_lease_hold(self, hold: Duration) -> Self {
        self.configure(|s| s.lease_hold = hold)
    }

    /// How long a Redis command may take before Redis counts as unreachable (default 250 ms).
    pub fn with_command_timeout(self, timeout: Duration) -> Self {
        self.configure(|s| s.command_timeout = timeout)
    }

    /// Whether to keep limiting locally while Redis is unreachable (default: yes), or refuse.
    pub fn with_fail_open(self, fail_open: bool) -> Self {
        self.configure(|s| s.fail_open = fail_open)
    }

    /// The share of each quota one process allows itself while Redis is unreachable (default
    /// 1; set it to 1 / the fleet's size).
    ///
    /// # Panics
    ///
    /// When `share` is not within 0 (excluded) to 1.
    pub fn with_local_share(self, share: f64) -> Self {
        assert!(
            share > 0.0 && share <= 1.0,
            "local_share must be within (0, 1], not {share}"
        );
        self.configure(|s| s.local_share = share)
    }

    /// How often to try Redis again while it is unreachable (default 1 s).
    pub fn with_retry_interval(self, interval: Duration) -> Self {
        self.configure(|s| s.retry_interval = interval)
    }

    /// Keeps at most `max_scopes` scopes in this process (at least one). Those holding no lease
    /// and nothing unsent are forgotten to make room (their state stays in Redis); when every
    /// kept scope is busy, a new scope gets a state of its own that is not kept, whose lease and
    /// unsent changes go back to Redis when its request lets go of it.
    pub fn with_max_scopes(self, max_scopes: usize) -> Self {
        self.configure(|s| s.max_scopes = max_scopes.max(1))
    }
}
