//! Turns one run of `scripts/benchmarks` into `docs/benchmarks/`: the numbers as JSON, the
//! plots as SVG (written by hand, no plotting dependency), and the tables as Markdown.
//!
//! `cargo run -p tollgate-testkit --example bench_report -- CRITERION_DIR RESULTS_DIR OUT_DIR`
//!
//! - `CRITERION_DIR`: criterion's output of the run (`$CRITERION_HOME`); each variant's median
//!   is read from `GROUP/FUNCTION/new/estimates.json`.
//! - `RESULTS_DIR`: what the script's other steps wrote: `goodput.json` (the
//!   `limiter_goodput` example), `batch.json` and `gateway.json` (parsed from the batch
//!   simulation test and `scripts/gateway-overhead`). A missing file skips its plot.
//! - `OUT_DIR`: gets `layers.json`, one `<chart>.svg` per chart, `goodput.svg`, `batch.svg`,
//!   `gateway.svg` and `tables.md`.
//!
//! Each chart puts a layer beside its peers, all measured in the same criterion run; each row
//! gives its median time per call and, against its peer, the ratio of the whole call and of the
//! overhead over the bare service (the call minus the bare service's own).

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};

use serde_json::Value;

/// One row of a chart: criterion's `group/function`, a label, and the peer it is compared to.
type Row = (&'static str, &'static str, Option<&'static str>);

/// One chart: a layer beside its peers.
struct Chart {
    id: &'static str,
    title: &'static str,
    /// The bare service's `group/function`, which overheads are taken over.
    bare: Option<&'static str>,
    rows: &'static [Row],
}

const CHARTS: &[Chart] = &[
    Chart {
        id: "stack",
        title: "Full stack: a chat completion through every layer",
        bare: Some("stack/bare"),
        rows: &[
            ("stack/bare", "bare service", None),
            (
                "stack/tower_builtins",
                "tower built-ins, same four layers",
                None,
            ),
            (
                "stack/tollgate_same_layers",
                "Tollgate: same four + Annotate/Classify",
                Some("stack/tower_builtins"),
            ),
            (
                "stack/standard_stack",
                "Tollgate: LlmStack (balanced)",
                Some("stack/tower_builtins"),
            ),
        ],
    },
    Chart {
        id: "ratelimit-decision",
        title: "Rate limit: one decision",
        bare: None,
        rows: &[
            (
                "single_dimension/governor_fake_clock",
                "governor, fake clock",
                None,
            ),
            (
                "single_dimension/tollgate_fake_clock",
                "Tollgate, fake clock",
                Some("single_dimension/governor_fake_clock"),
            ),
            (
                "single_dimension/governor_real_clock",
                "governor, real clock",
                None,
            ),
            (
                "single_dimension/tollgate_real_clock",
                "Tollgate, real clock",
                Some("single_dimension/governor_real_clock"),
            ),
            (
                "three_dimensions/governor_three_limiters",
                "governor, three limiters",
                None,
            ),
            (
                "three_dimensions/tollgate_three_dimensions",
                "Tollgate, three dimensions",
                Some("three_dimensions/governor_three_limiters"),
            ),
        ],
    },
    Chart {
        id: "ratelimit-layer",
        title: "Rate limit: one call through the layer",
        bare: Some("full_layer/bare"),
        rows: &[
            ("full_layer/bare", "bare service", None),
            ("full_layer/tower_rate_limit", "tower RateLimit", None),
            (
                "full_layer/tower_resilience",
                "tower-resilience RateLimiter",
                Some("full_layer/tower_rate_limit"),
            ),
            (
                "full_layer/tollgate",
                "Tollgate RateLimitLayer",
                Some("full_layer/tower_rate_limit"),
            ),
        ],
    },
    Chart {
        id: "circuit",
        title: "Circuit breaker: the closed path",
        bare: Some("closed_path/bare"),
        rows: &[
            ("closed_path/bare", "bare service", None),
            (
                "closed_path/tower_resilience",
                "tower-resilience CircuitBreaker",
                None,
            ),
            (
                "closed_path/tollgate_shared",
                "Tollgate, one shared circuit",
                Some("closed_path/tower_resilience"),
            ),
            (
                "closed_path/tollgate_per_scope",
                "Tollgate, a circuit per scope",
                Some("closed_path/tower_resilience"),
            ),
        ],
    },
    Chart {
        id: "concurrency",
        title: "Concurrency limit: a call that never waits",
        bare: Some("concurrency_happy_path/bare"),
        rows: &[
            ("concurrency_happy_path/bare", "bare service", None),
            (
                "concurrency_happy_path/tower",
                "tower ConcurrencyLimit",
                None,
            ),
            (
                "concurrency_happy_path/tower_resilience",
                "tower-resilience Bulkhead",
                Some("concurrency_happy_path/tower"),
            ),
            (
                "concurrency_happy_path/tollgate",
                "Tollgate ConcurrencyLimitLayer",
                Some("concurrency_happy_path/tower"),
            ),
            (
                "concurrency_happy_path/tollgate_partitioned",
                "Tollgate, partitioned 90/10",
                Some("concurrency_happy_path/tower"),
            ),
        ],
    },
    Chart {
        id: "overload",
        title: "Adaptive concurrency: a call that never waits",
        bare: Some("overload_happy_path/bare"),
        rows: &[
            ("overload_happy_path/bare", "bare service", None),
            (
                "overload_happy_path/tower",
                "tower ConcurrencyLimit (fixed)",
                None,
            ),
            (
                "overload_happy_path/tollgate_aimd",
                "Tollgate OverloadLayer, AIMD",
                Some("overload_happy_path/tower"),
            ),
            (
                "overload_happy_path/tollgate_gradient",
                "Tollgate OverloadLayer, Gradient",
                Some("overload_happy_path/tower"),
            ),
        ],
    },
    Chart {
        id: "retry",
        title: "Retry: a call that needs no retry",
        bare: Some("no_retry_classified/bare"),
        rows: &[
            ("no_retry_classified/bare", "bare service", None),
            ("no_retry_classified/tower_retry", "tower Retry", None),
            (
                "no_retry_classified/tower_resilience",
                "tower-resilience Retry",
                Some("no_retry_classified/tower_retry"),
            ),
            (
                "no_retry_classified/tollgate",
                "Tollgate RetryLayer",
                Some("no_retry_classified/tower_retry"),
            ),
            (
                "no_retry_classified/tollgate_no_key",
                "Tollgate, no idempotency key",
                Some("no_retry_classified/tower_retry"),
            ),
        ],
    },
    Chart {
        id: "timeout",
        title: "Timeout: a call that never times out",
        bare: Some("timeout_happy_path/bare"),
        rows: &[
            ("timeout_happy_path/bare", "bare service", None),
            ("timeout_happy_path/tower", "tower Timeout", None),
            (
                "timeout_happy_path/tower_resilience",
                "tower-resilience TimeLimiter",
                Some("timeout_happy_path/tower"),
            ),
            (
                "timeout_happy_path/tollgate",
                "Tollgate TimeoutLayer",
                Some("timeout_happy_path/tower"),
            ),
        ],
    },
    Chart {
        id: "cache",
        title: "Cache: a hit, and a request it does not cache",
        bare: Some("hit/bare"),
        rows: &[
            ("hit/bare", "bare service (upstream answers)", None),
            ("hit/cache_hit", "Tollgate CacheLayer, hit", None),
            ("hit/bypass", "Tollgate CacheLayer, bypass", None),
        ],
    },
    Chart {
        id: "core",
        title: "Annotate and Classify: a 2 KB chat request and response",
        bare: Some("core/bare_service_2kb_roundtrip"),
        rows: &[
            (
                "core/bare_service_2kb_roundtrip",
                "bare service, body drained",
                None,
            ),
            (
                "core/annotate_classify_2kb_roundtrip",
                "Annotate + Classify, body drained",
                None,
            ),
            ("core/annotate_fn_2kb_chat", "annotate() alone", None),
            ("core/classify_response_200", "classify_response, 200", None),
            (
                "core/classify_response_429",
                "classify_response, 429 + body",
                None,
            ),
            (
                "core/rate_limit_snapshot",
                "RateLimitSnapshot::from_headers",
                None,
            ),
        ],
    },
];

/// What a row came to.
struct Measured {
    id: &'static str,
    label: &'static str,
    ns: f64,
    low: f64,
    high: f64,
    peer: Option<&'static str>,
    ratio: Option<f64>,
    overhead: Option<f64>,
    overhead_ratio: Option<f64>,
}

/// The median of `group/function` and its confidence interval, in nanoseconds.
fn median(criterion: &Path, id: &str) -> Option<(f64, f64, f64)> {
    let path = criterion.join(id).join("new/estimates.json");
    let text = fs::read_to_string(&path).ok()?;
    let json: Value = serde_json::from_str(&text).ok()?;
    let median = &json["median"];
    let interval = &median["confidence_interval"];
    Some((
        median["point_estimate"].as_f64()?,
        interval["lower_bound"].as_f64()?,
        interval["upper_bound"].as_f64()?,
    ))
}

fn measure(criterion: &Path, chart: &Chart) -> Vec<Measured> {
    let bare = chart.bare.and_then(|id| median(criterion, id)).map(|m| m.0);
    let mut rows = Vec::new();
    for &(id, label, peer) in chart.rows {
        let Some((ns, low, high)) = median(criterion, id) else {
            eprintln!("bench_report: no estimate for {id}, left out");
            continue;
        };
        let peer_ns = peer.and_then(|p| median(criterion, p)).map(|m| m.0);
        let overhead = bare.filter(|_| Some(id) != chart.bare).map(|b| ns - b);
        rows.push(Measured {
            id,
            label,
            ns,
            low,
            high,
            peer,
            ratio: peer_ns.map(|p| ns / p),
            overhead,
            overhead_ratio: match (overhead, peer_ns, bare) {
                (Some(o), Some(p), Some(b)) if p > b => Some(o / (p - b)),
                _ => None,
            },
        });
    }
    rows
}

fn opt(value: Option<f64>) -> String {
    value.map_or_else(|| "null".to_owned(), |v| format!("{v:.3}"))
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// A short label for a peer: the chart row's label.
fn peer_label(chart: &Chart, peer: &str) -> &'static str {
    chart
        .rows
        .iter()
        .find(|row| row.0 == peer)
        .map_or("peer", |row| row.1)
}

fn format_ns(ns: f64) -> String {
    if ns >= 10_000.0 {
        format!("{:.1} µs", ns / 1000.0)
    } else if ns >= 1000.0 {
        format!("{:.2} µs", ns / 1000.0)
    } else {
        format!("{ns:.0} ns")
    }
}

const SVG_HEAD: &str = r#"<rect width="100%" height="100%" fill="white"/>"#;

fn svg_open(out: &mut String, width: u32, height: u32) {
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">"#
    );
    out.push_str(SVG_HEAD);
    out.push('\n');
}

