//! The HTTP/2 settings of a listener ([`Serve::http2`](crate::Serve::http2),
//! `[server.http2]` in the config file).
//!
//! Every limit is set explicitly, not left to hyper's and h2's defaults, so
//! that an upgrade cannot change one unseen. The defaults are hyper 1.12's
//! (or h2 0.4's) at the time of writing. The hostile-client tests
//! (`tests/tests/h2_hostile.rs`) check the advertised values and what each
//! one stops. The HPACK table the client may fill stays at h2's 4 KiB (the
//! RFC 7541 default): hyper-util's auto builder has no setter for it.

use std::time::Duration;

use hyper_util::{rt::TokioTimer, server::conn::auto};

/// The HTTP/2 settings a listener advertises and enforces.
///
/// The tunable ones; the limits against known attacks (rapid reset,
/// CONTINUATION floods, reset floods) and the frame size are fixed.
/// [`Serve::http2`](crate::Serve::http2) takes each value into its valid
/// range (given for each field), so no setting can make hyper or h2 panic.
///
/// ```
/// let mut http2 = tollgate::Http2Settings::default();
/// http2.max_concurrent_streams = 100;
/// http2.max_send_buffer_size = 64 * 1024;
/// # let _ = http2;
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(default, deny_unknown_fields))]
#[non_exhaustive]
pub struct Http2Settings {
    /// Streams a client may have open at once on one connection
    /// (`SETTINGS_MAX_CONCURRENT_STREAMS`); streams past it are refused
    /// with `REFUSED_STREAM`. Default 200 (RFC 9113 asks for no less than
    /// 100; hyper says its 200 may change and asks servers to set their
    /// own). At least 1.
    #[cfg_attr(feature = "serde", serde(deserialize_with = "de::streams"))]
    pub max_concurrent_streams: u32,
    /// Decoded size of a request's header list, names + values + 32 bytes
    /// a field (`SETTINGS_MAX_HEADER_LIST_SIZE`). Past it the stream gets a
    /// 431; past four times it, or when CONTINUATION frames run beyond
    /// what the size needs, the connection gets `GOAWAY` (the CONTINUATION
    /// flood, RUSTSEC-2024-0332). It also bounds the header block held per
    /// stream. Default 16 KiB; at least 1 KiB.
    #[cfg_attr(feature = "serde", serde(deserialize_with = "de::header_list"))]
    pub max_header_list_size: u32,
    /// How much request body a client may send on one stream before the
    /// service reads it (`SETTINGS_INITIAL_WINDOW_SIZE`). Default 1 MiB;
    /// from 65,535 (the RFC's initial window) to 2^31 - 1.
    #[cfg_attr(feature = "serde", serde(deserialize_with = "de::window"))]
    pub initial_stream_window_size: u32,
    /// The same for the whole connection, whatever the number of streams:
    /// what one connection can make the server hold of request bodies.
    /// Default 1 MiB; from 65,535 to 2^31 - 1.
    #[cfg_attr(feature = "serde", serde(deserialize_with = "de::window"))]
    pub initial_connection_window_size: u32,
    /// Response bytes buffered per stream ahead of the socket. A client
    /// that opens a large window and stops reading holds at most this per
    /// stream, times `max_concurrent_streams` per connection (80 MB with
    /// the defaults), until the keep-alive ping closes the connection; the
    /// body is not read further. Default 400 KiB; at least 16 KiB (one
    /// frame).
    #[cfg_attr(feature = "serde", serde(deserialize_with = "de::send_buffer"))]
    pub max_send_buffer_size: u32,
    /// How often an idle connection is pinged. Default 20 s; at least 1 s.
    #[cfg_attr(feature = "serde", serde(deserialize_with = "de::keep_alive"))]
    pub keep_alive_interval: Duration,
    /// How long a ping may go unanswered before the connection is closed.
    /// Default 20 s; at least 1 s.
    #[cfg_attr(feature = "serde", serde(deserialize_with = "de::keep_alive"))]
    pub keep_alive_timeout: Duration,
}

/// The smallest header list limit a listener takes.
const MIN_HEADER_LIST: u32 = 1024;
/// The RFC 9113 initial window; the smallest a listener takes.
const MIN_WINDOW: u32 = 65_535;
/// The largest window HTTP/2 allows (RFC 9113 §6.9.1); h2 panics past it.
const MAX_WINDOW: u32 = (1 << 31) - 1;
/// One frame: the smallest send buffer a listener takes.
const MIN_SEND_BUFFER: u32 = 16 * 1024;
/// The shortest keep-alive interval and timeout a listener takes.
const MIN_KEEP_ALIVE: Duration = Duration::from_secs(1);

/// Streams the client resets before the server has taken them up, beyond
/// which the connection gets `GOAWAY` (`ENHANCE_YOUR_CALM`): the rapid
/// reset attack, CVE-2023-44487. h2's default; hyper leaves it unset.
const MAX_PENDING_ACCEPT_RESET_STREAMS: usize = 20;

/// Streams the server itself resets for a client's protocol errors
/// (malformed requests, refused streams …) over a connection's life,
/// beyond which it sends `GOAWAY`: RUSTSEC-2024-0003, and the shape of
/// MadeYouReset (CVE-2025-8671). hyper advises against lifting it.
const MAX_LOCAL_ERROR_RESET_STREAMS: usize = 1024;

