//! [`PoolConfig`]: a pool's members and how it picks among them, as data for config files.

use std::fmt;
use std::num::NonZeroU64;

use tollgate_core::config::ConfigError;
use tollgate_core::{CredentialId, Provider, Secret};

use crate::affinity::AffinityConfig;
use crate::builder::PoolBuilder;
use crate::failover::WhenExhausted;
use crate::member::{Auth, Member, Rewrite};
use crate::select::Policy;

/// A pool's settings: its members (keys, deployments, providers), how one is picked, and what
/// a request does when none may serve. Keys are never written here: each member names the
/// environment variable that holds its key (`key_env`), or several (`keys_env`,
/// comma-separated, one member per key).
///
/// With the `serde` feature it reads from TOML or JSON:
///
/// ```toml
/// policy = "healthiest"          # or "least_loaded", "weighted", "ordered"
/// [[members]]
/// name = "openai-a"
/// provider = "openai"
/// base_url = "https://api.openai.com"
/// key_env = "OPENAI_KEY_A"
/// [[members]]
/// name = "azure-eastus"
/// provider = "azure"
/// base_url = "https://contoso.openai.azure.com"
/// key_env = "AZURE_KEY"
/// deployment = "gpt-4o"
/// api_version = "2024-10-21"
/// tier = 1                       # serves only when no tier 0 member can
/// [affinity]                     # keep a session or a prompt prefix on one member
/// header = "x-session-id"
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize, serde::Serialize))]
#[cfg_attr(feature = "serde", serde(default, deny_unknown_fields))]
pub struct PoolConfig {
    /// The members, in order (the order `ordered` picks in).
    pub members: Vec<MemberConfig>,
    /// How a member is picked among those that may serve.
    pub policy: Policy,
    /// What a request does when no member may serve it.
    pub when_exhausted: WhenExhausted,
    /// Members tried per call at most (default: every member).
    #[cfg_attr(feature = "serde", serde(skip_serializing_if = "Option::is_none"))]
    pub max_attempts: Option<usize>,
    /// Whether a billed call whose connection broke after it may have been sent moves to
    /// another member (it may be billed twice).
    pub resend_unanswered: bool,
    /// Keeps requests that share a session or a prompt prefix on one member, for the
    /// provider's prompt cache (default: off).
    #[cfg_attr(feature = "serde", serde(skip_serializing_if = "Option::is_none"))]
    pub affinity: Option<AffinityConfig>,
}

