//! The mail port and its SES adapter, [`SesMailer`]: SES v2 `SendEmail` with simple content,
//! a configuration set (whose event destination publishes the events `receipts` consumes)
//! and message tags carrying the notification id and process type. The local stack's
//! mailbox simulator implements the same port (`floodgate-emulators`).

use async_trait::async_trait;
use floodgate_core::ProcessType;
use floodgate_core::ses_event::{NOTIFICATION_ID_TAG, PROCESS_TYPE_TAG};
use uuid::Uuid;

/// The environment variable naming the SES configuration set.
pub const CONFIGURATION_SET_ENV: &str = "FLOODGATE_SES_CONFIGURATION_SET";

/// One email, rendered and ready for SES.
#[derive(Clone, PartialEq, Eq)]
pub struct Email {
    pub notification_id: Uuid,
    pub process_type: ProcessType,
    pub from: String,
    pub to: String,
    pub subject: String,
    pub html: String,
    pub text: String,
    /// Further message headers, name and value (RFC 8058's `List-Unsubscribe` pair).
    pub headers: Vec<(String, String)>,
    /// The message's Reply-To address.
    pub reply_to: Option<String>,
}

/// RFC 8058's two headers for a one-click unsubscribe URL (the URL was validated as an
/// https URI at the API, so it holds no `<`, `>`, whitespace or line break).
pub fn one_click_unsubscribe_headers(url: &str) -> Vec<(String, String)> {
    vec![
        ("List-Unsubscribe".to_string(), format!("<{url}>")),
        (
            "List-Unsubscribe-Post".to_string(),
            "List-Unsubscribe=One-Click".to_string(),
        ),
    ]
}

// By hand: addresses and content must never reach a log line.
impl std::fmt::Debug for Email {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Email")
            .field("notification_id", &self.notification_id)
            .field("process_type", &self.process_type)
            .finish_non_exhaustive()
    }
}

/// SES took the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    pub ses_message_id: String,
}

/// Why a send did not go through. The variant decides what `send` does with the claim, so
/// the line between them is "could SES have accepted it?".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MailError {
    /// The sending rate (or quota) was exceeded. SES did not accept it: retry later.
    #[error("throttled by SES: {0}")]
    Throttled(String),
    /// SES refused this message for what it is (rejected content, unverified sender, bad
    /// request). Retrying cannot help.
    #[error("rejected by SES: {0}")]
    Rejected(String),
    /// SES answered that it did not take it for now (paused sending), or the request never
    /// left (connection refused). Retry later.
    #[error("SES unavailable: {0}")]
    Unavailable(String),
    /// No answer (timeout, connection lost after the request went out) or a server error
    /// (5xx): SES may or may not have accepted it. Never retried, so never sent twice.
    #[error("SES outcome unknown: {0}")]
    Ambiguous(String),
}

/// The mail port.
#[async_trait]
pub trait Mailer: Send + Sync {
    async fn send(&self, email: &Email) -> Result<Accepted, MailError>;
}

/// Replaces every word containing `@` (an address) so an error text can be logged and
/// stored: SES puts identities and recipients in some messages.
pub fn redact_addresses(s: &str) -> String {
    s.split(' ')
        .map(|w| if w.contains('@') { "<address>" } else { w })
        .collect::<Vec<_>>()
        .join(" ")
}

// ---------------------------------------------------------------------------------------
// SesMailer
// ---------------------------------------------------------------------------------------

/// The mail port over Amazon SES v2.
/// Bounds on one SES call. A connection not made in time is certainly not a send (it is
/// retried later); an attempt that times out after the request went out is an unknown
/// outcome (never retried).
pub const SES_CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);
pub const SES_ATTEMPT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

#[derive(Clone, Debug)]
pub struct SesMailer {
    client: aws_sdk_sesv2::Client,
    configuration_set: Option<String>,
}

impl SesMailer {
    pub fn new(client: aws_sdk_sesv2::Client, configuration_set: Option<String>) -> Self {
        SesMailer {
            client,
            configuration_set,
        }
    }

    /// A client from the SDK configuration with the SDK's own retries switched off: the
    /// SDK would also retry timeouts and dropped connections, after which SES may already
    /// have accepted the message — a second send. Throttles are retried by `send` instead,
    /// within its rate budget.
    pub fn from_sdk(sdk: &aws_config::SdkConfig, configuration_set: Option<String>) -> Self {
        let timeouts = aws_config::timeout::TimeoutConfig::builder()
            .connect_timeout(SES_CONNECT_TIMEOUT)
            .operation_attempt_timeout(SES_ATTEMPT_TIMEOUT)
            .build();
        let config = aws_sdk_sesv2::config::Builder::from(sdk)
            .retry_config(aws_config::retry::RetryConfig::standard().with_max_attempts(1))
            .timeout_config(timeouts)
            .build();
        SesMailer::new(aws_sdk_sesv2::Client::from_conf(config), configuration_set)
    }

    /// [`SesMailer::from_sdk`] with the configuration set from
    /// `FLOODGATE_SES_CONFIGURATION_SET`.
    pub fn from_env(sdk: &aws_config::SdkConfig) -> Self {
        let set = std::env::var(CONFIGURATION_SET_ENV)
            .ok()
            .filter(|s| !s.is_empty());
        SesMailer::from_sdk(sdk, set)
    }

