//! The line-level work of [`SseParser`]: finding line ends, keeping what a chunk boundary cuts,
//! interpreting fields, dispatching events, enforcing the size cap.

use std::mem;

use memchr::{memchr, memchr2};

use super::{SseEvent, SseParser};

/// Capacity a buffer may keep after an event; above it the buffer is shrunk, so one large event
/// does not pin its memory for the rest of the stream.
const RETAINED_CAPACITY: usize = 64 * 1024;

impl SseParser {
    /// Parses a chunk that follows the byte order mark, if any.
    pub(super) fn feed_lines<F: FnMut(&SseEvent<'_>)>(&mut self, chunk: &[u8], on_event: &mut F) {
        let mut pos = 0;
        if self.skip_lf && !chunk.is_empty() {
            self.skip_lf = false;
            if chunk[0] == b'\n' {
                pos = 1;
            }
        }
        while let Some(offset) = memchr2(b'\n', b'\r', &chunk[pos..]) {
            let end = pos + offset;
            let mut next = end + 1;
            if chunk[end] == b'\r' {
                match chunk.get(next) {
                    Some(b'\n') => next += 1,
                    Some(_) => {}
                    None => self.skip_lf = true,
                }
            }
            self.end_line(chunk, pos, end, on_event);
            pos = next;
        }
        if pos < chunk.len() {
            self.carry(&chunk[pos..]);
        }
        // The chunk goes away: keep the data of the event it leaves open.
        if let Some((start, end)) = self.data_in_chunk.take() {
            self.data.clear();
            self.data.extend_from_slice(&chunk[start..end]);
        }
    }

    /// A line end at `end`; the line started at `start` or, if some of it was carried, earlier.
    fn end_line<F: FnMut(&SseEvent<'_>)>(
        &mut self,
        chunk: &[u8],
        start: usize,
        end: usize,
        on_event: &mut F,
    ) {
        if self.skipping_line {
            self.skipping_line = false;
        } else if self.line.is_empty() {
            self.line_in(chunk, &chunk[start..end], Some(start), on_event);
        } else if self.over_cap(self.line.len() + (end - start)) {
            self.line.clear();
            self.drop_event();
        } else {
            let mut line = mem::take(&mut self.line);
            line.extend_from_slice(&chunk[start..end]);
            self.line_in(chunk, &line, None, on_event);
            line.clear();
            shrink(&mut line);
            self.line = line;
        }
    }

    /// Keeps the start of a line the chunk cut, unless it makes the event too large.
    fn carry(&mut self, partial: &[u8]) {
        if self.skipping_line {
            return;
        }
        if self.skipping_event {
            // A non-blank line of a dropped event: skip it without keeping it.
            self.skipping_line = true;
        } else if self.over_cap(self.line.len() + partial.len()) {
            self.line.clear();
            self.drop_event();
            self.skipping_line = true;
        } else {
            self.line.extend_from_slice(partial);
        }
    }

    /// One complete line; `offset` is where it starts in `chunk` when it lies there whole.
    fn line_in<F: FnMut(&SseEvent<'_>)>(
        &mut self,
        chunk: &[u8],
        line: &[u8],
        offset: Option<usize>,
        on_event: &mut F,
    ) {
        if self.skipping_event {
            if line.is_empty() {
                self.skipping_event = false;
                self.reset_event();
            }
            return;
        }
        if line.is_empty() {
            self.dispatch(chunk, on_event);
            return;
        }
        if self.over_cap(line.len()) {
            self.drop_event();
            return;
        }
        if line[0] == b':' {
            return;
        }
        let (name, value_start) = match memchr(b':', line) {
            Some(colon) if line.get(colon + 1) == Some(&b' ') => (&line[..colon], colon + 2),
            Some(colon) => (&line[..colon], colon + 1),
            None => (line, line.len()),
        };
        let value = &line[value_start..];
        self.pending = true;
        match name {
            b"data" => self.push_data(chunk, value, offset.map(|start| start + value_start)),
            b"event" => {
                self.event_type.clear();
                self.event_type.push_str(&String::from_utf8_lossy(value));
            }
            b"id" if !value.contains(&0) => {
                self.last_id.clear();
                self.last_id.push_str(&String::from_utf8_lossy(value));
            }
            b"retry" if !value.is_empty() && value.iter().all(u8::is_ascii_digit) => {
                // All digits, so only an overflow can fail; an absurd value is ignored.
                if let Some(retry) = std::str::from_utf8(value).ok().and_then(|v| v.parse().ok()) {
                    self.retry = Some(retry);
                }
            }
            _ => {}
        }
    }

    fn push_data(&mut self, chunk: &[u8], value: &[u8], offset: Option<usize>) {
        if !self.has_data {
            self.has_data = true;
            match offset {
                // The common case, `data: {...}` and a blank line in one chunk: no copy at all.
                Some(start) => self.data_in_chunk = Some((start, start + value.len())),
                None => self.data.extend_from_slice(value),
            }
            return;
        }
        if let Some((start, end)) = self.data_in_chunk.take() {
            self.data.extend_from_slice(&chunk[start..end]);
        }
        self.data.push(b'\n');
        self.data.extend_from_slice(value);
    }

    fn dispatch<F: FnMut(&SseEvent<'_>)>(&mut self, chunk: &[u8], on_event: &mut F) {
        if self.has_data {
            let data = match self.data_in_chunk {
                Some((start, end)) => &chunk[start..end],
                None => &self.data[..],
            };
            let event = SseEvent {
                event: if self.event_type.is_empty() {
                    "message"
                } else {
                    &self.event_type
                },
                data,
                id: (!self.last_id.is_empty()).then_some(self.last_id.as_str()),
                retry: self.retry,
            };
            on_event(&event);
        }
        self.reset_event();
    }

    fn data_len(&self) -> usize {
        match self.data_in_chunk {
            Some((start, end)) => end - start,
            None => self.data.len(),
        }
    }

    fn over_cap(&self, line_len: usize) -> bool {
        self.data_len().saturating_add(line_len) > self.max_event_bytes
    }

    fn drop_event(&mut self) {
        self.dropped += 1;
        self.reset_event();
        self.skipping_event = true;
    }

    /// Forgets the current event (not the stream's last event ID or reconnection time).
    pub(super) fn reset_event(&mut self) {
        self.data.clear();
        shrink(&mut self.data);
        self.data_in_chunk = None;
        self.has_data = false;
        self.event_type.clear();
        self.pending = false;
    }
}

pub(super) fn shrink(buffer: &mut Vec<u8>) {
    if buffer.capacity() > RETAINED_CAPACITY {
        buffer.shrink_to(RETAINED_CAPACITY);
    }
}
