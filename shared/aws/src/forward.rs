//! Putting notification ids on their traffic lane's send queue: what `persist` does after
//! storing a batch, and what maintenance does for notifications whose send message was lost.

use crate::queue::{Queue, QueueLimits, send_all};
use floodgate_core::{Knobs, QueueName, TrafficLane, pack_send};
use std::collections::{BTreeMap, BTreeSet};
use uuid::Uuid;

/// Sends the ids to their lanes' send queues, packed as the knobs say, all lanes at once.
/// Returns the ids that were not acknowledged by the queue.
pub async fn forward_to_send(
    port: &dyn Queue,
    limits: QueueLimits,
    knobs: &Knobs,
    ids: impl IntoIterator<Item = (Uuid, TrafficLane)>,
) -> BTreeSet<Uuid> {
    let mut by_lane: BTreeMap<TrafficLane, Vec<Uuid>> = BTreeMap::new();
    for (id, lane) in ids {
        by_lane.entry(lane).or_default().push(id);
    }
    let sends = by_lane.into_iter().map(|(lane, ids)| async move {
        let envelopes = pack_send(lane, &ids, knobs.send_ids_per_message(lane));
        let bodies: Vec<String> = envelopes.iter().map(|e| e.encode()).collect();
        let results = send_all(port, QueueName::Send(lane), &bodies, limits).await;
        let mut lost = BTreeSet::new();
        for (envelope, result) in envelopes.iter().zip(results) {
            if let Err(e) = result {
                tracing::warn!(error = %e, lane = %lane, notifications = envelope.notification_ids.len(),
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