/// Horizontal bars: ns per call, each labelled with its time and its ratios to its peer.
fn bar_chart(chart: &Chart, rows: &[Measured], subtitle: &str) -> String {
    let (left, bar_space, right) = (300.0, 330.0, 270.0);
    let width = (left + bar_space + right) as u32;
    let row_height = 28.0;
    let top = 52.0;
    let height = (top + row_height * rows.len() as f64 + 16.0) as u32;
    let max = rows.iter().map(|r| r.high.max(r.ns)).fold(1.0, f64::max);
    let mut out = String::new();
    svg_open(&mut out, width, height);
    let _ = writeln!(
        out,
        r#"<text x="10" y="20" font-size="15" font-weight="bold">{}</text>"#,
        escape(chart.title)
    );
    let _ = writeln!(
        out,
        r##"<text x="10" y="38" fill="#555">{}</text>"##,
        escape(subtitle)
    );
    for (index, row) in rows.iter().enumerate() {
        let y = top + row_height * index as f64;
        let colour = if Some(row.id) == chart.bare {
            "#9e9e9e"
        } else if row.label.starts_with("Tollgate") {
            "#1f77b4"
        } else {
            "#ff7f0e"
        };
        let w = (row.ns / max * bar_space).max(1.0);
        let _ = writeln!(
            out,
            r#"<text x="{}" y="{}" text-anchor="end">{}</text>"#,
            left - 8.0,
            y + 15.0,
            escape(row.label)
        );
        let _ = writeln!(
            out,
            r#"<rect x="{left}" y="{}" width="{w:.1}" height="20" fill="{colour}"/>"#,
            y + 2.0
        );
        // The 95 % confidence interval of the median.
        let (lo, hi) = (row.low / max * bar_space, row.high / max * bar_space);
        let _ = writeln!(
            out,
            r##"<line x1="{:.1}" x2="{:.1}" y1="{}" y2="{}" stroke="#333"/>"##,
            left + lo,
            left + hi,
            y + 12.0,
            y + 12.0
        );
        let mut note = format_ns(row.ns);
        if let (Some(ratio), Some(peer)) = (row.ratio, row.peer) {
            let _ = write!(note, " · {ratio:.2}× {}", short(peer_label(chart, peer)));
            if let Some(over) = row.overhead_ratio {
                let _ = write!(note, " (overhead {over:.1}×)");
            }
        }
        let _ = writeln!(
            out,
            r#"<text x="{:.1}" y="{}">{}</text>"#,
            left + w.max(hi) + 6.0,
            y + 15.0,
            escape(&note)
        );
    }
    out.push_str("</svg>\n");
    out
}

