//! Service callbacks end to end on the real services: `send` and `receipts` put callbacks on
//! the callbacks queue from the statements that set final statuses, and `callbacks`
//! delivers them to a loopback receiver (`floodgate_local::demo::receiver`) that plays
//! well-behaved and failing clients. Payloads and retry rules are GOV.UK Notify's
//! (alphagov/notifications-tech-docs, source/documentation/_callbacks.md).

use floodgate_aws::{Queue, ReceivedMessage};
use floodgate_callbacks::{Callbacks, CallbacksReport};
use floodgate_core::callback::{CALLBACK_VERSION, CallbackJob, CallbackKind};
use floodgate_core::envelope::KeyType;
use floodgate_core::{IntakeNotification, Knobs, ProcessType, QueueName, pack_intake};
use floodgate_e2e::*;
use floodgate_emulators::{EmbeddedQueue, SimulatorMailer};
use floodgate_local::demo::receiver::CallbackReceiver;
use floodgate_local::topology::esm::to_event;
use floodgate_persist::Persist;
use floodgate_receipts::Receipts;
use floodgate_send::{SendConfig, Sender};
use serde_json::Value;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};
use uuid::Uuid;

// Long enough that its sealed form spans more than one line of PostgreSQL base64.
const TOKEN: &str = "client-bearer-token-1234-0123456789-abcdefghij-0123456789-abcdefghij";

fn knobs() -> Arc<Knobs> {
    Arc::new(Knobs::embedded())
}

async fn take(queue: &EmbeddedQueue, name: QueueName, wait: Duration) -> Vec<ReceivedMessage> {
    let mut out = Vec::new();
    let deadline = Instant::now() + wait;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let got = queue
            .receive(name, 10, left.min(Duration::from_millis(200)))
            .await
            .unwrap();
        if got.is_empty() && (!out.is_empty() || left.is_zero()) {
            return out;
        }
        out.extend(got);
    }
}

/// Runs `callbacks` over the callbacks queue until it is empty (deferred retries
/// included); returns the summed reports.
async fn drain(callbacks: &Callbacks, queue: &EmbeddedQueue, limit: Duration) -> CallbacksReport {
    let mut total = CallbacksReport::default();
    let started = Instant::now();
    loop {
        let msgs = take(queue, QueueName::Callbacks, Duration::from_millis(300)).await;
        if msgs.is_empty() {
            let s = queue.stats(QueueName::Callbacks).await.unwrap();
            if s.visible + s.in_flight + s.delayed == 0 {
                return total;
            }
            assert!(started.elapsed() < limit, "callbacks not drained: {s:?}");
            continue;
        }
        let (resp, r) = callbacks
            .handle(to_event(QueueName::Callbacks, &msgs))
            .await
            .unwrap();
        assert!(resp.batch_item_failures.is_empty(), "{resp:?}");
        let handles: Vec<String> = msgs.iter().map(|m| m.receipt_handle.clone()).collect();
        queue
            .delete_batch(QueueName::Callbacks, &handles)
            .await
            .unwrap();
        total.delivered += r.delivered;
        total.refused += r.refused;
        total.retried += r.retried;
        total.failed += r.failed;
        total.suspended += r.suspended;
        total.suspensions += r.suspensions;
    }
}

fn job(f: &ServiceFixture, url: String, n: u128) -> String {
    CallbackJob {
        v: CALLBACK_VERSION,
        kind: CallbackKind::DeliveryStatus,
        service_id: f.service_id,
        notification_id: Uuid::from_u128(n),
        url,
        sealed_token: base64_seal(f, TOKEN),
        payload: serde_json::json!({"id": Uuid::from_u128(n), "status": "delivered"}),
    }
    .encode()
}

fn base64_seal(f: &ServiceFixture, token: &str) -> String {
    use base64::Engine;
    let sealed = f.secrets.seal(f.service_id, token).unwrap();
    base64::engine::general_purpose::STANDARD.encode(sealed)
}

/// Callbacks scaled 1,000×: the 5-minute retry delay is 0.3 s (the 5 s request timeout
/// is not scaled).
fn fast_callbacks(queue: Arc<EmbeddedQueue>, f: &ServiceFixture) -> Callbacks {
    Callbacks::new(queue, f.secrets.clone(), &Knobs::embedded(), true)
        .unwrap()
        .with_time_scale(1_000.0)
}

fn keys(v: &Value) -> BTreeSet<&str> {
    v.as_object()
        .map(|o| o.keys().map(String::as_str).collect())
        .unwrap_or_default()
}

