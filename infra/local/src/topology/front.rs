//! The local HTTP front: what API Gateway (HTTP API, payload 2.0) does on AWS. Each HTTP
//! request becomes the same `ApiGatewayV2httpRequest` event Lambda would receive (built,
//! then sent through JSON and back, as the Lambda runtime does) and goes to the same
//! `ingest` or `status` handler; the handler's response becomes the HTTP response.
//! Requests above API Gateway's 10 MB payload limit are refused the same way.

use aws_lambda_events::apigw::{ApiGatewayV2httpRequest, ApiGatewayV2httpResponse};
use aws_lambda_events::encodings::Body;
use axum::Router;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use floodgate_api::ApiError;
use floodgate_api::gateway::{self, MAX_REQUEST_BYTES};
use floodgate_ingest::Ingest;
use floodgate_status::Status;
use std::net::SocketAddr;
use std::sync::Arc;

/// Emulated instances of one function. Like Lambda, an instance serves one request at a
/// time, each with its own lanes; when every instance is busy a request waits for one
/// (up to `wait`), then gets a 429 as a throttled Lambda invocation would.
pub struct InstancePool<T> {
    free: tokio::sync::Mutex<Vec<Arc<T>>>,
    permits: tokio::sync::Semaphore,
    wait: std::time::Duration,
}

impl<T> InstancePool<T> {
    pub fn new(instances: Vec<Arc<T>>, wait: std::time::Duration) -> Self {
        InstancePool {
            permits: tokio::sync::Semaphore::new(instances.len()),
            free: tokio::sync::Mutex::new(instances),
            wait,
        }
    }

    /// One instance serving every request (tests, `cargo lambda`-like use).
    pub fn single(instance: Arc<T>) -> Self {
        Self::new(vec![instance], std::time::Duration::from_secs(30))
    }

    /// Runs `f` on a free instance, or answers `None` when none freed up in time.
    pub async fn with<R, F, Fut>(&self, f: F) -> Option<R>
    where
        F: FnOnce(Arc<T>) -> Fut,
        Fut: std::future::Future<Output = R>,
    {
        let permit = tokio::time::timeout(self.wait, self.permits.acquire())
            .await
            .ok()?
            .ok()?;
        let instance = self.free.lock().await.pop()?;
        let out = f(instance.clone()).await;
        self.free.lock().await.push(instance);
        drop(permit);
        Some(out)
    }
}

/// The two API functions behind the front.
#[derive(Clone)]
pub struct Front {
    pub ingest: Arc<InstancePool<Ingest>>,
    pub status: Arc<InstancePool<Status>>,
}

/// The paths API Gateway routes to `ingest` (everything else goes to `status`).
fn is_ingest_route(method: &Method, path: &str) -> bool {
    *method == Method::POST && matches!(path, "/v2/notifications/email" | "/v2/notifications/bulk")
}

pub fn router(front: Front) -> Router {
    Router::new().fallback(handle).with_state(front)
}

/// Serves the API on `listener` until the task is dropped or the listener fails.
pub async fn serve(
    listener: tokio::net::TcpListener,
    ingest: Arc<Ingest>,
    status: Arc<Status>,
) -> std::io::Result<()> {
    serve_pools(
        listener,
        Arc::new(InstancePool::single(ingest)),
        Arc::new(InstancePool::single(status)),
    )
    .await
}

/// Serves the API with a pool of instances per function (the local stack).
pub async fn serve_pools(
    listener: tokio::net::TcpListener,
    ingest: Arc<InstancePool<Ingest>>,
    status: Arc<InstancePool<Status>>,
) -> std::io::Result<()> {
    let app = router(Front { ingest, status });
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .await
}

fn to_http(r: ApiGatewayV2httpResponse) -> Response {
    let status = u16::try_from(r.status_code)
        .ok()
        .and_then(|s| StatusCode::from_u16(s).ok())
        .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body: Vec<u8> = match r.body {
        Some(Body::Text(t)) => t.into_bytes(),
        Some(Body::Binary(b)) => b,
        _ => Vec::new(),
    };
    let mut resp = (status, body).into_response();
    for (k, v) in &r.headers {
        resp.headers_mut().insert(k.clone(), v.clone());
    }
    resp
}