/// The first word or two of a peer's label ("tower", "governor", "tower-resilience").
fn short(label: &str) -> &str {
    label.split([' ', ',', ':']).next().unwrap_or(label)
}

fn table(chart: &Chart, rows: &[Measured]) -> String {
    let mut out = format!(
        "#### {}\n\n| variant | ns/call (median) | overhead over bare | vs peer (whole call) | vs peer (overhead) |\n|---|---:|---:|---:|---:|\n",
        chart.title
    );
    for row in rows {
        let peer = row.peer.map(|p| short(peer_label(chart, p)));
        let _ = writeln!(
            out,
            "| {} | {:.1} | {} | {} | {} |",
            row.label,
            row.ns,
            row.overhead.map_or("".into(), |o| format!("{o:+.1}")),
            row.ratio
                .map_or("".into(), |r| format!("{r:.2}× {}", peer.unwrap_or(""))),
            row.overhead_ratio
                .map_or("".into(), |r| format!("{r:.2}× {}", peer.unwrap_or(""))),
        );
    }
    out.push('\n');
    out
}

fn read_json(path: &Path) -> Option<Value> {
    let text = fs::read_to_string(path).ok()?;
    match serde_json::from_str(&text) {
        Ok(value) => Some(value),
        Err(e) => {
            eprintln!("bench_report: {} is not JSON: {e}", path.display());
            None
        }
    }
}

