//! What the fuzz targets share: cutting one input into chunks several ways, reading a header
//! block, and a response body that hands out given chunks.
//!
//! Streaming parsers promise the same result whatever the chunking; the targets check it by
//! feeding the same bytes cut by [`chunkings`] and comparing. The cuts are derived from the
//! input itself, so a seed is a plain stream (an SSE capture, a JSON body) and a crash
//! reproduces from its file alone.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue};
use http_body::{Body, Frame};

/// The same bytes cut into chunks in several ways: whole, a byte at a time, in fixed sizes,
/// and at cut points drawn from a generator seeded by the input.
pub fn chunkings(data: &[u8]) -> Vec<Vec<&[u8]>> {
    let mut all = vec![vec![data], data.chunks(1).collect()];
    for size in [2, 7] {
        all.push(data.chunks(size).collect());
    }
    let mut rng = SplitMix64(fnv1a(data));
    for max in [4, 32, 512] {
        let mut cuts = Vec::new();
        let mut rest = data;
        while !rest.is_empty() {
            // Empty chunks too: a body may send them.
            let len = (rng.next() % (max + 1)) as usize;
            let (chunk, tail) = rest.split_at(len.min(rest.len()));
            cuts.push(chunk);
            rest = tail;
        }
        all.push(cuts);
    }
    all
}

/// Reads `name: value` lines into a header map, skipping lines that are not valid headers.
pub fn header_map(text: &[u8]) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for line in text.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let (name, value) = (&line[..colon], line[colon + 1..].trim_ascii());
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.trim_ascii()),
            HeaderValue::from_bytes(value),
        ) {
            headers.append(name, value);
        }
    }
    headers
}

/// A response body that yields the given chunks, each as soon as it is polled.
#[derive(Debug)]
pub struct ChunkedBody(VecDeque<Bytes>);

impl ChunkedBody {
    /// A body of `chunks`, which cut `whole`, in order; they share its memory.
    pub fn new(whole: &Bytes, chunks: &[&[u8]]) -> Self {
        Self(chunks.iter().map(|c| whole.slice_ref(c)).collect())
    }
}

impl Body for ChunkedBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Ready(self.0.pop_front().map(|chunk| Ok(Frame::data(chunk))))
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_empty()
    }
}

/// Polls `body` to its end; every body here is always ready.
pub fn drain<B: Body + Unpin>(mut body: B) {
    let mut cx = Context::from_waker(std::task::Waker::noop());
    loop {
        match Pin::new(&mut body).poll_frame(&mut cx) {
            Poll::Ready(Some(_)) => {}
            Poll::Ready(None) => return,
            Poll::Pending => panic!("an always-ready body returned Pending"),
        }
    }
}

/// A fixed `now` for parsers that make dates relative: 2025-08-21T12:40:58Z, the `date` of the
/// captured samples.
pub fn sample_now() -> std::time::SystemTime {
    std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_755_780_058)
}

fn fnv1a(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &b| {
        (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}
