//! The per-function database roles: on AWS every function logs in through RDS
//! Proxy as its own role (`floodgate_<function>`) with an IAM auth token, so each role must
//! exist with `LOGIN`, be a member of `rds_iam`, and hold the privileges the pipeline needs —
//! reading and writing rows and calling the schema's functions, never owning or dropping
//! tables (the tables belong to the master user, who runs the migrations).
//!
//! Session limits are the roles' defaults (`ALTER ROLE … SET`), not a run-time `SET`, which
//! would pin the client's session on RDS Proxy.
//!
//! [`bootstrap_sql`] is pure and idempotent: run it on every `migrate`, as often as wanted.

use crate::error::DbError;
use crate::lane::WriterConnection;

/// `statement_timeout` every function role gets by default.
pub const ROLE_STATEMENT_TIMEOUT: &str = "10s";
/// `idle_in_transaction_session_timeout` every function role gets by default.
pub const ROLE_IDLE_IN_TRANSACTION_TIMEOUT: &str = "60s";

/// Arbitrary constant serialising concurrent bootstraps (two `CREATE ROLE` racing on the
/// same name would otherwise fail one of them).
const BOOTSTRAP_LOCK: i64 = 0x466c_6f6f_6452_6f6c; // "FloodRol"

/// Checks a role name: lower-case ASCII letters, digits and `_`, starting with a letter, at
/// most 63 bytes (PostgreSQL's identifier limit), and not in the reserved `pg_` namespace.
/// Only names that pass are ever written into SQL.
pub fn validate_role_name(name: &str) -> Result<(), DbError> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && !name.starts_with("pg_");
    if ok {
        Ok(())
    } else {
        Err(DbError::Config(format!(
            "invalid database role name {name:?}: use a-z, 0-9 and _, start with a letter, \
             at most 63 characters, not pg_*"
        )))
    }
}

