use std::collections::HashSet;
use std::fmt;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use http::StatusCode;
use integration_core::names;
use integration_core::redis::{RedisCallError, SharedRedis};
use redis::aio::{ConnectionLike as _, ConnectionManager};
use redis::{
    Cmd, ErrorKind, FromRedisValue, RedisResult, RedisWrite, Script, ServerErrorKind, ToRedisArgs,
    Value,
};

use super::memory::nanos;
use super::{Acquire, Decision, MemoryStore, Observation, RateLimitStore, StoreFuture};
use crate::gcra::{Adapt, Bounds, Signal};
use crate::key::RateLimitKey;
use crate::limiter::learned_rate_gauge;
use crate::policy::{Quota, RateLimitPolicy};

/// The learned state of a key (`gcra::Learned`, field by field, in microseconds) and its rules,
/// shared by both scripts. Every function mirrors its Rust twin in `gcra.rs`.
macro_rules! learned_lua {
    () => {
        r"
local FIELDS = {'w', 'r', 's', 'e', 't', 'b', 'p', 'c', 'pi', 'pu', 'pt', 'ps', 'pn', 'px'}
local LEARNED_TTL = 600000000
local PROBE_GROWTH = 16
local function load_learned(key)
  local values = redis.call('HMGET', key, unpack(FIELDS))
  local l = {}
  for i = 1, #FIELDS do l[FIELDS[i]] = tonumber(values[i]) or 0 end
  return l
end
local function save_learned(key, l, now)
  local args = {}
  for i = 1, #FIELDS do
    args[#args + 1] = FIELDS[i]
    args[#args + 1] = string.format('%.17g', l[FIELDS[i]])
  end
  redis.call('HSET', key, unpack(args))
  local busy = math.max(l.t, l.pu, l.pt, now + 2000000)
  if l.w > 0 then busy = math.max(busy, l.e + LEARNED_TTL) end
  if l.ps > 0 then busy = math.max(busy, (l.b + 1) * 1000000 + LEARNED_TTL) end
  redis.call('PEXPIRE', key, string.format('%.0f', math.ceil((busy - now) / 1000) + 1))
end
local function probe(l, now, min_rate, cap, window)
  if l.w > 0 or l.ps <= 1 or window <= 0 or l.pn < window then return nil end
  local t = math.max(now - l.ps, 0) / 1000000
  local rate = math.max(window * PROBE_GROWTH ^ t, min_rate)
  if cap >= 0 and rate >= cap then return nil end
  if rate == math.huge then return nil end
  return rate
end
local function overshoot_ratio(y)
  if not (y < 1) then return 0 end
  local lo, hi = 0, 1
  for _ = 1, 60 do
    local mid = (lo + hi) / 2
    if 1 - mid + mid * math.log(mid) > y then lo = mid else hi = mid end
  end
  return (lo + hi) / 2
end
local function probe_estimate(l, sent, min_rate, cap, window)
  if l.w > 0 or l.ps <= 1 or window <= 0 or l.pn <= window or sent <= l.ps then return nil end
  local t = (sent - l.ps) / 1000000
  local ln_g = math.log(PROBE_GROWTH)
  local grown = PROBE_GROWTH ^ t
  local allowed = window + window * (grown - 1) / ln_g
  local counted = (math.min(l.pn, allowed) - window) / t
  local at = window * grown
  local estimate = math.max(counted, at * overshoot_ratio(window * ln_g / at))
  if cap >= 0 and estimate > cap then estimate = cap end
  return math.max(estimate, min_rate)
end
local function learned_rate(l, now, min_rate, increase, cap, window)
  if l.w <= 0 then return probe(l, now, min_rate, cap, window) end
  local k = (math.max(l.w - l.r, 0) / increase) ^ (1 / 3)
  local t = math.max(now - l.s, 0) / 1000000
  local rate = math.max(l.w + increase * (t - k) ^ 3, min_rate)
  if cap >= 0 and rate >= cap then return nil end
  return rate
end
local function measured(l, now)
  local bucket = math.floor(now / 1000000)
  if l.b > bucket then return math.max(l.p, l.c) end
  local previous, current = 0, 0
  if bucket == l.b then previous, current = l.p, l.c elseif bucket == l.b + 1 then previous = l.c end
  local into = (now % 1000000) / 1000000
  return previous * (1 - into) + current
end
local function count(l, send)
  local bucket = math.floor(send / 1000000)
  if bucket <= l.b then
    l.c = l.c + 1
  elseif bucket == l.b + 1 then
    l.p, l.c, l.b = l.c, 1, bucket
  else
    l.p, l.c, l.b = 0, 1, bucket
  end
end
local function gauge(l, now, min_rate, increase, cap)
  if l.w <= 0 then return -1 end
  local rate = learned_rate(l, now, min_rate, increase, cap, 0) or cap
  return math.floor(rate * 1000)
end
local function set_tat(key, tat, now)
  -- Kept ten minutes past the instant its burst is whole again: a missing key starts as new (a
  -- second's permits held back), so an idle key keeps the burst it built up for that long.
  local ttl = math.ceil((tat - now) / 1000) + 600000
  redis.call('SET', key, string.format('%.0f', tat), 'PX', string.format('%.0f', ttl))
end
"
    };
}

/// Takes a permit of every quota of a key in one atomic step, on Redis's own clock.
///
/// KEYS: the TAT of each quota (`{prefix:key}:q0`, `:q1`...), the pause key (`{prefix:key}:pause`),
/// the learned state (`{prefix:key}:learned`, a hash).
/// ARGV: max wait (us), max server pause (us), adaptation on (1/0), min rate, decrease, increase,
/// cap (per second, -1: none), initial window, then per quota its emission interval and tolerance
/// (us).
/// Returns `{1, wait_us, 0, gauge}` granted, `{0, retry_after_us, 0, gauge}` refused by the quotas
/// or the learned pace, or `{2, retry_after_us, status, -1}` refused by a server pause; `gauge` is the
/// learned rate in thousandths per second, -1 for none. A grant with no gauge, the usual answer, is
/// `wait_us` alone: one integer decodes in a fraction of what a four-element array costs the client
/// (about 3,000 instructions an acquisition, issue 19; see [`AcquireReply`]). Mirrors
/// `gcra::decide`.
const ACQUIRE_SCRIPT: &str = concat!(
    learned_lua!(),
    r"
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
local max_wait = tonumber(ARGV[1])
local max_pause = tonumber(ARGV[2])
local adapt = ARGV[3] == '1'
local min_rate, increase, cap = tonumber(ARGV[4]), tonumber(ARGV[6]), tonumber(ARGV[7])
local window = tonumber(ARGV[8])
local n = #KEYS - 2
local pause_key, learned_key = KEYS[n + 1], KEYS[n + 2]
local send = now
local left = redis.call('PTTL', pause_key)
if left > 0 then
  left = left * 1000
  if left > max_pause or left > max_wait then
    return {2, left, tonumber(redis.call('GET', pause_key)) or 0, -1}
  end
  send = now + left
end
local tats = {}
for i = 1, n do
  local stored = redis.call('GET', KEYS[i])
  local interval = tonumber(ARGV[7 + 2 * i])
  local tat = now + math.min(tonumber(ARGV[8 + 2 * i]), math.floor(1000000 / interval) * interval)
  if stored then tat = tonumber(stored) or 0 end
  tats[i] = tat
  local allow = tat - tonumber(ARGV[8 + 2 * i])
  if allow > send then send = allow end
end
local l, rate, paced, skipped = nil, nil, false, false
if adapt then
  l = load_learned(learned_key)
  rate = learned_rate(l, now, min_rate, increase, cap, window)
  if rate then
    local at = math.max(send, l.t)
    if l.w <= 0 and at - now > max_wait then skipped, rate = true, nil else send = at end
  end
  if l.pu > send or (l.pu > 0 and l.pt > send) then
    local slot = math.max(send, l.pt)
    if slot < l.pu or slot - now <= max_wait then
      send, paced = slot, true
    else
      send = math.max(send, l.pu)
    end
  end
end
local wait = send - now
if wait > max_wait then
  return {0, wait, 0, -1}
end
for i = 1, n do
  local from = send
  if rate then from = send + tonumber(ARGV[8 + 2 * i]) end
  set_tat(KEYS[i], math.max(tats[i], from) + tonumber(ARGV[7 + 2 * i]), now)
end
local g = -1
if adapt then
  if rate then
    local at_send = learned_rate(l, send, min_rate, increase, cap, window)
    if not at_send and cap >= 0 then at_send = cap end
    local spacing = 0
    if at_send then spacing = math.ceil(1000000 / at_send) end
    l.t = math.max(l.t, send) + spacing
  end
  if l.w <= 0 and window > 0 then
    if l.ps == 0 then l.ps = math.max(send, 2) end
    l.pn = l.pn + 1
    if not rate and not skipped then
      local next = probe(l, send, min_rate, cap, window)
      if next then l.t = math.max(l.t, send) + math.ceil(1000000 / next) end
    end
  end
  if paced then
    local next_window = l.px
    if next_window <= 0 then next_window = l.pi end
    local next = send + next_window
    if send < l.pu then next = math.min(send + l.pi, math.max(l.pu, next)) end
    l.pt = math.max(l.pt, next)
  end
  count(l, send)
  save_learned(learned_key, l, now)
  g = gauge(l, now, min_rate, increase, cap)
end
if g < 0 then return wait end
return {1, wait, 0, g}
"
);

/// Applies a response's signal to a key in one atomic step (mirrors `gcra::observe`).
///
/// KEYS: as [`ACQUIRE_SCRIPT`]. ARGV: pause (us, 0: none), status, throttled (1/0), age of the request
/// (us), remaining (-1: not stated), reset (us), adaptation on (1/0), min rate, decrease, increase,
/// cap (-1: none), initial window, then per quota its emission interval and tolerance (us). Returns
/// the gauge.
const OBSERVE_SCRIPT: &str = concat!(
    learned_lua!(),
    r"
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
local pause = tonumber(ARGV[1])
local throttled = ARGV[3] == '1'
local age = tonumber(ARGV[4])
local remaining, reset = tonumber(ARGV[5]), tonumber(ARGV[6])
local adapt = ARGV[7] == '1'
local min_rate, decrease, increase, cap =
  tonumber(ARGV[8]), tonumber(ARGV[9]), tonumber(ARGV[10]), tonumber(ARGV[11])
local window = tonumber(ARGV[12])
local n = #KEYS - 2
local pause_key, learned_key = KEYS[n + 1], KEYS[n + 2]
local resume = now
local left = redis.call('PTTL', pause_key)
if left > 0 then resume = now + left * 1000 end
if pause > 0 and now + pause > resume then
  redis.call('SET', pause_key, ARGV[2], 'PX', string.format('%.0f', math.ceil(pause / 1000)))
  resume = now + pause
end
local l = nil
if adapt then l = load_learned(learned_key) end
if pause > 0 or throttled then
  for i = 1, n do
    local tat = tonumber(redis.call('GET', KEYS[i]) or '0') or 0
    local want = resume + tonumber(ARGV[12 + 2 * i])
    if want > tat then set_tat(KEYS[i], want, now) end
  end
  if adapt then
    l.t = math.max(l.t, resume)
    l.pt = math.max(l.pt, resume)
    if throttled and (l.w <= 0 or now - age >= l.s) then
      local estimate = probe_estimate(l, now - age, min_rate, cap, window)
      if estimate then
        l.w = estimate
        l.r = math.max(estimate * decrease, min_rate)
      else
        local at_loss = nil
        if l.w > 0 then at_loss = learned_rate(l, now, min_rate, increase, cap, window) end
        if not at_loss then
          at_loss = measured(l, now)
          if cap >= 0 and at_loss > cap then at_loss = cap end
        end
        at_loss = math.max(at_loss, min_rate)
        if at_loss < l.w then l.w = at_loss * (1 + decrease) / 2 else l.w = at_loss end
        l.r = math.max(at_loss * decrease, min_rate)
      end
      l.s = resume
      l.e = now
    end
  end
end
if not adapt then return -1 end
if remaining > 0 and reset > 0 then
  local interval = math.floor(reset / remaining)
  if l.px <= 0 or now >= l.pu then l.px = interval else l.px = math.min(l.px, interval) end
  l.pi = interval
  l.pu = now + reset
  if l.w <= 0 then l.ps = 1 end
end
save_learned(learned_key, l, now)
return gauge(l, now, min_rate, increase, cap)
"
);

/// Pauses a key: sets the pause key to the status with a PX expiry, unless a longer pause is in force
/// (the [`RateLimitStore::pause`] of a custom caller; the layer goes through [`OBSERVE_SCRIPT`]).
const PAUSE_SCRIPT: &str = r"
local px = tonumber(ARGV[1])
if redis.call('PTTL', KEYS[1]) < px then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', px)
  return 1
end
return 0
";

/// Seeds a key on the return of Redis from what this replica's fallback did meanwhile, so the
/// shared quota does not hand out a fresh burst on top of the permits granted locally.
///
/// KEYS: the TAT of each quota then the pause key, as for the acquisition.
/// ARGV: the time until this replica's next local permit (us), the server pause left (ms, 0: none),
/// its status, then per quota its tolerance (us).
/// Each quota's TAT becomes at least `now + next + tolerance` (its next permit no sooner than the
/// fallback's, and no burst after it); the pause is extended to the local one. Never lowers anything.
const SEED_SCRIPT: &str = r"
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
local next = tonumber(ARGV[1])
local n = #KEYS - 1
for i = 1, n do
  local tat = tonumber(redis.call('GET', KEYS[i]) or '0') or 0
  local floor = now + next + tonumber(ARGV[3 + i])
  if floor > tat then
    local ttl = math.ceil((floor - now) / 1000) + 1
    redis.call('SET', KEYS[i], string.format('%.0f', floor), 'PX', string.format('%.0f', ttl))
  end
end
local px = tonumber(ARGV[2])
if px > 0 and redis.call('PTTL', KEYS[n + 1]) < px then
  redis.call('SET', KEYS[n + 1], ARGV[3], 'PX', px)
end
return 1
";

/// Settings of a [`RedisStore`].
///
/// ```
/// use std::time::Duration;
/// use integration_ratelimit::RedisOptions;
///
/// let options = RedisOptions::new()
///     .with_timeout(Duration::from_millis(20))
///     .with_expected_replicas(4)
///     .with_integration("github");
/// assert_eq!(options.expected_replicas(), 4);
/// ```
#[derive(Debug, Clone)]
pub struct RedisOptions {
    timeout: Duration,
    expected_replicas: u32,
    integration: Option<Arc<str>>,
}

impl RedisOptions {
    /// Defaults: 50 ms per call, 1 expected replica.
    pub fn new() -> Self {
        Self {
            timeout: Duration::from_millis(50),
            expected_replicas: 1,
            integration: None,
        }
    }

    /// How long one Redis call may take before the store falls back to its local limiter (and
    /// marks the [`SharedRedis`] unavailable for every user of it until its probe finds Redis
    /// again).
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// How many replicas share the quota: while Redis is unreachable, each limits itself locally to
    /// its share (rate and burst divided by this number, at least 1).
    #[must_use]
    pub fn with_expected_replicas(mut self, replicas: u32) -> Self {
        self.expected_replicas = replicas.max(1);
        self
    }

    /// The `integration.name` label of the fallback gauge and the name in the log (default: the prefix).
    #[must_use]
    pub fn with_integration(mut self, name: impl Into<Arc<str>>) -> Self {
        self.integration = Some(name.into());
        self
    }

    /// The timeout per Redis call.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The replicas sharing the quota.
    pub fn expected_replicas(&self) -> u32 {
        self.expected_replicas
    }
}

impl Default for RedisOptions {
    fn default() -> Self {
        Self::new()
    }
}

/// The most keys a [`RedisStore`] remembers to seed back into Redis after an outage: as many as its
/// fallback [`MemoryStore`] holds by default, past which the fallback has no state to seed anyway.
/// A key beyond it rejoins as a new key (a second's permits held back), without the
/// server pause seen locally; each is counted in `integration.ratelimit.rejoin_dropped` and the
/// first of an outage is logged at `warn`.
pub const MAX_REJOIN_KEYS: usize = MemoryStore::DEFAULT_MAX_KEYS;

/// Keys and their GCRA state in Redis, shared by every replica.
///
/// - **One round trip per call.** One Lua script reads the key's server pause and every quota's state,
///   decides on Redis's own clock (`TIME`, so replicas with skewed clocks agree) and writes the new
///   state. It is sent by SHA (`EVALSHA`); the store loads it (`SCRIPT LOAD`) and repeats the call when
///   the server answers `NOSCRIPT` (after a restart or a `SCRIPT FLUSH`), so it is loaded once per
///   server. The call's keys and arguments are written straight into the command, with a policy's
///   arguments computed once per policy: nothing is formatted or allocated per key or argument.
/// - **Cluster safe.** Every key of a limiter key shares one hash tag, `{prefix:key}:q0`,
///   `{prefix:key}:q1`, `{prefix:key}:pause`, `{prefix:key}:learned`, so a script touches one slot.
/// - **Bounded.** A quota's state expires (`PX`) ten minutes after its permits are all earned back
///   (a key unseen that long starts over as new: its first second at the quota's pace), a pause
///   when it ends, a learned rate ten minutes after the key's last throttle.
/// - **Server pauses are shared**: a pause is a Redis key with a `PX` expiry, seen by every replica (and
///   mirrored in the local fallback).
/// - **Learned rates are shared**: what a key learned from the server ([`Adaptation`](crate::Adaptation):
///   its CUBIC rate, the measured rate of its permits, the pace of the server's counters) is a hash,
///   `{prefix:key}:learned`, read and written by the acquisition script in its one round trip, so
///   every replica paces by one rate. A response carrying a signal is applied by a second script (one
///   round trip per such response), which also empties the key's burst.
/// - **Redis down.** Redis is reached through a [`SharedRedis`]: a call that fails or takes longer
///   than [`RedisOptions::with_timeout`] (50 ms) marks Redis unavailable, and from then on every call
///   is decided at once, with no round trip, by a local [`MemoryStore`] at this replica's share of each
///   quota (rate and burst divided by [`RedisOptions::with_expected_replicas`], at least 1): never no
///   limit, never a stall. The [`SharedRedis`] logs the outage once and probes for Redis's return in
///   the background; the gauge `integration.ratelimit.fallback` is 1 while this store decides
///   locally.
/// - **The switch never passes the quota.** The fallback starts from the last known state: after
///   each permit Redis grants, the local state of the key is raised to "no burst left, next permit one
///   local interval after this one"; a key first seen on the fallback starts with no burst either. So
///   the permits Redis granted just before the outage and the fallback's first ones never add up to
///   more than the pace.
/// - **Rejoin without a burst.** Redis may come back empty (restarted) or with state older than this
///   replica's. The first call of each key that the fallback decided goes to Redis with a seed first:
///   one script raises the key's state to "no permit before this replica's next local one, no burst
///   after it" and copies a server pause seen locally, so nobody gets a fresh burst on top of what
///   the fallbacks granted. Seeding only ever raises state (`max`), so replicas rejoining together
///   agree. At most [`MAX_REJOIN_KEYS`] keys wait for their seed.
///
/// ```no_run
/// use std::time::Duration;
/// use integration_core::redis::{SharedRedis, SharedRedisConfig};
/// use integration_ratelimit::{Quota, RateLimitLayer, RateLimitPolicy, RateLimiter, RedisOptions};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// // Bounded: 50 ms per command, one connection attempt at a time; no I/O until first use.
/// let connection = SharedRedis::open("redis://127.0.0.1:6379", SharedRedisConfig::new())?;
///
/// let policy = RateLimitPolicy::new([Quota::per_second(50)?]).with_max_wait(Duration::from_secs(2));
/// // Six replicas share the quota: 8 per second each (burst 8) while Redis is unreachable.
/// let options = RedisOptions::new().with_expected_replicas(6).with_integration("github");
/// let limiter = RateLimiter::redis(connection, "ratelimit:prod", policy, options);
/// let layer = RateLimitLayer::new(limiter);
/// # let _ = layer;
/// # Ok(())
/// # }
/// ```
///
/// # Clone
///
/// Clones share the connection, the fallback and its state.
#[derive(Clone)]
pub struct RedisStore {
    inner: Arc<Inner>,
}

struct Inner {
    connection: SharedRedis,
    prefix: String,
    /// `{prefix:`, the start of every key name (see [`KeyOf`]).
    key_head: Box<[u8]>,
    options: RedisOptions,
    label: Arc<str>,
    acquire: Script,
    observe: Script,
    pause: Script,
    seed: Script,
    fallback: MemoryStore,
    on_fallback: AtomicBool,
    /// Keys the fallback decided (or paused) since Redis was last used for them: each is seeded into
    /// Redis on its first call there.
    rejoin: Mutex<HashSet<RateLimitKey>>,
    rejoin_pending: AtomicBool,
    /// The rejoin set overflowed since it was last empty (logged once).
    rejoin_overflow: AtomicBool,
    calls: AtomicU64,
    policy_args: Mutex<PolicyArgsCache>,
}

impl RedisStore {
    /// A store over `connection` (a [`SharedRedis`], or a `redis` connection manager given the
    /// default bounds), its keys under `prefix`.
    pub fn new(
        connection: impl Into<SharedRedis>,
        prefix: impl Into<String>,
        options: RedisOptions,
    ) -> Self {
        let connection = connection.into();
        let prefix = prefix.into();
        let label = options
            .integration
            .clone()
            .unwrap_or_else(|| Arc::from(prefix.as_str()));
        Self {
            inner: Arc::new(Inner {
                connection,
                key_head: format!("{{{prefix}:").into_bytes().into_boxed_slice(),
                prefix,
                options,
                label,
                acquire: Script::new(ACQUIRE_SCRIPT),
                observe: Script::new(OBSERVE_SCRIPT),
                pause: Script::new(PAUSE_SCRIPT),
                seed: Script::new(SEED_SCRIPT),
                fallback: MemoryStore::new(),
                on_fallback: AtomicBool::new(false),
                rejoin: Mutex::new(HashSet::new()),
                rejoin_pending: AtomicBool::new(false),
                rejoin_overflow: AtomicBool::new(false),
                calls: AtomicU64::new(0),
                policy_args: Mutex::default(),
            }),
        }
    }

    /// The key prefix.
    pub fn prefix(&self) -> &str {
        &self.inner.prefix
    }

    /// The options.
    pub fn options(&self) -> &RedisOptions {
        &self.inner.options
    }

    /// True while calls are decided by the local fallback.
    pub fn is_on_fallback(&self) -> bool {
        self.inner.on_fallback.load(Ordering::Acquire)
    }

    /// Acquisitions sent to Redis so far (each one `EVALSHA`, plus a `SCRIPT LOAD` and a second
    /// `EVALSHA` the first time a server lacks the script).
    pub fn redis_calls(&self) -> u64 {
        self.inner.calls.load(Ordering::Relaxed)
    }

    /// The Redis key holding quota `index` of `key`.
    pub fn quota_key(&self, key: &RateLimitKey, index: usize) -> String {
        self.key_name(key, KeyOf::Quota(index))
    }

    /// The Redis key holding the server pause of `key`.
    pub fn pause_key(&self, key: &RateLimitKey) -> String {
        self.key_name(key, KeyOf::Pause)
    }

    /// The Redis key holding what `key` learned from the server (a hash: its adaptive rate, the
    /// measured rate of its permits, the pace of the server's counters).
    pub fn learned_key(&self, key: &RateLimitKey) -> String {
        self.key_name(key, KeyOf::Learned)
    }

    fn key_name(&self, key: &RateLimitKey, of: KeyOf) -> String {
        let mut name = Vec::new();
        write_key(&mut name, &self.inner.key_head, key, of).expect("a Vec takes every write");
        String::from_utf8(name).expect("made of UTF-8 strings and ASCII")
    }

    /// The connection, shared with every other user of it.
    pub fn connection(&self) -> &SharedRedis {
        &self.inner.connection
    }

    /// Reads the shared state of `key` without changing it: the server pause in force, and how long
    /// each of its first `quotas` quotas needs to be full again. For operators (`integration status`);
    /// one round trip, read-only commands on the key's own hash slot and `TIME`, so Redis's clock
    /// rules as it does for decisions.
    ///
    /// ```no_run
    /// use integration_core::redis::{SharedRedis, SharedRedisConfig};
    /// use integration_ratelimit::{RateLimitKey, RedisOptions, RedisStore};
    ///
    /// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// let connection = SharedRedis::open("redis://127.0.0.1:6379", SharedRedisConfig::new())?;
    /// let store = RedisStore::new(connection, "ratelimit:prod", RedisOptions::new());
    /// let state = store.inspect(&RateLimitKey::from("github"), 2).await?;
    /// if let Some(pause) = state.pause {
    ///     println!("paused by the server for {pause:?} (status {:?})", state.pause_status);
    /// }
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// When Redis is unavailable or does not answer within the store's timeout.
    pub async fn inspect(
        &self,
        key: &RateLimitKey,
        quotas: usize,
    ) -> Result<SharedKeyState, RedisCallError> {
        let mut pipe = redis::pipe();
        pipe.cmd("TIME");
        let pause_key = self.pause_key(key);
        pipe.cmd("PTTL").arg(&pause_key).cmd("GET").arg(&pause_key);
        pipe.cmd("EXISTS").arg(self.learned_key(key));
        for index in 0..quotas {
            pipe.cmd("GET").arg(self.quota_key(key, index));
        }
        let values: Vec<redis::Value> = self
            .inner
            .connection
            .run_within(self.inner.options.timeout, |mut connection| async move {
                pipe.query_async(&mut connection).await
            })
            .await?;
        Ok(SharedKeyState::from_values(&values))
    }

    /// The adaptation and quota arguments of `policy` and its shares, from the cache.
    fn policy_args(&self, policy: &Arc<RateLimitPolicy>) -> Arc<PolicyArgs> {
        self.inner
            .policy_args
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(policy, self.inner.options.expected_replicas)
    }

    fn redis_failed(&self, error: &dyn fmt::Display) {
        if !self.inner.on_fallback.swap(true, Ordering::AcqRel) {
            // The outage itself is logged once, at `warn`, by the shared connection.
            tracing::debug!(
                { names::INTEGRATION } = %self.inner.label,
                error = %error,
                replicas = self.inner.options.expected_replicas,
                "Redis rate limit store unreachable; limiting locally at this replica's share of the quota"
            );
            metrics::gauge!(names::RATE_LIMIT_FALLBACK, names::INTEGRATION => self.inner.label.clone())
                .set(1.0);
        }
    }

    fn redis_answered(&self) {
        if self.inner.on_fallback.swap(false, Ordering::AcqRel) {
            tracing::debug!(
                { names::INTEGRATION } = %self.inner.label,
                "Redis rate limit store answers again; back on the shared quota"
            );
            metrics::gauge!(names::RATE_LIMIT_FALLBACK, names::INTEGRATION => self.inner.label.clone())
                .set(0.0);
        }
    }

    fn fallback_decision(&self, acquire: &Acquire) -> Decision {
        let share = acquire.policy.share(self.inner.options.expected_replicas);
        let adapt = Adapt::of(&share);
        if self.mark_for_rejoin(&acquire.key) {
            // First local decision for this key in this outage: no burst allowance is known to be free.
            let now = self.inner.fallback.now();
            self.inner
                .fallback
                .raise(&acquire.key, share.quotas(), |quota| {
                    now.saturating_add(quota.tolerance_nanos())
                });
        }
        self.inner.fallback.decide(
            &acquire.key,
            share.quotas(),
            adapt.as_ref(),
            bounds(acquire),
        )
    }

    fn learned_gauge(&self, gauge: i64) {
        if gauge >= 0 {
            learned_rate_gauge(self.inner.label.clone(), gauge as f64 / 1_000.0);
        }
    }

    /// Remembers that the fallback decided for `key`; true when it is the first time since Redis was
    /// last used for it, and also when the key cannot be remembered (the set holds
    /// [`MAX_REJOIN_KEYS`] already): its fallback state is then raised on every call, the strict
    /// side.
    fn mark_for_rejoin(&self, key: &RateLimitKey) -> bool {
        let mut rejoin = self
            .inner
            .rejoin
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        self.inner.rejoin_pending.store(true, Ordering::Release);
        if rejoin.len() >= MAX_REJOIN_KEYS && !rejoin.contains(key.as_str()) {
            drop(rejoin);
            metrics::counter!(names::RATE_LIMIT_REJOIN_DROPPED, names::INTEGRATION => self.inner.label.clone())
                .increment(1);
            if !self.inner.rejoin_overflow.swap(true, Ordering::AcqRel) {
                tracing::warn!(
                    { names::INTEGRATION } = %self.inner.label,
                    max = MAX_REJOIN_KEYS,
                    "Redis rate limit store: too many keys decided on the fallback to seed them all \
                     back into Redis; the others rejoin as new keys (no burst, no local pause copied)"
                );
            }
            return true;
        }
        rejoin.insert(key.clone())
    }

    /// Takes `key` out of the keys to seed; true when it was there.
    fn take_for_rejoin(&self, key: &RateLimitKey) -> bool {
        if !self.inner.rejoin_pending.load(Ordering::Acquire) {
            return false;
        }
        let mut rejoin = self
            .inner
            .rejoin
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let taken = rejoin.remove(key.as_str());
        if rejoin.is_empty() {
            self.inner.rejoin_pending.store(false, Ordering::Release);
            self.inner.rejoin_overflow.store(false, Ordering::Release);
        }
        taken
    }

    /// After a grant on Redis with a send `wait` from now: the local state of the key becomes "no
    /// burst left, next permit one local interval after this one", the state the fallback starts from
    /// if Redis is lost now.
    fn remember_grant(&self, acquire: &Acquire, args: &PolicyArgs, wait: Duration) {
        let send = self.inner.fallback.now().saturating_add(nanos(wait));
        self.inner
            .fallback
            .raise(&acquire.key, &args.shares, |quota| {
                send.saturating_add(quota.interval_nanos())
                    .saturating_add(quota.tolerance_nanos())
            });
    }

    /// Writes what the fallback did for `acquire.key` into Redis before its first decision there.
    async fn seed_on_redis(&self, acquire: &Acquire) -> Result<(), RedisCallError> {
        let share = acquire.policy.share(self.inner.options.expected_replicas);
        let now = self.inner.fallback.now();
        let next = self
            .inner
            .fallback
            .next_permit(&acquire.key, share.quotas())
            .map_or(0, |at| at.saturating_sub(now));
        let pause = self.inner.fallback.pause_left(&acquire.key);
        let quotas = acquire.policy.quotas();
        let mut invocation = self.inner.seed.prepare_invoke();
        for index in 0..quotas.len() {
            invocation.key(self.quota_key(&acquire.key, index));
        }
        invocation.key(self.pause_key(&acquire.key));
        invocation.arg(next.div_ceil(1_000));
        invocation.arg(pause.map_or(0, |(left, _)| {
            u64::try_from(left.as_millis()).unwrap_or(u64::MAX).max(1)
        }));
        invocation.arg(
            pause
                .and_then(|(_, status)| status)
                .map_or(0, |status| status.as_u16()),
        );
        for quota in quotas {
            let interval = quota.interval_nanos().div_ceil(1_000);
            invocation.arg(interval.saturating_mul(u64::from(quota.burst() - 1)));
        }
        self.inner
            .connection
            .run_within(self.inner.options.timeout, |mut connection| async move {
                invocation.invoke_async::<i64>(&mut connection).await
            })
            .await
            .map(drop)
    }

    /// An `EVALSHA` of `script` with every Redis key of `key` under `policy` (the TAT of each quota,
    /// the pause, the learned state: the acquire and observe scripts' `KEYS`), room made for about
    /// `args` arguments.
    fn eval_on_key<'a>(
        &self,
        script: &'a Script,
        key: &RateLimitKey,
        policy: &RateLimitPolicy,
        args: usize,
    ) -> EvalSha<'a> {
        let quotas = policy.quotas().len();
        let head = &self.inner.key_head;
        let mut eval = EvalSha::new(script, quotas + 2, args, head.len() + key.as_str().len());
        for index in 0..quotas {
            eval.key(head, key, KeyOf::Quota(index));
        }
        eval.key(head, key, KeyOf::Pause);
        eval.key(head, key, KeyOf::Learned);
        eval
    }

    async fn acquire_on_redis(
        &self,
        acquire: &Acquire,
        policy_args: &PolicyArgs,
    ) -> Result<Decision, RedisCallError> {
        let mut eval = self.eval_on_key(
            &self.inner.acquire,
            &acquire.key,
            &acquire.policy,
            2 + policy_args.args.len(),
        );
        eval.arg(micros(acquire.max_wait));
        eval.arg(micros(acquire.policy.max_server_pause()));
        eval.arg(&*policy_args.args);
        self.inner.calls.fetch_add(1, Ordering::Relaxed);
        let AcquireReply(outcome, amount, status, gauge) = self
            .inner
            .connection
            .run_within(self.inner.options.timeout, |mut connection| async move {
                eval.query(&mut connection).await
            })
            .await?;
        self.learned_gauge(gauge);
        let amount = Duration::from_micros(amount.max(0).unsigned_abs());
        Ok(match outcome {
            1 => Decision::Granted { wait: amount },
            2 => Decision::Denied {
                retry_after: amount,
                by_server: true,
                status: u16::try_from(status)
                    .ok()
                    .and_then(|status| StatusCode::from_u16(status).ok()),
            },
            _ => Decision::Denied {
                retry_after: amount,
                by_server: false,
                status: None,
            },
        })
    }

    async fn observe_on_redis(&self, observation: &Observation) -> Result<(), RedisCallError> {
        let policy_args = self.policy_args(&observation.policy);
        let mut eval = self.eval_on_key(
            &self.inner.observe,
            &observation.key,
            &observation.policy,
            6 + policy_args.args.len(),
        );
        eval.arg(micros(observation.pause));
        eval.arg(observation.status.as_u16());
        eval.arg(u8::from(observation.throttled));
        eval.arg(micros(observation.sent_ago));
        match observation.remaining {
            Some((remaining, reset)) => {
                eval.arg(remaining);
                eval.arg(micros(reset));
            }
            None => {
                eval.arg(-1);
                eval.arg(0);
            }
        }
        eval.arg(&*policy_args.args);
        drop(policy_args);
        let gauge: i64 = self
            .inner
            .connection
            .run_within(self.inner.options.timeout, |mut connection| async move {
                eval.query(&mut connection).await
            })
            .await?;
        self.learned_gauge(gauge);
        Ok(())
    }

    async fn pause_on_redis(
        &self,
        key: &RateLimitKey,
        pause: Duration,
        status: Option<StatusCode>,
    ) -> Result<(), RedisCallError> {
        let millis = u64::try_from(pause.as_millis()).unwrap_or(u64::MAX).max(1);
        let mut invocation = self.inner.pause.prepare_invoke();
        invocation
            .key(self.pause_key(key))
            .arg(millis)
            .arg(status.map_or(0, |status| status.as_u16()));
        self.inner
            .connection
            .run_within(self.inner.options.timeout, |mut connection| async move {
                invocation.invoke_async::<i64>(&mut connection).await
            })
            .await
            .map(drop)
    }

    /// Decides one acquisition: on Redis when it is available and answers within the timeout, else at
    /// once on the local share. Never waits longer than the timeout (and only once per key on the
    /// return of Redis, for its seed, twice).
    pub(crate) async fn decide(&self, acquire: Acquire) -> Decision {
        if !self.inner.connection.is_available() {
            self.redis_failed(&"Redis is unavailable");
            return self.fallback_decision(&acquire);
        }
        if self.take_for_rejoin(&acquire.key)
            && let Err(error) = self.seed_on_redis(&acquire).await
        {
            self.redis_failed(&error);
            return self.fallback_decision(&acquire);
        }
        // One look in the cache (one lock) for the command's arguments and the grant's shares.
        let policy_args = self.policy_args(&acquire.policy);
        match self.acquire_on_redis(&acquire, &policy_args).await {
            Ok(decision) => {
                self.redis_answered();
                if let Decision::Granted { wait } = decision {
                    self.remember_grant(&acquire, &policy_args, wait);
                }
                decision
            }
            Err(error) => {
                // An error answer (not an outage) also falls back: never no limit.
                self.redis_failed(&error);
                self.fallback_decision(&acquire)
            }
        }
    }

    /// The server pause this replica knows of for `key` (the ones it saw itself), without a round trip.
    pub(crate) fn local_pause(&self, key: &RateLimitKey) -> Option<(Duration, Option<StatusCode>)> {
        self.inner.fallback.pause_left(key)
    }

    /// Applies a response's observation locally (so it holds on the fallback too, and the recheck
    /// after a wait sees the pause without a round trip) and in Redis for every replica.
    pub(crate) async fn record(&self, observation: Observation) {
        let share = observation
            .policy
            .share(self.inner.options.expected_replicas);
        self.inner
            .fallback
            .apply(&observation.key, &share, Signal::of(&observation));
        if !self.inner.connection.is_available() {
            // A pause seen locally is written to Redis with the key's seed when Redis is back.
            self.mark_for_rejoin(&observation.key);
            return;
        }
        if let Err(error) = self.observe_on_redis(&observation).await {
            self.mark_for_rejoin(&observation.key);
            self.redis_failed(&error);
        }
    }

    /// Records a server pause locally (so it holds on the fallback too) and in Redis for every replica.
    pub(crate) async fn record_pause(
        &self,
        key: RateLimitKey,
        pause: Duration,
        status: Option<StatusCode>,
    ) {
        self.inner.fallback.apply_pause(&key, pause, status);
        if !self.inner.connection.is_available() {
            // Written to Redis with the key's seed when Redis is back.
            self.mark_for_rejoin(&key);
            return;
        }
        if let Err(error) = self.pause_on_redis(&key, pause, status).await {
            self.mark_for_rejoin(&key);
            self.redis_failed(&error);
        }
    }
}

fn bounds(acquire: &Acquire) -> Bounds {
    Bounds {
        max_wait: nanos(acquire.max_wait),
        max_server_pause: nanos(acquire.policy.max_server_pause()),
    }
}

/// The most policies a [`RedisStore`] keeps the arguments of (see [`PolicyArgs`]): a limiter has
/// one policy at a time (two for a moment after a reload), a store shared by limiters one each.
const POLICY_ARGS_CACHED: usize = 4;

/// The ARGV of a policy's adaptation and quotas, exactly as the scripts receive them (an `f64` in
/// Rust's `to_string` form, read by `tonumber`), computed once per policy instead of on every call:
/// formatting them was about 6,000 instructions of each acquisition.
#[derive(Debug)]
struct PolicyArgs {
    /// The policy they were computed from. Held, so its address cannot go to another policy while
    /// the entry is cached: a reload's new policy is a new `Arc`, which never matches this one.
    policy: Arc<RateLimitPolicy>,
    /// [`adaptation_args`] then [`quota_args`].
    args: Vec<Vec<u8>>,
    /// This replica's share of each quota ([`RateLimitPolicy::share`]), what the fallback limits
    /// to: after each grant on Redis its state is raised by them (`remember_grant`), which built a
    /// new policy every time.
    shares: Vec<Quota>,
}

impl PolicyArgs {
    fn of(policy: &Arc<RateLimitPolicy>, replicas: u32) -> Self {
        let mut args = Vec::new();
        adaptation_args(&mut args, policy);
        quota_args(&mut args, policy.quotas());
        Self {
            policy: policy.clone(),
            args,
            shares: policy.share(replicas).quotas().to_vec(),
        }
    }
}

/// The [`PolicyArgs`] of the last few policies used, found by the identity of their `Arc` (a
/// policy never changes behind its `Arc`: a change is a new policy).
#[derive(Debug, Default)]
struct PolicyArgsCache {
    entries: Vec<Arc<PolicyArgs>>,
    /// The entry replaced next once the cache is full.
    next: usize,
}

impl PolicyArgsCache {
    /// The entry of `policy`, its shares among `replicas` (the same on every call of one store).
    fn get(&mut self, policy: &Arc<RateLimitPolicy>, replicas: u32) -> Arc<PolicyArgs> {
        if let Some(found) = self
            .entries
            .iter()
            .find(|entry| Arc::ptr_eq(&entry.policy, policy))
        {
            return found.clone();
        }
        let fresh = Arc::new(PolicyArgs::of(policy, replicas));
        if self.entries.len() < POLICY_ARGS_CACHED {
            self.entries.push(fresh.clone());
        } else {
            self.entries[self.next] = fresh.clone();
            self.next = (self.next + 1) % POLICY_ARGS_CACHED;
        }
        fresh
    }
}

/// ARGV of adaptation: on (1/0), min rate, decrease, increase, cap (-1: none), initial window.
fn adaptation_args(out: &mut impl RedisWrite, policy: &RateLimitPolicy) {
    match Adapt::of(policy) {
        Some(adapt) => {
            1_i32.write_redis_args(out);
            adapt.min_rate.to_string().write_redis_args(out);
            adapt.decrease.to_string().write_redis_args(out);
            adapt.increase.to_string().write_redis_args(out);
            if adapt.cap.is_finite() {
                adapt.cap.to_string().write_redis_args(out);
            } else {
                (-1_i32).write_redis_args(out);
            }
            adapt.window.to_string().write_redis_args(out);
        }
        None => {
            for arg in [0_i32, 1, 1, 1, -1, 0] {
                arg.write_redis_args(out);
            }
        }
    }
}

/// ARGV of the quotas: per quota its emission interval and tolerance, in microseconds.
fn quota_args(out: &mut impl RedisWrite, quotas: &[Quota]) {
    for quota in quotas {
        let interval = quota.interval_nanos().div_ceil(1_000);
        interval.write_redis_args(out);
        interval
            .saturating_mul(u64::from(quota.burst() - 1))
            .write_redis_args(out);
    }
}

/// Which of the Redis keys of a limiter key: `{prefix:key}:q0`, `{prefix:key}:q1`...,
/// `{prefix:key}:pause`, `{prefix:key}:learned` (one hash tag, so one cluster slot).
#[derive(Debug, Clone, Copy)]
enum KeyOf {
    Quota(usize),
    Pause,
    Learned,
}

/// Writes the name of a Redis key of `key` (see [`KeyOf`]) after `head`, `{prefix:`, in three
/// writes.
fn write_key(
    out: &mut impl io::Write,
    head: &[u8],
    key: &RateLimitKey,
    of: KeyOf,
) -> io::Result<()> {
    out.write_all(head)?;
    out.write_all(key.as_str().as_bytes())?;
    match of {
        KeyOf::Quota(index) => {
            // `}:q` and the index in decimal, as `format!` writes it, without its machinery.
            let mut suffix = [0_u8; 3 + 20];
            let mut start = suffix.len();
            let mut rest = index;
            loop {
                start -= 1;
                suffix[start] = b'0' + (rest % 10) as u8;
                rest /= 10;
                if rest == 0 {
                    break;
                }
            }
            start -= 3;
            suffix[start..start + 3].copy_from_slice(b"}:q");
            out.write_all(&suffix[start..])
        }
        KeyOf::Pause => out.write_all(b"}:pause"),
        KeyOf::Learned => out.write_all(b"}:learned"),
    }
}

/// One `EVALSHA` of a script, its keys and arguments written straight into the command's buffer.
///
/// `redis::ScriptInvocation` holds each key and argument in a `Vec` of its own, then copies them
/// all into a `Cmd`, and its keys were `format!`ted first; here nothing is allocated per key or
/// argument (issue 19). The bytes sent are the same, and so is the answer to `NOSCRIPT` (after a
/// restart or a `SCRIPT FLUSH`): load the script and send the `EVALSHA` once more, as
/// `ScriptInvocation::invoke_async` does. The rare seed and pause scripts still go through
/// `ScriptInvocation`.
struct EvalSha<'a> {
    script: &'a Script,
    cmd: Cmd,
}

