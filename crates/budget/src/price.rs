//! What a token costs: the [`PriceTable`] of (provider, model) → [`Price`].
//!
//! The table ships with the list prices of the common OpenAI, Anthropic, Gemini and Mistral
//! models (`prices.toml` in this crate, with the date it was checked), and the configuration
//! overrides or extends it ([`PricesConfig`](crate::PricesConfig)). Shipped prices are a
//! convenience, not a promise: the operator verifies them against the contract they pay by.
//!
//! # Which entry a model gets
//!
//! The request's model as the provider spells it, then its undated name: a dated snapshot
//! (`gpt-4o-mini-2024-07-18`, `claude-3-5-haiku-20241022`, Mistral's `mistral-large-2411`) or
//! an alias (`claude-3-5-haiku-latest`, `mistral-small-latest`) is priced as the model it
//! names, and Gemini's `models/` prefix is dropped. Lookups are per provider: the same name
//! under two providers may cost differently. An Azure OpenAI deployment is priced under
//! `azure_openai` first, then as the OpenAI model of the same name.
//!
//! # A model that is not in the table
//!
//! [`UnknownModel::Free`] (the default) counts it at no cost and logs a warning once per model;
//! its tokens still count against token limits. [`UnknownModel::Refuse`] refuses the call
//! before it is sent, with [`UnpricedModel`].

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

use tollgate_core::{Provider, Usage};

use crate::Usd;

/// The shipped price list (see the file for the date it was checked).
pub const SHIPPED_PRICES: &str = include_str!("prices.toml");

/// How many distinct unknown models are warned about (one warning each); past it, silently.
const MAX_WARNED: usize = 1_024;

/// The price of one token of each kind, for one model. Amounts are per token, in exact
/// picodollars ([`Usd::per_million_tokens`] converts from a price list).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Price {
    /// An input token not read from the prompt cache.
    pub input: Usd,
    /// An input token read from the provider's prompt cache.
    pub cached_input: Usd,
    /// An input token written to the prompt cache (Anthropic bills them above input).
    pub cache_write: Usd,
    /// An output token (reasoning tokens included).
    pub output: Usd,
    /// The share the provider's Batch API takes off, in parts per million (500,000: half).
    pub batch_discount_ppm: u32,
}

impl Price {
    /// A price from a price list's USD per million tokens; cached input and cache writes cost
    /// as much as input until set. `None` for a negative or non-finite figure.
    pub fn per_million(input: f64, output: f64) -> Option<Self> {
        let input = Usd::per_million_tokens(input)?;
        Some(Self {
            input,
            cached_input: input,
            cache_write: input,
            output: Usd::per_million_tokens(output)?,
            batch_discount_ppm: 0,
        })
    }

    /// The same with cached input at `cached_input` USD per million tokens.
    pub fn with_cached_input(mut self, cached_input: f64) -> Option<Self> {
        self.cached_input = Usd::per_million_tokens(cached_input)?;
        Some(self)
    }

    /// The cost of a call that used `usage`: cache reads at the cached price, cache writes at
    /// theirs, the rest of the input at the input price, and the output. Exact.
    pub fn cost(&self, usage: &Usage) -> Usd {
        let cached = usage.cache_read_input_tokens.min(usage.input_tokens);
        let written = usage
            .cache_creation_input_tokens
            .min(usage.input_tokens - cached);
        let plain = usage.input_tokens - cached - written;
        self.input * plain
            + self.cached_input * cached
            + self.cache_write * written
            + self.output * usage.output_tokens
    }

    /// The price through the provider's Batch API: every rate less the batch discount.
    #[must_use]
    pub fn batch(&self) -> Self {
        let keep = 1_000_000 - self.batch_discount_ppm.min(1_000_000);
        Self {
            input: self.input.scaled_ppm(keep),
            cached_input: self.cached_input.scaled_ppm(keep),
            cache_write: self.cache_write.scaled_ppm(keep),
            output: self.output.scaled_ppm(keep),
            batch_discount_ppm: 0,
        }
    }
}

/// What a model that has no price costs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize, serde::Serialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum UnknownModel {
    /// Nothing, with a warning logged once per model (the default).
    #[default]
    Free,
    /// The call is refused before it is sent ([`UnpricedModel`]).
    Refuse,
}

/// A call to a model the price table does not know, refused because the configuration says
/// `unknown_model = "refuse"`; nothing was sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnpricedModel {
    /// The provider the call was for.
    pub provider: Provider,
    /// The model, as the request named it (empty when it named none).
    pub model: Arc<str>,
}

impl fmt::Display for UnpricedModel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "no price is known for {} model `{}`, and unpriced models are refused",
            self.provider, self.model
        )
    }
}

impl std::error::Error for UnpricedModel {}

/// The unknown models already warned about.
type Warned = HashSet<(Provider, Box<str>)>;

