//! [`RedisStore`]: a second level shared by a fleet, in Redis (feature `redis`).
//!
//! Each process keeps its own bounded cache in memory; behind it, every answer it stores goes
//! to Redis too, and a request that misses in memory is looked up there before it goes
//! upstream. So an answer one process paid for serves the whole fleet. The lookup happens in
//! the flight's task: identical requests in one process make one round trip.
//!
//! An entry is one Redis string under `{prefix}:1:{key in hex}` (`tollgate:cache` by
//! default), in a small binary format (status, headers, the recorded frames, trailers), set
//! with the time it has left to live (`SET … PX`); the time left comes back with it (`PTTL`),
//! so an entry filled into memory from Redis expires when the original does. The idle timeout
//! is not kept there: only memory knows who asked last.
//!
//! # Clearing
//!
//! [`CacheHandle::clear_everywhere`](crate::CacheHandle::clear_everywhere) (the gateway's
//! `POST /admin/cache/clear`) clears the whole fleet: its own memory at once, every entry under
//! the prefix in Redis (`SCAN` and `UNLINK`, a batch at a time), and it counts the clear in
//! `{prefix}:clears`. Every process reads that counter once a
//! [`CLEAR_CHECK_INTERVAL`] (a second) and clears its own memory when it has moved: an answer
//! cleared anywhere is served nowhere a second later. A call that was on its way upstream
//! during the clear may still store its (new) answer.
//!
//! Redis is an optimisation, never a dependency: when it is unreachable or slow (a command
//! fails after [`command_timeout`](RedisStore::with_command_timeout), 250 ms by default, on
//! tokio's clock), a lookup is a miss and a store is skipped; the store warns once, and says
//! when Redis answers again. The timeout is a tokio timer: under a paused clock
//! (`start_paused` tests) it fires as soon as the runtime idles, so test against Redis on a
//! real clock.

mod codec;

use std::fmt;
use std::sync::{Arc, Weak};
use std::time::Duration;

use ::redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
use bytes::Bytes;
use http::HeaderName;
use tokio::time::Instant;
use tollgate_core::BoxError;
use tollgate_core::redis::{CONNECTION_TIMEOUT, Health, Link, Target, guarded, open};

use crate::config::CacheConfig;
use crate::entry::Entry;
use crate::key::CacheKey;
use crate::layer::Core;

/// How often each process reads whether the fleet's cache was cleared.
pub const CLEAR_CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// How many keys one `SCAN` of a clear asks for.
const CLEAR_BATCH: usize = 1000;

/// The shared second level in Redis; see the [module docs](self).
///
/// ```no_run
/// use tollgate_cache::{CacheConfig, CacheLayer, redis::RedisStore};
///
/// # async fn demo() -> Result<(), tollgate_core::BoxError> {
/// let fleet = RedisStore::connect("redis://:password@redis.internal:6379").await?;
/// let cache = CacheLayer::new(CacheConfig::default())?.with_second_level(fleet);
/// # Ok(()) }
/// ```
///
/// # Clone
///
/// Clones share the connection.
#[derive(Clone)]
pub struct RedisStore {
    conn: Link,
    prefix: Arc<str>,
    command_timeout: Duration,
    /// The URL, never the password.
    address: Arc<str>,
    /// No probe schedule: every lookup and store tries Redis.
    health: Arc<Health>,
    /// Where the task that follows the fleet's clears runs.
    runtime: tokio::runtime::Handle,
}

impl RedisStore {
    /// Connects to Redis at `url` (`redis://[:password@]host:port[/db]`).
    ///
    /// # Errors
    ///
    /// When the URL is invalid or Redis does not answer within a second.
    pub async fn connect(url: &str) -> Result<Self, BoxError> {
        let target = Target::parse(url)?;
        let address: Arc<str> = target.shown().into();
        let conn = tokio::time::timeout(CONNECTION_TIMEOUT, open(&target))
            .await
            .map_err(|_| {
                format!("redis at {address} did not answer within {CONNECTION_TIMEOUT:?}")
            })?
            .map_err(|e| format!("cannot reach redis at {address}: {e}"))?;
        Ok(Self {
            conn,
            prefix: "tollgate:cache".into(),
            command_timeout: Duration::from_millis(250),
            address,
            health: Arc::default(),
            runtime: tokio::runtime::Handle::current(),
        })
    }

