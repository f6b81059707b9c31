//! A stored response: status, headers, the body as recorded, and when it was stored.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use tokio::time::Instant;

/// What an entry weighs beyond its bytes: the entry itself, its map slot, the cache's
/// bookkeeping.
const ENTRY_OVERHEAD: u64 = 256;
/// What each header or frame weighs beyond its bytes.
const PART_OVERHEAD: u64 = 32;

/// Headers that describe one connection, not the response: never replayed.
static HOP_BY_HOP: [HeaderName; 7] = [
    header::CONNECTION,
    header::TRANSFER_ENCODING,
    header::TE,
    header::TRAILER,
    header::UPGRADE,
    header::PROXY_AUTHENTICATE,
    HeaderName::from_static("keep-alive"),
];

/// One stored response.
#[derive(Debug)]
pub(crate) struct Entry {
    pub(crate) status: StatusCode,
    /// As served on a hit: no hop-by-hop headers, an exact `content-length` (none for a
    /// stream), the hit marker.
    pub(crate) headers: HeaderMap,
    /// The body as it was read: one frame for a JSON body, the recorded frames of a stream.
    pub(crate) frames: Box<[Bytes]>,
    pub(crate) trailers: Option<HeaderMap>,
    /// Whether the frames are a stream's (the second level keeps them apart).
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) streamed: bool,
    /// When the upstream answered it (for an entry from the second level, when it was first
    /// stored there).
    pub(crate) stored_at: Instant,
    /// Nanoseconds after `stored_at` of the last hit, for the idle timeout.
    last_used: AtomicU64,
    /// The weight it counts for against `max_bytes`.
    pub(crate) size: u64,
}

/// A response read to its end, ready to be stored.
#[derive(Debug)]
pub(crate) struct Recorded {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) frames: Vec<Bytes>,
    pub(crate) trailers: Option<HeaderMap>,
    pub(crate) streamed: bool,
}

impl Entry {
    /// Stores `recorded`, marked with `marker: hit` when a marker is set.
    pub(crate) fn new(
        recorded: Recorded,
        stored_at: Instant,
        now: Instant,
        marker: Option<&HeaderName>,
    ) -> Self {
        let Recorded {
            status,
            mut headers,
            mut frames,
            trailers,
            streamed,
        } = recorded;
        clean(&mut headers);
        if streamed {
            headers.remove(header::CONTENT_LENGTH);
        } else {
            if frames.len() > 1 {
                let mut whole = BytesMut::with_capacity(frames.iter().map(Bytes::len).sum());
                frames
                    .iter()
                    .for_each(|frame| whole.extend_from_slice(frame));
                frames = vec![whole.freeze()];
            }
            let length = frames.first().map_or(0, Bytes::len);
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
        }
        if let Some(marker) = marker {
            headers.insert(marker.clone(), HeaderValue::from_static("hit"));
        }
        let size = ENTRY_OVERHEAD
            + frames
                .iter()
                .map(|f| f.len() as u64 + PART_OVERHEAD)
                .sum::<u64>()
            + weight(&headers)
            + trailers.as_ref().map_or(0, weight);
        let age = nanos(now.saturating_duration_since(stored_at));
        Self {
            status,
            headers,
            frames: frames.into_boxed_slice(),
            trailers,
            streamed,
            stored_at,
            last_used: AtomicU64::new(age),
            size,
        }
    }

    /// The body's length.
    #[cfg(test)]
    pub(crate) fn body_len(&self) -> u64 {
        self.frames.iter().map(|f| f.len() as u64).sum()
    }

    /// Whether it may still be served at `now`; if so, it counts as used.
    pub(crate) fn use_at(&self, now: Instant, ttl: Duration, idle: Option<Duration>) -> bool {
        let age = now.saturating_duration_since(self.stored_at);
        if age >= ttl {
            return false;
        }
        if let Some(idle) = idle {
            let last = Duration::from_nanos(self.last_used.load(Ordering::Relaxed));
            if age.saturating_sub(last) >= idle {
                return false;
            }
        }
        self.last_used.store(nanos(age), Ordering::Relaxed);
        true
    }
}