    pub fn client(&self) -> &aws_sdk_sesv2::Client {
        &self.client
    }
}

fn build_error(e: impl std::fmt::Display) -> MailError {
    MailError::Rejected(format!("request could not be built: {e}"))
}

/// Classifies an SDK error (see [`MailError`] for the line between the variants).
fn classify<E>(
    e: aws_sdk_sesv2::error::SdkError<E, aws_sdk_sesv2::config::http::HttpResponse>,
) -> MailError
where
    E: aws_sdk_sesv2::error::ProvideErrorMetadata + std::error::Error + 'static,
{
    use aws_sdk_sesv2::error::{DisplayErrorContext, SdkError};
    match &e {
        SdkError::ServiceError(se) => {
            let status = se.raw().status().as_u16();
            let code = se.err().code().unwrap_or("Unknown").to_string();
            let text = redact_addresses(&format!(
                "{code} ({status}): {}",
                se.err().message().unwrap_or("")
            ));
            match code.as_str() {
                "TooManyRequestsException"
                | "LimitExceededException"
                | "Throttling"
                | "ThrottlingException" => MailError::Throttled(text),
                // Account-wide conditions an operator fixes; the notification is fine.
                "SendingPausedException" | "AccountSuspendedException" => {
                    MailError::Unavailable(text)
                }
                _ if status == 429 => MailError::Throttled(text),
                // A server error after the request arrived: SES may have taken the message,
                // so sending it again could deliver it twice.
                _ if status >= 500 => MailError::Ambiguous(text),
                _ => MailError::Rejected(text),
            }
        }
        SdkError::ConstructionFailure(_) => build_error(DisplayErrorContext(&e)),
        SdkError::DispatchFailure(d) => {
            let text = redact_addresses(&format!("{}", DisplayErrorContext(&e)));
            // Refused before the request went out: certainly not sent.
            let connect = text.contains("Connection refused")
                || text.contains("(Connect)")
                || text.contains("dns error");
            if d.is_timeout() || !connect {
                MailError::Ambiguous(text)
            } else {
                MailError::Unavailable(text)
            }
        }
        _ => MailError::Ambiguous(redact_addresses(&format!("{}", DisplayErrorContext(&e)))),
    }
}

#[async_trait]
impl Mailer for SesMailer {
    async fn send(&self, email: &Email) -> Result<Accepted, MailError> {
        use aws_sdk_sesv2::types::{
            Body, Content, Destination, EmailContent, Message, MessageHeader, MessageTag,
        };
        let content = |data: &str| {
            Content::builder()
                .data(data)
                .charset("UTF-8")
                .build()
                .map_err(build_error)
        };
        let headers = email
            .headers
            .iter()
            .map(|(name, value)| {
                MessageHeader::builder()
                    .name(name)
                    .value(value)
                    .build()
                    .map_err(build_error)
            })
            .collect::<Result<Vec<_>, _>>()?;
        let message = Message::builder()
            .subject(content(&email.subject)?)
            .body(
                Body::builder()
                    .html(content(&email.html)?)
                    .text(content(&email.text)?)
                    .build(),
            )
            .set_headers((!headers.is_empty()).then_some(headers))
            .build();
        let tag = |name: &str, value: String| {
            MessageTag::builder()
                .name(name)
                .value(value)
                .build()
                .map_err(build_error)
        };
        let out = self
            .client
            .send_email()
            .from_email_address(&email.from)
            .destination(Destination::builder().to_addresses(&email.to).build())
            .set_reply_to_addresses(email.reply_to.clone().map(|r| vec![r]))
            .content(EmailContent::builder().simple(message).build())
            .email_tags(tag(NOTIFICATION_ID_TAG, email.notification_id.to_string())?)
            .email_tags(tag(
                PROCESS_TYPE_TAG,
                email.process_type.as_str().to_string(),
            )?)
            .set_configuration_set_name(self.configuration_set.clone())
            .send()
            .await
            .map_err(classify)?;
        match out.message_id() {
            Some(id) if !id.is_empty() => Ok(Accepted {
                ses_message_id: id.to_string(),
            }),
            // A 200 without a message id: SES took it, the id will come with the events.
            _ => Ok(Accepted {
                ses_message_id: String::new(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_redacted() {
        assert_eq!(
            redact_addresses("identities failed: a@b.c, x"),
            "identities failed: <address> x"
        );
        let e = Email {
            notification_id: Uuid::now_v7(),
            process_type: ProcessType::Normal,
            from: "noreply@example.com".into(),
            to: "secret@example.com".into(),
            subject: "s".into(),
            html: "<p>h</p>".into(),
            text: "h".into(),
            headers: one_click_unsubscribe_headers("https://example.com/u?secret"),
            reply_to: Some("secret-reply@example.com".into()),
        };
        assert!(!format!("{e:?}").contains("secret"));
        assert_eq!(
            e.headers,
            vec![
                (
                    "List-Unsubscribe".to_string(),
                    "<https://example.com/u?secret>".to_string()
                ),
                (
                    "List-Unsubscribe-Post".to_string(),
                    "List-Unsubscribe=One-Click".to_string()
                ),
            ]
        );
    }
}
