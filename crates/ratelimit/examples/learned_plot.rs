//! Plots a limit learned from refusals over time against the hidden one, for each kind of
//! limiter the simulator plays (no rate-limit headers, offered twice the limit, in paused time:
//! ten minutes take a second or two). Writes `docs/learned-limits.svg` and prints each run's
//! numbers.
//!
//! ```text
//! cargo run --release -p tollgate-ratelimit --example learned_plot
//! ```

#[path = "../tests/support/learn_run.rs"]
mod learn_run;

use std::fmt::Write as _;

use learn_run::{MINUTES, Run, Shape, rate_limited, run};

const FACTOR: u64 = 2;

fn main() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("a runtime");
    let shapes = [
        learn_run::gemini_fixed_minute(),
        learn_run::gemini_per_minute(),
        learn_run::leaky_bucket(),
        learn_run::sliding_minute(),
        learn_run::small_bucket(),
        learn_run::fixed_ten_seconds(),
        learn_run::fixed_second(),
    ];
    let runs: Vec<(Shape, Run)> = shapes
        .into_iter()
        .map(|shape| {
            let run = runtime.block_on(run(&shape, FACTOR));
            (shape, run)
        })
        .collect();
    for (shape, run) in &runs {
        let calls = run.last.received - run.first.received;
        let refused = rate_limited(&run.last) - rate_limited(&run.first);
        let answered: u64 = run.tally.answered[1..MINUTES as usize].iter().sum();
        println!(
            "{} at {FACTOR}x: {:.1} % of the limit after the first minute, {refused} 429s in \
             {calls} upstream calls ({:.2} %), {} reached a caller with time left",
            shape.name,
            answered as f64 / ((MINUTES - 1) * shape.per_minute) as f64 * 100.0,
            refused as f64 / calls.max(1) as f64 * 100.0,
            run.tally.caller_429,
        );
    }
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/learned-limits.svg");
    std::fs::write(path, svg(&runs)).expect("writable docs/");
    println!("wrote docs/learned-limits.svg");
}

/// One panel per shape: the learned pace (a minute) over ten minutes, the hidden limit dashed.
fn svg(runs: &[(Shape, Run)]) -> String {
    let (panel_w, panel_h, margin, columns) = (440.0, 200.0, 44.0, 2usize);
    let rows = runs.len().div_ceil(columns);
    let (width, height) = (panel_w * columns as f64, panel_h * rows as f64 + 30.0);
    let seconds = (MINUTES * 60) as f64;
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="11">"#
    );
    let _ = writeln!(out, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        out,
        r#"<text x="12" y="20" font-size="14">Limits learned from 429s (blue) against the hidden limit (green, dashed), offered {FACTOR}x, no rate-limit headers</text>"#
    );
    for (i, (shape, run)) in runs.iter().enumerate() {
        let (left, top) = (
            (i % columns) as f64 * panel_w,
            30.0 + (i / columns) as f64 * panel_h,
        );
        let hidden = shape.per_minute as f64;
        let max = run
            .learned
            .iter()
            .map(|(_, l)| *l)
            .fold(hidden * 1.5, f64::max);
        let x = |t: f64| left + margin + t / seconds * (panel_w - 1.5 * margin);
        let y = |l: f64| top + panel_h - margin + 10.0 - l / max * (panel_h - 1.5 * margin);
        let bottom = y(0.0);
        let _ = writeln!(
            out,
            r#"<path d="M{} {} V{bottom} H{}" stroke="black" fill="none"/>"#,
            x(0.0),
            y(max),
            x(seconds)
        );
        let _ = writeln!(
            out,
            r#"<text x="{}" y="{}">{}</text>"#,
            x(0.0),
            top + 14.0,
            shape.name
        );
        for minute in (0..=MINUTES).step_by(2) {
            let _ = writeln!(
                out,
                r#"<text x="{}" y="{}" text-anchor="middle">{minute} min</text>"#,
                x((minute * 60) as f64),
                bottom + 14.0
            );
        }
        for tick in [0.0, hidden, max] {
            let _ = writeln!(
                out,
                r#"<text x="{}" y="{}" text-anchor="end">{tick:.0}</text>"#,
                x(0.0) - 4.0,
                y(tick) + 4.0
            );
        }
        let _ = writeln!(
            out,
            r##"<line x1="{}" x2="{}" y1="{h}" y2="{h}" stroke="#2ca02c" stroke-dasharray="4 3"/>"##,
            x(0.0),
            x(seconds),
            h = y(hidden)
        );
        let points: Vec<String> = run
            .learned
            .iter()
            .map(|(t, l)| format!("{:.1},{:.1}", x(*t), y(*l)))
            .collect();
        let _ = writeln!(
            out,
            r##"<polyline points="{}" fill="none" stroke="#1f77b4" stroke-width="1.2"/>"##,
            points.join(" ")
        );
    }
    out.push_str("</svg>\n");
    out
}
