//! One parser for every server throttle signal: `Retry-After`, the IETF `RateLimit` fields in all their
//! draft shapes, and the vendor `X-RateLimit-*` families.
//!
//! [`ThrottleSignal::from_headers`] reads a response's headers once and says what the server asked for:
//! how long to wait before retrying, and what is left of the current quota. [`ThrottleSignal::pause`]
//! turns that into the one number the rate limiter and the retry layer act on.
//!
//! ```
//! use std::time::{Duration, SystemTime};
//! use http::HeaderMap;
//! use integration_core::throttle::ThrottleSignal;
//!
//! let mut headers = HeaderMap::new();
//! headers.insert("ratelimit-policy", r#""burst";q=100;w=60"#.parse().unwrap());
//! headers.insert("ratelimit", r#""burst";r=0;t=30"#.parse().unwrap());
//!
//! let signal = ThrottleSignal::from_headers(&headers, SystemTime::UNIX_EPOCH);
//! assert_eq!(signal.limit, Some(100));
//! assert_eq!(signal.remaining, Some(0));
//! assert_eq!(signal.window, Some(Duration::from_secs(60)));
//! assert_eq!(signal.pause(), Some(Duration::from_secs(30)));
//! ```
//!
//! # Families
//!
//! | family | fields | read as |
//! | --- | --- | --- |
//! | RFC 9110 | `Retry-After` | delta-seconds (a fractional value such as Shopify's `2.0` is accepted as a lenient extension) or an HTTP-date |
//! | OpenAI, Azure | `retry-after-ms`, `x-ms-retry-after-ms` | delay in milliseconds |
//! | IETF draft 09 to 11 | `RateLimit-Policy: "burst";q=100;w=60`, `RateLimit: "burst";r=0;t=30` | Structured Field Lists; `q` quota, `w` window seconds, `qu` quota unit, `r` remaining, `t` seconds to reset |
//! | IETF draft 06/07 | `RateLimit: limit=100, remaining=50, reset=5`, `RateLimit-Policy: 100;w=60` | Structured Field Dictionary (and a List of quota policies) |
//! | IETF draft 05 | `RateLimit-Limit: 100, 100;w=60`, `RateLimit-Remaining`, `RateLimit-Reset` | one field each |
//! | GitHub, most vendors | `X-RateLimit-Limit`, `-Remaining`, `-Reset`, `-Used` | numbers; reset by magnitude (below) |
//! | Discord | `X-RateLimit-Reset-After` | delay in seconds, possibly fractional |
//! | Twitter/X | `X-Rate-Limit-Limit`, `-Remaining`, `-Reset` | numbers; reset by magnitude |
//! | Shopify | `X-Shopify-Shop-Api-Call-Limit: 32/40` | used/limit |
//!
//! Header names are case-insensitive, as [`HeaderMap`] is.
//!
//! # Rules
//!
//! - **Retry-After.** Every `Retry-After`, `retry-after-ms` and `x-ms-retry-after-ms` line is read and the
//!   longest delay wins: when a server states more than one, waiting for the largest is the conservative
//!   choice, and `Retry-After` is never undercut.
//! - **Precedence.** Each of `limit`, `remaining`, `reset` and `window` comes from the first family that
//!   states it, in this order: IETF `RateLimit` (List or Dictionary form) with `RateLimit-Policy`, IETF
//!   draft-05 separate fields, `X-RateLimit-*`, `X-Rate-Limit-*`, Shopify. Within `X-RateLimit-*`,
//!   Discord's `Reset-After` (a delay, immune to clock skew) wins over `Reset`, and GitHub's `Used`
//!   gives `remaining = limit - used` when `Remaining` is missing.
//! - **Several IETF policies.** The most restrictive `RateLimit` member wins: the smallest remaining
//!   quota, and on a tie the longest reset. Its `limit` and `window` come from the `RateLimit-Policy`
//!   member of the same name. Members whose policy counts something other than requests (`qu` other than
//!   `"requests"`) are considered only when exhausted (`r=0`): an exhausted quota of any unit still means
//!   wait. Without a usable `RateLimit` field, the named policy with the lowest rate (`q / w`) gives
//!   `limit` and `window`. The unnamed policies of drafts 05 to 07 (`100;w=60`) only give the window of
//!   the policy whose quota is the stated limit.
//! - **Resets by magnitude.** A vendor or IETF reset value `v` is epoch milliseconds when
//!   `v >= 10^12`, epoch seconds when `v >= 10^9`, and otherwise seconds from now. Fractions such as
//!   `1.5` are accepted.
//! - **Clock.** HTTP-dates and epoch resets are measured against the response's own `Date` header when
//!   it is valid, so a skewed local clock does not matter; otherwise against the `now` the caller passes.
//!   Nothing here reads the system clock. A time in the past means "now": [`Duration::ZERO`].
//! - **Malformed values are ignored**: the field stays `None`. Negative numbers, exponents, `NaN`, `inf`,
//!   numbers that overflow, and delays longer than [`MAX_DELAY`] (ten years) are malformed. Parsing never
//!   panics.

use std::borrow::Cow;
use std::cmp::Ordering;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::header::{DATE, RETRY_AFTER};
use http::{HeaderMap, HeaderName, HeaderValue};
use sfv::{BareItem, Dictionary, Item, List, ListEntry, Parser};

/// The longest delay a throttle field may state: ten years of 365.25 days.
///
/// A longer delay is treated as malformed and ignored, like any other value that cannot be right.
///
/// ```
/// use std::time::SystemTime;
/// use integration_core::throttle::{MAX_DELAY, parse_retry_after};
///
/// let now = SystemTime::UNIX_EPOCH;
/// let ten_years = MAX_DELAY.as_secs().to_string().parse().unwrap();
/// assert_eq!(parse_retry_after(&ten_years, None, now), Some(MAX_DELAY));
/// let longer = (MAX_DELAY.as_secs() + 1).to_string().parse().unwrap();
/// assert_eq!(parse_retry_after(&longer, None, now), None);
/// ```
pub const MAX_DELAY: Duration = Duration::from_secs(315_576_000);

/// A reset value at least this large is a Unix time in milliseconds.
const EPOCH_MILLIS_FROM: u64 = 1_000_000_000_000;
/// A reset value at least this large (and below [`EPOCH_MILLIS_FROM`]) is a Unix time in seconds.
const EPOCH_SECONDS_FROM: u64 = 1_000_000_000;