/// One member as written: a key (or several) of one deployment of one provider.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize, serde::Serialize))]
#[cfg_attr(feature = "serde", serde(default, deny_unknown_fields))]
pub struct MemberConfig {
    /// Its name in reports, logs and metrics (never a key).
    pub name: String,
    /// The provider (`openai`, `azure`, `anthropic`, `gemini`, `mistral`, `groq`,
    /// `together`, `llama`, `openai_compatible`); decides how its key is sent and how its
    /// answers are read.
    pub provider: Option<Provider>,
    /// Where it is (`https://api.openai.com`); the request's own host when unset.
    #[cfg_attr(feature = "serde", serde(skip_serializing_if = "Option::is_none"))]
    pub base_url: Option<String>,
    /// The environment variable holding its key.
    #[cfg_attr(feature = "serde", serde(skip_serializing_if = "Option::is_none"))]
    pub key_env: Option<String>,
    /// The environment variable holding several keys of one account, comma-separated: one
    /// member per key, named `name-1`, `name-2`, ...
    #[cfg_attr(feature = "serde", serde(skip_serializing_if = "Option::is_none"))]
    pub keys_env: Option<String>,
    /// How its key is sent (default: the provider's way).
    #[cfg_attr(feature = "serde", serde(skip_serializing_if = "Option::is_none"))]
    pub auth: Option<Auth>,
    /// The model its requests ask for, in place of the caller's (a fallback model).
    #[cfg_attr(feature = "serde", serde(skip_serializing_if = "Option::is_none"))]
    pub model: Option<String>,
    /// An Azure OpenAI deployment (with `api_version`).
    #[cfg_attr(feature = "serde", serde(skip_serializing_if = "Option::is_none"))]
    pub deployment: Option<String>,
    /// The Azure OpenAI API version of `deployment`.
    #[cfg_attr(feature = "serde", serde(skip_serializing_if = "Option::is_none"))]
    pub api_version: Option<String>,
    /// Its tier: tier 1 serves only when no tier 0 member can, and so on.
    pub tier: u32,
    /// Its share under the `weighted` policy (default 1).
    pub weight: Option<u32>,
    /// Its model's context window in tokens: a context-length error moves only to members
    /// with a larger one.
    #[cfg_attr(feature = "serde", serde(skip_serializing_if = "Option::is_none"))]
    pub context_window: Option<u64>,
    /// Its own requests per minute (applied by the stack's rate limiter to this member).
    #[cfg_attr(feature = "serde", serde(skip_serializing_if = "Option::is_none"))]
    pub requests_per_minute: Option<NonZeroU64>,
    /// Its own tokens per minute (applied by the stack's rate limiter to this member).
    #[cfg_attr(feature = "serde", serde(skip_serializing_if = "Option::is_none"))]
    pub tokens_per_minute: Option<NonZeroU64>,
    /// Its own input tokens per minute (Anthropic's ITPM; applied by the stack's rate limiter
    /// to this member).
    #[cfg_attr(feature = "serde", serde(skip_serializing_if = "Option::is_none"))]
    pub input_tokens_per_minute: Option<NonZeroU64>,
    /// Its own output tokens per minute (Anthropic's OTPM; applied by the stack's rate limiter
    /// to this member).
    #[cfg_attr(feature = "serde", serde(skip_serializing_if = "Option::is_none"))]
    pub output_tokens_per_minute: Option<NonZeroU64>,
    /// Its own calls in flight at most (applied by the stack's concurrency limit).
    #[cfg_attr(feature = "serde", serde(skip_serializing_if = "Option::is_none"))]
    pub max_concurrent: Option<usize>,
}

/// A member built from its settings, with what the stack around it needs to know.
#[derive(Clone)]
pub struct ConfiguredMember {
    /// The member, its key inside.
    pub member: Member,
    /// The id its key's scopes carry (for limits of its own), when it has a key.
    pub credential: Option<CredentialId>,
    /// Its settings as written.
    pub settings: MemberConfig,
}

impl fmt::Debug for ConfiguredMember {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConfiguredMember")
            .field("member", &self.member)
            .field("credential", &self.credential)
            .finish_non_exhaustive()
    }
}

fn auth_of(provider: Provider) -> Auth {
    match provider {
        Provider::Anthropic => Auth::XApiKey,
        Provider::AzureOpenAi => Auth::ApiKey,
        Provider::Gemini => Auth::GoogApiKey,
        _ => Auth::Bearer,
    }
}

