//! `models`: what the Models API lists.

use tollgate_core::error::ConfigError;

/// The models listed by default: those the documentation and tests use.
pub const DEFAULT_MODELS: [&str; 7] = [
    "gpt-4o-mini",
    "gpt-4o",
    "text-embedding-3-small",
    "claude-3-5-haiku-latest",
    "claude-sonnet-4-5",
    "gemini-2.0-flash",
    "mistral-small-latest",
];

/// The most models [`SimConfig::models`](super::SimConfig::models) may list.
const MAX_MODELS: usize = 1_000;

/// Checks every listed id.
pub(super) fn validate(models: &[String]) -> Result<(), ConfigError> {
    if models.len() > MAX_MODELS {
        return Err(ConfigError::new(
            "models",
            models.len(),
            "must list at most 1000 models",
        ));
    }
    for (i, model) in models.iter().enumerate() {
        let name = || format!("models[{i}]");
        if model.is_empty() || model.contains('/') || model.contains(char::is_whitespace) {
            return Err(ConfigError::new(
                name(),
                format!("{model:?}"),
                "must be a model id: not empty, without '/' or whitespace",
            ));
        }
        if models[..i].contains(model) {
            return Err(ConfigError::new(
                name(),
                format!("{model:?}"),
                "is listed twice",
            ));
        }
    }
    Ok(())
}
