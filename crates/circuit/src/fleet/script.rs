//! The Lua scripts that keep a fleet's circuits in Redis, one atomic step each, and the record
//! they read and write.
//!
//! A scope's record is a hash, `{prefix}:<scope>`: `episode` (the open period's id, rising),
//! `until` (when it ends, wall-clock milliseconds), `trips` (in a row, for the backoff),
//! `issued` and `succeeded` (the half-open probes of that episode), or only `mode` (a manual
//! mode). No record: closed. The index `{prefix}:index` (a sorted set of record keys by expiry)
//! lets one script read every record that is not closed. Both names carry the prefix as a hash
//! tag, so one script may touch both on Redis Cluster.

use std::sync::LazyLock;

use redis::{RedisResult, Script};
use tollgate_core::redis::Link;

/// A record as the scripts return it: a scope's fleet-wide open period or manual mode.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Record {
    /// The open period's id (0 for a mode record).
    pub(crate) episode: i64,
    /// When the open period ends, wall-clock milliseconds.
    pub(crate) until: i64,
    /// Trips in a row.
    pub(crate) trips: i64,
    /// A manual mode (`forced_open`, `disabled`, `metrics_only`), or empty.
    pub(crate) mode: String,
}

/// Opens a scope for the fleet, unless it is already open in another episode (then that one
/// is returned, to be adopted) or held in a manual mode. KEYS: record, index. ARGV: now, until,
/// trips, linger (how long the record outlives its open period), the episode whose probe
/// failed (0: a trip from closed).
const OPEN: &str = r"
local r = redis.call('HMGET', KEYS[1], 'episode', 'until', 'trips', 'mode')
local episode, untl = tonumber(r[1]), tonumber(r[2])
local now, from = tonumber(ARGV[1]), tonumber(ARGV[5])
if r[4] then return {episode or 0, untl or 0, tonumber(r[3]) or 0, r[4]} end
if episode and episode ~= from and untl > now then
  return {episode, untl, tonumber(r[3]) or 0, ''}
end
local new = math.max((episode or 0) + 1, now)
local expires = tonumber(ARGV[2]) + tonumber(ARGV[4])
redis.call('HSET', KEYS[1], 'episode', new, 'until', ARGV[2], 'trips', ARGV[3],
  'issued', 0, 'succeeded', 0)
redis.call('PEXPIREAT', KEYS[1], expires)
redis.call('ZADD', KEYS[2], expires, KEYS[1])
return {new, tonumber(ARGV[2]), tonumber(ARGV[3]), ''}
";

/// Grants up to `want` probes of a half-open episode, never more than `limit` in all. KEYS:
/// record. ARGV: now, episode, want, limit.
const CLAIM: &str = r"
local r = redis.call('HMGET', KEYS[1], 'episode', 'until', 'issued', 'mode')
if r[4] or not r[1] or tonumber(r[1]) ~= tonumber(ARGV[2]) then return 0 end
if tonumber(r[2]) > tonumber(ARGV[1]) then return 0 end
local granted = math.min(tonumber(ARGV[3]), tonumber(ARGV[4]) - (tonumber(r[3]) or 0))
if granted <= 0 then return 0 end
redis.call('HINCRBY', KEYS[1], 'issued', granted)
return granted
";

/// Gives back probes granted but not sent. KEYS: record. ARGV: episode, n.
const GIVE_BACK: &str = r"
local r = redis.call('HMGET', KEYS[1], 'episode', 'issued')
if not r[1] or tonumber(r[1]) ~= tonumber(ARGV[1]) then return 0 end
local issued = math.max(0, (tonumber(r[2]) or 0) - tonumber(ARGV[2]))
redis.call('HSET', KEYS[1], 'issued', issued)
return issued
";

/// Counts `n` probe successes of an episode; closes the scope for the fleet (1) once `limit`
/// succeeded. KEYS: record, index. ARGV: episode, n, limit.
const SUCCEEDED: &str = r"
local r = redis.call('HMGET', KEYS[1], 'episode', 'mode')
if r[2] or not r[1] or tonumber(r[1]) ~= tonumber(ARGV[1]) then return 0 end
local s = redis.call('HINCRBY', KEYS[1], 'succeeded', ARGV[2])
if s >= tonumber(ARGV[3]) then
  redis.call('DEL', KEYS[1])
  redis.call('ZREM', KEYS[2], KEYS[1])
  return 1
end
return 0
";