/// Splits a comma-separated role list (`FLOODGATE_DB_USERS`), trimming blanks.
pub fn parse_role_list(list: &str) -> Vec<String> {
    list.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// The SQL that creates (if missing) and configures each role in `users`. Idempotent. With
/// `grant_rds_iam` the roles join `rds_iam` (the role exists only on RDS/Aurora; pass
/// `false` against a plain PostgreSQL). Rejects an empty list and any invalid name with
/// [`DbError::Config`]. Default privileges are set for objects the *executing* role
/// creates later: run it as the role that runs the migrations.
pub fn bootstrap_sql(users: &[String], grant_rds_iam: bool) -> Result<String, DbError> {
    if users.is_empty() {
        return Err(DbError::Config("no database roles to bootstrap".into()));
    }
    for u in users {
        validate_role_name(u)?;
    }
    let mut seen = std::collections::BTreeSet::new();
    let mut sql = format!("SELECT pg_advisory_xact_lock({BOOTSTRAP_LOCK});\n");
    for u in users.iter().filter(|u| seen.insert(u.as_str())) {
        // `u` is validated above: [a-z][a-z0-9_]*, so both quotings below are exact.
        let ident = format!("\"{u}\"");
        sql.push_str(&format!(
            "DO $floodgate$\n\
             BEGIN\n\
             \x20   IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = '{u}') THEN\n\
             \x20       CREATE ROLE {ident} WITH LOGIN;\n\
             \x20   END IF;\n\
             \x20   EXECUTE format('GRANT CONNECT ON DATABASE %I TO %I', current_database(), '{u}');\n\
             END\n\
             $floodgate$;\n\
             ALTER ROLE {ident} WITH LOGIN;\n"
        ));
        if grant_rds_iam {
            // Granting a membership the role already has is a notice, not an error.
            sql.push_str(&format!("GRANT rds_iam TO {ident};\n"));
        }
        sql.push_str(&format!(
            "GRANT USAGE ON SCHEMA public TO {ident};\n\
             GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {ident};\n\
             GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {ident};\n\
             GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA public TO {ident};\n\
             ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO {ident};\n\
             ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT USAGE, SELECT ON SEQUENCES TO {ident};\n\
             ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT EXECUTE ON FUNCTIONS TO {ident};\n\
             ALTER ROLE {ident} SET statement_timeout = '{ROLE_STATEMENT_TIMEOUT}';\n\
             ALTER ROLE {ident} SET idle_in_transaction_session_timeout = '{ROLE_IDLE_IN_TRANSACTION_TIMEOUT}';\n"
        ));
    }
    Ok(sql)
}

/// Runs [`bootstrap_sql`] on `client` as one implicit transaction (one simple query): all
/// roles are configured, or none. Use a direct connection as the migrating (master) user.
pub async fn bootstrap_roles(
    client: &WriterConnection,
    users: &[String],
    grant_rds_iam: bool,
) -> Result<(), DbError> {
    let sql = bootstrap_sql(users, grant_rds_iam)?;
    client.batch_execute(&sql).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn invalid_names_are_rejected() {
        for bad in [
            "bad;name",
            "",
            "1abc",
            "_abc",
            "Floodgate",
            "floodgate-ingest",
            "a b",
            "x\"; DROP TABLE notifications; --",
            "o'neil",
            "pg_monitor",
            "é",
            &"a".repeat(64),
        ] {
            let e = bootstrap_sql(&names(&["floodgate_ingest", bad]), true).unwrap_err();
            assert!(matches!(e, DbError::Config(_)), "{bad:?}: {e}");
        }
        assert!(validate_role_name(&"a".repeat(63)).is_ok());
        assert!(matches!(
            bootstrap_sql(&[], false).unwrap_err(),
            DbError::Config(_)
        ));
    }

    #[test]
    fn every_role_is_created_idempotently_and_configured() {
        let users = names(&["floodgate_ingest", "floodgate_persist", "floodgate_admin"]);
        let sql = bootstrap_sql(&users, true).unwrap();
        for u in &users {
            assert!(
                sql.contains(&format!("WHERE rolname = '{u}') THEN")),
                "{u}: {sql}"
            );
            for stmt in [
                format!("CREATE ROLE \"{u}\" WITH LOGIN;"),
                format!("ALTER ROLE \"{u}\" WITH LOGIN;"),
                format!("GRANT rds_iam TO \"{u}\";"),
                format!("GRANT USAGE ON SCHEMA public TO \"{u}\";"),
                format!(
                    "GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO \"{u}\";"
                ),
                format!("GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA public TO \"{u}\";"),
                format!(
                    "ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO \"{u}\";"
                ),
                format!(
                    "ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT EXECUTE ON FUNCTIONS TO \"{u}\";"
                ),
                format!("ALTER ROLE \"{u}\" SET statement_timeout = '10s';"),
                format!("ALTER ROLE \"{u}\" SET idle_in_transaction_session_timeout = '60s';"),
            ] {
                assert_eq!(sql.matches(&stmt).count(), 1, "{stmt}\n{sql}");
            }
        }
        // Idempotent forms only: the CREATE sits behind an existence check, and nothing
        // drops or re-creates anything.
        assert_eq!(sql.matches("IF NOT EXISTS").count(), users.len(), "{sql}");
        assert!(!sql.contains("DROP"), "{sql}");
        assert!(!sql.contains("PASSWORD"), "{sql}");
        assert!(sql.contains("GRANT CONNECT ON DATABASE %I TO %I"), "{sql}");
        assert!(sql.starts_with("SELECT pg_advisory_xact_lock("), "{sql}");
        // Same input, same SQL.
        assert_eq!(sql, bootstrap_sql(&users, true).unwrap());
    }

    #[test]
    fn rds_iam_only_when_asked_and_duplicates_once() {
        let sql = bootstrap_sql(&names(&["floodgate_send", "floodgate_send"]), false).unwrap();
        assert!(!sql.contains("rds_iam"), "{sql}");
        assert_eq!(sql.matches("CREATE ROLE \"floodgate_send\"").count(), 1);
    }

    #[test]
    fn role_lists_parse() {
        assert_eq!(
            parse_role_list(" floodgate_admin,floodgate_ingest ,, "),
            names(&["floodgate_admin", "floodgate_ingest"])
        );
        assert!(parse_role_list("").is_empty());
    }
}
