//! What a translation could not carry, and what to do about it.
//!
//! Formats differ: OpenAI has `n`, `logprobs` and JSON mode, Anthropic has `top_k` and prompt
//! caching marks, Gemini has safety settings. A field the other side lacks is never silently
//! lost: reading and writing note it in a [`Report`], and the caller either refuses the request
//! with a 400 naming the fields ([`WhenUntranslatable::Refuse`]) or sends it without them and
//! says which in a header ([`WhenUntranslatable::Drop`]).

use std::error::Error;
use std::fmt;

/// A field the target format has no place for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Untranslatable {
    /// Where it is, as the client wrote it: `logprobs`, `messages[2].content[0]`.
    pub field: String,
    /// Why it cannot go across.
    pub why: &'static str,
}

impl fmt::Display for Untranslatable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.why)
    }
}

/// Everything a translation could not carry, in the order met.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// The fields left behind.
    pub untranslatable: Vec<Untranslatable>,
}

impl Report {
    /// Notes `field`, which cannot go across because `why`.
    pub fn note(&mut self, field: impl Into<String>, why: &'static str) {
        self.untranslatable.push(Untranslatable {
            field: field.into(),
            why,
        });
    }

    /// Whether everything went across.
    pub fn is_empty(&self) -> bool {
        self.untranslatable.is_empty()
    }

    /// The fields left behind, comma-separated: the value of a warning header.
    pub fn fields(&self) -> String {
        let fields: Vec<&str> = self
            .untranslatable
            .iter()
            .map(|u| u.field.as_str())
            .collect();
        fields.join(", ")
    }
}

/// What to do with a request some of whose fields the deployment's format lacks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum WhenUntranslatable {
    /// Send it without them, naming them in a warning header (the default).
    #[default]
    Drop,
    /// Refuse it with a 400 that names them.
    Refuse,
}

/// A request or an answer that cannot be read at all: not JSON, or without a field its format
/// requires.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Malformed {
    what: String,
}

impl Malformed {
    /// `what` is wrong with it, in a few words.
    pub fn new(what: impl Into<String>) -> Self {
        Self { what: what.into() }
    }
}

impl fmt::Display for Malformed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.what)
    }
}

impl Error for Malformed {}
