//! The local stack's stand-ins for AWS services, behind the same ports the functions use:
//! [`EmbeddedQueue`] (SQS) and [`SimulatorMailer`] (SES's mailbox simulator, with the SES
//! events it publishes). Only the local stack, tests and benchmarks link this crate; no
//! function does.

pub mod mail;
pub mod queue;
pub mod ses_events;

pub use mail::SimulatorMailer;
pub use queue::EmbeddedQueue;
pub use ses_events::{MailMeta, ses_event_json, sns_envelope};
