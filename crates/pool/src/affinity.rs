//! Prompt-cache affinity: requests that share a session or a prompt prefix go to the same
//! member while it is in rotation, so the provider's prompt cache keeps hitting.
//!
//! # Why
//!
//! A provider caches a prompt's prefix for the account or deployment that sent it (an OpenAI
//! organisation, an Anthropic workspace, an Azure deployment), and bills cached input at a
//! fraction of the price (a tenth at Anthropic, a tenth to a half at OpenAI, by model). Pool
//! members are usually other accounts, deployments or providers: a pool that spreads one
//! conversation's turns over four of them writes its prefix four times and hits the cache a
//! quarter as often.
//!
//! # Why rendezvous hashing
//!
//! A request's key goes to the member that ranks highest for it (a hash of the key and the
//! member's name), among those the [`Policy`](crate::Policy) would consider. Nothing is stored:
//! there is no table of sessions to bound, evict or share, every clone of the pool and every
//! instance of a fleet running the same build sends a key to the same member, a member out of
//! rotation loses only its own keys (each to its next-ranked member) and gets them back when
//! it returns, and adding a member takes only the keys it now ranks first for.
//!
//! # Why a load bound
//!
//! Keys are not all equal: a system prompt every caller shares is one key for all the
//! traffic. A member keeps a key's calls while its calls in flight stay within
//! [`max_load_percent`](AffinityConfig::max_load_percent) of its share; past that, the key's
//! next-ranked member takes the call (consistent hashing with bounded loads), whose cache
//! soon holds the prefix too.

mod body;

use std::hash::{DefaultHasher, Hasher};

use bytes::Bytes;
use http::{HeaderName, Request};
use http_body_util::Full;
use tollgate_core::config::ConfigError;

#[cfg(doc)]
use crate::PoolBuilder;
use crate::member::Member;
use crate::pool::Shared;
use crate::select::Policy;

use self::body::Fields;

/// A request's affinity key, as a request extension: requests with the same key go to the
/// same member while it is in rotation, healthy and within its load bound.
///
/// Set it to choose the key yourself (a conversation, a tenant): it wins over any key the pool
/// would read from the request, and is honoured even by a pool built without
/// [`PoolBuilder::affinity`]. [`Affinity::of`] hashes an id as the pool hashes a header.
///
/// ```
/// use tollgate_pool::Affinity;
///
/// # let mut request = http::Request::new(());
/// request.extensions_mut().insert(Affinity::of("conversation-42"));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Affinity(pub u64);

impl Affinity {
    /// The key of an id: the same bytes in the configured header give the same key.
    pub fn of(id: impl AsRef<[u8]>) -> Self {
        Self(hash(id.as_ref()))
    }
}

/// std's SipHash with fixed keys: fast, well spread, the same in every process of one build (a
/// build with another Rust release may hash otherwise, and move keys once).
fn hash(bytes: &[u8]) -> u64 {
    let mut hasher = DefaultHasher::new();
    hasher.write(bytes);
    hasher.finish()
}

/// Where a request's affinity key comes from, and how busy a member may get keeping its keys.
///
/// A request's key is, in order: an [`Affinity`] extension; the [`header`](Self::header); the
/// body's session fields ([`user`](Self::user)); a hash of the prompt's first
/// [`prefix_bytes`](Self::prefix_bytes). A request with none is picked as without affinity.
///
/// With the `serde` feature it reads from TOML or JSON, as `[pool.affinity]` in a stack's
/// config:
///
/// ```toml
/// [affinity]
/// header = "x-session-id"   # a header naming the session (default: none)
/// user = true               # the body's prompt_cache_key, user, metadata.user_id
/// prefix_bytes = 2048       # a hash of the prompt's first bytes; 0: none
/// max_load_percent = 150    # a member keeps its keys up to 1.5× its share of the calls in flight; 0: no bound
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize, serde::Serialize))]
#[cfg_attr(feature = "serde", serde(default, deny_unknown_fields))]
pub struct AffinityConfig {
    /// A request header naming the session (`x-session-id`); its value is the key.
    #[cfg_attr(feature = "serde", serde(skip_serializing_if = "Option::is_none"))]
    pub header: Option<String>,
    /// Whether the body's session fields give the key: the first set of `prompt_cache_key`,
    /// `user`, `safety_identifier` (OpenAI) and `metadata.user_id` (Anthropic) (default
    /// `true`).
    pub user: bool,
    /// How many bytes of the prompt give the key (default 2048; 0: none): the body's system
    /// prompt (`system`, `instructions`, `systemInstruction`) then its conversation
    /// (`messages`, `input`, `contents`), as the JSON writes them, so requests that share a
    /// long system prompt and first messages share a key whatever follows. A prompt shorter
    /// than this gives no key (too short for a provider to cache). Requests formatted
    /// differently (spacing, field order inside a message) get different keys.
    pub prefix_bytes: usize,
    /// How busy a member may get keeping its keys, as a percentage of its share of the calls
    /// in flight among the members the key could go to (its weight's share under `weighted`)
    /// (default 150; 0: no bound, a key stays on its member however busy). Past it, the key's
    /// next member takes the call.
    pub max_load_percent: u32,
}

