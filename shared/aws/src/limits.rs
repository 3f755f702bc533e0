//! The limit store port: counters (rate and daily limits) and idempotency records that
//! every `ingest` instance shares, and its AWS adapter over DynamoDB (one on-demand table,
//! `pk` as its key, `expires_at` as its TTL attribute). The local stack's stand-in with the
//! same semantics is `floodgate_emulators::EmbeddedLimitStore`.
//!
//! Counters follow [`floodgate_core::limits::take`]: in DynamoDB a take is one conditional
//! `UpdateItem` (the window's count goes up unless it would pass the limit), so hundreds of
//! instances counting at once never race and never retry, except at a window's end.

use async_trait::async_trait;
use aws_sdk_dynamodb::types::AttributeValue;
use chrono::{DateTime, Utc};
use floodgate_core::limits::{Counter, IdempotencyKey, Take};
use std::collections::HashMap;
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitStoreError {
    /// The store did not answer in time or refused the call: callers carry on without it.
    #[error("limit store unavailable: {0}")]
    Unavailable(String),
    /// An item the store returned is not one this code wrote.
    #[error("limit store item {0} is malformed")]
    Malformed(String),
}

/// What a request that sent an idempotency key left in the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyRecord {
    /// [`floodgate_core::limits::request_fingerprint`] of the request.
    pub fingerprint: String,
    /// The answer (status and JSON body) a repeat of the request gets back.
    pub status: u16,
    pub response: String,
    /// `false` while the first request is still enqueueing.
    pub done: bool,
    pub claimed_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

/// The outcome of claiming an idempotency key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// The key was free (or expired): the caller does the work.
    Claimed,
    /// Another request holds the key: its record.
    Existing(IdempotencyRecord),
}

#[async_trait]
pub trait LimitStore: Send + Sync {
    /// Counts `cost` on `counter` at `now` unless the window's count would pass its limit.
    async fn take(
        &self,
        counter: &Counter,
        cost: u64,
        now: DateTime<Utc>,
    ) -> Result<Take, LimitStoreError>;

    /// Uncounts what a take counted, when the request it counted for was not accepted.
    async fn give_back(&self, counter: &Counter, cost: u64) -> Result<(), LimitStoreError>;

    /// Stores `record` under `key` unless a record that has not expired is there already.
    async fn claim(
        &self,
        key: &IdempotencyKey,
        record: &IdempotencyRecord,
        now: DateTime<Utc>,
    ) -> Result<Claim, LimitStoreError>;

    /// The record under `key`, if any (read consistently).
    async fn lookup(
        &self,
        key: &IdempotencyKey,
    ) -> Result<Option<IdempotencyRecord>, LimitStoreError>;

    /// Marks the claimed record done: its answer is final.
    async fn settle(&self, key: &IdempotencyKey) -> Result<(), LimitStoreError>;

    /// Removes a claim that is not done (the request failed; a retry starts afresh).
    async fn release(&self, key: &IdempotencyKey) -> Result<(), LimitStoreError>;

    /// Takes over a claim not done whose `claimed_at` is still `seen` (its request died):
    /// the new claim time is `now`. `false` when someone else changed it first.
    async fn take_over(
        &self,
        key: &IdempotencyKey,
        seen: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<bool, LimitStoreError>;
}

/// The environment variable naming the table.
pub const LIMITS_TABLE_ENV: &str = "FLOODGATE_LIMITS_TABLE";

/// Each store call is on the request path: one short attempt and one retry, so an
/// unreachable store costs a request well under a second before it is bypassed.
const ATTEMPT_TIMEOUT: Duration = Duration::from_millis(300);
const CONNECT_TIMEOUT: Duration = Duration::from_millis(300);
const OPERATION_TIMEOUT: Duration = Duration::from_millis(700);
/// Items outlive their window by this much before DynamoDB's TTL may delete them.
const TTL_MARGIN_SECONDS: i64 = 3600;

pub struct DynamoLimitStore {
    client: aws_sdk_dynamodb::Client,
    table: String,
}

fn unavailable(e: impl std::fmt::Display) -> LimitStoreError {
    LimitStoreError::Unavailable(e.to_string())
}

fn n(v: i64) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

fn millis(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

fn window_millis(w: Duration) -> i64 {
    i64::try_from(w.as_millis()).unwrap_or(i64::MAX)
}

fn get_n(
    item: &HashMap<String, AttributeValue>,
    name: &str,
    key: &str,
) -> Result<i64, LimitStoreError> {
    item.get(name)
        .and_then(|v| v.as_n().ok())
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| LimitStoreError::Malformed(key.to_string()))
}

fn time_of_millis(ms: i64, key: &str) -> Result<DateTime<Utc>, LimitStoreError> {
    DateTime::from_timestamp_millis(ms).ok_or_else(|| LimitStoreError::Malformed(key.to_string()))
}

impl DynamoLimitStore {
    pub fn new(client: aws_sdk_dynamodb::Client, table: impl Into<String>) -> Self {
        DynamoLimitStore {
            client,
            table: table.into(),
        }
    }