fn num(value: &Value, key: &str) -> f64 {
    value[key].as_f64().unwrap_or(f64::NAN)
}

/// Goodput against offered load, both clients, with the limit and the ideal.
fn goodput_svg(goodput: &Value) -> String {
    let points = goodput["points"].as_array().cloned().unwrap_or_default();
    let limit = num(goodput, "limit_per_s");
    let (width, height) = (760.0, 420.0);
    let (left, right, top, bottom) = (60.0, 200.0, 50.0, 50.0);
    let (plot_w, plot_h) = (width - left - right, height - top - bottom);
    let max_x = points
        .iter()
        .map(|p| num(&p["naive"], "offered_per_s"))
        .fold(limit, f64::max)
        * 1.05;
    let max_y = limit * 1.5;
    let x = |v: f64| left + v / max_x * plot_w;
    let y = |v: f64| top + plot_h - v / max_y * plot_h;
    let mut out = String::new();
    svg_open(&mut out, width as u32, height as u32);
    let _ = writeln!(
        out,
        r#"<text x="10" y="20" font-size="15" font-weight="bold">Goodput against offered load, rate limit {:.0}/min</text>"#,
        num(goodput, "limit_per_min")
    );
    let _ = writeln!(
        out,
        r##"<text x="10" y="38" fill="#555">open loop, {:.0} s simulated per point; successes per second after the first {:.0} s</text>"##,
        num(goodput, "duration_s"),
        num(goodput, "warm_up_s")
    );
    // Axes and grid.
    for step in 0..=6 {
        let v = max_y * f64::from(step) / 6.0;
        let _ = writeln!(
            out,
            r##"<line x1="{left}" x2="{:.1}" y1="{:.1}" y2="{:.1}" stroke="#eee"/><text x="{:.1}" y="{:.1}" text-anchor="end">{v:.1}</text>"##,
            left + plot_w,
            y(v),
            y(v),
            left - 6.0,
            y(v) + 4.0
        );
    }
    for point in &points {
        let v = num(&point["naive"], "offered_per_s");
        let _ = writeln!(
            out,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{v:.0} ({}×)</text>"#,
            x(v),
            top + plot_h + 16.0,
            point["load"]
        );
    }
    let _ = writeln!(
        out,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">offered load, requests/s (multiple of the limit)</text>"#,
        left + plot_w / 2.0,
        height - 10.0
    );
    let _ = writeln!(
        out,
        r#"<text x="14" y="{:.1}" transform="rotate(-90 14 {:.1})" text-anchor="middle">goodput, successes/s</text>"#,
        top + plot_h / 2.0,
        top + plot_h / 2.0
    );
    // The limit.
    let _ = writeln!(
        out,
        r##"<line x1="{left}" x2="{:.1}" y1="{:.1}" y2="{:.1}" stroke="#2ca02c" stroke-dasharray="6 4"/>"##,
        left + plot_w,
        y(limit),
        y(limit)
    );
    let series = [
        ("naive", "#ff7f0e", "naive client (SDK retries)"),
        ("tollgate", "#1f77b4", "Tollgate RateLimitLayer"),
    ];
    for (key, colour, _) in series {
        let coords: Vec<String> = points
            .iter()
            .map(|p| {
                format!(
                    "{:.1},{:.1}",
                    x(num(&p[key], "offered_per_s")),
                    y(num(&p[key], "goodput_per_s"))
                )
            })
            .collect();
        let _ = writeln!(
            out,
            // The naive client's line wider, so that it shows under Tollgate's where they meet.
            r#"<polyline points="{}" fill="none" stroke="{colour}" stroke-width="{}"/>"#,
            coords.join(" "),
            if key == "naive" { 6 } else { 2 }
        );
        for (index, p) in points.iter().enumerate() {
            let (px, py) = (
                x(num(&p[key], "offered_per_s")),
                y(num(&p[key], "goodput_per_s")),
            );
            let _ = writeln!(
                out,
                r#"<circle cx="{px:.1}" cy="{py:.1}" r="3.5" fill="{colour}"/>"#
            );
            // 429s and failures beside each point: above for the naive client, below for Tollgate.
            // Alternate rows, so that neighbouring points' notes do not overlap.
            let stagger = 13.0 * (index % 2) as f64;
            let dy = if key == "naive" {
                -10.0 - stagger
            } else {
                18.0 + stagger
            };
            if index > 0 || key == "naive" {
                let _ = writeln!(
                    out,
                    r#"<text x="{px:.1}" y="{:.1}" text-anchor="middle" font-size="10" fill="{colour}">{:.0} calls, {:.0} 429s</text>"#,
                    py + dy,
                    num(&p[key], "upstream_calls"),
                    num(&p[key], "received_429"),
                );
            }
        }
    }
    // Legend.
    let legend_x = left + plot_w + 16.0;
    for (index, (_, colour, name)) in series.iter().enumerate() {
        let ly = top + 20.0 * index as f64;
        let _ = writeln!(
            out,
            r#"<line x1="{legend_x}" x2="{:.1}" y1="{ly}" y2="{ly}" stroke="{colour}" stroke-width="2"/><text x="{:.1}" y="{:.1}">{name}</text>"#,
            legend_x + 20.0,
            legend_x + 26.0,
            ly + 4.0
        );
    }
    let ly = top + 40.0;
    let _ = writeln!(
        out,
        r##"<line x1="{legend_x}" x2="{:.1}" y1="{ly}" y2="{ly}" stroke="#2ca02c" stroke-dasharray="6 4"/><text x="{:.1}" y="{:.1}">the key's limit</text>"##,
        legend_x + 20.0,
        legend_x + 26.0,
        ly + 4.0
    );
    out.push_str("</svg>\n");
    out
}

