//! Server-sent events as both providers stream them: an incremental parser
//! that accepts bytes split anywhere, and an encoder back to wire bytes.
//!
//! Follows the WHATWG event-stream rules the providers rely on: lines end
//! with `\n`, `\r\n` or `\r`; `:` starts a comment; one optional space after
//! the field colon is dropped; several `data:` lines join with `\n`; a blank
//! line dispatches; an event without data is not dispatched; `id`/`retry` and
//! unknown fields are ignored (neither provider uses them).

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SseEvent {
    /// The `event:` name (Anthropic sends one per event; OpenAI none).
    pub event: Option<String>,
    /// The data lines joined with "\n".
    pub data: String,
}

impl SseEvent {
    /// An unnamed event (OpenAI style).
    pub fn data(data: impl Into<String>) -> Self {
        SseEvent {
            event: None,
            data: data.into(),
        }
    }

    /// A named event (Anthropic style).
    pub fn named(event: impl Into<String>, data: impl Into<String>) -> Self {
        SseEvent {
            event: Some(event.into()),
            data: data.into(),
        }
    }

    /// OpenAI's end-of-stream marker, `data: [DONE]`.
    pub fn done() -> Self {
        SseEvent::data("[DONE]")
    }

    /// Whether this is OpenAI's `[DONE]` marker.
    pub fn is_done(&self) -> bool {
        self.data == "[DONE]"
    }

    /// Appends the wire form: `event: x\n` when named, one `data: ` line per
    /// data line, then a blank line. Parsing it yields this event back (a
    /// lone `\r` inside data comes back as `\n`, as for any SSE reader).
    pub fn write_to(&self, out: &mut Vec<u8>) {
        if let Some(event) = &self.event {
            out.extend_from_slice(b"event: ");
            out.extend_from_slice(event.as_bytes());
            out.push(b'\n');
        }
        for line in self.data.split('\n') {
            out.extend_from_slice(b"data: ");
            out.extend_from_slice(line.as_bytes());
            out.push(b'\n');
        }
        out.push(b'\n');
    }

    /// The wire form as a fresh buffer.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.data.len() + 16);
        self.write_to(&mut out);
        out
    }
}

/// The wire form of a whole event sequence.
pub fn encode(events: &[SseEvent]) -> Vec<u8> {
    let size = events.iter().map(|e| e.data.len() + 32).sum();
    let mut out = Vec::with_capacity(size);
    for event in events {
        event.write_to(&mut out);
    }
    out
}

/// Incremental parser: feed it the body as it arrives, in any split.
#[derive(Debug, Default)]
pub struct SseParser {
    /// Bytes of the current, unfinished line. Kept as bytes so a UTF-8
    /// character split across two reads decodes whole.
    line: Vec<u8>,
    /// The previous chunk ended in `\r`; a leading `\n` belongs to it.
    after_cr: bool,
    /// Past the first line (where a byte-order mark may appear).
    started: bool,
    event: Option<String>,
    data: String,
    has_data: bool,
}

impl SseParser {
    /// A parser at the start of a stream.
    pub fn new() -> Self {
        Self::default()
    }

    /// Parses `chunk` and returns the events it completed.
    pub fn feed(&mut self, chunk: &[u8]) -> Vec<SseEvent> {
        let mut out = Vec::new();
        self.feed_into(chunk, &mut out);
        out
    }

    /// Parses `chunk`, appending the events it completed to `out`.
    pub fn feed_into(&mut self, mut chunk: &[u8], out: &mut Vec<SseEvent>) {
        if self.after_cr && !chunk.is_empty() {
            self.after_cr = false;
            if let [b'\n', rest @ ..] = chunk {
                chunk = rest;
            }
        }
        while let Some(end) = chunk.iter().position(|b| *b == b'\n' || *b == b'\r') {
            let (line, rest) = chunk.split_at(end);
            let terminator = rest[0];
            chunk = &rest[1..];
            if terminator == b'\r' {
                match chunk {
                    [b'\n', tail @ ..] => chunk = tail,
                    [] => self.after_cr = true,
                    _ => {}
                }
            }
            if self.line.is_empty() {
                self.process_line(line, out);
            } else {
                let mut whole = std::mem::take(&mut self.line);
                whole.extend_from_slice(line);
                self.process_line(&whole, out);
                whole.clear();
                self.line = whole;
            }
        }
        self.line.extend_from_slice(chunk);
    }

    /// Whether bytes or fields of an undispatched event are pending: at the
    /// end of a body this means the stream was cut mid-event.
    pub fn has_partial(&self) -> bool {
        !self.line.is_empty() || self.has_data || self.event.is_some()
    }

    /// Bytes held for the event being received. Upstream output is not
    /// bounded by the protocol; a caller that must bound memory aborts the
    /// stream when this grows past its limit.
    pub fn buffered_len(&self) -> usize {
        self.line.len() + self.data.len()
    }

