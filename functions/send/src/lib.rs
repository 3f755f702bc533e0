//! `send`: send queues → claim (one statement, writer lane) → SES, within a rate budget →
//! settle (one statement).
//!
//! Never sending the same notification twice because a message was redelivered rests on
//! the claim: only `created` rows become `sending`, atomically, before any SES call, so a
//! redelivered or duplicate message (or a concurrent instance) claims nothing and sends
//! nothing. The price is a crash window (see [`Sender`]) that a sweeper closes.
//!
//! An invocation claims only what its share of the SES rate can send before its deadline;
//! the other ids go back on the send queue as new messages, delayed to when the budget
//! will have room ("deferred"). Waiting never spends a receive: only a message that is
//! itself bad can reach the dead-letter queue. Per notification:
//!
//! | what happened | notification | its work |
//! |---|---|---|
//! | more ids than the budget can send before the deadline | not claimed | deferred |
//! | SES accepted | stays `sending`; SES message id and `sent_at` recorded | done |
//! | throttled after in-invocation retries | released to `created` | deferred with the claim token |
//! | SES rejected it (bad content, unverified sender…) | `technical-failure`, reason stored | done |
//! | no answer, or a 5xx (SES may have it) | stays `sending`, never retried; receipts or the sweeper settle it | done |
//! | test key (never given to SES) | the mailbox simulator's outcome for the address | done |
//! | the claim failed (database unavailable) | unchanged, or claimed if the commit's outcome is unknown | deferred with a growing delay, with the claim token |
//! | undecodable message | — | the message fails alone |

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use chrono::{DateTime, Utc};
use floodgate_aws::mail::{Email, MailError, Mailer, one_click_unsubscribe_headers};
use floodgate_aws::{
    Carriers, DeferPolicy, Ledger, LimitStore, QueueLimits, QueueSender, UnidentifiedRecord,
};
use floodgate_core::callback::CallbackJob;
use floodgate_core::envelope::{created_at_of, pack_send_claimed};
use floodgate_core::ses_event::SimulatedRecipient;
use floodgate_core::{
    KeyType, Knobs, NotificationStatus, ProcessType, QueueName, SendEnvelope, Template, render,
};
use floodgate_db::sending::{
    ClaimKey, Claimed, Settled, Settlement, claim_for_sending, retry_conflicts, settle_sends,
};
use floodgate_db::{DbError, WriterLane};
use futures::StreamExt;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use uuid::Uuid;

pub mod budget;
pub use budget::{Pace, SharedBudget};

/// Environment variables `send` reads (besides the writer lane's and the SES
/// configuration set's).
pub const ACCOUNT_RATE_ENV: &str = "FLOODGATE_SES_ACCOUNT_RATE";
pub const INSTANCE_RATE_ENV: &str = "FLOODGATE_SEND_RATE_PER_INSTANCE";
pub const MAX_IN_FLIGHT_ENV: &str = "FLOODGATE_SEND_MAX_IN_FLIGHT";
pub const THROTTLE_RETRIES_ENV: &str = "FLOODGATE_SEND_THROTTLE_RETRIES";

/// SES's default production sending rate (emails per second) for a new account.
const DEFAULT_ACCOUNT_RATE: f64 = 14.0;
/// Claim tokens one id may carry: each claim whose commit outcome was unknown adds one.
/// Past this the message fails instead (an outage that keeps cutting connections mid-
/// statement); the sweeper settles what stays claimed.
const MAX_CLAIM_TOKENS: usize = 4;

/// How fast and how wide one instance sends.
#[derive(Debug, Clone, PartialEq)]
pub struct SendConfig {
    /// The SES account's sending rate (emails/s), shared by every instance.
    pub account_rate: f64,
    /// This instance's even share: the account's rate ÷ the most `send` instances that
    /// can run at once, so all of them together stay within the account's rate. Paced at
    /// when the budget is not shared, or while its store does not answer.
    pub rate_per_second: f64,
    /// SES calls in flight at once (latency × rate needs a few; more only queues).
    pub max_in_flight: usize,
    /// Throttled calls retried within the invocation (with backoff, each retry taking a
    /// slot of the rate budget) before the notification is released to the queue.
    pub throttle_retries: u32,
}

