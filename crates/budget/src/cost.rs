//! The cost of a call: its worst case before it is sent, and what it cost once it ended.
//!
//! Before sending, a call reserves its **worst case**: its estimated input tokens (with a
//! margin, since the estimate is not the provider's count) at the input price, plus its output
//! cap (`max_tokens`, for every choice asked; a configured default when it sets none) at the
//! output price. Embeddings have no output; other endpoints (files, batches, model lists)
//! cost nothing here.
//!
//! When it ends, it costs what the provider reported ([`Price::cost`]: cached input at its
//! own price). The [`CallCost`] in the response extensions says both.

use std::fmt;
use std::sync::{Arc, OnceLock};

use tollgate_core::{EndpointKind, LlmRequest, Usage};

use crate::ledger::Spend;
use crate::price::Price;

/// Output tokens assumed for a call that sets no cap.
pub const DEFAULT_OUTPUT_TOKENS: u32 = 4_096;

/// The margin added to the input-token estimate, in percent.
pub const DEFAULT_INPUT_MARGIN_PERCENT: u32 = 10;

/// How a call's worst case is reckoned; see the [module docs](self).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct WorstCase {
    /// Output tokens assumed per choice when the request sets no cap
    /// (default [`DEFAULT_OUTPUT_TOKENS`]).
    pub default_output_tokens: u32,
    /// Percent added to the input-token estimate (default [`DEFAULT_INPUT_MARGIN_PERCENT`]).
    pub input_margin_percent: u32,
}

impl Default for WorstCase {
    fn default() -> Self {
        Self {
            default_output_tokens: DEFAULT_OUTPUT_TOKENS,
            input_margin_percent: DEFAULT_INPUT_MARGIN_PERCENT,
        }
    }
}

impl WorstCase {
    /// The most `request` may cost at `price`.
    ///
    /// ```
    /// use tollgate_budget::{PriceTable, Usd, WorstCase};
    /// use tollgate_core::{EndpointKind, LlmRequest, Provider};
    ///
    /// let mut request = LlmRequest::new(Provider::OpenAi, EndpointKind::ChatCompletions);
    /// request.input_tokens_estimate = 1_000;
    /// request.max_output_tokens = Some(500);
    /// let price = PriceTable::shipped().lookup(Provider::OpenAi, "gpt-4o").unwrap();
    /// let worst = WorstCase::default().of(&request, &price);
    /// // 1,100 input tokens at $2.50/M + 500 output tokens at $10/M.
    /// assert_eq!(worst.usd, Usd::from_micros(2_750 + 5_000));
    /// assert_eq!(worst.tokens, 1_600);
    /// ```
    pub fn of(&self, request: &LlmRequest, price: &Price) -> Spend {
        let (input, output) = self.tokens(request);
        Spend {
            usd: price.input.max(price.cache_write) * input + price.output * output,
            tokens: input.saturating_add(output),
        }
    }

    /// The worst case's input and output tokens.
    pub fn tokens(&self, request: &LlmRequest) -> (u64, u64) {
        let billed =
            request.endpoint.is_generation() || request.endpoint == EndpointKind::Embeddings;
        if !billed {
            return (0, 0);
        }
        let estimate = u64::from(request.input_tokens_estimate);
        let input = estimate
            .saturating_add((estimate * u64::from(self.input_margin_percent)).div_ceil(100));
        let output = if request.endpoint.is_generation() {
            let choices = u64::from(request.n.unwrap_or(1).max(1));
            u64::from(
                request
                    .max_output_tokens
                    .unwrap_or(self.default_output_tokens),
            )
            .saturating_mul(choices)
        } else {
            0
        };
        (input, output)
    }
}

/// What a call was charged on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ChargeBasis {
    /// The usage the provider reported.
    Usage,
    /// Its worst case: the provider may have billed it, and did not say how much (a stream
    /// without usage, a body that broke, a call given up after it was sent).
    WorstCase,
    /// Nothing: the call was refused by the provider or never left.
    Released,
}

/// What a call was charged, once it ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Charged {
    /// The money and tokens charged to every budget the call counted in.
    pub spend: Spend,
    /// The usage the provider reported, if it did.
    pub usage: Option<Usage>,
    /// What the charge was based on.
    pub basis: ChargeBasis,
}

/// The cost of one call, in its response extensions: what it reserved at once, and what it
/// was charged once its body ended.
///
/// Read `charged()` after the body has been read (or from an
/// [`EndOfStream`](tollgate_core::body::EndOfStream) hook registered after the response
/// arrived: hooks run in order, and the budget's runs first).
///
/// # Clone
///
/// Clones share the charge.
#[derive(Clone)]
pub struct CallCost {
    inner: Arc<CostInner>,
}

struct CostInner {
    reserved: Spend,
    price: Price,
    charged: OnceLock<Charged>,
}

impl CallCost {
    pub(crate) fn new(reserved: Spend, price: Price) -> Self {
        Self {
            inner: Arc::new(CostInner {
                reserved,
                price,
                charged: OnceLock::new(),
            }),
        }
    }

    /// The worst case the call reserved.
    pub fn reserved(&self) -> Spend {
        self.inner.reserved
    }

    /// The price it was charged at (all zero for an unknown model counted as free).
    pub fn price(&self) -> Price {
        self.inner.price
    }

    /// What it was charged, once its body ended.
    pub fn charged(&self) -> Option<Charged> {
        self.inner.charged.get().copied()
    }

    pub(crate) fn set(&self, charged: Charged) {
        let _ = self.inner.charged.set(charged);
    }
}

impl fmt::Debug for CallCost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CallCost")
            .field("reserved", &self.inner.reserved)
            .field("charged", &self.charged())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use tollgate_core::Provider;

    use super::*;

    #[test]
    fn the_worst_case_counts_every_choice_and_a_default_cap() {
        let worst = WorstCase {
            default_output_tokens: 1_000,
            input_margin_percent: 0,
        };
        let mut chat = LlmRequest::new(Provider::OpenAi, EndpointKind::ChatCompletions);
        chat.input_tokens_estimate = 100;
        assert_eq!(worst.tokens(&chat), (100, 1_000));
        chat.max_output_tokens = Some(50);
        chat.n = Some(3);
        assert_eq!(worst.tokens(&chat), (100, 150));
        let mut embed = LlmRequest::new(Provider::OpenAi, EndpointKind::Embeddings);
        embed.input_tokens_estimate = 80;
        assert_eq!(worst.tokens(&embed), (80, 0));
        let files = LlmRequest::new(Provider::OpenAi, EndpointKind::Files);
        assert_eq!(worst.tokens(&files), (0, 0));
        assert_eq!(
            WorstCase::default().tokens(&embed),
            (88, 0),
            "a 10 % margin"
        );
    }
}
