//! Authentication as Notify does it, as pure functions: parsing the `Authorization` header
//! (`Bearer <JWT>` or GC Notify's `ApiKey-v1 <key>`), checking a JWT against a service's
//! keys, the `<key_name>-<service_id>-<secret>` key format, and the sealing of secrets so the
//! database alone does not reveal them. The messages are Notify's, word for word, because
//! client code and runbooks match on them.

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use uuid::Uuid;

/// How far a token's `iat` may be from our clock, either way (Notify's rule).
pub const MAX_CLOCK_SKEW_SECONDS: i64 = 30;

/// An authentication failure, displayed as Notify's message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("Unauthorized: authentication token must be provided")]
    NoToken,
    #[error("Unauthorized: authentication bearer scheme must be used")]
    WrongScheme,
    #[error("Invalid token: iss field not provided")]
    NoIssuer,
    /// Notify's `GENERAL_TOKEN_ERROR_MESSAGE`: not a JWT at all, or a claim it refuses
    /// (an `aud`, an `exp` in the past).
    #[error(
        "Invalid token: make sure your API token matches the example at https://docs.notifications.service.gov.uk/rest-api.html#authorisation-header"
    )]
    Malformed,
    #[error("Invalid token: algorithm used is not HS256")]
    AlgorithmNotHs256,
    #[error("Invalid token: service id is not the right data type")]
    IssuerNotUuid,
    #[error("Invalid token: service not found")]
    ServiceNotFound,
    #[error("Invalid token: service has no API keys")]
    NoKeys,
    #[error("Invalid token: service is archived")]
    ServiceArchived,
    #[error("Error: Your system clock must be accurate to within 30 seconds")]
    ClockSkew,
    #[error("Invalid token: API key revoked")]
    KeyRevoked,
    /// Signed with none of the service's keys (Notify says the same as for an unknown key).
    #[error("Invalid token: API key not found")]
    SignatureNotFound,
    #[error("Invalid token: API key not found")]
    ApiKeyNotFound,
}

impl AuthError {
    /// Notify answers 401 when no usable credential was sent, 403 when one was refused.
    pub fn status_code(&self) -> u16 {
        match self {
            AuthError::NoToken | AuthError::WrongScheme => 401,
            _ => 403,
        }
    }
}

/// What the `Authorization` header carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential<'a> {
    /// `Bearer <JWT>`: HS256, `iss` = service id, signed with one of the service's secrets.
    Jwt(&'a str),
    /// `ApiKey-v1 <key>`: the whole key (`<name>-<service_id>-<secret>`) or the secret alone.
    ApiKey {
        service_id: Option<Uuid>,
        secret: &'a str,
    },
}

/// Parses the `Authorization` header. The scheme is case-insensitive, as in Notify.
pub fn parse_authorization(header: Option<&str>) -> Result<Credential<'_>, AuthError> {
    let header = header.map(str::trim).filter(|h| !h.is_empty());
    let Some(header) = header else {
        return Err(AuthError::NoToken);
    };
    let (scheme, rest) = header.split_once(' ').ok_or(AuthError::WrongScheme)?;
    let rest = rest.trim();
    if scheme.eq_ignore_ascii_case("bearer") {
        return Ok(Credential::Jwt(rest));
    }
    if scheme.eq_ignore_ascii_case("apikey-v1") {
        if rest.len() == SECRET_LEN {
            return Ok(Credential::ApiKey {
                service_id: None,
                secret: rest,
            });
        }
        return match parse_api_key(rest) {
            Some(k) => Ok(Credential::ApiKey {
                service_id: Some(k.service_id),
                secret: k.secret,
            }),
            None => Err(AuthError::ApiKeyNotFound),
        };
    }
    Err(AuthError::WrongScheme)
}

/// A JWT split into its parts, signature not yet checked. Notify (PyJWT) refuses anything
/// that is not three base64url parts whose first two are JSON objects.
struct Jwt<'t> {
    header: serde_json::Map<String, serde_json::Value>,
    claims: serde_json::Map<String, serde_json::Value>,
    signing_input: &'t str,
    signature: Vec<u8>,
}

