//! Hedging: a backup attempt for a call that is taking longer than usual.
//!
//! LLM latency has a long tail; a second attempt sent once the first is slower than, say, 95 %
//! of recent calls often answers first. It doubles the cost of the calls it fires for, so it is
//! opt-in, fires at most once per attempt, draws on the retry budget, and by default only for
//! calls that are safe to send twice: reads, embeddings, and deterministic generations
//! (temperature 0 or a seed). A call that must never be repeated
//! ([`Repeat::Never`]: a file upload, a batch creation, an unknown `POST`) is never hedged.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use http::Request;
use tollgate_core::{EndpointKind, LlmRequest, Repeat};

/// When the backup attempt is sent.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum HedgeAfter {
    /// After a fixed delay.
    Delay(Duration),
    /// After the given quantile (0.0–1.0) of recent successful attempts' latency; no hedging
    /// until 20 attempts have been seen.
    Percentile(f64),
}

/// Which calls may be hedged.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum HedgeWhen {
    /// Reads, embeddings and deterministic generations.
    #[default]
    Idempotent,
    /// Every call that may be repeated, including generations that are billed twice when both
    /// attempts run; never one that must not be ([`Repeat::Never`]).
    Always,
}

/// Hedging settings.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Hedge {
    /// When the backup goes.
    pub after: HedgeAfter,
    /// Which calls.
    pub when: HedgeWhen,
}

impl Hedge {
    /// Whether `request` may be hedged.
    pub(crate) fn applies<B>(&self, request: &Request<B>) -> bool {
        match (Repeat::of_request(request), self.when) {
            (Repeat::Never, _) => false,
            (_, HedgeWhen::Always) | (Repeat::Safe, _) => true,
            (_, HedgeWhen::Idempotent) => {
                request.extensions().get::<LlmRequest>().is_some_and(|llm| {
                    llm.endpoint == EndpointKind::Embeddings || llm.is_deterministic()
                })
            }
        }
    }
}

const SAMPLES: usize = 128;
const MIN_SAMPLES: usize = 20;

/// Recent successful attempt latencies, in a ring of atomics.
#[derive(Debug)]
pub(crate) struct Latencies {
    ring: Box<[AtomicU64]>,
    next: AtomicUsize,
}

impl Default for Latencies {
    fn default() -> Self {
        Self {
            ring: (0..SAMPLES).map(|_| AtomicU64::new(0)).collect(),
            next: AtomicUsize::new(0),
        }
    }
}

impl Latencies {
    pub(crate) fn record(&self, latency: Duration) {
        let slot = self.next.fetch_add(1, Ordering::Relaxed) % SAMPLES;
        let nanos = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX).max(1);
        self.ring[slot].store(nanos, Ordering::Relaxed);
    }

    /// The `quantile` of the recorded latencies, once there are enough.
    pub(crate) fn quantile(&self, quantile: f64) -> Option<Duration> {
        let mut seen: Vec<u64> = self
            .ring
            .iter()
            .map(|s| s.load(Ordering::Relaxed))
            .filter(|&n| n > 0)
            .collect();
        if seen.len() < MIN_SAMPLES {
            return None;
        }
        seen.sort_unstable();
        let index = ((seen.len() - 1) as f64 * quantile.clamp(0.0, 1.0)).round() as usize;
        Some(Duration::from_nanos(seen[index]))
    }

    /// The delay before a backup, if one should be sent.
    pub(crate) fn hedge_delay(&self, after: HedgeAfter) -> Option<Duration> {
        match after {
            HedgeAfter::Delay(delay) => Some(delay),
            HedgeAfter::Percentile(quantile) => self.quantile(quantile),
        }
    }
}

#[cfg(test)]
mod tests {
    use tollgate_core::Provider;

    use super::*;

    #[test]
    fn quantiles_need_enough_samples() {
        let l = Latencies::default();
        for ms in 1..=19 {
            l.record(Duration::from_millis(ms));
        }
        assert_eq!(l.quantile(0.5), None);
        l.record(Duration::from_millis(20));
        assert_eq!(l.quantile(0.95), Some(Duration::from_millis(19)));
        assert_eq!(l.quantile(0.0), Some(Duration::from_millis(1)));
    }

    #[test]
    fn only_safe_calls_are_hedged_by_default() {
        let hedge = Hedge {
            after: HedgeAfter::Delay(Duration::from_secs(1)),
            when: HedgeWhen::Idempotent,
        };
        let mut request = Request::post("/v1/chat/completions").body(()).unwrap();
        let mut llm = LlmRequest::new(Provider::OpenAi, EndpointKind::ChatCompletions);
        request.extensions_mut().insert(llm.clone());
        assert!(
            !hedge.applies(&request),
            "a sampled generation is not repeatable"
        );
        llm.temperature = Some(0.0);
        request.extensions_mut().insert(llm);
        assert!(hedge.applies(&request));
        assert!(hedge.applies(&Request::get("/v1/models").body(()).unwrap()));
        let always = Hedge {
            when: HedgeWhen::Always,
            ..hedge
        };
        assert!(always.applies(&Request::post("/v1/chat/completions").body(()).unwrap()));
        for never in ["/v1/files", "/v1/batches", "/x"] {
            assert!(
                !always.applies(&Request::post(never).body(()).unwrap()),
                "a second {never} would create a second one"
            );
        }
    }
}
