//! Gemini: no limit headers; a 429 body with google.rpc `details` that name the quota hit and
//! the wait.
//!
//! ```text
//! {"error":{"code":429,"status":"RESOURCE_EXHAUSTED","details":[
//!   {"@type":"type.googleapis.com/google.rpc.QuotaFailure","violations":[
//!     {"quotaMetric":"...","quotaId":"GenerateRequestsPerMinutePerProjectPerModel-FreeTier"}]},
//!   {"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay":"37s"}]}}
//! ```
//!
//! A `quotaId` containing `PerDay` stays exhausted until the daily reset, so retrying within
//! the minute is pointless.

use std::time::Duration;

use serde::Deserialize;

use super::error_body::{lenient_vec, text};
use crate::RateLimitDimension;
use crate::duration::parse_protobuf_duration;

/// One entry of `error.details`. Fields of detail types other than `QuotaFailure` and
/// `RetryInfo` are ignored.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct Detail {
    #[serde(rename = "@type", deserialize_with = "text")]
    type_url: Option<String>,
    #[serde(deserialize_with = "lenient_vec")]
    violations: Vec<Violation>,
    #[serde(rename = "retryDelay", deserialize_with = "text")]
    retry_delay: Option<String>,
    /// `ErrorInfo.reason` (`API_KEY_INVALID`, ...).
    #[serde(deserialize_with = "text")]
    reason: Option<String>,
}

/// One `QuotaFailure` violation.
#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct Violation {
    #[serde(deserialize_with = "text")]
    quota_metric: Option<String>,
    #[serde(deserialize_with = "text")]
    quota_id: Option<String>,
}

/// The `retryDelay` of the `RetryInfo` detail (any detail carrying one, if the `@type` is
/// missing).
pub(super) fn retry_delay(details: &[Detail]) -> Option<Duration> {
    details
        .iter()
        .filter(|d| {
            d.type_url
                .as_deref()
                .is_none_or(|t| t.ends_with("google.rpc.RetryInfo"))
        })
        .find_map(|d| d.retry_delay.as_deref().and_then(parse_protobuf_duration))
}

/// Whether an `ErrorInfo` detail says the API key was refused: Gemini answers a bad key with a
/// 400 `INVALID_ARGUMENT`, not a 401.
pub(super) fn rejects_key(details: &[Detail]) -> bool {
    details.iter().any(|d| {
        matches!(
            d.reason.as_deref(),
            Some("API_KEY_INVALID" | "API_KEY_EXPIRED" | "API_KEY_SERVICE_BLOCKED")
        )
    })
}

/// Whether any violated quota is per day.
pub(super) fn is_daily(details: &[Detail]) -> bool {
    quota_ids(details).any(|id| id.contains("PerDay"))
}

/// The dimension of the first violated quota that names one: `InputTokens`, `Tokens`,
/// `Requests` in its `quotaId` (the `quotaMetric` when the id is missing).
pub(super) fn dimension(details: &[Detail]) -> Option<RateLimitDimension> {
    quota_ids(details).find_map(|id| {
        if id.contains("InputTokens") {
            Some(RateLimitDimension::InputTokens)
        } else if id.contains("Tokens") {
            Some(RateLimitDimension::Tokens)
        } else if id.contains("Requests") {
            Some(RateLimitDimension::Requests)
        } else {
            None
        }
    })
}

/// The window of the first violated quota that names one (`…PerSecond…`, `…PerMinute…`,
/// `…PerHour…`): what a limit learned from this refusal counts over.
pub(super) fn window(details: &[Detail]) -> Option<Duration> {
    quota_ids(details).find_map(|id| {
        [("PerSecond", 1), ("PerMinute", 60), ("PerHour", 3_600)]
            .into_iter()
            .find(|(unit, _)| id.contains(unit))
            .map(|(_, secs)| Duration::from_secs(secs))
    })
}

fn quota_ids(details: &[Detail]) -> impl Iterator<Item = &str> {
    details
        .iter()
        .flat_map(|d| &d.violations)
        .filter_map(|v| v.quota_id.as_deref().or(v.quota_metric.as_deref()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn details(json: &str) -> Vec<Detail> {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn reads_quota_failures_and_retry_info() {
        let d = details(
            r#"[{"@type":"type.googleapis.com/google.rpc.QuotaFailure","violations":[
                {"quotaMetric":"m","quotaId":"GenerateContentInputTokensPerModelPerMinute-FreeTier"}]},
               {"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay":"1.5s"}]"#,
        );
        assert_eq!(dimension(&d), Some(RateLimitDimension::InputTokens));
        assert_eq!(retry_delay(&d), Some(Duration::from_millis(1500)));
        assert!(!is_daily(&d));
        assert_eq!(window(&d), Some(Duration::from_secs(60)));

        let d = details(
            r#"[{"violations":[{"quotaId":"GenerateRequestsPerDayPerProjectPerModel-FreeTier"}]},
               {"@type":"type.googleapis.com/google.rpc.Help","retryDelay":"9s"}]"#,
        );
        assert_eq!(dimension(&d), Some(RateLimitDimension::Requests));
        assert!(is_daily(&d));
        assert_eq!(
            window(&d),
            None,
            "a day is not a window a pace is learned over"
        );
        assert_eq!(retry_delay(&d), None, "only RetryInfo carries the wait");
        assert!(!rejects_key(&d));

        let d = details(
            r#"[{"@type":"type.googleapis.com/google.rpc.ErrorInfo","reason":"API_KEY_INVALID","domain":"googleapis.com"}]"#,
        );
        assert!(rejects_key(&d));
    }

    #[test]
    fn odd_shapes_are_ignored() {
        let d = details(
            r#"[{"violations":"nope","retryDelay":37},{"violations":[1,{"quotaId":"xTokens"}]}]"#,
        );
        assert_eq!(retry_delay(&d), None);
        assert_eq!(dimension(&d), Some(RateLimitDimension::Tokens));
    }
}
