//! Against tollgate-sim with a hidden capacity of 8 calls in flight (529 beyond) and 64
//! closed-loop callers: the AIMD limit finds the capacity within 30 s of simulated time and
//! stays within 8 ± 2, fewer than 5 % of upstream calls get a 529, and goodput is at least 90 %
//! of what the capacity allows. Paused time, in-process simulator.

#[path = "support/converge.rs"]
mod converge;

use std::time::Duration;

use converge::{CAPACITY, run};
use tollgate_overload::OverloadLayer;

#[tokio::test(start_paused = true)]
async fn aimd_converges_to_the_hidden_capacity() {
    let run = run(
        OverloadLayer::new(),
        Duration::from_secs(90),
        Duration::from_secs(30),
    )
    .await;
    // The first sample from which the limit stays within 8 ± 2 to the end.
    let within = |limit: usize| (CAPACITY - 2..=CAPACITY + 2).contains(&limit);
    let converged_at = run
        .limits
        .iter()
        .rposition(|(_, limit)| !within(*limit))
        .map_or(0.0, |last_out| {
            run.limits[(last_out + 1).min(run.limits.len() - 1)].0
        });
    let settled: Vec<usize> = run
        .limits
        .iter()
        .filter(|(at, _)| *at >= 30.0)
        .map(|(_, limit)| *limit)
        .collect();
    let (low, high) = (
        *settled.iter().min().unwrap(),
        *settled.iter().max().unwrap(),
    );
    let share = run.overloaded as f64 / run.upstream as f64;
    let ideal = run.ideal;
    println!(
        "limit within 8 ± 2 from {converged_at:.2} s; after 30 s: {low}..={high}; {} of {} upstream calls got 529 ({:.2} %); goodput \
         {:.1}/s of {ideal:.1}/s ({:.1} %); {} shed locally",
        run.overloaded,
        run.upstream,
        share * 100.0,
        run.goodput,
        run.goodput / ideal * 100.0,
        run.shed_locally,
    );
    assert!(converged_at <= 30.0, "converged only at {converged_at} s");
    assert!(
        low >= CAPACITY - 2 && high <= CAPACITY + 2,
        "the limit strayed to {low}..={high}"
    );
    assert!(
        share < 0.05,
        "{:.2} % of upstream calls got 529",
        share * 100.0
    );
    assert!(run.goodput >= 0.9 * ideal, "goodput {:.1}/s", run.goodput);
}
