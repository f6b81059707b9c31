//! [`BudgetConfig`]: the budget layer's settings as data, for config files.

use std::collections::HashSet;
use std::time::Duration;

use tollgate_core::Provider;
use tollgate_core::config::ConfigError;

use crate::Usd;
use crate::budgets::BudgetScope;
use crate::cost::{DEFAULT_INPUT_MARGIN_PERCENT, DEFAULT_OUTPUT_TOKENS, WorstCase};
use crate::ledger::Limits;
use crate::price::{PriceTable, UnknownModel, model_price};
use crate::window::{Window, parse_utc_offset};

/// The budget layer's settings: the budgets, the prices, and how a call's worst case is
/// reckoned. With the `serde` feature it reads from TOML or JSON:
///
/// ```toml
/// default_output_tokens = 4096   # per choice, for a call without max_tokens
/// input_margin_percent = 10      # added to the input-token estimate
///
/// [[budgets]]
/// name = "acme-daily"
/// scope = { tenant = "acme" }    # or "overall" (the default), or { model = "gpt-4o" }
/// usd = 25.0                     # and/or tokens = 5_000_000
/// window = "day"                 # or "month"; or rolling = "24h"
/// utc_offset = "+02:00"          # calendar windows start at midnight here (default UTC)
/// soft_threshold = 0.8           # warn (log and metric) once past 80 %
///
/// [prices]
/// unknown_model = "free"         # or "refuse"
/// models = [
///   { provider = "openai", model = "my-finetune", input = 3.0, cached_input = 1.5, output = 12.0 },
/// ]
/// ```
#[derive(Clone, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize, serde::Serialize))]
#[cfg_attr(feature = "serde", serde(default, deny_unknown_fields))]
pub struct BudgetConfig {
    /// The budgets; a call counts in every one whose scope it matches.
    pub budgets: Vec<BudgetSpec>,
    /// Prices beyond (or instead of) the shipped ones.
    pub prices: PricesConfig,
    /// Output tokens assumed per choice for a call without an output cap
    /// ([`DEFAULT_OUTPUT_TOKENS`]).
    pub default_output_tokens: u32,
    /// Percent added to the input-token estimate in a worst case
    /// ([`DEFAULT_INPUT_MARGIN_PERCENT`]).
    pub input_margin_percent: u32,
}

impl Default for BudgetConfig {
    fn default() -> Self {
        Self {
            budgets: Vec::new(),
            prices: PricesConfig::default(),
            default_output_tokens: DEFAULT_OUTPUT_TOKENS,
            input_margin_percent: DEFAULT_INPUT_MARGIN_PERCENT,
        }
    }
}

/// A calendar window.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize, serde::Serialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum CalendarWindow {
    /// From midnight to midnight.
    Day,
    /// From the first of the month to the first of the next.
    Month,
}

/// One budget.
#[derive(Clone, Debug, Default, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize, serde::Serialize))]
#[cfg_attr(feature = "serde", serde(deny_unknown_fields))]
pub struct BudgetSpec {
    /// Its name: in refusals, logs, metrics and the store (unique; keep it when the
    /// budget's limit changes, or its spend starts again from nothing).
    pub name: String,
    /// Which calls it counts (default: every call).
    #[cfg_attr(feature = "serde", serde(default))]
    pub scope: BudgetScope,
    /// At most this many dollars per window.
    #[cfg_attr(feature = "serde", serde(default))]
    pub usd: Option<f64>,
    /// At most this many tokens (input and output) per window.
    #[cfg_attr(feature = "serde", serde(default))]
    pub tokens: Option<u64>,
    /// A calendar window; exclusive with `rolling`.
    #[cfg_attr(feature = "serde", serde(default))]
    pub window: Option<CalendarWindow>,
    /// A rolling window (`"24h"`, `"7d"`): the period just behind now; at least a minute.
    #[cfg_attr(
        feature = "serde",
        serde(default, with = "tollgate_core::config::duration::option")
    )]
    pub rolling: Option<Duration>,
    /// Where a calendar day starts: `"+02:00"`, `"-05:00"` (default UTC).
    #[cfg_attr(feature = "serde", serde(default))]
    pub utc_offset: Option<String>,
    /// The share of a limit (between 0 and 1) past which a warning is logged and counted,
    /// once per crossing.
    #[cfg_attr(feature = "serde", serde(default))]
    pub soft_threshold: Option<f64>,
}

/// Prices beyond the shipped list.
#[derive(Clone, Debug, Default, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize, serde::Serialize))]
#[cfg_attr(feature = "serde", serde(default, deny_unknown_fields))]
pub struct PricesConfig {
    /// Prices that replace a shipped one (same provider and model) or add a model.
    pub models: Vec<ModelPrice>,
    /// What a model without a price costs (default: free, with a warning once per model).
    pub unknown_model: UnknownModel,
    /// Whether to start from nothing instead of the shipped list (default false).
    pub no_shipped: bool,
}

