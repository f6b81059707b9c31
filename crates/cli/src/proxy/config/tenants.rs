//! `[[tenants]]`: named clients of the gateway, each with its own key, limits, share of the
//! calls in flight, priority and the model groups it may call.

use std::collections::HashSet;
use std::num::NonZeroU64;

use serde::Deserialize;
use tollgate::ConfigError;
use tollgate::concurrency::Priority;
use tollgate_core::Secret;

use super::invalid;

/// A `[[tenants]]` entry as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct TenantSection {
    name: Option<String>,
    key_env: Option<String>,
    requests_per_minute: Option<NonZeroU64>,
    tokens_per_minute: Option<NonZeroU64>,
    max_in_flight: Option<usize>,
    #[serde(default)]
    priority: TenantPriority,
    models: Option<Vec<String>>,
    budget_usd_per_day: Option<f64>,
    budget_usd_per_month: Option<f64>,
}

/// Which share of the stack's capacity a tenant's calls draw on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum TenantPriority {
    /// A user is waiting (default).
    #[default]
    Interactive,
    /// Background work: shed first under overload, and kept to the batch partition of the
    /// concurrency limit when it has one.
    Batch,
}

impl TenantPriority {
    pub(crate) const fn as_str(self) -> &'static str {
        match self {
            Self::Interactive => "interactive",
            Self::Batch => "batch",
        }
    }

    /// The request extension the stack's layers read.
    pub(crate) const fn extension(self) -> Priority {
        match self {
            Self::Interactive => Priority::Interactive,
            Self::Batch => Priority::Batch,
        }
    }
}

/// One tenant, checked.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Tenant {
    /// Its name in reports, logs and metrics labels (never its key).
    pub(crate) name: String,
    /// Its own requests per minute.
    pub(crate) requests_per_minute: Option<NonZeroU64>,
    /// Its own tokens per minute (prompt estimate and `max_tokens`, reconciled from usage).
    pub(crate) tokens_per_minute: Option<NonZeroU64>,
    /// Its calls in flight at most (default: the keys' share, `server.max_in_flight_per_key`).
    pub(crate) max_in_flight: Option<usize>,
    pub(crate) priority: TenantPriority,
    /// The model groups (or, with `[upstream]`, the models) it may call; all when `None`.
    pub(crate) models: Option<Vec<String>>,
    /// Dollars it may spend per calendar day (UTC).
    pub(crate) budget_usd_per_day: Option<f64>,
    /// Dollars it may spend per calendar month (UTC).
    pub(crate) budget_usd_per_month: Option<f64>,
}

impl Tenant {
    /// Whether it may call `model`.
    pub(crate) fn may_call(&self, model: &str) -> bool {
        self.models
            .as_ref()
            .is_none_or(|models| models.iter().any(|m| m == model))
    }

    /// Its budgets, as the budget layer reads them: `tenant-<name>-day` and
    /// `tenant-<name>-month`.
    pub(crate) fn budgets(&self) -> Vec<tollgate::budget::BudgetSpec> {
        use tollgate::budget::{BudgetScope, BudgetSpec, CalendarWindow};
        [
            ("day", CalendarWindow::Day, self.budget_usd_per_day),
            ("month", CalendarWindow::Month, self.budget_usd_per_month),
        ]
        .into_iter()
        .filter_map(|(name, window, usd)| {
            Some(BudgetSpec {
                name: format!("tenant-{}-{name}", self.name),
                scope: BudgetScope::Tenant(self.name.clone()),
                usd: Some(usd?),
                window: Some(window),
                ..BudgetSpec::default()
            })
        })
        .collect()
    }

    /// Whether it has limits of its own per minute.
    pub(crate) fn limited(&self) -> bool {
        self.requests_per_minute.is_some() || self.tokens_per_minute.is_some()
    }
}

/// Checks every tenant and reads its key through `env`; `groups` are the model groups' names
/// (empty with `[upstream]`, where `models` names models).
pub(super) fn check_tenants(
    sections: Vec<TenantSection>,
    groups: &[&str],
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<(Tenant, Secret)>, ConfigError> {
    let mut names = HashSet::new();
    let mut tenants = Vec::with_capacity(sections.len());
    for (i, section) in sections.into_iter().enumerate() {
        let field = |key: &str| format!("tenants[{i}].{key}");
        let name = section
            .name
            .filter(|n| !n.trim().is_empty())
            .ok_or_else(|| invalid(&field("name"), "is missing: a name for reports and metrics"))?;
        if name.len() > 64
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            return Err(ConfigError::new(
                field("name"),
                format!("{name:?}"),
                "must be at most 64 letters, digits, '-', '_' or '.' (it is a metrics label)",
            ));
        }
        if !names.insert(name.clone()) {
            return Err(ConfigError::new(
                field("name"),
                format!("{name:?}"),
                "is another tenant's name too; names must differ",
            ));
        }
        let variable = section.key_env.ok_or_else(|| {
            invalid(
                &field("key_env"),
                "is missing: the variable holding its gateway key",
            )
        })?;
        let key = env(&variable)
            .map(|k| k.trim().to_owned())
            .filter(|k| !k.is_empty())
            .ok_or_else(|| {
                invalid(
                    &field("key_env"),
                    format!("the environment variable {variable:?} is not set (or is empty)"),
                )
            })?;
        for (key, usd) in [
            ("budget_usd_per_day", section.budget_usd_per_day),
            ("budget_usd_per_month", section.budget_usd_per_month),
        ] {
            if let Some(usd) = usd.filter(|usd| !(usd.is_finite() && *usd > 0.0)) {
                return Err(ConfigError::new(
                    field(key),
                    usd,
                    "must be a positive amount",
                ));
            }
        }
        if section.max_in_flight == Some(0) {
            return Err(ConfigError::new(
                field("max_in_flight"),
                0,
                "must be at least 1",
            ));
        }
        if let Some(models) = &section.models {
            for (j, model) in models.iter().enumerate() {
                if !groups.is_empty() && !groups.contains(&model.as_str()) {
                    return Err(ConfigError::new(
                        field(&format!("models[{j}]")),
                        format!("{model:?}"),
                        format!("is not a model group; the groups are {}", groups.join(", ")),
                    ));
                }
            }
        }
        tenants.push((
            Tenant {
                name,
                requests_per_minute: section.requests_per_minute,
                tokens_per_minute: section.tokens_per_minute,
                max_in_flight: section.max_in_flight,
                priority: section.priority,
                models: section.models,
                budget_usd_per_day: section.budget_usd_per_day,
                budget_usd_per_month: section.budget_usd_per_month,
            },
            Secret::new(key),
        ));
    }
    Ok(tenants)
}

