//! The variants of one bench (a bare service, a peer's layer, Tollgate's), registered once and
//! measured three ways: in criterion's group, and in the two summaries the benches print around
//! criterion's numbers (allocations per call, overhead over the bare service).

use std::alloc::System;
use std::fmt;
use std::fmt::Debug;

use criterion::measurement::WallTime;
use criterion::{BatchSize, Bencher, BenchmarkGroup};
use http::Response;
use http_body::Body;
use stats_alloc::StatsAlloc;
use tower::Service;

use crate::alloc::allocations_per_op;
use crate::poll::{roundtrip, roundtrip_drained};
use crate::timing::{Medians, median, nanos_per_op};

/// What a variant is asked for.
enum Measure<'m, 'b> {
    Once,
    Allocations(&'m StatsAlloc<System>),
    NanosPerOp { batch: usize },
    Criterion(&'m mut Bencher<'b>),
}

/// One variant: its name, and its operation measured (what was counted or timed, or zero).
type Variant<'a> = (&'static str, Box<dyn FnMut(Measure<'_, '_>) -> f64 + 'a>);

/// Named variants of one operation, each with the inputs it takes, measured alike.
///
/// The first variant added is the baseline (the bare service) that
/// [`Medians::print`] takes every overhead over. Each variant is monomorphized: what is timed
/// or counted is its own operation, with no dynamic call per operation.
///
/// ```
/// use std::convert::Infallible;
///
/// use http::{Request, Response};
/// use tollgate_testkit::{Comparison, chat_requests};
///
/// let respond = |_: Request<()>| async { Ok::<_, Infallible>(Response::new(())) };
/// let (mut bare, mut peer) = (tower::service_fn(respond), tower::service_fn(respond));
/// let medians = Comparison::new()
///     .call("bare", &mut bare, chat_requests())
///     .call("peer", &mut peer, chat_requests())
///     .medians(3, 100);
/// assert_eq!(medians.rows().len(), 2);
/// ```
pub struct Comparison<'a> {
    variants: Vec<Variant<'a>>,
}

impl<'a> Comparison<'a> {
    /// No variants yet.
    pub fn new() -> Self {
        Self {
            variants: Vec::new(),
        }
    }

    /// Adds a variant: `op` on inputs made by `setup`, outside the measure; `op`'s output is
    /// dropped outside it too.
    pub fn variant<I, O>(
        mut self,
        name: &'static str,
        mut setup: impl FnMut() -> I + 'a,
        mut op: impl FnMut(I) -> O + 'a,
    ) -> Self {
        let measure = move |measure: Measure<'_, '_>| match measure {
            Measure::Once => {
                drop(op(setup()));
                0.0
            }
            Measure::Allocations(allocator) => allocations_per_op(allocator, &mut setup, &mut op),
            Measure::NanosPerOp { batch } => nanos_per_op(batch, &mut setup, &mut op),
            Measure::Criterion(bencher) => {
                bencher.iter_batched(&mut setup, &mut op, BatchSize::SmallInput);
                0.0
            }
        };
        self.variants.push((name, Box::new(measure)));
        self
    }

    /// Adds a variant that makes a [`roundtrip`] through `service`, a request from `requests`
    /// each; the response is dropped outside the measure.
    pub fn call<S, R>(
        self,
        name: &'static str,
        service: &'a mut S,
        requests: impl FnMut() -> R + 'a,
    ) -> Self
    where
        S: Service<R>,
        S::Error: Debug,
    {
        self.variant(name, requests, |request| roundtrip(service, request))
    }

    /// Adds a variant that makes a [`roundtrip_drained`] through `service`, a request from
    /// `requests` each: reading the body and dropping the response are measured.
    pub fn drained<S, R, B>(
        self,
        name: &'static str,
        service: &'a mut S,
        requests: impl FnMut() -> R + 'a,
    ) -> Self
    where
        S: Service<R, Response = Response<B>>,
        S::Error: Debug,
        B: Body,
        B::Error: Debug,
    {
        self.variant(name, requests, |request| {
            roundtrip_drained(service, request)
        })
    }

    /// Runs each variant once, so that what it builds on its first call (a scope's state)
    /// exists before the measures.
    pub fn warm_up(self) {
        self.measure_each(1, || Measure::Once);
    }

    /// Adds each variant to criterion's `group` under its name, timed with `iter_batched`
    /// (inputs made and outputs dropped outside the timing, as in [`nanos_per_op`]).
    pub fn bench(mut self, group: &mut BenchmarkGroup<'_, WallTime>) {
        for (name, variant) in &mut self.variants {
            group.bench_function(*name, |bencher| {
                variant(Measure::Criterion(bencher));
            });
        }
    }

    /// Each variant's allocations per operation in steady state (see [`allocations_per_op`]),
    /// in the order they were added.
    pub fn allocations(self, allocator: &StatsAlloc<System>) -> Vec<(&'static str, f64)> {
        self.measure_each(1, || Measure::Allocations(allocator))
            .into_iter()
            .map(|(name, mut counts)| (name, counts.remove(0)))
            .collect()
    }

    /// Prints each variant's [allocations](Self::allocations) per operation, a line each,
    /// indented two spaces and named `{group}/{variant}`.
    pub fn print_allocations(self, allocator: &StatsAlloc<System>, group: &str) {
        for (name, per_op) in self.allocations(allocator) {
            println!("  {:<45} {per_op:>6.2}", format!("{group}/{name}"));
        }
    }

    /// Each variant's median nanoseconds per operation over `rounds` batches of `batch`: the
    /// variants in turn, batch after batch, so that a drift of the machine (its clock speed, a
    /// neighbour's load) touches them all alike.
    ///
    /// # Panics
    ///
    /// If there are no variants, or `rounds` is zero.
    pub fn medians(self, rounds: usize, batch: usize) -> Medians {
        let samples = self.measure_each(rounds, || Measure::NanosPerOp { batch });
        let rows = samples.into_iter().map(|(name, s)| (name, median(s)));
        Medians::new(rows.collect())
    }

    /// `rounds` measures of every variant, interleaved.
    fn measure_each<'m>(
        mut self,
        rounds: usize,
        measure: impl Fn() -> Measure<'m, 'm>,
    ) -> Vec<(&'static str, Vec<f64>)> {
        let mut samples = vec![Vec::with_capacity(rounds); self.variants.len()];
        for _ in 0..rounds {
            for ((_, variant), samples) in self.variants.iter_mut().zip(&mut samples) {
                samples.push(variant(measure()));
            }
        }
        let names = self.variants.iter().map(|&(name, _)| name);
        names.zip(samples).collect()
    }
}

impl Default for Comparison<'_> {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for Comparison<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<_> = self.variants.iter().map(|&(name, _)| name).collect();
        f.debug_struct("Comparison")
            .field("variants", &names)
            .finish()
    }
}
