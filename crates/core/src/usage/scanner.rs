use crate::Usage;
#[derive(Debug, Default)]
pub(crate) struct UsageTracker { usage: Option<Usage> }
