//! Content codings of a response body a rule rewrites: gzip, br and zstd
//! are decoded into a buffer that stops at the body limit (a zip bomb
//! cannot grow it), and the rewritten body is encoded again the same way.

use std::io::{self, Write};

use http::HeaderValue;
#[cfg(test)]
use http::{HeaderMap, header::ACCEPT_ENCODING};

/// A `Content-Encoding` this crate can decode and encode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Encoding {
    Identity,
    Gzip,
    Brotli,
    Zstd,
}

/// Largest zstd window accepted (8 MiB, what RFC 8878 asks web decoders to
/// support): a frame header cannot make the decoder allocate more.
const ZSTD_WINDOW_LOG_MAX: u32 = 23;
/// gzip level of a re-encoded body (flate2's default).
const GZIP_LEVEL: u32 = 6;
/// brotli quality and window of a re-encoded body: quality 5 costs a
/// fraction of the default 11 for a few percent more bytes.
const BROTLI_QUALITY: u32 = 5;
const BROTLI_LGWIN: u32 = 22;
/// zstd level of a re-encoded body (the library's default).
const ZSTD_LEVEL: i32 = 3;

// === impl Encoding ===

impl Encoding {
    /// The coding of a `Content-Encoding` value; `None` for one this crate
    /// does not know, or for a list of several codings.
    pub(crate) fn from_header(value: Option<&HeaderValue>) -> Option<Self> {
        let Some(value) = value else {
            return Some(Self::Identity);
        };
        let value = value.to_str().ok()?.trim();
        if value.eq_ignore_ascii_case("gzip") || value.eq_ignore_ascii_case("x-gzip") {
            Some(Self::Gzip)
        } else if value.eq_ignore_ascii_case("br") {
            Some(Self::Brotli)
        } else if value.eq_ignore_ascii_case("zstd") {
            Some(Self::Zstd)
        } else if value.is_empty() || value.eq_ignore_ascii_case("identity") {
            Some(Self::Identity)
        } else {
            None
        }
    }

    /// Encodes `data`.
    pub(crate) fn encode(self, data: &[u8]) -> io::Result<Vec<u8>> {
        match self {
            Self::Identity => Ok(data.to_vec()),
            Self::Gzip => {
                let out = Vec::with_capacity(data.len() / 4 + 64);
                let mut encoder =
                    flate2::write::GzEncoder::new(out, flate2::Compression::new(GZIP_LEVEL));
                encoder.write_all(data)?;
                encoder.finish()
            }
            Self::Brotli => {
                let out = Vec::with_capacity(data.len() / 4 + 64);
                let mut encoder =
                    brotli::CompressorWriter::new(out, 4096, BROTLI_QUALITY, BROTLI_LGWIN);
                encoder.write_all(data)?;
                encoder.flush()?;
                Ok(encoder.into_inner())
            }
            Self::Zstd => zstd::bulk::compress(data, ZSTD_LEVEL),
        }
    }
}

/// The codings a client accepts, from its `Accept-Encoding`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Accepted {
    gzip: bool,
    br: bool,
    zstd: bool,
}

// === impl Accepted ===

impl Accepted {
    /// Reads `Accept-Encoding` (RFC 9110 §12.5.3): a coding listed with a
    /// non-zero weight, or covered by `*` and not listed with weight 0.
    #[cfg(test)]
    pub(crate) fn from_headers(headers: &HeaderMap) -> Self {
        Self::from_values(headers.get_all(ACCEPT_ENCODING))
    }