/// The per-instance share of the account's rate.
pub fn per_instance_rate(account_rate: f64, max_concurrency: u32) -> f64 {
    account_rate / f64::from(max_concurrency.max(1))
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{var}={value:?} is not a positive number")]
pub struct ConfigError {
    pub var: &'static str,
    pub value: String,
}

impl SendConfig {
    /// From the environment: `FLOODGATE_SES_ACCOUNT_RATE` (default 14/s) divided by the
    /// knobs' maximum concurrency of `send`, unless `FLOODGATE_SEND_RATE_PER_INSTANCE` sets
    /// the share directly; `FLOODGATE_SEND_MAX_IN_FLIGHT` (default 16);
    /// `FLOODGATE_SEND_THROTTLE_RETRIES` (default 2).
    pub fn from_lookup(
        knobs: &Knobs,
        get: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let num = |var: &'static str| -> Result<Option<f64>, ConfigError> {
            match get(var) {
                None => Ok(None),
                Some(v) => match v.trim().parse::<f64>() {
                    Ok(x) if x > 0.0 && x.is_finite() => Ok(Some(x)),
                    _ => Err(ConfigError { var, value: v }),
                },
            }
        };
        let account = num(ACCOUNT_RATE_ENV)?.unwrap_or(DEFAULT_ACCOUNT_RATE);
        let rate = match num(INSTANCE_RATE_ENV)? {
            Some(r) => r,
            None => per_instance_rate(account, knobs.max_concurrency("send")),
        };
        let retries = match get(THROTTLE_RETRIES_ENV) {
            None => 2,
            Some(v) => v.trim().parse::<u32>().map_err(|_| ConfigError {
                var: THROTTLE_RETRIES_ENV,
                value: v,
            })?,
        };
        Ok(SendConfig {
            account_rate: account,
            rate_per_second: rate,
            max_in_flight: num(MAX_IN_FLIGHT_ENV)?.map_or(16, |x| x as usize).max(1),
            throttle_retries: retries,
        })
    }

    pub fn from_env(knobs: &Knobs) -> Result<Self, ConfigError> {
        Self::from_lookup(knobs, |k| std::env::var(k).ok())
    }
}

/// Paces SES calls at a fixed rate: each call takes the next free slot, `1/rate` apart.
/// Unused time does not accumulate into a burst, so the instance never exceeds its share.
#[derive(Debug)]
pub struct RateLimiter {
    interval: Duration,
    next: Mutex<Instant>,
}

impl RateLimiter {
    pub fn new(rate_per_second: f64) -> Self {
        RateLimiter {
            interval: Duration::from_secs_f64(1.0 / rate_per_second.max(0.001)),
            next: Mutex::new(Instant::now()),
        }
    }

    /// How many slots are free from now until `deadline`: what an invocation may claim.
    pub fn slots_before(&self, deadline: Instant) -> usize {
        let next = *self.next.lock().unwrap_or_else(|p| p.into_inner());
        let start = next.max(Instant::now());
        if start > deadline {
            return 0;
        }
        let span = deadline.duration_since(start).as_secs_f64();
        (span / self.interval.as_secs_f64()).floor() as usize + 1
    }

    /// Reserves the next slot and waits for it; `false` (nothing reserved) when the slot
    /// would come after `deadline`.
    pub async fn acquire(&self, deadline: Instant) -> bool {
        let slot = {
            let mut next = self.next.lock().unwrap_or_else(|p| p.into_inner());
            let slot = (*next).max(Instant::now());
            if slot > deadline {
                return false;
            }
            *next = slot + self.interval;
            slot
        };
        tokio::time::sleep_until(tokio::time::Instant::from_std(slot)).await;
        true
    }
}

