//! The Lua scripts that move the fleet's GCRA cells, their calls, and the time they run at.
//!
//! A cell's key holds its TAT as nanoseconds since the UNIX epoch, written as digits
//! (`1735689600123456789`). Redis's Lua numbers are doubles, exact only up to 2^53, so the
//! scripts never hold an absolute time in nanoseconds: the caller passes its time as whole
//! seconds and the nanoseconds within, and every time in a script is nanoseconds relative to
//! that second (a key is read as its seconds minus the caller's, times 10^9, plus its last nine
//! digits). Relative times stay far below 2^53, so the arithmetic is the integer arithmetic
//! of [`gcra`](crate::gcra), with the same intervals.

use std::sync::LazyLock;
use std::time::Duration;

use redis::{RedisResult, Script};
use tokio::time::Instant;
use tollgate_core::redis::Link;

use super::cell::Cell;
use super::clock::Frame;

/// Shared by both scripts: the caller's time and reading and writing a TAT.
macro_rules! prelude {
    () => {
        r"
local now_s = tonumber(ARGV[1])
local now = tonumber(ARGV[2])
-- A missing key is a bucket that has just become full (as a new in-memory cell is).
local function tat_of(key)
  local v = redis.call('GET', key)
  if not v then return now end
  return (tonumber(string.sub(v, 1, -10)) - now_s) * 1e9 + tonumber(string.sub(v, -9))
end
local function set_tat(key, tat, period)
  local ttl = tat + period - now
  if ttl <= 0 then
    redis.call('DEL', key)
    return
  end
  local s = math.floor(tat / 1e9)
  redis.call('SET', key, string.format('%d%09d', now_s + s, tat - s * 1e9),
    'PX', math.ceil(ttl / 1e6))
end
"
    };
}

/// First the changes, in order, on `KEYS[1..n]`: `add` (units, signed: a release or a
/// charge), `tighten` (remaining units as of a time) or `pause` (until a time, for units), each
/// with interval, tolerance and period. Then a reservation, all or nothing, on the other keys:
/// per key `back` (lease units given back first), `need`, `extra` (lease units wanted, granted
/// whole while as many again stay free, else none), interval, tolerance, margin, period. Replies `{status, index, wait,
/// tat of each change, then extra and tat of each ask}`: status 0 never fits, 1 would wait
/// (nothing reserved, extras 0), 2 granted; TATs relative to the caller's time.
const APPLY: &str = concat!(
    prelude!(),
    r"
local max_wait, n = tonumber(ARGV[3]), tonumber(ARGV[4])
local changed = {}
for i = 1, n do
  local o = 4 + (i - 1) * 6
  local kind, x, at = ARGV[o + 1], tonumber(ARGV[o + 2]), tonumber(ARGV[o + 3])
  local interval, tolerance, period = tonumber(ARGV[o + 4]), tonumber(ARGV[o + 5]), tonumber(ARGV[o + 6])
  local tat = tat_of(KEYS[i])
  if kind == 'add' then
    tat = tat + x * interval
  elseif kind == 'tighten' then
    tat = math.max(tat, at + math.max(tolerance - x * interval, 0))
  else
    tat = math.max(tat, at + math.max(tolerance - math.max(x, 1) * interval, 0))
  end
  set_tat(KEYS[i], tat, period)
  changed[i] = tat - now
end
local base = 4 + n * 6
-- A refusal reports where each asked key stands, so the caller's estimate stays fresh.
local function refuse(status, index, wait)
  local reply = {status, index - n, wait, unpack(changed)}
  for j = n + 1, #KEYS do
    reply[#reply + 1] = 0
    reply[#reply + 1] = tat_of(KEYS[j]) - now
  end
  return reply
end
local tats, depths, go = {}, {}, now
for i = n + 1, #KEYS do
  local a = base + (i - n - 1) * 7
  local back, need = tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
  local interval, tolerance = tonumber(ARGV[a + 4]), tonumber(ARGV[a + 5])
  local span = need * interval
  if span > tolerance then return refuse(0, i, 0) end
  local depth = math.max(tolerance - tonumber(ARGV[a + 6]), span)
  local tat = math.max(tat_of(KEYS[i]) - back * interval, now) + span
  local departure = math.max(tat - depth, now)
  if departure - now > max_wait then return refuse(1, i, departure - now) end
  tats[i], depths[i] = tat, depth
  if departure > go then go = departure end
end
local reply = {2, 0, go - now, unpack(changed)}
for i = n + 1, #KEYS do
  local a = base + (i - n - 1) * 7
  local interval, extra = tonumber(ARGV[a + 4]), 0
  if go == now then
    -- A lease only while as much again stays free: near the limit, one replica's lease
    -- would take the units the others' waiting requests are owed.
    local free = math.floor((now + depths[i] - tats[i]) / interval)
    local wanted = tonumber(ARGV[a + 3])
    if free >= 2 * wanted then extra = wanted end
  end
  tats[i] = tats[i] + extra * interval
  set_tat(KEYS[i], tats[i], tonumber(ARGV[a + 7]))
  reply[#reply + 1] = extra
  reply[#reply + 1] = tats[i] - now
end
return reply
"
);

static APPLY_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(APPLY));

/// What a reservation asks of one cell.
#[derive(Debug)]
pub(crate) struct Ask<'a> {
    pub(crate) dimension: crate::quota::Dimension,
    pub(crate) cell: &'a Cell,
    /// Leased units given back before asking.
    pub(crate) back: u64,
    /// The request's own units.
    pub(crate) need: u64,
    /// Lease units wanted on top, granted only while as many again stay free.
    pub(crate) extra: u64,
}

/// A reservation's answer.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Reserved {
    /// Granted, to go after `wait` nanoseconds.
    Granted(u64),
    /// The ask at this index can never fit.
    Never(usize),
    /// The ask at this index would wait this many nanoseconds.
    Wait(usize, u64),
}

/// One change to a cell, applied in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Change {
    /// Moves the TAT by this many units (negative: a release).
    Add(i64),
    /// The provider's count: `remaining` units left at `at`.
    Tighten { remaining: u64, at: Instant },
    /// Nothing before `until`, when `units` fit.
    Pause { until: Instant, units: u64 },
}