    /// From the `Accept-Encoding` field values.
    pub(crate) fn from_values<'a>(values: impl IntoIterator<Item = &'a HeaderValue>) -> Self {
        // (listed, accepted) per coding, and `*`.
        let mut seen = [(false, false); 3];
        let mut star = false;
        for value in values {
            let Ok(value) = value.to_str() else { continue };
            for item in value.split(',') {
                let mut parts = item.split(';');
                let coding = parts.next().unwrap_or_default().trim();
                let weight_ok = parts
                    .filter_map(|p| {
                        let (k, v) = p.split_once('=')?;
                        k.trim().eq_ignore_ascii_case("q").then(|| v.trim())
                    })
                    .next_back()
                    .is_none_or(|q| q.parse::<f32>().is_ok_and(|q| q > 0.0));
                let slot = if coding.eq_ignore_ascii_case("gzip")
                    || coding.eq_ignore_ascii_case("x-gzip")
                {
                    0
                } else if coding.eq_ignore_ascii_case("br") {
                    1
                } else if coding.eq_ignore_ascii_case("zstd") {
                    2
                } else {
                    if coding == "*" {
                        star = weight_ok;
                    }
                    continue;
                };
                seen[slot] = (true, weight_ok);
            }
        }
        let ok = |(listed, accepted): (bool, bool)| if listed { accepted } else { star };
        Self {
            gzip: ok(seen[0]),
            br: ok(seen[1]),
            zstd: ok(seen[2]),
        }
    }

    /// Whether the client takes `encoding`; identity always.
    pub(crate) fn accepts(self, encoding: Encoding) -> bool {
        match encoding {
            Encoding::Identity => true,
            Encoding::Gzip => self.gzip,
            Encoding::Brotli => self.br,
            Encoding::Zstd => self.zstd,
        }
    }
}

/// Why decoding stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum DecodeError {
    /// The decoded body grew past the limit.
    TooLarge,
    /// The stream is not valid in its coding.
    Corrupt,
}

/// A buffer that refuses to grow past `limit`.
#[derive(Debug)]
pub(crate) struct Bounded {
    buf: Vec<u8>,
    limit: usize,
    over: bool,
}

impl Write for Bounded {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.buf.len().saturating_add(data.len()) > self.limit {
            self.over = true;
            return Err(io::Error::other("decoded body over the limit"));
        }
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Decodes a body chunk by chunk into a [`Bounded`] buffer.
pub(crate) enum Decoder {
    Gzip(flate2::write::MultiGzDecoder<Bounded>),
    Brotli(Box<brotli::DecompressorWriter<Bounded>>),
    Zstd(zstd::stream::write::Decoder<'static, Bounded>),
}

impl std::fmt::Debug for Decoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = match self {
            Self::Gzip(_) => "gzip",
            Self::Brotli(_) => "br",
            Self::Zstd(_) => "zstd",
        };
        f.debug_tuple("Decoder").field(&name).finish()
    }
}

// === impl Decoder ===

impl Decoder {
    /// A decoder for `encoding` whose output stops at `limit` bytes; `None`
    /// for identity.
    pub(crate) fn new(encoding: Encoding, limit: usize) -> Result<Option<Self>, DecodeError> {
        let sink = Bounded {
            buf: Vec::new(),
            limit,
            over: false,
        };
        Ok(Some(match encoding {
            Encoding::Identity => return Ok(None),
            Encoding::Gzip => Self::Gzip(flate2::write::MultiGzDecoder::new(sink)),
            Encoding::Brotli => Self::Brotli(Box::new(brotli::DecompressorWriter::new(sink, 4096))),
            Encoding::Zstd => {
                let mut decoder =
                    zstd::stream::write::Decoder::new(sink).map_err(|_| DecodeError::Corrupt)?;
                decoder
                    .window_log_max(ZSTD_WINDOW_LOG_MAX)
                    .map_err(|_| DecodeError::Corrupt)?;
                Self::Zstd(decoder)
            }
        }))
    }

    fn sink(&self) -> &Bounded {
        match self {
            Self::Gzip(d) => d.get_ref(),
            Self::Brotli(d) => d.get_ref(),
            Self::Zstd(d) => d.get_ref(),
        }
    }

    fn error(&self) -> DecodeError {
        if self.sink().over {
            DecodeError::TooLarge
        } else {
            DecodeError::Corrupt
        }
    }

