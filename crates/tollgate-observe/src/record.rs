//! What one request leaves in the access log and the metrics.

use std::{
    fmt::Write as _,
    net::{IpAddr, Ipv4Addr},
    sync::Arc,
};

use http::{HeaderValue, Method, Request, Response, header, uri::PathAndQuery};
use tokio::time::Instant;
use tollgate_core::{
    ClientIp, ConnectionInfo, Identity, Observed, Problem, RequestId, RouteName, TraceContext,
    UpstreamErrorKind,
};

use crate::{
    json_lines::{line_key, write_info_line},
    layer::Config,
    metrics::{Finished, method_label},
};

/// The tracing target of the access log.
pub const ACCESS_TARGET: &str = "tollgate::access";

/// The status logged and counted for a request whose client went away
/// before the response headers (nginx's convention).
pub(crate) const CLIENT_CLOSED: u16 = 499;

/// The status logged and counted when the inner service failed with an
/// error instead of a response.
pub(crate) const SERVICE_ERROR: u16 = 500;

/// The access line, from one list of fields: written straight to the
/// writer when there is one, else emitted as a `tracing` event of
/// [`ACCESS_TARGET`] (which [`JsonLines`](crate::JsonLines) writes as the
/// same line).
macro_rules! access_line {
    ($writer:expr; $($name:ident = $value:expr),+ $(,)?) => {
        match $writer {
            Some(writer) => write_info_line(writer, ACCESS_TARGET, |line| {
                $( line.field(line_key!($name), $value); )+
            }),
            None => tracing::info!(target: ACCESS_TARGET, $($name = $value),+),
        }
    };
}

/// One request, from its arrival to the end of its response body. Dropping
/// it writes the access-log event and records the metrics, exactly once.
pub(crate) struct Record {
    start: Instant,
    /// The layer's: metrics, where the access line goes (`None`: a
    /// `tracing` event), whether the query is logged.
    config: Arc<Config>,
    method: Method,
    path: Option<PathAndQuery>,
    request_id: Option<RequestId>,
    trace: Option<TraceContext>,
    observed: Observed,
    route: Option<RouteName>,
    client_ip: Option<IpAddr>,
    subject: Option<Arc<str>>,
    consumer: Option<Arc<str>>,
    user_agent: Option<HeaderValue>,
    bytes_in: Option<u64>,
    status: Option<u16>,
    problem_type: Option<&'static str>,
    /// The auth failure reason or the rate-limited plan, for metrics.
    problem_label: Option<Arc<str>>,
    bytes_out: u64,
    body_error: bool,
    /// The request's OpenTelemetry server span, ended with the record.
    #[cfg(feature = "otel")]
    pub(crate) server_span: Option<crate::otel::ServerSpan>,
}

// === impl Record ===

impl Record {
    pub(crate) fn start<B>(
        req: &Request<B>,
        bytes_in: Option<u64>,
        config: &Arc<Config>,
        observed: Observed,
    ) -> Self {
        let ext = req.extensions();
        let client_ip = ext
            .get::<ClientIp>()
            .map(|ip| ip.0)
            .or_else(|| ext.get::<ConnectionInfo>().map(|c| c.remote.ip()));
        let identity = ext.get::<Identity>();
        if let Some(metrics) = &config.metrics {
            metrics.request_started();
        }
        Self {
            start: Instant::now(),
            config: Arc::clone(config),
            method: req.method().clone(),
            path: req.uri().path_and_query().cloned(),
            request_id: ext.get::<RequestId>().cloned(),
            trace: ext.get::<TraceContext>().copied(),
            observed,
            route: ext.get::<RouteName>().cloned(),
            client_ip,
            subject: identity.and_then(|i| i.subject.clone()),
            consumer: identity.and_then(|i| i.consumer.clone()),
            user_agent: req.headers().get(header::USER_AGENT).cloned(),
            bytes_in,
            status: None,
            problem_type: None,
            problem_label: None,
            bytes_out: 0,
            body_error: false,
            #[cfg(feature = "otel")]
            server_span: None,
        }
    }

    /// The server span, to enter while the inner service runs.
    #[cfg(feature = "otel")]
    pub(crate) fn server_span(&self) -> Option<&tracing::Span> {
        self.server_span.as_ref().map(crate::otel::ServerSpan::span)
    }

    /// Takes what the response headers tell: status, problem, and the route
    /// and identity when a layer inside copied them onto the response.
    pub(crate) fn response<B>(&mut self, res: &Response<B>) {
        let ext = res.extensions();
        self.status = Some(res.status().as_u16());
        let problem = ext.get::<Problem>();
        self.problem_type = problem.map(Problem::type_uri);
        self.problem_label = problem
            .and_then(crate::metrics::problem_label)
            .map(Arc::from);
        if let Some(route) = ext.get::<RouteName>() {
            self.route = Some(route.clone());
        }
        if let Some(identity) = ext.get::<Identity>() {
            self.subject.clone_from(&identity.subject);
            self.consumer.clone_from(&identity.consumer);
        }
    }

