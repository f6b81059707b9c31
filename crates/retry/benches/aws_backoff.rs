//! Marc Brooker's "Exponential Backoff and Jitter" (AWS Architecture Blog, 2015), replayed with
//! Tollgate's own [`Backoff`].
//!
//! `cargo bench -p tollgate-retry --bench aws_backoff`. N clients contend on one row under
//! optimistic concurrency control. A call is the published simulator's four messages, each
//! delayed N(10 ms, 2 ms) (its absolute value, as there): the read request, after which the row's
//! version is read; the version back to the client; the write, which succeeds only if the
//! version is still the one read (and then increments it), so a write by another client in
//! between is a conflict; and the result back to the client. After a conflict the client backs
//! off and calls again; it is done when its write succeeds. Base 5 ms, cap 2 s; 10, 50 and 100
//! clients; exponential backoff without jitter, with full and with equal jitter, and
//! decorrelated jitter, all from [`Backoff::delay`] numbered as the layer numbers retries (the
//! first retry waits `base`; the published simulator's first waits `2 × base`).
//!
//! It is a discrete-event simulation: every client is a task on a `current_thread` runtime with
//! tokio's clock paused, so virtual time jumps from one timer to the next and a run takes
//! milliseconds of real time. Tokio's timers tick every millisecond, so virtual time runs
//! [`SLOWDOWN`] times slower than simulated time: a tick is a simulated microsecond.
//!
//! The tables give total calls (every attempt), the same relative to exponential backoff
//! without jitter, and the completion time (when the last client succeeded), averaged over
//! [`SEEDS`] seeds. The run then asserts the published shape: at 50 and 100 clients, full and
//! decorrelated jitter need at most 70 % of the calls of exponential backoff without jitter
//! (the reference simulator gives 43–59 %) and finish in a fifth of its time.

use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;

use rand::RngExt as _;
use tokio::task::LocalSet;
use tokio::time::Instant;
use tollgate_core::rng::{self, Rng};
use tollgate_retry::{Backoff, Jitter};

const BASE: Duration = Duration::from_millis(5);
const CAP: Duration = Duration::from_millis(2_000);
/// The delay of one message: normal, mean and standard deviation in milliseconds.
const NETWORK_MEAN_MS: f64 = 10.0;
const NETWORK_SIGMA_MS: f64 = 2.0;
const CLIENTS: [usize; 3] = [10, 50, 100];
/// Runs averaged per cell of the table.
const SEEDS: u64 = 10;
/// Virtual time runs this much slower than simulated time, so that tokio's one-millisecond
/// timer tick is a simulated microsecond.
const SLOWDOWN: u32 = 1_000;

const fn exponential(jitter: Jitter) -> Backoff {
    Backoff::Exponential {
        base: BASE,
        multiplier: 2.0,
        cap: CAP,
        jitter,
    }
}

const STRATEGIES: [(&str, Backoff); 4] = [
    ("exponential, no jitter", exponential(Jitter::None)),
    ("full jitter", exponential(Jitter::Full)),
    ("equal jitter", exponential(Jitter::Equal)),
    (
        "decorrelated jitter",
        Backoff::Decorrelated {
            base: BASE,
            cap: CAP,
        },
    ),
];

/// The delay of one message, drawn with the Box–Muller transform (no `rand_distr` for
/// rand 0.10).
fn network_delay(rng: &mut Rng) -> Duration {
    // `1 - u` is in (0, 1]: the logarithm stays finite.
    let u1 = 1.0 - rng.random::<f64>();
    let u2 = rng.random::<f64>();
    let z = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
    Duration::from_secs_f64((NETWORK_MEAN_MS + NETWORK_SIGMA_MS * z).abs() / 1_000.0)
}

/// One client: calls until its conditional write succeeds; returns its calls and when it was
/// done (when the successful write's response arrived).
async fn client(row: Rc<Cell<u64>>, backoff: Backoff, mut rng: Rng) -> (u64, Instant) {
    let mut calls = 0;
    // `previous` starts at zero, as in `RetryFuture`.
    let mut previous = Duration::ZERO;
    loop {
        calls += 1;
        network(&mut rng).await; // the read request
        let read = row.get();
        network(&mut rng).await; // the version, back to the client
        network(&mut rng).await; // the conditional write
        let written = row.get() == read;
        if written {
            row.set(read + 1);
        }
        network(&mut rng).await; // the write's result, back to the client
        if written {
            return (calls, Instant::now());
        }
        let retry = u32::try_from(calls).unwrap_or(u32::MAX);
        let wait = backoff.delay(retry, previous, &mut rng);
        previous = wait;
        tokio::time::sleep(wait * SLOWDOWN).await;
    }
}

