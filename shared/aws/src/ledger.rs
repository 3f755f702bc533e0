//! The bookkeeping of one SQS batch, shared by every queue consumer: which messages are
//! done, which failed (reported in the batch response, so SQS redelivers them and, after
//! `maxReceiveCount`, dead-letters them), and which were deferred — their work put back on
//! a queue with a delay, as a new message, and the original reported done.
//!
//! The rule it keeps: only a message that is itself bad spends receives. Waiting for a
//! database, a rate budget or a notification not stored yet is a deferral, which starts
//! the message's receive count afresh; the queue's retention, counted from the first send
//! and carried along in [`Deferral::first_sent_millis`], still bounds how long work can wait.

use crate::queue::{Deferral, MAX_DELAY, OutgoingMessage, QueueLimits, QueueSender, send_messages};
use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsMessage};
use floodgate_core::{Knobs, QueueName};
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How deferred work is delayed, and for how long it may keep being deferred.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeferPolicy {
    pub initial_delay: Duration,
    pub max_delay: Duration,
    /// The queue's message retention: work first sent longer ago than this is failed
    /// instead of deferred again, so it reaches the dead-letter queue rather than
    /// circulating for ever.
    pub retention: Duration,
}

impl DeferPolicy {
    pub fn from_knobs(k: &Knobs) -> Self {
        DeferPolicy {
            initial_delay: Duration::from_secs(u64::from(k.sqs.deferral_initial_delay_seconds)),
            max_delay: Duration::from_secs(u64::from(k.sqs.deferral_max_delay_seconds)),
            retention: Duration::from_secs(u64::from(k.sqs.message_retention_seconds)),
        }
    }

    /// Every interval divided by `factor` (the local stack's time-scaled runs).
    pub fn scaled(self, factor: f64) -> Self {
        let f = factor.max(1e-6);
        DeferPolicy {
            initial_delay: self.initial_delay.div_f64(f),
            max_delay: self.max_delay.div_f64(f),
            retention: self.retention.div_f64(f),
        }
    }

    /// The delay of the `count`-th deferral (0-based): doubling from `initial_delay`, at
    /// most `max_delay` and SQS's 15 minutes.
    pub fn backoff(&self, count: u32) -> Duration {
        let doubled = self
            .initial_delay
            .saturating_mul(1u32 << count.min(20))
            .min(self.max_delay);
        doubled.min(MAX_DELAY)
    }
}

/// A message of the batch, by position.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Msg(usize);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    Done,
    /// Done once every message that replaces it is enqueued; failed otherwise.
    Replaced,
    Failed,
}

#[derive(Debug)]
struct Entry {
    id: Option<String>,
    body: Option<String>,
    deferral: Deferral,
    fate: Fate,
}

/// A failed record had no message id, so it cannot be reported alone: the whole
/// invocation must fail (every handler is idempotent, so the retry is safe).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a failed record has no messageId; failing the whole batch")]
pub struct UnidentifiedRecord;

/// What became of a batch, for the handler's report.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LedgerOutcome {
    /// Message ids reported as failed.
    pub failed: BTreeSet<String>,
    /// Messages whose work was put back on a queue.
    pub deferred: usize,
    /// New messages enqueued for them.
    pub enqueued: usize,
}

/// The ledger of one batch. See the module documentation.
#[derive(Debug)]
pub struct Ledger {
    entries: Vec<Entry>,
    policy: DeferPolicy,
    /// New messages, each with the queue it goes to and the messages it stands in for.
    outgoing: Vec<(QueueName, OutgoingMessage, Vec<Msg>)>,
}

fn now_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn attribute(record: &SqsMessage, name: &str) -> Option<String> {
    record
        .message_attributes
        .get(name)
        .and_then(|a| a.string_value.clone())
}

