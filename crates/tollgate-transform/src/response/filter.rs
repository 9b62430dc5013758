//! The JSON body filter: deny- and allow-lists, renames and added fields,
//! applied in one pass over the bytes.
//!
//! # Why a streaming pass and not `serde_json::Value`
//!
//! Parsing into a `Value`, editing it and serialising it again allocates a
//! map entry, a `String` per key and a value per node, and re-formats every
//! number and string. On the 100 KiB bench body that ran at about
//! 150–250 MB/s (see `benches/benches/transform_response.rs`, which keeps
//! that variant as a baseline), under the 300 MB/s target of issue #6.
//!
//! This filter instead walks the bytes once, validating them as JSON, and
//! keeps a small set of path automaton states per level (a state is a
//! pattern and how many of its tokens matched so far). A subtree no
//! pattern can reach is validated and copied as a byte range without being
//! decoded; only members on a live path have their key compared, and only
//! keys with escapes are decoded. Nothing is allocated per node: the states
//! live on one stack, and the output is one `Vec` of the input's size.
//!
//! The input is validated fully (RFC 8259 grammar, UTF-8, nesting at most
//! [`MAX_DEPTH`] levels); anything else is [`Malformed`]. Whitespace is
//! kept inside copied subtrees and dropped between the members the filter
//! writes itself.

use super::json_path::{JsonPath, Segment};

/// Deepest nesting accepted (serde_json's default recursion limit); a
/// deeper document counts as malformed.
pub(crate) const MAX_DEPTH: usize = 128;

/// The body is not JSON this filter accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Malformed;

/// What a pattern does to the nodes it matches.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Action {
    /// Remove the member or element.
    Deny,
    /// Keep it (and, when any allow pattern exists, nothing else).
    Allow,
    /// Write the member under another name: the JSON-encoded new key.
    Rename(Box<[u8]>),
    /// Set the member (the last token) of the matched parent object: the
    /// JSON-encoded key and value.
    Add(Box<[u8]>, Box<[u8]>),
}

#[derive(Clone, Debug)]
pub(crate) struct Pattern {
    pub(crate) path: JsonPath,
    pub(crate) action: Action,
}

/// The compiled filter of one rule set.
#[derive(Clone, Debug, Default)]
pub(crate) struct JsonFilter {
    patterns: Box<[Pattern]>,
    has_allow: bool,
}

/// A pattern and how many of its tokens matched.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct State {
    pattern: u32,
    seg: u32,
}

/// What a member's key is matched as.
#[derive(Clone, Copy)]
enum Key<'k> {
    Name(&'k [u8]),
    Index(usize),
}

/// What the patterns say about one member or element.
#[derive(Default)]
struct Verdict {
    deny: bool,
    allow: bool,
    /// An allow pattern is still pending below.
    allow_below: bool,
    rename: Option<u32>,
    /// An added field replaces this member.
    replaced: bool,
}

// === impl JsonFilter ===

impl JsonFilter {
    pub(crate) fn new(patterns: Vec<Pattern>) -> Self {
        let has_allow = patterns.iter().any(|p| p.action == Action::Allow);
        Self {
            patterns: patterns.into_boxed_slice(),
            has_allow,
        }
    }

    /// Whether there is anything to do.
    pub(crate) fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// Filters `input`: `Ok(None)` when nothing changed (the caller keeps
    /// the original bytes), `Ok(Some(new))` otherwise.
    pub(crate) fn apply(&self, input: &[u8]) -> Result<Option<Vec<u8>>, Malformed> {
        if std::str::from_utf8(input).is_err() {
            return Err(Malformed);
        }
        let mut walk = Walk {
            filter: self,
            src: input,
            pos: 0,
            out: Vec::with_capacity(input.len()),
            stack: Vec::with_capacity(64),
            scratch: Vec::new(),
            changed: false,
        };
        for pattern in 0..self.patterns.len() {
            walk.push_closure(pattern as u32, 0, 0);
        }
        walk.skip_ws();
        let hi = walk.stack.len();
        walk.value(0, hi, !self.has_allow, 0)?;
        walk.skip_ws();
        if walk.pos != input.len() {
            return Err(Malformed);
        }
        Ok(walk.changed.then_some(walk.out))
    }
}

