//! Plots the adaptive limit over time against tollgate-sim with a hidden capacity of 8 calls in
//! flight (529 beyond) and 64 callers, for AIMD and for the gradient algorithm, in paused time
//! (a 90 s run takes well under a second). Writes `docs/overload-limit.svg` and prints each
//! run's numbers.
//!
//! ```text
//! cargo run -p tollgate-overload --example limit_plot
//! ```

#[path = "../tests/support/converge.rs"]
mod converge;

use std::fmt::Write as _;
use std::time::Duration;

use converge::{CALLERS, CAPACITY, Run, run};
use tollgate_overload::{Gradient, OverloadLayer};

const LENGTH: Duration = Duration::from_secs(90);
const SETTLE: Duration = Duration::from_secs(30);

fn main() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("a runtime");
    let runs = runtime.block_on(async {
        let aimd = run(OverloadLayer::new(), LENGTH, SETTLE).await;
        let gradient = run(
            OverloadLayer::new().with_algorithm(Gradient::new().with_seed(1)),
            LENGTH,
            SETTLE,
        )
        .await;
        [
            ("AIMD (default)", "#1f77b4", aimd),
            ("Gradient", "#d62728", gradient),
        ]
    });
    for (name, _, run) in &runs {
        println!(
            "{name}: {} upstream calls, {} got 529 ({:.2} %), goodput after {} s {:.1}/s of {:.1}/s \
             ({:.0} %), {} shed locally",
            run.upstream,
            run.overloaded,
            run.overloaded as f64 / run.upstream as f64 * 100.0,
            SETTLE.as_secs(),
            run.goodput,
            run.ideal,
            run.goodput / run.ideal * 100.0,
            run.shed_locally,
        );
    }
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/overload-limit.svg");
    std::fs::write(path, svg(&runs)).expect("writable docs/");
    println!("wrote docs/overload-limit.svg");
}

fn svg(runs: &[(&str, &str, Run)]) -> String {
    let (width, height, margin) = (720.0, 360.0, 48.0);
    let max_limit = runs
        .iter()
        .flat_map(|(_, _, run)| run.limits.iter().map(|(_, l)| *l))
        .max()
        .unwrap_or(1)
        .max(CAPACITY * 2) as f64;
    let x = |t: f64| margin + t / LENGTH.as_secs_f64() * (width - 2.0 * margin);
    let y = |l: f64| height - margin - l / max_limit * (height - 2.0 * margin);
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(out, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        out,
        r#"<text x="{margin}" y="20" font-size="14">Adaptive limit vs. a hidden capacity of {CAPACITY} ({CALLERS} callers, tollgate-sim, 529 above capacity)</text>"#
    );
    // Axes, ticks every 10 s and every 4 calls.
    let _ = writeln!(
        out,
        r#"<path d="M{margin} {top} V{bottom} H{right}" stroke="black" fill="none"/>"#,
        top = margin,
        bottom = height - margin,
        right = width - margin
    );
    for t in (0..=LENGTH.as_secs()).step_by(10) {
        let _ = writeln!(
            out,
            r#"<text x="{}" y="{}" text-anchor="middle">{t} s</text>"#,
            x(t as f64),
            height - margin + 16.0
        );
    }
    for l in (0..=max_limit as usize).step_by(4) {
        let _ = writeln!(
            out,
            r#"<text x="{}" y="{}" text-anchor="end">{l}</text>"#,
            margin - 6.0,
            y(l as f64) + 4.0
        );
    }
    // The capacity, and the 8 ± 2 band.
    let _ = writeln!(
        out,
        r##"<rect x="{}" y="{}" width="{}" height="{}" fill="#2ca02c" fill-opacity="0.12"/>"##,
        margin,
        y((CAPACITY + 2) as f64),
        width - 2.0 * margin,
        y((CAPACITY - 2) as f64) - y((CAPACITY + 2) as f64)
    );
    let _ = writeln!(
        out,
        r##"<line x1="{margin}" x2="{}" y1="{c}" y2="{c}" stroke="#2ca02c" stroke-dasharray="4 3"/>"##,
        width - margin,
        c = y(CAPACITY as f64)
    );
    for (i, (name, colour, run)) in runs.iter().enumerate() {
        let points: Vec<String> = run
            .limits
            .iter()
            .map(|(t, l)| format!("{:.1},{:.1}", x(*t), y(*l as f64)))
            .collect();
        let _ = writeln!(
            out,
            r#"<polyline points="{}" fill="none" stroke="{colour}" stroke-width="1.5"/>"#,
            points.join(" ")
        );
        let _ = writeln!(
            out,
            r#"<text x="{}" y="{}" fill="{colour}">{name}: {:.1} % of calls got 529, goodput {:.0} % of capacity</text>"#,
            margin + 10.0,
            margin + 4.0 + 16.0 * i as f64,
            run.overloaded as f64 / run.upstream as f64 * 100.0,
            run.goodput / run.ideal * 100.0,
        );
    }
    out.push_str("</svg>\n");
    out
}
