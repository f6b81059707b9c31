//! LlmRequest.
/// The request.
#[derive(Clone, Debug)]
pub struct LlmRequest;
