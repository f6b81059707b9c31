//! Per-key rate limits, enforced as the providers do, one meter per dimension (requests,
//! tokens, input and output tokens per minute, requests per day).
//!
//! A key that learns a provider's limit from its 429s alone must converge whatever the
//! provider's limiter looks like, so the simulator offers the common shapes (`window` in the
//! scenario), each with the same per-minute quota:
//!
//! - **Token bucket** (`"token_bucket"`, the default): a bucket refilled continuously at the
//!   per-minute rate, holding a minute's quota, so an idle key may spend the whole minute at
//!   once. OpenAI and Anthropic document their limits this way. With a small `burst` (the
//!   bucket's capacity) it is the classic token bucket of API gateways (AWS API Gateway's rate
//!   and burst): `burst` at once, then the rate.
//! - **Fixed windows** (`"10s"`): the quota scaled to the window, all of it back when the next
//!   window starts, so twice the share can pass around a boundary. Azure OpenAI enforces RPM
//!   over 1 s or 10 s windows.
//! - **Sliding window** (`"sliding:60s"`): never more than the quota scaled to the window in
//!   any trailing window of that length, counted exactly from a log of the admissions (bounded
//!   by the quota); what comes back is what was taken one window earlier. The shape of
//!   sliding-log limiters in API gateways and Redis-backed proxies in front of self-hosted
//!   models.
//! - **Leaky bucket** (`"leaky_bucket"`): GCRA, admissions spaced at the per-minute rate
//!   (60 s / limit per unit) with `burst` units allowed ahead of schedule, by default one
//!   request's worth: strict spacing, no burst at all. nginx's `limit_req` and Shopify's API
//!   limit this way, as do GCRA limiters such as `governor` and redis-cell.
//!
//! A per-day request quota is always a bucket holding a day's quota, refilled over 24 hours.
//! Whatever the shape, a refusal carries the exact time until the request would be admitted
//! (if nothing else is admitted meanwhile); the dialects round it up, so a client that waits as
//! long as it is told gets in.
//!
//! A request is charged at admission on its estimate (prompt tokens + `max_tokens`) and the
//! unused part of the output estimate is refunded when the answer is complete, so a client that
//! asks for 4,096 tokens and gets 50 pays for 4,096 only while the answer is being generated.

mod bucket;
mod fixed;
mod gcra;
mod meter;
mod sliding;

use std::time::Duration;

use tokio::time::Instant;

use self::meter::Meter;
pub(crate) use self::meter::MeterView;
use crate::config::{Burst, Limits, Window};

/// A day in seconds, as the tests count.
#[cfg(test)]
const DAY: f64 = 24.0 * 60.0 * 60.0;

/// The dimensions a key is limited on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Dimension {
    /// Requests per minute.
    Requests,
    /// Input plus output tokens per minute.
    Tokens,
    /// Input tokens per minute.
    InputTokens,
    /// Output tokens per minute.
    OutputTokens,
    /// Requests per day.
    RequestsPerDay,
}

/// What one request asks of the limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Charge {
    pub(crate) input: u64,
    pub(crate) output: u64,
}

impl Charge {
    fn amount(self, dimension: Dimension) -> u64 {
        match dimension {
            Dimension::Requests | Dimension::RequestsPerDay => 1,
            Dimension::Tokens => self.input.saturating_add(self.output),
            Dimension::InputTokens => self.input,
            Dimension::OutputTokens => self.output,
        }
    }
}

/// A refusal: which limit, and how long until the request would fit.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Refusal {
    pub(crate) dimension: Dimension,
    pub(crate) limit: u64,
    pub(crate) requested: u64,
    pub(crate) wait: Duration,
}

/// All the meters of one key: (dimension, limit per period, meter).
#[derive(Clone, Debug)]
pub(crate) struct KeyLimiter {
    meters: Vec<(Dimension, u64, Meter)>,
}

