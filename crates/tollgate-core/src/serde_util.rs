//! Deserialisation helpers shared by the layer configs.
//!
//! Durations are written the way operators write them: `"250ms"`, `"5s"`,
//! `"1m 30s"`, `"1h"` (the `humantime` grammar), or a bare number of
//! seconds. Use them with `#[serde(with = "tollgate_core::serde_util::duration")]`
//! or `…::option_duration`.
//!
//! ```
//! use std::time::Duration;
//!
//! #[derive(serde::Deserialize)]
//! struct Timeouts {
//!     #[serde(with = "tollgate_core::serde_util::duration")]
//!     connect: Duration,
//!     #[serde(default, with = "tollgate_core::serde_util::option_duration")]
//!     response: Option<Duration>,
//! }
//!
//! let t: Timeouts = serde_json::from_str(r#"{"connect": "1.5s", "response": 30}"#)?;
//! assert_eq!(t.connect, Duration::from_millis(1500));
//! assert_eq!(t.response, Some(Duration::from_secs(30)));
//! # Ok::<(), serde_json::Error>(())
//! ```

use std::{fmt, time::Duration};

use serde::de::{self, Deserializer, Visitor};

/// `Duration` from `"5s"`, `"250ms"`, `"1m 30s"` or a number of seconds.
pub mod duration {
    use super::*;

    /// Deserialises a [`Duration`].
    ///
    /// # Errors
    ///
    /// A string humantime cannot read, or a negative or non-finite number.
    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        deserializer.deserialize_any(DurationVisitor)
    }
}

/// `Option<Duration>`: as [`duration`], and `"none"`/`"off"` for `None`.
/// Use with `#[serde(default)]` so a missing key is `None` too.
pub mod option_duration {
    use super::*;

    /// Deserialises an `Option<Duration>`.
    ///
    /// # Errors
    ///
    /// As [`duration::deserialize`].
    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<Duration>, D::Error> {
        deserializer.deserialize_any(OptionVisitor)
    }
}

struct DurationVisitor;

impl Visitor<'_> for DurationVisitor {
    type Value = Duration;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a duration such as \"250ms\", \"5s\" or \"1m 30s\", or a number of seconds")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Duration, E> {
        humantime::parse_duration(v.trim())
            .map_err(|e| E::custom(format!("bad duration {v:?}: {e}")))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Duration, E> {
        Ok(Duration::from_secs(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Duration, E> {
        u64::try_from(v)
            .map(Duration::from_secs)
            .map_err(|_| E::custom("a duration cannot be negative"))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Duration, E> {
        Duration::try_from_secs_f64(v)
            .map_err(|_| E::custom("a duration must be a finite, non-negative number of seconds"))
    }
}

struct OptionVisitor;

impl<'de> Visitor<'de> for OptionVisitor {
    type Value = Option<Duration>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a duration such as \"5s\", a number of seconds, or \"none\"")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        match v.trim() {
            "none" | "off" => Ok(None),
            other => DurationVisitor.visit_str(other).map(Some),
        }
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        DurationVisitor.visit_u64(v).map(Some)
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        DurationVisitor.visit_i64(v).map(Some)
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        DurationVisitor.visit_f64(v).map(Some)
    }

    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize)]
    struct D {
        #[serde(with = "duration")]
        d: Duration,
        #[serde(default, with = "option_duration")]
        o: Option<Duration>,
    }

    fn parse(json: &str) -> Result<D, serde_json::Error> {
        serde_json::from_str(json)
    }

    #[test]
    fn durations_read_as_operators_write_them() {
        let d = parse(r#"{"d": "1m 30s", "o": "250ms"}"#).unwrap();
        assert_eq!(d.d, Duration::from_secs(90));
        assert_eq!(d.o, Some(Duration::from_millis(250)));
        let d = parse(r#"{"d": 2, "o": "off"}"#).unwrap();
        assert_eq!(d.d, Duration::from_secs(2));
        assert_eq!(d.o, None);
        assert_eq!(parse(r#"{"d": 0.5}"#).unwrap().o, None);
    }

    #[test]
    fn bad_durations_are_errors_that_say_why() {
        let err = parse(r#"{"d": "5 parsecs"}"#).err().unwrap().to_string();
        assert!(err.contains("bad duration \"5 parsecs\""), "{err}");
        assert!(parse(r#"{"d": -1}"#).is_err());
        assert!(parse(r#"{"d": true}"#).is_err());
    }
}
