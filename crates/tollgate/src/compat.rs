//! The keys other tools' config files use, read as Tollgate's: what a team's existing
//! settings (`max_requests_per_minute`, `circuit_breaker.failure_threshold`,
//! `backoff_strategy.*`, `min_delay_between_calls`, ...) mean here.
//!
//! Each is moved to the key that does the same thing before the file is read (so the usual
//! checks apply), with the checks a move needs made here, against the key as written. A key
//! Tollgate cannot honour is dropped with a [`ConfigWarning`] saying why, never silently.

use std::time::Duration;

use serde_json::{Map, Value};
use tollgate_core::config::ConfigError;

use crate::config::ConfigWarning;

type Object = Map<String, Value>;

/// What was read that needs the merged config to apply (it depends on the preset).
#[derive(Debug, Default)]
pub(crate) struct Normalized {
    /// `burst_mode = false`: spread each minute's requests evenly.
    pub(crate) no_burst: bool,
    /// Keys read under another name: (the name here, as written).
    pub(crate) written: Vec<(String, String)>,
}

impl Normalized {
    /// The key as written for an error found at `field` (its name here).
    pub(crate) fn as_written(&self, field: &str) -> Option<String> {
        self.written
            .iter()
            .filter(|(ours, _)| {
                field == ours
                    || field
                        .strip_prefix(ours.as_str())
                        .is_some_and(|rest| rest.starts_with('.'))
            })
            .max_by_key(|(ours, _)| ours.len())
            .map(|(ours, theirs)| format!("{theirs}{}", &field[ours.len()..]))
    }
}