impl PoolConfig {
    /// Checks every value is usable (the keys are read later, by [`members`](Self::members)).
    ///
    /// # Errors
    ///
    /// The first that is not, by its path (`members[1].base_url`).
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.members.is_empty() {
            return Err(ConfigError::invalid(
                "members",
                "a pool needs at least one member",
            ));
        }
        if self.max_attempts == Some(0) {
            return Err(ConfigError::new("max_attempts", 0, "must be at least 1"));
        }
        if let Some(affinity) = &self.affinity {
            affinity.validate().map_err(|e| e.within("affinity"))?;
        }
        let mut names = std::collections::HashSet::new();
        for (i, member) in self.members.iter().enumerate() {
            member
                .validate()
                .map_err(|e| e.within(&format!("members[{i}]")))?;
            if !names.insert(member.name.as_str()) {
                return Err(ConfigError::new(
                    format!("members[{i}].name"),
                    format!("{:?}", member.name),
                    "is another member's name too; names must differ",
                ));
            }
        }
        Ok(())
    }

    /// The members, their keys read through `env` (an environment variable's value by name).
    ///
    /// # Errors
    ///
    /// An unusable setting, or a key's variable unset or empty (named, never its value).
    pub fn members(
        &self,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Vec<ConfiguredMember>, ConfigError> {
        self.validate()?;
        let mut built = Vec::new();
        for (i, settings) in self.members.iter().enumerate() {
            let field = format!("members[{i}]");
            let read = |name: &str, key: &str| {
                env(name).filter(|v| !v.trim().is_empty()).ok_or_else(|| {
                    ConfigError::invalid(
                        format!("{field}.{key}"),
                        format!("the environment variable {name:?} is not set (or is empty)"),
                    )
                })
            };
            let keys: Vec<(String, Option<Secret>)> = match (&settings.key_env, &settings.keys_env)
            {
                (Some(name), None) => vec![(
                    settings.name.clone(),
                    Some(Secret::new(read(name, "key_env")?.trim())),
                )],
                (None, Some(name)) => read(name, "keys_env")?
                    .split(',')
                    .map(str::trim)
                    .filter(|k| !k.is_empty())
                    .enumerate()
                    .map(|(n, key)| {
                        (
                            format!("{}-{}", settings.name, n + 1),
                            Some(Secret::new(key)),
                        )
                    })
                    .collect(),
                _ => vec![(settings.name.clone(), None)],
            };
            for (name, key) in keys {
                built.push(settings.build(&name, key));
            }
        }
        Ok(built)
    }

    /// These settings on a pool builder.
    ///
    /// # Panics
    ///
    /// When `affinity` is not valid ([`validate`](Self::validate) says why).
    pub fn apply<S>(&self, builder: PoolBuilder<S>) -> PoolBuilder<S> {
        let mut builder = builder
            .policy(self.policy)
            .when_exhausted(self.when_exhausted)
            .resend_unanswered(self.resend_unanswered);
        if let Some(attempts) = self.max_attempts {
            builder = builder.max_attempts(attempts);
        }
        if let Some(affinity) = &self.affinity {
            builder = builder.affinity(affinity.clone());
        }
        builder
    }
}

