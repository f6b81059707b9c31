//! What a flight holds of the body, and how far ahead of its slowest waiter it reads.
//!
//! # Why two bounds
//!
//! A flight reads the upstream body once for every waiter, and each waiter reads it at its own
//! pace. Read as fast as the upstream sends and kept until the slowest waiter has read it, a
//! large stream to a client that does not read is held whole: four forced 200k-token streams
//! that nobody read took a gateway from 9.5 MB to 230 MB. So a flight holds:
//!
//! - **While recording**, every frame from the first: to store, and for an identical request
//!   that joins, which reads from the first frame. A recording is a candidate entry, so the
//!   body is read on at the upstream's pace whoever lags (a slow waiter slows nobody, the
//!   answer is stored as soon as it ends) — up to
//!   [`max_entry_bytes`](crate::CacheConfig::max_entry_bytes). Past that the answer can never
//!   be stored: recording stops, the flight takes no more waiters (an identical request makes
//!   its own call), and each frame is freed once every waiter has read it. The end of the
//!   body stops the recording too.
//! - **Past the recording**, at most [`READ_AHEAD`] bytes that the slowest waiter has yet to
//!   read: the call reads the next upstream frame only below that. A waiter that stops reading
//!   pauses the upstream read — backpressure, as without the cache — until it reads on or
//!   leaves; one that leaves holds nobody back.
//!
//! So a flight holds at most the larger of `max_entry_bytes` and [`READ_AHEAD`], plus one
//! upstream frame (a frame is never split).

use std::collections::VecDeque;
use std::sync::Arc;
use std::task::Waker;

use bytes::Bytes;

use crate::stats::Counters;

/// How many bytes past the recording the call reads ahead of its slowest waiter.
pub(super) const READ_AHEAD: u64 = 64 * 1024;

/// The frames a flight holds and where each of its readers is.
pub(super) struct Buffer {
    /// The frames held, from the `first`th, each with the offset of its first byte in the body.
    frames: VecDeque<(u64, Bytes)>,
    first: u64,
    /// Bytes of body published so far, and how many of them are held.
    published: u64,
    held: u64,
    /// Every frame from the first is held, and readers may join.
    recording: bool,
    /// Past this many bytes of body, recording stops.
    record_limit: u64,
    /// Indexed by reader id; a vacant slot is reused.
    readers: Vec<Option<Reader>>,
    /// The frame the slowest readers read next, and how many readers are there (0: none).
    slowest: u64,
    at_slowest: usize,
    /// `in_flight_bytes` follows `held`.
    counters: Arc<Counters>,
}

/// One reader: where it is, whether it read the end, and who to wake for the next frame.
#[derive(Default)]
pub(super) struct Reader {
    next: u64,
    pub(super) done: bool,
    pub(super) waker: Option<Waker>,
}

impl Buffer {
    /// An empty buffer that records up to `record_limit` bytes of body.
    pub(super) fn new(record_limit: u64, counters: Arc<Counters>) -> Self {
        Self {
            frames: VecDeque::new(),
            first: 0,
            published: 0,
            held: 0,
            recording: true,
            record_limit,
            readers: Vec::new(),
            slowest: 0,
            at_slowest: 0,
            counters,
        }
    }

    /// A new reader at the first frame; none once recording has stopped.
    pub(super) fn join(&mut self) -> Option<usize> {
        if !self.recording {
            return None;
        }
        let at = self.first;
        if self.at_slowest == 0 || at < self.slowest {
            (self.slowest, self.at_slowest) = (at, 1);
        } else if at == self.slowest {
            self.at_slowest += 1;
        }
        let reader = Some(Reader {
            next: at,
            ..Reader::default()
        });
        match self.readers.iter().position(Option::is_none) {
            Some(id) => {
                self.readers[id] = reader;
                Some(id)
            }
            None => {
                self.readers.push(reader);
                Some(self.readers.len() - 1)
            }
        }
    }

    /// `id` leaves: it holds no frame back any more.
    pub(super) fn leave(&mut self, id: usize) {
        let reader = self.readers[id].take().expect("a reader leaves once");
        self.passed(reader.next);
    }

    pub(super) fn reader(&mut self, id: usize) -> &mut Reader {
        self.readers[id]
            .as_mut()
            .expect("a reader that has not left")
    }

    /// The readers, to wake them.
    pub(super) fn readers(&mut self) -> impl Iterator<Item = &mut Reader> {
        self.readers.iter_mut().flatten()
    }

    /// Appends a frame; true when it stopped the recording (the body is now too large to
    /// store).
    pub(super) fn push(&mut self, data: Bytes) -> bool {
        let len = data.len() as u64;
        self.frames.push_back((self.published, data));
        self.published += len;
        self.held += len;
        self.counters.in_flight_bytes.add(len);
        if self.recording && self.published > self.record_limit {
            self.stop_recording();
            return true;
        }
        false
    }

    /// No reader joins any more: each frame is freed once every reader has read it.
    pub(super) fn stop_recording(&mut self) {
        self.recording = false;
        self.free();
    }

    pub(super) fn is_recording(&self) -> bool {
        self.recording
    }

    /// Every frame, while recording.
    pub(super) fn recorded(&self) -> Option<Vec<Bytes>> {
        self.recording
            .then(|| self.frames.iter().map(|(_, data)| data.clone()).collect())
    }

    /// The frame `id` reads next, if it has come; `id` moves past it.
    pub(super) fn next(&mut self, id: usize) -> Option<Bytes> {
        let first = self.first;
        let reader = self.readers[id]
            .as_mut()
            .expect("a reader that has not left");
        let index = usize::try_from(reader.next - first).expect("frames held fit in memory");
        let (_, data) = self.frames.get(index)?;
        let data = data.clone();
        let at = reader.next;
        reader.next += 1;
        self.passed(at);
        Some(data)
    }