impl<'a> EvalSha<'a> {
    /// An `EVALSHA` of `script` with `keys` keys (each about `key_len` bytes before its suffix), then
    /// about `args` arguments.
    fn new(script: &'a Script, keys: usize, args: usize, key_len: usize) -> Self {
        let mut cmd = Cmd::with_capacity(
            3 + keys + args,
            "EVALSHA".len() + script.get_hash().len() + 4 + keys * (key_len + 12) + args * 20,
        );
        cmd.arg("EVALSHA").arg(script.get_hash()).arg(keys);
        Self { script, cmd }
    }

    /// Adds the Redis key `of` of `key`: a `KEYS` entry (all come before the first argument).
    fn key(&mut self, head: &[u8], key: &RateLimitKey, of: KeyOf) {
        write_key(&mut self.cmd.writer_for_next_arg(), head, key, of)
            .expect("a Cmd's argument buffer takes every write");
    }

    /// Adds an `ARGV` entry (a slice of byte strings adds each).
    fn arg(&mut self, arg: impl ToRedisArgs) {
        self.cmd.arg(arg);
    }

    async fn query<T: Reply>(self, connection: &mut ConnectionManager) -> RedisResult<T> {
        match ask(&self.cmd, connection).await {
            Err(error) if error.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
                self.script.load_async(connection).await?;
                ask(&self.cmd, connection).await
            }
            result => result,
        }
    }
}

