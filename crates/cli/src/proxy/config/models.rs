//! `[[models]]`: the model groups clients name in `model`, each over its deployments.
//!
//! A group is one pool: each deployment × key is a member with its own breaker, limits and
//! concurrency, in the stack of `[stack]`. Its `fallbacks` name other groups, tried in order
//! when the group cannot answer.

use std::collections::{HashMap, HashSet};
use std::num::NonZeroU64;
use std::path::PathBuf;

use serde::Deserialize;
use tollgate::fallback::Triggers;
use tollgate::pool::{AffinityConfig, MemberConfig, Policy, PoolConfig, WhenExhausted};
use tollgate::ratelimit::RateLimitConfig;
use tollgate::{ConfigError, StackConfig};
use tollgate_core::Provider;

use super::invalid;

/// A `[[models]]` entry as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ModelSection {
    name: Option<String>,
    #[serde(default)]
    fallbacks: Vec<String>,
    context_window: Option<u64>,
    #[serde(default)]
    auth: GroupAuth,
    #[serde(default)]
    policy: Policy,
    when_exhausted: Option<WhenExhausted>,
    max_attempts: Option<usize>,
    #[serde(default)]
    resend_unanswered: bool,
    fallback_on: Option<Triggers>,
    #[serde(default)]
    retry_before_fallback: bool,
    affinity: Option<AffinityConfig>,
    #[serde(default)]
    deployments: Vec<DeploymentSection>,
}

/// A `[[models.deployments]]` entry as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DeploymentSection {
    name: Option<String>,
    provider: Option<Provider>,
    base_url: Option<String>,
    key_env: Option<String>,
    keys_env: Option<String>,
    model: Option<String>,
    deployment: Option<String>,
    api_version: Option<String>,
    requests_per_minute: Option<NonZeroU64>,
    tokens_per_minute: Option<NonZeroU64>,
    input_tokens_per_minute: Option<NonZeroU64>,
    output_tokens_per_minute: Option<NonZeroU64>,
    max_concurrent: Option<usize>,
    weight: Option<u32>,
    #[serde(default)]
    tier: u32,
    context_window: Option<u64>,
    ca_file: Option<PathBuf>,
}

/// Whose key a group's calls carry.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum GroupAuth {
    /// The deployments' own keys (`key_env`, `keys_env`).
    #[default]
    Gateway,
    /// The client's own provider key, passed through: a scope (limits, breaker) per key.
    Passthrough,
}

/// Which API a group speaks: the client's path must be of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Api {
    /// OpenAI's (chat completions, responses, embeddings): OpenAI, Azure, and every
    /// OpenAI-compatible provider.
    OpenAi,
    /// Anthropic's Messages API.
    Anthropic,
}

impl Api {
    fn of(provider: Provider) -> Self {
        match provider {
            Provider::Anthropic => Self::Anthropic,
            _ => Self::OpenAi,
        }
    }

    pub(crate) const fn as_str(self) -> &'static str {
        match self {
            Self::OpenAi => "openai",
            Self::Anthropic => "anthropic",
        }
    }
}

/// One group, checked: its stack (the file's `[stack]` with this group's pool) and how the
/// gateway routes to it.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct ModelGroup {
    /// What clients send as `model`.
    pub(crate) name: String,
    /// The groups tried, in order, when this one cannot answer.
    pub(crate) fallbacks: Vec<String>,
    /// Its models' context window: a context-length error falls back only to a larger one.
    pub(crate) context_window: Option<u64>,
    /// Whose key its calls carry.
    pub(crate) auth: GroupAuth,
    /// The API its deployments speak.
    pub(crate) api: Api,
    /// The failures that move a call to the fallbacks.
    pub(crate) fallback_on: Triggers,
    /// The stack of this group: `[stack]` with a pool of its deployments (a passthrough
    /// group's has no pool).
    pub(crate) stack: StackConfig,
    /// A passthrough group's one deployment, which the gateway points requests at itself.
    pub(crate) passthrough: Option<MemberConfig>,
    /// PEM files of extra roots its https deployments are trusted by, each with its field
    /// (`models[0].deployments[1].ca_file`), as written.
    pub(crate) ca_files: Vec<(String, PathBuf)>,
}