fn b64url(part: &str) -> Result<Vec<u8>, AuthError> {
    URL_SAFE_NO_PAD
        .decode(part.trim_end_matches('='))
        .map_err(|_| AuthError::Malformed)
}

fn json_object(bytes: &[u8]) -> Result<serde_json::Map<String, serde_json::Value>, AuthError> {
    match serde_json::from_slice(bytes) {
        Ok(serde_json::Value::Object(m)) => Ok(m),
        _ => Err(AuthError::Malformed),
    }
}

fn parse_jwt(token: &str) -> Result<Jwt<'_>, AuthError> {
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(sig), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(AuthError::Malformed);
    };
    Ok(Jwt {
        header: json_object(&b64url(h)?)?,
        claims: json_object(&b64url(p)?)?,
        signing_input: &token[..h.len() + 1 + p.len()],
        signature: b64url(sig)?,
    })
}

/// Python's `uuid.UUID(s)`: `urn:` and `uuid:` prefixes and braces dropped, hyphens ignored
/// wherever they are, then exactly 32 hex digits. Notify parses ids this way (the `iss`
/// claim, and every `uuid` property of its schemas).
pub fn python_uuid(s: &str) -> Option<Uuid> {
    let hex = s.replace("urn:", "").replace("uuid:", "");
    let hex = hex.trim_matches(|c| c == '{' || c == '}').replace('-', "");
    if hex.len() != 32 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u128::from_str_radix(&hex, 16).ok().map(Uuid::from_u128)
}

/// The service id a JWT claims to come from, read before any signature is checked (the
/// issuer says which keys to check it against).
pub fn token_issuer(token: &str) -> Result<Uuid, AuthError> {
    let jwt = parse_jwt(token)?;
    match jwt.claims.get("iss") {
        None => Err(AuthError::NoIssuer),
        Some(serde_json::Value::String(s)) => python_uuid(s).ok_or(AuthError::IssuerNotUuid),
        Some(_) => Err(AuthError::IssuerNotUuid),
    }
}

/// Why one key did not accept a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JwtCheck {
    /// Not signed with this key, or missing `iss`/`iat` (Notify's `TokenDecodeError`): try
    /// the next key.
    BadSignature,
    /// Signed with this key, but `iat` (or `nbf`) is more than 30 s from `now`.
    ClockSkew,
    /// Signed with this key, but a claim Notify refuses outright (`aud`, an expired `exp`).
    Refused,
}

