//! The one Lua script that moves a fleet's books, its call, and its reply.
//!
//! Money is picodollars and tokens are counted in `u64`, beyond the 2^53 that Redis's Lua
//! numbers (doubles) hold exactly: the script keeps every amount as decimal digits and does
//! its sums on two limbs of nine digits each, so every amount is exact to the picodollar.
//!
//! Per budget (a *group*): `held`, a hash of reservation id → `"picodollars tokens"`;
//! `expiry`, a sorted set of the same ids scored by when they expire (Unix milliseconds);
//! `reserved`, a hash of their sum (`usd`, `tok`); and one hash per slot of the window
//! (`usd`, `tok`) that expires when its spend stops counting.

use std::sync::LazyLock;

use ::redis::{RedisResult, Script};
use tollgate_core::redis::Link;

use crate::Usd;
use crate::ledger::{Limits, Spend};

/// First, for every group: the reservations past their expiry are dropped; a Redis that lost
/// the group's keys gets its floor back (the spend a process last saw, in the current slot);
/// then the adds (settled spend into a slot), drops (settled reservations) and renewals (a
/// new expiry for reservations still held). Adds and the floor are skipped when the batch
/// marker `KEYS[1]` says the batch was applied already (a retry after a timeout). Then, with a
/// reservation id, the reservation: in every group `spent + reserved + need <= limit` for
/// dollars and tokens, or nothing is held. Replies `{refused group (0: none), then per group:
/// spent usd, spent tokens, reserved usd, reserved tokens, oldest slot with spend (0: none)}`.
const BOOKS: &str = r"
local B = 1000000000
local function big(s)
  if not s or s == '' then return {0, 0} end
  if #s <= 9 then return {0, tonumber(s)} end
  return {tonumber(string.sub(s, 1, -10)), tonumber(string.sub(s, -9))}
end
local function add(a, b)
  local lo = a[2] + b[2]
  local carry = math.floor(lo / B)
  return {a[1] + b[1] + carry, lo - carry * B}
end
local function sub(a, b)
  local hi, lo = a[1] - b[1], a[2] - b[2]
  if lo < 0 then lo = lo + B; hi = hi - 1 end
  if hi < 0 then return {0, 0} end
  return {hi, lo}
end
local function gt(a, b) return a[1] > b[1] or (a[1] == b[1] and a[2] > b[2]) end
local function zero(a) return a[1] == 0 and a[2] == 0 end
local function str(a)
  if a[1] == 0 then return string.format('%d', a[2]) end
  return string.format('%d%09d', a[1], a[2])
end

local now, hold_until, id, ttl = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local apply = true
if ARGV[5] == '1' then
  if redis.call('EXISTS', KEYS[1]) == 1 then
    apply = false
  else
    redis.call('SET', KEYS[1], '1', 'PX', 3600000)
  end
end
local p, k = 7, 2
local groups = {}
for gi = 1, tonumber(ARGV[6]) do
  local g = {held = KEYS[k], exp = KEYS[k + 1], res = KEYS[k + 2], slots = {}}
  local n = tonumber(ARGV[p]); p = p + 1
  for j = 1, n do g.slots[j] = {KEYS[k + 2 + j], ARGV[p]}; p = p + 1 end
  k = k + 3 + n
  g.limit = {ARGV[p], ARGV[p + 1]}
  g.need = {big(ARGV[p + 2]), big(ARGV[p + 3])}
  local floor = {big(ARGV[p + 4]), big(ARGV[p + 5])}
  p = p + 6
  local r = redis.call('HMGET', g.res, 'usd', 'tok')
  g.reserved = {big(r[1]), big(r[2])}
  local function unhold(hid)
    local v = redis.call('HGET', g.held, hid)
    if v then
      local u, t = string.match(v, '^(%d+) (%d+)$')
      g.reserved = {sub(g.reserved[1], big(u)), sub(g.reserved[2], big(t))}
      redis.call('HDEL', g.held, hid)
    end
    redis.call('ZREM', g.exp, hid)
  end
  for _, hid in ipairs(redis.call('ZRANGEBYSCORE', g.exp, '-inf', now)) do unhold(hid) end
  if apply and not (zero(floor[1]) and zero(floor[2])) then
    local found = false
    for j = 1, n do
      if redis.call('EXISTS', g.slots[j][1]) == 1 then found = true end
    end
    if not found then
      redis.call('HSET', g.slots[n][1], 'usd', str(floor[1]), 'tok', str(floor[2]))
      redis.call('EXPIREAT', g.slots[n][1], g.slots[n][2])
    end
  end
  local nadd = tonumber(ARGV[p]); p = p + 1
  for _ = 1, nadd do
    if apply then
      local slot = g.slots[tonumber(ARGV[p])]
      local v = redis.call('HMGET', slot[1], 'usd', 'tok')
      redis.call('HSET', slot[1], 'usd', str(add(big(v[1]), big(ARGV[p + 1]))),
        'tok', str(add(big(v[2]), big(ARGV[p + 2]))))
      redis.call('EXPIREAT', slot[1], slot[2])
    end
    p = p + 3
  end
  local ndrop = tonumber(ARGV[p]); p = p + 1
  for _ = 1, ndrop do unhold(ARGV[p]); p = p + 1 end
  local nrenew = tonumber(ARGV[p]); p = p + 1
  for _ = 1, nrenew do redis.call('ZADD', g.exp, 'XX', hold_until, ARGV[p]); p = p + 1 end
  g.spent = {{0, 0}, {0, 0}}
  g.oldest = 0
  for j = 1, n do
    local v = redis.call('HMGET', g.slots[j][1], 'usd', 'tok')
    local s = {big(v[1]), big(v[2])}
    if g.oldest == 0 and not (zero(s[1]) and zero(s[2])) then g.oldest = j end
    g.spent = {add(g.spent[1], s[1]), add(g.spent[2], s[2])}
  end
  groups[gi] = g
