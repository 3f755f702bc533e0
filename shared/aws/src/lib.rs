//! The ports to AWS services and their adapters.
//!
//! - [`Queue`]: [`SqsQueue`] (aws-sdk-sqs; AWS or moto) and [`EmbeddedQueue`] (in-process,
//!   the same semantics and limits; the local stack's default, since moto's SQS slows to
//!   about one call a second at a few thousand queued messages and cannot carry a blast).

pub mod forward;
pub mod ledger;
pub mod mail;
pub mod queue;

pub use forward::forward_to_send;
pub use ledger::{Carriers, DeferPolicy, Ledger, LedgerOutcome, Msg, UnidentifiedRecord};
pub use queue::{
    Deferral, EmbeddedQueue, OutgoingMessage, Queue, QueueError, QueueLimits, QueueStats,
    ReceivedMessage, SqsQueue, send_all, send_messages,
};