/// The prices of models per provider; see the [module docs](self).
///
/// # Clone
///
/// Clones share the record of which unknown models were already warned about.
#[derive(Clone, Debug)]
pub struct PriceTable {
    models: HashMap<Provider, HashMap<Box<str>, Price>>,
    unknown: UnknownModel,
    checked: Option<Arc<str>>,
    warned: Arc<Mutex<Warned>>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Shipped {
    checked: String,
    models: Vec<ShippedModel>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ShippedModel {
    provider: Provider,
    model: String,
    input: f64,
    cached_input: Option<f64>,
    cache_write: Option<f64>,
    output: f64,
    #[serde(default)]
    batch_discount: f64,
}

impl PriceTable {
    /// A table without a price.
    pub fn empty() -> Self {
        Self {
            models: HashMap::new(),
            unknown: UnknownModel::Free,
            checked: None,
            warned: Arc::default(),
        }
    }

    /// The shipped list prices ([`SHIPPED_PRICES`]).
    ///
    /// # Panics
    ///
    /// Never: the shipped file is read by a test.
    pub fn shipped() -> Self {
        let shipped: Shipped = toml::from_str(SHIPPED_PRICES).expect("the shipped prices parse");
        let mut table = Self::empty();
        table.checked = Some(shipped.checked.into());
        for entry in shipped.models {
            let price = model_price(
                entry.input,
                entry.cached_input,
                entry.cache_write,
                entry.output,
                entry.batch_discount,
            )
            .expect("the shipped prices are valid");
            table = table.with(entry.provider, &entry.model, price);
        }
        table
    }

    /// When the shipped prices were checked (`None` for a table built from nothing).
    pub fn checked(&self) -> Option<&str> {
        self.checked.as_deref()
    }

    /// Sets (or replaces) the price of `model` under `provider`.
    #[must_use]
    pub fn with(mut self, provider: Provider, model: &str, price: Price) -> Self {
        self.models
            .entry(provider)
            .or_default()
            .insert(model.into(), price);
        self
    }

    /// What a model without a price costs (default [`UnknownModel::Free`]).
    #[must_use]
    pub fn with_unknown_model(mut self, unknown: UnknownModel) -> Self {
        self.unknown = unknown;
        self
    }

    /// The price of `model` under `provider`, by its exact name or its undated one.
    pub fn lookup(&self, provider: Provider, model: &str) -> Option<Price> {
        let providers: &[Provider] = match provider {
            Provider::AzureOpenAi => &[Provider::AzureOpenAi, Provider::OpenAi],
            _ => std::slice::from_ref(&provider),
        };
        providers.iter().find_map(|p| {
            let models = self.models.get(p)?;
            let mut name = model.strip_prefix("models/").unwrap_or(model);
            loop {
                if let Some(price) = models.get(name) {
                    return Some(*price);
                }
                name = undated(name, *p)?;
            }
        })
    }

    /// The price a call to `model` is charged at: its price, nothing (an unknown model, with
    /// a warning the first time), or a refusal.
    ///
    /// # Errors
    ///
    /// [`UnpricedModel`] for an unknown model when they are refused.
    pub fn price_of(&self, provider: Provider, model: &str) -> Result<Price, UnpricedModel> {
        if let Some(price) = self.lookup(provider, model) {
            return Ok(price);
        }
        match self.unknown {
            UnknownModel::Refuse => Err(UnpricedModel {
                provider,
                model: model.into(),
            }),
            UnknownModel::Free => {
                self.warn_once(provider, model);
                Ok(Price::default())
            }
        }
    }

    fn warn_once(&self, provider: Provider, model: &str) {
        let mut warned = self.warned.lock().unwrap_or_else(PoisonError::into_inner);
        if warned.len() < MAX_WARNED && warned.insert((provider, model.into())) {
            tracing::warn!(
                %provider,
                model,
                "no price is known for this model: its calls count as free (set [prices] models)"
            );
        }
    }
}

impl Default for PriceTable {
    fn default() -> Self {
        Self::shipped()
    }
}

/// A price from the figures of a price list or a config entry; `Err` names the bad field.
pub(crate) fn model_price(
    input: f64,
    cached_input: Option<f64>,
    cache_write: Option<f64>,
    output: f64,
    batch_discount: f64,
) -> Result<Price, (&'static str, f64)> {
    let rate =
        |field: &'static str, value: f64| Usd::per_million_tokens(value).ok_or((field, value));
    let input_rate = rate("input", input)?;
    if !(0.0..=1.0).contains(&batch_discount) {
        return Err(("batch_discount", batch_discount));
    }
    Ok(Price {
        input: input_rate,
        cached_input: cached_input.map_or(Ok(input_rate), |v| rate("cached_input", v))?,
        cache_write: cache_write.map_or(Ok(input_rate), |v| rate("cache_write", v))?,
        output: rate("output", output)?,
        batch_discount_ppm: (batch_discount * 1e6).round() as u32,
    })
}

/// The name without its last date or alias suffix, if it has one.
fn undated(name: &str, provider: Provider) -> Option<&str> {
    if let Some(base) = name.strip_suffix("-latest") {
        return Some(base);
    }
    let (base, tail) = name.rsplit_once('-')?;
    let digits = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_digit());
    // claude-3-5-haiku-20241022; Mistral's mistral-large-2411.
    if digits(tail, 8) || (provider == Provider::Mistral && digits(tail, 4)) {
        return Some(base);
    }
    // gpt-4o-mini-2024-07-18: three parts, year-month-day.
    if digits(tail, 2) {
        let (rest, month) = base.rsplit_once('-')?;
        let (rest, year) = rest.rsplit_once('-')?;
        if digits(month, 2) && digits(year, 4) {
            return Some(rest);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_table_parses_and_says_when_it_was_checked() {
        let table = PriceTable::shipped();
        assert!(table.checked().is_some());
        let mini = table.lookup(Provider::OpenAi, "gpt-4o-mini").unwrap();
        assert_eq!(mini.input, Usd::per_million_tokens(0.15).unwrap());
        assert_eq!(mini.cached_input, Usd::per_million_tokens(0.075).unwrap());
        assert_eq!(mini.batch_discount_ppm, 500_000);
        for (provider, model) in [
            (Provider::OpenAi, "gpt-4o"),
            (Provider::OpenAi, "gpt-4.1-nano"),
            (Provider::OpenAi, "o3"),
            (Provider::OpenAi, "o4-mini"),
            (Provider::OpenAi, "text-embedding-3-large"),
            (Provider::Anthropic, "claude-sonnet-4-5"),
            (Provider::Anthropic, "claude-opus-4-1"),
            (Provider::Gemini, "gemini-2.5-pro"),
            (Provider::Mistral, "mistral-large"),
        ] {
            assert!(table.lookup(provider, model).is_some(), "{model}");
        }
    }

    #[test]
    fn snapshots_and_aliases_are_priced_as_the_model_they_name() {
        let table = PriceTable::shipped();
        let price = |p, m| table.lookup(p, m);
        assert_eq!(
            price(Provider::OpenAi, "gpt-4o-mini-2024-07-18"),
            price(Provider::OpenAi, "gpt-4o-mini")
        );
        assert_eq!(
            price(Provider::Anthropic, "claude-3-5-haiku-20241022"),
            price(Provider::Anthropic, "claude-3-5-haiku")
        );
        assert_eq!(
            price(Provider::Anthropic, "claude-3-5-haiku-latest"),
            price(Provider::Anthropic, "claude-3-5-haiku")
        );
        assert_eq!(
            price(Provider::Anthropic, "claude-sonnet-4-5-20250929"),
            price(Provider::Anthropic, "claude-sonnet-4-5")
        );
        assert!(price(Provider::Mistral, "mistral-large-2411").is_some());
        assert!(price(Provider::Mistral, "mistral-small-latest").is_some());
        assert!(price(Provider::Gemini, "models/gemini-2.5-flash").is_some());
        assert!(
            price(Provider::AzureOpenAi, "gpt-4o").is_some(),
            "as OpenAI's"
        );
        // Per provider: an OpenAI name under another provider is unknown.
        assert_eq!(price(Provider::Anthropic, "gpt-4o"), None);
        assert_eq!(price(Provider::OpenAi, "gpt-4o-mini-2024"), None);
    }

    #[test]
    fn unknown_models_are_free_or_refused() {
        let table = PriceTable::shipped();
        assert_eq!(
            table.price_of(Provider::OpenAi, "my-finetune"),
            Ok(Price::default())
        );
        let strict = table.with_unknown_model(UnknownModel::Refuse);
        let error = strict
            .price_of(Provider::OpenAi, "my-finetune")
            .unwrap_err();
        assert_eq!(
            error.to_string(),
            "no price is known for openai model `my-finetune`, and unpriced models are refused"
        );
    }

    #[test]
    fn cached_tokens_cost_their_own_price() {
        let table = PriceTable::shipped();
        let sonnet = table
            .lookup(Provider::Anthropic, "claude-sonnet-4-5")
            .unwrap();
        let mut usage = Usage::new(10_000, 1_000);
        usage.cache_read_input_tokens = 8_000;
        usage.cache_creation_input_tokens = 1_000;
        // 1,000 plain × $3 + 8,000 read × $0.30 + 1,000 written × $3.75 + 1,000 out × $15, per M.
        assert_eq!(
            sonnet.cost(&usage),
            Usd::from_micros(3_000 + 2_400 + 3_750 + 15_000)
        );
        assert_eq!(
            sonnet.batch().cost(&usage),
            Usd::from_micros((3_000 + 2_400 + 3_750 + 15_000) / 2)
        );
    }
}
