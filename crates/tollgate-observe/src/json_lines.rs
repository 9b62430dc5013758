//! [`JsonLines`]: a lean `tracing` layer that writes each event as one JSON
//! line.
//!
//! tracing-subscriber's JSON formatter is general (spans, any field type,
//! configurable timestamps) and costs about 2 µs per access-log line here;
//! an access log written for every request wants less. This layer writes
//! the event's fields in order, with a UTC timestamp whose date and time
//! part is formatted once a second, into a reused buffer, and hands the
//! whole line to the writer in one call. Spans are not written.

use std::{
    cell::RefCell,
    fmt::{self, Write as _},
    io::{self, Write as _},
    time::{SystemTime, UNIX_EPOCH},
};

use tracing::{
    Event, Level, Metadata, Subscriber,
    callsite::Identifier,
    field::{Field, Visit},
};
use tracing_subscriber::{Layer, fmt::MakeWriter, layer::Context};

/// Writes every event it sees as one JSON line:
/// `{"ts":"2026-11-28T04:08:12.345Z","level":"INFO","target":"tollgate::access","message":"request",...fields}`.
///
/// Filter it like any layer (`.with_filter(..)`) to pick the targets.
#[derive(Debug)]
#[must_use]
pub struct JsonLines<W> {
    make_writer: W,
}

impl JsonLines<fn() -> io::Stdout> {
    /// Lines on standard output.
    pub fn stdout() -> Self {
        Self {
            make_writer: io::stdout,
        }
    }
}

impl<W> JsonLines<W>
where
    W: for<'a> MakeWriter<'a> + 'static,
{
    /// Lines to `make_writer` (a file behind a `Mutex`, `io::sink`, ...).
    pub fn new(make_writer: W) -> Self {
        Self { make_writer }
    }
}

thread_local! {
    static LINE: RefCell<String> = RefCell::new(String::with_capacity(512));
    // The Unix second last formatted, and its `YYYY-MM-DDTHH:MM:SS`.
    static SECOND: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
    static KEYS: RefCell<Vec<Keys>> = const { RefCell::new(Vec::new()) };
}

/// How many callsites' keys each thread keeps: the access log and the
/// audit trail alternate on every request, so one is not enough.
const CACHED_CALLSITES: usize = 8;

/// The keys of `metadata`'s callsite, rendered once and kept among the
/// last [`CACHED_CALLSITES`] callsites seen on this thread.
fn keys_for<'k>(cache: &'k mut Vec<Keys>, metadata: &Metadata<'_>) -> &'k Keys {
    let callsite = metadata.callsite();
    let at = match cache
        .iter()
        .position(|k| k.callsite.as_ref() == Some(&callsite))
    {
        Some(at) => at,
        None if cache.len() < CACHED_CALLSITES => {
            cache.push(Keys::new());
            cache.len() - 1
        }
        // Full: the oldest rendering (the first) gives way.
        None => {
            cache.rotate_left(1);
            cache.len() - 1
        }
    };
    let keys = &mut cache[at];
    keys.load(metadata);
    keys
}

/// The JSON text that depends only on an event's callsite, rendered once
/// and reused while events keep coming from that callsite (the access log
/// writes one per request): the level and target, and each field's key.
struct Keys {
    callsite: Option<Identifier>,
    /// `","level":"INFO","target":"…"`.
    head: String,
    /// `,"name":` of each field, by field index; the strings are reused
    /// when another callsite is rendered.
    keys: Vec<String>,
}

impl Keys {
    const fn new() -> Self {
        Self {
            callsite: None,
            head: String::new(),
            keys: Vec::new(),
        }
    }

    /// Renders the text of `metadata`'s callsite, unless it is the one
    /// already rendered.
    fn load(&mut self, metadata: &Metadata<'_>) {
        let callsite = metadata.callsite();
        if self.callsite.as_ref() == Some(&callsite) {
            return;
        }
        self.head.clear();
        self.head.push_str("\",\"level\":\"");
        self.head.push_str(level(metadata.level()));
        self.head.push_str("\",\"target\":");
        push_json_str(&mut self.head, metadata.target());
        let fields = metadata.fields();
        self.keys.resize_with(fields.len(), String::new);
        for (key, field) in self.keys.iter_mut().zip(fields) {
            key.clear();
            key.push_str(",\"");
            push_escaped(key, field.name());
            key.push_str("\":");
        }
        self.callsite = Some(callsite);
    }