    pub(crate) fn failed(&mut self) {
        self.status = Some(SERVICE_ERROR);
    }

    pub(crate) fn body_failed(&mut self) {
        self.body_error = true;
    }

    pub(crate) fn sent(&mut self, bytes: usize) {
        self.bytes_out = self.bytes_out.saturating_add(bytes as u64);
    }
}

impl Drop for Record {
    fn drop(&mut self) {
        let elapsed = self.start.elapsed();
        let status = self.status.unwrap_or(CLIENT_CLOSED);
        // What the layers inside filled in: the route table's route name,
        // an auth layer's identity, the proxy's upstream call.
        if let Some(route) = self.observed.route() {
            self.route = Some(route.clone());
        }
        if let Some(identity) = self.observed.identity() {
            self.subject.clone_from(&identity.subject);
            self.consumer.clone_from(&identity.consumer);
        }
        let upstream = self.observed.upstream();
        if let (Some(metrics), Some(call)) = (&self.config.metrics, upstream) {
            metrics.record_upstream(Arc::clone(&call.upstream), call.latency);
            if let Some(kind) = call.error {
                metrics.record_upstream_error(Arc::clone(&call.upstream), kind);
            }
            if call.retries > 0 {
                metrics.record_upstream_retries(Arc::clone(&call.upstream), call.retries);
            }
        }
        if let Some(metrics) = &self.config.metrics {
            metrics.request_finished(&Finished {
                route: self.route.as_ref(),
                method: &self.method,
                status,
                elapsed,
                problem_type: self.problem_type,
                problem_label: self.problem_label.as_deref(),
            });
        }
        let path = match &self.path {
            Some(pq) if self.config.log_query => pq.as_str(),
            Some(pq) => pq.path(),
            // An authority-form target (`CONNECT host:port`) has no path.
            None => "",
        };
        let method = match method_label(&self.method) {
            "other" => self.method.as_str(),
            standard => standard,
        };
        #[cfg(feature = "otel")]
        if let Some(span) = self.server_span.take() {
            span.finish(&self.method, self.route.as_ref(), status);
        }
        let client_ip = self.client_ip.map(IpText::new);
        let trace_hex = self.trace.map(|t| t.trace_id_hex_bytes());
        let trace_id = trace_hex.as_ref().and_then(|h| std::str::from_utf8(h).ok());
        access_line!(
            self.config.access_log.as_ref();
            // A `&str` field rather than a format string: the same
            // `"message":"request"`, recorded as a string instead of
            // through `fmt::Arguments` (a fifth of the line's cost).
            message = "request",
            request_id = self.request_id.as_ref().and_then(RequestId::as_str),
            trace_id = trace_id,
            method = method,
            path = path,
            route = self.route.as_ref().map_or(crate::metrics::UNMATCHED, RouteName::as_str),
            status = status,
            latency_ms = elapsed.as_secs_f64() * 1000.0,
            upstream = upstream.map(|c| &*c.upstream),
            endpoint = upstream.map(|c| &*c.endpoint),
            upstream_latency_ms = upstream.map(|c| c.latency.as_secs_f64() * 1000.0),
            upstream_error = upstream.and_then(|c| c.error).map(UpstreamErrorKind::as_str),
            upstream_retries = upstream.map(|c| u64::from(c.retries)).filter(|&n| n > 0),
            client_ip = client_ip.as_ref().map(IpText::as_str),
            subject = self.subject.as_deref(),
            consumer = self.consumer.as_deref(),
            user_agent = self.user_agent.as_ref().and_then(|v| v.to_str().ok()),
            problem_type = self.problem_type,
            bytes_in = self.bytes_in,
            bytes_out = self.bytes_out,
            body_error = self.body_error.then_some(true),
        );
    }
}

/// An IP address as text, formatted into a fixed buffer: IPv4, the common
/// case, without `fmt`.
struct IpText {
    buf: [u8; 45],
    len: usize,
}

impl IpText {
    fn new(ip: IpAddr) -> Self {
        let mut text = Self {
            buf: [0; 45],
            len: 0,
        };
        match ip {
            IpAddr::V4(v4) => text.push_v4(v4),
            // The longest IPv6 text is 45 bytes (`ffff:…:255.255.255.255`).
            IpAddr::V6(v6) => {
                let _ = write!(text, "{v6}");
            }
        }
        text
    }

    fn push_v4(&mut self, ip: Ipv4Addr) {
        for (i, octet) in ip.octets().into_iter().enumerate() {
            if i > 0 {
                self.push(b".");
            }
            self.push(itoa::Buffer::new().format(octet).as_bytes());
        }
    }

    fn push(&mut self, bytes: &[u8]) {
        if let Some(dst) = self.buf.get_mut(self.len..self.len + bytes.len()) {
            dst.copy_from_slice(bytes);
            self.len += bytes.len();
        }
    }

    fn as_str(&self) -> &str {
        std::str::from_utf8(&self.buf[..self.len]).unwrap_or_default()
    }
}

impl std::fmt::Write for IpText {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.push(s.as_bytes());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::{net::SocketAddr, sync::Mutex, time::Duration};

