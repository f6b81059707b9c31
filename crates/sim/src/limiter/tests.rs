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
    limiter.refund(charge, t0 + Duration::from_secs(3));
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
