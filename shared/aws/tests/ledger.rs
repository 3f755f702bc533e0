//! The batch ledger against the embedded queue (SQS's semantics, in process).
use aws_lambda_events::event::sqs::SqsMessage;
use floodgate_aws::ledger::*;
use floodgate_aws::queue::{Queue, QueueLimits};
use floodgate_core::{ProcessType, QueueName};
use floodgate_emulators::EmbeddedQueue;
use std::collections::HashMap;
use std::time::Duration;
use std::time::{SystemTime, UNIX_EPOCH};

/// The batch's messages, in order.
fn msgs(l: &Ledger) -> Vec<Msg> {
    l.messages().map(|(m, _)| m).collect()
}

fn now_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

const Q: QueueName = QueueName::Intake(ProcessType::Normal);

fn record(id: Option<&str>, body: &str, sent_millis: i64) -> SqsMessage {
    let mut r = SqsMessage::default();
    r.message_id = id.map(str::to_string);
    r.body = Some(body.to_string());
    r.attributes = HashMap::from([("SentTimestamp".to_string(), sent_millis.to_string())]);
    r
}

fn policy() -> DeferPolicy {
    DeferPolicy {
        initial_delay: Duration::from_secs(10),
        max_delay: Duration::from_secs(300),
        retention: Duration::from_secs(3600),
    }
}

#[tokio::test]
async fn failed_deferred_and_done_messages_are_answered_apart() {
    let now = now_millis();
    let queue = EmbeddedQueue::uniform(Duration::from_secs(30), 5);
    let mut l = Ledger::new(
        vec![
            record(Some("a"), "A", now),
            record(Some("b"), "B", now),
            record(Some("c"), "C", now),
        ],
        policy(),
    );
    let ms: Vec<Msg> = l.messages().map(|(m, _)| m).collect();
    l.fail(ms[0]);
    l.defer(Q, [&ms[1]]);
    let (resp, out) = l.finish(&queue, QueueLimits::default()).await.unwrap();
    let ids: Vec<_> = resp
        .batch_item_failures
        .iter()
        .map(|f| f.item_identifier.as_str())
        .collect();
    assert_eq!(ids, ["a"]);
    assert_eq!((out.deferred, out.enqueued), (1, 1));
    let stats = queue.stats(Q).await.unwrap();
    assert_eq!((stats.visible, stats.delayed), (0, 1), "{stats:?}");
}

#[tokio::test]
async fn deferral_carries_its_count_and_first_send_time() {
    let first = now_millis() - 5_000;
    let queue = EmbeddedQueue::uniform(Duration::from_secs(30), 5);
    let p = DeferPolicy {
        initial_delay: Duration::from_millis(20),
        max_delay: Duration::from_millis(50),
        retention: Duration::from_secs(60),
    };
    let mut l = Ledger::new(vec![record(Some("a"), "A", first)], p);
    let m = msgs(&l);
    l.defer(Q, [&m[0]]);
    l.finish(&queue, QueueLimits::default()).await.unwrap();
    let got = queue.receive(Q, 10, Duration::from_secs(2)).await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].receive_count, 1, "a deferral starts a fresh message");
    let d = got[0].deferral.expect("deferral attributes");
    assert_eq!((d.count, d.first_sent_millis), (1, first));
}

#[tokio::test]
async fn work_past_the_retention_fails_instead_of_deferring() {
    let queue = EmbeddedQueue::uniform(Duration::from_secs(30), 5);
    let old = now_millis() - 7_200_000;
    let mut l = Ledger::new(vec![record(Some("a"), "A", old)], policy());
    let m = msgs(&l);
    l.defer(Q, [&m[0]]);
    let (resp, out) = l.finish(&queue, QueueLimits::default()).await.unwrap();
    assert_eq!(resp.batch_item_failures.len(), 1);
    assert_eq!(out.deferred, 0);
    assert_eq!(queue.stats(Q).await.unwrap().delayed, 0);
}

#[tokio::test]
async fn a_deferral_that_cannot_be_enqueued_fails_its_sources() {
    let queue = EmbeddedQueue::uniform(Duration::from_secs(30), 5);
    queue.set_unavailable(true);
    let mut l = Ledger::new(
        vec![
            record(Some("a"), "A", now_millis()),
            record(Some("b"), "B", now_millis()),
        ],
        policy(),
    );
    let m = msgs(&l);
    l.replace(&m, Q, vec![("AB".into(), Duration::ZERO)], false);
    let (resp, out) = l.finish(&queue, QueueLimits::default()).await.unwrap();
    assert_eq!(resp.batch_item_failures.len(), 2);
    assert_eq!(out.enqueued, 0);
}

#[tokio::test]
async fn a_failed_record_without_an_id_fails_the_invocation() {
    let queue = EmbeddedQueue::uniform(Duration::from_secs(30), 5);
    let mut l = Ledger::new(vec![record(None, "A", now_millis())], policy());
    let m = msgs(&l);
    l.fail(m[0]);
    assert_eq!(
        l.finish(&queue, QueueLimits::default()).await.unwrap_err(),
        UnidentifiedRecord
    );
}