/// The largest frame payload accepted (`SETTINGS_MAX_FRAME_SIZE`): the
/// RFC 9113 minimum, so no frame needs more than 16 KiB to be read.
const MAX_FRAME_SIZE: u32 = 16 * 1024;

impl Default for Http2Settings {
    fn default() -> Self {
        Self {
            max_concurrent_streams: 200,
            max_header_list_size: 16 * 1024,
            initial_stream_window_size: 1024 * 1024,
            initial_connection_window_size: 1024 * 1024,
            max_send_buffer_size: 400 * 1024,
            keep_alive_interval: Duration::from_secs(20),
            keep_alive_timeout: Duration::from_secs(20),
        }
    }
}

impl Http2Settings {
    /// Each value taken into its valid range.
    fn bounded(self) -> Self {
        Self {
            max_concurrent_streams: self.max_concurrent_streams.max(1),
            max_header_list_size: self.max_header_list_size.max(MIN_HEADER_LIST),
            initial_stream_window_size: self
                .initial_stream_window_size
                .clamp(MIN_WINDOW, MAX_WINDOW),
            initial_connection_window_size: self
                .initial_connection_window_size
                .clamp(MIN_WINDOW, MAX_WINDOW),
            max_send_buffer_size: self.max_send_buffer_size.max(MIN_SEND_BUFFER),
            keep_alive_interval: self.keep_alive_interval.max(MIN_KEEP_ALIVE),
            keep_alive_timeout: self.keep_alive_timeout.max(MIN_KEEP_ALIVE),
        }
    }

    /// Sets these settings, and the fixed limits, on `builder`.
    pub(crate) fn apply<E>(self, builder: &mut auto::Builder<E>) {
        let s = self.bounded();
        builder
            .http2()
            .timer(TokioTimer::new())
            .keep_alive_interval(Some(s.keep_alive_interval))
            .keep_alive_timeout(s.keep_alive_timeout)
            .max_concurrent_streams(s.max_concurrent_streams)
            .max_pending_accept_reset_streams(MAX_PENDING_ACCEPT_RESET_STREAMS)
            .max_local_error_reset_streams(MAX_LOCAL_ERROR_RESET_STREAMS)
            .max_header_list_size(s.max_header_list_size)
            .max_frame_size(MAX_FRAME_SIZE)
            .initial_stream_window_size(s.initial_stream_window_size)
            .initial_connection_window_size(s.initial_connection_window_size)
            .max_send_buf_size(usize::try_from(s.max_send_buffer_size).unwrap_or(usize::MAX));
    }
}

/// The config file's range checks: a value out of range is an error at its
/// key, where [`Http2Settings::bounded`] would quietly move it.
#[cfg(feature = "serde")]
mod de {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, de::Error};

    use super::{MAX_WINDOW, MIN_HEADER_LIST, MIN_KEEP_ALIVE, MIN_SEND_BUFFER, MIN_WINDOW};

    fn within<'de, D: Deserializer<'de>>(d: D, min: u32, max: u32) -> Result<u32, D::Error> {
        let value = u64::deserialize(d)?;
        u32::try_from(value)
            .ok()
            .filter(|v| (min..=max).contains(v))
            .ok_or_else(|| D::Error::custom(format!("{value} is not within {min}..={max}")))
    }

    pub(super) fn streams<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
        within(d, 1, u32::MAX)
    }

    pub(super) fn header_list<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
        within(d, MIN_HEADER_LIST, u32::MAX)
    }

    pub(super) fn window<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
        within(d, MIN_WINDOW, MAX_WINDOW)
    }

    pub(super) fn send_buffer<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
        within(d, MIN_SEND_BUFFER, u32::MAX)
    }

    pub(super) fn keep_alive<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let value = tollgate_core::serde_util::duration::deserialize(d)?;
        if value < MIN_KEEP_ALIVE {
            return Err(D::Error::custom(format!(
                "{value:?} is shorter than {MIN_KEEP_ALIVE:?}"
            )));
        }
        Ok(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_of_range_values_are_taken_into_range() {
        let s = Http2Settings {
            max_concurrent_streams: 0,
            max_header_list_size: 1,
            initial_stream_window_size: u32::MAX,
            initial_connection_window_size: 0,
            max_send_buffer_size: 0,
            keep_alive_interval: Duration::ZERO,
            keep_alive_timeout: Duration::from_millis(1),
        };
        let b = s.bounded();
        assert_eq!(b.max_concurrent_streams, 1);
        assert_eq!(b.max_header_list_size, MIN_HEADER_LIST);
        assert_eq!(b.initial_stream_window_size, MAX_WINDOW);
        assert_eq!(b.initial_connection_window_size, MIN_WINDOW);
        assert_eq!(b.max_send_buffer_size, MIN_SEND_BUFFER);
        assert_eq!(b.keep_alive_interval, MIN_KEEP_ALIVE);
        assert_eq!(b.keep_alive_timeout, MIN_KEEP_ALIVE);
        // The defaults are in range as they are.
        assert_eq!(Http2Settings::default().bounded(), Http2Settings::default());
    }
}