/// The invocation's deadline as an `Instant`: Lambda gives it in milliseconds since the
/// epoch; one already past is now.
pub fn invocation_deadline(deadline_ms: u64) -> Instant {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    Instant::now() + Duration::from_millis(deadline_ms.saturating_sub(now_ms))
}

/// The function, built once per instance.
///
/// **Crash window.** The claim commits before the SES call. If the instance dies (crash,
/// timeout) after the claim and before SES accepted, the notification stays `sending`
/// with no SES message id and `sent_at` NULL, and the redelivered message will not claim
/// it again: that is the price of never sending twice. The maintenance sweep
/// ([`floodgate_db::sending::sweep_sending`]) makes such a row `temporary-failure` after an
/// hour (SES `Send` events record every acceptance well before that), and a later SES
/// event still replaces that verdict. Where the invocation lives on and knows it never
/// offered an id to SES, it re-enqueues the id with its claim token instead.
#[derive(Clone)]
pub struct Sender {
    writer: WriterLane,
    mailer: Arc<dyn Mailer>,
    queue: Arc<dyn QueueSender>,
    limits: QueueLimits,
    knobs: Arc<Knobs>,
    config: SendConfig,
    pace: Arc<Pace>,
    defer: DeferPolicy,
}

/// What one invocation did, for logs, metrics and tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SendReport {
    pub messages: usize,
    pub malformed: usize,
    /// Distinct notification ids in the batch.
    pub notifications: usize,
    /// Claimed by this invocation (the rest were claimed before: duplicates).
    pub claimed: usize,
    pub sent: usize,
    /// Test-key notifications given a simulated outcome.
    pub simulated: usize,
    /// Claimed, then released to `created` and deferred (throttled, out of time).
    pub released: usize,
    /// Not claimed: more than the rate budget could send before the deadline, or the
    /// claim failed; deferred.
    pub deferred: usize,
    /// Throttled calls retried within the invocation.
    pub throttle_retries: usize,
    /// Marked `technical-failure`.
    pub failed: usize,
    /// SES gave no answer; left `sending`.
    pub ambiguous: usize,
    /// Callbacks put on the callbacks queue (final statuses set here).
    pub callbacks: usize,
    pub failed_messages: BTreeSet<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error(transparent)]
    UnidentifiedRecord(#[from] UnidentifiedRecord),
}

/// What happened to one claimed notification.
#[derive(Debug)]
enum Outcome {
    Settle(Settlement),
    Ambiguous,
}

/// One id of the batch, with what its messages said about it.
#[derive(Debug, Clone)]
struct Wanted {
    id: Uuid,
    created_at: DateTime<Utc>,
    process_type: ProcessType,
    tokens: BTreeSet<Uuid>,
}

/// Ids to put back on their send queue, grouped by process type and claim tokens.
#[derive(Default)]
struct Deferred {
    planned: BTreeMap<(ProcessType, Vec<Uuid>), Vec<Uuid>>,
    backoff: BTreeMap<(ProcessType, Vec<Uuid>), Vec<Uuid>>,
}

/// Renders a claimed notification into its email. `Err` is the failure reason to store
/// (`technical-failure`: the row cannot be sent as stored, retrying cannot help).
pub fn build_email(c: &Claimed) -> Result<Email, String> {
    let process_type: ProcessType = c
        .process_type
        .clone()
        .map_err(|l| format!("unknown process type {l:?}"))?;
    let from = c
        .from_email
        .clone()
        .ok_or_else(|| format!("service {} not found", c.service_id))?;
    let (Some(subject), Some(body)) = (&c.subject, &c.body) else {
        return Err(format!(
            "template {} version {} not found",
            c.template_id, c.template_version
        ));
    };
    let personalisation = c.personalisation.as_object().cloned().unwrap_or_default();
    let rendered = render(
        &Template {
            subject: subject.clone(),
            body: body.clone(),
        },
        &personalisation,
    )
    .map_err(|e| e.to_string())?;
    Ok(Email {
        notification_id: c.id,
        process_type,
        from,
        to: c.email_address.clone(),
        subject: unescape_html(&rendered.subject),
        html: markdown_to_html(&rendered.body),
        text: unescape_html(&rendered.body),
        headers: c
            .one_click_unsubscribe_url
            .as_deref()
            .map(one_click_unsubscribe_headers)
            .unwrap_or_default(),
        reply_to: c.reply_to.clone(),
    })
}