    /// `,"name":` of `field`, when it is a field of the rendered callsite.
    fn key(&self, field: &Field) -> Option<&str> {
        if self.callsite.as_ref() != Some(&field.callsite()) {
            return None;
        }
        self.keys.get(field.index()).map(String::as_str)
    }
}

impl<S, W> Layer<S> for JsonLines<W>
where
    S: Subscriber,
    W: for<'a> MakeWriter<'a> + 'static,
{
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        LINE.with(|line| {
            KEYS.with(|keys| {
                let (Ok(mut line), Ok(mut cache)) = (line.try_borrow_mut(), keys.try_borrow_mut())
                else {
                    return;
                };
                let keys = keys_for(&mut cache, event.metadata());
                line.clear();
                line.push_str("{\"ts\":\"");
                push_timestamp(&mut line);
                line.push_str(&keys.head);
                event.record(&mut Fields {
                    line: &mut line,
                    keys,
                });
                line.push_str("}\n");
                // A failed log write is not the request's failure.
                let _ = self.make_writer.make_writer().write_all(line.as_bytes());
            });
        });
    }
}

/// Writes one `INFO` line of `target` to `writer`, its fields pushed by
/// `fields`, in the form [`JsonLines`] gives an event of that target with
/// the same fields: what the access log writes when it has a writer of
/// its own ([`ObserveBuilder::access_log`](crate::ObserveBuilder::access_log)).
///
/// Written here rather than through a `tracing` event because the
/// subscriber's dispatch (the registry, each layer's filter) and the
/// field visitor cost about as much again as the line itself, on every
/// request.
pub(crate) fn write_info_line<W: io::Write>(
    mut writer: W,
    target: &str,
    fields: impl FnOnce(&mut LineFields<'_>),
) {
    let write = |line: &mut String| {
        line.clear();
        line.push_str("{\"ts\":\"");
        push_timestamp(line);
        line.push_str("\",\"level\":\"INFO\",\"target\":");
        push_json_str(line, target);
        fields(&mut LineFields { line: &mut *line });
        line.push_str("}\n");
        // A failed log write is not the request's failure.
        let _ = writer.write_all(line.as_bytes());
    };
    LINE.with(|line| match line.try_borrow_mut() {
        Ok(mut line) => write(&mut line),
        // Only when writing a line logs another one.
        Err(_) => write(&mut String::new()),
    });
}

/// The fields of a line written by [`write_info_line`].
pub(crate) struct LineFields<'a> {
    line: &'a mut String,
}

impl LineFields<'_> {
    /// `key` (`,"name":`, as [`line_key!`] makes it) and `value`; nothing
    /// for a `None`, as `tracing` records no field for one.
    pub(crate) fn field(&mut self, key: &'static str, value: impl LineValue) {
        value.push_field(key, self.line);
    }
}

/// `,"name":` for a field `name` of a line written by [`write_info_line`],
/// made at compile time: a Rust identifier has nothing to escape.
macro_rules! line_key {
    ($name:ident) => {
        concat!(",\"", stringify!($name), "\":")
    };
}
pub(crate) use line_key;

/// A value [`LineFields::field`] writes as `tracing` would record it (the
/// visitor of [`JsonLines`] writes its values with these too).
pub(crate) trait LineValue: Sized {
    /// The value's JSON text.
    fn push_value(self, line: &mut String);

    /// `key`, then the value.
    fn push_field(self, key: &str, line: &mut String) {
        line.push_str(key);
        self.push_value(line);
    }
}

impl LineValue for &str {
    fn push_value(self, line: &mut String) {
        push_json_str(line, self);
    }
}

impl LineValue for u64 {
    fn push_value(self, line: &mut String) {
        line.push_str(itoa::Buffer::new().format(self));
    }
}

impl LineValue for i64 {
    fn push_value(self, line: &mut String) {
        line.push_str(itoa::Buffer::new().format(self));
    }
}