/// A numeric claim as PyJWT reads it (`int(value)`): a number, truncated, or a string of
/// digits.
fn int_claim(v: &serde_json::Value) -> Option<i64> {
    match v {
        serde_json::Value::Number(n) => n.as_i64().or_else(|| n.as_f64().map(|f| f as i64)),
        serde_json::Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn verify_parsed(jwt: &Jwt<'_>, secret: &str, now: i64) -> Result<(), JwtCheck> {
    use aws_lc_rs::hmac;
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
    hmac::verify(&key, jwt.signing_input.as_bytes(), &jwt.signature)
        .map_err(|_| JwtCheck::BadSignature)?;
    let bound = MAX_CLOCK_SKEW_SECONDS;
    // PyJWT's claim checks (leeway 30 s), in its order.
    let iat = match jwt.claims.get("iat") {
        None => None,
        Some(v) => {
            let iat = int_claim(v).ok_or(JwtCheck::ClockSkew)?;
            if iat > now + bound {
                return Err(JwtCheck::ClockSkew);
            }
            Some(iat)
        }
    };
    if let Some(v) = jwt.claims.get("nbf") {
        let nbf = int_claim(v).ok_or(JwtCheck::BadSignature)?;
        if nbf > now + bound {
            return Err(JwtCheck::ClockSkew);
        }
    }
    if let Some(v) = jwt.claims.get("exp") {
        let exp = int_claim(v).ok_or(JwtCheck::BadSignature)?;
        if exp <= now - bound {
            return Err(JwtCheck::Refused);
        }
    }
    let audience = match jwt.claims.get("aud") {
        None | Some(serde_json::Value::Null) => false,
        Some(serde_json::Value::String(s)) => !s.is_empty(),
        Some(serde_json::Value::Array(a)) => !a.is_empty(),
        Some(_) => true,
    };
    if audience {
        return Err(JwtCheck::Refused);
    }
    // The Notify client library's own checks: iss and iat present, iat not too old.
    if !jwt.claims.contains_key("iss") {
        return Err(JwtCheck::BadSignature);
    }
    let iat = iat.ok_or(JwtCheck::BadSignature)?;
    if now > iat + bound {
        return Err(JwtCheck::ClockSkew);
    }
    Ok(())
}

/// Checks `token` against one secret at time `now` (seconds since the epoch).
pub fn verify_jwt(token: &str, secret: &str, now: i64) -> Result<(), JwtCheck> {
    let jwt = parse_jwt(token).map_err(|_| JwtCheck::BadSignature)?;
    verify_parsed(&jwt, secret, now)
}

/// Signs a token the way the Notify clients do (for tests, tools and the benchmark).
pub fn sign_jwt(service_id: Uuid, secret: &str, iat: i64) -> String {
    use jsonwebtoken::{EncodingKey, Header, encode};
    let claims = serde_json::json!({"iss": service_id.to_string(), "iat": iat});
    // HS256 over a JSON object cannot fail.
    encode(
        &Header::default(),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap_or_default()
}

/// Signs `claims` under `header` with HS256 whatever `alg` the header names, as PyJWT's
/// `jwt.encode` with custom headers does: tests and tools use it to build the malformed
/// tokens Notify must refuse.
pub fn sign_custom_jwt(
    header: &serde_json::Value,
    claims: &serde_json::Value,
    secret: &str,
) -> String {
    use aws_lc_rs::hmac;
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
    let signature = URL_SAFE_NO_PAD.encode(hmac::sign(&key, input.as_bytes()).as_ref());
    format!("{input}.{signature}")
}

/// One API key of a service, secret opened, as authentication needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyForAuth {
    pub id: Uuid,
    pub key_type: crate::KeyType,
    pub secret: String,
    pub revoked: bool,
}

/// A service as authentication needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceForAuth {
    pub id: Uuid,
    pub active: bool,
    pub keys: Vec<KeyForAuth>,
}

/// Notify's decision for a JWT, in Notify's order (app/authentication/auth.py): no keys,
/// archived, the algorithm, then each key in turn (a signature match decides: claims and
/// clock, then revocation).
pub fn authenticate_jwt<'s>(
    service: &'s ServiceForAuth,
    token: &str,
    now: i64,
) -> Result<&'s KeyForAuth, AuthError> {
    if service.keys.is_empty() {
        return Err(AuthError::NoKeys);
    }
    if !service.active {
        return Err(AuthError::ServiceArchived);
    }
    let jwt = parse_jwt(token)?;
    // PyJWT refuses another algorithm before it looks at any signature.
    if jwt.header.get("alg").and_then(|a| a.as_str()) != Some("HS256") {
        return Err(AuthError::AlgorithmNotHs256);
    }
    for key in &service.keys {
        match verify_parsed(&jwt, &key.secret, now) {
            Err(JwtCheck::BadSignature) => continue,
            Err(JwtCheck::ClockSkew) => return Err(AuthError::ClockSkew),
            Err(JwtCheck::Refused) => return Err(AuthError::Malformed),
            Ok(()) if key.revoked => return Err(AuthError::KeyRevoked),
            Ok(()) => return Ok(key),
        }
    }
    Err(AuthError::SignatureNotFound)
}