impl MemberConfig {
    /// Checks every value is usable.
    ///
    /// # Errors
    ///
    /// The first that is not, by field name.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.name.trim().is_empty() {
            return Err(ConfigError::invalid(
                "name",
                "is missing; every member needs a name",
            ));
        }
        if self.key_env.is_some() && self.keys_env.is_some() {
            return Err(ConfigError::invalid(
                "keys_env",
                "set key_env (one key) or keys_env (several), not both",
            ));
        }
        if let Some(base) = &self.base_url {
            let uri: http::Uri = base.parse().map_err(|e| {
                ConfigError::new(
                    "base_url",
                    format!("{base:?}"),
                    format!("is not a URL ({e})"),
                )
            })?;
            if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.authority().is_none() {
                return Err(ConfigError::new(
                    "base_url",
                    format!("{base:?}"),
                    "needs http:// or https:// and a host",
                ));
            }
        }
        if self.deployment.is_some() != self.api_version.is_some() {
            return Err(ConfigError::invalid(
                if self.deployment.is_some() {
                    "api_version"
                } else {
                    "deployment"
                },
                "an Azure deployment needs both deployment and api_version",
            ));
        }
        if self.weight == Some(0) {
            return Err(ConfigError::new("weight", 0, "must be at least 1"));
        }
        if self.max_concurrent == Some(0) {
            return Err(ConfigError::new("max_concurrent", 0, "must be at least 1"));
        }
        Ok(())
    }

    fn build(&self, name: &str, key: Option<Secret>) -> ConfiguredMember {
        let provider = self.provider;
        let mut rewrite = Rewrite::default();
        if let Some(provider) = provider {
            rewrite = rewrite.provider(provider);
        }
        let credential = key
            .as_ref()
            .map(|key| CredentialId::from_secret(key.expose().as_bytes()));
        if let Some(key) = key {
            let auth = self
                .auth
                .unwrap_or_else(|| provider.map_or(Auth::Bearer, auth_of));
            rewrite = rewrite.key(key, auth);
        }
        if let Some(base) = &self.base_url {
            rewrite = rewrite.base(base);
        }
        if let Some(model) = &self.model {
            rewrite = rewrite.model(model);
        }
        if let (Some(deployment), Some(version)) = (&self.deployment, &self.api_version) {
            rewrite = rewrite.azure(deployment, version);
        }
        let mut member = Member::with_adapter(name, rewrite)
            .tier(self.tier)
            .weight(self.weight.unwrap_or(1));
        if let Some(window) = self.context_window {
            member = member.context_window(window);
        }
        ConfiguredMember {
            member,
            credential,
            settings: self.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(name: &str) -> MemberConfig {
        MemberConfig {
            name: name.into(),
            ..MemberConfig::default()
        }
    }

    #[test]
    fn keys_come_from_the_environment_and_several_keys_make_several_members() {
        let config = PoolConfig {
            members: vec![
                MemberConfig {
                    key_env: Some("ONE".into()),
                    provider: Some(Provider::Anthropic),
                    ..member("a")
                },
                MemberConfig {
                    keys_env: Some("MANY".into()),
                    ..member("b")
                },
            ],
            ..PoolConfig::default()
        };
        let env = |name: &str| match name {
            "ONE" => Some("sk-one".to_owned()),
            "MANY" => Some("sk-x, sk-y,".to_owned()),
            _ => None,
        };
        let built = config.members(&env).unwrap();
        let names: Vec<&str> = built.iter().map(|m| m.member.name()).collect();
        assert_eq!(names, ["a", "b-1", "b-2"]);
        assert_eq!(
            built[0].credential,
            Some(CredentialId::from_secret(b"sk-one"))
        );
        let debug = format!("{built:?}");
        assert!(!debug.contains("sk-"), "{debug}");
        let error = config.members(&|_| None).unwrap_err();
        assert_eq!(
            error.to_string(),
            "members[0].key_env: the environment variable \"ONE\" is not set (or is empty)"
        );
    }

    #[test]
    fn bad_members_are_named_by_their_path() {
        let config = PoolConfig {
            members: vec![
                member("a"),
                MemberConfig {
                    base_url: Some("ftp://x".into()),
                    ..member("b")
                },
            ],
            ..PoolConfig::default()
        };
        assert_eq!(
            config.validate().unwrap_err().field(),
            "members[1].base_url"
        );
        let twice = PoolConfig {
            members: vec![member("a"), member("a")],
            ..PoolConfig::default()
        };
        assert_eq!(twice.validate().unwrap_err().field(), "members[1].name");
        assert_eq!(
            PoolConfig::default().validate().unwrap_err().field(),
            "members"
        );
    }

    #[test]
    fn bad_affinity_settings_are_named_by_their_path() {
        let with = |affinity: AffinityConfig| PoolConfig {
            members: vec![member("a")],
            affinity: Some(affinity),
            ..PoolConfig::default()
        };
        assert_eq!(with(AffinityConfig::default()).validate(), Ok(()));
        for (affinity, field) in [
            (
                AffinityConfig {
                    header: Some("x session".into()),
                    ..AffinityConfig::default()
                },
                "affinity.header",
            ),
            (
                AffinityConfig {
                    prefix_bytes: 64,
                    ..AffinityConfig::default()
                },
                "affinity.prefix_bytes",
            ),
            (
                AffinityConfig {
                    max_load_percent: 99,
                    ..AffinityConfig::default()
                },
                "affinity.max_load_percent",
            ),
        ] {
            assert_eq!(with(affinity).validate().unwrap_err().field(), field);
        }
    }

    #[cfg(feature = "serde")]
    #[test]
    fn affinity_reads_with_its_defaults_and_round_trips() {
        let config: PoolConfig = toml::from_str(
            r#"
            [[members]]
            name = "a"
            [affinity]
            header = "x-session-id"
            "#,
        )
        .unwrap();
        let affinity = config.affinity.clone().unwrap();
        assert_eq!(affinity.header.as_deref(), Some("x-session-id"));
        assert!(affinity.user);
        assert_eq!(
            (affinity.prefix_bytes, affinity.max_load_percent),
            (2048, 150)
        );
        let json = serde_json::to_value(&config).unwrap();
        assert_eq!(serde_json::from_value::<PoolConfig>(json).unwrap(), config);
        // Off unless written, and not written when off.
        let off = PoolConfig {
            members: vec![member("a")],
            ..PoolConfig::default()
        };
        assert!(
            serde_json::to_value(&off)
                .unwrap()
                .get("affinity")
                .is_none()
        );
        let unknown = toml::from_str::<PoolConfig>("[affinity]\nheaders = \"x\"\n").unwrap_err();
        assert!(
            unknown.to_string().contains("unknown field `headers`"),
            "{unknown}"
        );
    }
}
