//! `StackConfig` reads the config files teams already have, presets, and its own sections.

use std::num::NonZeroU64;
use std::time::Duration;

use tollgate::retry::Jitter;
use tollgate::{LlmStack, Preset, StackConfig};

fn rpm(config: &StackConfig) -> Option<u64> {
    config
        .rate_limit
        .as_ref()
        .and_then(|r| r.quotas.requests_per_minute)
        .map(NonZeroU64::get)
}

fn warned(config: &StackConfig, field: &str) -> String {
    config
        .warnings()
        .iter()
        .find(|w| w.field() == field)
        .unwrap_or_else(|| panic!("no warning for {field}: {:?}", config.warnings()))
        .message()
        .to_owned()
}

/// A batch job's config after it calmed down (its "After" JSON, as written).
#[test]
fn a_batch_jobs_json_loads_as_written() {
    let config = StackConfig::from_json(
        r#"{
  "max_requests_per_minute": 600,
  "max_concurrent_requests": 5,
  "parallel_workers": 3,
  "optimal_batch_size": 2,
  "burst_mode": false,
  "circuit_breaker": {
    "failure_threshold": 5,
    "recovery_timeout": 30,
    "half_open_max_calls": 3
  },
  "backoff_strategy": {
    "initial_delay": 1.0,
    "max_delay": 60.0,
    "multiplier": 2.0,
    "jitter": true
  }
}"#,
    )
    .unwrap();
    assert_eq!(rpm(&config), Some(600));
    let quotas = config.rate_limit.as_ref().unwrap().quotas;
    assert_eq!(
        quotas.min_interval,
        Some(Duration::from_millis(100)),
        "burst_mode = false spreads 600 a minute evenly"
    );
    assert_eq!(config.max_concurrent_calls(), 5);
    assert_eq!(config.batch.as_ref().unwrap().max_batch_size, 2);
    let breaker = config.circuit_breaker.as_ref().unwrap();
    assert_eq!(breaker.consecutive_failures, Some(5));
    assert_eq!(breaker.open_duration, Duration::from_secs(30));
    assert_eq!(breaker.half_open_probes, 3);
    let retry = config.retry.as_ref().unwrap();
    assert_eq!(retry.initial_delay, Duration::from_secs(1));
    assert_eq!(retry.max_delay, Duration::from_secs(60));
    assert_eq!(retry.multiplier, 2.0);
    assert_eq!(retry.jitter.jitter(), Jitter::Full);
    assert!(warned(&config, "parallel_workers").contains("does not run your workers"));
    assert_eq!(config.warnings().len(), 1);
    LlmStack::new(&config).unwrap();

    let before = StackConfig::from_json(
        r#"{"max_requests_per_minute": 3000, "max_concurrent_requests": 50,
            "parallel_workers": 25, "optimal_batch_size": 8, "burst_mode": true}"#,
    )
    .unwrap();
    assert_eq!(rpm(&before), Some(3000));
    assert_eq!(
        before.rate_limit.as_ref().unwrap().quotas.min_interval,
        None
    );
    assert_eq!(before.max_concurrent_calls(), 50);
}

/// A request pool per class of model, a bounded cache, retries per API.
#[test]
fn a_request_pool_cache_and_retry_per_model_class_load() {
    let config = StackConfig::from_toml(
        r#"
[pool]                      # the request pool: calls in flight and a rate
max_concurrent = 5
requests_per_minute = 60

[models."fast-llm"]
max_concurrent = 10
requests_per_minute = 120

[models."slow-llm"]
max_concurrent = 3
requests_per_minute = 30

[cache]
max_entries = 1000
ttl = "1h"

[retry]
max_attempts = 5
base_delay = 2.0
max_delay = 120.0
"#,
    )
    .unwrap();
    assert_eq!(config.max_concurrent_calls(), 5);
    assert_eq!(rpm(&config), Some(60));
    let models = &config.rate_limit.as_ref().unwrap().models;
    assert_eq!(
        models["fast-llm"].quotas.requests_per_minute,
        NonZeroU64::new(120)
    );
    assert_eq!(
        models["slow-llm"].quotas.requests_per_minute,
        NonZeroU64::new(30)
    );
    assert!(warned(&config, "models.fast-llm.max_concurrent").contains("not enforced per model"));
    let cache = config.cache.as_ref().unwrap();
    assert_eq!(cache.max_entries, 1000);
    assert_eq!(cache.time_to_live, Duration::from_secs(3600));
    let retry = config.retry.as_ref().unwrap();
    assert_eq!(retry.max_attempts, 5);
    assert_eq!(retry.initial_delay, Duration::from_secs(2));
    assert_eq!(retry.max_delay, Duration::from_secs(120));
    LlmStack::new(&config).unwrap();
}

