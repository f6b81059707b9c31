//! Parsers for the duration and time formats providers put in headers and error bodies.
//!
//! Every provider says "wait this long" or "the quota resets then" in its own format: OpenAI and
//! Groq send Go `time.Duration` strings (`6m0s`), Anthropic RFC 3339 timestamps, HTTP caches
//! `Retry-After` in seconds or as an HTTP-date, Gemini protobuf durations (`"37s"`). These
//! values arrive on every response from a remote server, so the parsers here never panic and
//! never round through floating point: `2m59.56s` is exactly 179 560 ms. Anything they do not
//! understand is `None`, and the caller carries on without it.

use std::time::{Duration, SystemTime};

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

const NANOS_PER_SEC: u128 = 1_000_000_000;
const NANOS_PER_MILLI: u64 = 1_000_000;
/// Fraction digits kept; later ones are below a nanosecond for every unit and are truncated.
const MAX_FRACTION_DIGITS: usize = 18;
/// The longest wait a provider can plausibly mean; anything longer is garbage (a week).
const MAX_WAIT: Duration = Duration::from_secs(7 * 24 * 60 * 60);

/// Formats a duration the way Go's `Duration.String` does, as OpenAI sends
/// `x-ratelimit-reset-*`: `0s`, `12ms`, `1.5µs`, `7.66s`, `6m0s`, `2m59.56s`, `1h2m3s`.
///
/// [`parse_go_duration`] reads every output back exactly.
///
/// ```
/// use std::time::Duration;
/// use tollgate_core::duration::format_go_duration;
///
/// assert_eq!(format_go_duration(Duration::from_millis(179_560)), "2m59.56s");
/// assert_eq!(format_go_duration(Duration::from_secs(360)), "6m0s");
/// assert_eq!(format_go_duration(Duration::from_micros(1_500)), "1.5ms");
/// ```
pub fn format_go_duration(duration: Duration) -> String {
    let nanos = duration.as_nanos();
    // Below a second Go picks the largest unit that keeps an integer part.
    let (unit_nanos, unit) = match nanos {
        0 => return "0s".to_owned(),
        1..1_000 => return format!("{nanos}ns"),
        1_000..1_000_000 => (1_000, "µs"),
        1_000_000..1_000_000_000 => (1_000_000, "ms"),
        _ => (NANOS_PER_SEC, "s"),
    };
    let mut out = String::new();
    let secs = duration.as_secs();
    if unit == "s" {
        if secs >= 3_600 {
            out.push_str(&format!("{}h", secs / 3_600));
        }
        if secs >= 60 {
            out.push_str(&format!("{}m", secs / 60 % 60));
        }
    }
    let whole = if unit == "s" {
        u128::from(secs % 60)
    } else {
        nanos / unit_nanos
    };
    let fraction = nanos % unit_nanos;
    out.push_str(&whole.to_string());
    if fraction > 0 {
        let width = unit_nanos.ilog10() as usize;
        let digits = format!("{fraction:0width$}");
        out.push('.');
        out.push_str(digits.trim_end_matches('0'));
    }
    out.push_str(unit);
    out
}

