//! The Notify error shape, built once at the edge from each library's error:
//! `{"status_code": 400, "errors": [{"error": "ValidationError", "message": "..."}]}`.

use floodgate_core::auth::AuthError;
use serde_json::{Map, Value, json};

/// An answer that is not a success, in Notify's words.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub status: u16,
    /// Notify's error class: `ValidationError`, `BadRequestError`, `AuthError`, ...
    pub error: &'static str,
    pub message: String,
    /// Further errors of the same class and status, listed after the first: Notify's schema
    /// validation reports every problem of a request at once.
    pub further: Vec<String>,
    /// Further top-level fields (the bulk endpoint's accepted rows). Clients that know only
    /// Notify read `status_code` and `errors` and ignore these.
    pub extra: Map<String, Value>,
    /// The methods the path allows, for a 405's `Allow` header (RFC 9110 requires it).
    pub allow: Option<&'static str>,
}

impl ApiError {
    pub fn new(status: u16, error: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            error,
            message: message.into(),
            further: Vec::new(),
            extra: Map::new(),
            allow: None,
        }
    }

    /// Every schema error of a request, in the order found, duplicates dropped (Notify's
    /// `unique_errors`). `None` when there are none.
    pub fn validation_all(messages: Vec<String>) -> Option<Self> {
        let mut unique: Vec<String> = Vec::with_capacity(messages.len());
        for m in messages {
            if !unique.contains(&m) {
                unique.push(m);
            }
        }
        let mut it = unique.into_iter();
        let first = it.next()?;
        let mut e = Self::validation(first);
        e.further = it.collect();
        Some(e)
    }

    /// Every message of this answer, first to last.
    pub fn messages(&self) -> Vec<&str> {
        std::iter::once(self.message.as_str())
            .chain(self.further.iter().map(String::as_str))
            .collect()
    }

    pub fn validation(message: impl Into<String>) -> Self {
        Self::new(400, "ValidationError", message)
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequestError", message)
    }

    pub fn auth(e: &AuthError) -> Self {
        Self::new(e.status_code(), "AuthError", e.to_string())
    }

    /// Notify's answer for an id it does not have.
    pub fn no_result() -> Self {
        Self::new(404, "NoResultFound", "No result found")
    }

    /// A path no endpoint serves. Notify answers these from Flask's app-level handler,
    /// `{"result": "error", "message": <werkzeug's description>}`; both shapes are given, so
    /// clients that read either find the message.
    pub fn route_not_found() -> Self {
        const WERKZEUG: &str = "The requested URL was not found on the server. If you entered the URL manually please check your spelling and try again.";
        Self::new(404, "NotFoundError", WERKZEUG)
            .with_extra("result", json!("error"))
            .with_extra("message", json!(WERKZEUG))
    }

    /// A method the path does not serve; `allow` lists the ones it does.
    pub fn method_not_allowed(allow: &'static str) -> Self {
        let mut e = Self::new(
            405,
            "MethodNotAllowedError",
            "The method is not allowed for the requested URL.",
        );
        e.allow = Some(allow);
        e
    }

    pub fn too_large(message: impl Into<String>) -> Self {
        Self::new(413, "RequestEntityTooLargeError", message)
    }

    /// A dependency (queue, database) is down: retry later. Never used for a request that
    /// was (even partly) accepted without saying so.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(503, "ServiceUnavailableError", message)
    }

    pub fn internal() -> Self {
        Self::new(500, "InternalServerError", "Internal server error")
    }

    pub fn with_extra(mut self, key: &str, value: Value) -> Self {
        self.extra.insert(key.to_string(), value);
        self
    }

    pub fn body(&self) -> Value {
        let mut body = Map::new();
        body.insert("status_code".into(), json!(self.status));
        let errors: Vec<Value> = self
            .messages()
            .into_iter()
            .map(|m| json!({"error": self.error, "message": m}))
            .collect();
        body.insert("errors".into(), Value::Array(errors));
        for (k, v) in &self.extra {
            body.insert(k.clone(), v.clone());
        }
        Value::Object(body)
    }
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        ApiError::auth(&e)
    }
}

/// Maps a database failure at the edge: an outage is a 503 the client may retry; anything
/// else is our bug (500). The detail goes to the log, never to the client.
pub fn from_db(e: &floodgate_db::DbError) -> ApiError {
    if e.is_unavailable() {
        tracing::warn!(error = %e, "database unavailable");
        ApiError::unavailable(
            "Service temporarily unavailable: the database cannot be reached, please retry",
        )
    } else {
        tracing::error!(error = %e, "database refused a statement");
        ApiError::internal()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shape_is_notify_s() {
        let e = ApiError::validation("email_address Not a valid email address");
        assert_eq!(
            e.body(),
            json!({"status_code": 400, "errors": [{"error": "ValidationError",
                "message": "email_address Not a valid email address"}]})
        );
        let e = ApiError::auth(&AuthError::NoToken);
        assert_eq!(e.status, 401);
        assert_eq!(e.body()["errors"][0]["error"], "AuthError");
        let e = ApiError::unavailable("x").with_extra("job_id", json!("j"));
        assert_eq!(e.body()["job_id"], "j");
        assert_eq!(e.body()["status_code"], 503);
    }

    #[test]
    fn every_schema_error_is_listed_once() {
        assert!(ApiError::validation_all(vec![]).is_none());
        let e = ApiError::validation_all(vec![
            "template_id is not a valid UUID".into(),
            "email_address is a required property".into(),
            "template_id is not a valid UUID".into(),
        ])
        .unwrap();
        assert_eq!(
            e.body(),
            json!({"status_code": 400, "errors": [
                {"error": "ValidationError", "message": "template_id is not a valid UUID"},
                {"error": "ValidationError", "message": "email_address is a required property"},
            ]})
        );
    }
}