/// What Redis answered: the TAT of each change, the reservation's answer, and per ask the lease
/// units granted and the key's TAT (TATs relative to the frame's `now`).
#[derive(Debug)]
pub(crate) struct Applied {
    pub(crate) changed: Vec<i64>,
    pub(crate) reserved: Reserved,
    pub(crate) asked: Vec<(u64, i64)>,
}

/// Applies `changes` in order, then reserves `asks` (none: only the changes).
pub(crate) async fn apply(
    conn: &mut Link,
    frame: &Frame,
    changes: &[(&Cell, Change)],
    asks: &[Ask<'_>],
    max_wait: Duration,
) -> RedisResult<Applied> {
    let mut call = APPLY_SCRIPT.prepare_invoke();
    call.arg(frame.second)
        .arg(frame.nanos)
        .arg(u64::try_from(max_wait.as_nanos()).unwrap_or(u64::MAX))
        .arg(changes.len());
    for (cell, change) in changes {
        call.key(&*cell.key);
        match *change {
            Change::Add(units) => call.arg("add").arg(units).arg(0),
            Change::Tighten { remaining, at } => {
                call.arg("tighten").arg(remaining).arg(frame.offset(at))
            }
            Change::Pause { until, units } => call.arg("pause").arg(units).arg(frame.offset(until)),
        };
        call.arg(cell.interval).arg(cell.tolerance).arg(cell.period);
    }
    for ask in asks {
        let cell = ask.cell;
        call.key(&*cell.key)
            .arg(ask.back)
            .arg(ask.need)
            .arg(ask.extra)
            .arg(cell.interval)
            .arg(cell.tolerance)
            .arg(cell.margin)
            .arg(cell.period);
    }
    let reply: Vec<i64> = call.invoke_async(conn).await?;
    let (head, rest) = reply.split_at(reply.len().min(3));
    let (changed, asked) = rest.split_at(rest.len().min(changes.len()));
    let index = |i: i64| usize::try_from(i - 1).unwrap_or(0);
    let reserved = match *head {
        [0, i, _] => Reserved::Never(index(i)),
        [1, i, wait] => Reserved::Wait(index(i), wait.unsigned_abs()),
        [2, _, wait] => Reserved::Granted(wait.unsigned_abs()),
        _ => {
            return Err((
                redis::ErrorKind::Parse,
                "unexpected reply from the limits script",
            )
                .into());
        }
    };
    let asked = asked.chunks_exact(2);
    Ok(Applied {
        changed: changed.to_vec(),
        reserved,
        asked: asked
            .map(|pair| (pair[0].unsigned_abs(), pair[1]))
            .collect(),
    })
}

/// Reads a cell's TAT from its key: the instant it stands at, `None` when the key is absent
/// (a full bucket).
pub(crate) async fn read_tat(
    conn: &mut Link,
    frame: &Frame,
    key: &str,
) -> RedisResult<Option<Instant>> {
    let value: Option<String> = redis::cmd("GET").arg(key).query_async(conn).await?;
    let Some(value) = value.filter(|v| v.len() > 9 && v.bytes().all(|b| b.is_ascii_digit())) else {
        return Ok(None);
    };
    let (seconds, nanos) = value.split_at(value.len() - 9);
    let parse = |digits: &str| digits.parse::<i64>().unwrap_or(0);
    let second = i64::try_from(frame.second).unwrap_or(i64::MAX);
    let relative = (parse(seconds) - second)
        .saturating_mul(1_000_000_000)
        .saturating_add(parse(nanos) - frame.nanos);
    Ok(Some(frame.instant(relative)))
}