    use http::{Request, Response, StatusCode};
    use tollgate_core::{ConnectionInfo, Problem, UpstreamCall};
    use tracing_subscriber::prelude::*;

    use super::*;
    use crate::{AccessLogConfig, AccessLogWriter, JsonLines};

    /// A request that fills every field of the line, with values to
    /// escape, and a record of it that saw an upstream call and a problem.
    fn full_record(config: &Arc<Config>) -> Record {
        let mut req = Request::post("/users/7?token=x")
            .header(header::USER_AGENT, "agent \"quoted\"\tand \\ slashed")
            .body(())
            .unwrap();
        let ext = req.extensions_mut();
        ext.insert(RequestId::from_static("req-\"1\""));
        ext.insert(TraceContext {
            trace_id: [0x4b; 16],
            span_id: [1; 8],
            flags: 1,
        });
        ext.insert(ConnectionInfo::new(SocketAddr::from(([192, 0, 2, 1], 9))));
        ext.insert(RouteName::new("users"));
        let mut identity = Identity::subject("ann");
        identity.consumer = Some(Arc::from("mobile-app"));
        ext.insert(identity);
        let observed = Observed::new();
        observed.set_upstream(UpstreamCall::new(
            Arc::from("users"),
            Arc::from("http://127.0.0.1:1"),
            Duration::from_micros(1_234),
            Some(UpstreamErrorKind::Timeout),
        ));
        let mut record = Record::start(&req, Some(5), config, observed);
        let res = Problem::gateway_timeout().into_response::<http_body_util::Full<bytes::Bytes>>();
        assert_eq!(res.status(), StatusCode::GATEWAY_TIMEOUT);
        record.response(&Response::from_parts(res.into_parts().0, ()));
        record.sent(17);
        record.body_failed();
        record
    }

    /// `line` with the values that differ between two records (the time
    /// and the latency) blanked.
    fn steady(line: &str) -> String {
        let mut out = line.to_owned();
        for key in ["\"ts\":\"", "\"latency_ms\":"] {
            let at = out.find(key).unwrap() + key.len();
            let end = at + out[at..].find([',', '"']).unwrap();
            out.replace_range(at..end, "_");
        }
        out
    }

    #[test]
    fn the_direct_line_is_the_events_line() {
        #[derive(Clone, Default)]
        struct Buf(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Buf {
            fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(data);
                Ok(data.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }

        // The event path, written by `JsonLines`.
        let events = Buf::default();
        let out = events.clone();
        let subscriber = tracing_subscriber::registry().with(JsonLines::new(move || out.clone()));
        let config = Arc::new(Config::default());
        tracing::subscriber::with_default(subscriber, || drop(full_record(&config)));
        let event_line = String::from_utf8(events.0.lock().unwrap().clone()).unwrap();

        // The direct path, to a file (flushed line by line outside a
        // runtime), with the same subscriber seeing no event.
        let path = std::env::temp_dir().join(format!(
            "tollgate-observe-{}-direct.log",
            std::process::id()
        ));
        let _ = std::fs::remove_file(&path);
        let writer = AccessLogWriter::open(&AccessLogConfig::File(path.clone())).unwrap();
        let config = Arc::new(Config {
            access_log: Some(writer),
            ..Config::default()
        });
        let seen = Buf::default();
        let out = seen.clone();
        let subscriber = tracing_subscriber::registry().with(JsonLines::new(move || out.clone()));
        tracing::subscriber::with_default(subscriber, || drop(full_record(&config)));
        assert!(seen.0.lock().unwrap().is_empty(), "no event as well");
        let direct_line = std::fs::read_to_string(&path).unwrap();
        std::fs::remove_file(&path).unwrap();

        assert_eq!(event_line.lines().count(), 1, "{event_line}");
        assert_eq!(steady(&direct_line), steady(&event_line));
        // Every field is there, escaped.
        let line: serde_json::Value = serde_json::from_str(&direct_line).unwrap();
        assert_eq!(line["user_agent"], "agent \"quoted\"\tand \\ slashed");
        assert_eq!(line["request_id"], "req-\"1\"");
        assert_eq!(line["upstream_error"], "timeout");
        assert_eq!(line["upstream_latency_ms"], 1.234);
        assert_eq!(line["body_error"], true);
        assert_eq!(line["consumer"], "mobile-app");
        for key in [
            "trace_id",
            "method",
            "path",
            "route",
            "status",
            "client_ip",
            "subject",
            "endpoint",
            "upstream",
            "problem_type",
            "bytes_in",
            "bytes_out",
        ] {
            assert!(line.get(key).is_some(), "{key}: {direct_line}");
        }
    }

    #[test]
    fn ip_text_matches_display() {
        for ip in [
            "0.0.0.0",
            "203.0.113.7",
            "255.255.255.255",
            "::1",
            "2001:db8::8a2e:370:7334",
            "::ffff:255.255.255.255",
            "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(IpText::new(ip).as_str(), ip.to_string());
        }
    }
}
