//! Query strings, edited without decoding what the rules do not touch:
//! every parameter a rule leaves alone is copied byte for byte.

/// Whether the raw (percent-encoded) `raw` decodes to `name`, compared
/// without allocating.
pub(crate) fn name_eq(raw: &str, name: &str) -> bool {
    let mut want = name.bytes();
    let mut got = Decoded::new(raw.as_bytes());
    loop {
        match (got.next(), want.next()) {
            (None, None) => return true,
            (Some(a), Some(b)) if a == b => {}
            _ => return false,
        }
    }
}

/// The raw value of the first parameter named `name` (empty for a
/// parameter without `=`).
pub(crate) fn find<'q>(query: &'q str, name: &str) -> Option<&'q str> {
    query.split('&').find_map(|pair| {
        let (n, v) = pair.split_once('=').unwrap_or((pair, ""));
        name_eq(n, name).then_some(v)
    })
}

/// Appends the percent-decoded `raw` (`+` is a space) to `out`.
pub(crate) fn decode_into(raw: &str, out: &mut Vec<u8>) {
    out.extend(Decoded::new(raw.as_bytes()));
}

/// Appends `bytes` to `out`, percent-encoding all but the unreserved
/// characters of RFC 3986.
pub(crate) fn encode_into(bytes: &[u8], out: &mut String) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in bytes {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0xf)]));
        }
    }
}

/// Percent-decoding as an iterator; a malformed escape is kept as is.
struct Decoded<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Decoded<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Self { bytes, pos: 0 }
    }
}

impl Iterator for Decoded<'_> {
    type Item = u8;

    fn next(&mut self) -> Option<u8> {
        let b = *self.bytes.get(self.pos)?;
        self.pos += 1;
        match b {
            b'+' => Some(b' '),
            b'%' => {
                let hex = |i: usize| self.bytes.get(i).and_then(|c| char::from(*c).to_digit(16));
                match (hex(self.pos), hex(self.pos + 1)) {
                    (Some(hi), Some(lo)) => {
                        self.pos += 2;
                        u8::try_from(hi * 16 + lo).ok()
                    }
                    _ => Some(b'%'),
                }
            }
            b => Some(b),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_compare_decoded() {
        assert!(name_eq("api_key", "api_key"));
        assert!(name_eq("%61pi_key", "api_key"));
        assert!(name_eq("a+b", "a b"));
        assert!(!name_eq("api_keys", "api_key"));
        assert!(!name_eq("api", "api_key"));
        assert_eq!(find("a=1&b=2&b=3&c", "b"), Some("2"));
        assert_eq!(find("a=1&c", "c"), Some(""));
        assert_eq!(find("a=1", "z"), None);
    }

    #[test]
    fn decode_and_encode() {
        let mut out = Vec::new();
        decode_into("J%C3%B6rg+B%zz%4", &mut out);
        assert_eq!(out, "Jörg B%zz%4".as_bytes());
        let mut s = String::new();
        encode_into("a b&c=d/é".as_bytes(), &mut s);
        assert_eq!(s, "a%20b%26c%3Dd%2F%C3%A9");
    }
}