/// Parses a Go `time.Duration` string, as OpenAI and Groq send in `x-ratelimit-reset-*`.
///
/// Accepts a sequence of decimal numbers, each with an optional fraction and a unit (`ns`,
/// `us`, `µs`, `μs`, `ms`, `s`, `m`, `h`): `1s`, `6m0s`, `12ms`, `2m59.56s`, `1h2m3s`, `1.5h`,
/// `100µs`, and a bare `0`. A leading `+` is allowed, as in Go. Fractions are exact to the
/// nanosecond (digits below a nanosecond are truncated, as Go does).
///
/// Returns `None` for an empty string, a negative duration, a missing or unknown unit, or a
/// value that does not fit a [`Duration`].
///
/// ```
/// use std::time::Duration;
/// use tollgate_core::duration::parse_go_duration;
///
/// assert_eq!(parse_go_duration("2m59.56s"), Some(Duration::from_millis(179_560)));
/// assert_eq!(parse_go_duration("-1s"), None);
/// ```
pub fn parse_go_duration(s: &str) -> Option<Duration> {
    let mut rest = s.strip_prefix('+').unwrap_or(s).as_bytes();
    if rest == b"0" {
        return Some(Duration::ZERO);
    }
    if rest.is_empty() {
        return None;
    }
    let mut total: u128 = 0;
    while !rest.is_empty() {
        let (int, after_int) = split_digits(rest);
        let (frac, after_frac) = match after_int.split_first() {
            Some((b'.', after_dot)) => split_digits(after_dot),
            _ => (&[][..], after_int),
        };
        if int.is_empty() && frac.is_empty() {
            return None;
        }
        let unit_len = after_frac
            .iter()
            .position(|&b| b == b'.' || b.is_ascii_digit())
            .unwrap_or(after_frac.len());
        let (unit, next) = after_frac.split_at(unit_len);
        total = total.checked_add(scaled(int, frac, unit_nanos(unit)?)?)?;
        rest = next;
    }
    duration_from_nanos(total)
}

/// Parses a `Retry-After` value: whole or fractional seconds (`"2"`, `"1.5"`, `" 30 "`), or an
/// HTTP-date made relative to `now`.
///
/// A date in the past is [`Duration::ZERO`]. Negative numbers, exponents, `NaN`, `inf` and
/// waits longer than a week (no provider means that; it is a broken header) are `None`.
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use tollgate_core::duration::parse_retry_after;
///
/// let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_445_412_480);
/// assert_eq!(parse_retry_after("1.5", now), Some(Duration::from_millis(1500)));
/// assert_eq!(
///     parse_retry_after("Wed, 21 Oct 2015 07:28:30 GMT", now),
///     Some(Duration::from_secs(30)),
/// );
/// ```
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    let wait = match value.as_bytes().first() {
        Some(b) if b.is_ascii_digit() || *b == b'.' => parse_decimal(value, NANOS_PER_SEC as u64)?,
        Some(_) => {
            let date = httpdate::parse_http_date(value).ok()?;
            date.duration_since(now).unwrap_or(Duration::ZERO)
        }
        None => return None,
    };
    plausible_wait(wait)
}

/// Parses an RFC 3339 timestamp (`2025-08-21T12:40:59Z`, `2025-08-21T14:40:59.250+02:00`), as
/// Anthropic sends in `anthropic-ratelimit-*-reset`.
///
/// Returns `None` for anything else, or a time the platform's [`SystemTime`] cannot hold.
pub fn parse_rfc3339(s: &str) -> Option<SystemTime> {
    let at = OffsetDateTime::parse(s.trim(), &Rfc3339).ok()?;
    let nanos = at.unix_timestamp_nanos();
    let offset = duration_from_nanos(nanos.unsigned_abs())?;
    if nanos >= 0 {
        SystemTime::UNIX_EPOCH.checked_add(offset)
    } else {
        SystemTime::UNIX_EPOCH.checked_sub(offset)
    }
}

/// Parses a protobuf `Duration` in its JSON form, as Gemini sends in `RetryInfo.retryDelay`:
/// decimal seconds followed by `s` (`"37s"`, `"1.5s"`, `"0.250s"`).
///
/// Negative durations and anything else are `None`.
pub fn parse_protobuf_duration(s: &str) -> Option<Duration> {
    parse_decimal(s.trim().strip_suffix('s')?, NANOS_PER_SEC as u64)
}

/// Parses a reset value that may be a bare number of seconds (`"1"`, `"0.5"`) or a Go duration
/// (`"1s"`), as Together sends in `x-ratelimit-reset`.
pub(crate) fn parse_reset_lenient(s: &str) -> Option<Duration> {
    let s = s.trim();
    parse_decimal(s, NANOS_PER_SEC as u64).or_else(|| parse_go_duration(s))
}