    /// The table named by `FLOODGATE_LIMITS_TABLE`.
    pub fn from_env(sdk: &aws_config::SdkConfig) -> Result<Self, LimitStoreError> {
        let table = std::env::var(LIMITS_TABLE_ENV)
            .map_err(|_| unavailable(format!("{LIMITS_TABLE_ENV} is not set")))?;
        Ok(Self::new(Self::client(sdk), table))
    }

    /// A DynamoDB client whose calls are bounded for the request path.
    pub fn client(sdk: &aws_config::SdkConfig) -> aws_sdk_dynamodb::Client {
        let timeouts = aws_config::timeout::TimeoutConfig::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .operation_attempt_timeout(ATTEMPT_TIMEOUT)
            .operation_timeout(OPERATION_TIMEOUT)
            .build();
        let config = aws_sdk_dynamodb::config::Builder::from(sdk)
            .retry_config(aws_config::retry::RetryConfig::standard().with_max_attempts(2))
            .timeout_config(timeouts)
            .build();
        aws_sdk_dynamodb::Client::from_conf(config)
    }

    /// Creates the table as Terraform does (on-demand, `pk` string key, TTL on
    /// `expires_at`), for local runs against moto.
    pub async fn create_table(
        client: &aws_sdk_dynamodb::Client,
        table: &str,
    ) -> Result<(), LimitStoreError> {
        use aws_sdk_dynamodb::types::{
            AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType,
            TimeToLiveSpecification,
        };
        let setup = aws_sdk_dynamodb::Client::from_conf(
            client
                .config()
                .to_builder()
                .retry_config(aws_config::retry::RetryConfig::standard().with_max_attempts(3))
                .timeout_config(
                    aws_config::timeout::TimeoutConfig::builder()
                        .operation_attempt_timeout(Duration::from_secs(10))
                        .operation_timeout(Duration::from_secs(30))
                        .build(),
                )
                .build(),
        );
        setup
            .create_table()
            .table_name(table)
            .billing_mode(BillingMode::PayPerRequest)
            .attribute_definitions(
                AttributeDefinition::builder()
                    .attribute_name("pk")
                    .attribute_type(ScalarAttributeType::S)
                    .build()
                    .map_err(unavailable)?,
            )
            .key_schema(
                KeySchemaElement::builder()
                    .attribute_name("pk")
                    .key_type(KeyType::Hash)
                    .build()
                    .map_err(unavailable)?,
            )
            .send()
            .await
            .map_err(sdk_unavailable)?;
        setup
            .update_time_to_live()
            .table_name(table)
            .time_to_live_specification(
                TimeToLiveSpecification::builder()
                    .attribute_name("expires_at")
                    .enabled(true)
                    .build()
                    .map_err(unavailable)?,
            )
            .send()
            .await
            .map_err(sdk_unavailable)?;
        Ok(())
    }

    fn key(&self, pk: &str) -> HashMap<String, AttributeValue> {
        HashMap::from([("pk".to_string(), AttributeValue::S(pk.to_string()))])
    }

    async fn get(
        &self,
        pk: &str,
    ) -> Result<Option<HashMap<String, AttributeValue>>, LimitStoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(self.key(pk)))
            .consistent_read(true)
            .send()
            .await
            .map_err(sdk_unavailable)?;
        Ok(out.item)
    }

    /// Starts a new window at `now` with `cost` counted, if the window is still the one
    /// that was seen (`seen_start`, or no item at all).
    async fn restart_window(
        &self,
        counter: &Counter,
        cost: u64,
        now: DateTime<Utc>,
        seen_start: Option<i64>,
    ) -> Result<bool, LimitStoreError> {
        let expires = now.timestamp() + (window_millis(counter.window) / 1000) + TTL_MARGIN_SECONDS;
        let mut req = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(self.key(&counter.key)))
            .update_expression("SET started_at = :now, n = :cost, expires_at = :exp")
            .expression_attribute_values(":now", n(millis(now)))
            .expression_attribute_values(":cost", n(i64::try_from(cost).unwrap_or(i64::MAX)))
            .expression_attribute_values(":exp", n(expires));
        req = match seen_start {
            Some(start) => req
                .condition_expression("started_at = :seen")
                .expression_attribute_values(":seen", n(start)),
            None => req.condition_expression("attribute_not_exists(pk)"),
        };
        Ok(applied(req.send().await)?.is_some())
    }
}