impl LineValue for u16 {
    fn push_value(self, line: &mut String) {
        u64::from(self).push_value(line);
    }
}

impl LineValue for f64 {
    fn push_value(self, line: &mut String) {
        push_f64(line, self);
    }
}

impl LineValue for bool {
    fn push_value(self, line: &mut String) {
        line.push_str(if self { "true" } else { "false" });
    }
}

/// No field at all for a `None`, as `tracing` records none.
impl<T: LineValue> LineValue for Option<T> {
    fn push_value(self, line: &mut String) {
        match self {
            Some(value) => value.push_value(line),
            None => line.push_str("null"),
        }
    }

    fn push_field(self, key: &str, line: &mut String) {
        if let Some(value) = self {
            value.push_field(key, line);
        }
    }
}

fn level(level: &Level) -> &'static str {
    match *level {
        Level::ERROR => "ERROR",
        Level::WARN => "WARN",
        Level::INFO => "INFO",
        Level::DEBUG => "DEBUG",
        Level::TRACE => "TRACE",
    }
}

struct Fields<'a> {
    line: &'a mut String,
    keys: &'a Keys,
}

impl Fields<'_> {
    /// `,"name":`, as rendered for the callsite.
    fn key(&mut self, field: &Field) {
        if let Some(key) = self.keys.key(field) {
            self.line.push_str(key);
        } else {
            // Not a field of the event's callsite (`tracing` records
            // only those): rendered all the same.
            self.line.push_str(",\"");
            push_escaped(self.line, field.name());
            self.line.push_str("\":");
        }
    }
}

impl Visit for Fields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.key(field);
        value.push_value(self.line);
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.key(field);
        value.push_value(self.line);
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.key(field);
        value.push_value(self.line);
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.key(field);
        value.push_value(self.line);
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.key(field);
        value.push_value(self.line);
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.key(field);
        // Escaped as it is formatted, without a temporary string.
        self.line.push('"');
        let _ = write!(Escaping(self.line), "{value:?}");
        self.line.push('"');
    }
}

/// Writes into a JSON string, escaping as it goes.
struct Escaping<'a>(&'a mut String);

impl fmt::Write for Escaping<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        push_escaped(self.0, s);
        Ok(())
    }
}

/// `s` as a JSON string, escaped.
#[inline]
fn push_json_str(out: &mut String, s: &str) {
    out.reserve(s.len() + 2);
    out.push('"');
    push_escaped(out, s);
    out.push('"');
}

/// A finite number with three decimals (milliseconds to the microsecond),
/// else `null`.
fn push_f64(out: &mut String, value: f64) {
    if !value.is_finite() {
        out.push_str("null");
        return;
    }
    // Thousandths as an integer, formatted without `fmt`: the float
    // formatter is the costliest part of a line. Past 2^53 thousandths the
    // integer is no longer exact; leave those to `fmt`.
    let thousandths = (value.abs() * 1000.0).round();
    if thousandths >= 9_007_199_254_740_992.0 {
        let _ = write!(out, "{value:.3}");
        return;
    }
    // A non-negative whole number below 2^53: the cast is exact.
    let thousandths = thousandths as u64;
    if value.is_sign_negative() {
        out.push('-');
    }
    out.push_str(itoa::Buffer::new().format(thousandths / 1000));
    push_three_digits(out, thousandths % 1000);
}

/// `.` and `n` (below 1000) as three digits.
fn push_three_digits(out: &mut String, n: u64) {
    let digit = |d: u64| char::from(b'0' + (d % 10) as u8);
    out.push('.');
    out.push(digit(n / 100));
    out.push(digit(n / 10));
    out.push(digit(n));
}

