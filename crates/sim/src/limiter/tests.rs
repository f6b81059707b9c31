//! The limiter against its invariants: exact waits, refunds, windows, and proptests that no
//! meter admits more than its quota over any interval.

use super::*;
use proptest::prelude::*;

fn limits(rpm: u64, tpm: u64, window: Window) -> Limits {
    Limits {
        requests_per_minute: Some(rpm),
        tokens_per_minute: Some(tpm),
        input_tokens_per_minute: None,
        output_tokens_per_minute: None,
        requests_per_day: None,
        window,
        ..Limits::default()
    }
}

#[test]
fn a_bucket_refills_continuously_and_says_how_long_to_wait() {
    let t0 = Instant::now();
    let mut limiter = KeyLimiter::new(limits(60, 6_000, Window::TokenBucket), t0);
    let charge = Charge {
        input: 1_000,
        output: 2_000,
    };
    assert_eq!(limiter.admit(charge, t0), Ok(()));
    assert_eq!(limiter.admit(charge, t0), Ok(()));
    let refusal = limiter.admit(charge, t0).unwrap_err();
    assert_eq!(refusal.dimension, Dimension::Tokens);
    assert_eq!(
        refusal.wait,
        Duration::from_secs(30),
        "3,000 tokens at 100 per second"
    );
    let view = limiter.view(Dimension::Tokens, t0).unwrap();
    assert_eq!(
        (view.limit, view.remaining, view.reset),
        (6_000, 0, Duration::from_secs(60))
    );
    assert_eq!(limiter.admit(charge, t0 + Duration::from_secs(30)), Ok(()));
}

#[test]
fn refunds_return_unused_output() {
    let t0 = Instant::now();
    let mut limiter = KeyLimiter::new(limits(60, 5_000, Window::TokenBucket), t0);
    assert_eq!(
        limiter.admit(
            Charge {
                input: 100,
                output: 4_096
            },
            t0
        ),
        Ok(())
    );
    limiter.refund(
        Charge {
            input: 0,
            output: 4_046,
        },
        t0,
        t0,
    );
    let view = limiter.view(Dimension::Tokens, t0).unwrap();
    assert_eq!(view.remaining, 5_000 - 150);
    let requests = limiter.view(Dimension::Requests, t0).unwrap();
    assert_eq!(requests.remaining, 59, "a request is never refunded");
}

#[test]
fn too_large_is_about_the_ceiling_not_the_level() {
    let t0 = Instant::now();
    let limiter = KeyLimiter::new(limits(60, 30_000, Window::TokenBucket), t0);
    let refusal = limiter
        .too_large(Charge {
            input: 30_000,
            output: 4_307,
        })
        .unwrap();
    assert_eq!(
        (refusal.dimension, refusal.limit, refusal.requested),
        (Dimension::Tokens, 30_000, 34_307)
    );
    assert!(
        limiter
            .too_large(Charge {
                input: 29_000,
                output: 1_000
            })
            .is_none()
    );
}

#[test]
fn fixed_windows_scale_the_minute_quota() {
    let t0 = Instant::now();
    let mut limiter = KeyLimiter::new(
        limits(60, 600_000, Window::Fixed(Duration::from_secs(10))),
        t0,
    );
    let charge = Charge {
        input: 1,
        output: 1,
    };
    for _ in 0..10 {
        assert_eq!(limiter.admit(charge, t0 + Duration::from_secs(1)), Ok(()));
    }
    let refusal = limiter
        .admit(charge, t0 + Duration::from_secs(4))
        .unwrap_err();
    assert_eq!(
        (refusal.dimension, refusal.wait),
        (Dimension::Requests, Duration::from_secs(6))
    );
    assert_eq!(limiter.admit(charge, t0 + Duration::from_secs(10)), Ok(()));
}

