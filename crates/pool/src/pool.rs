//! [`Pool`]: many members behind one service, sharing one view of their health; its
//! [`PoolHandle`] reads and resets that health.
//!
//! How a member is picked is in `select.rs` (by a request's affinity key in `affinity.rs`), what
//! a request's retries avoid in `memory.rs`, how a call goes from member to member in
//! `failover.rs`, and the options in `builder.rs`.

use std::fmt;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::time::Instant;

use crate::affinity::{KeySources, Rendezvous};
use crate::builder::PoolBuilder;
use crate::failover::WhenExhausted;
use crate::health::{Cooldowns, Counters, Health, MemberState};
use crate::member::Member;
use crate::memory::Failures;
use crate::metrics::MemberMetrics;
use crate::select::Policy;
use crate::sharing::Sharing;

/// Which member answered, in the response's extensions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Served {
    /// The member's name.
    pub member: Arc<str>,
    /// Members tried for this request, the one that answered included.
    pub attempts: u32,
}

/// One member at a glance.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct MemberReport {
    /// Its name.
    pub name: Arc<str>,
    /// Its tier.
    pub tier: u32,
    /// Its 0–100 health score (0 while out of rotation).
    pub score: u8,
    /// In rotation, cooling down, or parked.
    pub state: MemberState,
    /// Its calls in flight.
    pub in_flight: usize,
    /// What happened to it, in this process.
    pub counters: Counters,
    /// What happened to it in the whole fleet, every process's calls added up, as last read
    /// from Redis (`None` without [shared state](crate::RedisPoolState), or before the first
    /// read).
    pub fleet: Option<Counters>,
}

/// What every clone of a pool shares: the members, their health, and the options.
pub(crate) struct Shared {
    pub(crate) members: Vec<Member>,
    pub(crate) health: Mutex<Vec<Health>>,
    pub(crate) policy: Policy,
    pub(crate) cooldowns: Cooldowns,
    pub(crate) when_exhausted: WhenExhausted,
    pub(crate) max_attempts: usize,
    pub(crate) resend_unanswered: bool,
    /// The pick counter of [`Policy::Healthiest`]'s turns among tied members.
    pub(crate) turn: AtomicUsize,
    /// Members that failed a request, by its idempotency key, so its retries go elsewhere.
    pub(crate) failed: Failures,
    pub(crate) idempotency_header: http::HeaderName,
    /// Where requests' affinity keys are read from, when configured.
    pub(crate) affinity: Option<KeySources>,
    /// Which member a key goes to.
    pub(crate) rendezvous: Rendezvous,
    pub(crate) metrics: Vec<MemberMetrics>,
    /// The fleet's shared cooldowns, if any.
    pub(crate) sharing: Sharing,
}

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pool")
            .field("members", &self.members)
            .field("policy", &self.policy)
            .field("cooldowns", &self.cooldowns)
            .field("when_exhausted", &self.when_exhausted)
            .field("affinity", &self.affinity)
            .finish_non_exhaustive()
    }
}

impl Shared {
    pub(crate) fn health(&self) -> MutexGuard<'_, Vec<Health>> {
        self.health.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The members that failed the request with this idempotency key, for its retries to avoid.
    pub(crate) fn remembered(&self, key: &str) -> Vec<usize> {
        self.failed.remembered(key)
    }

    /// `member` failed the request with this idempotency key.
    pub(crate) fn remember(&self, key: &str, member: usize) {
        self.failed.remember(key, member);
    }

    pub(crate) fn report(&self) -> Vec<MemberReport> {
        let now = Instant::now();
        let mut health = self.health();
        let best = Self::best_latency(&health);
        self.members
            .iter()
            .zip(health.iter_mut())
            .map(|(member, health)| MemberReport {
                name: member.name.clone(),
                tier: member.tier,
                score: health.score(now, best),
                state: health.state(now),
                in_flight: health.in_flight,
                counters: health.counters,
                fleet: health.fleet,
            })
            .collect()
    }

    pub(crate) fn reset(&self, name: &str) -> bool {
        let Some(member) = self.members.iter().position(|m| &*m.name == name) else {
            return false;
        };
        self.health()[member].reset();
        self.sharing.reset(member);
        true
    }

    pub(crate) fn reset_all(&self) {
        for health in self.health().iter_mut() {
            health.reset();
        }
        for member in 0..self.members.len() {
            self.sharing.reset(member);
        }
    }
}

/// A pool of members: routes, fails over, falls back; see the [crate docs](crate).
///
/// # Clone
///
/// Clones share the members' health: one view of them for every clone.
pub struct Pool<S> {
    pub(crate) services: Arc<[S]>,
    pub(crate) shared: Arc<Shared>,
}

impl<S> Clone for Pool<S> {
    fn clone(&self) -> Self {
        Self {
            services: self.services.clone(),
            shared: self.shared.clone(),
        }
    }
}

impl<S> fmt::Debug for Pool<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.shared.fmt(f)
    }
}

impl<S> Pool<S> {
    /// An empty builder.
    pub fn builder() -> PoolBuilder<S> {
        PoolBuilder::default()
    }

    /// A handle for reports and resets.
    pub fn handle(&self) -> PoolHandle {
        PoolHandle {
            shared: self.shared.clone(),
        }
    }
}

/// Reads and resets the members' health.
#[derive(Clone, Debug)]
pub struct PoolHandle {
    shared: Arc<Shared>,
}

impl PoolHandle {
    /// Every member at a glance, in the order they were added.
    pub fn snapshot(&self) -> Vec<MemberReport> {
        self.shared.report()
    }

    /// Puts a member back in rotation (a rotated key, a raised quota); `false` when no member
    /// has that name. With [shared cooldowns](crate::PoolBuilder::with_shared), in every
    /// process of the fleet within a sync interval.
    pub fn reset(&self, name: &str) -> bool {
        self.shared.reset(name)
    }

    /// Puts every member back in rotation (with shared cooldowns, fleet-wide).
    pub fn reset_all(&self) {
        self.shared.reset_all();
    }

    /// Whether the pool's [shared cooldowns](crate::PoolBuilder::with_shared) are unreachable
    /// (Redis does not answer): its cooldowns are this process's own until it does. Always
    /// `false` for a pool without shared cooldowns.
    #[cfg(feature = "redis")]
    pub fn is_degraded(&self) -> bool {
        self.shared
            .sharing
            .fleet
            .as_ref()
            .is_some_and(|fleet| fleet.health.is_degraded())
    }
}
