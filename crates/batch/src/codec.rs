//! [`BatchCodec`]: how requests merge into one upstream request, and how its response splits.

use std::hash::Hash;

use bytes::Bytes;
use http::request;
use tollgate_core::BoxError;

/// How much of a batch one member takes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Weight {
    /// Items it adds to the merged request (embedding inputs, packed prompts).
    pub items: u32,
    /// Input tokens it adds (an estimate).
    pub tokens: u64,
}

/// One member's share of a merged response.
#[derive(Debug)]
pub enum Part {
    /// Its response body.
    Body(Bytes),
    /// Its share could not be cut out.
    Failed(BoxError),
    /// Its share is missing or malformed in a way a request of its own may fix (a packed
    /// prompt the model did not answer): the batcher sends it again, alone.
    Resend,
}

/// How N requests become one upstream request and its response N responses.
///
/// The batcher calls [`admit`](Self::admit) on every request; those with the same key (and
/// the same headers, but for those that only describe or trace a request: the merged call
/// carries one member's head) wait together until a flush, then [`merge`](Self::merge) builds one body, the first member's
/// method, URI, headers and extensions carry it, and a successful response is cut back with
/// [`split`](Self::split). A member whose share cannot be cut out gets an error or, when a
/// request of its own may do better, is sent again alone; a failed merged call gives every
/// member the same failure.
pub trait BatchCodec: Send + Sync + 'static {
    /// What must be equal for requests to merge (URI, credential, model, options).
    type Key: Hash + Eq + Clone + Send + Sync + 'static;
    /// What the codec keeps of one member between merge and split.
    type Member: Send + Sync + 'static;

    /// Whether a request can join a batch: its key, its weight, and what merge and split need.
    /// `None` sends it alone, untouched.
    fn admit(
        &self,
        head: &request::Parts,
        body: &Bytes,
    ) -> Option<(Self::Key, Weight, Self::Member)>;

    /// The body of one request doing the work of all `members` (at least two, one key).
    fn merge(&self, members: &[&Self::Member]) -> Result<Bytes, BoxError>;

    /// Adjusts the merged request's head (the first member's), when the merged call goes
    /// elsewhere (Gemini's `:embedContent` becomes `:batchEmbedContents`). Does nothing by
    /// default.
    fn merged_head(&self, head: &mut request::Parts) -> Result<(), BoxError> {
        let _ = head;
        Ok(())
    }

    /// Cuts a successful merged response body into one part per member, in order.
    fn split(&self, body: &[u8], members: &[&Self::Member]) -> Vec<Part>;

    /// The most items one merged request may hold (the provider's own cap).
    fn max_items(&self) -> u32;

    /// The most input tokens one merged request may hold (the provider's own cap).
    fn max_tokens(&self) -> u64;
}