/// `Cmd::query_async`, with the usual answer read in place: only anything else (an error reply,
/// `NOSCRIPT` among them, or an unexpected shape) goes through the crate's own check and conversion.
async fn ask<T: Reply>(cmd: &Cmd, connection: &mut ConnectionManager) -> RedisResult<T> {
    let value = connection.req_packed_command(cmd).await?;
    if let Some(reply) = T::read(&value) {
        return Ok(reply);
    }
    Ok(redis::from_redis_value(value.extract_error()?)?)
}

/// A script's answer, read from its reply without the generic conversion (which first walks the
/// reply for errors, then converts it by value: about 1,000 instructions of an acquisition).
trait Reply: FromRedisValue {
    /// The answer, when `value` has the usual shape; `FromRedisValue` gives the same for it.
    fn read(value: &Value) -> Option<Self>;
}

impl Reply for i64 {
    fn read(value: &Value) -> Option<Self> {
        match value {
            Value::Int(n) => Some(*n),
            _ => None,
        }
    }
}

impl Reply for (i64, i64, i64, i64) {
    fn read(value: &Value) -> Option<Self> {
        match value {
            Value::Array(items) => match items[..] {
                [Value::Int(a), Value::Int(b), Value::Int(c), Value::Int(d)] => Some((a, b, c, d)),
                _ => None,
            },
            _ => None,
        }
    }
}

