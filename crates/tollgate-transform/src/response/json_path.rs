//! JSON-pointer-like paths with wildcards: `/items/*/cost_price`,
//! `/data/**/secret`.
//!
//! A path is RFC 6901 syntax (`/`-separated reference tokens, `~0` for `~`
//! and `~1` for `/`) plus two wildcard tokens:
//!
//! - `*` matches any one member of an object or element of an array;
//! - `**` matches any number of levels, zero included.
//!
//! A token that is a decimal number also matches that index of an array.
//! A member literally named `*` or `**` cannot be addressed.

use std::fmt;

use tollgate_core::{ConfigError, ConfigErrorKind};

/// One token of a [`JsonPath`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Segment {
    /// A member name (unescaped), which also matches an array index when it
    /// is a decimal number.
    Key {
        name: Box<[u8]>,
        index: Option<usize>,
    },
    /// `*`: any one member or element.
    Any,
    /// `**`: any depth, zero included.
    Deep,
}

/// A parsed path. See the [module docs](self).
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct JsonPath {
    raw: Box<str>,
    segments: Box<[Segment]>,
}

// === impl JsonPath ===

impl JsonPath {
    /// Parses `raw`.
    ///
    /// # Errors
    ///
    /// When `raw` is empty (the root cannot be filtered), does not start
    /// with `/`, has a `~` not followed by `0` or `1`, or ends with `**`.
    pub(crate) fn parse(raw: &str) -> Result<Self, ConfigError> {
        let bad = |why: &str| {
            ConfigError::new(
                ConfigErrorKind::InvalidValue,
                format!("JSON path {raw:?}: {why}"),
            )
        };
        let Some(rest) = raw.strip_prefix('/') else {
            return Err(bad(if raw.is_empty() {
                "the root cannot be a path; paths start with '/'"
            } else {
                "paths start with '/'"
            }));
        };
        let mut segments: Vec<Segment> = Vec::new();
        for token in rest.split('/') {
            let segment = match token {
                "*" => Segment::Any,
                "**" => {
                    // `/**/**` is the same as `/**`.
                    if segments.last() == Some(&Segment::Deep) {
                        continue;
                    }
                    Segment::Deep
                }
                _ => {
                    let name = unescape(token).ok_or_else(|| {
                        bad("'~' must be followed by '0' or '1' (RFC 6901 escapes)")
                    })?;
                    let index = array_index(&name);
                    Segment::Key {
                        name: name.into_bytes().into_boxed_slice(),
                        index,
                    }
                }
            };
            segments.push(segment);
        }
        if segments.last() == Some(&Segment::Deep) {
            return Err(bad("a path cannot end with '**'"));
        }
        Ok(Self {
            raw: raw.into(),
            segments: segments.into_boxed_slice(),
        })
    }

    /// The tokens.
    pub(crate) fn segments(&self) -> &[Segment] {
        &self.segments
    }

    /// The last token, when it is a plain name.
    pub(crate) fn last_name(&self) -> Option<&[u8]> {
        match self.segments.last() {
            Some(Segment::Key { name, .. }) => Some(name),
            _ => None,
        }
    }
}

impl fmt::Debug for JsonPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.raw, f)
    }
}

/// RFC 6901: `~1` is `/`, `~0` is `~`, any other `~` is an error.
fn unescape(token: &str) -> Option<String> {
    if !token.contains('~') {
        return Some(token.to_owned());
    }
    let mut out = String::with_capacity(token.len());
    let mut chars = token.chars();
    while let Some(c) = chars.next() {
        if c == '~' {
            match chars.next() {
                Some('0') => out.push('~'),
                Some('1') => out.push('/'),
                _ => return None,
            }
        } else {
            out.push(c);
        }
    }
    Some(out)
}

/// An RFC 6901 array index: `0` or digits without a leading zero.
fn array_index(token: &str) -> Option<usize> {
    let bytes = token.as_bytes();
    let digits = !bytes.is_empty() && bytes.iter().all(u8::is_ascii_digit);
    if !digits || (bytes.len() > 1 && bytes[0] == b'0') {
        return None;
    }
    token.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str) -> Segment {
        Segment::Key {
            name: name.as_bytes().into(),
            index: array_index(name),
        }
    }

    #[test]
    fn parses_names_wildcards_and_escapes() {
        let path = JsonPath::parse("/items/*/cost_price").unwrap();
        assert_eq!(
            path.segments(),
            &[key("items"), Segment::Any, key("cost_price")]
        );
        let path = JsonPath::parse("/data/**/**/secret").unwrap();
        assert_eq!(
            path.segments(),
            &[key("data"), Segment::Deep, key("secret")]
        );
        let path = JsonPath::parse("/a~1b/m~0n/0/01").unwrap();
        assert_eq!(
            path.segments(),
            &[key("a/b"), key("m~n"), key("0"), key("01")]
        );
        assert!(matches!(
            path.segments()[2],
            Segment::Key { index: Some(0), .. }
        ));
        assert!(matches!(
            path.segments()[3],
            Segment::Key { index: None, .. }
        ));
        assert_eq!(JsonPath::parse("/").unwrap().segments(), &[key("")]);
        assert_eq!(format!("{path:?}"), "\"/a~1b/m~0n/0/01\"");
    }

    #[test]
    fn rejects_bad_paths() {
        for bad in ["", "internal_id", "/a~2", "/a~", "/data/**", "/**"] {
            let err = JsonPath::parse(bad).unwrap_err();
            assert_eq!(err.kind(), ConfigErrorKind::InvalidValue, "{bad}");
        }
    }
}
