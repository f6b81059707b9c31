//! What a layer's `metrics` tests compare: the series a `metrics-util` `DebuggingRecorder`
//! holds, as text.

use std::collections::BTreeMap;

use metrics_util::debugging::{DebugValue, Snapshotter};
use tollgate_core::CredentialId;

/// Every series the recorder holds whose name starts with one of `prefixes`, as
/// `name{label=value,...}` (labels sorted) and its value (`counter 3`, `gauge 1`,
/// `histogram [0.25]`). Taking a snapshot drains histograms (and the recorder resets counters).
///
/// Give each layer's test its own prefixes: with every feature on (`cargo test --workspace
/// --all-features`) the layers around the one under test record their series too.
pub fn recorded(snapshotter: &Snapshotter, prefixes: &[&str]) -> BTreeMap<String, String> {
    snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .filter(|(key, _, _, _)| {
            let name = key.key().name();
            prefixes.iter().any(|prefix| name.starts_with(prefix))
        })
        .map(|(key, _, _, value)| {
            let (_, key) = key.into_parts();
            let mut labels: Vec<String> = key
                .labels()
                .map(|label| format!("{}={}", label.key(), label.value()))
                .collect();
            labels.sort();
            let value = match value {
                DebugValue::Counter(n) => format!("counter {n}"),
                DebugValue::Gauge(g) => format!("gauge {g}"),
                DebugValue::Histogram(values) => format!("histogram {values:?}"),
            };
            (format!("{}{{{}}}", key.name(), labels.join(",")), value)
        })
        .collect()
}

/// Asserts that no series in `recorded` (its name or labels) holds `secret` or the
/// [`CredentialId`] derived from it: a layer's metrics never carry a credential.
///
/// # Panics
///
/// Naming the series that does.
pub fn assert_no_credential(recorded: &BTreeMap<String, String>, secret: &str) {
    let id = CredentialId::from_secret(secret.as_bytes());
    for series in recorded.keys() {
        assert!(
            !series.contains(secret) && !series.contains(id.as_str()),
            "a credential in a metric: {series}"
        );
    }
}
