//! JSON pointers (`/a/b`, RFC 6901 escapes `~0` and `~1`) and the field
//! edits of the request body rules.

use serde_json::{Map, Value};

/// A parsed pointer to an object member: at least one segment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Pointer {
    source: Box<str>,
    segments: Box<[Box<str>]>,
}

impl Pointer {
    pub(crate) fn parse(source: &str) -> Result<Self, String> {
        let Some(rest) = source.strip_prefix('/') else {
            return Err(format!("JSON pointer {source:?} must start with `/`"));
        };
        let segments = rest
            .split('/')
            .map(|s| s.replace("~1", "/").replace("~0", "~").into_boxed_str())
            .collect();
        Ok(Self {
            source: source.into(),
            segments,
        })
    }

    pub(crate) fn as_str(&self) -> &str {
        &self.source
    }

    /// The object holding the last segment, and that segment. With
    /// `create`, missing objects on the way are added.
    fn parent<'v>(
        &self,
        root: &'v mut Value,
        create: bool,
    ) -> Option<(&'v mut Map<String, Value>, &str)> {
        let (last, path) = self.segments.split_last()?;
        let mut node = root;
        for segment in path {
            node = match node {
                Value::Object(map) => {
                    if create && !map.contains_key(&**segment) {
                        map.insert(segment.to_string(), Value::Object(Map::new()));
                    }
                    map.get_mut(&**segment)?
                }
                Value::Array(items) => items.get_mut(segment.parse::<usize>().ok()?)?,
                _ => return None,
            };
        }
        match node {
            Value::Object(map) => Some((map, last)),
            _ => None,
        }
    }

    /// Removes the member; `None` when it is not there.
    pub(crate) fn remove(&self, root: &mut Value) -> Option<Value> {
        let (map, last) = self.parent(root, false)?;
        map.remove(last)
    }

    /// Sets the member, adding missing parent objects; `false` when a
    /// parent on the way is not an object (nothing is changed then).
    pub(crate) fn insert(&self, root: &mut Value, value: Value) -> bool {
        if !self.fits(root) {
            return false;
        }
        match self.parent(root, true) {
            Some((map, last)) => {
                map.insert(last.to_owned(), value);
                true
            }
            None => false,
        }
    }

    /// Whether `insert` would succeed: every existing node on the way is
    /// an object (or an array indexed by a number), so that no partial
    /// path is created for an edit that fails.
    fn fits(&self, root: &Value) -> bool {
        let Some((_, path)) = self.segments.split_last() else {
            return false;
        };
        let mut node = root;
        for segment in path {
            node = match node {
                Value::Object(map) => match map.get(&**segment) {
                    Some(next) => next,
                    None => return true,
                },
                Value::Array(items) => {
                    match segment.parse::<usize>().ok().and_then(|i| items.get(i)) {
                        Some(next) => next,
                        None => return false,
                    }
                }
                _ => return false,
            };
        }
        node.is_object()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn p(s: &str) -> Pointer {
        Pointer::parse(s).unwrap()
    }

    #[test]
    fn edits_nested_members() {
        let mut v = json!({"a": {"b": 1, "c/d": 2}, "items": [{"x": 1}], "s": "str"});
        assert_eq!(p("/a/b").remove(&mut v), Some(json!(1)));
        assert_eq!(p("/a/c~1d").remove(&mut v), Some(json!(2)));
        assert_eq!(p("/a/zz").remove(&mut v), None);
        assert!(p("/new/deep/k").insert(&mut v, json!("v")));
        assert!(p("/items/0/y").insert(&mut v, json!(2)));
        assert!(!p("/items/9/y").insert(&mut v, json!(2)));
        assert!(!p("/s/x").insert(&mut v, json!(2)));
        assert!(!p("/s/x/y").insert(&mut v, json!(2)));
        assert_eq!(
            v,
            json!({"a": {}, "items": [{"x": 1, "y": 2}], "s": "str", "new": {"deep": {"k": "v"}}})
        );
        let mut arr = json!([1, 2]);
        assert!(!p("/a").insert(&mut arr, json!(1)));
        assert_eq!(p("/0").remove(&mut arr), None);
        assert!(Pointer::parse("a/b").is_err());
    }
}