#[cfg(test)]
mod tests {
    use super::super::parse;

    fn env(name: &str) -> Option<String> {
        match name {
            "TG_KEY_SEARCH" => Some("tg-search-secret".to_owned()),
            "TG_KEY_BATCH" => Some("tg-batch-secret".to_owned()),
            "OPENAI_KEY" => Some("sk-openai".to_owned()),
            _ => None,
        }
    }

    const GROUPS: &str = "[[models]]\nname = \"chat\"\n[[models.deployments]]\n\
                          provider = \"openai\"\nkey_env = \"OPENAI_KEY\"\nmodel = \"m\"\n";

    #[test]
    fn the_issues_shape_loads_with_each_key_its_own_share() {
        let text = format!(
            "[server]\napi_keys = [\"tg-anon\"]\n\
             [[tenants]]\nname = \"search-team\"\nkey_env = \"TG_KEY_SEARCH\"\n\
             requests_per_minute = 600\npriority = \"interactive\"\nmodels = [\"chat\"]\n\
             [[tenants]]\nname = \"batch\"\nkey_env = \"TG_KEY_BATCH\"\nmax_in_flight = 3\n\
             priority = \"batch\"\n{GROUPS}"
        );
        let config = parse(&text, &env).unwrap();
        assert_eq!(config.tenants.len(), 2);
        assert_eq!(config.clients.find(b"tg-search-secret"), Some(1));
        assert_eq!(config.clients.find(b"tg-batch-secret"), Some(2));
        let search = &config.tenants[0];
        assert!(search.may_call("chat") && !search.may_call("other"));
        assert_eq!(search.requests_per_minute.map(|n| n.get()), Some(600));
        // Three keys: each has half the stack's slots, the batch tenant its own 3.
        let share = config.limits.max_in_flight_per_key;
        assert_eq!(config.limits.max_in_flight, [share, share, Some(3)]);
        let debug = format!("{config:?}");
        assert!(!debug.contains("tg-search-secret"), "{debug}");
    }

    #[test]
    fn bad_tenants_are_named_by_their_field() {
        let tenant = |body: &str| format!("[[tenants]]\n{body}\n{GROUPS}");
        let cases = [
            (
                tenant("key_env = \"TG_KEY_SEARCH\""),
                "tenants[0].name (line 1): is missing",
            ),
            (
                tenant("name = \"a b\"\nkey_env = \"TG_KEY_SEARCH\""),
                "tenants[0].name (line 2): \"a b\" must be at most 64 letters",
            ),
            (
                tenant("name = \"a\"\nkey_env = \"NOT_SET\""),
                "tenants[0].key_env (line 3): the environment variable \"NOT_SET\" is not set",
            ),
            (
                tenant("name = \"a\"\nkey_env = \"TG_KEY_SEARCH\"\nmodels = [\"chat\", \"gpt-5\"]"),
                "tenants[0].models[1] (line 4): \"gpt-5\" is not a model group; the groups are chat",
            ),
            (
                tenant("name = \"a\"\nkey_env = \"TG_KEY_SEARCH\"\nmax_in_flight = 0"),
                "tenants[0].max_in_flight (line 4): 0 must be at least 1",
            ),
            (
                format!(
                    "[[tenants]]\nname = \"a\"\nkey_env = \"TG_KEY_SEARCH\"\n\
                     [[tenants]]\nname = \"a\"\nkey_env = \"TG_KEY_BATCH\"\n{GROUPS}"
                ),
                "tenants[1].name (line 5): \"a\" is another tenant's name too",
            ),
            (
                format!(
                    "[[tenants]]\nname = \"a\"\nkey_env = \"TG_KEY_SEARCH\"\n\
                     [[tenants]]\nname = \"b\"\nkey_env = \"TG_KEY_SEARCH\"\n{GROUPS}"
                ),
                "tenants[1].key_env (line 6): its key is also another tenant's",
            ),
            (
                tenant("name = \"a\"\nkey_env = \"TG_KEY_SEARCH\"\npriority = \"urgent\""),
                "tenants.priority (line 4): unknown variant `urgent`",
            ),
        ];
        for (text, want) in cases {
            let got = parse(&text, &env).unwrap_err().to_string();
            assert!(
                got.starts_with(want),
                "{text}\n  got:  {got}\n  want: {want}"
            );
            assert!(!got.contains("tg-search-secret"), "{got}");
        }
    }
}
