//! Strict JSON objects: top-level member names must be unique (serde_json keeps the last silently).

use serde::Deserialize;
use serde::de::{MapAccess, Visitor};
use serde_json::{Map, Value};

/// Why a byte string is not a strict JSON object.
#[derive(Debug, PartialEq, Eq)]
pub enum ObjectDefect {
    /// Not JSON, or not an object, or trailing data.
    Invalid,
    /// The first member name that appears twice.
    Duplicate(String),
}

/// Parses `bytes` as one JSON object whose top-level member names are unique.
pub fn parse_unique_object(bytes: &[u8]) -> Result<Map<String, Value>, ObjectDefect> {
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let parsed = UniqueKeyObject::deserialize(&mut deserializer);
    match parsed {
        Ok(UniqueKeyObject(Ok(map))) => {
            deserializer.end().map_err(|_| ObjectDefect::Invalid)?;
            Ok(map)
        }
        Ok(UniqueKeyObject(Err(name))) => Err(ObjectDefect::Duplicate(name)),
        Err(_) => Err(ObjectDefect::Invalid),
    }
}

/// A JSON object; `Err(name)` names the first repeated member.
struct UniqueKeyObject(Result<Map<String, Value>, String>);

impl<'de> Deserialize<'de> for UniqueKeyObject {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ObjectVisitor;
        impl<'de> Visitor<'de> for ObjectVisitor {
            type Value = UniqueKeyObject;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Self::Value, A::Error> {
                let mut map = Map::new();
                let mut duplicate = None;
                while let Some(name) = access.next_key::<String>()? {
                    let value: Value = access.next_value()?;
                    if map.contains_key(&name) {
                        duplicate.get_or_insert(name);
                    } else {
                        map.insert(name, value);
                    }
                }
                Ok(UniqueKeyObject(match duplicate {
                    Some(name) => Err(name),
                    None => Ok(map),
                }))
            }
        }
        deserializer.deserialize_map(ObjectVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_repeated_members_and_non_objects() {
        assert_eq!(
            parse_unique_object(br#"{"a":1,"b":2,"a":3}"#),
            Err(ObjectDefect::Duplicate("a".to_owned()))
        );
        assert_eq!(parse_unique_object(b"[1]"), Err(ObjectDefect::Invalid));
        assert_eq!(parse_unique_object(b"{} {}"), Err(ObjectDefect::Invalid));
        assert_eq!(
            parse_unique_object(br#"{"a":{"b":1}}"#).map(|m| m.len()),
            Ok(1)
        );
    }
}
