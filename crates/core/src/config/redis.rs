//! [`RedisSettings`]: where a fleet keeps what its replicas share.

use std::time::Duration;

use super::ConfigError;

/// How long a Redis command may take before Redis counts as unreachable.
pub const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_millis(250);

/// Where a fleet keeps what its replicas share (rate limits, the cache's second level,
/// budgets): a Redis (or Valkey) server, and what a replica does while it cannot reach it.
///
/// The URL is written in the config (`url`, with `rediss://` for TLS, `redis+cluster://` or
/// `rediss+cluster://` for any node of a Redis Cluster) and the password comes
/// from the environment (`password_env`); or the whole URL comes from the environment
/// (`url_env`). A password is never written in a config file: a `url` that holds one is
/// refused.
///
/// ```toml
/// url = "redis://redis.internal:6379/0"
/// password_env = "REDIS_PASSWORD"    # optional
/// local_share = 0.34                 # of every limit, while Redis is unreachable (3 replicas)
/// fail_open = true                   # false: refuse while Redis is unreachable
/// command_timeout = "250ms"
/// ```
#[derive(Clone, Debug, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct RedisSettings {
    /// The server's URL without a password: `redis://host:6379/0`, `rediss://` for TLS,
    /// `redis+unix:///path`; `redis+cluster://host:6379` (`rediss+cluster://` for TLS) for any
    /// node of a Redis Cluster, from which the others are found. Exclusive with `url_env`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// The environment variable holding the whole URL, password included. Exclusive with `url`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url_env: Option<String>,
    /// The environment variable holding the password of `url` (and its user, if the URL names
    /// one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_env: Option<String>,
    /// The share of each limit a replica keeps to on its own while Redis is unreachable, from
    /// more than 0 to 1 (default 1: set `1 / replicas`, so the fleet as a whole stays within
    /// the limit).
    #[serde(default = "one")]
    pub local_share: f64,
    /// While Redis is unreachable, keep serving within the local share (true, the default), or
    /// refuse what needs the shared state (false).
    #[serde(default = "yes")]
    pub fail_open: bool,
    /// How long one command may take before Redis counts as unreachable (a hung server as a
    /// refused one): 250 ms by default.
    #[serde(default = "command_timeout", with = "super::duration")]
    pub command_timeout: Duration,
}

fn one() -> f64 {
    1.0
}

fn yes() -> bool {
    true
}

fn command_timeout() -> Duration {
    DEFAULT_COMMAND_TIMEOUT
}

impl RedisSettings {
    /// Settings for the server whose URL is in the environment variable `name`, with the
    /// defaults otherwise.
    pub fn from_url_env(name: impl Into<String>) -> Self {
        Self {
            url_env: Some(name.into()),
            ..Self::from_url(None::<String>)
        }
    }

    /// Settings for the server at `url` (no password in it), with the defaults otherwise.
    pub fn from_url(url: impl Into<Option<String>>) -> Self {
        Self {
            url: url.into(),
            url_env: None,
            password_env: None,
            local_share: 1.0,
            fail_open: true,
            command_timeout: DEFAULT_COMMAND_TIMEOUT,
        }
    }

    /// Checks the settings are usable.
    ///
    /// # Errors
    ///
    /// Neither or both of `url` and `url_env`, a password written in `url`, an empty variable
    /// name, a share outside (0, 1], a zero timeout.
    pub fn validate(&self) -> Result<(), ConfigError> {
        match (&self.url, &self.url_env) {
            (None, None) => {
                return Err(ConfigError::invalid(
                    "url",
                    "is missing: set url (redis://host:6379) or url_env (the environment \
                     variable holding the URL)",
                ));
            }
            (Some(_), Some(_)) => {
                return Err(ConfigError::invalid(
                    "url_env",
                    "is set with url: name the server one way",
                ));
            }
            (Some(url), None) => check_url(url)?,
            (None, Some(name)) => check_name("url_env", name)?,
        }
        if let Some(name) = &self.password_env {
            check_name("password_env", name)?;
            if self.url.is_none() {
                return Err(ConfigError::invalid(
                    "password_env",
                    "is set with url_env: the URL in the environment carries its password",
                ));
            }
        }
        if !(self.local_share > 0.0 && self.local_share <= 1.0) {
            return Err(ConfigError::new(
                "local_share",
                self.local_share.to_string(),
                "must be more than 0 and at most 1 (1 / the number of replicas)",
            ));
        }
        if self.command_timeout.is_zero() {
            return Err(ConfigError::new(
                "command_timeout",
                "0s",
                "must be positive (250ms is the default)",
            ));
        }
        Ok(())
    }

    /// The URL to connect to, read through `env`, with the password put in. It may hold a
    /// secret: hand it to the client and keep it nowhere else.
    ///
    /// # Errors
    ///
    /// A variable it names is not set, by field.
    pub fn resolve(
        &self,
        env: &(dyn Fn(&str) -> Option<String> + Sync),
    ) -> Result<String, ConfigError> {
        let read = |field: &'static str, name: &str, what: &str| {
            env(name).filter(|v| !v.is_empty()).ok_or_else(|| {
                ConfigError::invalid(
                    field,
                    format!("the environment variable {name:?} is not set; it holds {what}"),
                )
            })
        };
        let url = match (&self.url, &self.url_env) {
            (Some(url), _) => url.clone(),
            (None, Some(name)) => read("url_env", name, "the Redis URL")?,
            (None, None) => return Err(ConfigError::invalid("url", "is missing")),
        };
        match &self.password_env {
            Some(name) => Ok(with_password(
                &url,
                &read("password_env", name, "the Redis password")?,
            )),
            None => Ok(url),
        }
    }

    /// Where the server is named, for messages: the URL (which holds no password), or the
    /// variable holding it.
    pub fn describe(&self) -> String {
        match (&self.url, &self.url_env) {
            (Some(url), _) => url.clone(),
            (None, Some(name)) => format!("the URL in {name}"),
            (None, None) => "no URL".to_owned(),
        }
    }
}

