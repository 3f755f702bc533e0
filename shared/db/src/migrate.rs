//! Versioned SQL migrations, applied in order by `floodgate-admin migrate` (locally and, on
//! AWS, by the admin function inside the VPC). Each migration runs in its own transaction
//! under a transaction-scoped advisory lock, so two migrators never interleave and nothing
//! pins a proxy session.

use crate::error::DbError;
use crate::lane::WriterConnection;
use chrono::{Days, NaiveDate};
use tokio_postgres::Client;
use tokio_postgres::types::Type;

pub struct Migration {
    pub version: i32,
    pub name: &'static str,
    pub sql: &'static str,
}

pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "initial",
        sql: include_str!("../migrations/0001_initial.sql"),
    },
    Migration {
        version: 2,
        name: "sending",
        sql: include_str!("../migrations/0002_sending.sql"),
    },
    Migration {
        version: 3,
        name: "api",
        sql: include_str!("../migrations/0003_api.sql"),
    },
    Migration {
        version: 4,
        name: "partition_owner",
        sql: include_str!("../migrations/0004_partition_owner.sql"),
    },
    Migration {
        version: 5,
        name: "delivery",
        sql: include_str!("../migrations/0005_delivery.sql"),
    },
    Migration {
        version: 6,
        name: "callbacks",
        sql: include_str!("../migrations/0006_callbacks.sql"),
    },
    Migration {
        version: 7,
        name: "process_type",
        sql: include_str!("../migrations/0007_process_type.sql"),
    },
    Migration {
        version: 8,
        name: "limits",
        sql: include_str!("../migrations/0008_limits.sql"),
    },
    Migration {
        version: 9,
        name: "unsubscribe",
        sql: include_str!("../migrations/0009_unsubscribe.sql"),
    },
    Migration {
        version: 10,
        name: "reply_to",
        sql: include_str!("../migrations/0010_reply_to.sql"),
    },
    Migration {
        version: 11,
        name: "scheduled_jobs",
        sql: include_str!("../migrations/0011_scheduled_jobs.sql"),
    },
    Migration {
        version: 12,
        name: "team_and_guest_list",
        sql: include_str!("../migrations/0012_team_and_guest_list.sql"),
    },
];

/// Arbitrary constant identifying Floodgate's migration lock.
const MIGRATION_LOCK: i64 = 0x466c_6f6f_6467_6174; // "Floodgat"

/// Applies the migrations not applied yet; returns the versions applied now.
pub async fn migrate(client: &WriterConnection) -> Result<Vec<i32>, DbError> {
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (
                version    integer PRIMARY KEY,
                name       text NOT NULL,
                applied_at timestamptz NOT NULL DEFAULT now()
            )",
        )
        .await?;
    let mut applied = Vec::new();
    for m in MIGRATIONS {
        match apply_one(client, m).await {
            Ok(true) => applied.push(m.version),
            Ok(false) => {}
            Err(source) => {
                // Best effort: the server rolls back on disconnect anyway.
                let _ = client.batch_execute("ROLLBACK").await;
                return Err(DbError::Migration {
                    version: m.version,
                    name: m.name,
                    source,
                });
            }
        }
    }
    Ok(applied)
}

async fn apply_one(client: &Client, m: &Migration) -> Result<bool, tokio_postgres::Error> {
    client.batch_execute("BEGIN").await?;
    client
        .query_typed(
            "SELECT pg_advisory_xact_lock($1)",
            &[(&MIGRATION_LOCK, Type::INT8)],
        )
        .await?;
    let done = client
        .query_typed(
            "SELECT 1 FROM schema_migrations WHERE version = $1",
            &[(&m.version, Type::INT4)],
        )
        .await?;
    if !done.is_empty() {
        client.batch_execute("COMMIT").await?;
        return Ok(false);
    }
    client.batch_execute(m.sql).await?;
    client
        .execute_typed(
            "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
            &[(&m.version, Type::INT4), (&m.name, Type::TEXT)],
        )
        .await?;
    client.batch_execute("COMMIT").await?;
    Ok(true)
}

/// What a maintenance pass did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PartitionMaintenance {
    pub created: i32,
    pub dropped: i32,
}

/// Creates the daily partitions from yesterday to `ahead_days` after `today`, and drops
/// those older than `retention_days` (whole partitions: no DELETE, no vacuum storm), and the
/// jobs created on those days.
pub async fn maintain_partitions(
    client: &WriterConnection,
    today: NaiveDate,
    ahead_days: u64,
    retention_days: u64,
) -> Result<PartitionMaintenance, DbError> {
    let from = today - Days::new(1);
    let to = today + Days::new(ahead_days);
    let created = crate::notifications::ensure_partitions(client, from, to).await?;
    let before = today - Days::new(retention_days);
    let row = client
        .query_typed_one(
            "SELECT drop_notification_partitions_before($1)",
            &[(&before, Type::DATE)],
        )
        .await?;
    // The jobs of the dropped days go with them (a few rows a day: a plain DELETE).
    client
        .execute_typed(
            "DELETE FROM jobs WHERE created_at < $1::date",
            &[(&before, Type::DATE)],
        )
        .await?;
    Ok(PartitionMaintenance {
        created,
        dropped: row.get(0),
    })
}