/// The event API Gateway would build for this request.
pub fn to_event(
    method: Method,
    path_and_query: &str,
    mut headers: axum::http::HeaderMap,
    body: &[u8],
    source_ip: Option<String>,
) -> Result<ApiGatewayV2httpRequest, ApiError> {
    // The event carries header values as text: one that is not (obs-text, control
    // bytes) is the client's error, not a failed conversion.
    if headers.values().any(|v| v.to_str().is_err()) {
        return Err(ApiError::bad_request(
            "Header values must be printable ASCII",
        ));
    }
    headers
        .entry("x-forwarded-proto")
        .or_insert(HeaderValue::from_static("http"));
    let (text, b64) = match std::str::from_utf8(body) {
        _ if body.is_empty() => (None, false),
        Ok(t) => (Some(t.to_string()), false),
        Err(_) => (
            Some(base64::engine::general_purpose::STANDARD.encode(body)),
            true,
        ),
    };
    let mut event = gateway::request(method, path_and_query, headers, text);
    event.is_base64_encoded = b64;
    event.request_context.http.source_ip = source_ip;
    // Through JSON and back, as Lambda delivers it: a field the handlers rely on that the
    // real event would not carry fails here too.
    let json = serde_json::to_value(&event).map_err(|_| ApiError::internal())?;
    serde_json::from_value(json).map_err(|_| ApiError::internal())
}

/// Where the front serves the API's OpenAPI document.
pub const OPENAPI_PATH: &str = "/openapi.yaml";

async fn handle(State(front): State<Front>, req: Request) -> Response {
    if req.method() == Method::GET && req.uri().path() == OPENAPI_PATH {
        let mut resp = floodgate_api::OPENAPI_YAML.into_response();
        resp.headers_mut().insert(
            axum::http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/yaml"),
        );
        return resp;
    }
    let (parts, body) = req.into_parts();
    let source_ip = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip().to_string());
    let bytes = match axum::body::to_bytes(body, MAX_REQUEST_BYTES).await {
        Ok(b) => b,
        Err(_) => {
            return to_http(
                ApiError::too_large(format!(
                    "Request body is larger than {MAX_REQUEST_BYTES} bytes"
                ))
                .into_response(),
            );
        }
    };
    let path_and_query = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/".into());
    let ingest_route = is_ingest_route(&parts.method, parts.uri.path());
    let event = match to_event(
        parts.method,
        &path_and_query,
        parts.headers,
        &bytes,
        source_ip,
    ) {
        Ok(e) => e,
        Err(e) => return to_http(e.into_response()),
    };
    let response = if ingest_route {
        front
            .ingest
            .with(|i| async move { i.handle(event).await })
            .await
    } else {
        front
            .status
            .with(|s| async move { s.handle(event).await })
            .await
    };
    match response {
        Some(r) => to_http(r),
        // Every instance busy past the wait: what a throttled Lambda invocation returns.
        None => to_http(
            ApiError::new(
                429,
                "TooManyRequestsError",
                "Exceeded rate limit: every function instance is busy",
            )
            .into_response(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_look_like_api_gateway_s() {
        let mut h = axum::http::HeaderMap::new();
        h.insert("host", HeaderValue::from_static("127.0.0.1:8080"));
        h.insert("authorization", HeaderValue::from_static("Bearer x"));
        let e = to_event(
            Method::GET,
            "/v2/notifications?status=sending",
            h,
            b"",
            Some("127.0.0.1".into()),
        )
        .unwrap();
        assert_eq!(e.raw_path.as_deref(), Some("/v2/notifications"));
        assert_eq!(e.raw_query_string.as_deref(), Some("status=sending"));
        assert_eq!(gateway::header(&e, "authorization"), Some("Bearer x"));
        assert_eq!(gateway::base_url(&e), "http://127.0.0.1:8080");
        assert_eq!(e.request_context.http.method, Method::GET);
        assert!(e.body.is_none());
        let e = to_event(
            Method::POST,
            "/v2/notifications/email",
            Default::default(),
            &[0xff, 0x00],
            None,
        )
        .unwrap();
        assert!(e.is_base64_encoded);
        assert_eq!(gateway::body_bytes(&e).unwrap(), vec![0xff, 0x00]);
        let mut h = axum::http::HeaderMap::new();
        h.insert(
            "idempotency-key",
            HeaderValue::from_bytes(b"\xd7\xf8").unwrap(),
        );
        let e = to_event(Method::POST, "/v2/notifications/email", h, b"{}", None).unwrap_err();
        assert_eq!((e.status, e.error), (400, "BadRequestError"));
        assert!(is_ingest_route(&Method::POST, "/v2/notifications/bulk"));
        assert!(!is_ingest_route(&Method::GET, "/v2/notifications/email"));
    }
}
