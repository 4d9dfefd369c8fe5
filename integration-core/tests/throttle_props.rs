//! Properties of the throttle-signal parser: it never panics on any header bytes, delta-seconds
//! round-trip, and an HTTP-date is measured against the response's `Date`, whatever the local clock.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::{HeaderMap, HeaderName, HeaderValue};
use integration_core::throttle::{MAX_DELAY, ThrottleSignal, parse_retry_after};
use proptest::prelude::*;

/// Every header the parser reads, in mixed case.
const NAMES: &[&str] = &[
    "Date",
    "Retry-After",
    "retry-after-ms",
    "x-ms-retry-after-ms",
    "RateLimit",
    "RateLimit-Policy",
    "RateLimit-Limit",
    "RateLimit-Remaining",
    "RateLimit-Reset",
    "X-RateLimit-Limit",
    "X-RateLimit-Remaining",
    "X-RateLimit-Reset",
    "X-RateLimit-Reset-After",
    "X-RateLimit-Used",
    "X-Rate-Limit-Limit",
    "X-Rate-Limit-Remaining",
    "X-Rate-Limit-Reset",
    "X-Shopify-Shop-Api-Call-Limit",
];

/// The last second `httpdate` can format (31 Dec 9999 23:59:59), less the longest plausible delay.
const LAST_DATE: u64 = 253_402_300_799 - MAX_DELAY.as_secs();

/// Header values: raw bytes, printable text, and text shaped like the fields so the parsers go deep.
fn value_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        any::<Vec<u8>>(),
        "[ -~]{0,40}".prop_map(String::into_bytes),
        r#"[0-9.,;=/ "a-z\-]{0,40}"#.prop_map(String::into_bytes),
        r#"("[a-z]{1,5}"|[a-z]{1,5}|[0-9]{1,16})(;[qrtw]=-?[0-9]{1,16}(\.[0-9]{1,4})?)*(;qu="[a-z\-]{0,14}")?"#
            .prop_map(String::into_bytes),
        "(limit|remaining|reset)=-?[0-9]{1,16}(, (limit|remaining|reset)=-?[0-9]{1,16}){0,2}"
            .prop_map(String::into_bytes),
        "[0-9]{1,25}(\\.[0-9]{0,12})?".prop_map(String::into_bytes),
        (0..LAST_DATE).prop_map(|secs| httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(secs)).into_bytes()),
    ]
}

/// A wall clock anywhere within about 30 000 years of 1970, before it too.
fn wall_clock() -> impl Strategy<Value = SystemTime> {
    (any::<bool>(), 0..1_000_000_000_000u64).prop_map(|(before, secs)| {
        let offset = Duration::from_secs(secs);
        if before {
            UNIX_EPOCH - offset
        } else {
            UNIX_EPOCH + offset
        }
    })
}

fn seconds_value(n: u64) -> HeaderValue {
    HeaderValue::from_str(&n.to_string()).expect("digits are a valid header value")
}

fn date_value(time: SystemTime) -> HeaderValue {
    HeaderValue::from_str(&httpdate::fmt_http_date(time))
        .expect("an HTTP-date is a valid header value")
}

proptest! {
    #[test]
    fn from_headers_never_panics(
        fields in prop::collection::vec((0..NAMES.len(), value_bytes()), 0..10),
        now in wall_clock(),
    ) {
        let mut headers = HeaderMap::new();
        for (name, bytes) in fields {
            // Bytes a header value cannot hold never reach the parser.
            if let Ok(value) = HeaderValue::from_bytes(&bytes) {
                headers.append(HeaderName::from_bytes(NAMES[name].as_bytes()).unwrap(), value);
            }
        }
        let signal = ThrottleSignal::from_headers(&headers, now);
        for delay in [signal.retry_after, signal.reset, signal.window, signal.pause()].into_iter().flatten() {
            prop_assert!(delay <= MAX_DELAY, "{delay:?} from {headers:?}");
        }
        prop_assert_eq!(signal.is_empty(), signal == ThrottleSignal::default());
    }

    #[test]
    fn parse_retry_after_never_panics(
        bytes in value_bytes(),
        date in prop::option::of(wall_clock()),
        now in wall_clock(),
    ) {
        if let Ok(value) = HeaderValue::from_bytes(&bytes)
            && let Some(delay) = parse_retry_after(&value, date, now)
        {
            prop_assert!(delay <= MAX_DELAY);
        }
    }

    #[test]
    fn delta_seconds_round_trip(
        n in prop_oneof![0..=MAX_DELAY.as_secs(), 0..1_000_000_000u64],
        date in prop::option::of(wall_clock()),
        now in wall_clock(),
    ) {
        // Delays up to ten years round-trip exactly; longer ones are implausible and ignored.
        let expected = (n <= MAX_DELAY.as_secs()).then(|| Duration::from_secs(n));
        prop_assert_eq!(parse_retry_after(&seconds_value(n), date, now), expected);

        let mut headers = HeaderMap::new();
        headers.insert("retry-after", seconds_value(n));
        let signal = ThrottleSignal::from_headers(&headers, now);
        prop_assert_eq!(signal.retry_after, expected);
        prop_assert_eq!(signal.pause(), expected);
    }

    #[test]
    fn http_date_is_measured_against_the_date_header(
        date in 0..LAST_DATE,
        k in prop_oneof![0..=600u64, 0..=MAX_DELAY.as_secs()],
        now in wall_clock(),
    ) {
        let date = UNIX_EPOCH + Duration::from_secs(date);
        let retry_at = date_value(date + Duration::from_secs(k));
        let expected = Some(Duration::from_secs(k));

        prop_assert_eq!(parse_retry_after(&retry_at, Some(date), now), expected);

        // Through the whole parser, with a local clock that may be anywhere at all.
        let mut headers = HeaderMap::new();
        headers.insert("date", date_value(date));
        headers.insert("retry-after", retry_at);
        prop_assert_eq!(ThrottleSignal::from_headers(&headers, now).retry_after, expected);
    }

    #[test]
    fn http_date_in_the_past_is_zero(
        date in 1..LAST_DATE,
        k in 1..=MAX_DELAY.as_secs(),
    ) {
        let date = UNIX_EPOCH + Duration::from_secs(date);
        let Some(earlier) = date.checked_sub(Duration::from_secs(k)) else {
            return Ok(());
        };
        if earlier < UNIX_EPOCH {
            return Ok(());
        }
        prop_assert_eq!(
            parse_retry_after(&date_value(earlier), Some(date), UNIX_EPOCH),
            Some(Duration::ZERO)
        );
    }
}
