//! The `status` Lambda: builds its reader lane and cache once, then serves API Gateway
//! requests. It has no writer lane at all.

use aws_lambda_events::apigw::ApiGatewayV2httpRequest;
use floodgate_api::{ApiCatalog, CachePolicy, secret_box_from_env};
use floodgate_db::ReaderLane;
use floodgate_status::Status;
use lambda_runtime::{Error, LambdaEvent, service_fn};
use std::sync::Arc;

#[tokio::main]
async fn main() -> Result<(), Error> {
    floodgate_obs::init("status");
    let reader = ReaderLane::from_env("floodgate-status").await?;
    let secrets = Arc::new(secret_box_from_env()?);
    let status = Status::new(Arc::new(ApiCatalog::new(
        reader,
        secrets,
        CachePolicy::from_env(),
    )));
    let status = &status;
    lambda_runtime::run(service_fn(
        move |event: LambdaEvent<ApiGatewayV2httpRequest>| async move {
            Ok::<_, Error>(status.handle(event.payload).await)
        },
    ))
    .await
}
