//! The `persist` Lambda: builds its clients once, then serves SQS batches.

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use floodgate_aws::SqsQueue;
use floodgate_core::Knobs;
use floodgate_db::WriterLane;
use floodgate_persist::Persist;
use lambda_runtime::{Error, LambdaEvent, service_fn};
use std::sync::Arc;

#[tokio::main]
async fn main() -> Result<(), Error> {
    floodgate_obs::init("persist");
    let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let knobs = Arc::new(Knobs::embedded());
    let persist = Persist::new(
        WriterLane::from_env("floodgate-persist").await?,
        Arc::new(SqsQueue::from_env(&sdk)),
        knobs,
    );
    let persist = &persist;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<SqsEvent>| async move {
        let (response, _report): (SqsBatchResponse, _) = persist.handle(event.payload).await?;
        Ok::<_, Error>(response)
    }))
    .await
}