#[test]
fn a_day_quota_refills_over_a_day_whatever_the_window() {
    let t0 = Instant::now();
    let day_limits = Limits {
        requests_per_day: Some(3),
        ..limits(60, 1_000_000, Window::Fixed(Duration::from_secs(10)))
    };
    let mut limiter = KeyLimiter::new(day_limits, t0);
    let charge = Charge {
        input: 1,
        output: 1,
    };
    for i in 0..3 {
        assert_eq!(limiter.admit(charge, t0 + Duration::from_secs(i)), Ok(()));
    }
    let refusal = limiter
        .admit(charge, t0 + Duration::from_secs(3))
        .unwrap_err();
    // One request of three a day comes back every 8 hours, counted from the first taken.
    assert_eq!(
        (refusal.dimension, refusal.limit, refusal.requested),
        (Dimension::RequestsPerDay, 3, 1)
    );
    let expected = Duration::from_secs(8 * 3600 - 3);
    assert!(
        refusal.wait.abs_diff(expected) < Duration::from_millis(1),
        "the day bucket, not the 10 s window: {:?}",
        refusal.wait
    );
    let view = limiter
        .view(Dimension::RequestsPerDay, t0 + Duration::from_secs(3))
        .unwrap();
    assert_eq!((view.limit, view.remaining), (3, 0));
    limiter.refund(charge, t0, t0 + Duration::from_secs(3));
    assert!(
        limiter.admit(charge, t0 + Duration::from_secs(4)).is_err(),
        "requests are never refunded"
    );
    let later = t0 + Duration::from_secs(8 * 3600 + 1);
    assert_eq!(limiter.admit(charge, later), Ok(()));
}

proptest! {
    /// Over any interval, a day bucket admits at most its quota plus what refills in the
    /// interval, however the requests are spread over the days.
    #[test]
    fn a_day_bucket_never_admits_more_than_its_quota(
        gaps in prop::collection::vec(0u64..7_200, 1..300),
    ) {
        let rpd = 50;
        let t0 = Instant::now();
        let day_limits = Limits {
            requests_per_minute: None,
            tokens_per_minute: None,
            requests_per_day: Some(rpd),
            ..limits(1, 1, Window::TokenBucket)
        };
        let mut limiter = KeyLimiter::new(day_limits, t0);
        let mut now = t0;
        let mut admitted = Vec::new();
        for gap in gaps {
            now += Duration::from_secs(gap);
            if limiter.admit(Charge { input: 1_000, output: 1_000 }, now).is_ok() {
                admitted.push(now - t0);
            }
        }
        for (i, start) in admitted.iter().enumerate() {
            for (j, at) in admitted.iter().enumerate().skip(i) {
                let count = (j - i + 1) as f64;
                let allowed = rpd as f64 + (*at - *start).as_secs_f64() * rpd as f64 / DAY;
                prop_assert!(count <= allowed + 1e-6, "{count} > {allowed} over {:?}", *at - *start);
            }
        }
    }

    /// Over any interval, a bucket admits at most its capacity plus what refills in the
    /// interval: the configured quota, to the request.
    #[test]
    fn a_bucket_never_admits_more_than_its_quota(
        gaps in prop::collection::vec(0u64..3_000, 1..300),
        sizes in prop::collection::vec(1u64..2_000, 300),
    ) {
        let tpm = 10_000;
        let t0 = Instant::now();
        let mut limiter = KeyLimiter::new(limits(1_000_000, tpm, Window::TokenBucket), t0);
        let mut now = t0;
        let mut admitted: Vec<(Duration, u64)> = Vec::new();
        for (gap, size) in gaps.iter().zip(&sizes) {
            now += Duration::from_millis(*gap);
            if limiter.admit(Charge { input: *size, output: 0 }, now).is_ok() {
                admitted.push((now - t0, *size));
            }
        }
        for (i, (start, _)) in admitted.iter().enumerate() {
            let mut total = 0;
            for (at, size) in &admitted[i..] {
                total += size;
                let allowed = tpm as f64 + (*at - *start).as_secs_f64() * tpm as f64 / 60.0;
                prop_assert!(total as f64 <= allowed + 1e-6, "{total} > {allowed} over {:?}", *at - *start);
            }
        }
    }

    /// A fixed window never admits more than its share of the minute's quota.
    #[test]
    fn a_fixed_window_never_admits_more_than_its_share(
        gaps in prop::collection::vec(0u64..700, 1..300),
    ) {
        let t0 = Instant::now();
        let window = Duration::from_secs(1);
        let mut limiter = KeyLimiter::new(limits(120, 1_000_000, Window::Fixed(window)), t0);
        let mut now = t0;
        let mut per_window = std::collections::BTreeMap::new();
        for gap in gaps {
            now += Duration::from_millis(gap);
            if limiter.admit(Charge { input: 1, output: 0 }, now).is_ok() {
                *per_window.entry((now - t0).as_secs()).or_insert(0) += 1;
            }
        }
        prop_assert!(per_window.values().all(|&n| n <= 2), "{per_window:?}");
    }
}

