//! What PostgreSQL cannot store must be refused at the door: a notification accepted with
//! it would fail the batch insert of every notification packed beside it. `text` and
//! `jsonb` both refuse the NUL character (U+0000, `\u0000` in JSON); lone UTF-16 surrogates
//! (`\ud800`) never get this far, since the JSON parser refuses them as invalid JSON.

use floodgate_api::ApiError;
use serde_json::Value;

/// The first field (a dotted path of object keys; `[i]` for array items) whose key or
/// string value holds a NUL character, as a 400 `ValidationError`.
pub fn reject_unstorable(body: &Value) -> Result<(), ApiError> {
    match find_nul(body, &mut Vec::new()) {
        None => Ok(()),
        Some(path) => Err(ApiError::validation(format!(
            "{path} must not contain the NUL character (\\u0000)"
        ))),
    }
}

fn find_nul(v: &Value, path: &mut Vec<String>) -> Option<String> {
    let shown = |path: &[String]| {
        let p = path.join(".").replace(".[", "[");
        if p.is_empty() { "body".to_string() } else { p }
    };
    match v {
        Value::String(s) if s.contains('\0') => Some(shown(path)),
        Value::Object(m) => {
            for (k, item) in m {
                if k.contains('\0') {
                    return Some(format!("{} key", shown(path)));
                }
                // Keys are client input: show them only while short and printable.
                let key: String = k.chars().filter(|c| !c.is_control()).take(100).collect();
                path.push(key);
                let found = find_nul(item, path);
                path.pop();
                if found.is_some() {
                    return found;
                }
            }
            None
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                path.push(format!("[{i}]"));
                let found = find_nul(item, path);
                path.pop();
                if found.is_some() {
                    return found;
                }
            }
            None
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn message(v: Value) -> Option<String> {
        reject_unstorable(&v).err().map(|e| e.message)
    }

    #[test]
    fn nul_anywhere_is_named_by_its_field() {
        assert_eq!(
            message(json!({"reference": "ok", "personalisation": {"a": "b"}})),
            None
        );
        assert_eq!(
            message(json!({"reference": "a\u{0}b"})).as_deref(),
            Some("reference must not contain the NUL character (\\u0000)")
        );
        assert_eq!(
            message(json!({"personalisation": {"name": "x\u{0}"}})).as_deref(),
            Some("personalisation.name must not contain the NUL character (\\u0000)")
        );
        assert_eq!(
            message(json!({"rows": [["email address"], ["a@b.c\u{0}"]]})).as_deref(),
            Some("rows[1][0] must not contain the NUL character (\\u0000)")
        );
        assert_eq!(
            message(json!({"personalisation": {"k\u{0}": "v"}})).as_deref(),
            Some("personalisation key must not contain the NUL character (\\u0000)")
        );
    }

    #[test]
    fn lone_surrogates_do_not_parse() {
        assert!(serde_json::from_str::<Value>(r#"{"reference": "\ud800"}"#).is_err());
        assert!(serde_json::from_str::<Value>(r#"{"reference": "\udc00x"}"#).is_err());
        // A valid pair is fine.
        assert!(serde_json::from_str::<Value>(r#"{"reference": "\ud83d\ude00"}"#).is_ok());
    }
}
