//! Mapping of upstream failures onto problems.

use std::{error::Error as StdError, io};

use tollgate_core::Problem;

pub use tollgate_core::UpstreamErrorKind;

/// The problem the client gets: 504 for a timeout, 502 otherwise.
pub(crate) fn problem(kind: UpstreamErrorKind, upstream: &str) -> Problem {
    match kind {
        UpstreamErrorKind::Connect => Problem::upstream_unavailable()
            .detail(format!("could not connect to upstream \"{upstream}\"")),
        UpstreamErrorKind::Timeout => Problem::gateway_timeout()
            .detail(format!("upstream \"{upstream}\" did not answer in time")),
        UpstreamErrorKind::Reset => Problem::bad_gateway().detail(format!(
            "upstream \"{upstream}\" closed the connection before answering"
        )),
        // A kind added later is treated as the most general failure.
        _ => Problem::bad_gateway()
            .detail(format!("upstream \"{upstream}\" sent an invalid response")),
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