    /// Whether `id` has read every frame published so far.
    pub(super) fn has_read_all(&mut self, id: usize) -> bool {
        self.reader(id).next == self.end()
    }

    /// Whether the call may read the next upstream frame: always while recording, else while
    /// the slowest reader has less than [`READ_AHEAD`] bytes left to read.
    pub(super) fn has_room(&self) -> bool {
        self.recording || self.published - self.offset(self.slowest()) < READ_AHEAD
    }

    /// Bytes held now.
    pub(super) fn held(&self) -> u64 {
        self.held
    }

    /// A reader left frame `at` (it read it, or it left): the slowest readers may have moved.
    fn passed(&mut self, at: u64) {
        if at != self.slowest || self.at_slowest == 0 {
            return;
        }
        self.at_slowest -= 1;
        if self.at_slowest == 0 {
            let positions = self.readers.iter().flatten().map(|r| r.next);
            if let Some(slowest) = positions.clone().min() {
                self.slowest = slowest;
                self.at_slowest = positions.filter(|&next| next == slowest).count();
            }
            self.free();
        }
    }

    /// Drops the frames every reader has read, unless recording.
    fn free(&mut self) {
        if self.recording {
            return;
        }
        let until = self.slowest();
        let mut freed = 0;
        while self.first < until {
            let (_, data) = self
                .frames
                .pop_front()
                .expect("frames up to the end are held");
            freed += data.len() as u64;
            self.first += 1;
        }
        self.held -= freed;
        self.counters.in_flight_bytes.sub(freed);
    }

    /// The frame after the last one published.
    fn end(&self) -> u64 {
        self.first + self.frames.len() as u64
    }

    /// The frame the slowest reader reads next; with no reader, the end.
    fn slowest(&self) -> u64 {
        if self.at_slowest == 0 {
            self.end()
        } else {
            self.slowest
        }
    }

    /// The offset in the body of frame `index` (held, or the end).
    fn offset(&self, index: u64) -> u64 {
        usize::try_from(index - self.first)
            .ok()
            .and_then(|i| self.frames.get(i))
            .map_or(self.published, |(offset, _)| *offset)
    }
}

impl Drop for Buffer {
    fn drop(&mut self) {
        self.counters.in_flight_bytes.sub(self.held);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(len: usize) -> Bytes {
        Bytes::from(vec![b'x'; len])
    }

    fn buffer(record_limit: u64) -> (Buffer, Arc<Counters>) {
        let counters = Arc::new(Counters::default());
        (Buffer::new(record_limit, counters.clone()), counters)
    }

    #[test]
    fn while_recording_every_frame_is_held_and_read_ahead_is_free() {
        let (mut buffer, counters) = buffer(10 * READ_AHEAD);
        let stalled = buffer.join().unwrap();
        for _ in 0..8 {
            assert!(buffer.has_room(), "a candidate entry is read on");
            assert!(!buffer.push(frame(16 * 1024)));
        }
        let late = buffer.join().unwrap();
        while buffer.next(late).is_some() {}
        assert_eq!(buffer.held(), 128 * 1024, "held for the entry");
        assert_eq!(buffer.recorded().unwrap().len(), 8);
        assert_eq!(counters.in_flight_bytes.load(), 128 * 1024);
        buffer.stop_recording();
        assert!(!buffer.has_room(), "ended: the stalled reader holds it all");
        buffer.leave(stalled);
        assert_eq!(buffer.held(), 0, "read by every reader left");
        assert_eq!(counters.in_flight_bytes.load(), 0);
    }

    #[test]
    fn past_the_recording_the_slowest_reader_bounds_what_is_held() {
        let (mut buffer, counters) = buffer(1024);
        let (slow, fast) = (buffer.join().unwrap(), buffer.join().unwrap());
        let mut pushed = 0;
        while buffer.has_room() {
            let stopped = buffer.push(frame(1024));
            assert_eq!(stopped, pushed == 1, "stops once, past the limit");
            pushed += 1;
            while buffer.next(fast).is_some() {}
        }
        assert!(buffer.join().is_none(), "no joining past the recording");
        assert_eq!(pushed, READ_AHEAD / 1024);
        assert_eq!(
            buffer.held(),
            READ_AHEAD,
            "what the slow reader has yet to read"
        );
        assert!(buffer.recorded().is_none());
        buffer.next(slow).unwrap();
        assert_eq!(buffer.held(), READ_AHEAD - 1024, "read by both: freed");
        assert!(buffer.has_room());
        buffer.leave(slow);
        assert_eq!(buffer.held(), 0, "the fast reader has read it all");
        assert!(buffer.has_read_all(fast));
        drop(buffer);
        assert_eq!(counters.in_flight_bytes.load(), 0);
    }

    #[test]
    fn a_vacant_slot_is_reused_and_the_slowest_is_found_again() {
        let (mut buffer, _) = buffer(u64::MAX);
        let a = buffer.join().unwrap();
        buffer.push(frame(1));
        buffer.push(frame(1));
        let b = buffer.join().unwrap();
        buffer.next(a).unwrap();
        buffer.next(a).unwrap();
        buffer.leave(a);
        assert_eq!(buffer.join(), Some(a));
        buffer.stop_recording();
        buffer.next(b).unwrap();
        buffer.leave(a);
        assert_eq!(buffer.held(), 1, "b has one frame left");
    }
}
