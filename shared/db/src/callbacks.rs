//! A service's callback endpoints (admin commands write them; the statements that set final
//! statuses read them to build the callbacks).

use crate::error::DbError;
use crate::lane::WriterConnection;
use floodgate_core::callback::CallbackKind;
use tokio_postgres::types::Type;
use uuid::Uuid;

/// Sets (or replaces) the service's callback of `kind`. `sealed_token` is the bearer token
/// sealed with the API key encryption key. Returns false when the service does not exist.
pub async fn put_callback(
    client: &WriterConnection,
    service_id: Uuid,
    kind: CallbackKind,
    url: &str,
    sealed_token: &[u8],
) -> Result<bool, DbError> {
    let n = client
        .execute_typed(
            "INSERT INTO service_callbacks (service_id, kind, url, sealed_token)
             SELECT id, $2, $3, $4 FROM services WHERE id = $1
             ON CONFLICT (service_id, kind) DO UPDATE
             SET url = excluded.url, sealed_token = excluded.sealed_token, updated_at = now()",
            &[
                (&service_id, Type::UUID),
                (&kind.as_str(), Type::TEXT),
                (&url, Type::TEXT),
                (&sealed_token, Type::BYTEA),
            ],
        )
        .await?;
    Ok(n == 1)
}

/// Removes the service's callback of `kind`; returns whether there was one.
pub async fn remove_callback(
    client: &WriterConnection,
    service_id: Uuid,
    kind: CallbackKind,
) -> Result<bool, DbError> {
    let n = client
        .execute_typed(
            "DELETE FROM service_callbacks WHERE service_id = $1 AND kind = $2",
            &[(&service_id, Type::UUID), (&kind.as_str(), Type::TEXT)],
        )
        .await?;
    Ok(n == 1)
}