fn check_name(field: &'static str, name: &str) -> Result<(), ConfigError> {
    if name.trim().is_empty() {
        return Err(ConfigError::invalid(
            field,
            "is empty; name the environment variable",
        ));
    }
    Ok(())
}

fn check_url(url: &str) -> Result<(), ConfigError> {
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err(ConfigError::invalid(
            "url",
            "is not a URL: write redis://host:6379, rediss://host:6380 for TLS",
        ));
    };
    let base = scheme.strip_suffix("+cluster").unwrap_or(scheme);
    let cluster = base != scheme;
    if !matches!(base, "redis" | "rediss" | "valkey" | "valkeys")
        && (cluster || !matches!(scheme, "redis+unix" | "unix"))
    {
        return Err(ConfigError::new(
            "url",
            scheme,
            "is not a Redis URL scheme: use redis://, rediss:// (TLS), redis+unix://, or \
             redis+cluster:// (rediss+cluster:// for TLS) for a Redis Cluster",
        ));
    }
    if userinfo(rest).is_some_and(|user| user.contains(':')) {
        // Not echoed: the value is a secret.
        return Err(ConfigError::invalid(
            "url",
            "holds a password, and a config file is no place for one: put the password in an \
             environment variable and name it in password_env",
        ));
    }
    Ok(())
}

/// The `user:password` part of what follows `scheme://`, if any.
fn userinfo(rest: &str) -> Option<&str> {
    let authority = rest.split(['/', '?', '#']).next().unwrap_or(rest);
    authority.rsplit_once('@').map(|(user, _)| user)
}

/// `url` with `password` (percent-encoded) in its user part.
fn with_password(url: &str, password: &str) -> String {
    let encoded: String = password
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    match userinfo(rest) {
        Some(user) => {
            let host = &rest[user.len() + 1..];
            format!("{scheme}://{user}:{encoded}@{host}")
        }
        None => format!("{scheme}://:{encoded}@{rest}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "PW" => Some("p@ss w/rd".into()),
            "URL" => Some("redis://:secret@h:6379/2".into()),
            _ => None,
        }
    }

    fn settings(toml_text: &str) -> RedisSettings {
        toml::from_str(toml_text).unwrap()
    }

    #[test]
    fn the_password_comes_from_the_environment_encoded() {
        let s = settings("url = \"redis://h:6379/0\"\npassword_env = \"PW\"");
        s.validate().unwrap();
        assert_eq!(
            s.resolve(&env).unwrap(),
            "redis://:p%40ss%20w%2Frd@h:6379/0"
        );
        let user = settings("url = \"rediss://app@h:6380\"\npassword_env = \"PW\"");
        assert_eq!(
            user.resolve(&env).unwrap(),
            "rediss://app:p%40ss%20w%2Frd@h:6380"
        );
        let whole = settings("url_env = \"URL\"");
        assert_eq!(whole.resolve(&env).unwrap(), "redis://:secret@h:6379/2");
        assert_eq!(whole.describe(), "the URL in URL");
        assert_eq!((whole.local_share, whole.fail_open), (1.0, true));
        assert_eq!(whole.command_timeout, DEFAULT_COMMAND_TIMEOUT);
    }

    #[test]
    fn bad_settings_name_their_field() {
        let field = |text: &str| settings(text).validate().unwrap_err().to_string();
        assert!(field("").contains("url"), "{}", field(""));
        let leaked = field("url = \"redis://:hunter2@h:6379\"");
        assert!(
            leaked.contains("password_env") && !leaked.contains("hunter2"),
            "{leaked}"
        );
        assert!(field("url = \"http://h\"").contains("scheme"));
        assert!(field("url = \"redis://h\"\nurl_env = \"U\"").contains("url_env"));
        assert!(field("url_env = \"U\"\npassword_env = \"P\"").contains("password_env"));
        assert!(field("url = \"redis://h\"\nlocal_share = 0.0").contains("local_share"));
        assert!(field("url = \"redis://h\"\nlocal_share = 1.5").contains("local_share"));
        assert!(field("url = \"redis://h\"\ncommand_timeout = \"0s\"").contains("command_timeout"));
        let unset = settings("url = \"redis://h\"\npassword_env = \"NOPE\"")
            .resolve(&env)
            .unwrap_err()
            .to_string();
        assert!(
            unset.contains("password_env") && unset.contains("NOPE"),
            "{unset}"
        );
        // A user name alone is no secret.
        settings("url = \"redis://app@h\"").validate().unwrap();
        settings("url = \"rediss+cluster://app@h:7000\"")
            .validate()
            .unwrap();
        assert!(field("url = \"redis+unix+cluster:///s\"").contains("redis+cluster://"));
    }
}
