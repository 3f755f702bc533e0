//! The ports to AWS services and their AWS adapters: [`QueueSender`] (what functions use) and
//! [`Queue`] (consumers too) over [`SqsQueue`] (aws-sdk-sqs; AWS or moto), and
//! [`mail::Mailer`] over [`mail::SesMailer`], and [`LimitStore`] over [`DynamoLimitStore`].
//! The local stack's stand-ins implement the same ports in `floodgate-emulators`, which no
//! function links.

pub mod forward;
pub mod ledger;
pub mod limits;
pub mod mail;
pub mod queue;

pub use forward::{forward_to_send, forward_to_send_delayed};
pub use ledger::{Carriers, DeferPolicy, Ledger, LedgerOutcome, Msg, UnidentifiedRecord};
pub use limits::{Claim, DynamoLimitStore, IdempotencyRecord, LimitStore, LimitStoreError};
pub use queue::{
    Deferral, OutgoingMessage, Queue, QueueError, QueueLimits, QueueSender, QueueStats,
    ReceivedMessage, SqsQueue, send_all, send_messages,
};