/// What a response said about throttling. All fields optional; absent = the server did not say.
///
/// Built by [`ThrottleSignal::from_headers`]; see the [module docs](self) for every family it reads and
/// how it chooses between them.
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use http::HeaderMap;
/// use integration_core::throttle::ThrottleSignal;
///
/// // GitHub, out of quota: the reset is a Unix time, measured against the response's Date header.
/// let mut headers = HeaderMap::new();
/// headers.insert("date", "Mon, 01 Jul 2024 12:00:00 GMT".parse().unwrap());
/// headers.insert("x-ratelimit-limit", "5000".parse().unwrap());
/// headers.insert("x-ratelimit-remaining", "0".parse().unwrap());
/// headers.insert("x-ratelimit-reset", "1719837000".parse().unwrap());
///
/// // The local clock is a day off; it does not matter because the response carries a Date.
/// let skewed = SystemTime::UNIX_EPOCH + Duration::from_secs(1_719_835_200 + 86_400);
/// let signal = ThrottleSignal::from_headers(&headers, skewed);
/// assert_eq!(signal.limit, Some(5000));
/// assert_eq!(signal.remaining, Some(0));
/// assert_eq!(signal.reset, Some(Duration::from_secs(1800)));
/// assert_eq!(signal.pause(), Some(Duration::from_secs(1800)));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ThrottleSignal {
    /// `Retry-After` (or `retry-after-ms`, `x-ms-retry-after-ms`) as a delay from the response's time.
    ///
    /// When several are present the longest wins.
    pub retry_after: Option<Duration>,
    /// Requests allowed in the current window (quota), if stated.
    pub limit: Option<u64>,
    /// Requests remaining in the current window, if stated.
    pub remaining: Option<u64>,
    /// Time until the window resets (delay from the response's time), if stated.
    pub reset: Option<Duration>,
    /// Window length of the policy (IETF `RateLimit-Policy` `w=`), if stated.
    pub window: Option<Duration>,
}

impl ThrottleSignal {
    /// Parse every known family from response headers.
    ///
    /// `now` is the local wall clock; when the response carries a valid `Date` header, HTTP-dates and
    /// epoch resets are measured against that date instead (so a skewed local clock does not matter),
    /// falling back to `now`. Malformed values are ignored; this never panics. The
    /// [module docs](self) list the families and the precedence between them.
    ///
    /// ```
    /// use std::time::{Duration, SystemTime};
    /// use http::HeaderMap;
    /// use integration_core::throttle::ThrottleSignal;
    ///
    /// let mut headers = HeaderMap::new();
    /// headers.insert("retry-after", "120".parse().unwrap());
    /// headers.insert("x-ratelimit-remaining", "not a number".parse().unwrap());
    ///
    /// let signal = ThrottleSignal::from_headers(&headers, SystemTime::UNIX_EPOCH);
    /// assert_eq!(signal.retry_after, Some(Duration::from_secs(120)));
    /// assert_eq!(signal.remaining, None);
    /// ```
    #[must_use]
    pub fn from_headers(headers: &HeaderMap, now: SystemTime) -> ThrottleSignal {
        ThrottleSignal::from_headers_with(headers, || now)
    }

    /// [`from_headers`](Self::from_headers), reading the wall clock from `now` only when a header
    /// may carry a signal: most responses carry none, and a caller that passes
    /// `SystemTime::now` does not read the clock for them (issue 19).
    ///
    /// ```
    /// use std::time::{Duration, SystemTime};
    /// use http::HeaderMap;
    /// use integration_core::throttle::ThrottleSignal;
    ///
    /// let plain = HeaderMap::new();
    /// let signal = ThrottleSignal::from_headers_with(&plain, || unreachable!("no clock needed"));
    /// assert!(signal.is_empty());
    ///
    /// let mut headers = HeaderMap::new();
    /// headers.insert("retry-after", "3".parse().unwrap());
    /// let signal = ThrottleSignal::from_headers_with(&headers, || SystemTime::UNIX_EPOCH);
    /// assert_eq!(signal.retry_after, Some(Duration::from_secs(3)));
    /// ```
    #[must_use]
    pub fn from_headers_with(
        headers: &HeaderMap,
        now: impl FnOnce() -> SystemTime,
    ) -> ThrottleSignal {
        // Most responses carry no signal at all: one pass over their few header names settles it,
        // without the clock, the Date parse and the lookups of every family below.
        if !headers.keys().any(may_signal) {
            return ThrottleSignal::default();
        }
        let now = now();
        let date = headers
            .get(DATE)
            .and_then(|value| value.to_str().ok())
            .and_then(|text| httpdate::parse_http_date(text).ok());
        let reference = date.unwrap_or(now);

        let policy_field = structured_list(headers, "ratelimit-policy");
        let policies: Vec<Policy<'_>> =
            policy_field.iter().filter_map(Policy::from_entry).collect();

        let counters = ietf_rate_limit(headers, &policies, reference)
            .or(ietf_draft05(headers, &policies, reference))
            .or(x_ratelimit(headers, reference))
            .or(x_rate_limit(headers, reference))
            .or(shopify(headers));

        ThrottleSignal {
            retry_after: retry_after(headers, date, now),
            limit: counters.limit,
            remaining: counters.remaining,
            reset: counters.reset,
            window: counters.window,
        }
    }

    /// How long every caller of this key should pause: `retry_after` if present, else `reset` when
    /// `remaining == Some(0)`, else `None`.
    ///
    /// ```
    /// use std::time::Duration;
    /// use integration_core::throttle::ThrottleSignal;
    ///
    /// let exhausted = ThrottleSignal {
    ///     remaining: Some(0),
    ///     reset: Some(Duration::from_secs(30)),
    ///     ..ThrottleSignal::default()
    /// };
    /// assert_eq!(exhausted.pause(), Some(Duration::from_secs(30)));
    ///
    /// let told = ThrottleSignal { retry_after: Some(Duration::from_secs(2)), ..exhausted };
    /// assert_eq!(told.pause(), Some(Duration::from_secs(2)));
    ///
    /// let fine = ThrottleSignal { remaining: Some(10), ..exhausted };
    /// assert_eq!(fine.pause(), None);
    /// ```
    #[must_use]
    pub fn pause(&self) -> Option<Duration> {
        match (self.retry_after, self.remaining) {
            (Some(delay), _) => Some(delay),
            (None, Some(0)) => self.reset,
            (None, _) => None,
        }
    }

    /// True when nothing was found.
    ///
    /// ```
    /// use std::time::SystemTime;
    /// use http::HeaderMap;
    /// use integration_core::throttle::ThrottleSignal;
    ///
    /// assert!(ThrottleSignal::from_headers(&HeaderMap::new(), SystemTime::UNIX_EPOCH).is_empty());
    /// ```
    #[must_use]
    pub fn is_empty(&self) -> bool {
        *self == ThrottleSignal::default()
    }
}