    /// Names keys `{prefix}:1:{key}` (default `tollgate:cache`): processes that share answers
    /// share a prefix.
    pub fn with_prefix(mut self, prefix: impl Into<Arc<str>>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Gives up on a command after `timeout` (default 250 ms): a slow Redis is a miss.
    pub fn with_command_timeout(mut self, timeout: Duration) -> Self {
        self.command_timeout = timeout;
        self
    }

    /// The Redis key of `key`.
    pub fn redis_key(&self, key: &CacheKey) -> String {
        format!("{}:1:{}", self.prefix, key.to_hex())
    }

    /// Removes every entry under this store's prefix from Redis, and counts the clear for the
    /// fleet's processes to clear their memory (see [Clearing](self#clearing)); how many
    /// entries it removed.
    ///
    /// # Errors
    ///
    /// When Redis fails or does not answer a command within the command timeout; entries
    /// removed until then stay removed.
    pub async fn clear(&self) -> Result<u64, BoxError> {
        let mut conn = self.conn.clone();
        let timeout = self.command_timeout;
        let mut notice = ::redis::cmd("INCR");
        notice.arg(self.clears_key());
        guarded(timeout, notice.query_async::<u64>(&mut conn)).await?;
        let pattern = format!("{}:1:*", glob_escape(&self.prefix));
        let mut removed = 0;
        // A cluster's entries are spread over its primaries: each is scanned in turn.
        let nodes = match &mut conn {
            Link::Server(_) => vec![None],
            Link::Cluster(cluster) => {
                let nodes =
                    cluster.route_command(::redis::cmd("CLUSTER").arg("NODES").clone(), random());
                let nodes: String = ::redis::from_redis_value(guarded(timeout, nodes).await?)?;
                primaries(&nodes).into_iter().map(Some).collect()
            }
        };
        for node in nodes {
            let mut cursor = 0_u64;
            loop {
                let mut scan = ::redis::cmd("SCAN");
                scan.arg(cursor)
                    .arg("MATCH")
                    .arg(&pattern)
                    .arg("COUNT")
                    .arg(CLEAR_BATCH);
                let (next, keys): (u64, Vec<String>) = match (&mut conn, &node) {
                    (Link::Cluster(cluster), Some((host, port))) => {
                        let on = RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress {
                            host: host.clone(),
                            port: *port,
                        });
                        let reply = guarded(timeout, cluster.route_command(scan, on)).await?;
                        ::redis::from_redis_value(reply)?
                    }
                    _ => guarded(timeout, scan.query_async(&mut conn)).await?,
                };
                if !keys.is_empty() {
                    let mut unlink = ::redis::cmd("UNLINK");
                    unlink.arg(&keys);
                    removed += guarded(timeout, unlink.query_async::<u64>(&mut conn)).await?;
                }
                if next == 0 {
                    break;
                }
                cursor = next;
            }
        }
        Ok(removed)
    }

    /// How many times the fleet's cache was cleared (0 when never).
    async fn clears(&self) -> Result<u64, BoxError> {
        let mut conn = self.conn.clone();
        let mut get = ::redis::cmd("GET");
        get.arg(self.clears_key());
        let clears = guarded(
            self.command_timeout,
            get.query_async::<Option<u64>>(&mut conn),
        );
        Ok(clears.await?.unwrap_or(0))
    }

    fn clears_key(&self) -> String {
        format!("{}:clears", self.prefix)
    }

    /// Follows the fleet's clears for `core` until it is dropped: its memory is cleared when
    /// another process cleared the fleet's cache.
    pub(crate) fn follow_clears(&self, core: Weak<Core>) {
        let store = self.clone();
        self.runtime.spawn(async move {
            let mut seen = None;
            loop {
                // A Redis away is the lookups' to report; the count is read again next time.
                if let Ok(clears) = store.clears().await {
                    let Some(core) = core.upgrade() else { return };
                    if seen.is_some_and(|seen| seen != clears) {
                        core.store.clear();
                        tracing::info!(address = %store.address, "cache cleared elsewhere in the fleet: this process's memory cleared too");
                    }
                    seen = Some(clears);
                }
                tokio::time::sleep(CLEAR_CHECK_INTERVAL).await;
                if core.strong_count() == 0 {
                    return;
                }
            }
        });
    }