impl KeyLimiter {
    pub(crate) fn new(limits: Limits, now: Instant) -> Self {
        let per_minute = [
            (Dimension::Requests, limits.requests_per_minute),
            (Dimension::Tokens, limits.tokens_per_minute),
            (Dimension::InputTokens, limits.input_tokens_per_minute),
            (Dimension::OutputTokens, limits.output_tokens_per_minute),
        ];
        let mut meters: Vec<_> = per_minute
            .into_iter()
            .filter_map(|(dimension, limit)| {
                let burst = burst_of(&limits, dimension);
                limit.map(|limit| {
                    (
                        dimension,
                        limit,
                        Meter::new(limit, limits.window, burst, now),
                    )
                })
            })
            .collect();
        if let Some(per_day) = limits.requests_per_day {
            meters.push((
                Dimension::RequestsPerDay,
                per_day,
                Meter::per_day(per_day, now),
            ));
        }
        Self { meters }
    }

    /// A dimension on which `charge` can never fit, however long the client waits.
    pub(crate) fn too_large(&self, charge: Charge) -> Option<Refusal> {
        self.meters.iter().find_map(|(dimension, limit, meter)| {
            let requested = charge.amount(*dimension);
            (requested > meter.ceiling()).then_some(Refusal {
                dimension: *dimension,
                limit: *limit,
                requested,
                wait: Duration::MAX,
            })
        })
    }

    /// Takes `charge` from every meter, or nothing and the longest wait among the refusals.
    pub(crate) fn admit(&mut self, charge: Charge, now: Instant) -> Result<(), Refusal> {
        let mut refusal: Option<Refusal> = None;
        for (dimension, limit, meter) in &mut self.meters {
            let requested = charge.amount(*dimension);
            if let Some(wait) = meter.wait_for(requested, now)
                && refusal.is_none_or(|r| wait > r.wait)
            {
                refusal = Some(Refusal {
                    dimension: *dimension,
                    limit: *limit,
                    requested,
                    wait,
                });
            }
        }
        if let Some(refusal) = refusal {
            return Err(refusal);
        }
        for (dimension, _, meter) in &mut self.meters {
            meter.take(charge.amount(*dimension), now);
        }
        Ok(())
    }

    /// Returns what a request admitted at `admitted` did not use (requests are never
    /// refunded).
    pub(crate) fn refund(&mut self, unused: Charge, admitted: Instant, now: Instant) {
        for (dimension, _, meter) in &mut self.meters {
            if !matches!(dimension, Dimension::Requests | Dimension::RequestsPerDay) {
                meter.give_back(unused.amount(*dimension), admitted, now);
            }
        }
    }

    /// The header view of one dimension, if it is limited.
    pub(crate) fn view(&mut self, dimension: Dimension, now: Instant) -> Option<MeterView> {
        self.meters
            .iter_mut()
            .find(|(d, _, _)| *d == dimension)
            .map(|(_, limit, meter)| meter.view(*limit, now))
    }
}

/// The configured burst of `dimension`. A leaky bucket's requests default to a burst of one
/// request, which admits exactly as "one request's worth" does and lets the headers say so.
fn burst_of(limits: &Limits, dimension: Dimension) -> Option<u64> {
    let configured = match limits.burst {
        None => None,
        // Validation allows a bare number only on a key with one per-minute dimension.
        Some(Burst::Units(units)) => Some(units),
        Some(Burst::PerDimension(each)) => match dimension {
            Dimension::Requests => each.requests,
            Dimension::Tokens => each.tokens,
            Dimension::InputTokens => each.input_tokens,
            Dimension::OutputTokens => each.output_tokens,
            Dimension::RequestsPerDay => None,
        },
    };
    let one_request = limits.window == Window::LeakyBucket && dimension == Dimension::Requests;
    configured.or(one_request.then_some(1))
}

#[cfg(test)]
mod tests;