fn is_notify_time(v: &Value) -> bool {
    let s = v.as_str().unwrap_or("");
    s.len() == 27 && s.ends_with('Z') && s.as_bytes()[10] == b'T' && s.as_bytes()[19] == b'.'
}

#[tokio::test]
async fn final_statuses_and_a_complaint_reach_the_client_with_notify_s_payload_and_the_token() {
    let stack = shared_stack().await;
    let f = service_fixture(&stack, ProcessType::Priority).await;
    let receiver = CallbackReceiver::start(0.0).await.unwrap();
    for (kind, path) in [
        (CallbackKind::DeliveryStatus, "/ok/status"),
        (CallbackKind::Complaint, "/ok/complaints"),
    ] {
        floodgate_admin::set_callback(
            &f.writer,
            &f.secrets,
            f.service_id,
            kind,
            &receiver.url(path),
            TOKEN,
            true,
        )
        .await
        .unwrap();
    }
    // Loopback http is refused unless the deployment allows it.
    let refused = floodgate_admin::set_callback(
        &f.writer,
        &f.secrets,
        f.service_id,
        CallbackKind::Complaint,
        &receiver.url("/ok/x"),
        TOKEN,
        false,
    )
    .await;
    assert!(refused.is_err());

    let queue = Arc::new(EmbeddedQueue::uniform(Duration::from_secs(30), 5));
    let process_type = ProcessType::Priority;
    let mut live = notification(f.service_id, process_type, 0);
    live.template_id = f.template_id;
    live.email_address = "complaint@simulator.amazonses.com".into();
    live.reference = Some("ref-live".into());
    let mut test_key = notification(f.service_id, process_type, 1);
    test_key.template_id = f.template_id;
    test_key.email_address = "success@simulator.amazonses.com".into();
    test_key.key_type = KeyType::Test;
    test_key.reference = None;
    let batch: Vec<IntakeNotification> = vec![live.clone(), test_key.clone()];
    let persist = Persist::new(f.writer.clone(), queue.clone(), knobs());
    let (resp, _) = persist
        .handle(sqs_event(&pack_intake(&batch, 262_144).unwrap()))
        .await
        .unwrap();
    assert!(resp.batch_item_failures.is_empty());

    // send: the live one goes to the simulator; the test-key one gets its final status in
    // the settle, which puts its callback on the queue.
    let sim = SimulatorMailer::new(queue.clone());
    let send = Sender::new(
        f.writer.clone(),
        Arc::new(sim.clone()),
        queue.clone(),
        knobs(),
        SendConfig {
            // Not the 14/s Terraform ships: callbacks are about what a final status emits, so the batch sends at once. The shipped rate is tested in
            // delivery.rs (`at_the_shipped_14_per_second_the_shared_budget_...`).
            account_rate: 100.0,
            rate_per_second: 100.0,
            max_in_flight: 4,
            throttle_retries: 0,
        },
    );
    let msgs = take(
        &queue,
        QueueName::Send(process_type),
        Duration::from_secs(2),
    )
    .await;
    let (_, report) = send
        .handle(
            to_event(QueueName::Send(process_type), &msgs),
            Instant::now() + Duration::from_secs(10),
        )
        .await
        .unwrap();
    assert_eq!((report.sent, report.simulated, report.callbacks), (1, 1, 1));
    sim.settled().await;

    // receipts: Send, Delivery and Complaint events of the live one.
    let receipts = Receipts::new(f.writer.clone(), queue.clone(), &Knobs::embedded());
    let events = take(&queue, QueueName::Receipts, Duration::from_secs(2)).await;
    assert_eq!(events.len(), 3);
    let (resp, report) = receipts
        .handle(to_event(QueueName::Receipts, &events))
        .await
        .unwrap();
    assert!(resp.batch_item_failures.is_empty(), "{resp:?}");
    assert_eq!(report.callbacks, 2, "a delivery status and a complaint");

    let callbacks = fast_callbacks(queue.clone(), &f);
    let r = drain(&callbacks, &queue, Duration::from_secs(20)).await;
    assert_eq!(r.delivered, 3, "{r:?}");

    let statuses = receiver.received("/ok/status");
    assert_eq!(statuses.len(), 2);
    for got in &statuses {
        assert_eq!(
            got.authorization.as_deref(),
            Some(&*format!("Bearer {TOKEN}"))
        );
        assert_eq!(
            keys(&got.body),
            BTreeSet::from([
                "id",
                "reference",
                "to",
                "status",
                "created_at",
                "completed_at",
                "sent_at",
                "notification_type",
                "template_id",
                "template_version",
            ])
        );
        assert_eq!(got.body["status"], "delivered");
        assert_eq!(got.body["notification_type"], "email");
        assert_eq!(got.body["template_id"], f.template_id.to_string());
        assert_eq!(got.body["template_version"], 1, "a number, as in Notify");
        for k in ["created_at", "completed_at", "sent_at"] {
            assert!(is_notify_time(&got.body[k]), "{k}: {}", got.body[k]);
        }
    }
    let by_id = |id: Uuid| {
        statuses
            .iter()
            .find(|r| r.body["id"] == id.to_string())
            .unwrap_or_else(|| panic!("no callback for {id}"))
    };
    assert_eq!(by_id(live.id).body["reference"], "ref-live");
    assert_eq!(by_id(live.id).body["to"], live.email_address);
    assert_eq!(by_id(test_key.id).body["reference"], Value::Null);
    assert_eq!(by_id(test_key.id).body["to"], test_key.email_address);

    let complaints = receiver.received("/ok/complaints");
    assert_eq!(complaints.len(), 1);
    let c = &complaints[0];
    assert_eq!(
        c.authorization.as_deref(),
        Some(&*format!("Bearer {TOKEN}"))
    );
    assert_eq!(
        keys(&c.body),
        BTreeSet::from([
            "notification_id",
            "complaint_id",
            "reference",
            "to",
            "complaint_date"
        ])
    );
    assert_eq!(c.body["notification_id"], live.id.to_string());
    assert_eq!(c.body["reference"], "ref-live");
    assert_eq!(c.body["to"], live.email_address);
    assert!(is_notify_time(&c.body["complaint_date"]));
    receiver.stop();
}