/// The acquire script's answer as `(outcome, amount, status, gauge)`: its four-element array, or the
/// one integer of a grant with no gauge to report (`wait_us`, read as `(1, wait_us, 0, -1)`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct AcquireReply(i64, i64, i64, i64);

impl AcquireReply {
    fn granted(wait: i64) -> Self {
        Self(1, wait, 0, -1)
    }
}

impl FromRedisValue for AcquireReply {
    fn from_redis_value(value: Value) -> Result<Self, redis::ParsingError> {
        if let Value::Int(wait) = value {
            return Ok(Self::granted(wait));
        }
        let (outcome, amount, status, gauge) = <(i64, i64, i64, i64)>::from_redis_value(value)?;
        Ok(Self(outcome, amount, status, gauge))
    }
}

impl Reply for AcquireReply {
    fn read(value: &Value) -> Option<Self> {
        match value {
            Value::Int(wait) => Some(Self::granted(*wait)),
            _ => <(i64, i64, i64, i64)>::read(value)
                .map(|(outcome, amount, status, gauge)| Self(outcome, amount, status, gauge)),
        }
    }
}

fn micros(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros()).unwrap_or(u64::MAX)
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("prefix", &self.inner.prefix)
            .field("options", &self.inner.options)
            .field("on_fallback", &self.is_on_fallback())
            .finish_non_exhaustive()
    }
}

