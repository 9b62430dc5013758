//! The text of a config file: `${ENV}` expansion in string values, key
//! paths mapped back to lines, and errors that name both.

use std::{fmt, ops::Range, path::PathBuf};

use toml::de::{DeTable, DeValue};

/// A config file that could not be read, parsed or built.
///
/// It names the file, the line and the key path when they are known:
/// `gateway.toml:14: routes[2].auth.jwks_url: relative URL without a base`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigFileError {
    file: Option<PathBuf>,
    line: Option<usize>,
    path: String,
    message: String,
}

impl ConfigFileError {
    pub(crate) fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            file: None,
            line: None,
            path: path.into(),
            message: message.into(),
        }
    }

    pub(crate) fn at_line(mut self, line: Option<usize>) -> Self {
        self.line = line.or(self.line);
        self
    }

    pub(crate) fn in_file(mut self, file: Option<PathBuf>) -> Self {
        self.file = file;
        self
    }

    /// The file, when the config was read from one.
    pub fn file(&self) -> Option<&std::path::Path> {
        self.file.as_deref()
    }

    /// The 1-based line the error points at, when known.
    pub fn line(&self) -> Option<usize> {
        self.line
    }

    /// The key path, such as `routes[2].auth.jwks_url`; empty for errors
    /// of the whole document (TOML syntax).
    pub fn key_path(&self) -> &str {
        &self.path
    }

    /// What is wrong, without the place.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for ConfigFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.file, self.line) {
            (Some(file), Some(line)) => write!(f, "{}:{line}: ", file.display())?,
            (Some(file), None) => write!(f, "{}: ", file.display())?,
            (None, Some(line)) => write!(f, "line {line}: ")?,
            (None, None) => {}
        }
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        f.write_str(&self.message)
    }
}

impl std::error::Error for ConfigFileError {}

/// The 1-based line of byte offset `at` in `text`.
pub(crate) fn line_of(text: &str, at: usize) -> usize {
    let at = at.min(text.len());
    text.as_bytes()[..at]
        .iter()
        .filter(|b| **b == b'\n')
        .count()
        + 1
}

/// The text after `${NAME}` expansion, and the values that were put in
/// (they are secrets as far as `/config` is concerned).
#[derive(Debug)]
pub(crate) struct Expanded {
    pub(crate) text: String,
    pub(crate) secrets: Vec<String>,
}

/// Expands `${NAME}` and `${NAME:-default}` inside the string values of a
/// TOML document (never in keys or comments). `$${` is a literal `${`.
///
/// The document is parsed first, so only the byte ranges of string
/// values are touched; the value is escaped for the kind of string it
/// lands in, so a secret holding `"` or a newline cannot change the
/// document's structure, and lines stay where they were.
pub(crate) fn expand_env(
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Expanded, ConfigFileError> {
    let root = DeTable::parse(text).map_err(|e| toml_error(text, &e))?;
    let mut spans = Vec::new();
    for (_, value) in root.get_ref() {
        collect_strings(value, &mut spans);
    }
    spans.sort_by_key(|s| s.start);
    let mut out = String::with_capacity(text.len());
    let mut secrets = Vec::new();
    let mut last = 0;
    for span in spans {
        let Some(raw) = text.get(span.clone()) else {
            continue;
        };
        if !raw.contains('$') {
            continue;
        }
        out.push_str(&text[last..span.start]);
        let kind = StringKind::of(raw);
        expand_one(raw, kind, env, &mut out, &mut secrets).map_err(|msg| {
            ConfigFileError::new("", msg).at_line(Some(line_of(text, span.start)))
        })?;
        last = span.end;
    }
    out.push_str(&text[last..]);
    Ok(Expanded { text: out, secrets })
}

fn collect_strings(value: &toml::Spanned<DeValue<'_>>, spans: &mut Vec<Range<usize>>) {
    match value.get_ref() {
        DeValue::String(_) => spans.push(value.span()),
        DeValue::Array(items) => items.iter().for_each(|v| collect_strings(v, spans)),
        DeValue::Table(table) => table.values().for_each(|v| collect_strings(v, spans)),
        _ => {}
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum StringKind {
    Basic,
    Literal,
}

impl StringKind {
    fn of(raw: &str) -> Self {
        if raw.starts_with('\'') {
            Self::Literal
        } else {
            Self::Basic
        }
    }
}

fn expand_one(
    raw: &str,
    kind: StringKind,
    env: &dyn Fn(&str) -> Option<String>,
    out: &mut String,
    secrets: &mut Vec<String>,
) -> Result<(), String> {
    let mut rest = raw;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let tail = &rest[at..];
        if let Some(after) = tail.strip_prefix("$${") {
            out.push_str("${");
            rest = after;
            continue;
        }
        let Some(body) = tail.strip_prefix("${") else {
            out.push('$');
            rest = &tail[1..];
            continue;
        };
        let Some(end) = body.find('}') else {
            return Err("unterminated `${` in a string (write `$${` for a literal `${`)".into());
        };
        let (name, default) = match body[..end].split_once(":-") {
            Some((name, default)) => (name, Some(default)),
            None => (&body[..end], None),
        };
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return Err(format!(
                "bad environment variable name {name:?} in `${{…}}`"
            ));
        }
        let value = match (env(name), default) {
            (Some(value), _) => {
                if !value.is_empty() {
                    secrets.push(value.clone());
                }
                value
            }
            (None, Some(default)) => default.to_owned(),
            (None, None) => return Err(format!("environment variable {name} is not set")),
        };
        match kind {
            StringKind::Basic => escape_basic(&value, out),
            StringKind::Literal => {
                if value.contains(['\'', '\n', '\r']) {
                    return Err(format!(
                        "the value of {name} cannot go into a '…' string (it holds a quote or a \
                         line break); use a \"…\" string"
                    ));
                }
                out.push_str(&value);
            }
        }
        rest = &body[end + 1..];
    }
    out.push_str(rest);
    Ok(())
}

fn escape_basic(value: &str, out: &mut String) {
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", u32::from(c))),
            c => out.push(c),
        }
    }
}

