//! The `send` Lambda: builds its clients once, then serves SQS batches.

use aws_lambda_events::event::sqs::SqsEvent;
use floodgate_aws::mail::SesMailer;
use floodgate_aws::{DynamoLimitStore, SqsQueue};
use floodgate_core::Knobs;
use floodgate_db::WriterLane;
use floodgate_send::{SendConfig, Sender, invocation_deadline};
use lambda_runtime::{Error, LambdaEvent, service_fn};
use std::sync::Arc;

#[tokio::main]
async fn main() -> Result<(), Error> {
    floodgate_obs::init("send");
    let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let knobs = Arc::new(Knobs::embedded());
    let config = SendConfig::from_env(&knobs)?;
    let send = Sender::new(
        WriterLane::from_env("floodgate-send").await?,
        Arc::new(SesMailer::from_env(&sdk)),
        Arc::new(SqsQueue::from_env(&sdk)),
        knobs,
        config,
    )
    // Every instance leases the account's rate from the limit store's table.
    .with_shared_budget(Arc::new(DynamoLimitStore::from_env(&sdk)?));
    let send = &send;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<SqsEvent>| async move {
        let deadline = send.sending_deadline(invocation_deadline(event.context.deadline));
        let (response, _report) = send.handle(event.payload, deadline).await?;
        Ok::<_, Error>(response)
    }))
    .await
}