/// The HTML part: the rendered markdown (values already HTML-escaped) as HTML.
pub fn markdown_to_html(markdown: &str) -> String {
    let parser = pulldown_cmark::Parser::new(markdown);
    let mut html = String::with_capacity(markdown.len() * 3 / 2);
    pulldown_cmark::html::push_html(&mut html, parser);
    html
}

/// The text part and the subject: values were HTML-escaped for the HTML part; in plain
/// text the entities would show literally.
pub fn unescape_html(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&amp;", "&")
}

impl Sender {
    /// The one constructor: `main`, the local stack and the tests all build it here.
    pub fn new(
        writer: WriterLane,
        mailer: Arc<dyn Mailer>,
        queue: Arc<dyn QueueSender>,
        knobs: Arc<Knobs>,
        config: SendConfig,
    ) -> Self {
        let pace = Arc::new(Pace::Split(RateLimiter::new(config.rate_per_second)));
        Sender {
            writer,
            mailer,
            queue,
            limits: QueueLimits::from_knobs(&knobs),
            defer: DeferPolicy::from_knobs(&knobs),
            knobs,
            config,
            pace,
        }
    }

    /// Shares the account's rate with every other instance through `store` (the limit
    /// store's table on AWS) instead of pacing at an even share of it.
    pub fn with_shared_budget(mut self, store: Arc<dyn LimitStore>) -> Self {
        self.pace = Arc::new(Pace::Shared(SharedBudget::new(
            store,
            self.config.account_rate,
            self.config.rate_per_second,
            self.config.max_in_flight,
        )));
        self
    }

    /// How this instance paces its SES calls.
    pub fn pace(&self) -> &Pace {
        &self.pace
    }

    /// Replaces the deferral delays (the local stack's time-scaled runs).
    pub fn with_defer_policy(mut self, defer: DeferPolicy) -> Self {
        self.defer = defer;
        self
    }

    /// The last moment to start an SES call in an invocation that must end by
    /// `invocation_deadline`: what is left must cover the settle statement (bounded by
    /// the writer lane's acquire and operation timeouts) and enqueueing the deferrals.
    pub fn sending_deadline(&self, invocation_deadline: Instant) -> Instant {
        let cfg = self.writer.config();
        let reserve = cfg.acquire_timeout + cfg.operation_timeout;
        invocation_deadline
            .checked_sub(reserve)
            .unwrap_or_else(Instant::now)
    }

    /// The send rate of a whole process type: this instance's share × its queue's maximum
    /// concurrency. Deferred work is spread over time at this rate.
    fn process_type_rate(&self, process_type: ProcessType) -> f64 {
        let concurrency = self
            .knobs
            .event_source_mappings
            .get(&QueueName::Send(process_type).as_string())
            .map_or(1, |m| m.maximum_concurrency.max(1));
        self.pace
            .process_type_rate(self.config.rate_per_second, concurrency)
    }

