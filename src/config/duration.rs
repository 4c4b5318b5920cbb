//! Durations written as strings in configuration and policies ("90s", "15m", "1h").

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A `std::time::Duration` that (de)serialises as a human string such as `"15m"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HumanDuration(pub Duration);

impl HumanDuration {
    pub const fn secs(secs: u64) -> Self {
        Self(Duration::from_secs(secs))
    }

    pub fn get(self) -> Duration {
        self.0
    }
}

/// Parses `"90s"`, `"15m"`, `"1h"`, `"250ms"`; a bare number is refused so a unit is never guessed.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let trimmed = text.trim();
    if trimmed.chars().all(|c| c.is_ascii_digit()) {
        return Err(format!(
            "duration {text:?} has no unit; write it like \"90s\", \"15m\" or \"1h\""
        ));
    }
    humantime::parse_duration(trimmed).map_err(|err| {
        format!("invalid duration {text:?} ({err}); write it like \"90s\", \"15m\" or \"1h\"")
    })
}

/// Formats a duration the way configuration writes it (`"15m"`, `"1h 30m"`).
pub fn format_duration(duration: Duration) -> String {
    humantime::format_duration(duration).to_string()
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&format_duration(self.0))
    }
}

/// The message for a duration written as a number (`max_ttl = 900`, `…__LEEWAY=60`).
fn number_message(number: impl fmt::Display) -> String {
    format!(
        "duration {number} is a number without a unit; write it like \"90s\", \"15m\" or \"1h\" \
         (in TOML, in quotes)"
    )
}

struct DurationVisitor;

impl serde::de::Visitor<'_> for DurationVisitor {
    type Value = HumanDuration;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a duration like \"90s\", \"15m\" or \"1h\"")
    }

    fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Self::Value, E> {
        parse_duration(text).map(HumanDuration).map_err(E::custom)
    }

    fn visit_i64<E: serde::de::Error>(self, number: i64) -> Result<Self::Value, E> {
        Err(E::custom(number_message(number)))
    }

    fn visit_u64<E: serde::de::Error>(self, number: u64) -> Result<Self::Value, E> {
        Err(E::custom(number_message(number)))
    }

    fn visit_i128<E: serde::de::Error>(self, number: i128) -> Result<Self::Value, E> {
        Err(E::custom(number_message(number)))
    }

    fn visit_u128<E: serde::de::Error>(self, number: u128) -> Result<Self::Value, E> {
        Err(E::custom(number_message(number)))
    }

    fn visit_f64<E: serde::de::Error>(self, number: f64) -> Result<Self::Value, E> {
        Err(E::custom(number_message(number)))
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // A number is answered with how durations are written, not "invalid type".
        deserializer.deserialize_str(DurationVisitor)
    }
}

impl Serialize for HumanDuration {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&format_duration(self.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_forms() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
    }

    #[test]
    fn refuses_bare_numbers_and_garbage() {
        assert!(
            parse_duration("60")
                .expect_err("refused")
                .contains("has no unit")
        );
        assert!(
            parse_duration("soon")
                .expect_err("refused")
                .contains("invalid duration")
        );
    }
}
