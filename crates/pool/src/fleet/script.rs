//! What the fleet writes to Redis and how: a cooldown's record, and the two Lua scripts that
//! publish cooldowns (the longer one wins, none that began before the last reset) and resets.
//!
//! A member's cooldown key holds `reason:until:since`: why, when it ends (0: parked until
//! reset) and when it began, in wall-clock microseconds; it expires when the cooldown ends.
//! Its reset key holds the time of its last reset.

use std::sync::LazyLock;

use redis::Script;
use tollgate_core::redis::Link;

use crate::health::Reason;

/// A cooldown as the fleet shares it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Record {
    pub(super) reason: Reason,
    /// When it ends (`None`: parked until reset), wall-clock microseconds.
    pub(super) until: Option<u64>,
    /// When it began, wall-clock microseconds.
    pub(super) since: u64,
}

const fn label(reason: Reason) -> &'static str {
    match reason {
        Reason::RateLimited => "rate_limited",
        Reason::Timeout => "timeout",
        Reason::ServerError => "server_error",
        Reason::AuthError => "auth_error",
        Reason::QuotaExhausted => "quota_exhausted",
        Reason::BreakerOpen => "breaker_open",
    }
}

fn reason(label: &str) -> Option<Reason> {
    Some(match label {
        "rate_limited" => Reason::RateLimited,
        "timeout" => Reason::Timeout,
        "server_error" => Reason::ServerError,
        "auth_error" => Reason::AuthError,
        "quota_exhausted" => Reason::QuotaExhausted,
        "breaker_open" => Reason::BreakerOpen,
        _ => return None,
    })
}

impl Record {
    /// Reads a cooldown key's value; `None` for anything else.
    pub(super) fn parse(value: &str) -> Option<Self> {
        let mut parts = value.split(':');
        let reason = reason(parts.next()?)?;
        let until: u64 = parts.next()?.parse().ok()?;
        let since: u64 = parts.next()?.parse().ok()?;
        parts.next().is_none().then_some(Self {
            reason,
            until: (until != 0).then_some(until),
            since,
        })
    }
}

/// Publishes cooldowns. `KEYS`: each member's cooldown key and reset key; `ARGV`: now, then
/// each member's reason, until (0: parked) and since. Each member's answer: 0 when a reset
/// later than its start cleared it (the publisher clears it too), 1 when it was kept or a
/// longer one is there.
const PUBLISH: &str = r"
local now = tonumber(ARGV[1])
local out = {}
for i = 1, #KEYS / 2 do
  local cooldown, reset = KEYS[2 * i - 1], KEYS[2 * i]
  local reason, until_, since = ARGV[3 * i - 1], tonumber(ARGV[3 * i]), tonumber(ARGV[3 * i + 1])
  local cleared = tonumber(redis.call('GET', reset) or '0') or 0
  if since <= cleared then
    out[i] = 0
  else
    out[i] = 1
    local held = nil
    local current = redis.call('GET', cooldown)
    if current then
      held = tonumber(string.match(current, '^[%a_]+:(%d+):%d+$'))
    end
    if held == nil or (held ~= 0 and (until_ == 0 or until_ > held)) then
      local value = reason .. ':' .. ARGV[3 * i] .. ':' .. ARGV[3 * i + 1]
      if until_ == 0 then
        redis.call('SET', cooldown, value)
      elseif until_ > now then
        redis.call('SET', cooldown, value, 'PX', math.ceil((until_ - now) / 1000))
      end
    end
  end
end
return out
";

/// Resets members. `KEYS`: each member's cooldown key and reset key; `ARGV`: how long a reset
/// is remembered (ms), then each member's reset time. A cooldown that began before its
/// member's reset is deleted; one that began after stays.
const RESET: &str = r"
for i = 1, #KEYS / 2 do
  local cooldown, reset = KEYS[2 * i - 1], KEYS[2 * i]
  local at = tonumber(ARGV[i + 1])
  local cleared = tonumber(redis.call('GET', reset) or '0') or 0
  if at > cleared then
    redis.call('SET', reset, ARGV[i + 1], 'PX', ARGV[1])
  end
  local current = redis.call('GET', cooldown)
  if current then
    local since = tonumber(string.match(current, ':(%d+)$'))
    if since == nil or since <= at then
      redis.call('DEL', cooldown)
    end
  end
end
return 0
";

static PUBLISH_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(PUBLISH));
static RESET_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(RESET));

/// Publishes `records` (with each member's `[cooldown, reset]` keys) at `now`; for each,
/// whether it still holds (false: a later reset cleared it).
pub(super) async fn publish(
    conn: &mut Link,
    now: u64,
    records: &[(&[String; 2], Record)],
) -> redis::RedisResult<Vec<bool>> {
    let mut invocation = PUBLISH_SCRIPT.prepare_invoke();
    invocation.arg(now);
    for (keys, record) in records {
        invocation
            .key(&keys[0])
            .key(&keys[1])
            .arg(label(record.reason))
            .arg(record.until.unwrap_or(0))
            .arg(record.since);
    }
    let held: Vec<i64> = invocation.invoke_async(conn).await?;
    Ok(held.into_iter().map(|h| h != 0).collect())
}

/// Resets members (each `[cooldown, reset]` keys with the reset's time), remembering each
/// reset for `memory_ms`.
pub(super) async fn reset(
    conn: &mut Link,
    memory_ms: u64,
    resets: &[(&[String; 2], u64)],
) -> redis::RedisResult<()> {
    let mut invocation = RESET_SCRIPT.prepare_invoke();
    invocation.arg(memory_ms);
    for (keys, at) in resets {
        invocation.key(&keys[0]).key(&keys[1]).arg(*at);
    }
    invocation.invoke_async::<i64>(conn).await.map(drop)
}

/// Every member's cooldown and reset, as Redis holds them: one `MGET`.
pub(super) async fn read(
    conn: &mut Link,
    keys: &[[String; 2]],
) -> redis::RedisResult<Vec<(Option<Record>, u64)>> {
    let mut mget = redis::cmd("MGET");
    for pair in keys {
        mget.arg(&pair[0]).arg(&pair[1]);
    }
    let values: Vec<Option<String>> = mget.query_async(conn).await?;
    Ok(values
        .chunks(2)
        .map(|pair| {
            let record = pair[0].as_deref().and_then(Record::parse);
            let reset = pair
                .get(1)
                .and_then(|v| v.as_deref())
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            (record, reset)
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_reads_back_and_garbage_does_not() {
        assert_eq!(
            Record::parse("auth_error:1700000000000000:1699999996400000"),
            Some(Record {
                reason: Reason::AuthError,
                until: Some(1_700_000_000_000_000),
                since: 1_699_999_996_400_000,
            })
        );
        assert_eq!(
            Record::parse("quota_exhausted:0:5"),
            Some(Record {
                reason: Reason::QuotaExhausted,
                until: None,
                since: 5,
            })
        );
        for garbage in ["", "auth_error", "nap:1:2", "timeout:1:2:3", "timeout:-1:2"] {
            assert_eq!(Record::parse(garbage), None, "{garbage}");
        }
    }
}