/// Whether `s` has a byte JSON wants escaped: `"`, `\\` or a control
/// character. Eight bytes at a time, and a short string (most keys and
/// many values) in one word without a loop: this runs on every key and
/// value.
#[inline]
fn needs_escape(s: &str) -> bool {
    let bytes = s.as_bytes();
    let len = bytes.len();
    match len {
        0 => false,
        // Three reads cover every byte; the rest of the word is spaces.
        1..=3 => {
            let byte = |i: usize| u64::from(bytes[i]);
            let pad = u64::from_le_bytes([0, 0, 0, b' ', b' ', b' ', b' ', b' ']);
            has_special(byte(0) | byte(len / 2) << 8 | byte(len - 1) << 16 | pad)
        }
        // The first and the last four bytes, overlapping when shorter than 8.
        4..=7 => {
            let mut head = [0u8; 4];
            let mut tail = [0u8; 4];
            head.copy_from_slice(&bytes[..4]);
            tail.copy_from_slice(&bytes[len - 4..]);
            has_special(
                u64::from(u32::from_le_bytes(head)) | u64::from(u32::from_le_bytes(tail)) << 32,
            )
        }
        _ => {
            let mut chunks = bytes.chunks_exact(8);
            if chunks.by_ref().any(|chunk| has_special(word(chunk))) {
                return true;
            }
            // The last eight bytes, overlapping the chunks checked above.
            !chunks.remainder().is_empty() && has_special(word(&bytes[len - 8..]))
        }
    }
}

/// Eight bytes as a word.
fn word(chunk: &[u8]) -> u64 {
    let mut word = [0u8; 8];
    word.copy_from_slice(chunk);
    u64::from_le_bytes(word)
}

/// Whether a byte of `x` is `"`, `\\` or below 0x20.
fn has_special(x: u64) -> bool {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGH: u64 = u64::from_ne_bytes([0x80; 8]);
    // A byte of `x` is zero (or `x` holds a byte below `n`): the classic
    // "has less than" bit trick, exact for `n <= 0x80`.
    let below = |x: u64, n: u8| x.wrapping_sub(ONES * u64::from(n)) & !x & HIGH;
    below(x, 0x20)
        | below(x ^ (ONES * u64::from(b'"')), 1)
        | below(x ^ (ONES * u64::from(b'\\')), 1)
        != 0
}

/// `s` escaped for the inside of a JSON string.
#[inline]
fn push_escaped(out: &mut String, s: &str) {
    // Most values (ids, paths, addresses) and every usual key need no
    // escaping: that check and the copy stay inline, the escaping loop
    // (and the registers it needs) out of line.
    if needs_escape(s) {
        push_escaped_slow(out, s);
    } else {
        out.push_str(s);
    }
}