/// The price of one model, in USD per million tokens.
#[derive(Clone, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize, serde::Serialize))]
#[cfg_attr(feature = "serde", serde(deny_unknown_fields))]
pub struct ModelPrice {
    /// The provider (`"openai"`, `"anthropic"`, `"gemini"`, `"mistral"`, `"azure_openai"`, ...).
    pub provider: Provider,
    /// The model, undated (`"gpt-4o"` also prices `gpt-4o-2024-08-06`).
    pub model: String,
    /// An input token.
    pub input: f64,
    /// An input token read from the prompt cache (default: `input`).
    #[cfg_attr(feature = "serde", serde(default))]
    pub cached_input: Option<f64>,
    /// An input token written to the prompt cache (default: `input`).
    #[cfg_attr(feature = "serde", serde(default))]
    pub cache_write: Option<f64>,
    /// An output token.
    pub output: f64,
    /// The Batch API's discount, a share between 0 and 1 (default 0).
    #[cfg_attr(feature = "serde", serde(default))]
    pub batch_discount: Option<f64>,
}

impl PricesConfig {
    /// The price table these settings describe.
    ///
    /// # Errors
    ///
    /// A price that is negative or not a number, by field (`models[2].output`).
    pub fn table(&self) -> Result<PriceTable, ConfigError> {
        let mut table = if self.no_shipped {
            PriceTable::empty()
        } else {
            PriceTable::shipped()
        };
        for (i, entry) in self.models.iter().enumerate() {
            let within = format!("models[{i}]");
            if entry.model.is_empty() {
                return Err(ConfigError::invalid("model", "must not be empty").within(&within));
            }
            let price = model_price(
                entry.input,
                entry.cached_input,
                entry.cache_write,
                entry.output,
                entry.batch_discount.unwrap_or(0.0),
            )
            .map_err(|(field, value)| {
                let why = if field == "batch_discount" {
                    "must be between 0 and 1"
                } else {
                    "must be a price of at least 0 (USD per million tokens)"
                };
                ConfigError::new(field, value, why).within(&within)
            })?;
            table = table.with(entry.provider, &entry.model, price);
        }
        Ok(table.with_unknown_model(self.unknown_model))
    }
}

/// A budget as the layer enforces it.
pub(crate) struct Checked {
    pub(crate) name: String,
    pub(crate) scope: BudgetScope,
    pub(crate) limits: Limits,
    pub(crate) window: Window,
    pub(crate) soft_threshold_ppm: Option<u32>,
}

impl BudgetSpec {
    pub(crate) fn check(&self) -> Result<Checked, ConfigError> {
        if self.name.trim().is_empty() {
            return Err(ConfigError::invalid("name", "must not be empty"));
        }
        let usd = self
            .usd
            .map(|usd| {
                Usd::from_dollars(usd).ok_or_else(|| {
                    ConfigError::new("usd", usd, "must be an amount of at least 0 dollars")
                })
            })
            .transpose()?;
        if usd.is_none() && self.tokens.is_none() {
            return Err(ConfigError::invalid(
                "usd",
                "is missing: a budget limits dollars (usd), tokens, or both",
            ));
        }
        let offset = match &self.utc_offset {
            None => 0,
            Some(_) if self.rolling.is_some() => {
                return Err(ConfigError::invalid(
                    "utc_offset",
                    "applies to calendar windows only (window = \"day\" or \"month\")",
                ));
            }
            Some(text) => parse_utc_offset(text).ok_or_else(|| {
                ConfigError::new(
                    "utc_offset",
                    text,
                    "must be an offset such as \"+02:00\" or \"-05:30\"",
                )
            })?,
        };
        let window = match (self.window, self.rolling) {
            (Some(_), Some(_)) => {
                return Err(ConfigError::invalid(
                    "rolling",
                    "is set with window: a budget has a calendar window or a rolling one",
                ));
            }
            (None, None) => {
                return Err(ConfigError::invalid(
                    "window",
                    "is missing: set window = \"day\" or \"month\", or rolling = \"24h\"",
                ));
            }
            (Some(CalendarWindow::Day), None) => Window::Day { offset },
            (Some(CalendarWindow::Month), None) => Window::Month { offset },
            (None, Some(period)) if period < Duration::from_secs(60) => {
                return Err(ConfigError::new(
                    "rolling",
                    tollgate_core::config::duration::format(period),
                    "must be at least a minute",
                ));
            }
            (None, Some(period)) => Window::Rolling(period),
        };
        let soft_threshold_ppm = self
            .soft_threshold
            .map(|share| {
                if share > 0.0 && share < 1.0 {
                    Ok((share * 1e6).round() as u32)
                } else {
                    Err(ConfigError::new(
                        "soft_threshold",
                        share,
                        "must be a share between 0 and 1 (0.8: 80 %)",
                    ))
                }
            })
            .transpose()?;
        match &self.scope {
            BudgetScope::Tenant(name) | BudgetScope::Model(name) if name.is_empty() => {
                return Err(ConfigError::invalid(
                    "scope",
                    "must name a tenant or a model",
                ));
            }
            _ => {}
        }
        Ok(Checked {
            name: self.name.clone(),
            scope: self.scope.clone(),
            limits: Limits {
                usd,
                tokens: self.tokens,
            },
            window,
            soft_threshold_ppm,
        })
    }
}

