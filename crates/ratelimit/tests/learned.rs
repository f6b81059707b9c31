//! Limits learned from refusals, against upstreams that send no rate-limit headers.
//!
//! Done when, for each kind of limiter, offered two and four times its hidden limit for ten
//! simulated minutes: after the first minute the answers reach 95 % of the hidden limit, the
//! upstream's 429s are at most 2 % of its calls, and no request reaches the caller as a 429
//! while its deadline allows waiting it out (a request whose turn would come after its deadline
//! is refused by the limiter itself, at once: with twice the limit offered, half must be; and
//! with that much offered, every request sent has waited nearly its whole deadline, so a 429
//! for one of them is handed back rather than waited out).
//!
//! The stack is the standard one's middle: Annotate → Retry → RateLimit (nothing configured)
//! → Classify → `tollgate-sim` in process, in paused time, so ten minutes take well under a
//! second of the test's own time per run.

mod support {
    pub(crate) mod learn_run;
}

use support::learn_run::*;

/// Runs `shape` at `factor` × its limit and checks what this file promises.
async fn converges(shape: Shape, factor: u64) {
    let Run {
        tally, first, last, ..
    } = run(&shape, factor).await;
    let calls = last.received - first.received;
    let refused = rate_limited(&last) - rate_limited(&first);
    let answered: u64 = tally.answered[1..MINUTES as usize].iter().sum();
    let goodput = answered as f64 / ((MINUTES - 1) * shape.per_minute) as f64;
    let share_429 = refused as f64 / calls.max(1) as f64;
    println!(
        "{} at {factor}×: answers per minute {:?}; after the first minute {:.1} % of the \
         limit, {refused} 429s in {calls} upstream calls ({:.2} %); callers: {} 429s with time \
         left, {} without, {} refused locally, other {:?}",
        shape.name,
        tally.answered,
        goodput * 100.0,
        share_429 * 100.0,
        tally.caller_429,
        tally.out_of_time,
        tally.refused_locally,
        tally.other,
    );
    assert!(goodput >= 0.95, "{}: goodput {goodput:.3}", shape.name);
    assert!(
        share_429 <= 0.02,
        "{}: 429 share {share_429:.3}",
        shape.name
    );
    assert_eq!(
        tally.caller_429, 0,
        "{}: a 429 reached a caller",
        shape.name
    );
    assert!(tally.other.is_empty(), "{}: {:?}", shape.name, tally.other);
}

#[tokio::test(start_paused = true)]
async fn a_leaky_bucket_at_twice_its_limit() {
    converges(leaky_bucket(), 2).await;
}

#[tokio::test(start_paused = true)]
async fn a_leaky_bucket_at_four_times_its_limit() {
    converges(leaky_bucket(), 4).await;
}

#[tokio::test(start_paused = true)]
async fn a_sliding_minute_at_twice_its_limit() {
    converges(sliding_minute(), 2).await;
}

#[tokio::test(start_paused = true)]
async fn a_sliding_minute_at_four_times_its_limit() {
    converges(sliding_minute(), 4).await;
}

#[tokio::test(start_paused = true)]
async fn a_small_token_bucket_at_twice_its_limit() {
    converges(small_bucket(), 2).await;
}

#[tokio::test(start_paused = true)]
async fn a_small_token_bucket_at_four_times_its_limit() {
    converges(small_bucket(), 4).await;
}

#[tokio::test(start_paused = true)]
async fn fixed_ten_second_windows_at_twice_their_limit() {
    converges(fixed_ten_seconds(), 2).await;
}

#[tokio::test(start_paused = true)]
async fn fixed_ten_second_windows_at_four_times_their_limit() {
    converges(fixed_ten_seconds(), 4).await;
}

#[tokio::test(start_paused = true)]
async fn fixed_one_second_windows_at_twice_their_limit() {
    converges(fixed_second(), 2).await;
}

#[tokio::test(start_paused = true)]
async fn fixed_one_second_windows_at_four_times_their_limit() {
    converges(fixed_second(), 4).await;
}

#[tokio::test(start_paused = true)]
async fn a_per_minute_bucket_at_twice_its_limit() {
    converges(gemini_per_minute(), 2).await;
}

#[tokio::test(start_paused = true)]
async fn a_per_minute_bucket_at_four_times_its_limit() {
    converges(gemini_per_minute(), 4).await;
}

#[tokio::test(start_paused = true)]
async fn fixed_minute_windows_at_twice_their_limit() {
    converges(gemini_fixed_minute(), 2).await;
}

#[tokio::test(start_paused = true)]
async fn fixed_minute_windows_at_four_times_their_limit() {
    converges(gemini_fixed_minute(), 4).await;
}
