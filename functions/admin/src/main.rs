//! `floodgate-admin`: a CLI locally; a Lambda (payload `{"command": "migrate"}`) on AWS.

use clap::{Parser, Subcommand};
use floodgate_admin::{AdminCommand, DEFAULT_RETENTION_DAYS, run};
use floodgate_db::WriterLane;
use lambda_runtime::{Error, LambdaEvent, service_fn};

#[derive(Parser)]
#[command(about = "Floodgate admin: migrations and maintenance (uses FLOODGATE_WRITER_URL)")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Apply pending migrations and create the partitions ahead.
    Migrate,
    /// Create partitions ahead and drop those older than the retention.
    Maintain {
        #[arg(long, default_value_t = DEFAULT_RETENTION_DAYS)]
        retention_days: u64,
    },
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    floodgate_obs::init("admin");
    let writer = WriterLane::from_env("floodgate-admin").await?;
    if std::env::var_os("AWS_LAMBDA_RUNTIME_API").is_some() {
        let writer = &writer;
        return lambda_runtime::run(service_fn(
            move |event: LambdaEvent<AdminCommand>| async move {
                Ok::<_, Error>(run(writer, &event.payload).await?)
            },
        ))
        .await;
    }
    let command = match Cli::parse().command {
        Command::Migrate => AdminCommand::Migrate,
        Command::Maintain { retention_days } => AdminCommand::Maintain { retention_days },
    };
    let outcome = run(&writer, &command).await?;
    println!("{}", serde_json::to_string_pretty(&outcome)?);
    Ok(())
}
