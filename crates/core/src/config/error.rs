//! [`ConfigError`]: a setting that cannot be used, named by its full path.

use std::borrow::Cow;
use std::fmt;

/// A setting that cannot be used: which field (its full path, such as
/// `stack.circuit_breaker.failure_threshold`), the value, why, and the line of the file it was
/// read from when known.
///
/// ```
/// use tollgate_core::config::ConfigError;
///
/// let error = ConfigError::new("failure_threshold", 0, "must be at least 1")
///     .within("circuit_breaker")
///     .at_line(Some(7));
/// assert_eq!(
///     error.to_string(),
///     "circuit_breaker.failure_threshold (line 7): 0 must be at least 1"
/// );
/// assert_eq!(error.field(), "circuit_breaker.failure_threshold");
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    field: Cow<'static, str>,
    value: Option<String>,
    reason: Cow<'static, str>,
    line: Option<usize>,
    file: Option<String>,
}

impl ConfigError {
    /// `field` set to `value` is refused because of `reason` ("must be at least 1").
    pub fn new(
        field: impl Into<Cow<'static, str>>,
        value: impl fmt::Display,
        reason: impl Into<Cow<'static, str>>,
    ) -> Self {
        Self {
            field: field.into(),
            value: Some(value.to_string()),
            reason: reason.into(),
            line: None,
            file: None,
        }
    }

    /// `field` is refused because of `reason`, which says what is wrong with its value (or
    /// the value must not be repeated: a key).
    pub fn invalid(
        field: impl Into<Cow<'static, str>>,
        reason: impl Into<Cow<'static, str>>,
    ) -> Self {
        Self {
            field: field.into(),
            value: None,
            reason: reason.into(),
            line: None,
            file: None,
        }
    }

    /// The same error for a field inside `section` (`"stack"` turns `max_retries` into
    /// `stack.max_retries`).
    #[must_use]
    pub fn within(mut self, section: &str) -> Self {
        if !section.is_empty() {
            self.field = if self.field.is_empty() {
                Cow::Owned(section.to_owned())
            } else {
                Cow::Owned(format!("{section}.{}", self.field))
            };
        }
        self
    }

    /// The same error, for `field` (the key as it was written, when it was read under
    /// another name).
    #[must_use]
    pub fn with_field(mut self, field: impl Into<Cow<'static, str>>) -> Self {
        self.field = field.into();
        self
    }

    /// The same error at `line` of the file (a line already known is kept).
    #[must_use]
    pub fn at_line(mut self, line: Option<usize>) -> Self {
        self.line = self.line.or(line);
        self
    }

    /// The same error, located in the TOML `text` it was read from by its field's path
    /// ([`line_of`](super::line_of)).
    #[must_use]
    pub fn located_in(self, text: &str) -> Self {
        let line = super::line_of(text, &self.field);
        self.at_line(line)
    }

    /// The same error in the file at `path` (shown first).
    #[must_use]
    pub fn in_file(mut self, path: &std::path::Path) -> Self {
        self.file = Some(path.display().to_string());
        self
    }

    /// The full path of the offending field.
    pub fn field(&self) -> &str {
        &self.field
    }

    /// The refused value, when it may be shown.
    pub fn value(&self) -> Option<&str> {
        self.value.as_deref()
    }

    /// Why the value is refused, and what is allowed.
    pub fn reason(&self) -> &str {
        &self.reason
    }

    /// The line of the file the field was read from, when known.
    pub fn line(&self) -> Option<usize> {
        self.line
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(file) = &self.file {
            write!(f, "{file}: ")?;
        }
        f.write_str(if self.field.is_empty() {
            "config"
        } else {
            &self.field
        })?;
        if let Some(line) = self.line {
            write!(f, " (line {line})")?;
        }
        match &self.value {
            Some(value) => write!(f, ": {value} {}", self.reason),
            None => write!(f, ": {}", self.reason),
        }
    }
}

impl std::error::Error for ConfigError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_names_the_full_path_the_value_and_the_line() {
        let error = ConfigError::invalid("", "expected a table").within("stack");
        assert_eq!(error.to_string(), "stack: expected a table");
        let error = ConfigError::invalid("", "expected `=`")
            .at_line(Some(2))
            .in_file(std::path::Path::new("tollgate.toml"));
        assert_eq!(
            error.to_string(),
            "tollgate.toml: config (line 2): expected `=`"
        );
        let error = ConfigError::new("jitter", 1.5, "must be in [0, 1)")
            .within("circuit_breaker")
            .within("stack")
            .at_line(Some(3))
            .at_line(Some(9));
        assert_eq!(
            error.to_string(),
            "stack.circuit_breaker.jitter (line 3): 1.5 must be in [0, 1)"
        );
        assert_eq!(error.value(), Some("1.5"));
        assert_eq!(error.reason(), "must be in [0, 1)");
    }
}
