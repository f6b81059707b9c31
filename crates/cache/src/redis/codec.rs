//! The binary form of an entry in Redis: `TGC1`, the status (u16), a streamed flag (u8), the
//! headers (a u32 count, then each name and value with a u32 length), the frames (a count,
//! then each with its length), and the trailers (a flag, then as the headers). Big-endian.
//! Anything else — another version, a truncated value — decodes to nothing: a miss.

use bytes::{Buf, BufMut, Bytes};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};

use crate::entry::{Entry, Recorded};

const MAGIC: &[u8; 4] = b"TGC1";

/// `entry` without the hit marker (each process adds its own).
pub(super) fn encode(entry: &Entry, marker: Option<&HeaderName>) -> Vec<u8> {
    let mut out = Vec::with_capacity(usize::try_from(entry.size).unwrap_or(0));
    out.put_slice(MAGIC);
    out.put_u16(entry.status.as_u16());
    out.put_u8(u8::from(entry.streamed));
    let headers = || {
        entry
            .headers
            .iter()
            .filter(|(name, _)| Some(*name) != marker)
    };
    put_headers(&mut out, headers().count(), headers());
    out.put_u32(len(entry.frames.len()));
    for frame in &entry.frames {
        put_bytes(&mut out, frame);
    }
    match &entry.trailers {
        Some(trailers) => {
            out.put_u8(1);
            put_headers(&mut out, trailers.len(), trailers.iter());
        }
        None => out.put_u8(0),
    }
    out
}

fn len(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    out.put_u32(len(bytes.len()));
    out.put_slice(bytes);
}

fn put_headers<'a>(
    out: &mut Vec<u8>,
    count: usize,
    headers: impl Iterator<Item = (&'a HeaderName, &'a HeaderValue)>,
) {
    out.put_u32(len(count));
    for (name, value) in headers {
        put_bytes(out, name.as_str().as_bytes());
        put_bytes(out, value.as_bytes());
    }
}

/// The recorded response in `bytes`, if they hold one.
pub(super) fn decode(mut bytes: Bytes) -> Option<Recorded> {
    if bytes.len() < MAGIC.len() || &bytes[..MAGIC.len()] != MAGIC {
        return None;
    }
    bytes.advance(MAGIC.len());
    let status = StatusCode::from_u16(u16_of(&mut bytes)?).ok()?;
    let streamed = match u8_of(&mut bytes)? {
        0 => false,
        1 => true,
        _ => return None,
    };
    let headers = headers_of(&mut bytes)?;
    let count = u32_of(&mut bytes)?;
    let mut frames = Vec::new();
    for _ in 0..count {
        frames.push(bytes_of(&mut bytes)?);
    }
    let trailers = match u8_of(&mut bytes)? {
        0 => None,
        1 => Some(headers_of(&mut bytes)?),
        _ => return None,
    };
    bytes.is_empty().then_some(Recorded {
        status,
        headers,
        frames,
        trailers,
        streamed,
    })
}

fn u8_of(bytes: &mut Bytes) -> Option<u8> {
    (bytes.remaining() >= 1).then(|| bytes.get_u8())
}

fn u16_of(bytes: &mut Bytes) -> Option<u16> {
    (bytes.remaining() >= 2).then(|| bytes.get_u16())
}

fn u32_of(bytes: &mut Bytes) -> Option<u32> {
    (bytes.remaining() >= 4).then(|| bytes.get_u32())
}

fn bytes_of(bytes: &mut Bytes) -> Option<Bytes> {
    let len = usize::try_from(u32_of(bytes)?).ok()?;
    (bytes.remaining() >= len).then(|| bytes.split_to(len))
}

fn headers_of(bytes: &mut Bytes) -> Option<HeaderMap> {
    let count = u32_of(bytes)?;
    let mut headers = HeaderMap::new();
    for _ in 0..count {
        let name = HeaderName::from_bytes(&bytes_of(bytes)?).ok()?;
        let value = HeaderValue::from_maybe_shared(bytes_of(bytes)?).ok()?;
        headers.append(name, value);
    }
    Some(headers)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use tokio::time::Instant;

    use super::*;

    fn entry(marker: Option<&HeaderName>) -> Entry {
        let mut headers = HeaderMap::new();
        headers.insert(
            "content-type",
            HeaderValue::from_static("text/event-stream"),
        );
        headers.append("x-many", HeaderValue::from_static("1"));
        headers.append("x-many", HeaderValue::from_static("2"));
        let mut trailers = HeaderMap::new();
        trailers.insert("x-checksum", HeaderValue::from_static("abc"));
        let recorded = Recorded {
            status: StatusCode::OK,
            headers,
            frames: vec![
                Bytes::from_static(b"data: 1\n\n"),
                Bytes::from_static(b"data: 2\n\n"),
            ],
            trailers: Some(trailers),
            streamed: true,
        };
        let now = Instant::now();
        Entry::new(recorded, now, now, marker)
    }

    #[test]
    fn round_trip_without_the_marker() {
        let marker = HeaderName::from_static("x-tollgate-cache");
        let stored = entry(Some(&marker));
        let decoded = decode(Bytes::from(encode(&stored, Some(&marker)))).unwrap();
        assert_eq!(decoded.status, stored.status);
        assert!(decoded.streamed);
        assert_eq!(decoded.frames, stored.frames.to_vec());
        assert_eq!(decoded.trailers, stored.trailers);
        assert!(!decoded.headers.contains_key(&marker));
        let many: Vec<_> = decoded.headers.get_all("x-many").iter().collect();
        assert_eq!(many, ["1", "2"]);
    }

    #[test]
    fn anything_else_is_nothing() {
        let good = encode(&entry(None), None);
        assert!(decode(Bytes::from_static(b"TGC2")).is_none());
        for cut in 0..good.len() {
            assert!(
                decode(Bytes::copy_from_slice(&good[..cut])).is_none(),
                "{cut}"
            );
        }
        let mut longer = good.clone();
        longer.push(0);
        assert!(decode(Bytes::from(longer)).is_none());
    }

    proptest! {
        #[test]
        fn decoding_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let mut framed = MAGIC.to_vec();
            framed.extend_from_slice(&bytes);
            let _ = decode(Bytes::from(framed));
            let _ = decode(Bytes::from(bytes));
        }
    }
}
