//! Floodgate's domain: its words as plain types and pure functions, no I/O.
//!
//! - [`ProcessType`]: `priority` / `normal` / `bulk`, each with its own queues.
//! - [`IntakeNotification`] / [`IntakeEnvelope`]: what `ingest` puts on an intake queue.
//! - [`SendEnvelope`]: what `persist` forwards to a send queue.
//! - [`NotificationStatus`] and [`StatusTransition`]: the monotonic status rules (a status never moves backwards).
//! - [`Knobs`]: the knob values shared with Terraform (`infra/knobs.json`).
//! - [`keys`]: what a team or test key may send to and read.
//! - [`limits`]: rate and daily limits and idempotency keys, as rules over plain values.
//! - [`budget`]: the SES account's rate as clock-aligned windows every `send` instance shares.
//! - [`schedule`]: when a scheduled notification is put on its send queue.

pub mod auth;
pub mod budget;
pub mod callback;
pub mod envelope;
pub mod keys;
pub mod knobs;
pub mod limits;
pub mod personalisation;
pub mod process_type;
pub mod schedule;
pub mod ses_event;
pub mod status;
pub mod template;

pub use envelope::{
    EnvelopeError, IntakeEnvelope, IntakeNotification, JobHeader, KeyType, SendEnvelope,
    pack_intake, pack_send,
};
pub use knobs::Knobs;
pub use personalisation::Personalisation;
pub use process_type::{ProcessType, QueueName};
pub use status::{NotificationStatus, StatusTransition, transition};
pub use template::{RenderError, Rendered, Template, render};
