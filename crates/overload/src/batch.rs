//! The batch-size signal for batchers: circuit-aware and error-responsive.

use crate::detector::OverloadState;

/// How many requests to merge into one upstream call, at most `max` and at least 1.
///
/// By state: Normal `max`, Warning `max / 2`, Recovering `max / 4`, Critical 1; then scaled by
/// the share of calls that succeed (`1 − bad_share`); 1 while the breaker is open. A batch that
/// fails takes all its members with it, so batches shrink as failures grow.
pub fn recommended_batch_size(
    max: usize,
    state: OverloadState,
    bad_share: f64,
    breaker_open: bool,
) -> usize {
    if breaker_open {
        return 1;
    }
    let by_state = match state {
        OverloadState::Normal => max,
        OverloadState::Warning => max / 2,
        OverloadState::Recovering => max / 4,
        OverloadState::Critical => 1,
    };
    let healthy = (1.0 - bad_share).clamp(0.0, 1.0);
    ((by_state as f64 * healthy).floor() as usize).clamp(1, max.max(1))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn shrinks_with_the_state_and_the_errors() {
        use OverloadState::*;
        assert_eq!(recommended_batch_size(256, Normal, 0.0, false), 256);
        assert_eq!(recommended_batch_size(256, Normal, 0.02, false), 250);
        assert_eq!(recommended_batch_size(256, Warning, 0.1, false), 115);
        assert_eq!(recommended_batch_size(256, Recovering, 0.0, false), 64);
        assert_eq!(recommended_batch_size(256, Critical, 0.0, false), 1);
        assert_eq!(recommended_batch_size(256, Normal, 0.0, true), 1);
        assert_eq!(recommended_batch_size(0, Normal, 0.0, false), 1);
    }

    proptest! {
        #[test]
        fn always_between_one_and_max_and_never_larger_when_worse(
            max in 1usize..5000, share in 0.0f64..=1.0, more in 0.0f64..=1.0,
        ) {
            for state in [OverloadState::Normal, OverloadState::Warning,
                          OverloadState::Recovering, OverloadState::Critical] {
                let size = recommended_batch_size(max, state, share, false);
                prop_assert!((1..=max).contains(&size));
                let worse = recommended_batch_size(max, state, (share + more).min(1.0), false);
                prop_assert!(worse <= size);
            }
        }
    }
}
