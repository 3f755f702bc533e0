//! The local stack's stand-ins for AWS services, behind the same ports the functions use:
//! [`EmbeddedQueue`] (SQS), [`SimulatorMailer`] (SES's mailbox simulator, with the SES
//! events it publishes) and [`EmbeddedLimitStore`] (the DynamoDB limit store). Only the local stack, tests and benchmarks link this crate; no
//! function does.

pub mod limits;
pub mod mail;
pub mod queue;
pub mod ses_events;

pub use limits::EmbeddedLimitStore;
pub use mail::SimulatorMailer;
pub use queue::EmbeddedQueue;
pub use ses_events::{MailMeta, ses_event_json, sns_envelope};