#[tokio::test]
async fn only_5xx_429_and_network_errors_are_retried_and_only_up_to_the_limit() {
    let stack = shared_stack().await;
    let f = service_fixture(&stack, ProcessType::Normal).await;
    let receiver = CallbackReceiver::start(0.0).await.unwrap();
    let queue = Arc::new(EmbeddedQueue::uniform(Duration::from_secs(30), 5));
    let bodies = vec![
        job(&f, receiver.url("/flaky/2/a"), 1),
        job(&f, receiver.url("/bad/b"), 2),
        job(&f, receiver.url("/down/c"), 3),
        // Nothing listens on port 9 of loopback: a connection error.
        job(&f, "http://127.0.0.1:9/refused".into(), 4),
    ];
    floodgate_aws::send_all(
        queue.as_ref(),
        QueueName::Callbacks,
        &bodies,
        Default::default(),
    )
    .await;
    let callbacks = fast_callbacks(queue.clone(), &f);
    let r = drain(&callbacks, &queue, Duration::from_secs(60)).await;
    let max_retries = Knobs::embedded().callbacks.max_retries as usize;
    assert_eq!(
        receiver.received("/flaky/2/a").len(),
        3,
        "500, 500, then 200"
    );
    assert_eq!(receiver.received("/bad/b").len(), 1, "a 4xx is final");
    assert_eq!(
        receiver.received("/down/c").len(),
        1 + max_retries,
        "the first call and every retry, then no more"
    );
    assert_eq!(r.delivered, 1);
    assert_eq!(r.refused, 1);
    assert_eq!(
        r.failed, 2,
        "the down endpoint and the refused connection: {r:?}"
    );
    assert_eq!(r.retried, 2 + 2 * max_retries);
    assert!(queue.dead_letters(QueueName::Callbacks).is_empty());
    receiver.stop();
}