/// The decision for an `ApiKey-v1` credential, given the key its secret's digest found.
pub fn authenticate_api_key(
    service: &ServiceForAuth,
    key_id: Uuid,
    claimed_service: Option<Uuid>,
) -> Result<&KeyForAuth, AuthError> {
    if claimed_service.is_some_and(|s| s != service.id) {
        return Err(AuthError::ApiKeyNotFound);
    }
    if !service.active {
        return Err(AuthError::ServiceArchived);
    }
    let key = service
        .keys
        .iter()
        .find(|k| k.id == key_id)
        .ok_or(AuthError::ApiKeyNotFound)?;
    if key.revoked {
        return Err(AuthError::KeyRevoked);
    }
    Ok(key)
}

/// A secret is a UUIDv4 string (36 characters), as Notify's are: the clients cut the key's
/// last 36 characters as the secret and the 36 before the last dash as the service id.
pub const SECRET_LEN: usize = 36;

/// The parts of a key as handed to a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKeyParts<'a> {
    pub name: &'a str,
    pub service_id: Uuid,
    pub secret: &'a str,
}

/// Splits `<key_name>-<service_id>-<secret>` the way the Notify clients do.
pub fn parse_api_key(key: &str) -> Option<ApiKeyParts<'_>> {
    if !key.is_ascii() || key.len() < 2 * SECRET_LEN + 1 {
        return None;
    }
    let secret = &key[key.len() - SECRET_LEN..];
    let service = &key[key.len() - 2 * SECRET_LEN - 1..key.len() - SECRET_LEN - 1];
    if key.as_bytes()[key.len() - SECRET_LEN - 1] != b'-' {
        return None;
    }
    let name = key[..key.len() - 2 * SECRET_LEN - 1].trim_end_matches('-');
    Some(ApiKeyParts {
        name,
        service_id: Uuid::parse_str(service).ok()?,
        secret,
    })
}

pub fn format_api_key(name: &str, service_id: Uuid, secret: &str) -> String {
    format!("{name}-{service_id}-{secret}")
}

/// A fresh secret: a random UUIDv4, hyphenated (what Notify issues).
pub fn new_secret() -> String {
    Uuid::new_v4().to_string()
}

/// SHA-256 of a secret: how an `ApiKey-v1` credential finds its key without the database
/// holding the secret. Secrets are 122 random bits, so an unsalted digest reveals nothing.
pub fn secret_digest(secret: &str) -> Vec<u8> {
    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, secret.as_bytes())
        .as_ref()
        .to_vec()
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    #[error(
        "the API key encryption key must be 32 bytes in standard base64 (e.g. from `floodgate-admin generate-encryption-key`)"
    )]
    BadKey,
    #[error("a stored secret could not be opened (wrong encryption key, or tampered row)")]
    CannotOpen,
}

/// AES-256-GCM over API key secrets, with the key row's id as associated data so a
/// ciphertext copied onto another row does not open. Stored form: nonce ‖ ciphertext ‖ tag.
pub struct SecretBox {
    key: LessSafeKey,
    rng: SystemRandom,
}

impl std::fmt::Debug for SecretBox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretBox(..)")
    }
}

/// The environment variable that holds the encryption key of API key secrets and callback
/// bearer tokens.
pub const ENCRYPTION_KEY_ENV: &str = "FLOODGATE_API_KEY_ENCRYPTION_KEY";

impl SecretBox {
    /// From [`ENCRYPTION_KEY_ENV`].
    pub fn from_env() -> Result<Self, String> {
        let key = std::env::var(ENCRYPTION_KEY_ENV)
            .map_err(|_| format!("{ENCRYPTION_KEY_ENV} is not set"))?;
        SecretBox::from_base64(&key).map_err(|e| e.to_string())
    }