    fn process_line(&mut self, mut line: &[u8], out: &mut Vec<SseEvent>) {
        if !self.started {
            self.started = true;
            if let [0xEF, 0xBB, 0xBF, rest @ ..] = line {
                line = rest;
            }
        }
        if line.is_empty() {
            let event = self.event.take();
            if self.has_data {
                self.has_data = false;
                // Data lines were each pushed with a trailing "\n".
                self.data.pop();
                out.push(SseEvent {
                    event,
                    data: std::mem::take(&mut self.data),
                });
            }
            return;
        }
        if line[0] == b':' {
            return;
        }
        let (field, value) = match line.iter().position(|b| *b == b':') {
            Some(colon) => {
                let value = &line[colon + 1..];
                (&line[..colon], value.strip_prefix(b" ").unwrap_or(value))
            }
            None => (line, &b""[..]),
        };
        match field {
            b"data" => {
                self.data.push_str(&String::from_utf8_lossy(value));
                self.data.push('\n');
                self.has_data = true;
            }
            b"event" => {
                self.event =
                    (!value.is_empty()).then(|| String::from_utf8_lossy(value).into_owned());
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stream exercising every rule: both providers' shapes, CRLF and CR
    /// line ends, comments, multi-line data, a field without colon, an event
    /// without data, multi-byte UTF-8.
    const STREAM: &[u8] = b"\xEF\xBB\xBF: keep-alive\r\n\r\n\
data: {\"choices\":[{\"delta\":{\"content\":\"h\xC3\xA9llo \xF0\x9F\x98\x80\"}}]}\n\n\
event: message_start\r\ndata: {\"type\":\"message_start\"}\r\n\r\n\
event: ping\rdata:{\"type\": \"ping\"}\r\r\
data: line one\ndata\ndata:  two spaces\n\n\
event: lonely\n\n\
id: 7\nretry: 10\nunknown: x\ndata: [DONE]\n\n";

    fn expected() -> Vec<SseEvent> {
        vec![
            SseEvent::data("{\"choices\":[{\"delta\":{\"content\":\"héllo 😀\"}}]}"),
            SseEvent::named("message_start", "{\"type\":\"message_start\"}"),
            SseEvent::named("ping", "{\"type\": \"ping\"}"),
            SseEvent::data("line one\n\n two spaces"),
            SseEvent::done(),
        ]
    }

    #[test]
    fn parses_a_whole_stream() {
        let mut p = SseParser::new();
        assert_eq!(p.feed(STREAM), expected());
        assert!(!p.has_partial());
    }

    #[test]
    fn any_single_split_gives_the_same_events() {
        for at in 0..=STREAM.len() {
            let mut p = SseParser::new();
            let mut events = p.feed(&STREAM[..at]);
            events.extend(p.feed(&STREAM[at..]));
            assert_eq!(events, expected(), "split at {at}");
        }
    }

    #[test]
    fn any_pair_of_splits_gives_the_same_events() {
        for a in 0..=STREAM.len() {
            for b in a..=STREAM.len() {
                let mut p = SseParser::new();
                let mut events = Vec::new();
                p.feed_into(&STREAM[..a], &mut events);
                p.feed_into(&STREAM[a..b], &mut events);
                p.feed_into(&STREAM[b..], &mut events);
                assert_eq!(events, expected(), "splits at {a}, {b}");
            }
        }
    }

    #[test]
    fn byte_by_byte_gives_the_same_events() {
        let mut p = SseParser::new();
        let events: Vec<SseEvent> = STREAM.iter().flat_map(|b| p.feed(&[*b])).collect();
        assert_eq!(events, expected());
    }

    #[test]
    fn a_cut_stream_is_visible() {
        let mut p = SseParser::new();
        assert!(p.feed(b"data: {\"partial\"").is_empty());
        assert!(p.has_partial());
        let mut p = SseParser::new();
        assert!(p.feed(b"data: x\n").is_empty());
        assert!(p.has_partial());
        assert_eq!(p.buffered_len(), 2);
        assert_eq!(p.feed(b"\n"), vec![SseEvent::data("x")]);
        assert_eq!(p.buffered_len(), 0);
    }

    #[test]
    fn encoding_is_exact_and_parses_back() {
        assert_eq!(SseEvent::data("{}").to_bytes(), b"data: {}\n\n");
        assert_eq!(
            SseEvent::named("message_stop", "{\"type\":\"message_stop\"}").to_bytes(),
            b"event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"
        );
        assert_eq!(SseEvent::data("a\nb").to_bytes(), b"data: a\ndata: b\n\n");
        let events = vec![
            SseEvent::named("x", "1"),
            SseEvent::data(""),
            SseEvent::data("multi\nline\n"),
            SseEvent::data(" leading space"),
            SseEvent::done(),
        ];
        assert_eq!(SseParser::new().feed(&encode(&events)), events);
    }
}