struct Walk<'a> {
    filter: &'a JsonFilter,
    src: &'a [u8],
    pos: usize,
    out: Vec<u8>,
    /// The states of every open level, innermost last.
    stack: Vec<State>,
    /// A key with escapes, decoded.
    scratch: Vec<u8>,
    changed: bool,
}

impl Walk<'_> {
    fn segments(&self, pattern: u32) -> &[Segment] {
        self.filter.patterns[pattern as usize].path.segments()
    }

    /// Pushes `(pattern, seg)` and, when that token is `**`, the state past
    /// it too (`**` matches zero levels); skips states already in
    /// `stack[from..]`.
    fn push_closure(&mut self, pattern: u32, seg: u32, from: usize) {
        let state = State { pattern, seg };
        if self.stack[from..].contains(&state) {
            return;
        }
        self.stack.push(state);
        if matches!(
            self.segments(pattern).get(seg as usize),
            Some(Segment::Deep)
        ) {
            self.push_closure(pattern, seg + 1, from);
        }
    }

    /// Steps the states of `stack[lo..hi]` over `key`, pushing the child's
    /// pending states, and says what the completed ones ask for.
    fn step(&mut self, lo: usize, hi: usize, key: Key<'_>, allowed: bool) -> Verdict {
        let filter = self.filter;
        let from = self.stack.len();
        for i in lo..hi {
            let State { pattern, seg } = self.stack[i];
            let segments = filter.patterns[pattern as usize].path.segments();
            let next = match segments.get(seg as usize) {
                Some(Segment::Key { name, index }) => match key {
                    Key::Name(k) => **name == *k,
                    Key::Index(i) => *index == Some(i),
                },
                Some(Segment::Any) => true,
                Some(Segment::Deep) => {
                    self.push_closure(pattern, seg, from);
                    false
                }
                None => false,
            };
            if next {
                self.push_closure(pattern, seg + 1, from);
            }
        }
        // Keep only the pending states; record what the completed ones say.
        let mut verdict = Verdict::default();
        let mut keep = from;
        for i in from..self.stack.len() {
            let state = self.stack[i];
            let pattern = &filter.patterns[state.pattern as usize];
            let done = state.seg as usize == pattern.path.segments().len();
            match (&pattern.action, done) {
                (Action::Deny, true) => verdict.deny = true,
                (Action::Allow, true) => verdict.allow = true,
                (Action::Rename(_), true) => {
                    verdict.rename.get_or_insert(state.pattern);
                }
                (Action::Add(..), true) => verdict.replaced = true,
                // Once inside an allowed subtree, allow patterns are moot.
                (Action::Allow, false) if allowed => {}
                (action, false) => {
                    verdict.allow_below |= *action == Action::Allow;
                    self.stack[keep] = state;
                    keep += 1;
                }
            }
        }
        self.stack.truncate(keep);
        verdict
    }

    /// A value whose states are `stack[lo..hi]`.
    fn value(
        &mut self,
        lo: usize,
        hi: usize,
        allowed: bool,
        depth: usize,
    ) -> Result<(), Malformed> {
        match self.peek() {
            Some(b'{') if lo < hi => self.object(lo, hi, allowed, depth),
            Some(b'[') if lo < hi => self.array(lo, hi, allowed, depth),
            _ => self.copy_value(depth),
        }
    }

    fn object(
        &mut self,
        lo: usize,
        hi: usize,
        allowed: bool,
        depth: usize,
    ) -> Result<(), Malformed> {
        if depth >= MAX_DEPTH {
            return Err(Malformed);
        }
        let src = self.src;
        self.pos += 1;
        self.out.push(b'{');
        let mut first = true;
        self.skip_ws();
        if self.peek() == Some(b'}') {
            self.pos += 1;
        } else {
            loop {
                let key_start = self.pos;
                let escaped = self.string()?;
                let key_end = self.pos;
                self.skip_ws();
                self.expect(b':')?;
                self.skip_ws();
                let mut scratch = std::mem::take(&mut self.scratch);
                let name = if escaped {
                    decode_key(&src[key_start + 1..key_end - 1], &mut scratch)?;
                    &scratch[..]
                } else {
                    &src[key_start + 1..key_end - 1]
                };
                let child_lo = self.stack.len();
                let verdict = self.step(lo, hi, Key::Name(name), allowed);
                self.scratch = scratch;
                let kept = self.member(
                    child_lo,
                    &verdict,
                    allowed,
                    depth,
                    &mut first,
                    Some(&src[key_start..key_end]),
                );
                self.stack.truncate(child_lo);
                kept?;
                self.skip_ws();
                match self.next() {
                    Some(b',') => self.skip_ws(),
                    Some(b'}') => break,
                    _ => return Err(Malformed),
                }
            }
        }
        // Fields added to this object: patterns whose parent part matched.
        for i in lo..hi {
            let State { pattern, seg } = self.stack[i];
            let pattern = &self.filter.patterns[pattern as usize];
            if let Action::Add(key, value) = &pattern.action
                && seg as usize + 1 == pattern.path.segments().len()
            {
                if !first {
                    self.out.push(b',');
                }
                first = false;
                self.out.extend_from_slice(key);
                self.out.push(b':');
                self.out.extend_from_slice(value);
                self.changed = true;
            }
        }
        self.out.push(b'}');
        Ok(())
    }

    fn array(
        &mut self,
        lo: usize,
        hi: usize,
        allowed: bool,
        depth: usize,
    ) -> Result<(), Malformed> {
        if depth >= MAX_DEPTH {
            return Err(Malformed);
        }
        self.pos += 1;
        self.out.push(b'[');
        let mut first = true;
        self.skip_ws();
        if self.peek() == Some(b']') {
            self.pos += 1;
        } else {
            let mut index = 0;
            loop {
                let child_lo = self.stack.len();
                let mut verdict = self.step(lo, hi, Key::Index(index), allowed);
                // Renames and added fields name object members.
                verdict.rename = None;
                verdict.replaced = false;
                let kept = self.member(child_lo, &verdict, allowed, depth, &mut first, None);
                self.stack.truncate(child_lo);
                kept?;
                index += 1;
                self.skip_ws();
                match self.next() {
                    Some(b',') => self.skip_ws(),
                    Some(b']') => break,
                    _ => return Err(Malformed),
                }
            }
        }
        self.out.push(b']');
        Ok(())
    }

    /// Writes, rewrites or drops one member (`key` is its raw quoted key)
    /// or array element (`key` is `None`); its states are
    /// `stack[child_lo..]`.
    fn member(
        &mut self,
        child_lo: usize,
        verdict: &Verdict,
        allowed: bool,
        depth: usize,
        first: &mut bool,
        key: Option<&[u8]>,
    ) -> Result<(), Malformed> {
        let child_allowed = allowed || verdict.allow;
        let container = matches!(self.peek(), Some(b'{' | b'['));
        let keep = !verdict.deny
            && !verdict.replaced
            && (child_allowed || (verdict.allow_below && container));
        if !keep {
            self.changed = true;
            return self.skip_value(depth + 1);
        }
        if !*first {
            self.out.push(b',');
        }
        *first = false;
        if let Some(key) = key {
            match verdict.rename {
                Some(pattern) => {
                    if let Action::Rename(to) = &self.filter.patterns[pattern as usize].action {
                        self.out.extend_from_slice(to);
                    }
                    self.changed = true;
                }
                None => self.out.extend_from_slice(key),
            }
            self.out.push(b':');
        }
        let hi = self.stack.len();
        self.value(child_lo, hi, child_allowed, depth + 1)
    }

    // --- scanning ---

    fn peek(&self) -> Option<u8> {
        self.src.get(self.pos).copied()
    }

    fn next(&mut self) -> Option<u8> {
        let b = self.peek()?;
        self.pos += 1;
        Some(b)
    }

    fn expect(&mut self, byte: u8) -> Result<(), Malformed> {
        if self.next() == Some(byte) {
            Ok(())
        } else {
            Err(Malformed)
        }
    }

    fn skip_ws(&mut self) {
        while let Some(b' ' | b'\n' | b'\r' | b'\t') = self.peek() {
            self.pos += 1;
        }
    }

    fn copy_value(&mut self, depth: usize) -> Result<(), Malformed> {
        let start = self.pos;
        self.skip_value(depth)?;
        self.out.extend_from_slice(&self.src[start..self.pos]);
        Ok(())
    }

    /// Validates and steps over one value.
    fn skip_value(&mut self, depth: usize) -> Result<(), Malformed> {
        match self.peek() {
            Some(b'{') => {
                if depth >= MAX_DEPTH {
                    return Err(Malformed);
                }
                self.pos += 1;
                self.skip_ws();
                if self.peek() == Some(b'}') {
                    self.pos += 1;
                    return Ok(());
                }
                loop {
                    self.string()?;
                    self.skip_ws();
                    self.expect(b':')?;
                    self.skip_ws();
                    self.skip_value(depth + 1)?;
                    self.skip_ws();
                    match self.next() {
                        Some(b',') => self.skip_ws(),
                        Some(b'}') => return Ok(()),
                        _ => return Err(Malformed),
                    }
                }
            }
            Some(b'[') => {
                if depth >= MAX_DEPTH {
                    return Err(Malformed);
                }
                self.pos += 1;
                self.skip_ws();
                if self.peek() == Some(b']') {
                    self.pos += 1;
                    return Ok(());
                }
                loop {
                    self.skip_value(depth + 1)?;
                    self.skip_ws();
                    match self.next() {
                        Some(b',') => self.skip_ws(),
                        Some(b']') => return Ok(()),
                        _ => return Err(Malformed),
                    }
                }
            }
            Some(b'"') => self.string().map(drop),
            Some(b't') => self.literal(b"true"),
            Some(b'f') => self.literal(b"false"),
            Some(b'n') => self.literal(b"null"),
            Some(b'-' | b'0'..=b'9') => self.number(),
            _ => Err(Malformed),
        }
    }

    fn literal(&mut self, word: &[u8]) -> Result<(), Malformed> {
        if self.src[self.pos..].starts_with(word) {
            self.pos += word.len();
            Ok(())
        } else {
            Err(Malformed)
        }
    }

    fn digits(&mut self) -> usize {
        let start = self.pos;
        while let Some(b'0'..=b'9') = self.peek() {
            self.pos += 1;
        }
        self.pos - start
    }

    /// `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`
    fn number(&mut self) -> Result<(), Malformed> {
        if self.peek() == Some(b'-') {
            self.pos += 1;
        }
        match self.peek() {
            Some(b'0') => self.pos += 1,
            Some(b'1'..=b'9') => {
                self.digits();
            }
            _ => return Err(Malformed),
        }
        if self.peek() == Some(b'.') {
            self.pos += 1;
            if self.digits() == 0 {
                return Err(Malformed);
            }
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.pos += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.pos += 1;
            }
            if self.digits() == 0 {
                return Err(Malformed);
            }
        }
        Ok(())
    }

    /// Steps over a string (the input is known to be UTF-8); says whether
    /// it has escapes.
    fn string(&mut self) -> Result<bool, Malformed> {
        if self.next() != Some(b'"') {
            return Err(Malformed);
        }
        let mut escaped = false;
        loop {
            let rest = &self.src[self.pos..];
            let plain = rest
                .iter()
                .position(|&b| SPECIAL[b as usize])
                .ok_or(Malformed)?;
            self.pos += plain;
            match self.next() {
                Some(b'"') => return Ok(escaped),
                Some(b'\\') => {
                    escaped = true;
                    match self.next() {
                        Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => {}
                        Some(b'u') => {
                            let hex = self.src.get(self.pos..self.pos + 4).ok_or(Malformed)?;
                            if !hex.iter().all(u8::is_ascii_hexdigit) {
                                return Err(Malformed);
                            }
                            self.pos += 4;
                        }
                        _ => return Err(Malformed),
                    }
                }
                // A control character.
                _ => return Err(Malformed),
            }
        }
    }
}

