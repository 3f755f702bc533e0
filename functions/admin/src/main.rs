//! `floodgate-admin`: a CLI locally; a Lambda (payload `{"command": "migrate"}`,
//! `{"command": "issue-key", "service_id": "...", "name": "..."}`, ...) on AWS. Both read
//! FLOODGATE_WRITER_URL (and the other lane variables) and, to issue keys,
//! FLOODGATE_API_KEY_ENCRYPTION_KEY. With FLOODGATE_BOOTSTRAP_HOST set (the Lambda on AWS),
//! `migrate` runs as the master user and bootstraps the function roles
//! ([`floodgate_admin::Bootstrap`]).

use clap::{Parser, Subcommand};
use floodgate_admin::{AdminCommand, Bootstrap, DEFAULT_RETENTION_DAYS, execute_with_bootstrap};
use floodgate_api::secret_box_from_env;
use floodgate_db::WriterLane;
use lambda_runtime::{Error, LambdaEvent, service_fn};
use uuid::Uuid;

#[derive(Parser)]
#[command(
    about = "Floodgate admin: migrations, maintenance, services, API keys, templates (uses FLOODGATE_WRITER_URL)"
)]
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
    /// Create a service.
    CreateService {
        #[arg(long)]
        name: String,
        #[arg(long)]
        from_email: String,
        #[arg(long)]
        id: Option<Uuid>,
    },
    /// Archive a service (its keys stop working).
    ArchiveService {
        #[arg(long)]
        service_id: Uuid,
    },
    /// Issue an API key; the key is printed once, as `<name>-<service_id>-<secret>`.
    IssueKey {
        #[arg(long)]
        service_id: Uuid,
        #[arg(long)]
        name: String,
        /// normal, team or test.
        #[arg(long, default_value = "normal")]
        key_type: String,
    },
    /// Revoke an API key.
    RevokeKey {
        #[arg(long)]
        service_id: Uuid,
        #[arg(long)]
        key_id: Uuid,
    },
    /// Create a template, or (with --id) store a new version of it.
    PutTemplate {
        #[arg(long)]
        service_id: Uuid,
        #[arg(long)]
        id: Option<Uuid>,
        #[arg(long)]
        name: String,
        #[arg(long)]
        subject: String,
        /// Markdown with ((placeholders)).
        #[arg(long)]
        body: String,
        /// priority, normal or bulk.
        #[arg(long, default_value = "normal")]
        process_type: String,
    },
    /// List services, or one service's keys and templates.
    List {
        #[arg(long)]
        service_id: Option<Uuid>,
    },
    /// Print a fresh FLOODGATE_API_KEY_ENCRYPTION_KEY.
    GenerateEncryptionKey,
}

impl From<Command> for AdminCommand {
    fn from(c: Command) -> Self {
        match c {
            Command::Migrate => AdminCommand::Migrate,
            Command::Maintain { retention_days } => AdminCommand::Maintain { retention_days },
            Command::CreateService {
                name,
                from_email,
                id,
            } => AdminCommand::CreateService {
                name,
                from_email,
                id,
            },
            Command::ArchiveService { service_id } => AdminCommand::ArchiveService { service_id },
            Command::IssueKey {
                service_id,
                name,
                key_type,
            } => AdminCommand::IssueKey {
                service_id,
                name,
                key_type,
            },
            Command::RevokeKey { service_id, key_id } => {
                AdminCommand::RevokeKey { service_id, key_id }
            }
            Command::PutTemplate {
                service_id,
                id,
                name,
                subject,
                body,
                process_type,
            } => AdminCommand::PutTemplate {
                service_id,
                id,
                name,
                subject,
                body,
                process_type,
            },
            Command::List { service_id } => AdminCommand::List { service_id },
            Command::GenerateEncryptionKey => AdminCommand::GenerateEncryptionKey,
        }
    }
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    floodgate_obs::init("admin");
    let in_lambda = std::env::var_os("AWS_LAMBDA_RUNTIME_API").is_some();
    let command = if in_lambda {
        None
    } else {
        Some(AdminCommand::from(Cli::parse().command))
    };
    if let Some(AdminCommand::GenerateEncryptionKey) = command {
        let key = floodgate_core::auth::generate_encryption_key();
        println!("FLOODGATE_API_KEY_ENCRYPTION_KEY={key}");
        return Ok(());
    }
    let writer = WriterLane::from_env("floodgate-admin").await?;
    // Only issuing keys needs the encryption key; other commands run without it.
    let secrets = secret_box_from_env().ok();
    let bootstrap = Bootstrap::from_env()?;
    if let Some(command) = command {
        let outcome =
            execute_with_bootstrap(&writer, secrets.as_ref(), bootstrap.as_ref(), &command).await?;
        println!("{}", serde_json::to_string_pretty(&outcome)?);
        return Ok(());
    }
    let (writer, secrets, bootstrap) = (&writer, secrets.as_ref(), bootstrap.as_ref());
    lambda_runtime::run(service_fn(
        move |event: LambdaEvent<AdminCommand>| async move {
            Ok::<_, Error>(
                execute_with_bootstrap(writer, secrets, bootstrap, &event.payload).await?,
            )
        },
    ))
    .await
}