impl ModelGroup {
    /// The provider of its first deployment: how its requests are read before a member is
    /// picked (and priced, with budgets).
    pub(crate) fn provider(&self) -> Option<Provider> {
        self.passthrough
            .as_ref()
            .or_else(|| self.stack.pool.as_ref()?.members.first())?
            .provider
    }
}

/// Where a provider's API is when `base_url` is not given.
fn default_base(provider: Provider) -> Option<&'static str> {
    Some(match provider {
        Provider::OpenAi => "https://api.openai.com",
        Provider::Anthropic => "https://api.anthropic.com",
        Provider::Mistral => "https://api.mistral.ai",
        Provider::Groq => "https://api.groq.com/openai",
        Provider::Together => "https://api.together.xyz",
        Provider::Gemini => "https://generativelanguage.googleapis.com",
        _ => return None,
    })
}

/// Checks every group and reads its keys through `env` (so a missing variable stops the
/// gateway at start, named by its field).
pub(super) fn check_models(
    sections: Vec<ModelSection>,
    base: &StackConfig,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<ModelGroup>, ConfigError> {
    let mut groups = Vec::with_capacity(sections.len());
    let mut names: HashMap<String, usize> = HashMap::new();
    for (i, section) in sections.into_iter().enumerate() {
        let group =
            check_group(section, base, env).map_err(|e| e.within(&format!("models[{i}]")))?;
        if let Some(first) = names.insert(group.name.clone(), i) {
            return Err(ConfigError::new(
                format!("models[{i}].name"),
                format!("{:?}", group.name),
                format!("is the name of models[{first}] too; each group needs its own"),
            ));
        }
        groups.push(group);
    }
    for (i, group) in groups.iter().enumerate() {
        for (j, target) in group.fallbacks.iter().enumerate() {
            let field = format!("models[{i}].fallbacks[{j}]");
            let Some(&t) = names.get(target) else {
                return Err(ConfigError::new(
                    field,
                    format!("{target:?}"),
                    format!("is not a group; the groups are {}", list(&groups)),
                ));
            };
            if groups[t].api != group.api {
                return Err(ConfigError::new(
                    field,
                    format!("{target:?}"),
                    format!(
                        "speaks the {} API and {:?} the {} API: a request cannot move between them",
                        groups[t].api.as_str(),
                        group.name,
                        group.api.as_str()
                    ),
                ));
            }
        }
    }
    if let Some(cycle) = fallback_cycle(&groups, &names) {
        let i = names[&cycle[0]];
        return Err(ConfigError::invalid(
            format!("models[{i}].fallbacks"),
            format!(
                "the fallbacks go round in a circle ({}): a group may not fall back to itself",
                cycle.join(" -> ")
            ),
        ));
    }
    Ok(groups)
}

/// The groups' names, for messages.
pub(crate) fn list(groups: &[ModelGroup]) -> String {
    groups
        .iter()
        .map(|g| g.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// A path of fallbacks that comes back to where it started, if there is one.
fn fallback_cycle(groups: &[ModelGroup], names: &HashMap<String, usize>) -> Option<Vec<String>> {
    // 0: not seen, 1: on the current path, 2: done.
    fn visit(
        i: usize,
        groups: &[ModelGroup],
        names: &HashMap<String, usize>,
        state: &mut [u8],
        path: &mut Vec<usize>,
    ) -> Option<Vec<String>> {
        state[i] = 1;
        path.push(i);
        for target in &groups[i].fallbacks {
            let t = names[target];
            if state[t] == 1 {
                let start = path.iter().position(|&p| p == t).unwrap_or(0);
                let mut cycle: Vec<String> = path[start..]
                    .iter()
                    .map(|&p| groups[p].name.clone())
                    .collect();
                cycle.push(groups[t].name.clone());
                return Some(cycle);
            }
            if state[t] == 0
                && let Some(cycle) = visit(t, groups, names, state, path)
            {
                return Some(cycle);
            }
        }
        path.pop();
        state[i] = 2;
        None
    }
    let mut state = vec![0u8; groups.len()];
    for i in 0..groups.len() {
        if state[i] == 0
            && let Some(cycle) = visit(i, groups, names, &mut state, &mut Vec::new())
        {
            return Some(cycle);
        }
    }
    None
}

fn check_group(
    section: ModelSection,
    base: &StackConfig,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<ModelGroup, ConfigError> {
    let name = section
        .name
        .filter(|n| !n.trim().is_empty())
        .ok_or_else(|| invalid("name", "is missing: what clients send as \"model\""))?;
    if name.len() > 256 || name.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(ConfigError::new(
            "name",
            format!("{name:?}"),
            "must be one word of at most 256 characters",
        ));
    }
    if section.deployments.is_empty() {
        return Err(invalid(
            "deployments",
            "a group needs at least one [[models.deployments]]",
        ));
    }
    if section.fallbacks.contains(&name) {
        return Err(invalid(
            "fallbacks",
            format!("{name:?} falls back to itself"),
        ));
    }
    if section.auth == GroupAuth::Passthrough && section.deployments.len() > 1 {
        return Err(invalid(
            "deployments",
            "a passthrough group has one deployment: a client's key belongs to one account",
        ));
    }
    let mut members = Vec::with_capacity(section.deployments.len());
    let mut api = None;
    let mut member_names = HashSet::new();
    let mut ca_files = Vec::new();
    for (i, mut deployment) in section.deployments.into_iter().enumerate() {
        if let Some(file) = deployment.ca_file.take() {
            let https = deployment
                .base_url
                .as_deref()
                .is_none_or(|url| url.starts_with("https://"));
            if file.as_os_str().is_empty() || !https {
                return Err(invalid(
                    &format!("deployments[{i}].ca_file"),
                    if https {
                        "an empty path is not allowed"
                    } else {
                        "is only used with an https base_url"
                    },
                ));
            }
            ca_files.push((format!("deployments[{i}].ca_file"), file));
        }
        let member = check_deployment(deployment, &name, i, section.auth, section.context_window)
            .map_err(|e| e.within(&format!("deployments[{i}]")))?;
        let provider = member.provider.unwrap_or(Provider::OpenAi);
        match api {
            None => api = Some(Api::of(provider)),
            Some(api) if api != Api::of(provider) => {
                return Err(ConfigError::new(
                    format!("deployments[{i}].provider"),
                    provider.as_str(),
                    format!(
                        "speaks another API than the group's first deployment ({}); a group's \
                         deployments all answer the same requests",
                        api.as_str()
                    ),
                ));
            }
            Some(_) => {}
        }
        if !member_names.insert(member.name.clone()) {
            return Err(ConfigError::new(
                format!("deployments[{i}].name"),
                format!("{:?}", member.name),
                "is another deployment's name too; names must differ",
            ));
        }
        members.push(member);
    }
    let limited = members.iter().any(|m| {
        m.requests_per_minute.is_some()
            || m.tokens_per_minute.is_some()
            || m.input_tokens_per_minute.is_some()
            || m.output_tokens_per_minute.is_some()
    });
    let when_exhausted = section
        .when_exhausted
        .unwrap_or(if section.fallbacks.is_empty() {
            WhenExhausted::Wait
        } else {
            // A group with somewhere else to go goes there rather than wait.
            WhenExhausted::Fail
        });
    let mut pool = PoolConfig {
        members,
        policy: section.policy,
        when_exhausted,
        max_attempts: section.max_attempts,
        resend_unanswered: section.resend_unanswered,
        affinity: section.affinity,
    };
    let mut stack = base.clone();
    if !section.fallbacks.is_empty() && !section.retry_before_fallback {
        // The pool already moves a failed call to the group's other members; what none of
        // them could answer goes to the fallbacks now, not after `[stack.retry]`'s waits.
        stack.retry = None;
    }
    if limited && stack.rate_limit.is_none() {
        stack.rate_limit = Some(RateLimitConfig::default());
    }
    let passthrough = section.auth == GroupAuth::Passthrough;
    if passthrough {
        // One deployment, reached with the client's own key: no pool, whose health would
        // mix every client's keys.
        pool.validate()?;
    } else {
        // Reads every key now: a missing variable stops the gateway at start.
        pool.members(env).map_err(|e| rename_members(&e))?;
        stack.pool = Some(pool.clone());
    }
    stack.validate()?;
    let fallback_on = section.fallback_on.unwrap_or_default();
    Ok(ModelGroup {
        name,
        fallbacks: section.fallbacks,
        context_window: section.context_window,
        auth: section.auth,
        api: api.unwrap_or(Api::OpenAi),
        fallback_on,
        passthrough: passthrough.then(|| pool.members.swap_remove(0)),
        ca_files,
        stack,
    })
}

/// A pool error's `members[i]` is the group's `deployments[i]`.
fn rename_members(error: &ConfigError) -> ConfigError {
    let field = error.field();
    let renamed = field
        .strip_prefix("members")
        .map_or_else(|| field.to_owned(), |rest| format!("deployments{rest}"));
    error.clone().with_field(renamed)
}

fn check_deployment(
    section: DeploymentSection,
    group: &str,
    index: usize,
    auth: GroupAuth,
    context_window: Option<u64>,
) -> Result<MemberConfig, ConfigError> {
    let provider = section.provider.ok_or_else(|| {
        invalid(
            "provider",
            "is missing: openai, azure, anthropic, gemini, mistral, groq, together or \
             openai-compatible",
        )
    })?;
    let base_url = match (&section.base_url, default_base(provider)) {
        (Some(url), _) => url.clone(),
        (None, Some(url)) => url.to_owned(),
        (None, None) => {
            return Err(invalid(
                "base_url",
                format!(
                    "is missing: a {} deployment has no default",
                    provider.as_str()
                ),
            ));
        }
    };
    if base_url.contains('@') {
        return Err(invalid(
            "base_url",
            "credentials in the URL are not supported; put the key in key_env",
        ));
    }
    if base_url.trim_end_matches('/').ends_with("/v1") {
        return Err(ConfigError::new(
            "base_url",
            format!("{base_url:?}"),
            "ends in /v1: give the server's root; the client's /v1/... path is appended",
        ));
    }
    if section.model.is_none() && section.deployment.is_none() {
        return Err(invalid(
            "model",
            format!(
                "is missing: the model this deployment asks its provider for (clients send \
                 {group:?})"
            ),
        ));
    }
    if auth == GroupAuth::Passthrough && (section.key_env.is_some() || section.keys_env.is_some()) {
        return Err(invalid(
            if section.key_env.is_some() {
                "key_env"
            } else {
                "keys_env"
            },
            "a passthrough group sends the client's own key: leave the deployment's key out",
        ));
    }
    let name = section
        .name
        .unwrap_or_else(|| format!("{}-{index}", provider.as_str()));
    Ok(MemberConfig {
        name: format!("{group}/{name}"),
        provider: Some(provider),
        base_url: Some(base_url),
        key_env: section.key_env,
        keys_env: section.keys_env,
        auth: None,
        model: section.model,
        deployment: section.deployment,
        api_version: section.api_version,
        tier: section.tier,
        weight: section.weight,
        context_window: section.context_window.or(context_window),
        requests_per_minute: section.requests_per_minute,
        tokens_per_minute: section.tokens_per_minute,
        input_tokens_per_minute: section.input_tokens_per_minute,
        output_tokens_per_minute: section.output_tokens_per_minute,
        max_concurrent: section.max_concurrent,
    })
}

#[cfg(test)]
mod tests {
    use super::super::{Routing, parse};

    fn env(name: &str) -> Option<String> {
        match name {
            "OPENAI_KEYS" => Some("sk-1, sk-2,sk-3".to_owned()),
            "AZURE_KEY" => Some("az-secret".to_owned()),
            "ANTHROPIC_KEY" => Some("sk-ant-secret".to_owned()),
            _ => None,
        }
    }

    const CHAT: &str = r#"
[[models]]
name = "chat"
fallbacks = ["backup"]
[[models.deployments]]
provider = "openai"
base_url = "http://127.0.0.1:9001"
keys_env = "OPENAI_KEYS"
model = "gpt-4o-mini"
requests_per_minute = 200
[[models]]
name = "backup"
context_window = 128000
[[models.deployments]]
provider = "azure"
base_url = "https://contoso.openai.azure.com"
key_env = "AZURE_KEY"
deployment = "gpt-4o-mini-prod"
api_version = "2024-10-21"
input_tokens_per_minute = 1000
"#;

    fn error(text: &str) -> String {
        parse(text, &env).unwrap_err().to_string()
    }

    #[test]
    fn groups_load_with_a_pool_each_and_keys_from_the_environment() {
        let config = parse(CHAT, &env).unwrap();
        let Routing::Models(groups) = &config.routing else {
            panic!("model groups");
        };
        assert_eq!(groups.len(), 2);
        let chat = &groups[0];
        assert_eq!(chat.name, "chat");
        assert_eq!(chat.fallbacks, ["backup"]);
        let pool = chat.stack.pool.as_ref().unwrap();
        assert_eq!(pool.members[0].name, "chat/openai-0");
        assert_eq!(
            pool.when_exhausted,
            tollgate::pool::WhenExhausted::Fail,
            "a group with fallbacks goes there rather than wait"
        );
        assert!(chat.stack.rate_limit.is_some(), "its own limits are kept");
        assert!(
            chat.stack.retry.is_none(),
            "a group with fallbacks goes there rather than retry"
        );
        assert!(groups[1].stack.retry.is_some(), "the last group retries");
        let members = pool.members(&env).unwrap();
        assert_eq!(members.len(), 3, "one member per key");
        let backup = &groups[1];
        assert_eq!(backup.context_window, Some(128_000));
        assert_eq!(
            backup.stack.pool.as_ref().unwrap().when_exhausted,
            tollgate::pool::WhenExhausted::Wait
        );
        let debug = format!("{config:?}");
        for secret in ["sk-1", "az-secret"] {
            assert!(!debug.contains(secret), "{debug}");
        }
    }

    #[test]
    fn the_guides_configs_load() {
        let guide = include_str!("../../../../../docs/gateway.md");
        let env = |name: &str| {
            Some(match name {
                "OPENAI_KEYS" | "ANTHROPIC_KEYS" => "sk-1,sk-2,sk-3".to_owned(),
                _ => format!("sk-{}", name.to_ascii_lowercase()),
            })
        };
        let blocks: Vec<&str> = guide
            .split("```toml\n")
            .skip(1)
            .map(|rest| rest.split("```").next().unwrap())
            .collect();
        assert_eq!(blocks.len(), 7, "every config of the guide");
        for block in &blocks {
            parse(block, &env).unwrap_or_else(|e| panic!("{e}\n{block}"));
        }
        let complete = parse(blocks[6], &env).unwrap();
        let Routing::Models(groups) = &complete.routing else {
            panic!("model groups");
        };
        let names: Vec<&str> = groups.iter().map(|g| g.name.as_str()).collect();
        assert_eq!(
            names,
            ["chat", "chat-large", "claude", "claude-large", "my-openai"]
        );
        let chat = groups[0].stack.pool.as_ref().unwrap();
        assert_eq!(chat.members(&env).unwrap().len(), 4, "three keys and Azure");
        assert!(chat.affinity.is_some());
        assert_eq!(chat.members[0].context_window, Some(128_000), "the group's");
        assert!(groups[4].passthrough.is_some());
        assert_eq!(
            complete.request_timeout,
            std::time::Duration::from_secs(300)
        );
    }

    #[test]
    fn bad_groups_stop_the_gateway_with_one_line_naming_the_field() {
        let deployment = "[[models.deployments]]\nprovider = \"openai\"\nmodel = \"m\"\n";
        let cases = [
            (
                CHAT.replace("provider = \"azure\"", "provider = \"watsonx\""),
                "models.deployments.provider (line 15): unknown provider \"watsonx\"",
            ),
            (
                CHAT.replace("AZURE_KEY", "NOT_SET"),
                "models[1].deployments[0].key_env (line 17): the environment variable \
                 \"NOT_SET\" is not set",
            ),
            (
                CHAT.replace("name = \"backup\"", "name = \"chat\""),
                "models[1].name (line 12): \"chat\" is the name of models[0] too",
            ),
            (
                CHAT.replace("context_window = 128000", "fallbacks = [\"chat\"]"),
                "models[0].fallbacks (line 4): the fallbacks go round in a circle \
                 (chat -> backup -> chat)",
            ),
            (
                CHAT.replace("fallbacks = [\"backup\"]", "fallbacks = [\"spare\"]"),
                "models[0].fallbacks[0] (line 4): \"spare\" is not a group; the groups are \
                 chat, backup",
            ),
            (
                format!(
                    "[[models]]\nname = \"a\"\n{deployment}name = \"x\"\n{deployment}name = \"x\"\n"
                ),
                "models[0].deployments[1].name (line 10): \"a/x\" is another deployment's name",
            ),
            (
                "[[models]]\nname = \"a\"\n".to_owned(),
                "models[0].deployments (line 1): a group needs at least one",
            ),
            (
                "[[models]]\nname = \"a\"\n[[models.deployments]]\nprovider = \"openai\"\n"
                    .to_owned(),
                "models[0].deployments[0].model (line 3): is missing",
            ),
            (
                "[[models]]\nname = \"a\"\n[[models.deployments]]\nprovider = \"azure\"\n\
                 deployment = \"d\"\napi_version = \"v\"\n"
                    .to_owned(),
                "models[0].deployments[0].base_url (line 3): is missing: a azure_openai \
                 deployment has no default",
            ),
            (
                format!(
                    "[[models]]\nname = \"a\"\n{deployment}[[models.deployments]]\n\
                 provider = \"anthropic\"\nmodel = \"c\"\n"
                ),
                "models[0].deployments[1].provider (line 7): anthropic speaks another API",
            ),
            (
                format!(
                    "[[models]]\nname = \"a\"\nauth = \"passthrough\"\n{deployment}key_env = \
                     \"AZURE_KEY\"\n"
                ),
                "models[0].deployments[0].key_env (line 7): a passthrough group sends the \
                 client's own key",
            ),
            (
                format!(
                    "[upstream]\nbase_url = \"http://x\"\n[[models]]\nname = \"a\"\n{deployment}"
                ),
                "models (line 3): set [upstream] (one server for every model) or [[models]]",
            ),
            (
                format!(
                    "[[models]]\nname = \"a\"\n{deployment}base_url = \"http://x\"\nca_file = \"ca.pem\"\n"
                ),
                "models[0].deployments[0].ca_file (line 7): is only used with an https base_url",
            ),
            (
                format!("[[models]]\nname = \"two words\"\n{deployment}"),
                "models[0].name (line 2): \"two words\" must be one word",
            ),
        ];
        for (text, want) in cases {
            let got = error(&text);
            assert!(
                got.starts_with(want),
                "{text}\n  got:  {got}\n  want: {want}"
            );
            assert!(!got.contains('\n'), "one line: {got}");
            for secret in ["sk-1", "az-secret"] {
                assert!(!got.contains(secret), "{got}");
            }
        }
    }
}