    /// From the configured key: 32 bytes, standard base64.
    pub fn from_base64(key: &str) -> Result<Self, SealError> {
        let bytes = STANDARD.decode(key.trim()).map_err(|_| SealError::BadKey)?;
        if bytes.len() != 32 {
            return Err(SealError::BadKey);
        }
        let unbound = UnboundKey::new(&AES_256_GCM, &bytes).map_err(|_| SealError::BadKey)?;
        Ok(SecretBox {
            key: LessSafeKey::new(unbound),
            rng: SystemRandom::new(),
        })
    }

    pub fn seal(&self, key_id: Uuid, secret: &str) -> Result<Vec<u8>, SealError> {
        let mut nonce = [0u8; NONCE_LEN];
        self.rng.fill(&mut nonce).map_err(|_| SealError::BadKey)?;
        let mut in_out = secret.as_bytes().to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(key_id.as_bytes()),
                &mut in_out,
            )
            .map_err(|_| SealError::BadKey)?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&in_out);
        Ok(out)
    }

    pub fn open(&self, key_id: Uuid, sealed: &[u8]) -> Result<String, SealError> {
        if sealed.len() < NONCE_LEN {
            return Err(SealError::CannotOpen);
        }
        let (nonce, ct) = sealed.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| SealError::CannotOpen)?;
        let mut in_out = ct.to_vec();
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(key_id.as_bytes()), &mut in_out)
            .map_err(|_| SealError::CannotOpen)?;
        String::from_utf8(plain.to_vec()).map_err(|_| SealError::CannotOpen)
    }
}

