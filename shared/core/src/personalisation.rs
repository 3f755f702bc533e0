//! A notification's personalisation on its way from `ingest` to the database.

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

/// Personalisation as the JSON object text `ingest` wrote, kept as it is. `persist` hands
/// that text to PostgreSQL (which parses `jsonb` itself), so the write path never builds a
/// map of it only to write it out again; on the persist path that was about half of the
/// decoding and most of the encoding. Always a JSON object: anything else is refused when
/// it is read.
#[derive(Clone, Serialize)]
#[serde(transparent)]
pub struct Personalisation(Box<RawValue>);

impl Personalisation {
    pub fn from_map(map: &Map<String, Value>) -> Self {
        // A map of JSON values always serialises; the fallback is never taken.
        serde_json::value::to_raw_value(map).map_or_else(|_| Self::default(), Personalisation)
    }

    /// The JSON text, as stored.
    pub fn as_json(&self) -> &str {
        self.0.get()
    }

    /// The text as a raw JSON value, which serialises verbatim.
    pub fn as_raw(&self) -> &RawValue {
        &self.0
    }

    /// Parsed into a map (for callers that need the values).
    pub fn to_map(&self) -> Result<Map<String, Value>, serde_json::Error> {
        serde_json::from_str(self.0.get())
    }
}

impl Default for Personalisation {
    fn default() -> Self {
        match RawValue::from_string("{}".to_owned()) {
            Ok(raw) => Personalisation(raw),
            Err(_) => unreachable!("{{}} is valid JSON"),
        }
    }
}

impl PartialEq for Personalisation {
    fn eq(&self, other: &Self) -> bool {
        self.0.get() == other.0.get()
    }
}

impl std::fmt::Debug for Personalisation {
    // Values may be personal data: say only how big it is.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Personalisation({} bytes)", self.0.get().len())
    }
}

impl<'de> Deserialize<'de> for Personalisation {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = Box::<RawValue>::deserialize(d)?;
        // RawValue holds one complete JSON value without leading whitespace: an object is
        // exactly a value that starts with a brace.
        if raw.get().starts_with('{') {
            Ok(Personalisation(raw))
        } else {
            Err(serde::de::Error::custom(
                "personalisation must be a JSON object",
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_map_round_trips_as_the_same_object() {
        let map = json!({"name": "Ada", "n": 3, "nested": {"a": [1, 2]}})
            .as_object()
            .cloned()
            .unwrap();
        let p = Personalisation::from_map(&map);
        assert_eq!(p.to_map().unwrap(), map);
        let text = serde_json::to_string(&json!({"p": p.as_raw()})).unwrap();
        assert_eq!(
            text,
            format!("{{\"p\":{}}}", p.as_json()),
            "serialised verbatim"
        );
        let back: Personalisation = serde_json::from_str(p.as_json()).unwrap();
        assert_eq!(back, p);
    }

    #[test]
    fn only_an_object_is_accepted() {
        for bad in ["[]", "\"x\"", "1", "null", "true"] {
            assert!(
                serde_json::from_str::<Personalisation>(bad).is_err(),
                "{bad} accepted"
            );
        }
        let ok: Personalisation = serde_json::from_str("  {\"a\": 1} ").unwrap();
        assert_eq!(ok.to_map().unwrap()["a"], 1);
        assert_eq!(Personalisation::default().as_json(), "{}");
    }

    #[test]
    fn debug_never_shows_the_values() {
        let p =
            Personalisation::from_map(json!({"name": "secret@example.com"}).as_object().unwrap());
        assert!(!format!("{p:?}").contains("secret"));
    }
}
