//! Putting notification ids on their process type's send queue: what `persist` does after
//! storing a batch, what the release of scheduled notifications does, and what maintenance
//! does for notifications whose send message was lost.

use crate::queue::{MAX_DELAY, OutgoingMessage, QueueLimits, QueueSender, send_messages};
use floodgate_core::schedule::RELEASE_WINDOW;
use floodgate_core::{Knobs, ProcessType, QueueName, pack_send};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;
use uuid::Uuid;

// A notification inside the release window must fit in one SQS delay.
const _: () = assert!(RELEASE_WINDOW.as_secs() <= MAX_DELAY.as_secs());

/// Sends the ids to their process types' send queues, visible at once: see
/// [`forward_to_send_delayed`].
pub async fn forward_to_send(
    port: &dyn QueueSender,
    limits: QueueLimits,
    knobs: &Knobs,
    ids: impl IntoIterator<Item = (Uuid, ProcessType)>,
) -> BTreeSet<Uuid> {
    forward_to_send_delayed(
        port,
        limits,
        knobs,
        ids.into_iter().map(|(id, p)| (id, p, Duration::ZERO)),
    )
    .await
}

/// Sends the ids to their process types' send queues, each message invisible for its ids'
/// delay (whole seconds, rounded up, so never before a scheduled time; at most SQS's 15
/// minutes), packed as the knobs say, all process types at once. Ids share a message only
/// with ids of the same process type and delay. Returns the ids that were not acknowledged
/// by the queue.
pub async fn forward_to_send_delayed(
    port: &dyn QueueSender,
    limits: QueueLimits,
    knobs: &Knobs,
    ids: impl IntoIterator<Item = (Uuid, ProcessType, Duration)>,
) -> BTreeSet<Uuid> {
    let mut groups: BTreeMap<(ProcessType, u64), Vec<Uuid>> = BTreeMap::new();
    for (id, process_type, delay) in ids {
        let seconds = delay.min(MAX_DELAY).as_millis().div_ceil(1000) as u64;
        groups.entry((process_type, seconds)).or_default().push(id);
    }
    let mut by_process_type: BTreeMap<ProcessType, Vec<(u64, Vec<Uuid>)>> = BTreeMap::new();
    for ((process_type, seconds), ids) in groups {
        by_process_type
            .entry(process_type)
            .or_default()
            .push((seconds, ids));
    }
    let sends = by_process_type.into_iter().map(|(process_type, groups)| async move {
        let per_message = knobs.send_ids_per_message(process_type);
        let mut envelopes = Vec::new();
        let mut messages = Vec::new();
        for (seconds, ids) in groups {
            for envelope in pack_send(process_type, &ids, per_message) {
                messages.push(OutgoingMessage {
                    delay: Duration::from_secs(seconds),
                    ..OutgoingMessage::now(envelope.encode())
                });
                envelopes.push(envelope);
            }
        }
        let results =
            send_messages(port, QueueName::Send(process_type), &messages, limits).await;
        let mut lost = BTreeSet::new();
        for (envelope, result) in envelopes.iter().zip(results) {
            if let Err(e) = result {
                tracing::warn!(error = %e, process_type = %process_type, notifications = envelope.notification_ids.len(),
                    "forward to send queue failed");
                lost.extend(envelope.notification_ids.iter().copied());
            }
        }
        lost
    });
    futures::future::join_all(sends)
        .await
        .into_iter()
        .flatten()
        .collect()
}
