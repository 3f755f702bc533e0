//! Callbacks to a service's own endpoints: what travels on the callbacks queue, and the
//! rules for a callback URL. The payloads are GOV.UK Notify's (delivery receipts:
//! `id, reference, to, status, created_at, completed_at, sent_at, notification_type,
//! template_id, template_version`; complaints: `notification_id, complaint_id, reference,
//! to, complaint_date`), built by the statement that sets the status.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub const CALLBACK_VERSION: u32 = 1;

/// Which callback: a final delivery status, or a complaint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CallbackKind {
    DeliveryStatus,
    Complaint,
}

impl CallbackKind {
    pub fn as_str(self) -> &'static str {
        match self {
            CallbackKind::DeliveryStatus => "delivery-status",
            CallbackKind::Complaint => "complaint",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [CallbackKind::DeliveryStatus, CallbackKind::Complaint]
            .into_iter()
            .find(|k| k.as_str() == s)
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("kind must be delivery-status or complaint, not {0:?}")]
pub struct UnknownCallbackKind(pub String);

impl std::str::FromStr for CallbackKind {
    type Err = UnknownCallbackKind;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        CallbackKind::parse(s).ok_or_else(|| UnknownCallbackKind(s.chars().take(40).collect()))
    }
}

/// One callback to make: where, with which (sealed) bearer token, and the JSON body. The
/// token stays sealed on the queue; only the callbacks function opens it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallbackJob {
    pub v: u32,
    pub kind: CallbackKind,
    pub service_id: Uuid,
    pub notification_id: Uuid,
    pub url: String,
    /// The bearer token sealed with the API key encryption key (base64), bound to the
    /// service id.
    pub sealed_token: String,
    pub payload: serde_json::Value,
}

// By hand: the payload holds an email address, the URL may hold a secret.
impl std::fmt::Debug for CallbackJob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallbackJob")
            .field("kind", &self.kind)
            .field("service_id", &self.service_id)
            .field("notification_id", &self.notification_id)
            .finish_non_exhaustive()
    }
}

impl CallbackJob {
    pub fn encode(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    pub fn decode(body: &str) -> Result<Self, String> {
        let job: CallbackJob = serde_json::from_str(body)
            .map_err(|e| format!("undecodable callback: line {}", e.line()))?;
        if job.v != CALLBACK_VERSION {
            return Err(format!("unsupported callback version {}", job.v));
        }
        Ok(job)
    }
}

/// A callback URL must be `https` (clients' endpoints get bearer tokens); plain `http`
/// only to the loopback interface, and only where the deployment allows it (the local
/// stack). Returns the reason it is refused.
pub fn check_callback_url(url: &str, allow_loopback_http: bool) -> Result<(), String> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| "the callback URL must be absolute (https://...)".to_string())?;
    let host = rest
        .split(['/', '?', '#'])
        .next()
        .unwrap_or("")
        .rsplit_once(':')
        .map_or(rest.split(['/', '?', '#']).next().unwrap_or(""), |(h, _)| h);
    if host.is_empty() || rest.contains(char::is_whitespace) || rest.contains('@') {
        return Err("the callback URL has no valid host".into());
    }
    match scheme {
        "https" => Ok(()),
        "http" if allow_loopback_http && matches!(host, "127.0.0.1" | "localhost" | "[::1]") => {
            Ok(())
        }
        _ => Err("the callback URL must use https".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_must_be_https_except_loopback_when_allowed() {
        assert!(check_callback_url("https://client.example/cb", false).is_ok());
        assert!(check_callback_url("https://client.example:8443/cb?x=1", false).is_ok());
        assert!(check_callback_url("http://client.example/cb", true).is_err());
        assert!(check_callback_url("http://127.0.0.1:9000/cb", false).is_err());
        assert!(check_callback_url("http://127.0.0.1:9000/cb", true).is_ok());
        assert!(check_callback_url("ftp://x/cb", true).is_err());
        assert!(check_callback_url("https://user:pw@client.example/", false).is_err());
        assert!(check_callback_url("client.example/cb", false).is_err());
        assert!(check_callback_url("https:///cb", false).is_err());
    }

    #[test]
    fn jobs_round_trip_and_hide_the_payload_in_debug() {
        let job = CallbackJob {
            v: CALLBACK_VERSION,
            kind: CallbackKind::Complaint,
            service_id: Uuid::from_u128(1),
            notification_id: Uuid::from_u128(2),
            url: "https://client.example/cb".into(),
            sealed_token: "c2VhbGVk".into(),
            payload: serde_json::json!({"to": "ada@example.com"}),
        };
        assert_eq!(CallbackJob::decode(&job.encode()).unwrap(), job);
        assert!(!format!("{job:?}").contains("ada@"));
        assert!(CallbackJob::decode("{}").is_err());
        assert_eq!(
            CallbackKind::parse("delivery-status"),
            Some(CallbackKind::DeliveryStatus)
        );
    }
}
