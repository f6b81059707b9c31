/// SSE parser.
#[derive(Debug, Default)]
pub struct SseParser;
/// An SSE event.
#[derive(Debug)]
pub struct SseEvent<'a> { /// data
 pub data: &'a [u8] }
