//! [`PoolBuilder`]: the members and the pool's options.

use std::fmt;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex};

#[cfg(doc)]
use tollgate_core::{OutcomeKind, Repeat};

use crate::affinity::{AffinityConfig, DEFAULT_MAX_LOAD_PERCENT, KeySources, Rendezvous};
use crate::failover::WhenExhausted;
use crate::health::{Cooldowns, Health};
use crate::member::Member;
use crate::memory::Failures;
use crate::metrics::MemberMetrics;
use crate::pool::{Pool, Shared};
use crate::select::Policy;
use crate::sharing::Sharing;

/// Builds a [`Pool`].
pub struct PoolBuilder<S> {
    members: Vec<(Member, S)>,
    policy: Policy,
    cooldowns: Cooldowns,
    when_exhausted: WhenExhausted,
    max_attempts: Option<usize>,
    resend_unanswered: bool,
    affinity: Option<KeySources>,
    #[cfg(feature = "redis")]
    shared: Option<crate::fleet::RedisPoolState>,
}

impl<S> fmt::Debug for PoolBuilder<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PoolBuilder")
            .field(
                "members",
                &self.members.iter().map(|(m, _)| m).collect::<Vec<_>>(),
            )
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl<S> Default for PoolBuilder<S> {
    fn default() -> Self {
        Self {
            members: Vec::new(),
            policy: Policy::default(),
            cooldowns: Cooldowns::default(),
            when_exhausted: WhenExhausted::default(),
            max_attempts: None,
            resend_unanswered: false,
            affinity: None,
            #[cfg(feature = "redis")]
            shared: None,
        }
    }
}

impl<S> PoolBuilder<S> {
    /// Adds a member, served by `service` (its own stack: breaker, limiter, client).
    pub fn member(mut self, member: Member, service: S) -> Self {
        self.members.push((member, service));
        self
    }

    /// How members are picked (default: healthiest).
    pub fn policy(mut self, policy: Policy) -> Self {
        self.policy = policy;
        self
    }

    /// How long each outcome takes a member out of rotation.
    pub fn cooldowns(mut self, cooldowns: Cooldowns) -> Self {
        self.cooldowns = cooldowns;
        self
    }

    /// What a request does when no member may serve it (default: wait).
    pub fn when_exhausted(mut self, when: WhenExhausted) -> Self {
        self.when_exhausted = when;
        self
    }

    /// Members tried per request at most (default: all of them).
    pub fn max_attempts(mut self, attempts: usize) -> Self {
        self.max_attempts = Some(attempts.max(1));
        self
    }

    /// Whether a billed request (generation, embeddings) whose connection to a member broke
    /// after it may have been sent ([`ConnectionLost`](OutcomeKind::ConnectionLost)) fails
    /// over to another member (default `false`: the first member may have processed it, and a
    /// second would bill it again). Uploads, batch creations and unknown `POST`s never fail
    /// over after such a failure; reads always do. See [`Repeat`].
    pub fn resend_unanswered(mut self, resend: bool) -> Self {
        self.resend_unanswered = resend;
        self
    }

    /// Keeps requests that share a session or a prompt prefix on one member while it is in
    /// rotation, so the provider's prompt cache keeps hitting: their key is read from the
    /// request as `config` says (see [`AffinityConfig`]). Without it, only a request's own
    /// [`Affinity`](crate::Affinity) extension gives it a key.
    ///
    /// # Panics
    ///
    /// When `config` is not valid ([`AffinityConfig::validate`]).
    pub fn affinity(mut self, config: AffinityConfig) -> Self {
        match KeySources::new(&config) {
            Ok(sources) => self.affinity = Some(sources),
            Err(error) => panic!("pool affinity: {error}"),
        }
        self
    }

    /// Shares the members' cooldowns with every other process whose pool uses the same Redis
    /// and prefix (a fleet of gateway replicas): a member one of them takes out of rotation
    /// (a revoked key's 401, a 429, an exhausted quota) is out in all of them within a sync
    /// interval, and a [reset](crate::PoolHandle::reset) puts it back in all of them. Picking a
    /// member never waits on Redis; see [`RedisPoolState`](crate::RedisPoolState).
    ///
    /// The pool's background task runs on the runtime `state` was connected on.
    #[cfg(feature = "redis")]
    pub fn with_shared(mut self, state: crate::fleet::RedisPoolState) -> Self {
        self.shared = Some(state);
        self
    }

    /// The pool.
    ///
    /// # Panics
    ///
    /// Without members, or with two of the same name.
    pub fn build(self) -> Pool<S> {
        assert!(!self.members.is_empty(), "a pool needs a member");
        let (members, services): (Vec<Member>, Vec<S>) = self.members.into_iter().unzip();
        for (i, member) in members.iter().enumerate() {
            assert!(
                !members[..i].iter().any(|m| m.name == member.name),
                "two pool members are named {:?}",
                member.name
            );
        }
        let max_attempts = self.max_attempts.unwrap_or(members.len());
        let metrics = members
            .iter()
            .map(|m| MemberMetrics::new(&m.name))
            .collect();
        let max_load_percent = self
            .affinity
            .as_ref()
            .map_or(DEFAULT_MAX_LOAD_PERCENT, |a| a.max_load_percent);
        #[cfg(feature = "redis")]
        let fleet = self.shared.map(|state| Arc::new(state.fleet(&members)));
        let shared = Arc::new(Shared {
            rendezvous: Rendezvous::new(&members, self.policy, max_load_percent),
            health: Mutex::new(members.iter().map(|_| Health::default()).collect()),
            members,
            policy: self.policy,
            cooldowns: self.cooldowns,
            when_exhausted: self.when_exhausted,
            max_attempts,
            resend_unanswered: self.resend_unanswered,
            turn: AtomicUsize::new(0),
            failed: Failures::default(),
            idempotency_header: http::HeaderName::from_static("idempotency-key"),
            affinity: self.affinity,
            metrics,
            sharing: Sharing {
                #[cfg(feature = "redis")]
                fleet: fleet.clone(),
            },
        });
        #[cfg(feature = "redis")]
        if let Some(fleet) = fleet {
            fleet.start(Arc::downgrade(&shared));
        }
        Pool {
            services: services.into(),
            shared,
        }
    }
}
