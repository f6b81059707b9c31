//! Provider headers and bodies come from remote servers: no input may panic a parser, and the
//! formats the providers send parse back exactly.

use std::time::{Duration, SystemTime};

use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use proptest::prelude::*;
use tollgate_core::classify::{classify_response, classify_stream_error};
use tollgate_core::duration::{
    format_go_duration, parse_go_duration, parse_protobuf_duration, parse_retry_after,
    parse_rfc3339,
};
use tollgate_core::providers::{retry_after, should_retry};
use tollgate_core::{OutcomeKind, Provider, RateLimitSnapshot};

/// Every header name a parser reads.
const NAMES: &[&str] = &[
    "date",
    "retry-after",
    "retry-after-ms",
    "x-ms-retry-after-ms",
    "x-should-retry",
    "x-ratelimit-limit-requests",
    "x-ratelimit-limit-tokens",
    "x-ratelimit-remaining-requests",
    "x-ratelimit-remaining-tokens",
    "x-ratelimit-reset-requests",
    "x-ratelimit-reset-tokens",
    "anthropic-ratelimit-requests-limit",
    "anthropic-ratelimit-requests-remaining",
    "anthropic-ratelimit-requests-reset",
    "anthropic-ratelimit-tokens-remaining",
    "anthropic-ratelimit-input-tokens-remaining",
    "anthropic-ratelimit-input-tokens-reset",
    "anthropic-ratelimit-output-tokens-remaining",
    "x-ratelimitbysize-limit-minute",
    "x-ratelimitbysize-remaining-minute",
    "x-ratelimit-limit",
    "x-ratelimit-remaining",
    "x-ratelimit-reset",
    "x-tokenlimit-limit",
    "x-tokenlimit-remaining",
];

/// Any byte a header value may hold.
fn header_value() -> impl Strategy<Value = HeaderValue> {
    let byte = prop_oneof![Just(b'\t'), 0x20u8..0x7f, 0x80u8..=0xff];
    let raw = prop::collection::vec(byte, 0..40);
    let plausible = "[-+0-9.a-zA-Z:, µ]{0,30}".prop_map(String::into_bytes);
    prop_oneof![raw, plausible].prop_map(|bytes| HeaderValue::from_bytes(&bytes).unwrap())
}

fn headers() -> impl Strategy<Value = HeaderMap> {
    prop::collection::vec((prop::sample::select(NAMES), header_value()), 0..12).prop_map(|pairs| {
        pairs
            .into_iter()
            .map(|(name, value)| (HeaderName::from_static(name), value))
            .collect()
    })
}

fn text() -> impl Strategy<Value = serde_json::Value> {
    prop_oneof![
        any::<String>().prop_map(serde_json::Value::from),
        prop::sample::select(
            &[
                "insufficient_quota",
                "rate_limit_exceeded",
                "overloaded_error",
                "Overloaded",
                "Request too large",
                "RESOURCE_EXHAUSTED",
                "UNAVAILABLE",
                "Please try again in 99999999999999999999h",
                "Please retry after 1e9 seconds",
                "QuotaPerDayTokens",
                "99999999999999999999s",
            ][..]
        )
        .prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        Just(serde_json::Value::Null),
    ]
}

/// Error bodies close enough to the real shapes to reach the deep parsing paths.
fn error_body() -> impl Strategy<Value = Vec<u8>> {
    (text(), text(), text(), text(), text(), any::<bool>()).prop_map(
        |(message, kind, code, id, delay, wrap)| {
            let body = serde_json::json!({"type": "error", "error": {
                "message": message, "type": kind, "code": code, "status": kind,
                "details": [{"violations": [{"quotaId": id}]}, {"retryDelay": delay}],
            }});
            let body = if wrap {
                serde_json::json!([body])
            } else {
                body
            };
            serde_json::to_vec(&body).unwrap()
        },
    )
}

fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![prop::collection::vec(any::<u8>(), 0..200), error_body()]
}

fn any_time() -> impl Strategy<Value = SystemTime> {
    (0u64..=8_000_000_000).prop_map(|secs| SystemTime::UNIX_EPOCH + Duration::from_secs(secs))
}

