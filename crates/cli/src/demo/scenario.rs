//! The providers `tollgate demo` plays against, and the workload each gets.

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use tollgate_budget::PriceTable;
use tollgate_core::{Provider, Usage};
use tollgate_sim::{LogEntry, SimConfig, SimService};

/// A tier-1 OpenAI key with faults: `docs/scenarios/demo.toml`.
const OPENAI: &str = include_str!("../../../../docs/scenarios/demo.toml");
/// Gemini's free tier, which sends no rate-limit headers: `docs/scenarios/gemini-free-tier.toml`.
const GEMINI: &str = include_str!("../../../../docs/scenarios/gemini-free-tier.toml");

/// Which provider a comparison runs against.
#[derive(Clone, Copy, Debug)]
pub(super) enum Scenario {
    /// 500 requests and 200,000 tokens a minute, rate-limit headers on every answer, 2 % 500s,
    /// overloaded from minute 2 to 3.
    OpenAiTier1,
    /// gemini-2.0-flash on the free tier: 15 requests a minute, no rate-limit headers, 429s
    /// naming the quota with a `RetryInfo`.
    GeminiFreeTier,
}

impl Scenario {
    /// The free tier's workers: a small application, not a batch job.
    pub(super) const GEMINI_WORKERS: usize = 8;

    /// The line printed before a comparison.
    pub(super) fn describe(self, requests: usize, workers: usize) -> String {
        match self {
            Self::OpenAiTier1 => format!(
                "tollgate demo: {requests} requests ({} chat completions, {} embeddings) from \
                 {workers} workers, against a simulated tier-1 OpenAI key\n(500 requests and \
                 200,000 tokens a minute, 2 % 500s, overloaded from minute 2 to 3), in simulated \
                 time.\n",
                requests - requests / 5,
                requests / 5,
            ),
            Self::GeminiFreeTier => format!(
                "\nThen {requests} requests from {workers} workers against Gemini's free tier \
                 (gemini-2.0-flash: 15 requests a minute, and not a rate-limit header),\nwith no \
                 quota configured.\n"
            ),
        }
    }

    /// The simulated provider.
    pub(super) fn sim(self) -> Result<SimService, String> {
        let (name, text) = match self {
            Self::OpenAiTier1 => ("the demo scenario", OPENAI),
            Self::GeminiFreeTier => ("the Gemini free-tier scenario", GEMINI),
        };
        let config = SimConfig::from_toml(text).map_err(|e| format!("{name}: {e}"))?;
        SimService::new(config).map_err(|e| format!("{name}: {e}"))
    }

    /// The `n`th request of the workload.
    pub(super) fn request(self, n: usize) -> Request<Full<Bytes>> {
        match self {
            // Four chat completions of varied length to one single-input embedding.
            Self::OpenAiTier1 => {
                let max_tokens = [100, 200, 300][n % 3];
                let (path, body) = if n % 5 == 4 {
                    (
                        "/v1/embeddings",
                        serde_json::json!({"model": "text-embedding-3-small",
                            "input": format!("passage {n}: {}", "the quick brown fox ".repeat(4 + n % 20))}),
                    )
                } else {
                    (
                        "/v1/chat/completions",
                        serde_json::json!({"model": "gpt-4o-mini", "max_tokens": max_tokens,
                            "messages": [{"role": "user", "content":
                                format!("Summarise ticket {n}: {}", "the customer reports a problem ".repeat(2 + n % 30))}]}),
                    )
                };
                Request::post(format!("https://api.openai.com{path}"))
                    .header("authorization", "Bearer sk-demo")
                    .header("content-type", "application/json")
                    .body(Full::new(Bytes::from(body.to_string())))
                    .expect("a valid request")
            }
            Self::GeminiFreeTier => {
                let body = serde_json::json!({
                    "contents": [{"parts": [{"text": format!(
                        "Classify review {n}: {}", "the product arrived late but works ".repeat(2 + n % 10))}]}],
                    "generationConfig": {"maxOutputTokens": 200}});
                Request::post(
                    "https://generativelanguage.googleapis.com/v1beta/models/gemini-2.0-flash:generateContent",
                )
                .header("x-goog-api-key", "AIza-free-2.0-flash")
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from(body.to_string())))
                .expect("a valid request")
            }
        }
    }

    /// What a call the provider logged cost, in dollars: its usage (cached input at its own
    /// price) at the shipped prices of its model (`docs/budgets.md`).
    pub(super) fn cost(self, prices: &PriceTable, entry: &LogEntry) -> f64 {
        match self {
            Self::OpenAiTier1 => {
                let Some(price) = entry
                    .model
                    .as_deref()
                    .and_then(|model| prices.lookup(Provider::OpenAi, model))
                else {
                    return 0.0;
                };
                let mut usage = Usage::new(entry.input_tokens, entry.output_tokens);
                usage.cache_read_input_tokens = entry.cached_input_tokens;
                price.cost(&usage).as_dollars_f64()
            }
            // The free tier.
            Self::GeminiFreeTier => 0.0,
        }
    }
}