impl Ledger {
    pub fn new(records: Vec<SqsMessage>, policy: DeferPolicy) -> Self {
        let entries = records
            .into_iter()
            .map(|r| {
                let sent = r
                    .attributes
                    .get("SentTimestamp")
                    .and_then(|v| v.parse::<i64>().ok())
                    .unwrap_or_else(now_millis);
                let deferral = Deferral::from_attributes(
                    attribute(&r, crate::queue::DEFERRALS_ATTRIBUTE).as_deref(),
                    attribute(&r, crate::queue::FIRST_SENT_ATTRIBUTE).as_deref(),
                )
                .unwrap_or(Deferral {
                    count: 0,
                    first_sent_millis: sent,
                });
                Entry {
                    id: r.message_id,
                    body: r.body,
                    deferral,
                    fate: Fate::Done,
                }
            })
            .collect();
        Ledger {
            entries,
            policy,
            outgoing: Vec::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Every message with its body, to decode.
    pub fn messages(&self) -> impl Iterator<Item = (Msg, Option<&str>)> {
        self.entries
            .iter()
            .enumerate()
            .map(|(i, e)| (Msg(i), e.body.as_deref()))
    }

    pub fn message_id(&self, m: Msg) -> Option<&str> {
        self.entries.get(m.0).and_then(|e| e.id.as_deref())
    }

    /// How often this message's work was deferred before.
    pub fn deferrals(&self, m: Msg) -> u32 {
        self.entries.get(m.0).map_or(0, |e| e.deferral.count)
    }

    /// The delay of the next backoff for work from `sources` (their most deferred one).
    pub fn backoff_delay(&self, sources: &[Msg]) -> Duration {
        let count = sources
            .iter()
            .map(|&m| self.deferrals(m))
            .max()
            .unwrap_or(0);
        self.policy.backoff(count)
    }

    /// The message fails: SQS redelivers it after the visibility timeout and, after
    /// `maxReceiveCount` receives, moves it to the dead-letter queue.
    pub fn fail(&mut self, m: Msg) {
        if let Some(e) = self.entries.get_mut(m.0) {
            e.fate = Fate::Failed;
        }
    }

    pub fn fail_all<'a>(&mut self, ms: impl IntoIterator<Item = &'a Msg>) {
        for m in ms {
            self.fail(*m);
        }
    }

    pub fn is_failed(&self, m: Msg) -> bool {
        self.entries
            .get(m.0)
            .is_some_and(|e| e.fate == Fate::Failed)
    }

    /// Defers each message whole: its body goes back on `queue` after the next backoff
    /// delay. A message past the retention bound fails instead.
    pub fn defer<'a>(&mut self, queue: QueueName, ms: impl IntoIterator<Item = &'a Msg>) {
        for &m in ms {
            let Some(body) = self.entries.get(m.0).and_then(|e| e.body.clone()) else {
                self.fail(m);
                continue;
            };
            let delay = self.policy.backoff(self.deferrals(m));
            self.replace(&[m], queue, vec![(body, delay)], true);
        }
    }

    /// Replaces the work of `sources` by new messages on `queue` (each body with its own
    /// delay): the sources are done once all of them are enqueued. `backoff`: this is a
    /// retry after a failure (the deferral count grows, and so does the next delay); a
    /// planned deferral (a rate budget) keeps the count. The new messages carry the
    /// earliest first-send time of their sources; past the retention bound, the sources
    /// fail instead.
    pub fn replace(
        &mut self,
        sources: &[Msg],
        queue: QueueName,
        bodies: Vec<(String, Duration)>,
        backoff: bool,
    ) {
        let known: Vec<&Entry> = sources
            .iter()
            .filter_map(|m| self.entries.get(m.0))
            .collect();
        let Some(first_sent) = known.iter().map(|e| e.deferral.first_sent_millis).min() else {
            return;
        };
        let count = known.iter().map(|e| e.deferral.count).max().unwrap_or(0) + u32::from(backoff);
        let age = Duration::from_millis(u64::try_from(now_millis() - first_sent).unwrap_or(0));
        if age >= self.policy.retention {
            tracing::warn!(
                messages = sources.len(),
                age_s = age.as_secs(),
                "deferred work reached the queue's retention; failing it instead"
            );
            self.fail_all(sources);
            return;
        }
        for &m in sources {
            if let Some(e) = self.entries.get_mut(m.0)
                && e.fate == Fate::Done
            {
                e.fate = Fate::Replaced;
            }
        }
        let deferral = Deferral {
            count,
            first_sent_millis: first_sent,
        };
        for (body, delay) in bodies {
            self.outgoing.push((
                queue,
                OutgoingMessage {
                    body,
                    delay: delay.min(MAX_DELAY),
                    deferral: Some(deferral),
                },
                sources.to_vec(),
            ));
        }
    }

    /// Work the batch produces for another queue (a callback): enqueued at the end, and the
    /// `sources` fail if it cannot be, so their redelivery produces it again.
    pub fn emit(&mut self, sources: &[Msg], queue: QueueName, body: String) {
        self.outgoing
            .push((queue, OutgoingMessage::now(body), sources.to_vec()));
    }