/// `Retry-After` value alone: delta-seconds or HTTP-date (IMF-fixdate, and the obsolete RFC 850 and
/// asctime forms `httpdate` accepts).
///
/// A date in the past means [`Duration::ZERO`] ("now"). `date` is the response's `Date` header time if
/// any, else `now` is used. Delta-seconds may carry a fraction (`2.0`, as Shopify sends), a lenient
/// extension; digits past nanoseconds are dropped. Optional whitespace around the value is allowed.
///
/// Malformed values give `None`: signs, exponents, `NaN`, `inf`, numbers that overflow and delays longer
/// than [`MAX_DELAY`] are malformed. Never panics.
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use http::HeaderValue;
/// use integration_core::throttle::parse_retry_after;
///
/// let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
/// let date = httpdate::parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT").unwrap();
///
/// let delta = HeaderValue::from_static("120");
/// assert_eq!(parse_retry_after(&delta, None, now), Some(Duration::from_secs(120)));
///
/// // An HTTP-date is measured against the response's Date, not the (far later) local clock.
/// let at = HeaderValue::from_static("Sun, 06 Nov 1994 08:50:37 GMT");
/// assert_eq!(parse_retry_after(&at, Some(date), now), Some(Duration::from_secs(60)));
/// // Without a Date header it is measured against `now`, where it lies in the past: retry now.
/// assert_eq!(parse_retry_after(&at, None, now), Some(Duration::ZERO));
///
/// assert_eq!(parse_retry_after(&HeaderValue::from_static("-1"), None, now), None);
/// ```
#[must_use]
pub fn parse_retry_after(
    value: &HeaderValue,
    date: Option<SystemTime>,
    now: SystemTime,
) -> Option<Duration> {
    let text = value.to_str().ok()?.trim_matches(is_ows);
    if text.starts_with(|c: char| c.is_ascii_digit()) {
        // Delta-seconds; HTTP-dates always start with a day name.
        return Decimal::parse(text)
            .map(Decimal::as_seconds)
            .and_then(plausible);
    }
    let at = httpdate::parse_http_date(text).ok()?;
    delay_until(at, date.unwrap_or(now))
}

/// Common response headers that carry no rate-limit signal, checked before the scan of
/// [`may_signal`].
const NEVER_SIGNAL: [HeaderName; 10] = [
    http::header::CONTENT_TYPE,
    http::header::CONTENT_LENGTH,
    http::header::DATE,
    http::header::SERVER,
    http::header::CONNECTION,
    http::header::TRANSFER_ENCODING,
    http::header::CACHE_CONTROL,
    http::header::VARY,
    http::header::CONTENT_ENCODING,
    http::header::ETAG,
];

/// Whether a header of this name may be read by a family's parser: every name read in this module
/// (`retry-after`, `retry-after-ms`, `x-ms-retry-after-ms`, `ratelimit*`, `x-ratelimit-*`,
/// `x-rate-limit-*`, `x-shopify-shop-api-call-limit`) contains `rate`, `retry` or `limit`. Header
/// names in a `HeaderMap` are lowercase.
///
/// Run on every header of every response: one pass over the bytes, looking for the three words
/// only where an `r` or an `l` starts (`str::contains` set up a substring searcher per word, about
/// 240 instructions a name, 2k a call for three headers; issue 19).
fn may_signal(name: &HeaderName) -> bool {
    // The headers most responses carry, none of which signals: a comparison of the standard
    // header's index each (about 40 instructions for a response's usual three, where the scan
    // below took about 300).
    if NEVER_SIGNAL.contains(name) {
        return false;
    }
    let name = name.as_str().as_bytes();
    (0..name.len()).any(|i| {
        let rest = &name[i..];
        match rest[0] {
            b'r' => rest.starts_with(b"rate") || rest.starts_with(b"retry"),
            b'l' => rest.starts_with(b"limit"),
            _ => false,
        }
    })
}

/// The longest of every `Retry-After`, `retry-after-ms` and `x-ms-retry-after-ms` line.
fn retry_after(headers: &HeaderMap, date: Option<SystemTime>, now: SystemTime) -> Option<Duration> {
    let seconds = headers
        .get_all(RETRY_AFTER)
        .iter()
        .filter_map(|value| parse_retry_after(value, date, now));
    let millis = ["retry-after-ms", "x-ms-retry-after-ms"]
        .into_iter()
        .flat_map(|name| headers.get_all(name).iter())
        .filter_map(|value| {
            let text = value.to_str().ok()?;
            Decimal::parse(text)?.as_millis().and_then(plausible)
        });
    seconds.chain(millis).max()
}

/// The four counters a family may state, before precedence picks one per field.
#[derive(Debug, Clone, Copy, Default)]
struct Counters {
    limit: Option<u64>,
    remaining: Option<u64>,
    reset: Option<Duration>,
    window: Option<Duration>,
}

impl Counters {
    /// Fields of `self`, each filled from `lower` where `self` did not state it.
    fn or(self, lower: Counters) -> Counters {
        Counters {
            limit: self.limit.or(lower.limit),
            remaining: self.remaining.or(lower.remaining),
            reset: self.reset.or(lower.reset),
            window: self.window.or(lower.window),
        }
    }

    /// Limit and window of the named policy with the lowest rate, when nothing says which one is
    /// current. Unnamed policies (drafts 05 to 07) are left out: there the limit field says which one
    /// applies, and picking another would override it.
    fn from_policies(policies: &[Policy<'_>]) -> Counters {
        let lowest = policies
            .iter()
            .filter(|policy| policy.name.is_some() && policy.counts_requests)
            .min_by(|a, b| a.restrictiveness(b));
        Counters {
            limit: lowest.map(|policy| policy.quota),
            window: lowest.and_then(|policy| policy.window),
            ..Counters::default()
        }
    }
}

/// One member of `RateLimit-Policy` (or a quota policy trailing a draft-05 `RateLimit-Limit`).
#[derive(Debug, Clone, Copy)]
struct Policy<'a> {
    /// The policy's name (drafts 09+); `None` in the older unnamed form `100;w=60`.
    name: Option<&'a str>,
    /// `q` (drafts 09+) or the member's own integer (older drafts).
    quota: u64,
    /// `w`, in seconds; a window of zero is malformed.
    window: Option<Duration>,
    /// False when `qu` names a unit other than `requests`.
    counts_requests: bool,
}