impl RateLimitStore for RedisStore {
    fn acquire(&self, acquire: Acquire) -> StoreFuture<Decision> {
        let store = self.clone();
        Box::pin(async move { Ok(store.decide(acquire).await) })
    }

    fn pause(
        &self,
        key: RateLimitKey,
        pause: Duration,
        status: Option<StatusCode>,
    ) -> StoreFuture<()> {
        let store = self.clone();
        Box::pin(async move {
            store.record_pause(key, pause, status).await;
            Ok(())
        })
    }

    fn observe(&self, observation: Observation) -> StoreFuture<()> {
        let store = self.clone();
        Box::pin(async move {
            store.record(observation).await;
            Ok(())
        })
    }
}

/// The shared state of one key in Redis, read by [`RedisStore::inspect`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SharedKeyState {
    /// The server pause left, when one is in force: every caller of the key waits it out.
    pub pause: Option<Duration>,
    /// The status of the response that set the pause (`429`, `503`), when it had one.
    pub pause_status: Option<StatusCode>,
    /// Per quota, in the policy's order, how long until it is full again (its whole burst available):
    /// zero for a quota at rest or never used.
    pub quotas: Vec<Duration>,
    /// Whether the key holds a rate learned from the server (adaptation to its throttle signals).
    pub adaptive: bool,
}