end
local refused = 0
if id ~= '' then
  for gi, g in ipairs(groups) do
    for d = 1, 2 do
      if refused == 0 and g.limit[d] ~= '-'
        and gt(add(add(g.spent[d], g.reserved[d]), g.need[d]), big(g.limit[d])) then
        refused = gi
      end
    end
  end
  if refused == 0 then
    for _, g in ipairs(groups) do
      redis.call('HSET', g.held, id, str(g.need[1]) .. ' ' .. str(g.need[2]))
      redis.call('ZADD', g.exp, hold_until, id)
      g.reserved = {add(g.reserved[1], g.need[1]), add(g.reserved[2], g.need[2])}
    end
  end
end
local reply = {tostring(refused)}
for _, g in ipairs(groups) do
  redis.call('HSET', g.res, 'usd', str(g.reserved[1]), 'tok', str(g.reserved[2]))
  redis.call('PEXPIRE', g.held, ttl)
  redis.call('PEXPIRE', g.exp, ttl)
  redis.call('PEXPIRE', g.res, ttl)
  reply[#reply + 1] = str(g.spent[1])
  reply[#reply + 1] = str(g.spent[2])
  reply[#reply + 1] = str(g.reserved[1])
  reply[#reply + 1] = str(g.reserved[2])
  reply[#reply + 1] = tostring(g.oldest)
end
return reply
";

static SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(BOOKS));

/// The keys of one budget.
#[derive(Debug)]
pub(super) struct Keys {
    held: String,
    expiry: String,
    reserved: String,
    /// The slot keys' prefix: a slot's key is this and its start.
    spend: String,
}

impl Keys {
    /// The keys of budget `name` under `prefix`; the prefix is a hash tag, so that the script
    /// may touch every budget's keys on one Redis Cluster node.
    pub(super) fn new(prefix: &str, name: &str) -> Self {
        let base = format!("{{{prefix}}}:{name}");
        Self {
            held: format!("{base}:held"),
            expiry: format!("{base}:expiry"),
            reserved: format!("{base}:reserved"),
            spend: format!("{base}:spend:"),
        }
    }
}

/// One budget's part of a call.
#[derive(Debug)]
pub(super) struct Group<'a> {
    pub(super) keys: &'a Keys,
    /// The slots that count now, oldest first, and when each key may expire (Unix seconds).
    pub(super) slots: Vec<(i64, i64)>,
    pub(super) limits: Limits,
    /// What the reservation holds in this budget (with an id).
    pub(super) need: Spend,
    /// Spend to restore if Redis has none of the slots.
    pub(super) floor: Spend,
    /// Spend to add, by index into `slots`.
    pub(super) adds: Vec<(usize, Spend)>,
    /// Reservations settled.
    pub(super) drops: Vec<String>,
    /// Reservations still held, to renew.
    pub(super) renews: Vec<String>,
}

impl<'a> Group<'a> {
    pub(super) fn new(keys: &'a Keys, slots: Vec<(i64, i64)>, limits: Limits) -> Self {
        Self {
            keys,
            slots,
            limits,
            need: Spend::ZERO,
            floor: Spend::ZERO,
            adds: Vec::new(),
            drops: Vec::new(),
            renews: Vec::new(),
        }
    }
}

/// One call of the script.
#[derive(Debug)]
pub(super) struct Call<'a> {
    pub(super) now_ms: i64,
    pub(super) hold_until_ms: i64,
    /// The reservation to take, if any.
    pub(super) id: Option<&'a str>,
    /// How long the reservation keys of a budget outlive their last use.
    pub(super) ttl_ms: u64,
    /// The batch marker's key, and whether the call is a batch to apply once.
    pub(super) marker: &'a str,
    pub(super) batch: bool,
    pub(super) groups: Vec<Group<'a>>,
}

/// What Redis says of one budget after the call.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Seen {
    pub(super) spent: Spend,
    pub(super) reserved: Spend,
    /// The oldest slot with spend, by index into the group's slots.
    pub(super) oldest: Option<usize>,
}

/// The script's reply.
#[derive(Debug)]
pub(super) struct Reply {
    /// The group that could not hold the reservation (nothing was held).
    pub(super) refused: Option<usize>,
    pub(super) seen: Vec<Seen>,
}

fn limit(value: Option<u64>) -> String {
    value.map_or_else(|| "-".to_owned(), |v| v.to_string())
}

/// Runs `call`.
pub(super) async fn run(conn: &mut Link, call: &Call<'_>) -> RedisResult<Reply> {
    let mut invocation = SCRIPT.prepare_invoke();
    invocation.key(call.marker);
    invocation
        .arg(call.now_ms)
        .arg(call.hold_until_ms)
        .arg(call.id.unwrap_or(""))
        .arg(call.ttl_ms)
        .arg(if call.batch { "1" } else { "0" })
        .arg(call.groups.len());
    for group in &call.groups {
        let keys = group.keys;
        invocation
            .key(&keys.held)
            .key(&keys.expiry)
            .key(&keys.reserved);
        invocation.arg(group.slots.len());
        for &(slot, expires) in &group.slots {
            invocation.key(format!("{}{slot}", keys.spend)).arg(expires);
        }
        invocation
            .arg(limit(group.limits.usd.map(Usd::picos)))
            .arg(limit(group.limits.tokens))
            .arg(group.need.usd.picos())
            .arg(group.need.tokens)
            .arg(group.floor.usd.picos())
            .arg(group.floor.tokens)
            .arg(group.adds.len());
        for &(index, spend) in &group.adds {
            invocation
                .arg(index + 1)
                .arg(spend.usd.picos())
                .arg(spend.tokens);
        }
        invocation.arg(group.drops.len()).arg(&group.drops);
        invocation.arg(group.renews.len()).arg(&group.renews);
    }
    let reply: Vec<String> = invocation.invoke_async(conn).await?;
    parse(&reply, call.groups.len()).ok_or_else(|| {
        ::redis::RedisError::from((
            ::redis::ErrorKind::UnexpectedReturnType,
            "budget script reply",
            format!("{reply:?}"),
        ))
    })
}

/// An amount the script wrote, saturated to `u64`.
fn amount(text: &str) -> Option<u64> {
    text.parse::<u128>()
        .ok()
        .map(|v| u64::try_from(v).unwrap_or(u64::MAX))
}

fn parse(reply: &[String], groups: usize) -> Option<Reply> {
    let (refused, rest) = reply.split_first()?;
    if rest.len() != groups * 5 {
        return None;
    }
    let refused: usize = refused.parse().ok()?;
    let seen = rest
        .chunks(5)
        .map(|c| {
            let oldest: usize = c[4].parse().ok()?;
            Some(Seen {
                spent: Spend {
                    usd: Usd::from_picos(amount(&c[0])?),
                    tokens: amount(&c[1])?,
                },
                reserved: Spend {
                    usd: Usd::from_picos(amount(&c[2])?),
                    tokens: amount(&c[3])?,
                },
                oldest: oldest.checked_sub(1),
            })
        })
        .collect::<Option<Vec<_>>>()?;
    Some(Reply {
        refused: refused.checked_sub(1),
        seen,
    })
}
