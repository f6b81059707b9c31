//! Allocations per operation in steady state, read from a counting global allocator.
//!
//! The workspace forbids unsafe code, even in benches, and a `GlobalAlloc` needs an
//! `unsafe impl`: `stats_alloc` is that wrapper (atomic counters around `System`), and nothing
//! more. A global allocator is one per binary, so each bench declares its own and passes it in:
//!
//! ```rust,standalone_crate
//! use std::alloc::System;
//!
//! use stats_alloc::{INSTRUMENTED_SYSTEM, StatsAlloc};
//! use tollgate_testkit::allocations_per_op;
//!
//! #[global_allocator]
//! static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;
//!
//! fn main() {
//!     let per_op = allocations_per_op(GLOBAL, || 16, |len| vec![0_u8; len]);
//!     assert_eq!(per_op, 1.0);
//! }
//! ```

use std::alloc::System;
use std::hint::black_box;

use stats_alloc::StatsAlloc;

/// Operations counted, after the warm-up.
const OPS: usize = 10_000;
/// Operations run first, uncounted, so that lazily built state exists.
const WARM_UP: usize = 100;

/// Allocations and reallocations per `op` in steady state: after a warm-up, counting only
/// inside `op` (its input is made by `setup` before, its output dropped after).
///
/// `allocator` must be the binary's `#[global_allocator]`, or nothing is counted.
pub fn allocations_per_op<I, O>(
    allocator: &StatsAlloc<System>,
    mut setup: impl FnMut() -> I,
    mut op: impl FnMut(I) -> O,
) -> f64 {
    for _ in 0..WARM_UP {
        drop(op(setup()));
    }
    let mut allocations = 0;
    for _ in 0..OPS {
        let input = setup();
        let before = allocator.stats();
        let output = black_box(op(input));
        let after = allocator.stats();
        drop(output);
        allocations +=
            after.allocations + after.reallocations - (before.allocations + before.reallocations);
    }
    allocations as f64 / OPS as f64
}