    /// Enqueues the replacements and emitted work, then answers the batch: every failed message, and every
    /// replaced one whose replacements could not all be enqueued, is reported failed.
    pub async fn finish(
        mut self,
        port: &dyn QueueSender,
        limits: QueueLimits,
    ) -> Result<(SqsBatchResponse, LedgerOutcome), UnidentifiedRecord> {
        let mut outcome = LedgerOutcome::default();
        let mut by_queue: BTreeMap<QueueName, Vec<(OutgoingMessage, Vec<Msg>)>> = BTreeMap::new();
        for (q, m, sources) in std::mem::take(&mut self.outgoing) {
            by_queue.entry(q).or_default().push((m, sources));
        }
        for (q, items) in by_queue {
            let messages: Vec<OutgoingMessage> = items.iter().map(|(m, _)| m.clone()).collect();
            let results = send_messages(port, q, &messages, limits).await;
            for ((_, sources), result) in items.iter().zip(results) {
                match result {
                    Ok(()) => outcome.enqueued += 1,
                    Err(e) => {
                        tracing::warn!(queue = %q, error = %e,
                            "deferral could not be enqueued; failing its messages");
                        self.fail_all(sources);
                    }
                }
            }
        }
        let mut response = SqsBatchResponse::default();
        for e in &self.entries {
            match e.fate {
                Fate::Done => {}
                Fate::Replaced => outcome.deferred += 1,
                Fate::Failed => {
                    let id = e.id.clone().ok_or(UnidentifiedRecord)?;
                    outcome.failed.insert(id.clone());
                    response.add_failure(id);
                }
            }
        }
        Ok((response, outcome))
    }
}

/// The two halves of a run of messages whose data the database refused as a whole: the
/// consumers split until the offending message is alone.
pub fn halves(range: std::ops::Range<usize>) -> [std::ops::Range<usize>; 2] {
    let mid = range.start + range.len() / 2;
    [range.start..mid, mid..range.end]
}

/// For each key (a notification id), the messages of the batch that carry it.
#[derive(Debug, Clone)]
pub struct Carriers<K: Ord> {
    map: BTreeMap<K, Vec<Msg>>,
}

impl<K: Ord> Default for Carriers<K> {
    fn default() -> Self {
        Carriers {
            map: BTreeMap::new(),
        }
    }
}

impl<K: Ord + Clone> Carriers<K> {
    /// Records that `m` carries `key`; true the first time `key` is seen.
    pub fn add(&mut self, key: K, m: Msg) -> bool {
        let c = self.map.entry(key).or_default();
        let first = c.is_empty();
        if !c.contains(&m) {
            c.push(m);
        }
        first
    }

    pub fn of(&self, key: &K) -> &[Msg] {
        self.map.get(key).map_or(&[], Vec::as_slice)
    }

    /// The messages carrying any of `keys`, each once.
    pub fn of_all<'a>(&'a self, keys: impl IntoIterator<Item = &'a K>) -> Vec<Msg> {
        let set: BTreeSet<Msg> = keys.into_iter().flat_map(|k| self.of(k)).copied().collect();
        set.into_iter().collect()
    }

    pub fn keys(&self) -> impl Iterator<Item = &K> {
        self.map.keys()
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> DeferPolicy {
        DeferPolicy {
            initial_delay: Duration::from_secs(10),
            max_delay: Duration::from_secs(300),
            retention: Duration::from_secs(3600),
        }
    }

    #[test]
    fn backoff_doubles_up_to_its_cap() {
        let p = policy();
        let delays: Vec<u64> = (0..7).map(|c| p.backoff(c).as_secs()).collect();
        assert_eq!(delays, [10, 20, 40, 80, 160, 300, 300]);
        let big = DeferPolicy {
            max_delay: Duration::from_secs(5000),
            ..p
        };
        assert_eq!(big.backoff(30), MAX_DELAY);
        assert_eq!(p.scaled(10.0).backoff(1), Duration::from_secs(2));
    }

    #[test]
    fn carriers_list_each_message_once() {
        let mut c: Carriers<u32> = Carriers::default();
        assert!(c.add(7, Msg(0)));
        assert!(!c.add(7, Msg(1)));
        assert!(!c.add(7, Msg(1)));
        c.add(8, Msg(1));
        assert_eq!(c.of(&7), [Msg(0), Msg(1)]);
        assert_eq!(c.of_all([&7, &8]), [Msg(0), Msg(1)]);
        assert!(c.of(&9).is_empty());
    }
}