/// A key limited on one per-minute dimension, counted as `window` says.
fn shaped(window: Window, burst: Option<u64>, rpm: Option<u64>, tpm: Option<u64>) -> Limits {
    Limits {
        requests_per_minute: rpm,
        tokens_per_minute: tpm,
        window,
        burst: burst.map(crate::config::Burst::Units),
        ..Limits::default()
    }
}

const ONE: Charge = Charge {
    input: 1,
    output: 0,
};

fn tokens(n: u64) -> Charge {
    Charge {
        input: n,
        output: 0,
    }
}

const NS: Duration = Duration::from_nanos(1);

#[test]
fn a_leaky_bucket_says_the_exact_wait_to_the_nanosecond() {
    // 7 a minute: one every 8.571428571… s, which no float holds exactly.
    let t0 = Instant::now();
    let mut limiter = KeyLimiter::new(shaped(Window::LeakyBucket, None, Some(7), None), t0);
    assert_eq!(limiter.admit(ONE, t0), Ok(()));
    let wait = limiter.admit(ONE, t0).unwrap_err().wait;
    assert_eq!(
        wait,
        Duration::from_nanos(8_571_428_572),
        "60 s / 7, rounded up"
    );
    assert!(limiter.admit(ONE, t0 + wait - NS).is_err());
    assert_eq!(limiter.admit(ONE, t0 + wait), Ok(()));
    // Idle time is not banked: after a minute's pause, still one at a time.
    let later = t0 + Duration::from_secs(80);
    assert_eq!(limiter.admit(ONE, later), Ok(()));
    assert_eq!(limiter.admit(ONE, later).unwrap_err().wait, wait);
}

#[test]
fn a_leaky_bucket_without_a_burst_spaces_tokens_by_each_requests_size() {
    // 6,000 tokens a minute: 100 a second; each request waits for the one before to drain.
    let t0 = Instant::now();
    let mut limiter = KeyLimiter::new(shaped(Window::LeakyBucket, None, None, Some(6_000)), t0);
    assert_eq!(limiter.admit(tokens(1_000), t0), Ok(()));
    let refusal = limiter.admit(tokens(1), t0).unwrap_err();
    assert_eq!(
        (refusal.dimension, refusal.wait),
        (Dimension::Tokens, Duration::from_secs(10))
    );
    let t10 = t0 + Duration::from_secs(10);
    assert_eq!(
        limiter.admit(tokens(3_000), t10),
        Ok(()),
        "any size, once drained"
    );
    assert_eq!(
        limiter.admit(tokens(1), t10).unwrap_err().wait,
        Duration::from_secs(30)
    );
    assert!(
        limiter.too_large(tokens(6_001)).is_some(),
        "a minute's quota at most"
    );
    // The unused part of an estimate moves the schedule back.
    limiter.refund(tokens(2_000), t10, t10);
    assert_eq!(
        limiter.admit(tokens(1), t10).unwrap_err().wait,
        Duration::from_secs(10)
    );
}

#[test]
fn a_leaky_bucket_burst_is_how_far_it_may_run_ahead() {
    let t0 = Instant::now();
    let mut limiter = KeyLimiter::new(shaped(Window::LeakyBucket, Some(3), Some(60), None), t0);
    let view = limiter.view(Dimension::Requests, t0).unwrap();
    assert_eq!(
        (view.limit, view.remaining, view.reset),
        (60, 3, Duration::ZERO)
    );
    for _ in 0..3 {
        assert_eq!(limiter.admit(ONE, t0), Ok(()));
    }
    assert_eq!(
        limiter.admit(ONE, t0).unwrap_err().wait,
        Duration::from_secs(1)
    );
    let view = limiter.view(Dimension::Requests, t0).unwrap();
    assert_eq!((view.remaining, view.reset), (0, Duration::from_secs(3)));
    let half = t0 + Duration::from_millis(1_500);
    assert_eq!(
        limiter.view(Dimension::Requests, half).unwrap().remaining,
        1
    );
    // Without a burst, requests are strictly spaced: one at a time.
    let mut strict = KeyLimiter::new(shaped(Window::LeakyBucket, None, Some(60), None), t0);
    assert_eq!(strict.view(Dimension::Requests, t0).unwrap().remaining, 1);
    assert_eq!(strict.admit(ONE, t0), Ok(()));
    assert_eq!(
        strict.admit(ONE, t0).unwrap_err().wait,
        Duration::from_secs(1)
    );
}