/// [`AffinityConfig::prefix_bytes`] by default.
const DEFAULT_PREFIX_BYTES: usize = 2048;
/// Fewer bytes than this cannot tell prompts apart: `[{"role":"system","content":"` alone is
/// thirty.
const MIN_PREFIX_BYTES: usize = 256;
/// [`AffinityConfig::max_load_percent`] by default.
pub(crate) const DEFAULT_MAX_LOAD_PERCENT: u32 = 150;

impl Default for AffinityConfig {
    fn default() -> Self {
        Self {
            header: None,
            user: true,
            prefix_bytes: DEFAULT_PREFIX_BYTES,
            max_load_percent: DEFAULT_MAX_LOAD_PERCENT,
        }
    }
}

impl AffinityConfig {
    /// Checks every value is usable.
    ///
    /// # Errors
    ///
    /// The first that is not, by field name.
    pub fn validate(&self) -> Result<(), ConfigError> {
        KeySources::new(self).map(drop)
    }
}

/// What a pool reads a request's key from: [`AffinityConfig`], checked.
#[derive(Debug)]
pub(crate) struct KeySources {
    header: Option<HeaderName>,
    user: bool,
    prefix_bytes: usize,
    pub(crate) max_load_percent: u32,
}

impl KeySources {
    pub(crate) fn new(config: &AffinityConfig) -> Result<Self, ConfigError> {
        let header = config
            .header
            .as_deref()
            .map(|name| {
                HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
                    ConfigError::new("header", format!("{name:?}"), "is not a header name")
                })
            })
            .transpose()?;
        if (1..MIN_PREFIX_BYTES).contains(&config.prefix_bytes) {
            return Err(ConfigError::new(
                "prefix_bytes",
                config.prefix_bytes,
                format!(
                    "is too short to tell prompts apart: 0 (none) or at least {MIN_PREFIX_BYTES}"
                ),
            ));
        }
        if (1..100).contains(&config.max_load_percent) {
            return Err(ConfigError::new(
                "max_load_percent",
                config.max_load_percent,
                "must be 0 (no bound) or at least 100 (a member's share)",
            ));
        }
        Ok(Self {
            header,
            user: config.user,
            prefix_bytes: config.prefix_bytes,
            max_load_percent: config.max_load_percent,
        })
    }

    /// The request's key from the header, the body's session fields, or its prompt prefix.
    fn key_of(&self, request: &Request<Full<Bytes>>) -> Option<u64> {
        if let Some(value) = self.header.as_ref().and_then(|h| request.headers().get(h))
            && !value.is_empty()
        {
            return Some(hash(value.as_bytes()));
        }
        if !self.user && self.prefix_bytes == 0 {
            return None;
        }
        let body = tollgate_core::body::full_bytes(request.body().clone());
        let fields = Fields::read(&body);
        if self.user
            && let Some(session) = fields.session
        {
            return Some(hash(session));
        }
        self.prefix_key(&fields)
    }

    /// A hash of the prompt's first `prefix_bytes`, system prompt first; none when shorter.
    fn prefix_key(&self, fields: &Fields<'_>) -> Option<u64> {
        let mut left = self.prefix_bytes;
        if left == 0 {
            return None;
        }
        let mut hasher = DefaultHasher::new();
        for part in [fields.system, fields.conversation].into_iter().flatten() {
            let take = part.len().min(left);
            hasher.write(&part[..take]);
            left -= take;
        }
        (left == 0).then(|| hasher.finish())
    }
}

impl Shared {
    /// The request's affinity key: its [`Affinity`] extension, else what the pool's
    /// [`KeySources`] read (only when configured).
    pub(crate) fn affinity_of(&self, request: &Request<Full<Bytes>>) -> Option<u64> {
        request
            .extensions()
            .get::<Affinity>()
            .map(|a| a.0)
            .or_else(|| self.affinity.as_ref()?.key_of(request))
    }
}

/// Which member a key goes to: rendezvous hashing over the members' names, within a load bound.
#[derive(Debug)]
pub(crate) struct Rendezvous {
    /// Each member's name, hashed.
    seeds: Vec<u64>,
    /// Each member's weight in the ranking: its own under [`Policy::Weighted`], else 1.
    weights: Vec<u32>,
    /// The members of the lowest tier: where a key goes when every member is in rotation.
    home: Vec<usize>,
    max_load_percent: u32,
}

