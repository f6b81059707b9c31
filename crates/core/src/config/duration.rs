//! Durations in config files: seconds (`30`, `0.25`) or text (`"30s"`, `"250ms"`, `"1h 30m"`).
//!
//! For serde's `with` attribute: `#[serde(with = "tollgate_core::config::duration")]` on a
//! `Duration`, `#[serde(with = "tollgate_core::config::duration::option")]` on an
//! `Option<Duration>`. Written back, a duration is text (`"1m 30s"`), which reads back
//! exactly.
//!
//! ```
//! use std::time::Duration;
//!
//! #[derive(serde::Deserialize)]
//! struct Settings {
//!     #[serde(with = "tollgate_core::config::duration")]
//!     wait: Duration,
//! }
//!
//! let text: Settings = serde_json::from_str(r#"{"wait": "250ms"}"#).unwrap();
//! let seconds: Settings = serde_json::from_str(r#"{"wait": 0.25}"#).unwrap();
//! assert_eq!(text.wait, Duration::from_millis(250));
//! assert_eq!(seconds.wait, text.wait);
//! ```

use std::time::Duration;

use serde::{Deserialize, Deserializer, Serializer};

/// Seconds or text, as written.
#[derive(Deserialize)]
#[serde(untagged)]
enum Written {
    Seconds(f64),
    Text(String),
}

impl Written {
    fn duration<E: serde::de::Error>(self) -> Result<Duration, E> {
        match self {
            // Negative, NaN, infinite, or more seconds than a Duration holds (1e20).
            Self::Seconds(s) => Duration::try_from_secs_f64(s).map_err(|_| {
                E::custom(format!(
                    "{s} is not a duration; use seconds (30) or text (\"30s\")"
                ))
            }),
            Self::Text(text) => parse(&text).map_err(E::custom),
        }
    }
}

/// Reads `"30s"`, `"250ms"`, `"1h 30m"`, or a number of seconds as text (`"30"`).
///
/// # Errors
///
/// Says what was written and what is allowed.
pub fn parse(text: &str) -> Result<Duration, String> {
    let trimmed = text.trim();
    if let Ok(seconds) = trimmed.parse::<f64>() {
        return Duration::try_from_secs_f64(seconds)
            .map_err(|_| format!("{text:?} is not a duration; use seconds (30) or \"30s\""));
    }
    humantime::parse_duration(trimmed)
        .map_err(|e| format!("{text:?} is not a duration ({e}); use \"30s\", \"2m\" or seconds"))
}

/// Writes a duration as text that [`parse`] reads back exactly (`"1m 30s"`, `"0s"`).
pub fn format(duration: Duration) -> String {
    humantime::format_duration(duration).to_string()
}

/// Deserializes a duration (for `#[serde(with = ...)]`).
///
/// # Errors
///
/// Neither seconds nor a duration's text.
pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
    Written::deserialize(deserializer)?.duration()
}

/// Serializes a duration as text (for `#[serde(with = ...)]`).
///
/// # Errors
///
/// The serializer's.
pub fn serialize<S: Serializer>(duration: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&format(*duration))
}

/// The same for an `Option<Duration>`: absent or null is `None`.
pub mod option {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    use super::Written;

    /// Deserializes an optional duration.
    ///
    /// # Errors
    ///
    /// Neither seconds nor a duration's text.
    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<Duration>, D::Error> {
        Option::<Written>::deserialize(deserializer)?
            .map(Written::duration)
            .transpose()
    }

    /// Serializes an optional duration as text, or none.
    ///
    /// # Errors
    ///
    /// The serializer's.
    pub fn serialize<S: Serializer>(
        duration: &Option<Duration>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match duration {
            Some(duration) => serializer.serialize_some(&super::format(*duration)),
            None => serializer.serialize_none(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Serialize, Deserialize, PartialEq)]
    struct Both {
        #[serde(with = "super")]
        plain: Duration,
        #[serde(with = "super::option", default)]
        maybe: Option<Duration>,
    }

    #[test]
    fn seconds_and_text_read_the_same_and_write_back_exactly() {
        let read: Both = serde_json::from_str(r#"{"plain": 90, "maybe": "1m 30s"}"#).unwrap();
        assert_eq!(read.plain, Duration::from_secs(90));
        assert_eq!(read.maybe, Some(read.plain));
        let written = serde_json::to_string(&read).unwrap();
        assert_eq!(written, r#"{"plain":"1m 30s","maybe":"1m 30s"}"#);
        assert_eq!(serde_json::from_str::<Both>(&written).unwrap(), read);
        let none: Both = serde_json::from_str(r#"{"plain": "250ms"}"#).unwrap();
        assert_eq!(none.maybe, None);
        for fraction in [Duration::from_micros(1_500), Duration::from_nanos(7)] {
            assert_eq!(parse(&format(fraction)).unwrap(), fraction);
        }
    }

    #[test]
    fn what_is_not_a_duration_says_so() {
        for bad in [
            r#"{"plain": -1}"#,
            r#"{"plain": 1e20}"#,
            r#"{"plain": "soon"}"#,
        ] {
            let error = serde_json::from_str::<Both>(bad).unwrap_err().to_string();
            assert!(error.contains("is not a duration"), "{error}");
        }
        assert_eq!(parse(" 30 "), Ok(Duration::from_secs(30)));
    }
}
