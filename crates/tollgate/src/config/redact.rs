//! The effective config with its secrets taken out, for `/config`.

use serde_json::Value;

/// Keys whose values are secrets wherever they appear.
const SECRET_KEYS: &[&str] = &[
    "secret",
    "client_secret",
    "password",
    "key",
    "token",
    "api_key",
];

const REDACTED: &str = "[redacted]";

/// `text` (an expanded TOML document) as JSON, with every value that came
/// from the environment, every value of a secret key and every password
/// in a URL replaced.
pub(crate) fn redacted(text: &str, secrets: &[String]) -> Value {
    let Ok(table) = toml::from_str::<toml::Table>(text) else {
        return Value::Null;
    };
    let mut value = serde_json::to_value(table).unwrap_or(Value::Null);
    walk(&mut value, false, secrets);
    value
}

fn walk(value: &mut Value, secret: bool, secrets: &[String]) {
    match value {
        Value::String(s) => {
            if secret || secrets.iter().any(|v| s.contains(v.as_str())) {
                *s = REDACTED.to_owned();
            } else if let Some(clean) = without_url_password(s) {
                *s = clean;
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|v| walk(v, secret, secrets)),
        Value::Object(map) => {
            for (key, v) in map.iter_mut() {
                let is_secret = SECRET_KEYS.contains(&key.to_ascii_lowercase().as_str());
                walk(v, secret || is_secret, secrets);
            }
        }
        Value::Number(_) | Value::Bool(_) if secret => *value = Value::String(REDACTED.into()),
        _ => {}
    }
}

/// `scheme://user:password@host/…` with the password replaced.
fn without_url_password(s: &str) -> Option<String> {
    let (scheme, rest) = s.split_once("://")?;
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (userinfo, _) = rest[..authority_end].rsplit_once('@')?;
    let (user, _) = userinfo.split_once(':')?;
    let host_and_rest = &rest[userinfo.len() + 1..];
    Some(format!("{scheme}://{user}:{REDACTED}@{host_and_rest}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_redacted_by_origin_key_and_url() {
        let text = r#"
            plain = "visible"
            from_env = "Bearer abc123"
            [auth.providers.main]
            secret = "literal-in-file"
            [[auth.providers.keys.keys]]
            key = "k-1"
            consumer = "acme"
            [redis]
            url = "redis://app:hunter2@redis:6379/0"
        "#;
        let value = redacted(text, &["abc123".to_owned()]);
        assert_eq!(value["plain"], "visible");
        assert_eq!(value["from_env"], REDACTED);
        assert_eq!(value["auth"]["providers"]["main"]["secret"], REDACTED);
        assert_eq!(
            value["auth"]["providers"]["keys"]["keys"][0]["key"],
            REDACTED
        );
        assert_eq!(
            value["auth"]["providers"]["keys"]["keys"][0]["consumer"],
            "acme"
        );
        assert_eq!(value["redis"]["url"], "redis://app:[redacted]@redis:6379/0");
        let json = value.to_string();
        for secret in ["abc123", "literal-in-file", "k-1", "hunter2"] {
            assert!(!json.contains(secret), "{secret} leaked: {json}");
        }
    }
}
