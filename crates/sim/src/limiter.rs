//! Per-key rate limits, enforced as the providers do: a token bucket per dimension holding a
//! minute's quota and refilled continuously, or Azure-style fixed windows; a per-day request
//! quota is a bucket holding a day's quota, refilled over 24 hours.
//!
//! A request is charged at admission on its estimate (prompt tokens + `max_tokens`) and the
//! unused part of the output estimate is refunded when the answer is complete, so a client that
//! asks for 4,096 tokens and gets 50 pays for 4,096 only while the answer is being generated.

use std::time::Duration;

use tokio::time::Instant;

use crate::config::{Limits, Window};

/// One limit on one dimension.
#[derive(Clone, Debug)]
pub(crate) enum Meter {
    /// Holds up to `capacity`, refilled at `capacity` per `period` seconds.
    Bucket {
        capacity: f64,
        period: f64,
        level: f64,
        updated: Instant,
    },
    /// Allows `limit` per fixed window of `window`.
    Fixed {
        limit: u64,
        window: Duration,
        started: Instant,
        used: u64,
    },
}

/// What a meter reports in rate-limit headers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct MeterView {
    /// The limit per period (a minute, or a day for [`Dimension::RequestsPerDay`]).
    pub(crate) limit: u64,
    /// What can still be taken now.
    pub(crate) remaining: u64,
    /// Until the meter is full again.
    pub(crate) reset: Duration,
}

const MINUTE: f64 = 60.0;
const DAY: f64 = 24.0 * 60.0 * 60.0;

impl Meter {
    pub(crate) fn new(per_minute: u64, window: Window, now: Instant) -> Self {
        match window {
            Window::TokenBucket => Self::bucket(per_minute, MINUTE, now),
            Window::Fixed(window) => {
                let share = per_minute as f64 * window.as_secs_f64() / MINUTE;
                Self::Fixed {
                    limit: (share.ceil() as u64).max(1),
                    window,
                    started: now,
                    used: 0,
                }
            }
        }
    }

    /// A full bucket of `limit`, refilled over `period` seconds.
    fn bucket(limit: u64, period: f64, now: Instant) -> Self {
        Self::Bucket {
            capacity: limit as f64,
            period,
            level: limit as f64,
            updated: now,
        }
    }

    fn refresh(&mut self, now: Instant) {
        match self {
            Self::Bucket {
                capacity,
                period,
                level,
                updated,
            } => {
                let elapsed = now.saturating_duration_since(*updated).as_secs_f64();
                *level = (*level + elapsed * *capacity / *period).min(*capacity);
                *updated = now;
            }
            Self::Fixed {
                window,
                started,
                used,
                ..
            } => {
                if now >= *started + *window {
                    let windows =
                        now.duration_since(*started).as_nanos() / window.as_nanos().max(1);
                    *started += *window * u32::try_from(windows).unwrap_or(u32::MAX);
                    *used = 0;
                }
            }
        }
    }

    /// The most one request can ever take.
    pub(crate) fn ceiling(&self) -> u64 {
        match self {
            Self::Bucket { capacity, .. } => *capacity as u64,
            Self::Fixed { limit, .. } => *limit,
        }
    }

    /// `None` if `amount` fits now, else how long until it will.
    fn wait_for(&mut self, amount: u64, now: Instant) -> Option<Duration> {
        self.refresh(now);
        match self {
            Self::Bucket {
                capacity,
                period,
                level,
                ..
            } => {
                let missing = amount as f64 - *level;
                (missing > 0.0).then(|| Duration::from_secs_f64(missing * *period / *capacity))
            }
            Self::Fixed {
                limit,
                window,
                started,
                used,
            } => (*used + amount > *limit)
                .then(|| (*started + *window).saturating_duration_since(now)),
        }
    }

    fn take(&mut self, amount: u64) {
        match self {
            Self::Bucket { level, .. } => *level -= amount as f64,
            Self::Fixed { used, .. } => *used += amount,
        }
    }

    fn give_back(&mut self, amount: u64, now: Instant) {
        self.refresh(now);
        match self {
            Self::Bucket {
                capacity, level, ..
            } => *level = (*level + amount as f64).min(*capacity),
            Self::Fixed { used, .. } => *used = used.saturating_sub(amount),
        }
    }

    pub(crate) fn view(&mut self, limit: u64, now: Instant) -> MeterView {
        self.refresh(now);
        match self {
            Self::Bucket {
                capacity,
                period,
                level,
                ..
            } => MeterView {
                limit,
                remaining: level.max(0.0).floor() as u64,
                reset: Duration::from_secs_f64((*capacity - level.max(0.0)) * *period / *capacity),
            },
            Self::Fixed {
                limit: share,
                window,
                started,
                used,
            } => MeterView {
                limit,
                remaining: share.saturating_sub(*used),
                reset: if *used == 0 {
                    Duration::ZERO
                } else {
                    (*started + *window).saturating_duration_since(now)
                },
            },
        }
    }
}

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
                limit.map(|limit| (dimension, limit, Meter::new(limit, limits.window, now)))
            })
            .collect();
        if let Some(per_day) = limits.requests_per_day {
            meters.push((
                Dimension::RequestsPerDay,
                per_day,
                Meter::bucket(per_day, DAY, now),
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
            meter.take(charge.amount(*dimension));
        }
        Ok(())
    }

    /// Returns what an admitted request did not use (requests are never refunded).
    pub(crate) fn refund(&mut self, unused: Charge, now: Instant) {
        for (dimension, _, meter) in &mut self.meters {
            if !matches!(dimension, Dimension::Requests | Dimension::RequestsPerDay) {
                meter.give_back(unused.amount(*dimension), now);
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

#[cfg(test)]
mod tests;
