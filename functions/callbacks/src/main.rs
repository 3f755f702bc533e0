//! The `callbacks` Lambda: builds its HTTP client and queue client once, then serves SQS
//! batches. It touches no database (so it runs outside the VPC, with internet egress).

use aws_lambda_events::event::sqs::SqsEvent;
use floodgate_aws::SqsQueue;
use floodgate_callbacks::Callbacks;
use floodgate_core::Knobs;
use lambda_runtime::{Error, LambdaEvent, service_fn};
use std::sync::Arc;

#[tokio::main]
async fn main() -> Result<(), Error> {
    floodgate_obs::init("callbacks");
    let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let callbacks = Callbacks::new(
        Arc::new(SqsQueue::from_env(&sdk)),
        Arc::new(floodgate_core::auth::SecretBox::from_env()?),
        &Knobs::embedded(),
        false,
    )?;
    let callbacks = &callbacks;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<SqsEvent>| async move {
        let (response, _report) = callbacks.handle(event.payload).await?;
        Ok::<_, Error>(response)
    }))
    .await
}