    /// The handler. `sending_deadline`: no SES call starts after it (see
    /// [`Sender::sending_deadline`]).
    pub async fn handle(
        &self,
        event: SqsEvent,
        sending_deadline: Instant,
    ) -> Result<(SqsBatchResponse, SendReport), SendError> {
        let mut report = SendReport {
            messages: event.records.len(),
            ..Default::default()
        };
        let mut ledger = Ledger::new(event.records, self.defer);
        let mut carriers: Carriers<Uuid> = Carriers::default();
        let mut wanted: Vec<Wanted> = Vec::new();
        let mut index: BTreeMap<Uuid, usize> = BTreeMap::new();
        let mut malformed = Vec::new();
        for (msg, body) in ledger.messages() {
            let decoded = body
                .ok_or("message has no body")
                .and_then(|b| SendEnvelope::decode(b).map_err(|_| "undecodable envelope"))
                .and_then(|env| {
                    let ids = env
                        .notification_ids
                        .iter()
                        .map(|id| created_at_of(*id).map(|at| (*id, at)))
                        .collect::<Option<Vec<_>>>()
                        .ok_or("an id is not a UUIDv7")?;
                    Ok((env, ids))
                });
            match decoded {
                Ok((env, ids)) => {
                    for (id, at) in ids {
                        carriers.add(id, msg);
                        let i = *index.entry(id).or_insert_with(|| {
                            wanted.push(Wanted {
                                id,
                                created_at: at,
                                process_type: env.process_type,
                                tokens: BTreeSet::new(),
                            });
                            wanted.len() - 1
                        });
                        wanted[i].tokens.extend(env.claim_tokens.iter().copied());
                    }
                }
                Err(reason) => {
                    tracing::warn!(message_id = ?ledger.message_id(msg), reason, "send message rejected");
                    malformed.push(msg);
                }
            }
        }
        report.malformed = malformed.len();
        ledger.fail_all(&malformed);
        report.notifications = wanted.len();

        let mut deferred = Deferred::default();
        // Claim no more than the budget can send before the deadline.
        let capacity = self.pace.slots_before(sending_deadline).min(wanted.len());
        let later = wanted.split_off(capacity);
        report.deferred += later.len();
        for w in later {
            deferred.add_planned(&w, w.tokens.iter().copied().collect());
        }

        let token = Uuid::new_v4();
        match self.claim(&wanted, token).await {
            Ok(claimed) => {
                report.claimed = claimed.len();
                let callbacks = self
                    .send_claimed(
                        claimed,
                        token,
                        sending_deadline,
                        &wanted,
                        &mut deferred,
                        &mut report,
                    )
                    .await;
                report.callbacks = callbacks.len();
                for job in callbacks {
                    let sources = carriers.of(&job.notification_id).to_vec();
                    ledger.emit(&sources, QueueName::Callbacks, job.encode());
                }
            }
            Err(e) => {
                // Unknown outcome: the rows may be claimed under this invocation's token,
                // which never offered them to SES, so the token goes with them.
                let unknown = e.outcome_unknown();
                tracing::error!(error = %e, notifications = wanted.len(), outcome_unknown = unknown,
                    "claim failed; deferring the batch");
                for w in &wanted {
                    let mut tokens: Vec<Uuid> = w.tokens.iter().copied().collect();
                    if unknown {
                        tokens.push(token);
                    }
                    if tokens.len() > MAX_CLAIM_TOKENS || !(e.is_transient() || unknown) {
                        ledger.fail_all(carriers.of(&w.id));
                    } else {
                        report.deferred += 1;
                        deferred
                            .backoff
                            .entry((w.process_type, tokens))
                            .or_default()
                            .push(w.id);
                    }
                }
            }
        }

        self.defer_ids(deferred, &carriers, &mut ledger);
        let (response, outcome) = ledger.finish(self.queue.as_ref(), self.limits).await?;
        report.failed_messages = outcome.failed;
        tracing::info!(
            messages = report.messages,
            notifications = report.notifications,
            claimed = report.claimed,
            sent = report.sent,
            simulated = report.simulated,
            released = report.released,
            deferred = report.deferred,
            failed = report.failed,
            ambiguous = report.ambiguous,
            failed_messages = report.failed_messages.len(),
            "send batch done"
        );
        Ok((response, report))
    }