impl SharedKeyState {
    /// Reads the answers of [`RedisStore::inspect`]'s pipeline: `TIME`, the pause's `PTTL` and value,
    /// `EXISTS` of the learned hash, then each quota's TAT (microseconds on Redis's clock).
    fn from_values(values: &[redis::Value]) -> Self {
        use redis::FromRedisValue as _;
        let int = |value: Option<&redis::Value>| {
            value.and_then(|v| i64::from_redis_value(v.clone()).ok())
        };
        let now = values
            .first()
            .and_then(|v| <(u64, u64)>::from_redis_value(v.clone()).ok())
            .map_or(0, |(secs, micros)| secs * 1_000_000 + micros);
        let pause = int(values.get(1))
            .filter(|ms| *ms > 0)
            .map(|ms| Duration::from_millis(ms.unsigned_abs()));
        let pause_status = pause.and(
            int(values.get(2))
                .and_then(|code| u16::try_from(code).ok())
                .and_then(|code| StatusCode::from_u16(code).ok()),
        );
        let adaptive = int(values.get(3)).is_some_and(|n| n > 0);
        let quotas = values
            .iter()
            .skip(4)
            .map(|value| {
                let tat = Option::<String>::from_redis_value(value.clone())
                    .ok()
                    .flatten()
                    .and_then(|text| text.parse::<f64>().ok())
                    .unwrap_or(0.0);
                // A TAT in the future is the time until the quota's burst is whole again.
                let ahead = (tat - now as f64).max(0.0);
                Duration::from_micros(ahead as u64)
            })
            .collect();
        Self {
            pause,
            pause_status,
            quotas,
            adaptive,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use integration_core::redis::SharedRedisConfig;

    /// Regression (issue 13 follow-up): the set of keys waiting to be seeded back into Redis grew
    /// without bound during an outage. It holds at most `MAX_REJOIN_KEYS`; a key past that is
    /// reported as a first local decision every time (its fallback state raised: no burst), and the
    /// set accepts keys again once it has emptied.
    fn argv(args: &PolicyArgs) -> Vec<&str> {
        args.args
            .iter()
            .map(|arg| std::str::from_utf8(arg).unwrap())
            .collect()
    }

    /// The adaptation and quota arguments are computed once per policy (issue 19) and never served
    /// for another: after a policy change (a reload builds a new policy) they are the new policy's,
    /// also once the cache is full and evicts.
    #[tokio::test]
    async fn the_cached_policy_arguments_follow_the_policy() {
        // Connected on first use: this test never uses it.
        let connection =
            SharedRedis::open("redis://127.0.0.1:1", SharedRedisConfig::default()).unwrap();
        let store = RedisStore::new(connection, "args", RedisOptions::new());
        let quota = Quota::per_second(10).unwrap().with_burst(5).unwrap();
        let first = Arc::new(RateLimitPolicy::new([quota]));
        let cached = store.policy_args(&first);
        // The bytes the scripts have always received: f64 in `to_string` form, integers as such.
        assert_eq!(
            argv(&cached),
            ["1", "0.5", "0.7", "0.4", "10", "10", "100000", "400000"]
        );
        assert!(Arc::ptr_eq(&cached, &store.policy_args(&first)), "cached");

        // The same values in a new policy, then a changed one: each gets its own arguments.
        let reloaded = Arc::new(
            RateLimitPolicy::clone(&first)
                .with_adaptation(Some(crate::Adaptation::new(2.0, 0.5, 0.25).unwrap())),
        );
        assert_eq!(
            argv(&store.policy_args(&reloaded)),
            ["1", "2", "0.5", "0.25", "10", "10", "100000", "400000"]
        );
        let off = Arc::new(RateLimitPolicy::clone(&first).with_adaptation(None));
        assert_eq!(
            argv(&store.policy_args(&off)),
            ["0", "1", "1", "1", "-1", "0", "100000", "400000"]
        );

        // Past the cache's size, every policy still gets its own arguments, evicted or not.
        let policies: Vec<_> = (0..3 * POLICY_ARGS_CACHED)
            .map(|window| Arc::new(RateLimitPolicy::clone(&first).with_initial_window(window)))
            .collect();
        for _ in 0..2 {
            for (window, policy) in policies.iter().enumerate() {
                let args = store.policy_args(policy);
                assert!(Arc::ptr_eq(&args.policy, policy));
                assert_eq!(argv(&args)[5], window.to_string());
            }
        }
        assert_eq!(
            store.inner.policy_args.lock().unwrap().entries.len(),
            POLICY_ARGS_CACHED
        );
        assert_eq!(argv(&store.policy_args(&first))[1], "0.5");

        // The shares are the policy's, divided among the store's replicas.
        let connection =
            SharedRedis::open("redis://127.0.0.1:1", SharedRedisConfig::default()).unwrap();
        let three = RedisStore::new(
            connection,
            "args",
            RedisOptions::new().with_expected_replicas(3),
        );
        assert_eq!(store.policy_args(&first).shares, first.quotas());
        assert_eq!(three.policy_args(&first).shares, first.share(3).quotas());
        assert_eq!(three.policy_args(&off).shares, off.share(3).quotas());
        assert_ne!(three.policy_args(&first).shares, first.quotas());
    }

    /// The key names written into the `EVALSHA` without `format!` (issue 19) are the ones it
    /// wrote: `{prefix:key}:q<index>`, `:pause`, `:learned`.
    #[tokio::test]
    async fn the_key_names_are_unchanged() {
        let connection =
            SharedRedis::open("redis://127.0.0.1:1", SharedRedisConfig::default()).unwrap();
        let store = RedisStore::new(connection, "ratelimit:prod", RedisOptions::new());
        for key in ["github", "", "a:b}{c", "clé ünïcode"] {
            let key = RateLimitKey::from(key);
            for index in [0, 1, 9, 10, 11, 99, 100, 12_345, usize::MAX] {
                assert_eq!(
                    store.quota_key(&key, index),
                    format!("{{ratelimit:prod:{key}}}:q{index}")
                );
            }
            assert_eq!(
                store.pause_key(&key),
                format!("{{ratelimit:prod:{key}}}:pause")
            );
            assert_eq!(
                store.learned_key(&key),
                format!("{{ratelimit:prod:{key}}}:learned")
            );
        }
    }

    /// The `EVALSHA` built in place (issue 19) sends what `redis::ScriptInvocation` sent: the
    /// same arguments, byte for byte, in the same order.
    #[tokio::test]
    async fn the_evalsha_is_the_script_invocations() {
        let connection =
            SharedRedis::open("redis://127.0.0.1:1", SharedRedisConfig::default()).unwrap();
        let store = RedisStore::new(connection, "p", RedisOptions::new());
        let key = RateLimitKey::from("k");
        let policy = Arc::new(RateLimitPolicy::new([
            Quota::per_second(10).unwrap(),
            Quota::new(100, Duration::from_secs(60), 20).unwrap(),
        ]));
        let args = store.policy_args(&policy);
        let mut eval = EvalSha::new(&store.inner.acquire, 4, 2 + args.args.len(), 3);
        for index in 0..2 {
            eval.key(&store.inner.key_head, &key, KeyOf::Quota(index));
        }
        eval.key(&store.inner.key_head, &key, KeyOf::Pause);
        eval.key(&store.inner.key_head, &key, KeyOf::Learned);
        eval.arg(1_500_000_u64);
        eval.arg(600_000_000_u64);
        eval.arg(&*args.args);

        // What `ScriptInvocation::eval_cmd` built from the `format!`ted keys.
        let mut expected = redis::cmd("EVALSHA");
        expected.arg(store.inner.acquire.get_hash()).arg(4);
        for name in [
            store.quota_key(&key, 0),
            store.quota_key(&key, 1),
            store.pause_key(&key),
            store.learned_key(&key),
        ] {
            expected.arg(name);
        }
        expected.arg(1_500_000_u64).arg(600_000_000_u64);
        adaptation_args(&mut expected, &policy);
        quota_args(&mut expected, policy.quotas());
        assert_eq!(
            eval.cmd.get_packed_command(),
            expected.get_packed_command(),
            "{:?}",
            String::from_utf8_lossy(&eval.cmd.get_packed_command())
        );
    }

    /// The answers read in place (issue 19) are what the crate's conversion gives, and every other
    /// reply is left to it (so an error reply stays an error).
    #[test]
    fn a_reply_read_in_place_is_the_crates_conversion() {
        let int = |n| Value::Int(n);
        let usual = Value::Array(vec![int(1), int(-2), int(429), int(i64::MAX)]);
        let read = <(i64, i64, i64, i64)>::read(&usual).unwrap();
        assert_eq!(read, redis::from_redis_value(usual).unwrap());
        assert_eq!(i64::read(&int(-7)), Some(-7));
        assert_eq!(redis::from_redis_value::<i64>(int(-7)).unwrap(), -7);
        let unusual = [
            Value::Array(vec![int(1), int(2), int(3)]),
            Value::Array(vec![
                int(1),
                int(2),
                int(3),
                Value::BulkString(b"4".to_vec()),
            ]),
            Value::Array(vec![int(1), int(2), int(3), int(4), int(5)]),
            Value::Int(1),
            Value::Nil,
        ];
        for value in &unusual {
            assert_eq!(<(i64, i64, i64, i64)>::read(value), None, "{value:?}");
        }
        assert_eq!(i64::read(&Value::BulkString(b"1".to_vec())), None);
        assert_eq!(i64::read(&Value::Nil), None);
    }

    /// The acquire script's two shapes of answer (issue 19: a grant with no gauge is one integer)
    /// read alike in place and through the crate's conversion, and anything else is refused.
    #[test]
    fn an_acquire_reply_is_the_array_or_a_grants_wait_alone() {
        let int = |n| Value::Int(n);
        let cases = [
            (int(1_500), AcquireReply(1, 1_500, 0, -1)),
            (int(0), AcquireReply(1, 0, 0, -1)),
            (
                Value::Array(vec![int(1), int(20), int(0), int(50_000)]),
                AcquireReply(1, 20, 0, 50_000),
            ),
            (
                Value::Array(vec![int(2), int(900_000), int(429), int(-1)]),
                AcquireReply(2, 900_000, 429, -1),
            ),
        ];
        for (value, expected) in cases {
            assert_eq!(AcquireReply::read(&value), Some(expected), "{value:?}");
            assert_eq!(
                redis::from_redis_value::<AcquireReply>(value).unwrap(),
                expected
            );
        }
        for value in [
            Value::Nil,
            Value::BulkString(b"1".to_vec()),
            Value::Array(vec![int(1), int(2)]),
        ] {
            assert_eq!(AcquireReply::read(&value), None, "{value:?}");
            assert!(redis::from_redis_value::<AcquireReply>(value).is_err());
        }
    }

    #[tokio::test]
    async fn the_keys_waiting_to_rejoin_are_capped() {
        // Connected on first use: this test never uses it.
        let connection =
            SharedRedis::open("redis://127.0.0.1:1", SharedRedisConfig::default()).unwrap();
        let store = RedisStore::new(connection, "cap", RedisOptions::new());
        for i in 0..MAX_REJOIN_KEYS {
            assert!(store.mark_for_rejoin(&RateLimitKey::from(format!("k{i}"))));
        }
        // Already there: not a first time.
        assert!(!store.mark_for_rejoin(&RateLimitKey::from("k0")));
        let extra = RateLimitKey::from("one too many");
        assert!(store.mark_for_rejoin(&extra));
        assert!(
            store.mark_for_rejoin(&extra),
            "never remembered: strict every time"
        );
        assert_eq!(store.inner.rejoin.lock().unwrap().len(), MAX_REJOIN_KEYS);
        assert!(store.inner.rejoin_overflow.load(Ordering::Acquire));
        assert!(!store.take_for_rejoin(&extra));
        for i in 0..MAX_REJOIN_KEYS {
            assert!(store.take_for_rejoin(&RateLimitKey::from(format!("k{i}"))));
        }
        assert!(!store.inner.rejoin_overflow.load(Ordering::Acquire));
        assert!(store.mark_for_rejoin(&extra));
        assert!(
            !store.mark_for_rejoin(&extra),
            "remembered once there is room"
        );
    }
}
