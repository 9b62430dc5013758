//! A capturing tracing layer and a parser of the OpenMetrics text format,
//! for the observability tests.

#![expect(
    clippy::unwrap_used,
    clippy::panic,
    reason = "test helpers: a poisoned lock or a malformed exposition fails the test"
)]

use std::{
    collections::BTreeMap,
    fmt,
    sync::{Arc, Mutex},
};

use tracing::{
    Event, Subscriber,
    field::{Field, Visit},
};
use tracing_subscriber::{Layer, layer::Context, prelude::*};

/// One captured event: its target and its fields rendered as text.
#[derive(Clone, Debug)]
pub struct Captured {
    /// The event's target.
    pub target: String,
    /// Its fields, rendered as text.
    pub fields: BTreeMap<String, String>,
}

impl Captured {
    /// A field's text.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.fields.get(name).map(String::as_str)
    }
}

/// A layer that records every event into a shared Vec.
#[derive(Clone, Debug, Default)]
pub struct Capture {
    events: Arc<Mutex<Vec<Captured>>>,
}

/// Routes every event to the [`Capture`] installed on the thread that
/// emits it, if any.
///
/// It is the process's global subscriber, set once by the first
/// [`Capture::install`]: a callsite's interest is then decided with it in
/// place, so a test thread that hits a callsite first, with no capture of
/// its own, can never leave it switched off for a capture installed on
/// another thread (a thread-local subscriber per test could miss events
/// that way when tests run in parallel).
struct ToThreadCapture;

thread_local! {
    static CURRENT: std::cell::RefCell<Option<Capture>> = const { std::cell::RefCell::new(None) };
}

impl<S: Subscriber> Layer<S> for ToThreadCapture {
    fn register_callsite(
        &self,
        _metadata: &'static tracing::Metadata<'static>,
    ) -> tracing::subscriber::Interest {
        tracing::subscriber::Interest::always()
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let capture = CURRENT.with(|c| c.borrow().clone());
        if let Some(capture) = capture {
            capture.on_event(event, ctx);
        }
    }
}

/// Uninstalls a thread's [`Capture`] when dropped.
#[must_use = "the capture records only while the guard is held"]
#[derive(Debug)]
pub struct CaptureGuard(());

impl Drop for CaptureGuard {
    fn drop(&mut self) {
        CURRENT.with(|c| c.borrow_mut().take());
    }
}

impl Capture {
    /// Captures the events emitted on the current thread until the guard
    /// is dropped.
    pub fn install() -> (Self, CaptureGuard) {
        static GLOBAL: std::sync::Once = std::sync::Once::new();
        GLOBAL.call_once(|| {
            // Fails only if a test set another global subscriber first;
            // events then reach this capture only through that one.
            let _ = tracing::subscriber::set_global_default(
                tracing_subscriber::registry().with(ToThreadCapture),
            );
        });
        let capture = Self::default();
        CURRENT.with(|c| *c.borrow_mut() = Some(capture.clone()));
        (capture, CaptureGuard(()))
    }

    /// The events of `target` so far.
    pub fn events(&self, target: &str) -> Vec<Captured> {
        self.events
            .lock()
            .unwrap()
            .iter()
            .filter(|e| e.target == target)
            .cloned()
            .collect()
    }

    /// Every event so far.
    pub fn all(&self) -> Vec<Captured> {
        self.events.lock().unwrap().clone()
    }
}

struct Visitor<'a>(&'a mut BTreeMap<String, String>);

impl Visit for Visitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }
}

impl<S: Subscriber> Layer<S> for Capture {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let mut fields = BTreeMap::new();
        event.record(&mut Visitor(&mut fields));
        self.events.lock().unwrap().push(Captured {
            target: event.metadata().target().to_owned(),
            fields,
        });
    }
}

/// One sample of an exposition.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    /// The metric name, with any `_count`/`_bucket` suffix.
    pub name: String,
    /// The labels.
    pub labels: BTreeMap<String, String>,
    /// The value.
    pub value: f64,
}

/// Parses the samples of an OpenMetrics (or Prometheus 0.0.4) text
/// exposition; comment lines (`# HELP`, `# TYPE`, `# UNIT`, `# EOF`) are
/// skipped. Panics on a malformed line.
pub fn parse_exposition(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(parse_line)
        .collect()
}

fn parse_line(line: &str) -> Sample {
    let name_end = line
        .find(['{', ' '])
        .unwrap_or_else(|| panic!("no value in {line:?}"));
    let name = line[..name_end].to_owned();
    let mut rest = &line[name_end..];
    let mut labels = BTreeMap::new();
    if let Some(after) = rest.strip_prefix('{') {
        let mut chars = after.char_indices().peekable();
        let end;
        loop {
            // `}` or a key
            let (start, c) = chars.next().unwrap_or_else(|| panic!("unclosed {line:?}"));
            if c == '}' {
                end = start + 1;
                break;
            }
            if c == ',' {
                continue;
            }
            let mut key = String::from(c);
            for (_, c) in chars.by_ref() {
                if c == '=' {
                    break;
                }
                key.push(c);
            }
            assert_eq!(chars.next().map(|(_, c)| c), Some('"'), "in {line:?}");
            let mut value = String::new();
            loop {
                let (_, c) = chars.next().unwrap_or_else(|| panic!("unclosed {line:?}"));
                match c {
                    '"' => break,
                    '\\' => match chars.next().map(|(_, c)| c) {
                        Some('n') => value.push('\n'),
                        Some(other) => value.push(other),
                        None => panic!("dangling escape in {line:?}"),
                    },
                    c => value.push(c),
                }
            }
            assert!(labels.insert(key, value).is_none(), "duplicate label");
        }
        rest = &after[end..];
    }
    let value = rest
        .trim()
        .split(' ')
        .next()
        .unwrap_or_else(|| panic!("no value in {line:?}"));
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v
            .parse()
            .unwrap_or_else(|_| panic!("bad value {v:?} in {line:?}")),
    };
    Sample {
        name,
        labels,
        value,
    }
}

/// The value of the sample `name{labels}`, if there is exactly one.
pub fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let want: BTreeMap<String, String> = labels
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    let found: Vec<_> = samples
        .iter()
        .filter(|s| s.name == name && s.labels == want)
        .collect();
    assert!(found.len() <= 1, "{name} {labels:?} appears twice");
    found.first().map(|s| s.value)
}

#[test]
fn parser_reads_labels_escapes_and_infinities() {
    let text = "# TYPE x counter\nx_total{a=\"1\",b=\"q\\\"u\\\\o\\nte\"} 3\ny 1.5\nh_bucket{le=\"+Inf\"} 2\n# EOF\n";
    let samples = parse_exposition(text);
    assert_eq!(samples.len(), 3);
    assert_eq!(
        value(&samples, "x_total", &[("a", "1"), ("b", "q\"u\\o\nte")]),
        Some(3.0)
    );
    assert_eq!(value(&samples, "y", &[]), Some(1.5));
    assert_eq!(value(&samples, "h_bucket", &[("le", "+Inf")]), Some(2.0));
}

/// `tollgate_requests_total{route,method,status}` in an exposition text.
#[must_use]
pub fn requests_total(text: &str, route: &str, method: &str, status: &str) -> Option<f64> {
    value(
        &parse_exposition(text),
        "tollgate_requests_total",
        &[("route", route), ("method", method), ("status", status)],
    )
}
