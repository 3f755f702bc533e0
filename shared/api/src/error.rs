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
    /// Further top-level fields (the bulk endpoint's accepted rows). Clients that know only
    /// Notify read `status_code` and `errors` and ignore these.
    pub extra: Map<String, Value>,
}

impl ApiError {
    pub fn new(status: u16, error: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            error,
            message: message.into(),
            extra: Map::new(),
        }
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

    pub fn route_not_found() -> Self {
        Self::new(
            404,
            "NotFoundError",
            "The requested URL was not found on the server.",
        )
    }

    pub fn method_not_allowed() -> Self {
        Self::new(
            405,
            "MethodNotAllowedError",
            "The method is not allowed for the requested URL.",
        )
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
        body.insert(
            "errors".into(),
            json!([{"error": self.error, "message": self.message}]),
        );
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
}