/// Sets a manual mode for the fleet, or (an empty mode) resets: closed, nothing counted.
/// KEYS: record, index. ARGV: mode.
const MODE: &str = r"
redis.call('DEL', KEYS[1])
if ARGV[1] == '' then
  redis.call('ZREM', KEYS[2], KEYS[1])
else
  redis.call('HSET', KEYS[1], 'mode', ARGV[1])
  redis.call('ZADD', KEYS[2], '+inf', KEYS[1])
end
return 1
";

/// Every record that is not closed, with its key; drops index entries past their expiry.
/// KEYS: index. ARGV: now.
const SNAPSHOT: &str = r"
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[1])
local out = {}
for _, key in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  local r = redis.call('HMGET', key, 'episode', 'until', 'trips', 'mode')
  if r[1] or r[4] then
    out[#out + 1] = {key, tonumber(r[1]) or 0, tonumber(r[2]) or 0, tonumber(r[3]) or 0,
      r[4] or ''}
  else
    redis.call('ZREM', KEYS[1], key)
  end
end
return out
";

macro_rules! script {
    ($name:ident, $source:ident) => {
        static $name: LazyLock<Script> = LazyLock::new(|| Script::new($source));
    };
}
script!(OPEN_SCRIPT, OPEN);
script!(CLAIM_SCRIPT, CLAIM);
script!(GIVE_BACK_SCRIPT, GIVE_BACK);
script!(SUCCEEDED_SCRIPT, SUCCEEDED);
script!(MODE_SCRIPT, MODE);
script!(SNAPSHOT_SCRIPT, SNAPSHOT);

/// The keys of one scope.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Keys<'a> {
    pub(crate) record: &'a str,
    pub(crate) index: &'a str,
}

/// What an open asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Open {
    pub(crate) now: i64,
    pub(crate) until: i64,
    pub(crate) trips: u32,
    pub(crate) linger: i64,
    /// The episode whose probe failed, 0 for a trip from closed.
    pub(crate) from: i64,
}

pub(crate) async fn open(conn: &mut Link, keys: Keys<'_>, open: Open) -> RedisResult<Record> {
    let (episode, until, trips, mode): (i64, i64, i64, String) = OPEN_SCRIPT
        .key(keys.record)
        .key(keys.index)
        .arg(open.now)
        .arg(open.until)
        .arg(open.trips)
        .arg(open.linger)
        .arg(open.from)
        .invoke_async(conn)
        .await?;
    Ok(Record {
        episode,
        until,
        trips,
        mode,
    })
}

pub(crate) async fn claim(
    conn: &mut Link,
    record: &str,
    now: i64,
    episode: i64,
    want: u32,
    limit: u32,
) -> RedisResult<u32> {
    CLAIM_SCRIPT
        .key(record)
        .arg(now)
        .arg(episode)
        .arg(want)
        .arg(limit)
        .invoke_async(conn)
        .await
}

pub(crate) async fn give_back(
    conn: &mut Link,
    record: &str,
    episode: i64,
    n: u32,
) -> RedisResult<()> {
    let _: i64 = GIVE_BACK_SCRIPT
        .key(record)
        .arg(episode)
        .arg(n)
        .invoke_async(conn)
        .await?;
    Ok(())
}

/// Whether the fleet's circuit closed.
pub(crate) async fn succeeded(
    conn: &mut Link,
    keys: Keys<'_>,
    episode: i64,
    n: u32,
    limit: u32,
) -> RedisResult<bool> {
    let closed: i64 = SUCCEEDED_SCRIPT
        .key(keys.record)
        .key(keys.index)
        .arg(episode)
        .arg(n)
        .arg(limit)
        .invoke_async(conn)
        .await?;
    Ok(closed == 1)
}

pub(crate) async fn set_mode(conn: &mut Link, keys: Keys<'_>, mode: &str) -> RedisResult<()> {
    let _: i64 = MODE_SCRIPT
        .key(keys.record)
        .key(keys.index)
        .arg(mode)
        .invoke_async(conn)
        .await?;
    Ok(())
}

/// Every record that is not closed, by key.
pub(crate) async fn snapshot(
    conn: &mut Link,
    index: &str,
    now: i64,
) -> RedisResult<Vec<(String, Record)>> {
    let rows: Vec<(String, i64, i64, i64, String)> = SNAPSHOT_SCRIPT
        .key(index)
        .arg(now)
        .invoke_async(conn)
        .await?;
    Ok(rows
        .into_iter()
        .map(|(key, episode, until, trips, mode)| {
            (
                key,
                Record {
                    episode,
                    until,
                    trips,
                    mode,
                },
            )
        })
        .collect())
}