    /// Decodes one chunk.
    pub(crate) fn write(&mut self, chunk: &[u8]) -> Result<(), DecodeError> {
        let result = match self {
            Self::Gzip(d) => d.write_all(chunk),
            Self::Brotli(d) => d.write_all(chunk),
            Self::Zstd(d) => d.write_all(chunk),
        };
        result.map_err(|_| self.error())
    }

    /// Ends the stream and returns the decoded bytes.
    pub(crate) fn finish(mut self) -> Result<Vec<u8>, DecodeError> {
        let result = match &mut self {
            Self::Gzip(d) => d.try_finish(),
            Self::Brotli(d) => d.close(),
            Self::Zstd(d) => d.flush(),
        };
        if result.is_err() {
            return Err(self.error());
        }
        let sink = match self {
            Self::Gzip(d) => d.finish().map_err(|_| DecodeError::Corrupt)?,
            Self::Brotli(d) => d.into_inner().map_err(|_| DecodeError::Corrupt)?,
            Self::Zstd(d) => d.into_inner(),
        };
        Ok(sink.buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(encoding: Encoding) {
        let data = br#"{"id":1,"name":"a"}"#.repeat(100);
        let encoded = encoding.encode(&data).unwrap();
        let mut decoder = Decoder::new(encoding, 1 << 20).unwrap().unwrap();
        for chunk in encoded.chunks(7) {
            decoder.write(chunk).unwrap();
        }
        assert_eq!(decoder.finish().unwrap(), data);
        // The same body against a limit smaller than its decoded size.
        let mut decoder = Decoder::new(encoding, 100).unwrap().unwrap();
        let err = decoder
            .write(&encoded)
            .err()
            .or_else(|| decoder.finish().err());
        assert_eq!(err, Some(DecodeError::TooLarge), "{encoding:?}");
    }

    #[test]
    fn codings_round_trip_and_stop_at_the_limit() {
        round_trip(Encoding::Gzip);
        round_trip(Encoding::Brotli);
        round_trip(Encoding::Zstd);
    }

    #[test]
    fn garbage_is_corrupt() {
        for encoding in [Encoding::Gzip, Encoding::Brotli, Encoding::Zstd] {
            let mut decoder = Decoder::new(encoding, 1 << 20).unwrap().unwrap();
            let err = decoder
                .write(b"definitely not compressed data")
                .err()
                .or_else(|| decoder.finish().err());
            assert_eq!(err, Some(DecodeError::Corrupt), "{encoding:?}");
        }
    }

    #[test]
    fn accept_encoding_weights() {
        let parse = |v: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(ACCEPT_ENCODING, HeaderValue::from_str(v).unwrap());
            Accepted::from_headers(&headers)
        };
        let a = parse("gzip, br;q=0.5");
        assert!(a.accepts(Encoding::Gzip) && a.accepts(Encoding::Brotli));
        assert!(!a.accepts(Encoding::Zstd));
        let a = parse("*;q=1, gzip;q=0");
        assert!(!a.accepts(Encoding::Gzip) && a.accepts(Encoding::Zstd));
        assert_eq!(
            Accepted::from_headers(&HeaderMap::new()),
            Accepted::default()
        );
        assert!(Accepted::default().accepts(Encoding::Identity));
    }

    #[test]
    fn content_encoding_names() {
        let enc = |v: &'static str| Encoding::from_header(Some(&HeaderValue::from_static(v)));
        assert_eq!(enc("GZIP"), Some(Encoding::Gzip));
        assert_eq!(enc("br"), Some(Encoding::Brotli));
        assert_eq!(enc("zstd"), Some(Encoding::Zstd));
        assert_eq!(enc("identity"), Some(Encoding::Identity));
        assert_eq!(enc("compress"), None);
        assert_eq!(enc("gzip, br"), None);
        assert_eq!(Encoding::from_header(None), Some(Encoding::Identity));
    }
}