/// [`push_escaped`] for a string that has something to escape.
#[cold]
#[inline(never)]
fn push_escaped_slow(out: &mut String, s: &str) {
    let mut start = 0;
    for (i, c) in s.char_indices() {
        let escaped = match c {
            '"' => "\\\"",
            '\\' => "\\\\",
            '\n' => "\\n",
            '\r' => "\\r",
            '\t' => "\\t",
            c if (c as u32) < 0x20 => {
                out.push_str(&s[start..i]);
                let _ = write!(out, "\\u{:04x}", c as u32);
                start = i + c.len_utf8();
                continue;
            }
            _ => continue,
        };
        out.push_str(&s[start..i]);
        out.push_str(escaped);
        start = i + c.len_utf8();
    }
    out.push_str(&s[start..]);
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ` in UTC.
fn push_timestamp(out: &mut String) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let secs = now.as_secs();
    SECOND.with(|cache| {
        let Ok(mut cache) = cache.try_borrow_mut() else {
            return;
        };
        if cache.0 != secs {
            cache.1 = civil(secs);
            cache.0 = secs;
        }
        out.push_str(&cache.1);
    });
    push_three_digits(out, u64::from(now.subsec_millis()));
    out.push('Z');
}

/// The UTC date and time of a Unix second (Howard Hinnant's
/// `civil_from_days`).
fn civil(secs: u64) -> String {
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}",
        rem / 3_600,
        rem / 60 % 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use tracing_subscriber::prelude::*;

    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);

    impl io::Write for Buf {
        fn write(&mut self, data: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(data);
            Ok(data.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// What `JsonLines` writes for the events `emit` makes.
    fn lines_of(emit: impl FnOnce()) -> String {
        let buf = Buf::default();
        let out = buf.clone();
        let subscriber = tracing_subscriber::registry().with(JsonLines::new(move || out.clone()));
        tracing::subscriber::with_default(subscriber, emit);
        String::from_utf8(buf.0.lock().unwrap().clone()).unwrap()
    }

    #[test]
    fn events_become_valid_json_lines() {
        let text = lines_of(|| {
            tracing::info!(target: "tollgate::access", request_id = "r-1", status = 200u64, latency_ms = 1.23456, ok = true, path = "/a\"b\\c\n", ip = %"127.0.0.1", "request");
            tracing::warn!(target: "other", missing = tracing::field::Empty, "second");
        });
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        let first: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
        assert_eq!(first["target"], "tollgate::access");
        assert_eq!(first["level"], "INFO");
        assert_eq!(first["message"], "request");
        assert_eq!(first["request_id"], "r-1");
        assert_eq!(first["status"], 200);
        assert_eq!(first["latency_ms"], 1.235);
        assert_eq!(first["ok"], true);
        assert_eq!(first["path"], "/a\"b\\c\n");
        assert_eq!(first["ip"], "127.0.0.1");
        let ts = first["ts"].as_str().unwrap();
        assert_eq!(ts.len(), 24, "{ts}");
        assert!(ts.ends_with('Z'));
        let second: serde_json::Value = serde_json::from_str(lines[1]).unwrap();
        assert_eq!(second["level"], "WARN");
    }

    #[test]
    fn keys_follow_the_callsite() {
        let text = lines_of(|| {
            for i in 0..3u64 {
                tracing::info!(target: "one", a = i, b = "x", "first");
                tracing::warn!(target: "two", c = i, "a.b" = true, "second");
            }
        });
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect();
        assert_eq!(lines.len(), 6, "{text}");
        let expected = [
            (
                "one",
                "INFO",
                "a",
                ["a", "b", "level", "message", "target", "ts"],
            ),
            (
                "two",
                "WARN",
                "c",
                ["a.b", "c", "level", "message", "target", "ts"],
            ),
        ];
        for (i, line) in lines.iter().enumerate() {
            let (target, level, counter, keys) = expected[i % 2];
            let mut seen: Vec<&str> = line
                .as_object()
                .unwrap()
                .keys()
                .map(String::as_str)
                .collect();
            seen.sort_unstable();
            assert_eq!(seen, keys, "{line}");
            assert_eq!(line["target"], target);
            assert_eq!(line["level"], level);
            assert_eq!(line[counter], i / 2);
        }
    }

    #[test]
    fn civil_dates() {
        assert_eq!(civil(0), "1970-01-01T00:00:00");
        assert_eq!(civil(951_782_400), "2000-02-29T00:00:00");
        assert_eq!(civil(1_795_838_892), "2026-11-28T04:08:12");
    }

    #[test]
    fn floats_have_three_decimals_like_fmt() {
        for value in [
            0.0, -0.0, 1.23456, 0.0004, 0.0006, 12.5, 999.9996, -3.25, 1e12, 1e300,
        ] {
            let mut out = String::new();
            push_f64(&mut out, value);
            assert_eq!(out, format!("{value:.3}"), "{value}");
        }
        let mut out = String::new();
        push_f64(&mut out, f64::NAN);
        assert_eq!(out, "null");
    }

    #[test]
    fn escape_scan_finds_every_special_byte() {
        for len in 0..20 {
            let plain = "a".repeat(len);
            assert!(!needs_escape(&plain));
            for at in 0..len {
                for special in ['"', '\\', '\n', '\u{1}', '\u{1f}'] {
                    let mut s = plain.clone();
                    s.replace_range(at..=at, &special.to_string());
                    assert!(needs_escape(&s), "{s:?}");
                }
            }
        }
        assert!(!needs_escape("é\u{7f} ~/"));
        for plain in ["é", "\u{7f}", "~", "é~", "日本", "GET", "/users/é"] {
            assert!(!needs_escape(plain), "{plain:?}");
        }
    }

    #[test]
    fn control_characters_are_escaped() {
        let mut out = String::new();
        push_json_str(&mut out, "a\u{1}b\u{7f}é");
        assert_eq!(out, "\"a\\u0001b\u{7f}é\"");
    }
}