/// A TOML syntax or type error, placed on its line.
pub(crate) fn toml_error(text: &str, error: &toml::de::Error) -> ConfigFileError {
    let line = error.span().map(|span| line_of(text, span.start));
    ConfigFileError::new("", error.message().trim_end().to_owned()).at_line(line)
}

/// The line where the value at `path` (`routes[2].auth`) is written:
/// the deepest part of the path that exists in the document.
pub(crate) fn line_of_path(text: &str, path: &str) -> Option<usize> {
    let root = DeTable::parse(text).ok()?;
    let mut span = None;
    let mut table = Some(root.get_ref());
    let mut current: Option<&toml::Spanned<DeValue<'_>>> = None;
    for segment in segments(path) {
        let next = match segment {
            Segment::Key(key) => match (current, table) {
                (None, Some(t)) => t.get(key),
                (Some(value), _) => value.get_ref().get(key),
                _ => None,
            },
            Segment::Index(i) => current.and_then(|v| v.get_ref().get(i)),
        };
        match next {
            Some(value) => {
                span = Some(value.span());
                current = Some(value);
                table = None;
            }
            None => break,
        }
    }
    span.map(|s| line_of(text, s.start))
}

enum Segment<'a> {
    Key(&'a str),
    Index(usize),
}

fn segments(path: &str) -> impl Iterator<Item = Segment<'_>> {
    path.split('.').flat_map(|part| {
        let (key, indexes) = match part.find('[') {
            Some(at) => (&part[..at], &part[at..]),
            None => (part, ""),
        };
        let key = (!key.is_empty()).then_some(Segment::Key(key));
        let indexes = indexes
            .split('[')
            .filter_map(|i| i.strip_suffix(']'))
            .filter_map(|i| i.parse().ok())
            .map(Segment::Index);
        key.into_iter().chain(indexes)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "SECRET" => Some("s3\"cr\\et".into()),
            "ADDR" => Some("127.0.0.1:8080".into()),
            "EMPTY" => Some(String::new()),
            "QUOTE" => Some("it's".into()),
            _ => None,
        }
    }

    #[test]
    fn env_values_expand_in_strings_only() {
        let text = "# ${NOT_A_VAR} in a comment\nsecret = \"${SECRET}\"\nlisten = '${ADDR}'\nkeep = \"$${LITERAL} and $5\"\n\"${KEY}\" = 1\nd = \"${MISSING:-fallback}\"\n";
        let out = expand_env(text, &env).unwrap();
        let parsed: toml::Table = toml::from_str(&out.text).unwrap();
        assert_eq!(parsed["secret"].as_str(), Some("s3\"cr\\et"));
        assert_eq!(parsed["listen"].as_str(), Some("127.0.0.1:8080"));
        assert_eq!(parsed["keep"].as_str(), Some("${LITERAL} and $5"));
        assert_eq!(parsed["d"].as_str(), Some("fallback"));
        assert!(parsed.contains_key("${KEY}"));
        assert!(out.text.starts_with("# ${NOT_A_VAR}"));
        assert_eq!(out.secrets, ["s3\"cr\\et", "127.0.0.1:8080"]);
        assert_eq!(out.text.lines().count(), text.lines().count());
    }

    #[test]
    fn a_missing_variable_names_itself_and_the_line() {
        let err = expand_env("a = 1\nb = \"x-${NOPE}\"\n", &env).unwrap_err();
        assert_eq!(
            err.to_string(),
            "line 2: environment variable NOPE is not set"
        );
        let err = expand_env("b = \"${OPEN\"\n", &env).unwrap_err();
        assert!(err.message().contains("unterminated"), "{err}");
        let err = expand_env("b = '${QUOTE}'\n", &env).unwrap_err();
        assert!(err.message().contains("\"…\" string"), "{err}");
    }

    #[test]
    fn a_secret_cannot_break_out_of_its_string() {
        let evil = |_: &str| Some("x\"\n[admin]\nlisten = \"0.0.0.0:1\"".to_owned());
        let out = expand_env("token = \"${T}\"\n", &evil).unwrap();
        let parsed: toml::Table = toml::from_str(&out.text).unwrap();
        assert_eq!(parsed.len(), 1);
        assert_eq!(
            parsed["token"].as_str(),
            Some("x\"\n[admin]\nlisten = \"0.0.0.0:1\"")
        );
    }

    #[test]
    fn key_paths_map_to_lines() {
        let text = "[server]\nlisten = \"x\"\n\n[[routes]]\nprefix = \"/a\"\n\n[[routes]]\nprefix = \"/b\"\nauth = { providers = [\"p\"] }\n";
        assert_eq!(line_of_path(text, "server.listen"), Some(2));
        assert_eq!(line_of_path(text, "routes[1].prefix"), Some(8));
        assert_eq!(line_of_path(text, "routes[1].auth.providers[0]"), Some(9));
        // The deepest part that exists.
        assert_eq!(
            line_of_path(text, "routes[1].nothing"),
            Some(7).or(line_of_path(text, "routes[1]"))
        );
        assert_eq!(line_of_path(text, "nothing"), None);
    }
}