/// Generic grouped bars: `groups` of (label, [(series value)]), one colour per series.
fn grouped_bars(
    title: &str,
    subtitle: &str,
    unit: &str,
    series: &[(&str, &str)],
    groups: &[(String, Vec<f64>)],
) -> String {
    let (left, top, bottom) = (60.0, 60.0, 50.0);
    let bar = 22.0;
    let group_w = bar * series.len() as f64 + 30.0;
    let width = (left + group_w * groups.len() as f64 + 220.0).max(520.0);
    let (height, plot_h) = (360.0, 360.0 - top - bottom);
    let max = groups
        .iter()
        .flat_map(|(_, values)| values.iter().copied())
        .filter(|v| v.is_finite())
        .fold(0.0, f64::max)
        .max(f64::MIN_POSITIVE)
        * 1.15;
    let y = |v: f64| top + plot_h - v / max * plot_h;
    let mut out = String::new();
    svg_open(&mut out, width as u32, height as u32);
    let _ = writeln!(
        out,
        r##"<text x="10" y="20" font-size="15" font-weight="bold">{}</text><text x="10" y="38" fill="#555">{}</text>"##,
        escape(title),
        escape(subtitle)
    );
    let _ = writeln!(
        out,
        r##"<line x1="{left}" x2="{left}" y1="{top}" y2="{:.1}" stroke="#333"/><line x1="{left}" x2="{:.1}" y1="{:.1}" y2="{:.1}" stroke="#333"/>"##,
        top + plot_h,
        left + group_w * groups.len() as f64,
        top + plot_h,
        top + plot_h
    );
    for (gi, (label, values)) in groups.iter().enumerate() {
        let gx = left + 15.0 + group_w * gi as f64;
        for (si, value) in values.iter().enumerate() {
            if !value.is_finite() {
                continue;
            }
            let bx = gx + bar * si as f64;
            let _ = writeln!(
                out,
                r#"<rect x="{bx:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="{}"/><text x="{:.1}" y="{:.1}" text-anchor="middle" font-size="9">{}</text>"#,
                y(*value),
                bar - 2.0,
                top + plot_h - y(*value),
                series[si].1,
                bx + bar / 2.0 - 1.0,
                y(*value) - 3.0,
                compact(*value)
            );
        }
        let _ = writeln!(
            out,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            gx + bar * series.len() as f64 / 2.0,
            top + plot_h + 16.0,
            escape(label)
        );
    }
    let _ = writeln!(
        out,
        r#"<text x="14" y="{:.1}" transform="rotate(-90 14 {:.1})" text-anchor="middle">{}</text>"#,
        top + plot_h / 2.0,
        top + plot_h / 2.0,
        escape(unit)
    );
    let legend_x = left + group_w * groups.len() as f64 + 20.0;
    for (si, (name, colour)) in series.iter().enumerate() {
        let ly = top + 18.0 * si as f64;
        let _ = writeln!(
            out,
            r#"<rect x="{legend_x:.1}" y="{:.1}" width="12" height="12" fill="{colour}"/><text x="{:.1}" y="{:.1}">{}</text>"#,
            ly - 10.0,
            legend_x + 18.0,
            ly,
            escape(name)
        );
    }
    out.push_str("</svg>\n");
    out
}