/// A free tier's three settings, each of its presets.
#[test]
fn a_free_tiers_presets_load() {
    for (calls, delay, batch) in [(1, 2.0, 15), (2, 1.0, 10), (4, 0.5, 8)] {
        let config = StackConfig::from_toml(&format!(
            "max_concurrent_api_calls = {calls}\nmin_delay_between_calls = {delay:?}\n\
             max_batch_size = {batch}\n"
        ))
        .unwrap();
        assert_eq!(config.max_concurrent_calls(), calls);
        let quotas = config.rate_limit.as_ref().unwrap().quotas;
        assert_eq!(quotas.min_interval, Some(Duration::from_secs_f64(delay)));
        let paced = quotas
            .get(tollgate::ratelimit::Dimension::Requests)
            .unwrap();
        assert_eq!(
            (paced.limit(), paced.period()),
            (1, Duration::from_secs_f64(delay))
        );
        assert_eq!(config.batch.as_ref().unwrap().max_batch_size, batch);
        assert!(config.warnings().is_empty());
    }
}

/// Several keys of one provider, each with its own rate, and a timeout.
#[test]
fn a_rate_per_key_and_a_timeout_load() {
    let config = StackConfig::from_toml("rate_limit_per_key = 5\ntimeout = 60\n").unwrap();
    let rate_limit = config.rate_limit.as_ref().unwrap();
    assert_eq!(rpm(&config), Some(300));
    assert!(!rate_limit.per_model, "a key's rate covers all its models");
    assert!(warned(&config, "rate_limit_per_key").contains("5 requests a second per key"));
    assert_eq!(
        config.timeouts.as_ref().unwrap().total,
        Some(Duration::from_secs(60))
    );
}

#[test]
fn presets_are_config_files_and_a_file_changes_only_what_it_sets() {
    let conservative = StackConfig::preset(Preset::Conservative);
    assert_eq!(rpm(&conservative), Some(30));
    assert_eq!(conservative.max_concurrent_calls(), 1);
    assert_eq!(
        conservative,
        StackConfig::from_toml(Preset::Conservative.toml()).unwrap()
    );
    assert_eq!(StackConfig::default(), StackConfig::from_toml("").unwrap());
    assert_eq!(
        StackConfig::default(),
        StackConfig::preset(Preset::Balanced)
    );

    let config = StackConfig::from_toml(
        "preset = \"aggressive\"\n[retry]\nmax_attempts = 2\n[circuit_breaker]\nhalf_open_probes = 1\n",
    )
    .unwrap();
    let aggressive = StackConfig::preset(Preset::Aggressive);
    let retry = config.retry.as_ref().unwrap();
    assert_eq!(retry.max_attempts, 2);
    assert_eq!(
        retry.max_delay,
        aggressive.retry.as_ref().unwrap().max_delay,
        "the rest of the section is the preset's"
    );
    assert_eq!(
        config
            .circuit_breaker
            .as_ref()
            .unwrap()
            .consecutive_failures,
        Some(10)
    );
}

#[test]
fn a_layer_switched_off_is_absent() {
    let config = StackConfig::from_toml(
        "[cache]\nenabled = false\n[batch]\nenabled = false\n[retry]\nenabled = false\n",
    )
    .unwrap();
    assert!(config.cache.is_none() && config.batch.is_none() && config.retry.is_none());
    assert!(config.circuit_breaker.is_some());
    let json = serde_json::to_string(&config).unwrap();
    let back = StackConfig::from_json(&json).unwrap();
    assert_eq!(back, config, "{json}");
}