/// Rewrites `doc` (one config file, or a preset) into Tollgate's own keys.
pub(crate) fn normalize(
    doc: &mut Object,
    warnings: &mut Vec<ConfigWarning>,
) -> Result<Normalized, ConfigError> {
    let mut normalized = Normalized::default();
    // A `[pool]` without members is a request pool (calls in flight and a rate), not a pool of
    // keys: its keys are read as top-level ones.
    if doc
        .get("pool")
        .and_then(Value::as_object)
        .is_some_and(|pool| !pool.contains_key("members"))
        && let Some(Value::Object(pool)) = doc.remove("pool")
    {
        for (key, value) in pool {
            doc.entry(key).or_insert(value);
        }
    }
    // Top-level settings of other tools.
    for (key, path) in [
        (
            "max_requests_per_minute",
            "rate_limit.quotas.requests_per_minute",
        ),
        (
            "requests_per_minute",
            "rate_limit.quotas.requests_per_minute",
        ),
        (
            "max_tokens_per_minute",
            "rate_limit.quotas.tokens_per_minute",
        ),
        ("tokens_per_minute", "rate_limit.quotas.tokens_per_minute"),
    ] {
        if let Some(value) = take_positive(doc, key)? {
            put(doc, path, value);
        }
    }
    for key in [
        "max_concurrent_requests",
        "max_concurrent",
        "max_concurrent_api_calls",
    ] {
        if let Some(value) = take_positive(doc, key)? {
            put(doc, "concurrency.max_in_flight", value);
        }
    }
    for (key, path) in [
        ("adaptive_concurrency", "overload.adaptive"),
        ("limits_per_model", "rate_limit.per_model"),
        ("learn_limits", "rate_limit.learn"),
        ("request_timeout", "retry.deadline"),
        ("timeout", "timeouts.total"),
        ("min_delay_between_calls", "rate_limit.quotas.min_interval"),
    ] {
        if let Some(value) = doc.remove(key) {
            put(doc, path, value);
            normalized.written.push((path.to_owned(), key.to_owned()));
        }
    }
    for key in ["optimal_batch_size", "max_batch_size"] {
        if let Some(value) = take_positive(doc, key)? {
            put(doc, "batch.max_batch_size", value);
        }
    }
    if let Some(value) = take_positive(doc, "rate_limit_per_key")? {
        let per_second = value.as_u64().unwrap_or(1);
        put(
            doc,
            "rate_limit.quotas.requests_per_minute",
            Value::from(per_second.saturating_mul(60)),
        );
        put(doc, "rate_limit.per_model", Value::Bool(false));
        warnings.push(ConfigWarning::new(
            "rate_limit_per_key",
            format!(
                "read as {per_second} requests a second per key, across its models \
                 ({} a minute); set rate_limit.quotas.requests_per_minute to say otherwise",
                per_second.saturating_mul(60)
            ),
        ));
    }
    for key in ["max_attempts", "base_delay", "max_delay"] {
        if let Some(value) = doc.remove(key) {
            let ours = if key == "base_delay" {
                "initial_delay"
            } else {
                key
            };
            put(doc, &format!("retry.{ours}"), value);
            normalized
                .written
                .push((format!("retry.{ours}"), key.to_owned()));
        }
    }
    if let Some(workers) = doc.remove("parallel_workers") {
        warnings.push(ConfigWarning::new(
            "parallel_workers",
            format!(
                "{workers} ignored: Tollgate does not run your workers; run as many as you \
                 like, and the stack keeps at most concurrency.max_in_flight \
                 (max_concurrent_requests) calls in flight"
            ),
        ));
    }
    match doc.remove("burst_mode") {
        None | Some(Value::Bool(true)) => {}
        Some(Value::Bool(false)) => normalized.no_burst = true,
        Some(other) => {
            return Err(ConfigError::new(
                "burst_mode",
                other,
                "must be true (a minute's requests may go at once) or false (spread evenly)",
            ));
        }
    }
    if let Some(Value::Object(mut models)) = doc.remove("models") {
        for (model, settings) in &mut models {
            model_settings(doc, model, settings, warnings)?;
        }
    }
    // Sections: old names, and `enabled`.
    if rename_section(doc, "backoff_strategy", "retry") {
        normalized
            .written
            .push(("retry".into(), "backoff_strategy".into()));
    }
    let written = &mut normalized.written;
    if let Some(Value::Object(retry)) = doc.get_mut("retry") {
        if let Some(retries) = retry.remove("max_retries") {
            let attempts = retries
                .as_u64()
                .and_then(|n| n.checked_add(1))
                .ok_or_else(|| {
                    ConfigError::new("retry.max_retries", &retries, "must be a whole number")
                })?;
            retry.insert("max_attempts".into(), Value::from(attempts));
        }
        rename(retry, "retry", "base_delay", "initial_delay", written);
    }
    if let Some(Value::Object(circuit)) = doc.get_mut("circuit_breaker") {
        for (old, new) in [
            ("failure_threshold", "consecutive_failures"),
            ("recovery_timeout", "open_duration"),
            ("half_open_requests", "half_open_probes"),
            ("half_open_max_calls", "half_open_probes"),
        ] {
            rename(circuit, "circuit_breaker", old, new, written);
        }
    }
    if let Some(Value::Object(cache)) = doc.get_mut("cache") {
        rename(cache, "cache", "ttl", "time_to_live", written);
    }
    for section in crate::config::SECTIONS {
        enabled(doc, section)?;
    }
    Ok(normalized)
}

/// `[models."name"]`: a model's own rate, and calls in flight.
fn model_settings(
    doc: &mut Object,
    model: &str,
    settings: &mut Value,
    warnings: &mut Vec<ConfigWarning>,
) -> Result<(), ConfigError> {
    let field = format!("models.{model}");
    let Value::Object(settings) = settings else {
        return Err(ConfigError::invalid(field, "must be a table of settings"));
    };
    let quotas = format!("rate_limit.models.{}.quotas", escape(model));
    for (key, name) in [
        ("requests_per_minute", "requests_per_minute"),
        ("max_requests_per_minute", "requests_per_minute"),
        ("tokens_per_minute", "tokens_per_minute"),
        ("max_tokens_per_minute", "tokens_per_minute"),
    ] {
        if let Some(value) = take_positive(settings, key).map_err(|e| e.within(&field))? {
            put(doc, &format!("{quotas}.{name}"), value);
        }
    }
    if let Some(value) = settings.remove("min_delay_between_calls") {
        put(doc, &format!("{quotas}.min_interval"), value);
    }
    for key in ["max_concurrent", "max_concurrent_requests"] {
        if let Some(value) = settings.remove(key) {
            warnings.push(ConfigWarning::new(
                format!("{field}.{key}"),
                format!(
                    "{value} is not enforced per model: calls in flight are limited per key \
                     and model by the adaptive limit, and in total by \
                     concurrency.max_in_flight; the model's rate is enforced"
                ),
            ));
        }
    }
    if let Some(key) = settings.keys().next() {
        return Err(ConfigError::invalid(
            format!("{field}.{key}"),
            "unknown; a model takes requests_per_minute, tokens_per_minute, \
             min_delay_between_calls and max_concurrent",
        ));
    }
    Ok(())
}

