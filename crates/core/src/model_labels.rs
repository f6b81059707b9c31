//! Which models get a `model` label of their own in metrics.
//!
//! Every layer labels its series with the request's model, and the model comes from the caller.
//! A metrics recorder keeps each label set it is given for the life of the process, so a client
//! that sends 40,000 made-up model names makes 40,000 × every-series-per-model series (two
//! million of them were measured in front of a gateway) and a scrape hundreds of MB long.
//!
//! So a model is named in a label only if it is
//! - one of the providers' well-known models ([`KNOWN_MODELS`]),
//! - listed by the operator ([`ModelLabels::list`]; the gateway lists the models of its
//!   config), or
//! - one of the first [`DEFAULT_MAX_UNLISTED`] other names seen (a library user's own
//!   fine-tunes and local models, without configuring anything);
//!
//! every other name is labelled [`OTHER`]. An unlisted name keeps the decision made the first
//! time it was seen (listing it later gives it its own label from then on). The number of distinct model labels is thus
//! at most `KNOWN_MODELS.len()` + the listed names + the unlisted allowance.

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex, PoisonError};

use arc_swap::ArcSwap;

/// The label of every model that does not get its own.
pub const OTHER: &str = "other";

/// How many names outside the known and listed ones get a label of their own by default.
pub const DEFAULT_MAX_UNLISTED: usize = 64;

/// The providers' current models (as of 2026-12: OpenAI, Anthropic, Gemini, Mistral, and
/// open models as Groq and Together serve them), labelled without being listed. Sorted, for a
/// binary search.
pub const KNOWN_MODELS: &[&str] = &[
    "claude-3-5-haiku-latest",
    "claude-3-5-sonnet-latest",
    "claude-3-7-sonnet-latest",
    "claude-3-haiku-20240307",
    "claude-3-opus-latest",
    "claude-haiku-4-5",
    "claude-opus-4-0",
    "claude-opus-4-1",
    "claude-sonnet-4-0",
    "claude-sonnet-4-5",
    "codestral-latest",
    "gemini-1.5-flash",
    "gemini-1.5-pro",
    "gemini-2.0-flash",
    "gemini-2.0-flash-lite",
    "gemini-2.5-flash",
    "gemini-2.5-flash-lite",
    "gemini-2.5-pro",
    "gemini-embedding-001",
    "gpt-3.5-turbo",
    "gpt-4",
    "gpt-4-turbo",
    "gpt-4.1",
    "gpt-4.1-mini",
    "gpt-4.1-nano",
    "gpt-4o",
    "gpt-4o-mini",
    "gpt-5",
    "gpt-5-mini",
    "gpt-5-nano",
    "llama-3.1-8b-instant",
    "llama-3.3-70b-versatile",
    "mistral-embed",
    "mistral-large-latest",
    "mistral-medium-latest",
    "mistral-small-latest",
    "o1",
    "o1-mini",
    "o3",
    "o3-mini",
    "o4-mini",
    "omni-moderation-latest",
    "text-embedding-004",
    "text-embedding-3-large",
    "text-embedding-3-small",
    "text-embedding-ada-002",
];

/// The process's model-label policy, which every layer's metrics follow.
pub fn model_labels() -> &'static ModelLabels {
    static GLOBAL: LazyLock<ModelLabels> = LazyLock::new(ModelLabels::new);
    &GLOBAL
}

/// Which model names become labels (see the [module docs](self)).
#[derive(Debug)]
pub struct ModelLabels {
    listed: ArcSwap<HashSet<Arc<str>>>,
    unlisted: ArcSwap<HashSet<Arc<str>>>,
    max_unlisted: AtomicUsize,
    adding: Mutex<()>,
}

impl Default for ModelLabels {
    fn default() -> Self {
        Self::new()
    }
}

impl ModelLabels {
    /// A policy with nothing listed and the default unlisted allowance.
    pub fn new() -> Self {
        Self {
            listed: ArcSwap::default(),
            unlisted: ArcSwap::default(),
            max_unlisted: AtomicUsize::new(DEFAULT_MAX_UNLISTED),
            adding: Mutex::new(()),
        }
    }

    /// Gives each of `names` a label of its own from now on (names already decided keep
    /// their decision).
    pub fn list<S: AsRef<str>>(&self, names: impl IntoIterator<Item = S>) {
        let _adding = self.adding.lock().unwrap_or_else(PoisonError::into_inner);
        let mut listed = HashSet::clone(&self.listed.load());
        listed.extend(names.into_iter().map(|n| Arc::from(n.as_ref())));
        self.listed.store(Arc::new(listed));
    }

    /// How many names outside the known and listed ones get a label of their own (default
    /// [`DEFAULT_MAX_UNLISTED`]; 0 labels every unlisted model [`OTHER`]).
    pub fn set_max_unlisted(&self, max: usize) {
        self.max_unlisted.store(max, Ordering::Relaxed);
    }

    /// The label for `model`: the name itself, or [`OTHER`].
    pub fn label<'a>(&self, model: &'a str) -> &'a str {
        if KNOWN_MODELS.binary_search(&model).is_ok()
            || self.listed.load().contains(model)
            || self.unlisted.load().contains(model)
            || self.admit_unlisted(model)
        {
            model
        } else {
            OTHER
        }
    }

    /// Gives `model` one of the unlisted labels, if any is left.
    fn admit_unlisted(&self, model: &str) -> bool {
        let max = self.max_unlisted.load(Ordering::Relaxed);
        if self.unlisted.load().len() >= max {
            return false;
        }
        let _adding = self.adding.lock().unwrap_or_else(PoisonError::into_inner);
        let current = self.unlisted.load();
        if current.contains(model) {
            return true;
        }
        if current.len() >= max {
            return false;
        }
        let mut unlisted = HashSet::clone(&current);
        unlisted.insert(Arc::from(model));
        self.unlisted.store(Arc::new(unlisted));
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_and_listed_models_are_named_and_others_share_a_bounded_allowance() {
        let labels = ModelLabels::new();
        labels.set_max_unlisted(2);
        labels.list(["acme-finetune"]);
        assert_eq!(labels.label("gpt-4o-mini"), "gpt-4o-mini");
        assert_eq!(labels.label("acme-finetune"), "acme-finetune");
        assert_eq!(labels.label("local-a"), "local-a");
        assert_eq!(labels.label("local-b"), "local-b");
        for i in 0..10_000 {
            assert_eq!(labels.label(&format!("made-up-{i}")), OTHER);
        }
        assert_eq!(labels.label("local-a"), "local-a", "a decision stays");
        assert_eq!(labels.label("claude-sonnet-4-5"), "claude-sonnet-4-5");
        labels.list(["late-listed"]);
        assert_eq!(labels.label("late-listed"), "late-listed");
        assert_eq!(labels.unlisted.load().len(), 2);
    }

    #[test]
    fn the_known_models_are_sorted_and_valid_names() {
        assert!(KNOWN_MODELS.windows(2).all(|w| w[0] < w[1]));
        for name in KNOWN_MODELS {
            assert_eq!(crate::model_name::check_model_name(name), Ok(()), "{name}");
        }
    }

    #[test]
    fn no_allowance_labels_every_unlisted_model_other() {
        let labels = ModelLabels::new();
        labels.set_max_unlisted(0);
        assert_eq!(labels.label("my-model"), OTHER);
        assert_eq!(labels.label("gpt-4o"), "gpt-4o");
    }
}