#[test]
fn a_token_bucket_burst_is_its_capacity() {
    let t0 = Instant::now();
    let mut limiter = KeyLimiter::new(shaped(Window::TokenBucket, Some(5), Some(60), None), t0);
    for _ in 0..5 {
        assert_eq!(limiter.admit(ONE, t0), Ok(()));
    }
    assert_eq!(
        limiter.admit(ONE, t0).unwrap_err().wait,
        Duration::from_secs(1)
    );
    // Idle for a minute, it holds its capacity, not a minute's quota.
    let later = t0 + Duration::from_secs(60);
    let view = limiter.view(Dimension::Requests, later).unwrap();
    assert_eq!(
        (view.limit, view.remaining, view.reset),
        (60, 5, Duration::ZERO)
    );
    // On tokens, the capacity is also the largest request.
    let small = KeyLimiter::new(
        shaped(Window::TokenBucket, Some(900), None, Some(6_000)),
        t0,
    );
    let refusal = small.too_large(tokens(901)).unwrap();
    assert_eq!((refusal.limit, refusal.requested), (6_000, 901));
    assert!(small.too_large(tokens(900)).is_none());
}

#[test]
fn a_sliding_window_gives_back_what_left_the_window() {
    // 6,000 tokens a minute over 10 s: 1,000 in any 10 s.
    let t0 = Instant::now();
    let window = Window::Sliding(Duration::from_secs(10));
    let mut limiter = KeyLimiter::new(shaped(window, None, None, Some(6_000)), t0);
    let at = |secs| t0 + Duration::from_secs(secs);
    assert_eq!(limiter.admit(tokens(400), at(0)), Ok(()));
    assert_eq!(limiter.admit(tokens(500), at(3)), Ok(()));
    // 200 more need the first 400 gone: at 10 s.
    assert_eq!(
        limiter.admit(tokens(200), at(5)).unwrap_err().wait,
        Duration::from_secs(5)
    );
    // 700 more need both gone: at 13 s.
    assert_eq!(
        limiter.admit(tokens(700), at(5)).unwrap_err().wait,
        Duration::from_secs(8)
    );
    assert!(limiter.admit(tokens(200), at(10) - NS).is_err());
    assert_eq!(limiter.admit(tokens(200), at(10)), Ok(()));
    let view = limiter.view(Dimension::Tokens, at(10)).unwrap();
    assert_eq!(
        (view.limit, view.remaining, view.reset),
        (6_000, 300, at(20) - at(10))
    );
    assert!(
        limiter.too_large(tokens(1_001)).is_some(),
        "the window's share at most"
    );
}

#[test]
fn a_sliding_window_refund_goes_back_to_its_own_admission() {
    let t0 = Instant::now();
    let window = Window::Sliding(Duration::from_secs(10));
    let mut limiter = KeyLimiter::new(shaped(window, None, None, Some(6_000)), t0);
    let at = |secs| t0 + Duration::from_secs(secs);
    assert_eq!(limiter.admit(tokens(600), at(0)), Ok(()));
    assert_eq!(limiter.admit(tokens(400), at(4)), Ok(()));
    // The answer admitted at 4 s used 100 of its 400: 300 back, leaving it at 4 s.
    limiter.refund(tokens(300), at(4), at(6));
    assert_eq!(
        limiter.view(Dimension::Tokens, at(6)).unwrap().remaining,
        300
    );
    assert_eq!(
        limiter.admit(tokens(301), at(6)).unwrap_err().wait,
        Duration::from_secs(4),
        "the 600 of 0 s leave at 10 s"
    );
    // A refund of what already left the window changes nothing.
    limiter.refund(tokens(600), at(0), at(11));
    assert_eq!(
        limiter.view(Dimension::Tokens, at(11)).unwrap().remaining,
        900
    );
}

#[test]
fn a_sliding_window_log_is_bounded_by_its_share() {
    let t0 = Instant::now();
    let window = Window::Sliding(Duration::from_secs(60));
    let mut limiter = KeyLimiter::new(shaped(window, None, Some(100), None), t0);
    for ms in 0..100_000 {
        let _ = limiter.admit(ONE, t0 + Duration::from_millis(ms * 7));
    }
    let Meter::Sliding(sliding) = &limiter.meters[0].2 else {
        panic!("a sliding window")
    };
    assert!(sliding.logged() <= 100, "{}", sliding.logged());
}