impl Rendezvous {
    pub(crate) fn new(members: &[Member], policy: Policy, max_load_percent: u32) -> Self {
        let base = members.iter().map(|m| m.tier).min().unwrap_or(0);
        Self {
            seeds: members.iter().map(|m| hash(m.name.as_bytes())).collect(),
            weights: members
                .iter()
                .map(|m| {
                    if policy == Policy::Weighted {
                        m.weight
                    } else {
                        1
                    }
                })
                .collect(),
            home: (0..members.len())
                .filter(|i| members[*i].tier == base)
                .collect(),
            max_load_percent,
        }
    }

    /// How much `key` prefers member `i`: `weight / -ln(u)` for a uniform `u` from the key and
    /// the member's name (weighted rendezvous hashing: a member wins a key in proportion to its
    /// weight; with equal weights, the highest hash wins).
    fn rank(&self, key: u64, i: usize) -> f64 {
        let mut hasher = DefaultHasher::new();
        hasher.write_u64(key);
        hasher.write_u64(self.seeds[i]);
        // 53 bits into (0, 1).
        let u = ((hasher.finish() >> 11) as f64 + 0.5) / (1_u64 << 53) as f64;
        f64::from(self.weights[i]) / -u.ln()
    }

    /// The member `key` goes to among `candidates` (each with its calls in flight): the highest
    /// ranked within the load bound.
    ///
    /// # Panics
    ///
    /// Without candidates.
    pub(crate) fn pick(&self, key: u64, candidates: impl Iterator<Item = (usize, usize)>) -> usize {
        let mut ranked: Vec<(f64, usize, usize)> = candidates
            .map(|(i, in_flight)| (self.rank(key, i), i, in_flight))
            .collect();
        ranked.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        let first = ranked.first().expect("a candidate").1;
        if self.max_load_percent == 0 {
            return first;
        }
        // A member may hold `percent` of its share of the calls in flight, this one included,
        // rounded up: some member is always within it (they cannot all hold more than their
        // share).
        let in_flight: u128 = ranked.iter().map(|r| r.2 as u128).sum::<u128>() + 1;
        let weights: u128 = ranked.iter().map(|r| u128::from(self.weights[r.1])).sum();
        let percent = u128::from(self.max_load_percent);
        ranked
            .iter()
            .find(|(_, i, load)| {
                let bound = (percent * in_flight * u128::from(self.weights[*i]))
                    .div_ceil(100 * weights.max(1));
                (*load as u128) < bound
            })
            .map_or(first, |r| r.1)
    }

    /// Where `key` goes when every member is in rotation and idle: the highest ranked in the
    /// lowest tier.
    pub(crate) fn home(&self, key: u64) -> usize {
        self.home
            .iter()
            .map(|i| (self.rank(key, *i), *i))
            .max_by(|a, b| a.0.total_cmp(&b.0).then(b.1.cmp(&a.1)))
            .expect("a pool has a member")
            .1
    }
}

#[cfg(test)]
mod tests {
    use tollgate_core::Secret;

    use super::*;

    fn members(names: &[&str]) -> Vec<Member> {
        names
            .iter()
            .map(|name| Member::key(name, Secret::new("k")))
            .collect()
    }

    #[test]
    fn the_load_bound_passes_a_busy_members_key_to_its_next_member() {
        let members = members(&["a", "b"]);
        let bounded = Rendezvous::new(&members, Policy::Healthiest, 150);
        let key = 7;
        let home = bounded.home(key);
        let other = 1 - home;
        let load = |home_load: usize| [(home, home_load), (other, 0)].into_iter();
        // With two in flight, a third is within 1.5× its half share; with three, a fourth is not.
        assert_eq!(bounded.pick(key, load(2)), home);
        assert_eq!(bounded.pick(key, load(3)), other);
        let unbounded = Rendezvous::new(&members, Policy::Healthiest, 0);
        assert_eq!(unbounded.pick(key, load(100)), home);
    }

    #[test]
    fn every_value_is_checked_by_its_name() {
        let config = |change: fn(&mut AffinityConfig)| {
            let mut config = AffinityConfig::default();
            change(&mut config);
            config.validate().err().map(|e| e.to_string())
        };
        assert_eq!(config(|_| {}), None);
        assert_eq!(
            config(|c| c.header = Some("x session".into())),
            Some("header: \"x session\" is not a header name".into())
        );
        assert_eq!(
            config(|c| c.prefix_bytes = 100),
            Some(
                "prefix_bytes: 100 is too short to tell prompts apart: 0 (none) or at least 256"
                    .into()
            )
        );
        assert_eq!(config(|c| c.prefix_bytes = 0), None);
        assert_eq!(
            config(|c| c.max_load_percent = 50),
            Some(
                "max_load_percent: 50 must be 0 (no bound) or at least 100 (a member's share)"
                    .into()
            )
        );
        assert_eq!(config(|c| c.max_load_percent = 0), None);
    }
}