#[tokio::test]
async fn a_hanging_endpoint_does_not_delay_another_service_s_callbacks() {
    let stack = shared_stack().await;
    let slow = service_fixture(&stack, ProcessType::Normal).await;
    let fine = service_fixture(&stack, ProcessType::Normal).await;
    let receiver = CallbackReceiver::start(0.0).await.unwrap();
    let queue = Arc::new(EmbeddedQueue::uniform(Duration::from_secs(30), 5));
    // The callbacks function needs one key for both services' tokens.
    let secrets = slow.secrets.clone();
    let reseal = |f: &ServiceFixture, path: &str, n: u128| {
        use base64::Engine;
        CallbackJob {
            v: CALLBACK_VERSION,
            kind: CallbackKind::DeliveryStatus,
            service_id: f.service_id,
            notification_id: Uuid::from_u128(n),
            url: receiver.url(path),
            sealed_token: base64::engine::general_purpose::STANDARD
                .encode(secrets.seal(f.service_id, TOKEN).unwrap()),
            payload: serde_json::json!({"n": n}),
        }
        .encode()
    };
    let measure = |bodies: Vec<String>| {
        let queue = queue.clone();
        let callbacks =
            Callbacks::new(queue.clone(), secrets.clone(), &Knobs::embedded(), true).unwrap();
        async move {
            let msgs: Vec<ReceivedMessage> = {
                floodgate_aws::send_all(
                    queue.as_ref(),
                    QueueName::Callbacks,
                    &bodies,
                    Default::default(),
                )
                .await;
                take(&queue, QueueName::Callbacks, Duration::from_secs(2)).await
            };
            let started = Instant::now();
            let (_, report) = callbacks
                .handle(to_event(QueueName::Callbacks, &msgs))
                .await
                .unwrap();
            (started, report)
        }
    };
    // Baseline: the fine service alone.
    let (t0, r) = measure((0..5).map(|i| reseal(&fine, "/ok/alone", i)).collect()).await;
    assert_eq!(r.delivered, 5);
    let alone = receiver
        .received("/ok/alone")
        .iter()
        .map(|x| x.at.duration_since(t0))
        .max()
        .unwrap();
    // The same with five callbacks to a hanging endpoint in the same batch.
    let mut mixed: Vec<String> = (0..5)
        .map(|i| reseal(&slow, "/hang/slow", 10 + i))
        .collect();
    mixed.extend((0..5).map(|i| reseal(&fine, "/ok/mixed", 20 + i)));
    let (t1, r) = measure(mixed).await;
    let with_hang = receiver
        .received("/ok/mixed")
        .iter()
        .map(|x| x.at.duration_since(t1))
        .max()
        .unwrap();
    println!(
        "last callback of the healthy service reached it after {alone:?} alone, \
         {with_hang:?} beside a hanging endpoint"
    );
    assert_eq!(r.delivered, 5);
    assert_eq!(
        r.retried, 5,
        "the hanging ones time out and are retried later"
    );
    assert!(
        with_hang < Duration::from_secs(1),
        "the healthy service waited for the hanging one: {with_hang:?}"
    );
    receiver.stop();
}

#[tokio::test]
async fn a_service_whose_endpoint_keeps_failing_is_suspended_without_spending_retries() {
    let stack = shared_stack().await;
    let f = service_fixture(&stack, ProcessType::Normal).await;
    let receiver = CallbackReceiver::start(0.0).await.unwrap();
    let queue = Arc::new(EmbeddedQueue::uniform(Duration::from_secs(30), 5));
    let threshold = Knobs::embedded().callbacks.suspend_after_failures as u128;
    let bodies: Vec<String> = (0..threshold)
        .map(|i| job(&f, receiver.url("/down/s"), i))
        .collect();
    let callbacks =
        Callbacks::new(queue.clone(), f.secrets.clone(), &Knobs::embedded(), true).unwrap();
    let mut first = Vec::new();
    for chunk in bodies.chunks(10) {
        floodgate_aws::send_all(
            queue.as_ref(),
            QueueName::Callbacks,
            chunk,
            Default::default(),
        )
        .await;
        let msgs = take(&queue, QueueName::Callbacks, Duration::from_secs(2)).await;
        let (_, r) = callbacks
            .handle(to_event(QueueName::Callbacks, &msgs))
            .await
            .unwrap();
        first.push(r);
    }
    assert_eq!(first.iter().map(|r| r.suspensions).sum::<usize>(), 1);
    let calls = receiver.received("/down/s").len();
    assert_eq!(calls as u128, threshold);
    // Another callback of the suspended service waits without a call and without a retry
    // counted; the retries of the failed ones wait too (5 minutes as shipped).
    floodgate_aws::send_all(
        queue.as_ref(),
        QueueName::Callbacks,
        &[job(&f, receiver.url("/down/s"), 999)],
        Default::default(),
    )
    .await;
    let msgs = take(&queue, QueueName::Callbacks, Duration::from_secs(2)).await;
    assert_eq!(msgs.len(), 1, "only the new one is visible");
    let (_, r) = callbacks
        .handle(to_event(QueueName::Callbacks, &msgs))
        .await
        .unwrap();
    assert_eq!((r.suspended, r.retried, r.failed), (1, 0, 0), "{r:?}");
    assert_eq!(
        receiver.received("/down/s").len(),
        calls,
        "no call while suspended"
    );
    let back = take(&queue, QueueName::Callbacks, Duration::ZERO).await;
    assert!(back.is_empty(), "it waits for the suspension to end");
    receiver.stop();
}