#[test]
fn every_config_written_back_reads_the_same() {
    for preset in Preset::ALL {
        let config = StackConfig::preset(preset);
        let toml = toml::to_string(&config).unwrap();
        assert_eq!(StackConfig::from_toml(&toml).unwrap(), config, "{toml}");
        let json = serde_json::to_string(&config).unwrap();
        assert_eq!(StackConfig::from_json(&json).unwrap(), config, "{json}");
    }
}

#[test]
fn errors_name_the_key_as_written_its_value_and_its_line() {
    let cases = [
        (
            "max_concurrent_requests = 0",
            "max_concurrent_requests (line 1): 0 is not allowed; leave it out for no limit",
        ),
        (
            "\n[backoff_strategy]\nmultiplier = 0.5",
            "backoff_strategy.multiplier (line 3): 0.5 must be at least 1",
        ),
        (
            "[circuit_breaker]\nrecovery_timeout = \"soon\"",
            "circuit_breaker.recovery_timeout (line 2): \"soon\" is not a duration",
        ),
        (
            "preset = \"reckless\"",
            "preset (line 1): \"reckless\" is not a preset",
        ),
        (
            "max_request_per_minute = 5",
            "max_request_per_minute (line 1): is not a setting",
        ),
        (
            "[retry]\nmax_retries = 1\nmax_tries = 2",
            "retry.max_tries (line 3): unknown field `max_tries`",
        ),
        ("request_timeout = 1e20", "is not a duration"),
        ("[timeouts]\nfirst_byte = 0", "timeouts.first_byte (line 2)"),
        (
            "burst_mode = \"sometimes\"",
            "burst_mode (line 1): \"sometimes\" must be true",
        ),
    ];
    for (text, expected) in cases {
        let error = StackConfig::from_toml(text).unwrap_err().to_string();
        assert!(error.contains(expected), "{text:?}: {error}");
    }
    let error = StackConfig::from_json(r#"{"retry": {"max_attempts": 0}}"#).unwrap_err();
    assert_eq!(error.field(), "retry.max_attempts");
    assert!(StackConfig::from_toml("[x\n").unwrap_err().line().is_some());
}

/// A durable batcher configured by three environment variables, each of its settings.
#[cfg(feature = "deferred")]
#[test]
fn a_durable_batchers_environment_variables_load() {
    for (hours, size) in [("4.0", "100"), ("1.0", "50"), ("0.5", "25")] {
        let vars = |name: &str| match name {
            "USE_BATCHED_CLIENT" => Some("true".to_owned()),
            "BATCH_INTERVAL_HOURS" => Some(hours.to_owned()),
            "MAX_BATCH_SIZE" => Some(size.to_owned()),
            _ => None,
        };
        let config = StackConfig::default().with_env(vars).unwrap();
        let deferred = config.deferred.as_ref().unwrap();
        assert!(deferred.deferred);
        assert_eq!(
            deferred.interval,
            Duration::from_secs_f64(hours.parse::<f64>().unwrap() * 3600.0)
        );
        assert_eq!(deferred.max_batch_size.to_string(), size);
        assert_eq!(
            deferred.max_age,
            Duration::from_secs(300),
            "a request older than 5 minutes is sent at once"
        );
    }
    // Unset, the stack has no queue; over a file, the variables win.
    assert!(
        StackConfig::default()
            .with_env(|_| None)
            .unwrap()
            .deferred
            .is_none()
    );
    let config = StackConfig::from_toml("[deferred]\nstore = \"queue.redb\"\ninterval = \"2h\"\n")
        .unwrap()
        .with_env(|name| (name == "BATCH_INTERVAL_HOURS").then(|| "0.5".to_owned()))
        .unwrap();
    let deferred = config.deferred.unwrap();
    assert_eq!(deferred.interval, Duration::from_secs(1800));
    assert_eq!(deferred.store.unwrap().to_str(), Some("queue.redb"));
    let error = StackConfig::default()
        .with_env(|name| (name == "USE_BATCHED_CLIENT").then(|| "maybe".to_owned()))
        .unwrap_err();
    assert_eq!(
        error.to_string(),
        "USE_BATCHED_CLIENT: \"maybe\" must be true or false"
    );
}