/// Bytes that end the plain run of a string: `"`, `\` and controls.
static SPECIAL: [bool; 256] = {
    let mut table = [false; 256];
    let mut i = 0;
    while i < 0x20 {
        table[i] = true;
        i += 1;
    }
    table[b'"' as usize] = true;
    table[b'\\' as usize] = true;
    table
};

/// Decodes the escapes of a (validated) key into `out`. A lone surrogate
/// becomes U+FFFD.
fn decode_key(raw: &[u8], out: &mut Vec<u8>) -> Result<(), Malformed> {
    out.clear();
    let mut i = 0;
    while i < raw.len() {
        let b = raw[i];
        if b != b'\\' {
            out.push(b);
            i += 1;
            continue;
        }
        let e = *raw.get(i + 1).ok_or(Malformed)?;
        i += 2;
        let c = match e {
            b'"' => '"',
            b'\\' => '\\',
            b'/' => '/',
            b'b' => '\u{8}',
            b'f' => '\u{c}',
            b'n' => '\n',
            b'r' => '\r',
            b't' => '\t',
            b'u' => {
                let hi = hex4(raw, i)?;
                i += 4;
                let code = if (0xD800..0xDC00).contains(&hi)
                    && raw.get(i) == Some(&b'\\')
                    && raw.get(i + 1) == Some(&b'u')
                {
                    match hex4(raw, i + 2)? {
                        lo @ 0xDC00..0xE000 => {
                            i += 6;
                            0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00)
                        }
                        _ => hi,
                    }
                } else {
                    hi
                };
                char::from_u32(code).unwrap_or('\u{FFFD}')
            }
            _ => return Err(Malformed),
        };
        let mut buf = [0; 4];
        out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
    }
    Ok(())
}

