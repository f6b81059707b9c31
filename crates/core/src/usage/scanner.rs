// Interim stub, replaced by the real tracker.
use crate::Usage;
/// Body format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyFormat { /// json
Json, /// sse
Sse }
impl BodyFormat {
    /// From content type.
    pub fn from_content_type(headers: &http::HeaderMap) -> Self {
        match headers.get(http::header::CONTENT_TYPE) { Some(v) if v.as_bytes().starts_with(b"text/event-stream") => Self::Sse, _ => Self::Json }
    }
}
#[derive(Debug)]
pub(crate) struct UsageTracker { usage: Option<Usage>, bytes: u64 }
impl UsageTracker {
    pub(crate) fn new(_format: BodyFormat) -> Self { Self { usage: None, bytes: 0 } }
    pub(crate) fn feed(&mut self, chunk: &[u8]) { self.bytes += chunk.len() as u64; }
    pub(crate) fn finish(&mut self) {}
    pub(crate) fn usage(&self) -> Option<Usage> { self.usage }
    pub(crate) fn error_event(&self) -> Option<&[u8]> { None }
    pub(crate) fn bytes_seen(&self) -> u64 { self.bytes }
}