/// Parses a whole or fractional number of milliseconds (`retry-after-ms: 1500.5`), capped like
/// [`parse_retry_after`].
pub(crate) fn parse_millis(s: &str) -> Option<Duration> {
    parse_decimal(s.trim(), NANOS_PER_MILLI).and_then(plausible_wait)
}

/// Parses `digits[.digits]` counted in units of `unit_nanos`.
pub(crate) fn parse_decimal(s: &str, unit_nanos: u64) -> Option<Duration> {
    let (int, rest) = split_digits(s.as_bytes());
    let (frac, rest) = match rest.split_first() {
        Some((b'.', after_dot)) => split_digits(after_dot),
        _ => (&[][..], rest),
    };
    if !rest.is_empty() || (int.is_empty() && frac.is_empty()) {
        return None;
    }
    duration_from_nanos(scaled(int, frac, unit_nanos)?)
}

/// `wait`, unless it is longer than any provider means.
pub(crate) fn plausible_wait(wait: Duration) -> Option<Duration> {
    (wait <= MAX_WAIT).then_some(wait)
}

fn split_digits(s: &[u8]) -> (&[u8], &[u8]) {
    let end = s
        .iter()
        .position(|b| !b.is_ascii_digit())
        .unwrap_or(s.len());
    s.split_at(end)
}

/// `int.frac` units of `unit` nanoseconds, in nanoseconds, without floating point.
fn scaled(int: &[u8], frac: &[u8], unit: u64) -> Option<u128> {
    let unit = u128::from(unit);
    let whole = int.iter().try_fold(0u128, |acc, &d| {
        acc.checked_mul(10)?.checked_add(u128::from(d - b'0'))
    })?;
    let kept = &frac[..frac.len().min(MAX_FRACTION_DIGITS)];
    let (numerator, denominator) = kept.iter().fold((0u128, 1u128), |(n, d), &digit| {
        (n * 10 + u128::from(digit - b'0'), d * 10)
    });
    whole
        .checked_mul(unit)?
        .checked_add(numerator * unit / denominator)
}

fn unit_nanos(unit: &[u8]) -> Option<u64> {
    Some(match unit {
        b"ns" => 1,
        // `µs` (micro sign) and `μs` (Greek mu) in UTF-8.
        b"us" | b"\xc2\xb5s" | b"\xce\xbcs" => 1_000,
        b"ms" => NANOS_PER_MILLI,
        b"s" => 1_000_000_000,
        b"m" => 60_000_000_000,
        b"h" => 3_600_000_000_000,
        _ => return None,
    })
}