impl BudgetConfig {
    /// Checks every value is usable.
    ///
    /// # Errors
    ///
    /// The first that is not, by its path (`budgets[1].utc_offset`, `prices.models[0].input`).
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.checked().map(|_| ())
    }

    pub(crate) fn checked(&self) -> Result<(Vec<Checked>, PriceTable, WorstCase), ConfigError> {
        let mut names = HashSet::new();
        let mut budgets = Vec::with_capacity(self.budgets.len());
        for (i, spec) in self.budgets.iter().enumerate() {
            let within = format!("budgets[{i}]");
            let checked = spec.check().map_err(|e| e.within(&within))?;
            if !names.insert(checked.name.clone()) {
                return Err(ConfigError::new(
                    "name",
                    &checked.name,
                    "names another budget too: names must be unique",
                )
                .within(&within));
            }
            budgets.push(checked);
        }
        let prices = self.prices.table().map_err(|e| e.within("prices"))?;
        let worst = WorstCase {
            default_output_tokens: self.default_output_tokens,
            input_margin_percent: self.input_margin_percent,
        };
        Ok((budgets, prices, worst))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> BudgetSpec {
        BudgetSpec {
            name: "daily".into(),
            usd: Some(25.0),
            window: Some(CalendarWindow::Day),
            ..BudgetSpec::default()
        }
    }

    #[test]
    fn bad_values_name_their_field() {
        let error = |spec: BudgetSpec| {
            BudgetConfig {
                budgets: vec![self::spec(), spec],
                ..BudgetConfig::default()
            }
            .validate()
            .unwrap_err()
            .to_string()
        };
        assert_eq!(
            error(BudgetSpec {
                name: "b".into(),
                usd: Some(-1.0),
                ..spec()
            }),
            "budgets[1].usd: -1 must be an amount of at least 0 dollars"
        );
        assert_eq!(
            error(spec()),
            "budgets[1].name: daily names another budget too: names must be unique"
        );
        assert_eq!(
            error(BudgetSpec {
                name: "b".into(),
                utc_offset: Some("2".into()),
                ..spec()
            }),
            "budgets[1].utc_offset: 2 must be an offset such as \"+02:00\" or \"-05:30\""
        );
        assert!(
            error(BudgetSpec {
                name: "b".into(),
                window: None,
                ..spec()
            })
            .starts_with("budgets[1].window: is missing")
        );
        assert!(
            error(BudgetSpec {
                name: "b".into(),
                soft_threshold: Some(1.5),
                ..spec()
            })
            .starts_with("budgets[1].soft_threshold: 1.5")
        );
        assert!(
            error(BudgetSpec {
                name: "b".into(),
                usd: None,
                ..spec()
            })
            .starts_with("budgets[1].usd: is missing")
        );
        let prices = BudgetConfig {
            prices: PricesConfig {
                models: vec![ModelPrice {
                    provider: Provider::OpenAi,
                    model: "x".into(),
                    input: 1.0,
                    cached_input: None,
                    cache_write: None,
                    output: f64::NAN,
                    batch_discount: None,
                }],
                ..PricesConfig::default()
            },
            ..BudgetConfig::default()
        };
        assert!(
            prices
                .validate()
                .unwrap_err()
                .to_string()
                .starts_with("prices.models[0].output: NaN")
        );
    }

    #[cfg(feature = "serde")]
    #[test]
    fn reads_from_toml() {
        let config: BudgetConfig = toml::from_str(
            r#"
            default_output_tokens = 1000
            [[budgets]]
            name = "acme-daily"
            scope = { tenant = "acme" }
            usd = 25.0
            window = "day"
            utc_offset = "+02:00"
            soft_threshold = 0.8
            [[budgets]]
            name = "everyone"
            tokens = 1000000
            rolling = "24h"
            [prices]
            unknown_model = "refuse"
            models = [{ provider = "openai", model = "my-finetune", input = 3.0, output = 12.0 }]
            "#,
        )
        .unwrap();
        config.validate().unwrap();
        assert_eq!(config.budgets[0].scope, BudgetScope::Tenant("acme".into()));
        assert_eq!(config.budgets[1].scope, BudgetScope::Overall);
        assert_eq!(config.budgets[1].rolling, Some(Duration::from_secs(86_400)));
        let table = config.prices.table().unwrap();
        assert!(table.lookup(Provider::OpenAi, "my-finetune").is_some());
        assert!(toml::from_str::<BudgetConfig>("[[budgets]]\nname = \"x\"\nusdd = 1").is_err());
    }
}
