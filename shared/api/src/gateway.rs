//! API Gateway HTTP API (payload 2.0) plumbing shared by `ingest`, `status` and the local
//! HTTP front: reading the request, writing JSON responses.

use crate::error::ApiError;
use aws_lambda_events::apigw::{ApiGatewayV2httpRequest, ApiGatewayV2httpResponse};
use aws_lambda_events::encodings::Body;
use aws_lambda_events::http::{HeaderMap, HeaderValue, Method};
use base64::Engine;
use serde_json::Value;

/// API Gateway's own payload limit; the local front enforces the same.
pub const MAX_REQUEST_BYTES: usize = 10 * 1024 * 1024;

pub fn method(req: &ApiGatewayV2httpRequest) -> &Method {
    &req.request_context.http.method
}

/// The request path without the stage prefix (a named stage appears in `rawPath`).
pub fn path(req: &ApiGatewayV2httpRequest) -> &str {
    let raw = req
        .raw_path
        .as_deref()
        .or(req.request_context.http.path.as_deref())
        .unwrap_or("/");
    match req.request_context.stage.as_deref() {
        Some(stage) if stage != "$default" && !stage.is_empty() => {
            let prefix_len = stage.len() + 1;
            if raw.len() > prefix_len
                && raw.starts_with('/')
                && raw[1..].starts_with(stage)
                && raw[prefix_len..].starts_with('/')
            {
                &raw[prefix_len..]
            } else {
                raw
            }
        }
        _ => raw,
    }
}

pub fn header<'a>(req: &'a ApiGatewayV2httpRequest, name: &str) -> Option<&'a str> {
    req.headers.get(name).and_then(|v| v.to_str().ok())
}

/// The body's bytes (API Gateway base64-encodes bodies it does not consider text).
pub fn body_bytes(req: &ApiGatewayV2httpRequest) -> Result<Vec<u8>, ApiError> {
    let Some(body) = req.body.as_deref() else {
        return Ok(Vec::new());
    };
    let bytes = if req.is_base64_encoded {
        base64::engine::general_purpose::STANDARD
            .decode(body)
            .map_err(|_| ApiError::bad_request("Invalid JSON supplied in POST data"))?
    } else {
        body.as_bytes().to_vec()
    };
    if bytes.len() > MAX_REQUEST_BYTES {
        return Err(ApiError::too_large(format!(
            "Request body is larger than {MAX_REQUEST_BYTES} bytes"
        )));
    }
    Ok(bytes)
}

/// The query string's pairs, decoded, repeats kept (from `rawQueryString`; the parsed map
/// joins repeated keys with commas).
pub fn query_pairs(req: &ApiGatewayV2httpRequest) -> Vec<(String, String)> {
    match req.raw_query_string.as_deref() {
        Some(q) if !q.is_empty() => form_urlencoded::parse(q.as_bytes())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect(),
        _ => req
            .query_string_parameters
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    }
}

/// `https://<domain>`: the base of the URIs the API hands out.
pub fn base_url(req: &ApiGatewayV2httpRequest) -> String {
    let scheme = header(req, "x-forwarded-proto").unwrap_or("https");
    let host = req
        .request_context
        .domain_name
        .as_deref()
        .or_else(|| header(req, "host"))
        .unwrap_or("localhost");
    format!("{scheme}://{host}")
}

pub fn json_response(status: u16, body: &Value) -> ApiGatewayV2httpResponse {
    let mut headers = HeaderMap::new();
    headers.insert("content-type", HeaderValue::from_static("application/json"));
    let mut r = ApiGatewayV2httpResponse::default();
    r.status_code = i64::from(status);
    r.headers = headers;
    r.body = Some(Body::Text(body.to_string()));
    r
}

// Here rather than in `error`, so the error type knows nothing of API Gateway.
impl ApiError {
    pub fn into_response(self) -> ApiGatewayV2httpResponse {
        let mut r = json_response(self.status, &self.body());
        if let Some(allow) = self.allow {
            r.headers.insert("allow", HeaderValue::from_static(allow));
        }
        r
    }
}

/// The response body as text (tests and the local front).
pub fn response_text(r: &ApiGatewayV2httpResponse) -> String {
    match &r.body {
        Some(Body::Text(t)) => t.clone(),
        Some(Body::Binary(b)) => String::from_utf8_lossy(b).into_owned(),
        _ => String::new(),
    }
}

/// Builds a request as API Gateway would (the local front, tests, the benchmark).
pub fn request(
    method: Method,
    path_and_query: &str,
    headers: HeaderMap,
    body: Option<String>,
) -> ApiGatewayV2httpRequest {
    let (path, query) = match path_and_query.split_once('?') {
        Some((p, q)) => (p, q),
        None => (path_and_query, ""),
    };
    let mut req = ApiGatewayV2httpRequest::default();
    req.version = Some("2.0".into());
    req.route_key = Some("$default".into());
    req.raw_path = Some(path.to_string());
    req.raw_query_string = Some(query.to_string());
    req.request_context.stage = Some("$default".into());
    req.request_context.route_key = Some("$default".into());
    req.request_context.domain_name = headers
        .get("host")
        .and_then(|h| h.to_str().ok())
        .map(str::to_string);
    req.request_context.http.method = method;
    req.request_context.http.path = Some(path.to_string());
    req.request_context.http.protocol = Some("HTTP/1.1".into());
    req.request_context.time_epoch = chrono::Utc::now().timestamp_millis();
    req.headers = headers;
    req.body = body;
    req
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_queries_and_bodies() {
        let mut h = HeaderMap::new();
        h.insert("host", HeaderValue::from_static("api.example.com"));
        let mut r = request(
            Method::GET,
            "/v2/notifications?status=delivered&status=sending&reference=a%20b",
            h,
            None,
        );
        assert_eq!(path(&r), "/v2/notifications");
        assert_eq!(
            query_pairs(&r),
            vec![
                ("status".to_string(), "delivered".to_string()),
                ("status".to_string(), "sending".to_string()),
                ("reference".to_string(), "a b".to_string()),
            ]
        );
        assert_eq!(base_url(&r), "https://api.example.com");
        r.request_context.stage = Some("live".into());
        r.raw_path = Some("/live/v2/notifications".into());
        assert_eq!(path(&r), "/v2/notifications");
        r.body = Some(base64::engine::general_purpose::STANDARD.encode("{}"));
        r.is_base64_encoded = true;
        assert_eq!(body_bytes(&r).unwrap(), b"{}");
        let resp = json_response(201, &serde_json::json!({"a": 1}));
        assert_eq!(resp.status_code, 201);
        assert_eq!(response_text(&resp), r#"{"a":1}"#);
    }
}