    /// The entry under `key`, with its age, if Redis has it and answers in time.
    pub(crate) async fn get(
        &self,
        key: &CacheKey,
        config: &CacheConfig,
        marker: Option<&HeaderName>,
    ) -> Option<Entry> {
        let name = self.redis_key(key);
        let mut conn = self.conn.clone();
        let mut pipe = ::redis::pipe();
        pipe.cmd("GET").arg(&name).cmd("PTTL").arg(&name);
        let query = pipe.query_async::<(Option<Vec<u8>>, i64)>(&mut conn);
        let (bytes, left_ms) = self.answered(query).await?;
        let recorded = codec::decode(Bytes::from(bytes?))?;
        let left = Duration::from_millis(u64::try_from(left_ms).unwrap_or(0));
        let age = config.time_to_live.saturating_sub(left);
        let now = Instant::now();
        let stored_at = now.checked_sub(age).unwrap_or(now);
        Some(Entry::new(recorded, stored_at, now, marker))
    }

    /// Stores `entry` under `key` for the time it has left to live.
    pub(crate) async fn put(
        &self,
        key: &CacheKey,
        entry: &Entry,
        config: &CacheConfig,
        marker: Option<&HeaderName>,
    ) {
        let age = Instant::now().saturating_duration_since(entry.stored_at);
        let left = config.time_to_live.saturating_sub(age).as_millis();
        if left == 0 {
            return;
        }
        let mut conn = self.conn.clone();
        let mut set = ::redis::cmd("SET");
        set.arg(self.redis_key(key))
            .arg(codec::encode(entry, marker))
            .arg("PX")
            .arg(u64::try_from(left).unwrap_or(u64::MAX));
        let _: Option<()> = self.answered(set.query_async::<()>(&mut conn)).await;
    }

    /// The command's answer, or `None` (with a warning, the first time) when Redis failed or
    /// was too slow.
    async fn answered<T>(
        &self,
        command: impl Future<Output = ::redis::RedisResult<T>>,
    ) -> Option<T> {
        let failure = match tokio::time::timeout(self.command_timeout, command).await {
            Ok(Ok(answer)) => {
                if self.health.recovered() {
                    tracing::info!(address = %self.address, "redis answers again: the cache's second level is back");
                }
                return Some(answer);
            }
            Ok(Err(error)) => error.to_string(),
            Err(_) => format!("no answer within {:?}", self.command_timeout),
        };
        if self.health.failed(Duration::ZERO) {
            tracing::warn!(address = %self.address, error = %failure, "redis unreachable: the cache's second level is skipped until it answers");
        }
        None
    }
}

/// Any one node of a cluster.
fn random() -> RoutingInfo {
    RoutingInfo::SingleNode(SingleNodeRoutingInfo::Random)
}

/// The address of each primary that serves, from `CLUSTER NODES`' answer (a line per node:
/// id, `host:port@bus-port`, flags, …).
fn primaries(nodes: &str) -> Vec<(String, u16)> {
    nodes
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let address = fields.nth(1)?;
            let flags = fields.next()?;
            let primary = flags.split(',').any(|f| f == "master")
                && !flags.split(',').any(|f| f == "fail" || f == "noaddr");
            let (host, port) = address.split(['@', ',']).next()?.rsplit_once(':')?;
            primary.then(|| Some((host.to_owned(), port.parse().ok()?)))?
        })
        .collect()
}

/// `prefix` matched literally in a `SCAN … MATCH` pattern.
fn glob_escape(prefix: &str) -> String {
    let mut escaped = String::with_capacity(prefix.len());
    for c in prefix.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("address", &self.address)
            .field("prefix", &self.prefix)
            .field("command_timeout", &self.command_timeout)
            .field("unreachable", &self.health.is_degraded())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_clusters_primaries_are_read_from_its_nodes() {
        let nodes = "\
07c3 127.0.0.1:30001@40001 myself,master - 0 0 1 connected 0-5460
67ed 127.0.0.1:30002@40002,redis-2 master - 0 1 2 connected 5461-10922
292f 10.0.0.3:30003@40003 master,fail - 0 1 3 connected 10923-16383
6ec2 127.0.0.1:30004@40004 slave 07c3 0 1 1 connected
";
        assert_eq!(
            primaries(nodes),
            [
                ("127.0.0.1".to_owned(), 30001),
                ("127.0.0.1".to_owned(), 30002)
            ]
        );
    }

    #[test]
    fn a_prefix_is_matched_literally() {
        assert_eq!(glob_escape("app:*:[x]?"), "app:\\*:\\[x\\]\\?");
    }
}
