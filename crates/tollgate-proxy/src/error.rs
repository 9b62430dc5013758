//! Mapping of upstream failures onto problems.

use std::{error::Error as StdError, io};

use tollgate_core::Problem;

/// Why a request to an upstream failed.
///
/// It is put into the extensions of the problem response the proxy
/// returns, so metrics can count upstream errors by kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum UpstreamErrorKind {
    /// No connection could be made (refused, unreachable, TLS handshake).
    Connect,
    /// Connecting or waiting for the response headers took too long.
    Timeout,
    /// The connection was reset or closed before the response was complete.
    Reset,
    /// The upstream sent something that is not valid HTTP.
    Protocol,
}

impl UpstreamErrorKind {
    /// The kind as a metrics label: `connect`, `timeout`, `reset` or `protocol`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Connect => "connect",
            Self::Timeout => "timeout",
            Self::Reset => "reset",
            Self::Protocol => "protocol",
        }
    }

    /// The problem the client gets: 504 for a timeout, 502 otherwise.
    pub(crate) fn problem(self, upstream: &str) -> Problem {
        match self {
            Self::Connect => Problem::upstream_unavailable()
                .detail(format!("could not connect to upstream \"{upstream}\"")),
            Self::Timeout => Problem::gateway_timeout()
                .detail(format!("upstream \"{upstream}\" did not answer in time")),
            Self::Reset => Problem::bad_gateway().detail(format!(
                "upstream \"{upstream}\" closed the connection before answering"
            )),
            Self::Protocol => Problem::bad_gateway()
                .detail(format!("upstream \"{upstream}\" sent an invalid response")),
        }
    }
}

impl std::fmt::Display for UpstreamErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Classifies a hyper-util client error by walking its source chain.
pub(crate) fn classify(err: &hyper_util::client::legacy::Error) -> UpstreamErrorKind {
    match classify_source(err) {
        UpstreamErrorKind::Timeout => UpstreamErrorKind::Timeout,
        _ if err.is_connect() => UpstreamErrorKind::Connect,
        kind => kind,
    }
}

/// Classifies an exchange error (after the connection was made) by walking
/// its source chain for hyper and I/O errors.
pub(crate) fn classify_source(err: &(dyn StdError + 'static)) -> UpstreamErrorKind {
    let timed_out = chain(err).any(|e| {
        e.downcast_ref::<io::Error>()
            .is_some_and(|io| io.kind() == io::ErrorKind::TimedOut)
            || e.downcast_ref::<hyper::Error>()
                .is_some_and(hyper::Error::is_timeout)
    });
    if timed_out {
        return UpstreamErrorKind::Timeout;
    }
    for e in chain(err) {
        if let Some(h) = e.downcast_ref::<hyper::Error>() {
            if h.is_parse() || h.is_parse_status() || h.is_parse_too_large() {
                return UpstreamErrorKind::Protocol;
            }
            if h.is_incomplete_message() || h.is_closed() || h.is_canceled() {
                return UpstreamErrorKind::Reset;
            }
        }
        if let Some(io) = e.downcast_ref::<io::Error>()
            && matches!(
                io.kind(),
                io::ErrorKind::ConnectionReset
                    | io::ErrorKind::ConnectionAborted
                    | io::ErrorKind::BrokenPipe
                    | io::ErrorKind::UnexpectedEof
            )
        {
            return UpstreamErrorKind::Reset;
        }
    }
    UpstreamErrorKind::Protocol
}

fn chain<'a>(
    err: &'a (dyn StdError + 'static),
) -> impl Iterator<Item = &'a (dyn StdError + 'static)> {
    std::iter::successors(Some(err), |e: &&'a (dyn StdError + 'static)| (*e).source())
}