/// A model name as one path segment (names hold dots: `gpt-4.1`).
fn escape(model: &str) -> String {
    model.replace('.', "\u{1}")
}

/// `section.enabled`: `false` leaves the layer out, `true` says nothing more.
fn enabled(doc: &mut Object, section: &str) -> Result<(), ConfigError> {
    let Some(Value::Object(table)) = doc.get_mut(section) else {
        return Ok(());
    };
    match table.remove("enabled") {
        None | Some(Value::Bool(true)) => Ok(()),
        Some(Value::Bool(false)) => {
            doc.insert(section.to_owned(), Value::Null);
            Ok(())
        }
        Some(other) => Err(ConfigError::new(
            format!("{section}.enabled"),
            other,
            "must be true or false",
        )),
    }
}

/// Removes `key`, which must be a whole number of at least 1.
fn take_positive(doc: &mut Object, key: &str) -> Result<Option<Value>, ConfigError> {
    match doc.remove(key) {
        None => Ok(None),
        Some(value) => match value.as_u64() {
            Some(n) if n > 0 => Ok(Some(value)),
            Some(_) => Err(ConfigError::new(
                key.to_owned(),
                value,
                "is not allowed; leave it out for no limit",
            )),
            None => Err(ConfigError::new(
                key.to_owned(),
                value,
                "must be a whole number of at least 1",
            )),
        },
    }
}

/// Renames `section.old` to `section.new`, remembering the name as written.
fn rename(
    table: &mut Object,
    section: &str,
    old: &str,
    new: &str,
    written: &mut Vec<(String, String)>,
) {
    if let Some(value) = table.remove(old) {
        table.insert(new.to_owned(), value);
        written.push((format!("{section}.{new}"), format!("{section}.{old}")));
    }
}

/// Moves section `old` into section `new`; whether there was one.
fn rename_section(doc: &mut Object, old: &str, new: &str) -> bool {
    let Some(value) = doc.remove(old) else {
        return false;
    };
    {
        match (doc.get_mut(new), value) {
            (Some(Value::Object(existing)), Value::Object(moved)) => {
                for (key, value) in moved {
                    existing.entry(key).or_insert(value);
                }
            }
            (_, value) => {
                doc.insert(new.to_owned(), value);
            }
        }
    }
    true
}

/// Sets `path` (dotted; a segment may hold an escaped dot) in `doc`, making tables on the way.
fn put(doc: &mut Object, path: &str, value: Value) {
    let mut table = doc;
    let mut segments = path.split('.').peekable();
    while let Some(segment) = segments.next() {
        let segment = segment.replace('\u{1}', ".");
        if segments.peek().is_none() {
            table.insert(segment, value);
            return;
        }
        let entry = table
            .entry(segment)
            .or_insert_with(|| Value::Object(Object::new()));
        if !entry.is_object() {
            *entry = Value::Object(Object::new());
        }
        table = entry.as_object_mut().expect("made a table above");
    }
}

/// `burst_mode = false` on the merged config: each minute's requests spread evenly.
pub(crate) fn spread(config: &mut crate::StackConfig, warnings: &mut Vec<ConfigWarning>) {
    let quotas = config.rate_limit.as_mut().map(|r| &mut r.quotas);
    match quotas.and_then(|q| q.requests_per_minute.map(|rpm| (q, rpm))) {
        Some((quotas, rpm)) => {
            let even = Duration::from_secs(60).div_f64(rpm.get() as f64);
            quotas.min_interval = Some(quotas.min_interval.map_or(even, |i| i.max(even)));
        }
        None => warnings.push(ConfigWarning::new(
            "burst_mode",
            "false has no effect: no requests_per_minute is set to spread",
        )),
    }
}
