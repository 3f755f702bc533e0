//! Admin commands: migrations and partition maintenance (issue 3 adds services, keys and
//! templates). The same code runs as a CLI locally and as a Lambda inside the VPC on AWS,
//! where the database is private.

use chrono::Utc;
use floodgate_db::{DbError, WriterLane, maintain_partitions, migrate};
use serde::{Deserialize, Serialize};

/// How many daily partitions exist ahead of today: a week of slack if the scheduled
/// maintenance stops running (persist also creates a missing partition on demand).
pub const PARTITIONS_AHEAD_DAYS: u64 = 7;
/// Default retention: Notify keeps notifications 7 days by default; we keep a week more.
pub const DEFAULT_RETENTION_DAYS: u64 = 14;

/// A command, as the CLI parses it and as the admin Lambda receives it in JSON
/// (`{"command": "migrate"}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "kebab-case")]
pub enum AdminCommand {
    /// Apply pending migrations, then create the partitions ahead.
    Migrate,
    /// Create partitions ahead and drop those past retention.
    Maintain {
        #[serde(default = "default_retention")]
        retention_days: u64,
    },
}

fn default_retention() -> u64 {
    DEFAULT_RETENTION_DAYS
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdminOutcome {
    pub applied_migrations: Vec<i32>,
    pub partitions_created: i32,
    pub partitions_dropped: i32,
}

pub async fn run(writer: &WriterLane, command: &AdminCommand) -> Result<AdminOutcome, DbError> {
    let conn = writer.acquire().await?;
    let today = Utc::now().date_naive();
    match command {
        AdminCommand::Migrate => {
            let applied = conn.bounded(migrate(&conn)).await?;
            // Never drop anything on migrate: retention is an explicit maintenance choice.
            let m = conn
                .bounded(maintain_partitions(
                    &conn,
                    today,
                    PARTITIONS_AHEAD_DAYS,
                    36_500,
                ))
                .await?;
            Ok(AdminOutcome {
                applied_migrations: applied,
                partitions_created: m.created,
                partitions_dropped: m.dropped,
            })
        }
        AdminCommand::Maintain { retention_days } => {
            let m = conn
                .bounded(maintain_partitions(
                    &conn,
                    today,
                    PARTITIONS_AHEAD_DAYS,
                    (*retention_days).max(1),
                ))
                .await?;
            Ok(AdminOutcome {
                applied_migrations: vec![],
                partitions_created: m.created,
                partitions_dropped: m.dropped,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lambda_payloads_parse() {
        let m: AdminCommand = serde_json::from_str(r#"{"command":"migrate"}"#).unwrap();
        assert_eq!(m, AdminCommand::Migrate);
        let m: AdminCommand = serde_json::from_str(r#"{"command":"maintain"}"#).unwrap();
        assert_eq!(m, AdminCommand::Maintain { retention_days: 14 });
        assert!(serde_json::from_str::<AdminCommand>(r#"{"command":"drop-all"}"#).is_err());
    }
}