    /// Sends the claimed notifications within the rate budget, then settles them all with
    /// one statement. Released ones are deferred with the claim token, so they are claimed
    /// again even if the release itself could not be recorded.
    async fn send_claimed(
        &self,
        claimed: Vec<Claimed>,
        token: Uuid,
        sending_deadline: Instant,
        wanted: &[Wanted],
        deferred: &mut Deferred,
        report: &mut SendReport,
    ) -> Vec<CallbackJob> {
        let process_types: BTreeMap<Uuid, ProcessType> =
            wanted.iter().map(|w| (w.id, w.process_type)).collect();
        self.pace.expect(
            claimed
                .iter()
                .filter(|c| c.key_type != Ok(KeyType::Test))
                .count(),
        );
        let process_types = &process_types;
        let outcomes: Vec<(Uuid, DateTime<Utc>, Outcome, usize)> = futures::stream::iter(claimed)
            .map(|c| async move {
                let process_type = process_types
                    .get(&c.id)
                    .copied()
                    .unwrap_or(ProcessType::Normal);
                let (outcome, retries) = self.send_one(&c, process_type, sending_deadline).await;
                (c.id, c.created_at, outcome, retries)
            })
            .buffer_unordered(self.config.max_in_flight)
            .collect()
            .await;
        self.pace.forget_pending();
        let mut settlements = Vec::with_capacity(outcomes.len());
        for (id, at, o, retries) in outcomes {
            report.throttle_retries += retries;
            match o {
                Outcome::Ambiguous => report.ambiguous += 1,
                Outcome::Settle(s) => {
                    match &s {
                        Settlement::Sent { .. } => report.sent += 1,
                        Settlement::Release => {
                            report.released += 1;
                            let process_type = process_types
                                .get(&id)
                                .copied()
                                .unwrap_or(ProcessType::Normal);
                            deferred
                                .planned
                                .entry((process_type, vec![token]))
                                .or_default()
                                .push(id);
                        }
                        Settlement::Final {
                            sent_at: Some(_), ..
                        } => report.simulated += 1,
                        Settlement::Final { .. } => report.failed += 1,
                    }
                    settlements.push((id, at, s));
                }
            }
        }
        match self.settle(&settlements, token).await {
            Ok(settled) => settled.callbacks,
            Err(e) => {
                // Sent ones stay `sending` (correct; receipts bring their message ids).
                // Released ones are deferred with the token, so the next claim takes them.
                tracing::error!(error = %e, notifications = settlements.len(),
                    "settle failed after the sends; released ids travel with their claim token");
                Vec::new()
            }
        }
    }

    /// Turns deferred ids into new send messages standing in for the messages that
    /// carried them. Planned deferrals (the budget) are spread over the time the process type
    /// needs to send what came before them; retries after a failure back off.
    fn defer_ids(&self, deferred: Deferred, carriers: &Carriers<Uuid>, ledger: &mut Ledger) {
        for (backoff, groups) in [(false, deferred.planned), (true, deferred.backoff)] {
            for ((process_type, tokens), ids) in groups {
                let per_message = self.knobs.send_ids_per_message(process_type);
                let rate = self.process_type_rate(process_type).max(1e-3);
                let mut ahead = 0usize;
                for env in pack_send_claimed(process_type, &ids, &tokens, per_message) {
                    let sources = carriers.of_all(&env.notification_ids);
                    ahead += env.notification_ids.len();
                    let delay = if backoff {
                        ledger.backoff_delay(&sources)
                    } else {
                        Duration::from_secs_f64(ahead as f64 / rate)
                    };
                    ledger.replace(
                        &sources,
                        QueueName::Send(process_type),
                        vec![(env.encode(), delay)],
                        backoff,
                    );
                }
            }
        }
    }

    async fn claim(&self, wanted: &[Wanted], token: Uuid) -> Result<Vec<Claimed>, DbError> {
        let mut keys = Vec::with_capacity(wanted.len());
        for w in wanted {
            if w.tokens.is_empty() {
                keys.push(ClaimKey {
                    id: w.id,
                    created_at: w.created_at,
                    token: None,
                });
            }
            keys.extend(w.tokens.iter().map(|t| ClaimKey {
                id: w.id,
                created_at: w.created_at,
                token: Some(*t),
            }));
        }
        retry_conflicts(|| async {
            let conn = self.writer.acquire().await?;
            conn.bounded(claim_for_sending(&conn, &keys, token)).await
        })
        .await
    }