impl<'a> Policy<'a> {
    fn from_entry(entry: &'a ListEntry) -> Option<Policy<'a>> {
        let ListEntry::Item(item) = entry else {
            return None;
        };
        let window = item
            .params
            .get("w")
            .and_then(count_of)
            .filter(|&seconds| seconds > 0)
            .map(Duration::from_secs)
            .and_then(plausible);
        match &item.bare_item {
            BareItem::Integer(_) => Some(Policy {
                name: None,
                quota: count_of(&item.bare_item)?,
                window,
                counts_requests: true,
            }),
            bare => Some(Policy {
                name: Some(name_of(bare)?),
                quota: item.params.get("q").and_then(count_of)?,
                window,
                counts_requests: item
                    .params
                    .get("qu")
                    .is_none_or(|unit| name_of(unit) == Some("requests")),
            }),
        }
    }

    /// `Less` when `self` allows fewer requests per second than `other`: policies with a window
    /// first, by `q / w` (on a tie the longer window), then those without, by quota.
    fn restrictiveness(&self, other: &Policy<'_>) -> Ordering {
        match (self.window, other.window) {
            (Some(mine), Some(theirs)) => {
                let mine_rate = u128::from(self.quota) * u128::from(theirs.as_secs());
                let their_rate = u128::from(other.quota) * u128::from(mine.as_secs());
                mine_rate.cmp(&their_rate).then(theirs.cmp(&mine))
            }
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (None, None) => self.quota.cmp(&other.quota),
        }
    }
}

/// `RateLimit` in the List form of drafts 09+ or the Dictionary form of drafts 06/07, with the
/// policies of `RateLimit-Policy`.
fn ietf_rate_limit(
    headers: &HeaderMap,
    policies: &[Policy<'_>],
    reference: SystemTime,
) -> Counters {
    let Some(field) = joined(headers, "ratelimit") else {
        return Counters::from_policies(policies);
    };
    // A List member named by a token (`burst;r=0`) also parses as a Dictionary, so the Dictionary
    // form is recognised by its keys and their numbers.
    if let Ok(dictionary) = Parser::new(&*field).parse::<Dictionary>()
        && let Some(counters) = dictionary_form(&dictionary, policies, reference)
    {
        return counters;
    }
    match Parser::new(&*field).parse::<List>() {
        Ok(list) => list_form(&list, policies, reference),
        Err(_) => Counters::from_policies(policies),
    }
}

/// Drafts 09+: `RateLimit: "burst";r=0;t=30, "daily";r=10;t=3600`.
fn list_form(list: &List, policies: &[Policy<'_>], reference: SystemTime) -> Counters {
    let current = list
        .iter()
        .filter_map(|entry| {
            let ListEntry::Item(item) = entry else {
                return None;
            };
            let name = name_of(&item.bare_item)?;
            let remaining = item.params.get("r").and_then(count_of)?;
            let reset = item
                .params
                .get("t")
                .and_then(Decimal::of)
                .and_then(|t| reset_from(t, reference));
            let policy = policies.iter().find(|policy| policy.name == Some(name));
            Some((remaining, reset, policy))
        })
        // A quota counted in other units (bytes, concurrent requests) matters only when exhausted.
        .filter(|(remaining, _, policy)| {
            *remaining == 0 || policy.is_none_or(|policy| policy.counts_requests)
        })
        // Most restrictive: the smallest remaining, then the longest reset.
        .min_by(|(r1, t1, _), (r2, t2, _)| r1.cmp(r2).then(t2.cmp(t1)));

    match current {
        Some((remaining, reset, policy)) => Counters {
            limit: policy.map(|policy| policy.quota),
            remaining: Some(remaining),
            reset,
            window: policy.and_then(|policy| policy.window),
        },
        None => Counters::from_policies(policies),
    }
}

/// Drafts 06/07: `RateLimit: limit=100, remaining=50, reset=5`, with unnamed policies `100;w=60`.
/// `None` when the Dictionary has none of those keys.
fn dictionary_form(
    dictionary: &Dictionary,
    policies: &[Policy<'_>],
    reference: SystemTime,
) -> Option<Counters> {
    let member = |key: &str| match dictionary.get(key) {
        Some(ListEntry::Item(item)) => Some(&item.bare_item),
        _ => None,
    };
    let is_number = |bare: &BareItem| matches!(bare, BareItem::Integer(_) | BareItem::Decimal(_));
    if !["limit", "remaining", "reset"]
        .into_iter()
        .any(|key| member(key).is_some_and(is_number))
    {
        return None;
    }
    let limit = member("limit").and_then(count_of);
    Some(Counters {
        limit,
        remaining: member("remaining").and_then(count_of),
        reset: member("reset")
            .and_then(Decimal::of)
            .and_then(|reset| reset_from(reset, reference)),
        window: window_of_unnamed(limit, policies),
    })
}

/// Drafts 05/06: `RateLimit-Limit: 100, 100;w=60`, `RateLimit-Remaining: 0`, `RateLimit-Reset: 10`.
fn ietf_draft05(headers: &HeaderMap, policies: &[Policy<'_>], reference: SystemTime) -> Counters {
    let limit_field = structured_list(headers, "ratelimit-limit");
    let limit = match limit_field.first() {
        Some(ListEntry::Item(Item { bare_item, .. })) => count_of(bare_item),
        _ => None,
    };
    let trailing: Vec<Policy<'_>> = limit_field
        .iter()
        .skip(1)
        .filter_map(Policy::from_entry)
        .collect();
    Counters {
        limit,
        remaining: count(headers, "ratelimit-remaining"),
        reset: reset(headers, "ratelimit-reset", reference),
        window: window_of_unnamed(limit, &trailing).or(window_of_unnamed(limit, policies)),
    }
}

/// GitHub and most vendors, plus Discord's `Reset-After` and GitHub's `Used`.
fn x_ratelimit(headers: &HeaderMap, reference: SystemTime) -> Counters {
    let limit = count(headers, "x-ratelimit-limit");
    let remaining = count(headers, "x-ratelimit-remaining").or_else(|| {
        let used = count(headers, "x-ratelimit-used")?;
        Some(limit?.saturating_sub(used))
    });
    let reset_after = headers
        .get("x-ratelimit-reset-after")
        .and_then(|value| value.to_str().ok())
        .and_then(Decimal::parse)
        .map(Decimal::as_seconds)
        .and_then(plausible);
    Counters {
        limit,
        remaining,
        reset: reset_after.or_else(|| reset(headers, "x-ratelimit-reset", reference)),
        window: None,
    }
}

/// Twitter/X.
fn x_rate_limit(headers: &HeaderMap, reference: SystemTime) -> Counters {
    Counters {
        limit: count(headers, "x-rate-limit-limit"),
        remaining: count(headers, "x-rate-limit-remaining"),
        reset: reset(headers, "x-rate-limit-reset", reference),
        window: None,
    }
}

/// Shopify: `X-Shopify-Shop-Api-Call-Limit: 32/40` is used/limit.
fn shopify(headers: &HeaderMap) -> Counters {
    let parsed = headers
        .get("x-shopify-shop-api-call-limit")
        .and_then(|value| value.to_str().ok())
        .and_then(|text| text.split_once('/'))
        .and_then(|(used, limit)| Some((digits(used)?, digits(limit)?)));
    match parsed {
        Some((used, limit)) => Counters {
            limit: Some(limit),
            remaining: Some(limit.saturating_sub(used)),
            ..Counters::default()
        },
        None => Counters::default(),
    }
}

/// The window of the unnamed policy whose quota is `limit` (drafts 05 to 07).
fn window_of_unnamed(limit: Option<u64>, policies: &[Policy<'_>]) -> Option<Duration> {
    let limit = limit?;
    policies
        .iter()
        .find(|policy| policy.name.is_none() && policy.quota == limit)
        .and_then(|policy| policy.window)
}

/// All lines of a field joined with `", "`, as RFC 9110 combines them; borrowed when there is one.
fn joined<'a>(headers: &'a HeaderMap, name: &str) -> Option<Cow<'a, [u8]>> {
    let mut values = headers.get_all(name).iter();
    let first = values.next()?;
    let mut field = Cow::Borrowed(first.as_bytes());
    for value in values {
        let owned = field.to_mut();
        owned.extend_from_slice(b", ");
        owned.extend_from_slice(value.as_bytes());
    }
    Some(field)
}

/// A field parsed as a Structured Field List; empty when absent or malformed.
fn structured_list(headers: &HeaderMap, name: &str) -> List {
    joined(headers, name)
        .and_then(|field| Parser::new(&*field).parse::<List>().ok())
        .unwrap_or_default()
}

/// A non-negative Structured Field Integer.
fn count_of(bare: &BareItem) -> Option<u64> {
    u64::try_from(i64::from(bare.as_integer()?)).ok()
}

/// A policy name: a String (as the drafts write it) or, leniently, a Token.
fn name_of(bare: &BareItem) -> Option<&str> {
    match bare {
        BareItem::String(name) => Some(name.as_str()),
        BareItem::Token(name) => Some(name.as_str()),
        _ => None,
    }
}

/// A plain count header: `100`, leniently also `100, 100;w=60` (the first member's number).
fn count(headers: &HeaderMap, name: &str) -> Option<u64> {
    let text = headers.get(name)?.to_str().ok()?;
    digits(text.split([',', ';']).next()?)
}

/// A reset header: delta seconds, epoch seconds or epoch milliseconds, by magnitude.
fn reset(headers: &HeaderMap, name: &str, reference: SystemTime) -> Option<Duration> {
    let text = headers.get(name)?.to_str().ok()?;
    reset_from(Decimal::parse(text)?, reference)
}

/// `value` as a reset: epoch milliseconds from 10^12, epoch seconds from 10^9, else delta seconds.
fn reset_from(value: Decimal, reference: SystemTime) -> Option<Duration> {
    if value.whole >= EPOCH_MILLIS_FROM {
        delay_until(UNIX_EPOCH.checked_add(value.as_millis()?)?, reference)
    } else if value.whole >= EPOCH_SECONDS_FROM {
        delay_until(UNIX_EPOCH.checked_add(value.as_seconds())?, reference)
    } else {
        plausible(value.as_seconds())
    }
}

/// The delay from `reference` until `at`: zero when `at` is past, `None` when implausibly far.
fn delay_until(at: SystemTime, reference: SystemTime) -> Option<Duration> {
    plausible(at.duration_since(reference).unwrap_or(Duration::ZERO))
}

/// `delay` unless it is longer than [`MAX_DELAY`].
fn plausible(delay: Duration) -> Option<Duration> {
    (delay <= MAX_DELAY).then_some(delay)
}

/// A non-empty run of ASCII digits (optional whitespace around it) that fits a `u64`.
fn digits(text: &str) -> Option<u64> {
    let text = text.trim_matches(is_ows);
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// HTTP optional whitespace.
fn is_ows(c: char) -> bool {
    c == ' ' || c == '\t'
}

/// A non-negative decimal number, exact to the nanosecond, without floating point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Decimal {
    /// The integer part.
    whole: u64,
    /// The fraction, in billionths.
    nanos: u32,
}

impl Decimal {
    /// `digits` or `digits.digits`, with optional whitespace around it; digits past the ninth
    /// decimal place are dropped. Anything else (signs, exponents, `NaN`, `inf`) is `None`.
    fn parse(text: &str) -> Option<Decimal> {
        let text = text.trim_matches(is_ows);
        let (whole, fraction) = match text.split_once('.') {
            Some((whole, fraction)) => (whole, Some(fraction)),
            None => (text, None),
        };
        let whole = digits_strict(whole)?.parse().ok()?;
        let nanos = match fraction {
            None => 0,
            Some(fraction) => {
                let fraction = digits_strict(fraction)?;
                let mut nanos = 0;
                let mut scale = 100_000_000;
                for digit in fraction.bytes().take(9) {
                    nanos += u32::from(digit - b'0') * scale;
                    scale /= 10;
                }
                nanos
            }
        };
        Some(Decimal { whole, nanos })
    }

    /// A Structured Field Integer or Decimal, when not negative.
    fn of(bare: &BareItem) -> Option<Decimal> {
        match bare {
            BareItem::Integer(integer) => Some(Decimal {
                whole: u64::try_from(i64::from(*integer)).ok()?,
                nanos: 0,
            }),
            BareItem::Decimal(decimal) => {
                let thousandths =
                    u64::try_from(i64::from(decimal.as_integer_scaled_1000())).ok()?;
                Some(Decimal {
                    whole: thousandths / 1000,
                    // Below 1000, so the product is below 10^9.
                    nanos: u32::try_from(thousandths % 1000).ok()? * 1_000_000,
                })
            }
            _ => None,
        }
    }

    /// This many seconds.
    fn as_seconds(self) -> Duration {
        // `nanos` is below 10^9, so `Duration::new` cannot carry into (and overflow) the seconds.
        Duration::new(self.whole, self.nanos)
    }

    /// This many milliseconds; `None` on overflow.
    fn as_millis(self) -> Option<Duration> {
        // A billionth of a millisecond is a thousandth of a nanosecond.
        Duration::from_millis(self.whole)
            .checked_add(Duration::from_nanos(u64::from(self.nanos / 1000)))
    }
}

/// `text` when it is a non-empty run of ASCII digits.
fn digits_strict(text: &str) -> Option<&str> {
    (!text.is_empty() && text.bytes().all(|b| b.is_ascii_digit())).then_some(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Unix time of `Mon, 01 Jul 2024 12:00:00 GMT`.
    const JULY_1: u64 = 1_719_835_200;
    const JULY_1_HTTP: &str = "Mon, 01 Jul 2024 12:00:00 GMT";

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn secs(secs: u64) -> Option<Duration> {
        Some(Duration::from_secs(secs))
    }

    fn millis(millis: u64) -> Option<Duration> {
        Some(Duration::from_millis(millis))
    }

    /// A header map from `(name, value)` pairs; names in any case, repeated names appended.
    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        map
    }

    fn signal(pairs: &[(&str, &str)], now: SystemTime) -> ThrottleSignal {
        ThrottleSignal::from_headers(&headers(pairs), now)
    }

    fn retry(value: &str) -> Option<Duration> {
        parse_retry_after(&HeaderValue::from_str(value).unwrap(), None, at(JULY_1))
    }

    /// The fast path of `from_headers` (no signal header, no parse) must never skip a family: each
    /// family alone, with the headers of an ordinary response beside it, is still read.
    #[test]
    fn fast_path_skips_only_responses_without_a_signal() {
        let ordinary = [
            ("date", JULY_1_HTTP),
            ("content-type", "application/json"),
            ("content-length", "84"),
            ("cache-control", "no-store"),
        ];
        assert_eq!(signal(&ordinary, at(JULY_1)), ThrottleSignal::default());
        let families: &[&[(&str, &str)]] = &[
            &[("retry-after", "7")],
            &[("Retry-After-Ms", "7000")],
            &[("x-ms-retry-after-ms", "7000")],
            &[
                ("ratelimit-policy", r#""burst";q=100;w=60"#),
                ("ratelimit", r#""burst";r=0;t=7"#),
            ],
            &[
                ("ratelimit-limit", "100"),
                ("ratelimit-remaining", "0"),
                ("ratelimit-reset", "7"),
            ],
            &[("ratelimit", "limit=100, remaining=0, reset=7")],
            &[("x-ratelimit-remaining", "0"), ("x-ratelimit-reset", "7")],
            &[("x-ratelimit-limit", "100"), ("x-ratelimit-used", "100")],
            &[
                ("x-ratelimit-remaining", "0"),
                ("x-ratelimit-reset-after", "7"),
            ],
            &[("x-rate-limit-remaining", "0"), ("x-rate-limit-reset", "7")],
            &[("x-shopify-shop-api-call-limit", "40/40")],
        ];
        for family in families {
            let mut pairs = ordinary.to_vec();
            pairs.extend_from_slice(family);
            assert_ne!(
                signal(&pairs, at(JULY_1)),
                ThrottleSignal::default(),
                "{family:?} must be read"
            );
            for (name, _) in *family {
                let name = http::HeaderName::from_bytes(name.as_bytes()).unwrap();
                assert!(may_signal(&name), "{name} must be looked at");
            }
        }
    }

    /// The common headers `may_signal` answers without a scan answer as the scan would.
    #[test]
    fn the_headers_skipped_without_a_scan_carry_no_signal() {
        for name in &NEVER_SIGNAL {
            let text = name.as_str();
            assert!(
                !(text.contains("rate") || text.contains("retry") || text.contains("limit")),
                "{text}"
            );
            assert!(!may_signal(name), "{text}");
        }
        assert!(
            may_signal(&RETRY_AFTER),
            "a standard header that signals is still looked at"
        );
    }

    proptest::proptest! {
        /// The one-pass scan of `may_signal` (issue 19) answers as the three `contains` it replaced.
        #[test]
        fn may_signal_answers_as_contains_did(name in "[a-z0-9-]{1,40}|[a-z-]{0,8}(rate|retry|limit|rat|retr|limi)[a-z-]{0,8}") {
            let header = http::HeaderName::from_bytes(name.as_bytes()).unwrap();
            let contains =
                name.contains("rate") || name.contains("retry") || name.contains("limit");
            proptest::prop_assert_eq!(may_signal(&header), contains, "{}", name);
        }
    }

    #[test]
    fn github_exhausted_measures_epoch_reset_against_date_header() {
        let skewed = at(JULY_1 + 3600);
        let got = signal(
            &[
                ("Date", JULY_1_HTTP),
                ("x-ratelimit-limit", "5000"),
                ("x-ratelimit-remaining", "0"),
                ("x-ratelimit-reset", "1719837000"),
                ("x-ratelimit-used", "5000"),
                ("x-ratelimit-resource", "core"),
            ],
            skewed,
        );
        assert_eq!(
            got,
            ThrottleSignal {
                retry_after: None,
                limit: Some(5000),
                remaining: Some(0),
                reset: secs(1800),
                window: None,
            }
        );
        assert_eq!(got.pause(), secs(1800));
    }

    #[test]
    fn github_without_date_header_uses_now() {
        let got = signal(
            &[
                ("x-ratelimit-remaining", "0"),
                ("x-ratelimit-reset", "1719837000"),
            ],
            at(JULY_1 + 600),
        );
        assert_eq!(got.reset, secs(1200));
    }

    #[test]
    fn github_used_gives_remaining_when_remaining_is_missing() {
        let got = signal(
            &[("x-ratelimit-limit", "60"), ("x-ratelimit-used", "58")],
            at(JULY_1),
        );
        assert_eq!((got.limit, got.remaining), (Some(60), Some(2)));
        let over = signal(
            &[("x-ratelimit-limit", "60"), ("x-ratelimit-used", "61")],
            at(JULY_1),
        );
        assert_eq!(over.remaining, Some(0));
    }

    #[test]
    fn malformed_date_header_falls_back_to_now() {
        let got = signal(
            &[("date", "yesterday"), ("x-ratelimit-reset", "1719837000")],
            at(JULY_1),
        );
        assert_eq!(got.reset, secs(1800));
    }

    #[test]
    fn stripe_429_without_rate_headers_is_empty() {
        let got = signal(
            &[
                ("Stripe-Should-Retry", "true"),
                ("Request-Id", "req_123"),
                ("Content-Type", "application/json"),
            ],
            at(JULY_1),
        );
        assert!(got.is_empty());
        assert_eq!(got.pause(), None);
    }

    #[test]
    fn shopify_call_limit_and_fractional_retry_after() {
        let got = signal(
            &[
                ("X-Shopify-Shop-Api-Call-Limit", "40/40"),
                ("Retry-After", "2.0"),
            ],
            at(JULY_1),
        );
        assert_eq!(got.retry_after, secs(2));
        assert_eq!((got.limit, got.remaining), (Some(40), Some(0)));
        assert_eq!(got.pause(), secs(2));

        let got = signal(&[("X-Shopify-Shop-Api-Call-Limit", "32/40")], at(JULY_1));
        assert_eq!((got.limit, got.remaining), (Some(40), Some(8)));
        assert_eq!(got.pause(), None);
    }

    #[test]
    fn twitter_epoch_reset() {
        let got = signal(
            &[
                ("date", JULY_1_HTTP),
                ("x-rate-limit-limit", "900"),
                ("x-rate-limit-remaining", "0"),
                ("x-rate-limit-reset", "1719836100"),
            ],
            at(0),
        );
        assert_eq!(
            (got.limit, got.remaining, got.reset),
            (Some(900), Some(0), secs(900))
        );
        assert_eq!(got.pause(), secs(900));
    }

    #[test]
    fn discord_reset_after_wins_over_epoch_reset() {
        let got = signal(
            &[
                ("x-ratelimit-limit", "5"),
                ("x-ratelimit-remaining", "0"),
                ("x-ratelimit-reset", "1470173023.123"),
                ("x-ratelimit-reset-after", "1.234"),
                ("x-ratelimit-bucket", "abcd1234"),
            ],
            at(JULY_1),
        );
        assert_eq!(got.reset, millis(1234));
        assert_eq!(got.pause(), millis(1234));
    }

    #[test]
    fn discord_fractional_epoch_reset() {
        let got = signal(
            &[
                ("date", "Tue, 02 Aug 2016 21:23:42 GMT"),
                ("x-ratelimit-reset", "1470173023.123"),
            ],
            at(0),
        );
        assert_eq!(got.reset, millis(1123));
    }

    #[test]
    fn epoch_milliseconds_reset() {
        let got = signal(
            &[
                ("date", JULY_1_HTTP),
                ("x-ratelimit-remaining", "0"),
                ("x-ratelimit-reset", "1719835201500"),
            ],
            at(0),
        );
        assert_eq!(got.reset, millis(1500));
    }

    #[test]
    fn reset_magnitude_boundaries() {
        let reset_of = |value: &str| {
            signal(
                &[("date", JULY_1_HTTP), ("x-ratelimit-reset", value)],
                at(0),
            )
            .reset
        };
        // Below 10^9: delta seconds, unless longer than ten years.
        assert_eq!(reset_of("60"), secs(60));
        assert_eq!(reset_of("1.5"), millis(1500));
        assert_eq!(reset_of("315576000"), Some(MAX_DELAY));
        assert_eq!(reset_of("315576001"), None);
        assert_eq!(reset_of("999999999"), None);
        // From 10^9: epoch seconds; in the past means now.
        assert_eq!(reset_of("1000000000"), Some(Duration::ZERO));
        assert_eq!(reset_of("1719835100"), Some(Duration::ZERO));
        // From 10^12: epoch milliseconds.
        assert_eq!(reset_of("1000000000000"), Some(Duration::ZERO));
        assert_eq!(reset_of("1719835260000"), secs(60));
        // Epochs too far ahead, and numbers past u64, are malformed.
        assert_eq!(reset_of("9999999999999999"), None);
        assert_eq!(reset_of("18446744073709551615"), None);
        assert_eq!(reset_of("18446744073709551616"), None);
    }

    #[test]
    fn ietf_draft11_most_restrictive_policy() {
        let got = signal(
            &[
                (
                    "RateLimit-Policy",
                    r#""burst";q=100;w=60,"daily";q=1000;w=86400"#,
                ),
                ("RateLimit", r#""burst";r=0;t=30"#),
            ],
            at(JULY_1),
        );
        assert_eq!(
            got,
            ThrottleSignal {
                retry_after: None,
                limit: Some(100),
                remaining: Some(0),
                reset: secs(30),
                window: secs(60),
            }
        );
        assert_eq!(got.pause(), secs(30));
    }

    #[test]
    fn ietf_several_current_members_smallest_remaining_wins() {
        let got = signal(
            &[
                (
                    "RateLimit-Policy",
                    r#""burst";q=100;w=60,"daily";q=1000;w=86400"#,
                ),
                ("RateLimit", r#""burst";r=50;t=30, "daily";r=0;t=36000"#),
            ],
            at(JULY_1),
        );
        assert_eq!(
            (got.limit, got.remaining, got.reset, got.window),
            (Some(1000), Some(0), secs(36000), secs(86400))
        );
    }

    #[test]
    fn ietf_equal_remaining_longest_reset_wins() {
        let got = signal(
            &[("RateLimit", r#""a";r=0;t=10, "b";r=0;t=20, "c";r=0"#)],
            at(JULY_1),
        );
        assert_eq!((got.remaining, got.reset), (Some(0), secs(20)));
        // No policy of that name: limit and window stay unknown.
        assert_eq!((got.limit, got.window), (None, None));
    }

    #[test]
    fn ietf_lines_are_combined_and_tokens_accepted_as_names() {
        let got = signal(
            &[
                ("RateLimit-Policy", "burst;q=100;w=60"),
                ("RateLimit-Policy", "daily;q=1000;w=86400"),
                ("RateLimit", "daily;r=900;t=600"),
                ("RateLimit", "burst;r=5;t=7"),
            ],
            at(JULY_1),
        );
        assert_eq!(
            (got.limit, got.remaining, got.reset, got.window),
            (Some(100), Some(5), secs(7), secs(60))
        );
    }

    #[test]
    fn ietf_quota_in_other_units_counts_only_when_exhausted() {
        let policy = (
            "RateLimit-Policy",
            r#""bytes";q=65536;qu="content-bytes";w=60, "requests";q=100;w=60"#,
        );
        let got = signal(
            &[
                policy,
                ("RateLimit", r#""bytes";r=10;t=5, "requests";r=50;t=30"#),
            ],
            at(JULY_1),
        );
        assert_eq!((got.limit, got.remaining), (Some(100), Some(50)));
        let got = signal(
            &[
                policy,
                ("RateLimit", r#""bytes";r=0;t=5, "requests";r=50;t=30"#),
            ],
            at(JULY_1),
        );
        assert_eq!((got.remaining, got.pause()), (Some(0), secs(5)));
    }

    #[test]
    fn ietf_policy_alone_reports_the_lowest_rate() {
        let got = signal(
            &[(
                "RateLimit-Policy",
                r#""burst";q=100;w=60,"daily";q=1000;w=86400"#,
            )],
            at(JULY_1),
        );
        assert_eq!(
            (got.limit, got.remaining, got.reset, got.window),
            (Some(1000), None, None, secs(86400))
        );
    }

    #[test]
    fn ietf_malformed_members_are_skipped() {
        let got = signal(
            &[
                (
                    "RateLimit-Policy",
                    r#""burst";q=-1;w=60, "daily";q=1000;w=0"#,
                ),
                (
                    "RateLimit",
                    r#""burst";r=-1;t=30, "daily";r=3;t=-5, ("x" "y");r=0"#,
                ),
            ],
            at(JULY_1),
        );
        assert_eq!(
            (got.limit, got.remaining, got.reset, got.window),
            (Some(1000), Some(3), None, None)
        );
        // An unparsable RateLimit is ignored; the policy still speaks.
        let got = signal(
            &[
                ("RateLimit-Policy", r#""burst";q=100;w=60"#),
                ("RateLimit", r#""burst;r=0"#),
            ],
            at(JULY_1),
        );
        assert_eq!((got.limit, got.remaining), (Some(100), None));
    }

    #[test]
    fn ietf_draft06_dictionary_form() {
        let got = signal(
            &[
                ("RateLimit", "limit=100, remaining=50, reset=5"),
                ("RateLimit-Policy", "10;w=1, 100;w=60"),
            ],
            at(JULY_1),
        );
        assert_eq!(
            got,
            ThrottleSignal {
                retry_after: None,
                limit: Some(100),
                remaining: Some(50),
                reset: secs(5),
                window: secs(60),
            }
        );
        assert_eq!(got.pause(), None);
    }

    #[test]
    fn ietf_dictionary_form_needs_numbers() {
        // A token-named List member also parses as a Dictionary with a `limit` key.
        let got = signal(&[("RateLimit", "limit;r=0;t=9")], at(JULY_1));
        assert_eq!((got.remaining, got.reset), (Some(0), secs(9)));
        // A Dictionary whose numbers are all malformed says nothing.
        let got = signal(&[("RateLimit", "limit=-1, remaining=?1")], at(JULY_1));
        assert!(got.is_empty(), "{got:?}");
    }

    #[test]
    fn ietf_draft06_separate_fields_with_unnamed_policies() {
        let got = signal(
            &[
                ("RateLimit-Limit", "10"),
                ("RateLimit-Remaining", "0"),
                ("RateLimit-Reset", "1"),
                ("RateLimit-Policy", "10;w=1, 50;w=60"),
            ],
            at(JULY_1),
        );
        // The stated limit picks its policy; the lower-rate 50;w=60 does not override it.
        assert_eq!(
            (got.limit, got.remaining, got.reset, got.window),
            (Some(10), Some(0), secs(1), secs(1))
        );
        // Unnamed policies alone say nothing: no limit says which one applies.
        let got = signal(&[("RateLimit-Policy", "10;w=1, 50;w=60")], at(JULY_1));
        assert!(got.is_empty(), "{got:?}");
    }

    #[test]
    fn ietf_draft05_separate_fields() {
        let got = signal(
            &[
                ("RateLimit-Limit", "100, 100;w=60"),
                ("RateLimit-Remaining", "0"),
                ("RateLimit-Reset", "10"),
            ],
            at(JULY_1),
        );
        assert_eq!(
            (got.limit, got.remaining, got.reset, got.window),
            (Some(100), Some(0), secs(10), secs(60))
        );
        assert_eq!(got.pause(), secs(10));
    }

    #[test]
    fn ietf_fields_take_precedence_over_vendor_ones() {
        let got = signal(
            &[
                ("RateLimit-Policy", r#""default";q=100;w=10"#),
                ("RateLimit", r#""default";r=7;t=3"#),
                ("X-RateLimit-Limit", "5000"),
                ("X-RateLimit-Remaining", "0"),
                ("X-RateLimit-Reset", "60"),
            ],
            at(JULY_1),
        );
        assert_eq!(
            (got.limit, got.remaining, got.reset, got.window),
            (Some(100), Some(7), secs(3), secs(10))
        );
        assert_eq!(got.pause(), None);

        // A field the IETF family leaves out comes from the next family that states it.
        let got = signal(
            &[
                ("RateLimit", r#""default";r=0"#),
                ("X-RateLimit-Reset", "60"),
            ],
            at(JULY_1),
        );
        assert_eq!((got.remaining, got.reset), (Some(0), secs(60)));

        // X-RateLimit before X-Rate-Limit before Shopify.
        let got = signal(
            &[
                ("X-Rate-Limit-Remaining", "3"),
                ("X-RateLimit-Remaining", "2"),
                ("X-Shopify-Shop-Api-Call-Limit", "39/40"),
            ],
            at(JULY_1),
        );
        assert_eq!((got.limit, got.remaining), (Some(40), Some(2)));
    }

    #[test]
    fn retry_after_is_never_from_rate_limit_fields() {
        let got = signal(
            &[("Retry-After", "5"), ("RateLimit", r#""default";r=0;t=60"#)],
            at(JULY_1),
        );
        assert_eq!((got.retry_after, got.reset), (secs(5), secs(60)));
        assert_eq!(got.pause(), secs(5));
    }

    #[test]
    fn retry_after_http_date_against_date_header() {
        let got = signal(
            &[
                ("Date", JULY_1_HTTP),
                ("Retry-After", "Mon, 01 Jul 2024 12:02:00 GMT"),
            ],
            at(JULY_1 + 86_400),
        );
        assert_eq!(got.retry_after, secs(120));
        // The obsolete forms too.
        let date = Some(at(JULY_1));
        let rfc850 = HeaderValue::from_static("Monday, 01-Jul-24 12:00:30 GMT");
        assert_eq!(parse_retry_after(&rfc850, date, at(0)), secs(30));
        let asctime = HeaderValue::from_static("Mon Jul  1 12:00:45 2024");
        assert_eq!(parse_retry_after(&asctime, date, at(0)), secs(45));
    }

    #[test]
    fn retry_after_past_date_is_zero() {
        let got = signal(
            &[
                ("Date", JULY_1_HTTP),
                ("Retry-After", "Sun, 06 Nov 1994 08:49:37 GMT"),
            ],
            at(0),
        );
        assert_eq!(got.retry_after, Some(Duration::ZERO));
        assert_eq!(got.pause(), Some(Duration::ZERO));
        assert_eq!(retry("Mon, 01 Jul 2024 12:00:00 GMT"), Some(Duration::ZERO));
    }

    #[test]
    fn retry_after_http_date_without_date_header_uses_now() {
        assert_eq!(retry("Mon, 01 Jul 2024 12:01:00 GMT"), secs(60));
        let far = "Fri, 01 Jul 2044 12:00:00 GMT";
        assert_eq!(retry(far), None, "more than ten years ahead");
    }

    #[test]
    fn retry_after_millisecond_fields_largest_wins() {
        let got = signal(&[("retry-after-ms", "1500")], at(JULY_1));
        assert_eq!(got.retry_after, millis(1500));
        let got = signal(
            &[("retry-after-ms", "1500"), ("x-ms-retry-after-ms", "2500")],
            at(JULY_1),
        );
        assert_eq!(got.retry_after, millis(2500));
        let got = signal(
            &[("Retry-After", "3"), ("x-ms-retry-after-ms", "2500")],
            at(JULY_1),
        );
        assert_eq!(got.retry_after, secs(3));
        let got = signal(
            &[("Retry-After", "1"), ("retry-after-ms", "1000.5")],
            at(JULY_1),
        );
        assert_eq!(
            got.retry_after,
            Some(Duration::from_millis(1000) + Duration::from_micros(500))
        );
        // A malformed millisecond field does not hide a valid Retry-After.
        let got = signal(
            &[("Retry-After", "1"), ("retry-after-ms", "soon")],
            at(JULY_1),
        );
        assert_eq!(got.retry_after, secs(1));
    }

    #[test]
    fn retry_after_repeated_lines_largest_wins() {
        let got = signal(&[("Retry-After", "1"), ("Retry-After", "4")], at(JULY_1));
        assert_eq!(got.retry_after, secs(4));
    }

    #[test]
    fn retry_after_delta_seconds() {
        assert_eq!(retry("0"), Some(Duration::ZERO));
        assert_eq!(retry("120"), secs(120));
        assert_eq!(retry(" 120\t"), secs(120));
        assert_eq!(retry("007"), secs(7));
        assert_eq!(retry("2.0"), secs(2));
        assert_eq!(retry("0.25"), millis(250));
        assert_eq!(retry("1.0000000019"), Some(Duration::new(1, 1)));
        assert_eq!(retry("315576000"), Some(MAX_DELAY));
    }

    #[test]
    fn retry_after_malformed_is_none() {
        for value in [
            "",
            " ",
            "-1",
            "+5",
            "1e3",
            "NaN",
            "inf",
            "infinity",
            "1.",
            ".5",
            "1.2.3",
            "0x10",
            "12 34",
            "5s",
            "315576001",
            "18446744073709551616",
            "99999999999999999999999999",
            "Mon, 32 Jul 2024 12:00:00 GMT",
            "Tue, 01 Jul 2024 12:00:00 GMT",
            "tomorrow",
        ] {
            assert_eq!(retry(value), None, "{value:?}");
        }
        let opaque = HeaderValue::from_bytes(b"\xff\xfe").unwrap();
        assert_eq!(parse_retry_after(&opaque, None, at(0)), None);
    }

    #[test]
    fn malformed_vendor_values_are_ignored() {
        let got = signal(
            &[
                ("x-ratelimit-limit", "-1"),
                ("x-ratelimit-remaining", "1.5"),
                ("x-ratelimit-reset", "NaN"),
                ("x-shopify-shop-api-call-limit", "40"),
            ],
            at(JULY_1),
        );
        assert!(got.is_empty(), "{got:?}");
        let got = signal(
            &[
                ("x-ratelimit-limit", "100, 100;w=60"),
                ("x-ratelimit-reset", "-5"),
            ],
            at(JULY_1),
        );
        assert_eq!((got.limit, got.reset), (Some(100), None));
    }

    #[test]
    fn pause_needs_an_exhausted_quota_and_a_reset() {
        let exhausted_no_reset = ThrottleSignal {
            remaining: Some(0),
            ..ThrottleSignal::default()
        };
        assert_eq!(exhausted_no_reset.pause(), None);
        assert!(!exhausted_no_reset.is_empty());
        let reset_only = ThrottleSignal {
            reset: secs(5),
            ..ThrottleSignal::default()
        };
        assert_eq!(reset_only.pause(), None);
    }

    #[test]
    fn decimal_from_structured_items() {
        let decimal = BareItem::Decimal(sfv::Decimal::try_from(1.5).unwrap());
        assert_eq!(
            Decimal::of(&decimal),
            Some(Decimal {
                whole: 1,
                nanos: 500_000_000
            })
        );
        let negative = BareItem::Decimal(sfv::Decimal::try_from(-1.5).unwrap());
        assert_eq!(Decimal::of(&negative), None);
        assert_eq!(Decimal::of(&BareItem::Boolean(true)), None);
    }
}
