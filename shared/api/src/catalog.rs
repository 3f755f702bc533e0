//! What the API functions read about services, keys and templates: from the reader lane,
//! cached in the instance (TTL + stale-if-error, see [`crate::cache`]). A revoked key or an
//! archived service stops working within one TTL.

use crate::cache::{Cache, CachePolicy};
use crate::error::{ApiError, from_db};
use floodgate_core::KeyType;
use floodgate_core::auth::{
    AuthError, Credential, KeyForAuth, SecretBox, ServiceForAuth, authenticate_api_key,
    authenticate_jwt, parse_authorization, secret_digest, token_issuer,
};
use floodgate_core::keys::TeamAndGuestList;
use floodgate_core::limits::ServiceLimits;
use floodgate_db::catalog::{
    ReplyToRow, ServiceWithKeys, TemplateRow, fetch_reply_to, fetch_service_with_keys,
    fetch_template, find_key_by_digest,
};
use floodgate_db::{DbError, ReaderLane};
use std::sync::Arc;
use uuid::Uuid;

/// A service as the API needs it: authentication data and the sender address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceEntry {
    pub auth: ServiceForAuth,
    pub name: String,
    pub from_email: String,
    pub limits: ServiceLimits,
    /// Whom a team key may send to, cached with the keys.
    pub team_and_guest_list: Arc<TeamAndGuestList>,
}

/// Who is calling: the outcome of authentication.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub service_id: Uuid,
    pub service_name: String,
    pub from_email: String,
    pub api_key_id: Uuid,
    pub key_type: KeyType,
    pub limits: ServiceLimits,
    pub team_and_guest_list: Arc<TeamAndGuestList>,
}

pub struct ApiCatalog {
    reader: ReaderLane,
    secrets: Arc<SecretBox>,
    services: Cache<Uuid, Option<Arc<ServiceEntry>>>,
    digests: Cache<Vec<u8>, Option<(Uuid, Uuid)>>,
    templates: Cache<Uuid, Option<Arc<TemplateRow>>>,
    reply_tos: Cache<(Uuid, Uuid), Option<Arc<ReplyToRow>>>,
}

impl ApiCatalog {
    pub fn new(reader: ReaderLane, secrets: Arc<SecretBox>, policy: CachePolicy) -> Self {
        ApiCatalog {
            reader,
            secrets,
            services: Cache::new(policy),
            digests: Cache::new(policy),
            templates: Cache::new(policy),
            reply_tos: Cache::new(policy),
        }
    }

    pub fn reader(&self) -> &ReaderLane {
        &self.reader
    }

    async fn load_service(&self, id: Uuid) -> Result<Option<Arc<ServiceEntry>>, DbError> {
        let conn = self.reader.acquire().await?;
        let Some(ServiceWithKeys {
            service,
            keys,
            team_members,
            guest_list,
        }) = conn.bounded(fetch_service_with_keys(&conn, id)).await?
        else {
            return Ok(None);
        };
        let mut auth_keys = Vec::with_capacity(keys.len());
        for k in keys {
            let Ok(secret) = self.secrets.open(k.id, &k.secret_ciphertext) else {
                // Only the key id is logged: never the secret or its ciphertext.
                tracing::error!(api_key_id = %k.id, "API key cannot be opened; check FLOODGATE_API_KEY_ENCRYPTION_KEY");
                continue;
            };
            auth_keys.push(KeyForAuth {
                id: k.id,
                key_type: k.key_type,
                secret,
                revoked: k.expiry_date.is_some(),
            });
        }
        Ok(Some(Arc::new(ServiceEntry {
            auth: ServiceForAuth {
                id: service.id,
                active: service.active,
                keys: auth_keys,
            },
            name: service.name,
            from_email: service.from_email,
            limits: service.limits,
            team_and_guest_list: Arc::new(TeamAndGuestList::new(
                team_members.iter().chain(&guest_list),
            )),
        })))
    }

    pub async fn service(&self, id: Uuid) -> Result<Option<Arc<ServiceEntry>>, ApiError> {
        self.services
            .get_or_load(&id, || self.load_service(id))
            .await
            .map(|(v, _)| v)
            .map_err(|e| from_db(&e))
    }

    /// Authenticates the `Authorization` header at `now` (seconds since the epoch).
    pub async fn authenticate(&self, header: Option<&str>, now: i64) -> Result<Caller, ApiError> {
        let (entry, key) = match parse_authorization(header)? {
            Credential::Jwt(token) => {
                let service_id = token_issuer(token)?;
                let entry = self
                    .service(service_id)
                    .await?
                    .ok_or(AuthError::ServiceNotFound)?;
                let key = authenticate_jwt(&entry.auth, token, now)?.clone();
                (entry, key)
            }
            Credential::ApiKey { service_id, secret } => {
                let digest = secret_digest(secret);
                let found = self
                    .digests
                    .get_or_load(&digest, || async {
                        let conn = self.reader.acquire().await?;
                        conn.bounded(find_key_by_digest(&conn, &digest)).await
                    })
                    .await
                    .map_err(|e| from_db(&e))?
                    .0;
                let (key_id, owner) = found.ok_or(AuthError::ApiKeyNotFound)?;
                let entry = self
                    .service(owner)
                    .await?
                    .ok_or(AuthError::ServiceNotFound)?;
                let key = authenticate_api_key(&entry.auth, key_id, service_id)?.clone();
                (entry, key)
            }
        };
        Ok(Caller {
            service_id: entry.auth.id,
            service_name: entry.name.clone(),
            from_email: entry.from_email.clone(),
            api_key_id: key.id,
            key_type: key.key_type,
            limits: entry.limits,
            team_and_guest_list: entry.team_and_guest_list.clone(),
        })
    }

    /// A template by id, whatever its service (the caller checks ownership).
    pub async fn template(&self, id: Uuid) -> Result<Option<Arc<TemplateRow>>, ApiError> {
        self.templates
            .get_or_load(&id, || async {
                let conn = self.reader.acquire().await?;
                Ok(conn.bounded(fetch_template(&conn, id)).await?.map(Arc::new))
            })
            .await
            .map(|(v, _)| v)
            .map_err(|e| from_db(&e))
    }

    /// One of a service's reply-to addresses, archived or not (the caller decides).
    pub async fn reply_to(
        &self,
        service_id: Uuid,
        id: Uuid,
    ) -> Result<Option<Arc<ReplyToRow>>, ApiError> {
        self.reply_tos
            .get_or_load(&(service_id, id), || async {
                let conn = self.reader.acquire().await?;
                Ok(conn
                    .bounded(fetch_reply_to(&conn, service_id, id))
                    .await?
                    .map(Arc::new))
            })
            .await
            .map(|(v, _)| v)
            .map_err(|e| from_db(&e))
    }

    /// Puts entries in the cache directly (the benchmark measures the handler without a
    /// database).
    pub fn prime(&self, service: ServiceEntry, templates: Vec<TemplateRow>) {
        for k in &service.auth.keys {
            self.digests
                .insert(secret_digest(&k.secret), Some((k.id, service.auth.id)));
        }
        self.services
            .insert(service.auth.id, Some(Arc::new(service)));
        for t in templates {
            self.templates.insert(t.id, Some(Arc::new(t)));
        }
    }
}