/// One message crossing the network.
async fn network(rng: &mut Rng) {
    tokio::time::sleep(network_delay(rng) * SLOWDOWN).await;
}

/// One run: total calls and the completion time.
fn simulate(backoff: Backoff, clients: usize, seed: u64) -> (u64, Duration) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    LocalSet::new().block_on(&runtime, async {
        let row = Rc::new(Cell::new(0));
        let start = Instant::now();
        let tasks: Vec<_> = (0..clients as u64)
            .map(|i| {
                let rng = rng::seeded(seed.wrapping_mul(1_000_003).wrapping_add(i));
                tokio::task::spawn_local(client(row.clone(), backoff, rng))
            })
            .collect();
        let (mut calls, mut last) = (0, start);
        for task in tasks {
            let (client_calls, done) = task.await.unwrap();
            calls += client_calls;
            last = last.max(done);
        }
        assert_eq!(row.get(), clients as u64, "every client wrote exactly once");
        (calls, (last - start) / SLOWDOWN)
    })
}

/// Mean calls and mean completion time in milliseconds over [`SEEDS`] runs.
fn average(backoff: Backoff, clients: usize) -> (f64, f64) {
    let (mut calls, mut time) = (0, Duration::ZERO);
    for seed in 0..SEEDS {
        let (c, t) = simulate(backoff, clients, seed);
        calls += c;
        time += t;
    }
    (
        calls as f64 / SEEDS as f64,
        time.as_secs_f64() * 1_000.0 / SEEDS as f64,
    )
}

/// A table of `cell(strategy, column)`: a row per strategy, a column per client count.
fn print_table(title: &str, cell: impl Fn(usize, usize) -> f64) {
    print!("{title:<24}");
    for n in CLIENTS {
        print!("{:>14}", format!("{n} clients"));
    }
    println!();
    for (strategy, (name, _)) in STRATEGIES.iter().enumerate() {
        print!("{name:<24}");
        for column in 0..CLIENTS.len() {
            print!("{:>14.2}", cell(strategy, column));
        }
        println!();
    }
}

fn main() {
    let wall = std::time::Instant::now();
    let results: Vec<Vec<(f64, f64)>> = STRATEGIES
        .iter()
        .map(|&(_, backoff)| CLIENTS.iter().map(|&n| average(backoff, n)).collect())
        .collect();

    println!(
        "AWS backoff simulation: base {BASE:?}, cap {CAP:?}, network N({NETWORK_MEAN_MS} ms, \
         {NETWORK_SIGMA_MS} ms), mean of {SEEDS} seeds"
    );
    let no_jitter = &results[0];
    print_table("calls", |s, c| results[s][c].0);
    print_table("calls / no jitter", |s, c| results[s][c].0 / no_jitter[c].0);
    print_table("completion time (ms)", |s, c| results[s][c].1);
    println!("simulated in {:?}", wall.elapsed());

    // The published shape: jitter that spreads clients out needs far less work.
    let mut misses = Vec::new();
    for strategy in [1, 3] {
        for (column, &n) in CLIENTS.iter().enumerate().filter(|&(_, &n)| n >= 50) {
            let (calls, baseline) = (results[strategy][column].0, no_jitter[column].0);
            if calls > baseline * 0.7 {
                misses.push(format!(
                    "{} at {n} clients: {calls:.1} calls, more than 70 % of {baseline:.1}",
                    STRATEGIES[strategy].0
                ));
            }
            let (time, baseline_time) = (results[strategy][column].1, no_jitter[column].1);
            if time > baseline_time / 5.0 {
                misses.push(format!(
                    "{} at {n} clients: {time:.0} ms, more than a fifth of {baseline_time:.0} ms",
                    STRATEGIES[strategy].0
                ));
            }
        }
    }
    assert!(
        misses.is_empty(),
        "not the published shape (vs exponential backoff without jitter):\n{}",
        misses.join("\n")
    );
}