fn compact(value: f64) -> String {
    if value >= 100.0 {
        format!("{value:.0}")
    } else if value >= 1.0 {
        format!("{value:.2}")
    } else {
        format!("{value:.3}")
    }
}

fn write(path: PathBuf, text: &str) {
    fs::write(&path, text).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
    println!("wrote {}", path.display());
}

fn main() {
    let args: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    let [criterion, results, out] = args.as_slice() else {
        panic!("usage: bench_report CRITERION_DIR RESULTS_DIR OUT_DIR");
    };
    fs::create_dir_all(out).expect("the output directory");
    let machine = fs::read_to_string(results.join("machine.txt")).unwrap_or_default();
    let subtitle = format!(
        "median ns per call, one criterion run, bars in the same run; {}",
        machine.lines().next().unwrap_or("")
    );

    let mut tables = String::from(
        "<!-- Written by `cargo run -p tollgate-testkit --example bench_report` from one run of scripts/benchmarks. -->\n\n",
    );
    let mut json = String::from("{\"charts\":[");
    let mut first = true;
    for chart in CHARTS {
        let rows = measure(criterion, chart);
        if rows.is_empty() {
            continue;
        }
        write(
            out.join(format!("{}.svg", chart.id)),
            &bar_chart(chart, &rows, &subtitle),
        );
        tables.push_str(&table(chart, &rows));
        let _ = write!(
            json,
            "{}{{\"id\":{:?},\"title\":{:?},\"rows\":[",
            if first { "" } else { "," },
            chart.id,
            chart.title
        );
        first = false;
        for (index, row) in rows.iter().enumerate() {
            let _ = write!(
                json,
                "{}{{\"bench\":{:?},\"label\":{:?},\"median_ns\":{:.3},\"ci_low_ns\":{:.3},\"ci_high_ns\":{:.3},\"peer\":{},\"ratio\":{},\"overhead_ns\":{},\"overhead_ratio\":{}}}",
                if index == 0 { "" } else { "," },
                row.id,
                row.label,
                row.ns,
                row.low,
                row.high,
                row.peer.map_or("null".into(), |p| format!("{p:?}")),
                opt(row.ratio),
                opt(row.overhead),
                opt(row.overhead_ratio),
            );
        }
        json.push_str("]}");
    }
    json.push_str("]}\n");
    let parsed: Value = serde_json::from_str(&json).expect("the report is valid JSON");
    write(
        out.join("layers.json"),
        &(serde_json::to_string_pretty(&parsed).expect("JSON") + "\n"),
    );

    if let Some(goodput) = read_json(&results.join("goodput.json")) {
        write(out.join("goodput.svg"), &goodput_svg(&goodput));
        let _ = writeln!(
            tables,
            "#### Goodput against offered load (limit {:.0}/min = {:.1}/s, {:.0} s per point)\n\n| offered | naive goodput/s | naive 429s | naive failed | naive calls | Tollgate goodput/s | Tollgate 429s | Tollgate failed | Tollgate calls |\n|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
            num(&goodput, "limit_per_min"),
            num(&goodput, "limit_per_s"),
            num(&goodput, "duration_s")
        );
        for p in goodput["points"].as_array().into_iter().flatten() {
            let (n, t) = (&p["naive"], &p["tollgate"]);
            let _ = writeln!(
                tables,
                "| {:.0}/s ({}×) | {:.2} | {:.0} | {:.0} | {:.0} | {:.2} | {:.0} | {:.0} | {:.0} |",
                num(n, "offered_per_s"),
                p["load"],
                num(n, "goodput_per_s"),
                num(n, "received_429"),
                num(n, "failed"),
                num(n, "upstream_calls"),
                num(t, "goodput_per_s"),
                num(t, "received_429"),
                num(t, "failed"),
                num(t, "upstream_calls"),
            );
        }
        tables.push('\n');
    }

    if let Some(batch) = read_json(&results.join("batch.json")) {
        let requests = num(&batch, "requests");
        let calls = num(&batch, "upstream_calls");
        write(
            out.join("batch.svg"),
            &grouped_bars(
                "Embeddings: upstream calls with and without micro-batching",
                &format!(
                    "{requests:.0} single-input requests from {:.0} callers; {:.1} % of calls saved",
                    num(&batch, "callers"),
                    num(&batch, "saved_percent")
                ),
                "upstream calls",
                &[
                    ("without batching", "#ff7f0e"),
                    ("Tollgate BatchLayer", "#1f77b4"),
                ],
                &[("embeddings".to_owned(), vec![requests, calls])],
            ),
        );
        let _ = writeln!(
            tables,
            "#### Embeddings micro-batching\n\n| requests | callers | upstream calls | saved | added latency p50 | p99 |\n|---:|---:|---:|---:|---:|---:|\n| {requests:.0} | {:.0} | {calls:.0} | {:.1} % | {} | {} |\n",
            num(&batch, "callers"),
            num(&batch, "saved_percent"),
            batch["p50"].as_str().unwrap_or("?"),
            batch["p99"].as_str().unwrap_or("?"),
        );
    }

    if let Some(gateway) = read_json(&results.join("gateway.json")) {
        let rates = gateway["rates"].as_array().cloned().unwrap_or_default();
        let groups: Vec<(String, Vec<f64>)> = rates
            .iter()
            .map(|r| {
                (
                    format!("{:.0} rps", num(r, "rps")),
                    vec![
                        num(r, "direct_p50"),
                        num(r, "gateway_p50"),
                        num(r, "direct_p99"),
                        num(r, "gateway_p99"),
                    ],
                )
            })
            .collect();
        write(
            out.join("gateway.svg"),
            &grouped_bars(
                "tollgate proxy: service time, direct and through the gateway",
                &format!(
                    "ms from send to last byte; most sustained: direct {:.0}/s, gateway {:.0}/s",
                    num(&gateway, "direct_max_rps"),
                    num(&gateway, "gateway_max_rps")
                ),
                "ms",
                &[
                    ("direct p50", "#c7c7c7"),
                    ("gateway p50", "#1f77b4"),
                    ("direct p99", "#7f7f7f"),
                    ("gateway p99", "#0b3d66"),
                ],
                &groups,
            ),
        );
        let _ = writeln!(
            tables,
            "#### Gateway overhead (`tollgate proxy`)\n\n| rate | direct p50 | p99 | in-process stack p50 | p99 | gateway p50 | p99 | gateway adds p50 | p99 |\n|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
        );
        for r in &rates {
            let _ = writeln!(
                tables,
                "| {:.0}/s | {:.3} ms | {:.3} ms | {:.3} ms | {:.3} ms | {:.3} ms | {:.3} ms | {:+.3} ms | {:+.3} ms |",
                num(r, "rps"),
                num(r, "direct_p50"),
                num(r, "direct_p99"),
                num(r, "stack_p50"),
                num(r, "stack_p99"),
                num(r, "gateway_p50"),
                num(r, "gateway_p99"),
                num(r, "gateway_p50") - num(r, "direct_p50"),
                num(r, "gateway_p99") - num(r, "direct_p99"),
            );
        }
        let _ = writeln!(
            tables,
            "\nMost sustained (64 in flight, open loop far above capacity): direct {:.0}/s, through the gateway {:.0}/s.\n",
            num(&gateway, "direct_max_rps"),
            num(&gateway, "gateway_max_rps")
        );
    }

    write(out.join("tables.md"), &tables);
}
