//! What a test sees of the batches the simulator holds, without going through the HTTP API:
//! enough to check that every job was submitted, and in exactly one batch.

use tokio::time::Instant;

use super::Store;

/// Which Batch API a batch was created through.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum BatchApi {
    /// OpenAI's `POST /v1/batches`, from an uploaded file.
    OpenAi,
    /// Anthropic's `POST /v1/messages/batches`.
    Anthropic,
}

/// One batch the simulator holds, as [`SimService::batches`](crate::SimService::batches)
/// shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct BatchSummary {
    /// Its id: `batch_…` (OpenAI) or `msgbatch_…` (Anthropic).
    pub id: String,
    /// The API it was created through.
    pub api: BatchApi,
    /// Its status now, in its API's words: OpenAI's `status` (`validating`, `in_progress`,
    /// `completed`, `failed`, `expired`, `cancelling`, `cancelled`) or Anthropic's
    /// `processing_status` (`in_progress`, `canceling`, `ended`).
    pub status: String,
    /// The `custom_id` of each of its requests, in input order.
    pub custom_ids: Vec<String>,
}

impl BatchSummary {
    pub(super) fn new(id: String, api: BatchApi, status: &str, custom_ids: Vec<String>) -> Self {
        Self {
            id,
            api,
            status: status.to_owned(),
            custom_ids,
        }
    }
}

/// Every batch of both APIs at `now`, oldest first.
pub(crate) fn summaries(store: &Store, now: Instant) -> Vec<BatchSummary> {
    let openai = store.batches.values().map(|batch| batch.summary(now));
    let anthropic = store
        .message_batches
        .iter()
        .map(|(id, batch)| batch.summary(id, now));
    let mut numbered: Vec<(u64, BatchSummary)> = openai.chain(anthropic).collect();
    numbered.sort_unstable_by_key(|(ordinal, _)| *ordinal);
    numbered.into_iter().map(|(_, summary)| summary).collect()
}
