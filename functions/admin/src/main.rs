//! `floodgate-admin`: a CLI locally; a Lambda (payload `{"command": "migrate"}`,
//! `{"command": "issue-key", "service_id": "...", "name": "..."}`, ...) on AWS. Both read
//! FLOODGATE_WRITER_URL (and the other lane variables) and, to issue keys,
//! FLOODGATE_API_KEY_ENCRYPTION_KEY. With FLOODGATE_BOOTSTRAP_HOST set (the Lambda on AWS),
//! `migrate` runs as the master user and bootstraps the function roles
//! ([`floodgate_admin::Bootstrap`]).

use clap::Parser;
use floodgate_admin::{Admin, AdminCommand, Bootstrap};
use floodgate_api::secret_box_from_env;
use floodgate_aws::{QueueSender, SqsQueue};
use floodgate_core::{ProcessType, QueueName};
use floodgate_db::WriterLane;
use lambda_runtime::{Error, LambdaEvent, service_fn};
use std::sync::Arc;

#[derive(Parser)]
#[command(
    about = "Floodgate admin: migrations, maintenance, services, API keys, templates (uses FLOODGATE_WRITER_URL)"
)]
struct Cli {
    #[command(subcommand)]
    command: AdminCommand,
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    floodgate_obs::init("admin");
    let in_lambda = std::env::var_os("AWS_LAMBDA_RUNTIME_API").is_some();
    let command = if in_lambda {
        None
    } else {
        Some(Cli::parse().command)
    };
    if let Some(AdminCommand::GenerateEncryptionKey) = command {
        let key = floodgate_core::auth::generate_encryption_key();
        println!("FLOODGATE_API_KEY_ENCRYPTION_KEY={key}");
        return Ok(());
    }
    let writer = WriterLane::from_env("floodgate-admin").await?;
    // Only issuing keys and setting callbacks need the encryption key.
    let secrets = secret_box_from_env().ok();
    let bootstrap = Bootstrap::from_env()?;
    // The send queues, where configured (the Lambda on AWS): `maintain` re-forwards
    // notifications whose send message was lost.
    let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let sqs = SqsQueue::from_env(&sdk);
    let queue: Option<Arc<dyn QueueSender>> = sqs
        .url(QueueName::Send(ProcessType::Normal))
        .is_ok()
        .then(|| Arc::new(sqs) as Arc<dyn QueueSender>);
    let admin = Admin::new(writer, secrets, bootstrap, queue);
    if let Some(command) = command {
        let outcome = admin.execute(&command).await?;
        println!("{}", serde_json::to_string_pretty(&outcome)?);
        return Ok(());
    }
    let admin = &admin;
    lambda_runtime::run(service_fn(
        move |event: LambdaEvent<AdminCommand>| async move {
            Ok::<_, Error>(admin.execute(&event.payload).await?)
        },
    ))
    .await
}