    async fn settle(
        &self,
        settlements: &[(Uuid, DateTime<Utc>, Settlement)],
        token: Uuid,
    ) -> Result<Settled, DbError> {
        retry_conflicts(|| async {
            let conn = self.writer.acquire().await?;
            conn.bounded(settle_sends(&conn, settlements, token)).await
        })
        .await
    }

    /// Sends one claimed notification; also returns the throttled calls it retried.
    async fn send_one(
        &self,
        c: &Claimed,
        process_type: ProcessType,
        deadline: Instant,
    ) -> (Outcome, usize) {
        let mut attempt = 0;
        let outcome = self
            .send_one_inner(c, process_type, deadline, &mut attempt)
            .await;
        (outcome, attempt as usize)
    }

    async fn send_one_inner(
        &self,
        c: &Claimed,
        process_type: ProcessType,
        deadline: Instant,
        attempt: &mut u32,
    ) -> Outcome {
        let email = match build_email(c) {
            Ok(e) => e,
            Err(reason) => {
                tracing::error!(notification_id = %c.id, reason = %reason,
                    "notification cannot be rendered");
                return Outcome::Settle(Settlement::Final {
                    status: NotificationStatus::TechnicalFailure,
                    failure_reason: Some(reason),
                    sent_at: None,
                });
            }
        };
        if c.key_type == Ok(KeyType::Test) {
            // Test keys go through the pipeline but never reach SES: the outcome SES's
            // mailbox simulator would give the address.
            let status = SimulatedRecipient::of(&email.to).final_status();
            return Outcome::Settle(Settlement::Final {
                status,
                failure_reason: (status == NotificationStatus::PermanentFailure)
                    .then(|| "simulated bounce (test key)".to_string()),
                sent_at: Some(Utc::now()),
            });
        }
        loop {
            if !self.pace.acquire(process_type, deadline).await {
                // Out of time in this invocation: another one will send it.
                return Outcome::Settle(Settlement::Release);
            }
            match self.mailer.send(&email).await {
                Ok(a) => {
                    return Outcome::Settle(Settlement::Sent {
                        ses_message_id: a.ses_message_id,
                        sent_at: Utc::now(),
                    });
                }
                Err(MailError::Throttled(reason)) if *attempt < self.config.throttle_retries => {
                    *attempt += 1;
                    tracing::debug!(notification_id = %c.id, attempt = *attempt, reason = %reason,
                        "throttled; retrying");
                    // Jittered exponential backoff, so retries do not come back in step.
                    let base = 50u64 << (*attempt).min(6);
                    let wait = Duration::from_millis(base + rand::random_range(0..base));
                    if Instant::now() + wait > deadline {
                        return Outcome::Settle(Settlement::Release);
                    }
                    tokio::time::sleep(wait).await;
                }
                Err(e @ (MailError::Throttled(_) | MailError::Unavailable(_))) => {
                    tracing::warn!(notification_id = %c.id, error = %e,
                        "SES did not take it; released and deferred");
                    return Outcome::Settle(Settlement::Release);
                }
                Err(MailError::Rejected(reason)) => {
                    tracing::error!(notification_id = %c.id, reason = %reason,
                        "SES rejected the message");
                    return Outcome::Settle(Settlement::Final {
                        status: NotificationStatus::TechnicalFailure,
                        failure_reason: Some(reason),
                        sent_at: None,
                    });
                }
                Err(MailError::Ambiguous(reason)) => {
                    tracing::error!(notification_id = %c.id, reason = %reason,
                        "SES outcome unknown; left sending, not retried");
                    return Outcome::Ambiguous;
                }
            }
        }
    }
}

