//! The `ingest` Lambda: builds its clients once, then serves API Gateway requests.

use aws_lambda_events::apigw::ApiGatewayV2httpRequest;
use floodgate_api::{ApiCatalog, CachePolicy, secret_box_from_env};
use floodgate_aws::{DynamoLimitStore, SqsQueue};
use floodgate_core::Knobs;
use floodgate_db::ReaderLane;
use floodgate_ingest::Ingest;
use lambda_runtime::{Error, LambdaEvent, service_fn};
use std::sync::Arc;

#[tokio::main]
async fn main() -> Result<(), Error> {
    floodgate_obs::init("ingest");
    let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let knobs = Knobs::embedded();
    let reader = ReaderLane::from_env("floodgate-ingest").await?;
    let secrets = Arc::new(secret_box_from_env()?);
    let ingest = Ingest::new(
        Arc::new(ApiCatalog::new(reader, secrets, CachePolicy::from_env())),
        Arc::new(SqsQueue::from_env(&sdk)),
        Arc::new(DynamoLimitStore::from_env(&sdk)?),
        &knobs,
    );
    let ingest = &ingest;
    lambda_runtime::run(service_fn(
        move |event: LambdaEvent<ApiGatewayV2httpRequest>| async move {
            Ok::<_, Error>(ingest.handle(event.payload).await)
        },
    ))
    .await
}
