//! Putting notification ids on their process type's send queue: what `persist` does after
//! storing a batch, and what maintenance does for notifications whose send message was lost.

use crate::queue::{QueueLimits, QueueSender, send_all};
use floodgate_core::{Knobs, ProcessType, QueueName, pack_send};
use std::collections::{BTreeMap, BTreeSet};
use uuid::Uuid;

/// Sends the ids to their process types' send queues, packed as the knobs say, all process types at once.
/// Returns the ids that were not acknowledged by the queue.
pub async fn forward_to_send(
    port: &dyn QueueSender,
    limits: QueueLimits,
    knobs: &Knobs,
    ids: impl IntoIterator<Item = (Uuid, ProcessType)>,
) -> BTreeSet<Uuid> {
    let mut by_process_type: BTreeMap<ProcessType, Vec<Uuid>> = BTreeMap::new();
    for (id, process_type) in ids {
        by_process_type.entry(process_type).or_default().push(id);
    }
    let sends = by_process_type.into_iter().map(|(process_type, ids)| async move {
        let envelopes = pack_send(process_type, &ids, knobs.send_ids_per_message(process_type));
        let bodies: Vec<String> = envelopes.iter().map(|e| e.encode()).collect();
        let results = send_all(port, QueueName::Send(process_type), &bodies, limits).await;
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
