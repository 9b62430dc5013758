//! Header lookups by a scan of a small map instead of a hash.
//!
//! `HeaderMap` hashes a name (FNV, one byte at a time, after the 8 bytes
//! of the name's enum discriminant) and probes before every lookup,
//! insert and removal: about 100 to 150 instructions, a dependent chain
//! of multiplies. Comparing two names is a few instructions when their
//! kinds (standard or custom) or lengths differ, so on a map of a few
//! names a scan answers "absent" for less, and rules skip the hashed
//! operation they would have run for nothing. A larger map, or a name
//! the scan finds, still goes through the map's own lookup.

use http::{HeaderMap, HeaderName, HeaderValue};

/// The most distinct names a map may hold to be scanned.
pub(crate) const SCAN_NAMES: usize = 8;

/// Whether a scan shows `name` absent from `headers`: `false` when the
/// name is there, or when the map holds more than [`SCAN_NAMES`] names
/// and was not scanned. Several values under one name count once.
#[inline]
pub(crate) fn surely_absent(headers: &HeaderMap, name: &HeaderName) -> bool {
    headers.keys_len() <= SCAN_NAMES && !headers.keys().any(|n| n == name)
}

/// The first value of `name`, as `HeaderMap::get` gives it, found by a
/// scan when the map is small.
#[inline]
pub(crate) fn first_value<'h>(
    headers: &'h HeaderMap,
    name: &HeaderName,
) -> Option<&'h HeaderValue> {
    if headers.keys_len() > SCAN_NAMES {
        return headers.get(name);
    }
    headers
        .iter()
        .find_map(|(n, value)| (n == name).then_some(value))
}

#[cfg(test)]
mod tests {
    use http::header::{ACCEPT, COOKIE};

    use super::*;

    fn map(names: usize) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for i in 0..names {
            let name = HeaderName::try_from(format!("x-h{i}")).unwrap();
            headers.append(name.clone(), HeaderValue::from_static("a"));
            headers.append(name, HeaderValue::from_static("b"));
        }
        headers
    }

    /// Below, at and above the cap, with repeated values: the scan agrees
    /// with the map, or leaves the answer to it.
    #[test]
    fn absent_only_when_the_map_agrees() {
        let custom = HeaderName::from_static("x-old");
        for names in [0, 1, SCAN_NAMES - 1, SCAN_NAMES, SCAN_NAMES + 1, 40] {
            let mut headers = map(names);
            for name in [&custom, &COOKIE, &ACCEPT] {
                assert_eq!(
                    surely_absent(&headers, name),
                    names <= SCAN_NAMES,
                    "{names}"
                );
                assert_eq!(first_value(&headers, name), None);
            }
            headers.append(custom.clone(), HeaderValue::from_static("1"));
            headers.append(custom.clone(), HeaderValue::from_static("2"));
            headers.append(COOKIE, HeaderValue::from_static("c"));
            for name in [&custom, &COOKIE] {
                assert!(!surely_absent(&headers, name), "{names}");
                assert_eq!(first_value(&headers, name), headers.get(name));
            }
            // A name that differs only in length, or only in kind.
            assert_eq!(
                surely_absent(&headers, &HeaderName::from_static("x-ol")),
                headers.keys_len() <= SCAN_NAMES
            );
            assert_eq!(
                surely_absent(&headers, &ACCEPT),
                headers.keys_len() <= SCAN_NAMES
            );
        }
    }
}