fn duration_from_nanos(nanos: u128) -> Option<Duration> {
    let secs = u64::try_from(nanos / NANOS_PER_SEC).ok()?;
    let subsec = u32::try_from(nanos % NANOS_PER_SEC).ok()?;
    Some(Duration::new(secs, subsec))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(millis: u64) -> Duration {
        Duration::from_millis(millis)
    }

    #[test]
    fn go_durations_are_exact() {
        let cases = [
            ("1s", ms(1_000)),
            ("6m0s", ms(360_000)),
            ("12ms", ms(12)),
            ("2m59.56s", ms(179_560)),
            ("1h2m3s", ms(3_723_000)),
            ("7.66s", ms(7_660)),
            ("0s", Duration::ZERO),
            ("0", Duration::ZERO),
            ("+5s", ms(5_000)),
            ("1.5h", ms(5_400_000)),
            ("100us", Duration::from_micros(100)),
            ("100µs", Duration::from_micros(100)),
            ("100μs", Duration::from_micros(100)),
            ("10ns", Duration::from_nanos(10)),
            (".5s", ms(500)),
            ("5.s", ms(5_000)),
            ("0.1234567891s", Duration::from_nanos(123_456_789)),
            ("1.0000000000000000000001h", Duration::from_secs(3_600)),
        ];
        for (input, want) in cases {
            assert_eq!(parse_go_duration(input), Some(want), "{input}");
        }
    }

    #[test]
    fn go_durations_format_as_go_does() {
        let cases = [
            (Duration::ZERO, "0s"),
            (Duration::from_nanos(10), "10ns"),
            (Duration::from_nanos(1_050), "1.05µs"),
            (ms(12), "12ms"),
            (Duration::from_micros(1_500), "1.5ms"),
            (ms(1_000), "1s"),
            (ms(7_660), "7.66s"),
            (ms(360_000), "6m0s"),
            (ms(179_560), "2m59.56s"),
            (ms(3_723_000), "1h2m3s"),
            (ms(3_600_000), "1h0m0s"),
            (Duration::new(1, 1), "1.000000001s"),
        ];
        for (duration, want) in cases {
            assert_eq!(format_go_duration(duration), want);
            assert_eq!(parse_go_duration(want), Some(duration), "{want}");
        }
    }

    #[test]
    fn go_durations_reject_garbage() {
        // `|`-separated, so that the empty string and spaces stay visible.
        let garbage = "|+|-1s|-0|1|s|.s|1x|1S|1 s| 1s|1s |1.2.3s|18446744073709551616s|\
                       99999999999999999999999999999999999999999h";
        for input in garbage.split('|') {
            assert_eq!(parse_go_duration(input), None, "{input:?}");
        }
        // u64::MAX seconds still fits a Duration; one more hour does not.
        assert_eq!(
            parse_go_duration("18446744073709551615s"),
            Some(Duration::from_secs(u64::MAX))
        );
        assert_eq!(parse_go_duration("18446744073709551615s1h"), None);
    }

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_445_412_480);
        assert_eq!(parse_retry_after("2", now), Some(ms(2_000)));
        assert_eq!(parse_retry_after(" 30 ", now), Some(ms(30_000)));
        assert_eq!(parse_retry_after("0.25", now), Some(ms(250)));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:27:10 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(
            parse_retry_after("Wednesday, 21-Oct-15 07:28:31 GMT", now),
            Some(ms(31_000))
        );
        assert_eq!(parse_retry_after("604800", now), Some(ms(604_800_000)));
        for input in "|-1|+1|1e3|NaN|inf|1.5s|604801|Fri, 31 Dec 9999 23:59:59 GMT".split('|') {
            assert_eq!(parse_retry_after(input, now), None, "{input:?}");
        }
    }

    #[test]
    fn rfc3339_accepts_offsets_and_fractions() {
        let at = |secs: u64, nanos: u32| Some(SystemTime::UNIX_EPOCH + Duration::new(secs, nanos));
        assert_eq!(parse_rfc3339("2025-08-21T12:40:59Z"), at(1_755_780_059, 0));
        assert_eq!(
            parse_rfc3339("2025-08-21T14:40:59.25+02:00"),
            at(1_755_780_059, 250_000_000)
        );
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), at(0, 0));
        assert_eq!(
            parse_rfc3339("1969-12-31T23:59:59Z"),
            SystemTime::UNIX_EPOCH.checked_sub(Duration::from_secs(1))
        );
        for input in "|2025-08-21|2025-08-21 12:40:59|2025-08-21T12:40:59|nope".split('|') {
            assert_eq!(parse_rfc3339(input), None, "{input:?}");
        }
    }

    #[test]
    fn protobuf_and_lenient_resets() {
        assert_eq!(parse_protobuf_duration("37s"), Some(ms(37_000)));
        assert_eq!(parse_protobuf_duration("1.5s"), Some(ms(1_500)));
        assert_eq!(parse_protobuf_duration("0.250s"), Some(ms(250)));
        for input in ["37", "-1s", "s", "1m", "1.5ss"] {
            assert_eq!(parse_protobuf_duration(input), None, "{input:?}");
        }
        assert_eq!(parse_reset_lenient("1"), Some(ms(1_000)));
        assert_eq!(parse_reset_lenient(" 0.5 "), Some(ms(500)));
        assert_eq!(parse_reset_lenient("250ms"), Some(ms(250)));
        assert_eq!(parse_reset_lenient("-1"), None);
        assert_eq!(
            parse_millis("1500.5"),
            Some(Duration::from_micros(1_500_500))
        );
        assert_eq!(parse_millis("-5"), None);
    }
}
