//! A callback receiver on loopback, standing in for the clients' endpoints: it records every
//! callback (path, `Authorization` header, JSON body) and answers by the first segment of
//! the path, so one receiver plays well-behaved and failing clients at once:
//!
//! | path | answer |
//! |---|---|
//! | `/ok/...` | 200 (or 500 for a random `fail_fraction` of calls) |
//! | `/flaky/<n>/...` | 500 for the first `n` calls to that path, then 200 |
//! | `/bad/...` | 400 |
//! | `/down/...` | 500 |
//! | `/hang/...` | no answer for a minute |

use anyhow::Result;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One callback as the receiver got it.
#[derive(Debug, Clone)]
pub struct Received {
    pub path: String,
    /// What the receiver answered.
    pub status: u16,
    pub authorization: Option<String>,
    pub body: serde_json::Value,
    pub at: Instant,
}

#[derive(Default)]
struct ReceiverState {
    received: Mutex<Vec<Received>>,
    calls_by_path: Mutex<HashMap<String, u64>>,
    fail_fraction: f64,
}

pub struct CallbackReceiver {
    pub addr: SocketAddr,
    state: Arc<ReceiverState>,
    server: tokio::task::JoinHandle<()>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

async fn receive(
    State(state): State<Arc<ReceiverState>>,
    Path(path): Path<String>,
    headers: HeaderMap,
    body: String,
) -> StatusCode {
    let path = format!("/{path}");
    let calls = {
        let mut c = lock(&state.calls_by_path);
        let n = c.entry(path.clone()).or_default();
        *n += 1;
        *n
    };
    let first = path.split('/').nth(1).unwrap_or("");
    let answer = match first {
        "ok" if rand::random::<f64>() < state.fail_fraction => StatusCode::INTERNAL_SERVER_ERROR,
        "ok" => StatusCode::OK,
        "flaky" => {
            let n: u64 = path
                .split('/')
                .nth(2)
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
            if calls <= n {
                StatusCode::INTERNAL_SERVER_ERROR
            } else {
                StatusCode::OK
            }
        }
        "bad" => StatusCode::BAD_REQUEST,
        "hang" => {
            tokio::time::sleep(Duration::from_secs(60)).await;
            StatusCode::OK
        }
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    lock(&state.received).push(Received {
        path,
        status: answer.as_u16(),
        authorization: headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
        body: serde_json::from_str(&body).unwrap_or(serde_json::Value::Null),
        at: Instant::now(),
    });
    answer
}

impl CallbackReceiver {
    /// Starts on a free loopback port. `fail_fraction` of the calls to `/ok/...` get a 500.
    pub async fn start(fail_fraction: f64) -> Result<Self> {
        let state = Arc::new(ReceiverState {
            fail_fraction,
            ..Default::default()
        });
        let app = axum::Router::new()
            .route("/{*path}", axum::routing::post(receive))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(CallbackReceiver {
            addr,
            state,
            server,
        })
    }

    /// The URL of `path` (starting with `/ok/`, `/flaky/<n>/`, ...).
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Every callback received under `prefix`, answered or not.
    pub fn received(&self, prefix: &str) -> Vec<Received> {
        lock(&self.state.received)
            .iter()
            .filter(|r| r.path.starts_with(prefix))
            .cloned()
            .collect()
    }

    /// Callbacks under `prefix` the receiver accepted (2xx): distinct notifications, and
    /// repeats (at-least-once delivery: a callback whose acknowledgement was lost comes
    /// again), plus the calls it failed on purpose (each retried later).
    pub fn tally(&self, prefix: &str, id_field: &str) -> (usize, usize, usize) {
        let got = self.received(prefix);
        let ok: Vec<&Received> = got.iter().filter(|r| r.status < 300).collect();
        let distinct: std::collections::HashSet<String> =
            ok.iter().map(|r| r.body[id_field].to_string()).collect();
        let failed_on_purpose = got.len() - ok.len();
        (distinct.len(), ok.len() - distinct.len(), failed_on_purpose)
    }

    pub fn stop(self) {
        self.server.abort();
    }
}
