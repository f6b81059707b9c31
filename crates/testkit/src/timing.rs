//! Time per call measured apart from criterion, for the overhead summaries.

use std::hint::black_box;
use std::time::Instant;

/// Nanoseconds per `op` over one batch of `batch` inputs, all made by `setup` before the timing
/// and every output dropped after it, as criterion's `iter_batched` does.
pub fn nanos_per_op<I, O>(
    batch: usize,
    mut setup: impl FnMut() -> I,
    mut op: impl FnMut(I) -> O,
) -> f64 {
    let inputs: Vec<I> = (0..batch).map(|_| setup()).collect();
    let mut outputs = Vec::with_capacity(batch);
    let start = Instant::now();
    for input in inputs {
        outputs.push(op(input));
    }
    let elapsed = start.elapsed();
    drop(black_box(outputs));
    elapsed.as_nanos() as f64 / batch as f64
}

/// The median of `samples` (the upper one of an even count).
///
/// # Panics
///
/// If `samples` is empty.
pub fn median(mut samples: Vec<f64>) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

/// Each variant's median nanoseconds per call, the baseline first: what
/// [`Comparison::medians`](crate::Comparison::medians) found.
#[derive(Clone, Debug, PartialEq)]
pub struct Medians {
    rows: Vec<(&'static str, f64)>,
}

impl Medians {
    /// Each variant's name and median, the baseline first.
    ///
    /// # Panics
    ///
    /// If `rows` is empty.
    pub fn new(rows: Vec<(&'static str, f64)>) -> Self {
        assert!(!rows.is_empty(), "a baseline at least");
        Self { rows }
    }

    /// The variants' names and medians, in the order they were added.
    pub fn rows(&self) -> &[(&'static str, f64)] {
        &self.rows
    }

    /// The median of the variant `name`.
    ///
    /// # Panics
    ///
    /// If there is no such variant.
    pub fn get(&self, name: &str) -> f64 {
        let row = self.rows.iter().find(|&&(row, _)| row == name);
        row.unwrap_or_else(|| panic!("no variant {name}")).1
    }

    /// Prints a table, indented four spaces: each variant's nanoseconds per call, its overhead
    /// over the baseline, and both as a ratio to the `peer` variant's.
    ///
    /// # Panics
    ///
    /// If there is no variant `peer`.
    pub fn print(&self, peer: &str) {
        let (_, bare) = self.rows[0];
        let peer_ns = self.get(peer);
        let peer_overhead = peer_ns - bare;
        let name_width = self.rows.iter().map(|(name, _)| name.len()).max();
        let name = name_width.unwrap_or_default();
        let vs_peer = format!("vs {peer}");
        let overhead_vs_peer = format!("overhead vs {peer}");
        let (vs, overhead_vs) = (vs_peer.len(), overhead_vs_peer.len());
        println!(
            "    {:<name$} {:>9} {:>9} {vs_peer:>vs$} {overhead_vs_peer:>overhead_vs$}",
            "", "ns/call", "overhead"
        );
        for (index, &(variant, ns)) in self.rows.iter().enumerate() {
            let over = ns - bare;
            let (ratio, over_ratio) = if index == 0 {
                (String::new(), String::new())
            } else {
                (
                    format!("{:.2}", ns / peer_ns),
                    format!("{:.2}", over / peer_overhead),
                )
            };
            println!(
                "    {variant:<name$} {ns:>9.1} {over:>9.1} {ratio:>vs$} {over_ratio:>overhead_vs$}"
            );
        }
    }
}