type SdkResult<T, E> =
    Result<T, aws_sdk_dynamodb::error::SdkError<E, aws_sdk_dynamodb::config::http::HttpResponse>>;

fn sdk_unavailable<E, R>(e: aws_sdk_dynamodb::error::SdkError<E, R>) -> LimitStoreError
where
    E: std::error::Error + 'static,
    R: std::fmt::Debug,
{
    unavailable(aws_sdk_dynamodb::error::DisplayErrorContext(e))
}

/// A conditional call's outcome: `Some` when it was applied, `None` when its condition did
/// not hold; any other failure is the store being unavailable.
fn applied<T, E>(r: SdkResult<T, E>) -> Result<Option<T>, LimitStoreError>
where
    E: aws_sdk_dynamodb::error::ProvideErrorMetadata + std::error::Error + 'static,
{
    match r {
        Ok(out) => Ok(Some(out)),
        Err(e)
            if e.as_service_error()
                .and_then(|s| s.code())
                .is_some_and(|c| c == "ConditionalCheckFailedException") =>
        {
            Ok(None)
        }
        Err(e) => Err(sdk_unavailable(e)),
    }
}

fn record_of(
    item: &HashMap<String, AttributeValue>,
    key: &str,
) -> Result<IdempotencyRecord, LimitStoreError> {
    let s = |name: &str| {
        item.get(name)
            .and_then(|v| v.as_s().ok())
            .cloned()
            .ok_or_else(|| LimitStoreError::Malformed(key.to_string()))
    };
    Ok(IdempotencyRecord {
        fingerprint: s("fingerprint")?,
        response: s("response")?,
        status: u16::try_from(get_n(item, "status", key)?)
            .map_err(|_| LimitStoreError::Malformed(key.to_string()))?,
        done: item
            .get("done")
            .and_then(|v| v.as_bool().ok())
            .copied()
            .ok_or_else(|| LimitStoreError::Malformed(key.to_string()))?,
        claimed_at: time_of_millis(get_n(item, "claimed_at", key)?, key)?,
        expires_at: DateTime::from_timestamp(get_n(item, "expires_at", key)?, 0)
            .ok_or_else(|| LimitStoreError::Malformed(key.to_string()))?,
    })
}

#[async_trait]
impl LimitStore for DynamoLimitStore {
    async fn take(
        &self,
        counter: &Counter,
        cost: u64,
        now: DateTime<Utc>,
    ) -> Result<Take, LimitStoreError> {
        let window = window_millis(counter.window);
        let Some(room) = counter.limit.checked_sub(cost) else {
            return Ok(Take::Refused {
                resets_at: now + chrono::TimeDelta::milliseconds(window),
                count: None,
            });
        };
        let expires = now.timestamp() + window / 1000 + TTL_MARGIN_SECONDS;
        // A window ends between the update and the re-read at most once or twice in a row.
        for _ in 0..3 {
            let out = self
                .client
                .update_item()
                .table_name(&self.table)
                .set_key(Some(self.key(&counter.key)))
                .update_expression(
                    "SET started_at = if_not_exists(started_at, :now), \
                     expires_at = if_not_exists(expires_at, :exp) ADD n :cost",
                )
                .condition_expression(
                    "attribute_not_exists(pk) OR (started_at > :floor AND n <= :room)",
                )
                .expression_attribute_values(":now", n(millis(now)))
                .expression_attribute_values(":exp", n(expires))
                .expression_attribute_values(":cost", n(i64::try_from(cost).unwrap_or(i64::MAX)))
                .expression_attribute_values(":floor", n(millis(now) - window))
                .expression_attribute_values(":room", n(i64::try_from(room).unwrap_or(i64::MAX)))
                .return_values(aws_sdk_dynamodb::types::ReturnValue::UpdatedNew)
                .send()
                .await;
            if let Some(out) = applied(out)? {
                let count = out
                    .attributes
                    .as_ref()
                    .map(|a| get_n(a, "n", &counter.key))
                    .transpose()?
                    .unwrap_or(0);
                return Ok(Take::Taken {
                    count: u64::try_from(count).unwrap_or(0),
                });
            }
            // Refused: either the window is full, or it has ended and a new one starts now.
            let item = self.get(&counter.key).await?;
            let seen = item
                .as_ref()
                .map(|i| get_n(i, "started_at", &counter.key))
                .transpose()?;
            if let Some(start) = seen
                && start > millis(now) - window
            {
                let count = item
                    .as_ref()
                    .map(|i| get_n(i, "n", &counter.key))
                    .transpose()?
                    .and_then(|c| u64::try_from(c).ok());
                return Ok(Take::Refused {
                    resets_at: time_of_millis(start + window, &counter.key)?,
                    count,
                });
            }
            if self.restart_window(counter, cost, now, seen).await? {
                return Ok(Take::Taken { count: cost });
            }
        }
        Err(unavailable("the counter kept changing under contention"))
    }