/// Every limiter shape over tokens (6,000 a minute), for the proptests.
fn every_shape() -> Vec<Limits> {
    let sliding = |secs| Window::Sliding(Duration::from_secs(secs));
    [
        (Window::TokenBucket, None),
        (Window::TokenBucket, Some(700)),
        (Window::LeakyBucket, None),
        (Window::LeakyBucket, Some(700)),
        (Window::Fixed(Duration::from_secs(10)), None),
        (sliding(10), None),
        (sliding(60), None),
    ]
    .into_iter()
    .map(|(window, burst)| shaped(window, burst, None, Some(6_000)))
    .collect()
}

proptest! {
    /// A refusal's wait is the truth, to the nanosecond: a nanosecond sooner the request is
    /// refused again, at the wait it is admitted, whatever the shape and the traffic before.
    #[test]
    fn every_shape_admits_exactly_when_it_said(
        gaps in prop::collection::vec(0u64..4_000, 1..150),
        sizes in prop::collection::vec(1u64..600, 150),
    ) {
        for limits in every_shape() {
            let t0 = Instant::now();
            let mut limiter = KeyLimiter::new(limits, t0);
            let mut now = t0;
            for (gap, size) in gaps.iter().zip(&sizes) {
                now += Duration::from_millis(*gap);
                let charge = tokens(*size);
                if let Err(refusal) = limiter.admit(charge, now) {
                    let wait = refusal.wait;
                    prop_assert!(!wait.is_zero());
                    prop_assert!(
                        limiter.clone().admit(charge, now + wait - NS).is_err(),
                        "{:?}: admitted before {wait:?}", limits.window
                    );
                    prop_assert_eq!(
                        limiter.clone().admit(charge, now + wait), Ok(()),
                        "{:?}: refused after {:?}", limits.window, wait
                    );
                }
            }
        }
    }

    /// A sliding window never admits more than its share in any trailing window, and its log
    /// never outgrows the share.
    #[test]
    fn a_sliding_window_never_admits_more_than_its_share(
        gaps in prop::collection::vec(0u64..3_000, 1..300),
        sizes in prop::collection::vec(1u64..400, 300),
    ) {
        let t0 = Instant::now();
        let window = Duration::from_secs(10);
        let mut limiter =
            KeyLimiter::new(shaped(Window::Sliding(window), None, None, Some(6_000)), t0);
        let mut now = t0;
        let mut admitted: Vec<(Instant, u64)> = Vec::new();
        for (gap, size) in gaps.iter().zip(&sizes) {
            now += Duration::from_millis(*gap);
            if limiter.admit(tokens(*size), now).is_ok() {
                admitted.push((now, *size));
            }
        }
        for (end, _) in &admitted {
            let within: u64 = admitted
                .iter()
                .filter(|(at, _)| at <= end && *at + window > *end)
                .map(|(_, size)| size)
                .sum();
            prop_assert!(within <= 1_000, "{within} in the 10 s up to {:?}", *end - t0);
        }
        let Meter::Sliding(sliding) = &limiter.meters[0].2 else {
            panic!("a sliding window")
        };
        prop_assert!(sliding.logged() <= 1_000);
    }

    /// A leaky bucket (like a token bucket of the same burst) never admits more than its burst
    /// plus what the rate allows over any interval.
    #[test]
    fn a_bucket_with_a_burst_never_admits_more_than_the_burst_and_the_rate(
        gaps in prop::collection::vec(0u64..1_500, 1..300),
        burst in 1u64..6,
        leaky in any::<bool>(),
    ) {
        let window = if leaky { Window::LeakyBucket } else { Window::TokenBucket };
        let t0 = Instant::now();
        let mut limiter = KeyLimiter::new(shaped(window, Some(burst), Some(60), None), t0);
        let mut now = t0;
        let mut admitted = Vec::new();
        for gap in gaps {
            now += Duration::from_millis(gap);
            if limiter.admit(ONE, now).is_ok() {
                admitted.push(now);
            }
        }
        for (i, start) in admitted.iter().enumerate() {
            for (j, end) in admitted.iter().enumerate().skip(i) {
                let count = (j - i + 1) as f64;
                let allowed = burst as f64 + (*end - *start).as_secs_f64();
                prop_assert!(count <= allowed + 1e-9, "{count} in {:?}", *end - *start);
            }
        }
    }
}