impl Entry {
    /// Its age at `now`, if it is no more than `max_staleness` past its time to live and its
    /// idle timeout (a fresh entry is too). A stale answer is not a use: idleness still counts.
    pub(crate) fn stale_age(
        &self,
        now: Instant,
        ttl: Duration,
        idle: Option<Duration>,
        max_staleness: Duration,
    ) -> Option<Duration> {
        let age = now.saturating_duration_since(self.stored_at);
        if age >= ttl.saturating_add(max_staleness) {
            return None;
        }
        if let Some(idle) = idle {
            let last = Duration::from_nanos(self.last_used.load(Ordering::Relaxed));
            if age.saturating_sub(last) >= idle.saturating_add(max_staleness) {
                return None;
            }
        }
        Some(age)
    }
}

fn nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

/// Removes the hop-by-hop headers, those the `connection` header names included.
fn clean(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .flat_map(|value| value.as_bytes().split(|&b| b == b','))
        .filter_map(|name| HeaderName::from_bytes(name.trim_ascii()).ok())
        .collect();
    for name in HOP_BY_HOP.iter().chain(&named) {
        headers.remove(name);
    }
}

/// What a header map weighs.
fn weight(headers: &HeaderMap) -> u64 {
    headers
        .iter()
        .map(|(name, value)| (name.as_str().len() + value.len()) as u64 + PART_OVERHEAD)
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recorded(streamed: bool) -> Recorded {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONNECTION, HeaderValue::from_static("close, x-hop"));
        headers.insert("x-hop", HeaderValue::from_static("1"));
        headers.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from_static("999"));
        headers.insert("x-request-id", HeaderValue::from_static("req_1"));
        Recorded {
            status: StatusCode::OK,
            headers,
            frames: vec![Bytes::from_static(b"ab"), Bytes::from_static(b"cd")],
            trailers: None,
            streamed,
        }
    }

    #[test]
    fn a_json_body_is_stored_whole_with_its_length() {
        let now = Instant::now();
        let marker = HeaderName::from_static("x-tollgate-cache");
        let entry = Entry::new(recorded(false), now, now, Some(&marker));
        assert_eq!(&*entry.frames, [Bytes::from_static(b"abcd")]);
        assert_eq!(entry.headers[header::CONTENT_LENGTH], "4");
        assert_eq!(entry.headers["x-tollgate-cache"], "hit");
        assert_eq!(entry.headers["x-request-id"], "req_1");
        for gone in ["connection", "x-hop", "transfer-encoding"] {
            assert!(!entry.headers.contains_key(gone), "{gone}");
        }
        assert!(entry.size > entry.body_len());
    }

    #[test]
    fn a_stream_keeps_its_frames_and_has_no_length() {
        let now = Instant::now();
        let entry = Entry::new(recorded(true), now, now, None);
        assert_eq!(entry.frames.len(), 2);
        assert!(!entry.headers.contains_key(header::CONTENT_LENGTH));
        assert!(!entry.headers.contains_key("x-tollgate-cache"));
    }

    #[tokio::test(start_paused = true)]
    async fn expiry_by_age_and_by_idleness() {
        let now = Instant::now();
        let entry = Entry::new(recorded(false), now, now, None);
        let (ttl, idle) = (Duration::from_secs(60), Some(Duration::from_secs(10)));
        assert!(entry.use_at(now + Duration::from_secs(9), ttl, idle));
        assert!(entry.use_at(now + Duration::from_secs(18), ttl, idle));
        assert!(!entry.use_at(now + Duration::from_secs(28), ttl, idle));
        let fresh = Entry::new(recorded(false), now, now, None);
        assert!(fresh.use_at(now + Duration::from_secs(59), ttl, None));
        assert!(!fresh.use_at(now + Duration::from_secs(60), ttl, None));
    }

    #[tokio::test(start_paused = true)]
    async fn staleness_is_bounded_past_both_timeouts() {
        let now = Instant::now();
        let entry = Entry::new(recorded(false), now, now, None);
        let (ttl, max) = (Duration::from_secs(60), Duration::from_secs(600));
        let at = |secs| now + Duration::from_secs(secs);
        assert_eq!(
            entry.stale_age(at(30), ttl, None, max),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            entry.stale_age(at(659), ttl, None, max),
            Some(Duration::from_secs(659))
        );
        assert_eq!(entry.stale_age(at(660), ttl, None, max), None);
        assert_eq!(entry.stale_age(at(61), ttl, None, Duration::ZERO), None);
        let idle = Some(Duration::from_secs(10));
        assert_eq!(
            entry.stale_age(at(609), ttl, idle, max),
            Some(Duration::from_secs(609))
        );
        assert_eq!(entry.stale_age(at(610), ttl, idle, max), None);
        assert!(
            !entry.use_at(at(70), ttl, None),
            "still expired for a normal lookup"
        );
    }
}
