//! The `receipts` Lambda: builds its writer lane once, then serves SQS batches.

use aws_lambda_events::event::sqs::SqsEvent;
use floodgate_db::WriterLane;
use floodgate_receipts::Receipts;
use lambda_runtime::{Error, LambdaEvent, service_fn};

#[tokio::main]
async fn main() -> Result<(), Error> {
    floodgate_obs::init("receipts");
    let receipts = Receipts {
        writer: WriterLane::from_env("floodgate-receipts").await?,
    };
    let receipts = &receipts;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<SqsEvent>| async move {
        let (response, _report) = receipts.handle(event.payload).await?;
        Ok::<_, Error>(response)
    }))
    .await
}
