//! Configured header names and literal values kept for the life of the
//! process, so that a rule's per-request copy of one is a plain copy.
//!
//! A `HeaderName` or `HeaderValue` built from a `String` holds its bytes
//! behind a reference count: every request that inserts it pays an atomic
//! increment through the `Bytes` vtable, and another to drop it with the
//! request (about 30 instructions a name or value, and the atomics cost
//! more than their count). One built from a `&'static str` is copied.
//! `http` makes a static name only from a `&'static str`, so the text is
//! leaked here, once per distinct text (a reload of the same config
//! finds it again) and at most [`LIMIT`] bytes per process; past that,
//! names and values stay reference counted, which is only slower.

use std::{
    collections::BTreeSet,
    sync::{Mutex, PoisonError},
};

use bytes::Bytes;
use http::{HeaderName, HeaderValue};

/// The most bytes of text leaked per process.
const LIMIT: usize = 64 * 1024;

/// The texts leaked so far.
#[derive(Debug)]
struct Pool {
    used: usize,
    limit: usize,
    texts: BTreeSet<&'static str>,
}

static POOL: Mutex<Pool> = Mutex::new(Pool::new(LIMIT));

/// `name`, its text made static when the pool has room.
pub(crate) fn header_name(name: HeaderName) -> HeaderName {
    match intern(name.as_str()) {
        // Cannot panic: the text is that of a valid name, and
        // `HeaderName::as_str` gives it in lowercase, as `from_static`
        // requires.
        Some(text) => HeaderName::from_static(text),
        None => name,
    }
}

/// `value`, its bytes made static when it is visible ASCII (all that
/// `to_str` accepts; other values stay as they are) and the pool has room.
pub(crate) fn header_value(value: HeaderValue) -> HeaderValue {
    let Some(text) = value.to_str().ok().and_then(intern) else {
        return value;
    };
    // `from_maybe_shared` keeps a `Bytes` as it is, without a copy.
    match HeaderValue::from_maybe_shared(Bytes::from_static(text.as_bytes())) {
        Ok(mut interned) => {
            interned.set_sensitive(value.is_sensitive());
            interned
        }
        Err(_) => value,
    }
}

fn intern(text: &str) -> Option<&'static str> {
    POOL.lock()
        .unwrap_or_else(PoisonError::into_inner)
        .intern(text)
}

// === impl Pool ===

impl Pool {
    const fn new(limit: usize) -> Self {
        Self {
            used: 0,
            limit,
            texts: BTreeSet::new(),
        }
    }

    fn intern(&mut self, text: &str) -> Option<&'static str> {
        if let Some(&known) = self.texts.get(text) {
            return Some(known);
        }
        let used = self.used.checked_add(text.len())?;
        if used > self.limit {
            return None;
        }
        let leaked: &'static str = Box::leak(text.into());
        self.used = used;
        self.texts.insert(leaked);
        Some(leaked)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_text_is_leaked_once_and_the_limit_holds() {
        let mut pool = Pool::new(8);
        let first = pool.intern("x-a").unwrap();
        assert!(std::ptr::eq(first, pool.intern("x-a").unwrap()));
        assert_eq!(pool.intern("x-bcd"), Some("x-bcd"));
        assert_eq!(pool.used, 8);
        assert_eq!(pool.intern("x"), None);
        assert!(pool.intern("x-a").is_some());
    }

    #[test]
    fn interned_names_and_values_equal_the_originals() {
        let name = HeaderName::from_bytes(b"X-Interned-Test").unwrap();
        assert_eq!(header_name(name.clone()), name);
        // Every character a name may hold: `from_static` accepts what
        // `from_bytes` gave, in lowercase.
        let odd = HeaderName::from_bytes(b"X-A!#$%&'*+.^_`|~0-9").unwrap();
        assert_eq!(header_name(odd.clone()), odd);
        let cookie = http::header::COOKIE;
        assert_eq!(header_name(cookie.clone()), cookie);
        let mut value = HeaderValue::from_static("a b\tc");
        value.set_sensitive(true);
        let interned = header_value(value.clone());
        assert_eq!(interned, value);
        assert!(interned.is_sensitive());
        // Not visible ASCII: kept as it is.
        let raw = HeaderValue::from_bytes(b"caf\xe9").unwrap();
        assert_eq!(header_value(raw.clone()), raw);
    }
}