/// A fresh encryption key, standard base64 of 32 random bytes.
pub fn generate_encryption_key() -> String {
    let mut bytes = [0u8; 32];
    // The system RNG does not fail on supported platforms; a zero key would be caught by
    // nobody, so refuse to hand one out.
    if SystemRandom::new().fill(&mut bytes).is_err() {
        return String::new();
    }
    STANDARD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::KeyType;

    fn service(keys: Vec<KeyForAuth>) -> ServiceForAuth {
        ServiceForAuth {
            id: Uuid::from_u128(42),
            active: true,
            keys,
        }
    }

    fn key(n: u128, secret: &str, revoked: bool) -> KeyForAuth {
        KeyForAuth {
            id: Uuid::from_u128(n),
            key_type: KeyType::Normal,
            secret: secret.into(),
            revoked,
        }
    }

    #[test]
    fn headers_parse_like_notify() {
        assert_eq!(parse_authorization(None), Err(AuthError::NoToken));
        assert_eq!(parse_authorization(Some("  ")), Err(AuthError::NoToken));
        assert_eq!(
            parse_authorization(Some("Basic abc")),
            Err(AuthError::WrongScheme)
        );
        assert_eq!(
            parse_authorization(Some("token")),
            Err(AuthError::WrongScheme)
        );
        assert_eq!(
            parse_authorization(Some("bearer a.b.c")),
            Ok(Credential::Jwt("a.b.c"))
        );
        let sid = Uuid::from_u128(7);
        let secret = new_secret();
        let k = format_api_key("live-key", sid, &secret);
        assert_eq!(
            parse_authorization(Some(&format!("ApiKey-v1 {k}"))),
            Ok(Credential::ApiKey {
                service_id: Some(sid),
                secret: &secret
            })
        );
        assert_eq!(
            parse_authorization(Some(&format!("apikey-v1 {secret}"))),
            Ok(Credential::ApiKey {
                service_id: None,
                secret: &secret
            })
        );
        assert_eq!(
            parse_authorization(Some("ApiKey-v1 short")),
            Err(AuthError::ApiKeyNotFound)
        );
        assert_eq!(AuthError::NoToken.status_code(), 401);
        assert_eq!(AuthError::KeyRevoked.status_code(), 403);
    }

    #[test]
    fn api_keys_split_like_the_clients() {
        let sid = Uuid::now_v7();
        let secret = new_secret();
        let k = format_api_key("my-key-with-dashes", sid, &secret);
        let p = parse_api_key(&k).unwrap();
        assert_eq!(p.name, "my-key-with-dashes");
        assert_eq!(p.service_id, sid);
        assert_eq!(p.secret, secret);
        // The python client's own slicing: key[-36:] and key[-73:-37].
        assert_eq!(&k[k.len() - 36..], secret);
        assert_eq!(&k[k.len() - 73..k.len() - 37], sid.to_string());
        assert!(parse_api_key("x").is_none());
        assert!(parse_api_key(&format!("n-{}x{}", sid, secret)).is_none());
    }

    #[test]
    fn issuer_is_read_and_checked() {
        let sid = Uuid::from_u128(9);
        let t = sign_jwt(sid, "s", 1);
        assert_eq!(token_issuer(&t), Ok(sid));
        assert_eq!(token_issuer("nonsense"), Err(AuthError::Malformed));
        let enc =
            |v: serde_json::Value| format!("e30.{}.c2ln", URL_SAFE_NO_PAD.encode(v.to_string()));
        assert_eq!(
            token_issuer(&enc(serde_json::json!({"iat": 1}))),
            Err(AuthError::NoIssuer)
        );
        assert_eq!(
            token_issuer(&enc(serde_json::json!({"iss": "not-a-uuid"}))),
            Err(AuthError::IssuerNotUuid)
        );
        // alphagov/notifications-api app/authentication/auth.py: uuid.UUID(None) fails too.
        assert_eq!(
            token_issuer(&enc(serde_json::json!({"iss": null}))),
            Err(AuthError::IssuerNotUuid)
        );
        assert_eq!(
            token_issuer(&enc(serde_json::json!({"iss": sid.simple().to_string()}))),
            Ok(sid)
        );
        // A payload that is not an object, or a part that is not base64url: not a JWT.
        assert_eq!(token_issuer("e30.WzFd.c2ln"), Err(AuthError::Malformed));
        assert_eq!(token_issuer("e30.e30.*"), Err(AuthError::Malformed));
        assert_eq!(token_issuer(""), Err(AuthError::Malformed));
    }

    /// tests/app/authentication/test_authentication.py (alphagov/notifications-api): the
    /// claims PyJWT and the Notify client check once a key's signature matches.
    #[test]
    fn claims_are_checked_as_pyjwt_does() {
        use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
        let now = 1_700_000_000;
        let good = new_secret();
        let s = service(vec![key(2, &good, false)]);
        let custom = |alg: Algorithm, claims: serde_json::Value| {
            encode(
                &Header::new(alg),
                &claims,
                &EncodingKey::from_secret(good.as_bytes()),
            )
            .unwrap()
        };
        let iss = s.id.to_string();
        let decide = |t: &str| authenticate_jwt(&s, t, now).map(|k| k.id);
        // test_decode_jwt_token_should_not_allow_non_hs256_algorithm
        assert_eq!(
            decide(&custom(
                Algorithm::HS512,
                serde_json::json!({"iss": iss, "iat": now})
            )),
            Err(AuthError::AlgorithmNotHs256)
        );
        // test_decode_jwt_token_should_not_allow_no_iat
        assert_eq!(
            decide(&custom(Algorithm::HS256, serde_json::json!({"iss": iss}))),
            Err(AuthError::SignatureNotFound)
        );
        // test_decode_jwt_token_should_not_allow_extra_claims (an audience)
        assert_eq!(
            decide(&custom(
                Algorithm::HS256,
                serde_json::json!({"iss": iss, "iat": now, "aud": "notifications.service.gov.uk"})
            )),
            Err(AuthError::Malformed)
        );
        // An expired exp is PyJWT's ExpiredSignatureError: the general message.
        assert_eq!(
            decide(&custom(
                Algorithm::HS256,
                serde_json::json!({"iss": iss, "iat": now, "exp": now - 31})
            )),
            Err(AuthError::Malformed)
        );
        assert_eq!(
            decide(&custom(
                Algorithm::HS256,
                serde_json::json!({"iss": iss, "iat": now, "nbf": now + 31})
            )),
            Err(AuthError::ClockSkew)
        );
        // int("1700000000") is what PyJWT reads.
        assert_eq!(
            decide(&custom(
                Algorithm::HS256,
                serde_json::json!({"iss": iss, "iat": now.to_string()})
            )),
            Ok(Uuid::from_u128(2))
        );
        assert_eq!(
            decide(&custom(
                Algorithm::HS256,
                serde_json::json!({"iss": iss, "iat": "soon"})
            )),
            Err(AuthError::ClockSkew)
        );
        assert_eq!(decide("not-a-jwt"), Err(AuthError::Malformed));
        assert_eq!(
            AuthError::SignatureNotFound.to_string(),
            "Invalid token: API key not found"
        );
    }

    #[test]
    fn jwt_decisions_follow_notify() {
        let now = 1_700_000_000;
        let good = new_secret();
        let s = service(vec![key(1, "other", false), key(2, &good, false)]);
        let t = sign_jwt(s.id, &good, now);
        assert_eq!(
            authenticate_jwt(&s, &t, now).map(|k| k.id),
            Ok(Uuid::from_u128(2))
        );
        // 30 s either way is fine, 31 is not.
        assert!(authenticate_jwt(&s, &sign_jwt(s.id, &good, now - 30), now).is_ok());
        assert!(authenticate_jwt(&s, &sign_jwt(s.id, &good, now + 30), now).is_ok());
        assert_eq!(
            authenticate_jwt(&s, &sign_jwt(s.id, &good, now - 31), now),
            Err(AuthError::ClockSkew)
        );
        assert_eq!(
            authenticate_jwt(&s, &sign_jwt(s.id, &good, now + 31), now),
            Err(AuthError::ClockSkew)
        );
        assert_eq!(
            authenticate_jwt(&s, &sign_jwt(s.id, "wrong", now), now),
            Err(AuthError::SignatureNotFound)
        );
        let revoked = service(vec![key(2, &good, true)]);
        assert_eq!(
            authenticate_jwt(&revoked, &t, now),
            Err(AuthError::KeyRevoked)
        );
        let mut archived = s.clone();
        archived.active = false;
        assert_eq!(
            authenticate_jwt(&archived, &t, now),
            Err(AuthError::ServiceArchived)
        );
        assert_eq!(
            authenticate_jwt(&service(vec![]), &t, now),
            Err(AuthError::NoKeys)
        );
    }

    #[test]
    fn api_key_decisions() {
        let s = service(vec![key(1, "a", false), key(2, "b", true)]);
        assert!(authenticate_api_key(&s, Uuid::from_u128(1), Some(s.id)).is_ok());
        assert!(authenticate_api_key(&s, Uuid::from_u128(1), None).is_ok());
        assert_eq!(
            authenticate_api_key(&s, Uuid::from_u128(1), Some(Uuid::from_u128(5))),
            Err(AuthError::ApiKeyNotFound)
        );
        assert_eq!(
            authenticate_api_key(&s, Uuid::from_u128(2), None),
            Err(AuthError::KeyRevoked)
        );
    }

    #[test]
    fn secrets_seal_and_open_only_on_their_row() {
        let b = SecretBox::from_base64(&generate_encryption_key()).unwrap();
        let id = Uuid::now_v7();
        let sealed = b.seal(id, "the-secret").unwrap();
        assert!(!sealed.windows(10).any(|w| w == b"the-secret"));
        assert_eq!(b.open(id, &sealed).unwrap(), "the-secret");
        assert_eq!(b.open(Uuid::now_v7(), &sealed), Err(SealError::CannotOpen));
        let other = SecretBox::from_base64(&generate_encryption_key()).unwrap();
        assert_eq!(other.open(id, &sealed), Err(SealError::CannotOpen));
        assert_eq!(
            SecretBox::from_base64("c2hvcnQ=").unwrap_err(),
            SealError::BadKey
        );
        assert_eq!(secret_digest("a").len(), 32);
        assert_ne!(secret_digest("a"), secret_digest("b"));
    }
}