impl Deferred {
    fn add_planned(&mut self, w: &Wanted, tokens: Vec<Uuid>) {
        self.planned
            .entry((w.process_type, tokens))
            .or_default()
            .push(w.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::collections::HashMap;

    fn claimed(personalisation: serde_json::Value) -> Claimed {
        Claimed {
            id: Uuid::now_v7(),
            created_at: Utc::now(),
            service_id: Uuid::from_u128(1),
            template_id: Uuid::from_u128(2),
            template_version: 1,
            process_type: Ok(ProcessType::Bulk),
            key_type: Ok(KeyType::Normal),
            email_address: "ada@example.com".into(),
            personalisation,
            subject: Some("Hello ((name))".into()),
            body: Some("Dear ((name)),\n\n**Your code**: ((code))\n\n((items))".into()),
            from_email: Some("noreply@example.gov".into()),
            one_click_unsubscribe_url: None,
            reply_to: None,
        }
    }

    #[test]
    fn email_has_escaped_html_and_plain_text() {
        let c = claimed(json!({"name": "Ada <b>", "code": "A&B", "items": ["x", "y"]}));
        let e = build_email(&c).unwrap();
        assert_eq!(e.subject, "Hello Ada <b>");
        assert_eq!(e.process_type, ProcessType::Bulk);
        assert!(e.html.contains("<p>Dear Ada &lt;b&gt;,</p>"), "{}", e.html);
        assert!(
            e.html.contains("<strong>Your code</strong>: A&amp;B"),
            "{}",
            e.html
        );
        assert!(e.html.contains("<li>x</li>"), "{}", e.html);
        assert!(e.text.contains("Dear Ada <b>,"), "{}", e.text);
        assert!(
            !format!("{e:?}").contains("ada@"),
            "Debug must not show the address"
        );
        assert!(
            !format!("{c:?}").contains("ada@"),
            "Debug must not show the address"
        );
    }

    #[test]
    fn rows_that_cannot_be_rendered_give_a_reason() {
        let mut c = claimed(json!({"name": "x"}));
        assert_eq!(
            build_email(&c).unwrap_err(),
            "Missing personalisation: code, items"
        );
        c.subject = None;
        assert!(build_email(&c).unwrap_err().contains("not found"));
        c = claimed(json!({}));
        c.from_email = None;
        assert!(build_email(&c).unwrap_err().starts_with("service"));
    }

    #[test]
    fn config_from_env_divides_the_account_rate() {
        let knobs = Knobs::embedded();
        let env = |pairs: &[(&str, &str)]| {
            let m: HashMap<String, String> = pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            move |k: &str| m.get(k).cloned()
        };
        let c = SendConfig::from_lookup(&knobs, env(&[(ACCOUNT_RATE_ENV, "130")])).unwrap();
        let expected = 130.0 / f64::from(knobs.max_concurrency("send"));
        assert!((c.rate_per_second - expected).abs() < 1e-9);
        assert_eq!(c.throttle_retries, 2);
        let c = SendConfig::from_lookup(
            &knobs,
            env(&[(INSTANCE_RATE_ENV, "40"), (THROTTLE_RETRIES_ENV, "0")]),
        )
        .unwrap();
        assert_eq!(c.rate_per_second, 40.0);
        assert_eq!(c.throttle_retries, 0);
        let e = SendConfig::from_lookup(&knobs, env(&[(ACCOUNT_RATE_ENV, "-1")])).unwrap_err();
        assert_eq!(e.var, ACCOUNT_RATE_ENV);
        assert_eq!(per_instance_rate(14.0, 0), 14.0);
    }

    #[tokio::test]
    async fn the_limiter_refuses_slots_past_the_deadline() {
        let l = RateLimiter::new(10.0);
        let deadline = Instant::now() + Duration::from_millis(250);
        let mut granted = 0;
        while l.acquire(deadline).await {
            granted += 1;
        }
        // Slots at 0, 100, 200 ms fit; the one at 300 ms does not.
        assert_eq!(granted, 3);
    }
}