    async fn give_back(&self, counter: &Counter, cost: u64) -> Result<(), LimitStoreError> {
        let cost = i64::try_from(cost).unwrap_or(i64::MAX);
        let out = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(self.key(&counter.key)))
            .update_expression("ADD n :minus")
            .condition_expression("attribute_exists(pk) AND n >= :cost")
            .expression_attribute_values(":minus", n(-cost))
            .expression_attribute_values(":cost", n(cost))
            .send()
            .await;
        // Not applied: already a new window (or gone), nothing of this take to give back.
        applied(out).map(|_| ())
    }

    async fn claim(
        &self,
        key: &IdempotencyKey,
        record: &IdempotencyRecord,
        now: DateTime<Utc>,
    ) -> Result<Claim, LimitStoreError> {
        for _ in 0..2 {
            let out = self
                .client
                .put_item()
                .table_name(&self.table)
                .item("pk", AttributeValue::S(key.as_str().to_string()))
                .item("fingerprint", AttributeValue::S(record.fingerprint.clone()))
                .item("status", n(i64::from(record.status)))
                .item("response", AttributeValue::S(record.response.clone()))
                .item("done", AttributeValue::Bool(record.done))
                .item("claimed_at", n(millis(record.claimed_at)))
                .item("expires_at", n(record.expires_at.timestamp()))
                // DynamoDB deletes expired items late (hours): an expired record is free.
                .condition_expression("attribute_not_exists(pk) OR expires_at < :now")
                .expression_attribute_values(":now", n(now.timestamp()))
                .send()
                .await;
            if applied(out)?.is_some() {
                return Ok(Claim::Claimed);
            }
            if let Some(item) = self.get(key.as_str()).await? {
                return Ok(Claim::Existing(record_of(&item, key.as_str())?));
            }
            // Released between the put and the read: try once more.
        }
        Err(unavailable("the idempotency record kept changing"))
    }

    async fn lookup(
        &self,
        key: &IdempotencyKey,
    ) -> Result<Option<IdempotencyRecord>, LimitStoreError> {
        self.get(key.as_str())
            .await?
            .map(|item| record_of(&item, key.as_str()))
            .transpose()
    }

    async fn settle(&self, key: &IdempotencyKey) -> Result<(), LimitStoreError> {
        self.client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(self.key(key.as_str())))
            .update_expression("SET done = :t")
            .condition_expression("attribute_exists(pk)")
            .expression_attribute_values(":t", AttributeValue::Bool(true))
            .send()
            .await
            .map(|_| ())
            .map_err(sdk_unavailable)
    }

    async fn release(&self, key: &IdempotencyKey) -> Result<(), LimitStoreError> {
        let out = self
            .client
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(self.key(key.as_str())))
            .condition_expression("done = :f")
            .expression_attribute_values(":f", AttributeValue::Bool(false))
            .send()
            .await;
        // Not applied: settled (final) or already gone.
        applied(out).map(|_| ())
    }

    async fn take_over(
        &self,
        key: &IdempotencyKey,
        seen: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<bool, LimitStoreError> {
        let out = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(self.key(key.as_str())))
            .update_expression("SET claimed_at = :now")
            .condition_expression("claimed_at = :seen AND done = :f")
            .expression_attribute_values(":now", n(millis(now)))
            .expression_attribute_values(":seen", n(millis(seen)))
            .expression_attribute_values(":f", AttributeValue::Bool(false))
            .send()
            .await;
        Ok(applied(out)?.is_some())
    }
}
