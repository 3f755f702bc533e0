//! The `receipts` Lambda: builds its writer lane and queue client once, then serves SQS
//! batches.

use aws_lambda_events::event::sqs::SqsEvent;
use floodgate_aws::SqsQueue;
use floodgate_core::Knobs;
use floodgate_db::WriterLane;
use floodgate_receipts::Receipts;
use lambda_runtime::{Error, LambdaEvent, service_fn};
use std::sync::Arc;

#[tokio::main]
async fn main() -> Result<(), Error> {
    floodgate_obs::init("receipts");
    let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let receipts = Receipts::new(
        WriterLane::from_env("floodgate-receipts").await?,
        Arc::new(SqsQueue::from_env(&sdk)),
        &Knobs::embedded(),
    );
    let receipts = &receipts;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<SqsEvent>| async move {
        let (response, _report) = receipts.handle(event.payload).await?;
        Ok::<_, Error>(response)
    }))
    .await
}