fn hex4(raw: &[u8], at: usize) -> Result<u32, Malformed> {
    let digits = raw.get(at..at + 4).ok_or(Malformed)?;
    let mut value = 0;
    for &d in digits {
        let v = (d as char).to_digit(16).ok_or(Malformed)?;
        value = value * 16 + v;
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    fn filter(rules: &[(&str, Action)]) -> JsonFilter {
        JsonFilter::new(
            rules
                .iter()
                .map(|(p, a)| Pattern {
                    path: JsonPath::parse(p).unwrap(),
                    action: a.clone(),
                })
                .collect(),
        )
    }

    fn deny(paths: &[&str]) -> JsonFilter {
        filter(&paths.iter().map(|p| (*p, Action::Deny)).collect::<Vec<_>>())
    }

    fn allow(paths: &[&str]) -> JsonFilter {
        filter(
            &paths
                .iter()
                .map(|p| (*p, Action::Allow))
                .collect::<Vec<_>>(),
        )
    }

    fn run(filter: &JsonFilter, input: &Value) -> Value {
        let bytes = serde_json::to_vec_pretty(input).unwrap();
        match filter.apply(&bytes).unwrap() {
            Some(out) => serde_json::from_slice(&out).unwrap(),
            None => input.clone(),
        }
    }

    fn rename(to: &str) -> Action {
        Action::Rename(serde_json::to_vec(to).unwrap().into())
    }

    fn add(key: &str, value: &Value) -> Action {
        Action::Add(
            serde_json::to_vec(key).unwrap().into(),
            serde_json::to_vec(value).unwrap().into(),
        )
    }

    #[test]
    fn denies_top_level_nested_and_wildcard_paths() {
        let f = deny(&["/internal_id", "/items/*/cost_price", "/data/**/secret"]);
        let input = json!({
            "id": 1, "internal_id": 9,
            "items": [{"sku": "a", "cost_price": 1}, {"sku": "b", "cost_price": 2}],
            "data": {"secret": 1, "x": {"secret": 2, "y": [{"secret": 3, "ok": true}]}},
        });
        assert_eq!(
            run(&f, &input),
            json!({
                "id": 1,
                "items": [{"sku": "a"}, {"sku": "b"}],
                "data": {"x": {"y": [{"ok": true}]}},
            })
        );
    }

    #[test]
    fn wildcards_on_root_arrays_and_indexes() {
        let f = deny(&["/*/secret", "/1"]);
        let input = json!([{"a": 1, "secret": 2}, {"b": 1}, {"secret": 3}]);
        assert_eq!(run(&f, &input), json!([{"a": 1}, {}]));
        let f = deny(&["/**/secret"]);
        let input = json!({"secret": 1, "a": [{"secret": 2}, [{"secret": 3}]]});
        assert_eq!(run(&f, &input), json!({"a": [{}, [{}]]}));
    }

    #[test]
    fn allow_keeps_only_listed_paths_and_their_parents() {
        let f = allow(&["/id", "/name", "/items/*/sku"]);
        let input = json!({
            "id": 1, "name": "n", "internal_id": 9, "debug_info": {"a": 1},
            "items": [{"sku": "a", "cost_price": 1}, 3],
        });
        assert_eq!(
            run(&f, &input),
            json!({"id": 1, "name": "n", "items": [{"sku": "a"}]})
        );
        // An allowed subtree is kept whole, denies still apply inside it.
        let f = filter(&[("/user", Action::Allow), ("/user/password", Action::Deny)]);
        let input = json!({"user": {"name": "a", "password": "p", "x": [1]}, "other": 1});
        assert_eq!(run(&f, &input), json!({"user": {"name": "a", "x": [1]}}));
    }

    #[test]
    fn renames_and_adds() {
        let f = filter(&[
            ("/items/*/cost", rename("price")),
            ("/meta/version", add("version", &json!(2))),
            ("/flag", add("flag", &json!({"on": true}))),
        ]);
        let input =
            json!({"items": [{"cost": 1}, {"c": 2}], "meta": {"version": 1, "x": 1}, "flag": 0});
        assert_eq!(
            run(&f, &input),
            json!({"items": [{"price": 1}, {"c": 2}], "meta": {"x": 1, "version": 2}, "flag": {"on": true}})
        );
    }

    #[test]
    fn escaped_keys_match_their_decoded_name() {
        let f = deny(&["/a~1b", "/caf\u{e9}"]);
        let out = f
            .apply(br#"{"a\/b": 1, "caf\u00e9": 2, "keep": "\u00e9\"\n"}"#)
            .unwrap()
            .unwrap();
        assert_eq!(
            serde_json::from_slice::<Value>(&out).unwrap(),
            json!({"keep": "\u{e9}\"\n"})
        );
    }

    #[test]
    fn unchanged_bodies_are_not_copied() {
        let f = deny(&["/nope", "/**/never"]);
        assert_eq!(f.apply(br#" {"a": [1, {"b": null}]} "#), Ok(None));
        assert_eq!(f.apply(b"\"just a string\""), Ok(None));
    }

    #[test]
    fn malformed_input_is_an_error_and_never_panics() {
        let f = deny(&["/a", "/**/b"]);
        let deep = "[".repeat(MAX_DEPTH + 1) + &"]".repeat(MAX_DEPTH + 1);
        let cases: Vec<&[u8]> = vec![
            b"",
            b"{",
            b"{\"a\":}",
            b"{\"a\" 1}",
            b"{\"a\":1,}",
            b"[1,]",
            b"[01]",
            b"[1.]",
            b"[1e]",
            b"[-]",
            b"\"\\x\"",
            b"\"\\u12\"",
            b"\"a\nb\"",
            b"tru",
            b"{\"a\":1} x",
            b"\xff\xfe",
            b"{\"\xc3\x28\":1}",
            deep.as_bytes(),
        ];
        for case in cases {
            assert_eq!(
                f.apply(case),
                Err(Malformed),
                "{:?}",
                String::from_utf8_lossy(case)
            );
        }
        // Every truncation of a valid document.
        let doc = br#"{"a":[1,-2.5e+3,"x\u00e9",true,false,null],"b":{"c":{}}}"#;
        assert!(f.apply(doc).is_ok());
        for end in 0..doc.len() {
            assert_eq!(f.apply(&doc[..end]), Err(Malformed), "{end}");
        }
        let ok_deep = "[".repeat(MAX_DEPTH) + &"]".repeat(MAX_DEPTH);
        assert_eq!(f.apply(ok_deep.as_bytes()), Ok(None));
    }

    #[test]
    fn matches_serde_json_on_generated_documents() {
        // Values serde_json parses are accepted, and the filter's output
        // equals removing the keys from the parsed value.
        fn strip(v: &mut Value) {
            match v {
                Value::Object(map) => {
                    map.remove("secret");
                    map.values_mut().for_each(strip);
                }
                Value::Array(items) => items.iter_mut().for_each(strip),
                _ => {}
            }
        }
        let f = deny(&["/**/secret"]);
        let mut rng = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = move |n: u64| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng % n
        };
        fn generate(next: &mut dyn FnMut(u64) -> u64, depth: u32) -> Value {
            match next(if depth > 4 { 4 } else { 6 }) {
                0 => Value::Null,
                1 => json!(next(1000) as f64 / 4.0 - 100.0),
                2 => json!(format!("s\"{}\u{e9}\\", next(100))),
                3 => json!(next(2) == 0),
                4 => Value::Array((0..next(4)).map(|_| generate(next, depth + 1)).collect()),
                _ => {
                    let keys = ["secret", "a", "b\"q", "c"];
                    let mut map = serde_json::Map::new();
                    for _ in 0..next(4) {
                        map.insert(keys[next(4) as usize].into(), generate(next, depth + 1));
                    }
                    Value::Object(map)
                }
            }
        }
        for _ in 0..300 {
            let doc = generate(&mut next, 0);
            let mut expected = doc.clone();
            strip(&mut expected);
            assert_eq!(run(&f, &doc), expected);
        }
    }
}