fn provider() -> impl Strategy<Value = Option<Provider>> {
    prop::option::of(prop::sample::select(&Provider::ALL[..]))
}

proptest! {
    #[test]
    fn classify_response_never_panics(
        status in 100u16..=999,
        headers in headers(),
        body in body(),
        now in any_time(),
    ) {
        let status = StatusCode::from_u16(status).unwrap();
        let outcome = classify_response(status, &headers, &body, now);
        prop_assert_eq!(outcome.status, Some(status));
        prop_assert_eq!(outcome.kind == OutcomeKind::Success, status.is_success());
        prop_assert_eq!(outcome.should_retry, should_retry(&headers));
        if let Some(wait) = retry_after(&headers, now) {
            prop_assert_eq!(outcome.retry_after, Some(wait));
        }
    }

    #[test]
    fn stream_errors_never_panic(data in body()) {
        let outcome = classify_stream_error(&data);
        prop_assert_eq!(outcome.status, None);
        prop_assert!(outcome.kind != OutcomeKind::Success);
    }

    #[test]
    fn snapshots_never_panic(headers in headers(), provider in provider(), now in any_time()) {
        let snapshot = RateLimitSnapshot::from_headers(&headers, provider, now);
        for window in [snapshot.requests, snapshot.tokens, snapshot.input_tokens, snapshot.output_tokens]
            .into_iter()
            .flatten()
        {
            prop_assert!(!window.is_empty());
            prop_assert!(window.period.is_some());
        }
    }

    #[test]
    fn duration_parsers_never_panic(s in any::<String>(), t in "[-+0-9.µμnsuhmZT:e ]{0,24}", now in any_time()) {
        for input in [&s, &t] {
            let _ = parse_go_duration(input);
            let _ = parse_retry_after(input, now);
            let _ = parse_rfc3339(input);
            let _ = parse_protobuf_duration(input);
        }
    }

    #[test]
    fn go_durations_round_trip(nanos in any::<u64>()) {
        let d = Duration::from_nanos(nanos);
        prop_assert_eq!(parse_go_duration(&format_go_duration(d)), Some(d), "{}", format_go_duration(d));
    }

    #[test]
    fn go_duration_components_add_up(h in 0u64..10_000, m in 0u64..100, s in 0u64..100, ms in 0u64..1_000) {
        let want = Duration::from_millis(((h * 60 + m) * 60 + s) * 1_000 + ms);
        prop_assert_eq!(parse_go_duration(&format!("{h}h{m}m{s}s{ms}ms")), Some(want));
        prop_assert_eq!(parse_go_duration(&format!("{h}h{m}m{s}.{ms:03}s")), Some(want));
    }

    #[test]
    fn retry_after_round_trips(secs in 0u64..=604_800, millis in 0u64..1_000, ahead in 0u64..=604_800, now in any_time()) {
        let whole = Duration::from_secs(secs);
        prop_assert_eq!(parse_retry_after(&secs.to_string(), now), Some(whole));
        let exact = whole + Duration::from_millis(millis);
        if exact <= Duration::from_secs(604_800) {
            prop_assert_eq!(parse_retry_after(&format!("{secs}.{millis:03}"), now), Some(exact));
        }
        let date = httpdate::fmt_http_date(now + Duration::from_secs(ahead));
        prop_assert_eq!(parse_retry_after(&date, now), Some(Duration::from_secs(ahead)));
        prop_assert_eq!(parse_protobuf_duration(&format!("{secs}.{millis:03}s")), Some(exact));
    }

    #[test]
    fn rfc3339_round_trips(secs in 0i64..=253_402_300_799, nanos in 0u32..1_000_000_000) {
        let at = time::OffsetDateTime::from_unix_timestamp(secs).unwrap();
        let text = format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{nanos:09}Z",
            at.year(), u8::from(at.month()), at.day(), at.hour(), at.minute(), at.second(),
        );
        let want = SystemTime::UNIX_EPOCH + Duration::new(secs.unsigned_abs(), nanos);
        prop_assert_eq!(parse_rfc3339(&text), Some(want), "{}", text);
    }
}
