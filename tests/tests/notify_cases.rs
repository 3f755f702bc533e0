//! Notify's own expectations, case by case: each request below is sent to the `ingest` or
//! `status` handler (real PostgreSQL primary + replica behind PgBouncer, the embedded
//! queue) and its status code and complete `errors` list are compared with what GOV.UK
//! Notify answers. Every case names the upstream file its expectation comes from
//! (alphagov/notifications-api unless said otherwise); where Floodgate deliberately
//! differs, the case says so.

use aws_lambda_events::http::{HeaderMap, HeaderValue, Method};
use chrono::Utc;
use floodgate_admin::{archive_service, create_service, put_template, revoke_key};
use floodgate_api::gateway::{request, response_text};
use floodgate_api::{ApiCatalog, CachePolicy};
use floodgate_core::auth::{SecretBox, generate_encryption_key, sign_jwt};
use floodgate_core::{Knobs, ProcessType, QueueName};
use floodgate_db::tokio_postgres::types::Type;
use floodgate_e2e::*;
use floodgate_emulators::{EmbeddedLimitStore, EmbeddedQueue};
use floodgate_ingest::Ingest;
use floodgate_status::Status;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;

const BODY: &str = "Dear ((name)),\n\nYour code is ((code)).";

const SCHEMAS: &str = "app/v2/notifications/notification_schemas.py";
const VALIDATION: &str = "app/schema_validation/__init__.py";
const POST_TESTS: &str = "tests/app/v2/notifications/test_post_notifications.py";
const GET_TESTS: &str = "tests/app/v2/notifications/test_get_notifications.py";
const AUTH: &str = "app/authentication/auth.py";
const AUTH_TESTS: &str = "tests/app/authentication/test_authentication.py";
const VALIDATORS: &str = "app/notifications/validators.py";
const TEMPLATE: &str = "app/v2/template/get_template.py";
const TEMPLATE_SCHEMAS: &str = "app/v2/template/template_schemas.py";

/// Notify's `GENERAL_TOKEN_ERROR_MESSAGE` (app/authentication/auth.py).
const GENERAL_TOKEN_ERROR: &str = "Invalid token: make sure your API token matches the example at https://docs.notifications.service.gov.uk/rest-api.html#authorisation-header";
const CLOCK: &str = "Error: Your system clock must be accurate to within 30 seconds";
const STATUSES: &str = "cancelled, created, sending, sent, delivered, pending, failed, technical-failure, temporary-failure, permanent-failure, pending-virus-check, validation-failed, virus-scan-failed, returned-letter, accepted, received";

enum Auth {
    /// A fresh JWT of the main service's key.
    Valid,
    /// No `Authorization` header.
    Missing,
    /// This header, as given.
    Header(String),
}

struct Case {
    /// What is tested and the upstream file the expectation comes from.
    name: String,
    method: Method,
    path: String,
    auth: Auth,
    body: Option<String>,
    status: i64,
    /// The whole `errors` list, in order; empty for a success.
    errors: Vec<(&'static str, String)>,
}

fn case(
    name: impl Into<String>,
    method: Method,
    path: impl Into<String>,
    auth: Auth,
    body: Option<String>,
    status: i64,
    errors: Vec<(&'static str, String)>,
) -> Case {
    Case {
        name: name.into(),
        method,
        path: path.into(),
        auth,
        body,
        status,
        errors,
    }
}

fn v(message: impl Into<String>) -> (&'static str, String) {
    ("ValidationError", message.into())
}

fn bad(message: impl Into<String>) -> (&'static str, String) {
    ("BadRequestError", message.into())
}

fn auth_error(message: impl Into<String>) -> (&'static str, String) {
    ("AuthError", message.into())
}

/// A JWT with this header and these claims, signed HS256 with `secret` whatever the header
/// says (PyJWT's `jwt.encode` with custom headers, as `create_custom_jwt_token` in
/// tests/app/authentication/test_authentication.py).
fn custom_jwt(header: Value, claims: Value, secret: &str) -> String {
    format!(
        "Bearer {}",
        floodgate_core::auth::sign_custom_jwt(&header, &claims, secret)
    )
}

fn hs256() -> Value {
    json!({"typ": "JWT", "alg": "HS256"})
}

/// An `ingest` and a `status` sharing one catalog on the replica, and the embedded queue
/// `ingest` puts on.
async fn handlers(
    stack: &floodgate_local::LocalStack,
    secrets: Arc<SecretBox>,
) -> (Ingest, Status, Arc<EmbeddedQueue>) {
    let catalog = Arc::new(ApiCatalog::new(
        reader_lane(stack).await,
        secrets,
        CachePolicy::default(),
    ));
    let queue = Arc::new(EmbeddedQueue::uniform(Duration::from_secs(30), 5));
    let ingest = Ingest::new(
        catalog.clone(),
        queue.clone(),
        Arc::new(EmbeddedLimitStore::new()),
        &Knobs::embedded(),
    );
    (ingest, Status::new(catalog), queue)
}

/// Archives a row of `table` directly (no admin command archives templates or reply-to
/// addresses yet).
async fn archive(writer: &floodgate_db::WriterLane, table: &str, id: Uuid) {
    let conn = writer.acquire().await.expect("writer");
    conn.bounded(conn.execute_typed(
        &format!("UPDATE {table} SET archived = true WHERE id = $1"),
        &[(&id, Type::UUID)],
    ))
    .await
    .unwrap_or_else(|e| panic!("archive a row of {table}: {e}"));
}

#[tokio::test]
async fn notify_s_request_cases_get_notify_s_answers() {
    let stack = shared_stack().await;
    let secrets = Arc::new(SecretBox::from_base64(&generate_encryption_key()).expect("key"));
    let main = service_fixture_with(&stack, ProcessType::Normal, BODY, secrets.clone()).await;
    let other = service_fixture_with(&stack, ProcessType::Normal, BODY, secrets.clone()).await;
    let revoked = service_fixture_with(&stack, ProcessType::Normal, BODY, secrets.clone()).await;
    let archived = service_fixture_with(&stack, ProcessType::Normal, BODY, secrets.clone()).await;
    revoke_key(&revoked.writer, revoked.service_id, revoked.key.id)
        .await
        .expect("revoke");
    archive_service(&archived.writer, archived.service_id)
        .await
        .expect("archive");
    let keyless = create_service(&main.writer, None, "no keys", "k@example.gov")
        .await
        .expect("service without keys");
    let deleted = put_template(
        &main.writer,
        main.service_id,
        None,
        "deleted",
        "Gone",
        "Gone",
        ProcessType::Normal,
    )
    .await
    .expect("template");
    archive(&main.writer, "templates", deleted.id).await;
    let reply_to =
        floodgate_admin::add_reply_to(&main.writer, main.service_id, "help@example.gov", true)
            .await
            .expect("reply-to");
    let archived_reply_to =
        floodgate_admin::add_reply_to(&main.writer, main.service_id, "old@example.gov", false)
            .await
            .expect("reply-to");
    let others_reply_to =
        floodgate_admin::add_reply_to(&other.writer, other.service_id, "theirs@example.gov", false)
            .await
            .expect("reply-to");
    archive(&main.writer, "service_email_reply_to", archived_reply_to.id).await;
    stack
        .wait_replica_caught_up(Duration::from_secs(30))
        .await
        .expect("replica caught up");

    let (ingest, status, _queue) = handlers(&stack, secrets.clone()).await;

    let sid = main.service_id;
    let tid = main.template_id;
    let secret = main.key.key[main.key.key.len() - 36..].to_string();
    // Sign at the start of a second, so the handlers' clock reads the same second.
    while Utc::now().timestamp_subsec_millis() > 300 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let now = Utc::now().timestamp();
    let signed_at = |iat: i64| format!("Bearer {}", sign_jwt(sid, &secret, iat));
    let email = |extra: Value| -> Option<String> {
        let mut b = json!({"email_address": "sample@email.com", "template_id": tid,
            "personalisation": {"name": "Ann", "code": 1}});
        if let (Some(b), Value::Object(extra)) = (b.as_object_mut(), extra) {
            for (k, val) in extra {
                b.insert(k, val);
            }
        }
        Some(b.to_string())
    };
    let raw = |s: &str| Some(s.to_string());
    let post = Method::POST;
    let get = Method::GET;
    let e = "/v2/notifications/email";
    let in_hours = |h: i64| {
        (Utc::now() + chrono::Duration::hours(h))
            .format("%Y-%m-%dT%H:%M:%S")
            .to_string()
    };
    let long_ref = "a".repeat(1001);
    let unknown = Uuid::new_v4();

    let cases: Vec<Case> = vec![
        // ---- the body as a whole: app/v2/utils.py get_valid_json + the schema's type
        case(format!("invalid JSON is a BadRequestError ({POST_TESTS} test_post_notification_when_payload_is_invalid_json_returns_400)"),
            post.clone(), e, Auth::Valid, raw("template_id=dont-convert-to-json"), 400, vec![bad("Invalid JSON supplied in POST data")]),
        case("an empty body is not JSON (app/v2/utils.py get_valid_json: Flask's get_json(force=True) refuses it)",
            post.clone(), e, Auth::Valid, raw(""), 400, vec![bad("Invalid JSON supplied in POST data")]),
        case(format!("a JSON null lists both required properties ({POST_TESTS} test_post_email_notification_when_data_is_empty_returns_400, which posts json.dumps(None); get_valid_json: `request_json or {{}}`)"),
            post.clone(), e, Auth::Valid, raw("null"), 400, vec![v("email_address is a required property"), v("template_id is a required property")]),
        case("an empty list counts as {} (app/v2/utils.py get_valid_json)",
            post.clone(), e, Auth::Valid, raw("[]"), 400, vec![v("email_address is a required property"), v("template_id is a required property")]),
        case(format!("a non-empty list is not an object ({SCHEMAS} post_email_request type object; {VALIDATION} no path)"),
            post.clone(), e, Auth::Valid, raw("[1]"), 400, vec![v("[1] is not of type object")]),
        case(format!("a string is not an object ({SCHEMAS} post_email_request)"),
            post.clone(), e, Auth::Valid, raw("\"it's\""), 400, vec![v("\"its\" is not of type object")]),
        // ---- required and unexpected properties
        case(format!("template_id is required ({SCHEMAS} required)"),
            post.clone(), e, Auth::Valid, raw(r#"{"email_address": "sample@email.com"}"#), 400, vec![v("template_id is a required property")]),
        case(format!("email_address is required ({SCHEMAS} required)"),
            post.clone(), e, Auth::Valid, Some(json!({"template_id": tid}).to_string()), 400, vec![v("email_address is a required property")]),
        case(format!("template instead of template_id: both errors ({POST_TESTS} test_notification_returns_400_and_for_schema_problems)"),
            post.clone(), e, Auth::Valid, Some(json!({"email_address": "sample@email.com", "template": tid}).to_string()), 400,
            vec![v("template_id is a required property"), v("Additional properties are not allowed (template was unexpected)")]),
        case(format!("an sms sender on an email ({POST_TESTS} test_post_notification_with_wrong_type_of_sender)"),
            post.clone(), e, Auth::Valid, email(json!({"sms_sender_id": unknown})), 400, vec![v("Additional properties are not allowed (sms_sender_id was unexpected)")]),
        case(format!("an unknown property ({SCHEMAS} additionalProperties false)"),
            post.clone(), e, Auth::Valid, email(json!({"colour": "red"})), 400, vec![v("Additional properties are not allowed (colour was unexpected)")]),
        case(format!("two unknown properties, in the order sent (jsonschema's extras_msg via {VALIDATION})"),
            post.clone(), e, Auth::Valid,
            raw(&format!(r#"{{"zeta": 1, "email_address": "sample@email.com", "template_id": "{tid}", "alpha": 2}}"#)), 400,
            vec![v("Additional properties are not allowed (zeta, alpha were unexpected)")]),
        // ---- property types and formats
        case(format!("email_address of the wrong type names the value ({SCHEMAS} email_address type string; {VALIDATION})"),
            post.clone(), e, Auth::Valid, email(json!({"email_address": 12345})), 400, vec![v("email_address 12345 is not of type string")]),
        case(format!("email_address null ({SCHEMAS} email_address type string)"),
            post.clone(), e, Auth::Valid, email(json!({"email_address": null})), 400, vec![v("email_address None is not of type string")]),
        case(format!("email_address a list, apostrophes stripped ({VALIDATION} get_error_message)"),
            post.clone(), e, Auth::Valid, email(json!({"email_address": ["a", true]})), 400, vec![v("email_address [a, True] is not of type string")]),
        case(format!("email_address not an address ({VALIDATION} validate_schema_email_address)"),
            post.clone(), e, Auth::Valid, email(json!({"email_address": "notanemail"})), 400, vec![v("email_address Not a valid email address")]),
        case("email_address without a dot in the domain (notifications-utils email_address.py: two labels)",
            post.clone(), e, Auth::Valid, email(json!({"email_address": "a@localhost"})), 400, vec![v("email_address Not a valid email address")]),
        case("email_address with consecutive dots (notifications-utils email_address.py)",
            post.clone(), e, Auth::Valid, email(json!({"email_address": "a..b@example.com"})), 400, vec![v("email_address Not a valid email address")]),
        case("email_address with a numeric TLD (notifications-utils email_address.py tld_part)",
            post.clone(), e, Auth::Valid, email(json!({"email_address": "a@example.c0m"})), 400, vec![v("email_address Not a valid email address")]),
        case("email_address with three hyphens in a label (notifications-utils email_address.py hostname_part)",
            post.clone(), e, Auth::Valid, email(json!({"email_address": "a@ex---ample.com"})), 400, vec![v("email_address Not a valid email address")]),
        case(format!("template_id not a uuid ({SCHEMAS} template_id: definitions.uuid validationMessage)"),
            post.clone(), e, Auth::Valid, email(json!({"template_id": "not-a-uuid"})), 400, vec![v("template_id is not a valid UUID")]),
        case("template_id a number: the uuid definition's message covers its type error too (app/schema_validation/definitions.py)",
            post.clone(), e, Auth::Valid, email(json!({"template_id": 12345})), 400, vec![v("template_id is not a valid UUID")]),
        case("template_id null (app/schema_validation/definitions.py uuid type string)",
            post.clone(), e, Auth::Valid, email(json!({"template_id": null})), 400, vec![v("template_id is not a valid UUID")]),
        case(format!("personalisation a list ({SCHEMAS} personalisation type object)"),
            post.clone(), e, Auth::Valid, email(json!({"personalisation": []})), 400, vec![v("personalisation [] is not of type object")]),
        case(format!("personalisation a string ({SCHEMAS} personalisation type object)"),
            post.clone(), e, Auth::Valid, email(json!({"personalisation": "name"})), 400, vec![v("personalisation name is not of type object")]),
        case(format!("personalisation null ({SCHEMAS} personalisation type object)"),
            post.clone(), e, Auth::Valid, email(json!({"personalisation": null})), 400, vec![v("personalisation None is not of type object")]),
        case(format!("reference a number ({SCHEMAS} reference type string)"),
            post.clone(), e, Auth::Valid, email(json!({"reference": 12})), 400, vec![v("reference 12 is not of type string")]),
        case(format!("reference null is not an absence ({SCHEMAS} reference type string)"),
            post.clone(), e, Auth::Valid, email(json!({"reference": null})), 400, vec![v("reference None is not of type string")]),
        case(format!("reference of 1001 characters ({POST_TESTS} test_post_notification_with_too_long_reference_returns_400)"),
            post.clone(), e, Auth::Valid, email(json!({"reference": long_ref})), 400, vec![v(format!("reference {long_ref} is too long"))]),
        case(format!("reference of 1000 characters is fine ({SCHEMAS} maxLength 1000)"),
            post.clone(), e, Auth::Valid, email(json!({"reference": "a".repeat(1000)})), 201, vec![]),
        case(format!("email_reply_to_id not a uuid ({SCHEMAS} email_reply_to_id: uuid)"),
            post.clone(), e, Auth::Valid, email(json!({"email_reply_to_id": "nope"})), 400, vec![v("email_reply_to_id is not a valid UUID")]),
        case(format!("email_reply_to_id null ({SCHEMAS} email_reply_to_id: uuid, not nullable)"),
            post.clone(), e, Auth::Valid, email(json!({"email_reply_to_id": null})), 400, vec![v("email_reply_to_id is not a valid UUID")]),
        case(format!("one_click_unsubscribe_url over http ({SCHEMAS} one_click_unsubscribe_url: app/schema_validation/definitions.py https_url)"),
            post.clone(), e, Auth::Valid, email(json!({"one_click_unsubscribe_url": "http://www.someservice.com/unsubscribe"})), 400,
            vec![v("one_click_unsubscribe_url is not a valid https url")]),
        case("one_click_unsubscribe_url not a string (app/schema_validation/definitions.py https_url validationMessage)",
            post.clone(), e, Auth::Valid, email(json!({"one_click_unsubscribe_url": 12})), 400,
            vec![v("one_click_unsubscribe_url is not a valid https url")]),
        case("one_click_unsubscribe_url with a space is no URI (https_url format uri, rfc3987)",
            post.clone(), e, Auth::Valid, email(json!({"one_click_unsubscribe_url": "https://www.some service.com/u"})), 400,
            vec![v("one_click_unsubscribe_url is not a valid https url")]),
        case(format!("one_click_unsubscribe_url https ({POST_TESTS} test_post_email_notification_with_unsubscribe_link_returns_201)"),
            post.clone(), e, Auth::Valid, email(json!({"one_click_unsubscribe_url": "https://www.someservice.com/unsubscribe?for=anne@example.com"})), 201, vec![]),
        case(format!("an email_reply_to_id the service does not have ({POST_TESTS} test_post_email_notification_with_invalid_reply_to_id_returns_400)"),
            post.clone(), e, Auth::Valid, email(json!({"email_reply_to_id": unknown})), 400,
            vec![bad(format!("email_reply_to_id {unknown} does not exist in database for service id {sid}"))]),
        case(format!("an archived reply-to address ({POST_TESTS} test_post_email_notification_with_archived_reply_to_id_returns_400)"),
            post.clone(), e, Auth::Valid, email(json!({"email_reply_to_id": archived_reply_to.id})), 400,
            vec![bad(format!("email_reply_to_id {} does not exist in database for service id {sid}", archived_reply_to.id))]),
        case(format!("another service's reply-to address ({VALIDATORS} check_service_email_reply_to_id: by id and service id)"),
            post.clone(), e, Auth::Valid, email(json!({"email_reply_to_id": others_reply_to.id})), 400,
            vec![bad(format!("email_reply_to_id {} does not exist in database for service id {sid}", others_reply_to.id))]),
        case(format!("the service's own reply-to address ({POST_TESTS} test_post_email_notification_with_valid_reply_to_id_returns_201)"),
            post.clone(), e, Auth::Valid, email(json!({"email_reply_to_id": reply_to.id})), 201, vec![]),
        case("a bulk job's reply_to_id the service does not have (cds-snc/notification-api app/v2/notifications/post_notifications.py validate_sender_id)",
            post.clone(), "/v2/notifications/bulk", Auth::Valid,
            Some(json!({"name": "j", "template_id": tid, "reply_to_id": unknown, "rows": [["email address", "name", "code"], ["a@b.co", "A", "1"]]}).to_string()), 400,
            vec![bad(format!("email_reply_to_id {unknown} does not exist in database for service id {sid}"))]),
        case(format!("a missing placeholder is reported before the reply-to ({VALIDATORS}: validate_template runs first in post_notifications.py)"),
            post.clone(), e, Auth::Valid, email(json!({"email_reply_to_id": unknown, "personalisation": {"name": "Ann"}})), 400,
            vec![bad("Missing personalisation: code")]),
        case(format!("sanitise_content_for not a list ({SCHEMAS} sanitise_content_for type [array, null])"),
            post.clone(), e, Auth::Valid, email(json!({"sanitise_content_for": "name"})), 400,
            vec![v("sanitise_content_for name is not of type array, null")]),
        case(format!("sanitise_content_for null ({SCHEMAS} sanitise_content_for type [array, null])"),
            post.clone(), e, Auth::Valid, email(json!({"sanitise_content_for": null})), 201, vec![]),
        case(format!("scheduled_for not a date ({VALIDATION} validate_schema_date_with_hour)"),
            post.clone(), e, Auth::Valid, email(json!({"scheduled_for": "next tuesday"})), 400,
            vec![v("scheduled_for datetime format is invalid. It must be a valid ISO8601 date time format, https://en.wikipedia.org/wiki/ISO_8601")]),
        case(format!("scheduled_for in the past ({VALIDATION} validate_schema_date_with_hour)"),
            post.clone(), e, Auth::Valid, email(json!({"scheduled_for": "2001-01-01 10:00"})), 400, vec![v("scheduled_for datetime can not be in the past")]),
        case(format!("scheduled_for 25 hours ahead ({VALIDATION} datetime_within_next_day)"),
            post.clone(), e, Auth::Valid, email(json!({"scheduled_for": in_hours(25)})), 400, vec![v("scheduled_for datetime can only be 24 hours in the future")]),
        case(format!("scheduled_for a number ({SCHEMAS} scheduled_for type [string, null])"),
            post.clone(), e, Auth::Valid, email(json!({"scheduled_for": 12})), 400, vec![v("scheduled_for 12 is not of type string, null")]),
        case(format!("every error of a request, properties in schema order, then required, then unexpected ({VALIDATION} build_error_message)"),
            post.clone(), e, Auth::Valid, raw(r#"{"email_address": 12345, "personalisation": [], "reference": null, "colour": 1}"#), 400,
            vec![v("reference None is not of type string"), v("email_address 12345 is not of type string"),
                 v("personalisation [] is not of type object"), v("template_id is a required property"),
                 v("Additional properties are not allowed (colour was unexpected)")]),
        case(format!("three format errors at once ({VALIDATION} build_error_message)"),
            post.clone(), e, Auth::Valid, raw(r#"{"email_address": "x", "template_id": "y", "email_reply_to_id": "z"}"#), 400,
            vec![v("email_address Not a valid email address"), v("template_id is not a valid UUID"), v("email_reply_to_id is not a valid UUID")]),
        // ---- after the schema: templates and personalisation (app/notifications/validators.py)
        case(format!("an unknown template ({POST_TESTS} test_post_notification_returns_400_and_missing_template)"),
            post.clone(), e, Auth::Valid, email(json!({"template_id": unknown})), 400, vec![bad("Template not found")]),
        case(format!("another service's template is not found ({VALIDATORS} validate_template: by id and service id)"),
            post.clone(), e, Auth::Valid, email(json!({"template_id": other.template_id})), 400, vec![bad("Template not found")]),
        case(format!("an archived template ({VALIDATORS} check_template_is_active)"),
            post.clone(), e, Auth::Valid, email(json!({"template_id": deleted.id})), 400, vec![bad("Template has been deleted")]),
        case(format!("a missing placeholder value (notifications-utils missing_data via {VALIDATORS} create_content_for_notification)"),
            post.clone(), e, Auth::Valid, email(json!({"personalisation": {"name": "Ann"}})), 400, vec![bad("Missing personalisation: code")]),
        case("no personalisation at all, placeholders in template order (app/v2/template/post_template.py check_placeholders wording)",
            post.clone(), e, Auth::Valid, raw(&format!(r#"{{"email_address": "sample@email.com", "template_id": "{tid}"}}"#)), 400,
            vec![bad("Missing personalisation: name, code")]),
        case("placeholder names match case-insensitively (notifications-utils InsensitiveDict)",
            post.clone(), e, Auth::Valid, email(json!({"personalisation": {"NAME": "Ann", "Code": 1}})), 201, vec![]),
        case(format!("surrounding whitespace in the address is fine ({POST_TESTS} test_post_email_notification_returns_201)"),
            post.clone(), e, Auth::Valid, email(json!({"email_address": "\nnotify@digital.cabinet-office.gov.uk "})), 201, vec![]),
        case(format!("a template id with braces and no hyphens is a UUID (Python's uuid.UUID in {VALIDATION} validate_uuid)"),
            post.clone(), e, Auth::Valid, email(json!({"template_id": format!("{{{}}}", tid.simple())})), 201, vec![]),
        case(format!("scheduled 23 hours ahead is accepted ({VALIDATION} datetime_within_next_day)"),
            post.clone(), e, Auth::Valid, email(json!({"scheduled_for": in_hours(23)})), 201, vec![]),
        case(format!("an unknown URL ({POST_TESTS} test_post_notification_raises_bad_request_if_not_valid_notification_type: werkzeug's message)"),
            post.clone(), "/v2/notifications/foo", Auth::Valid, email(json!({})), 404,
            vec![("NotFoundError", "The requested URL was not found on the server. If you entered the URL manually please check your spelling and try again.".into())]),
        // ---- authentication: app/authentication/auth.py
        case(format!("no Authorization header ({POST_TESTS} test_post_notification_returns_401_and_well_formed_auth_error)"),
            post.clone(), e, Auth::Missing, email(json!({})), 401, vec![auth_error("Unauthorized: authentication token must be provided")]),
        case(format!("another scheme ({AUTH_TESTS} test_get_auth_token_should_not_allow_request_with_incorrect_header)"),
            post.clone(), e, Auth::Header("Basic 1234".into()), email(json!({})), 401, vec![auth_error("Unauthorized: authentication bearer scheme must be used")]),
        case(format!("the scheme without its space ({AUTH} _get_auth_token: header[:7].title() != 'Bearer ')"),
            post.clone(), e, Auth::Header("Bearer".into()), email(json!({})), 401, vec![auth_error("Unauthorized: authentication bearer scheme must be used")]),
        case(format!("not a JWT ({AUTH_TESTS} test_get_token_issuer_should_not_allow_request_with_incorrect_token)"),
            post.clone(), e, Auth::Header("Bearer 1234".into()), email(json!({})), 403, vec![auth_error(GENERAL_TOKEN_ERROR)]),
        case(format!("no iss claim ({AUTH_TESTS} test_get_token_issuer_should_not_allow_request_with_no_iss)"),
            post.clone(), e, Auth::Header(custom_jwt(hs256(), json!({"iat": now}), &secret)), email(json!({})), 403, vec![auth_error("Invalid token: iss field not provided")]),
        case(format!("iss not a uuid ({AUTH_TESTS} test_requires_auth_should_not_allow_service_id_which_is_not_uuid_string)"),
            post.clone(), e, Auth::Header(custom_jwt(hs256(), json!({"iss": "not-a-valid-id", "iat": now}), &secret)), email(json!({})), 403,
            vec![auth_error("Invalid token: service id is not the right data type")]),
        case(format!("an unknown service ({AUTH_TESTS} test_requires_auth_returns_error_when_service_doesnt_exist)"),
            post.clone(), e, Auth::Header(format!("Bearer {}", sign_jwt(unknown, &secret, now))), email(json!({})), 403, vec![auth_error("Invalid token: service not found")]),
        case(format!("a service without keys ({AUTH_TESTS} test_requires_auth_errors_if_service_has_no_api_keys)"),
            post.clone(), e, Auth::Header(format!("Bearer {}", sign_jwt(keyless.id, &secret, now))), email(json!({})), 403, vec![auth_error("Invalid token: service has no API keys")]),
        case(format!("an archived service ({AUTH_TESTS} test_requires_auth_returns_error_when_service_inactive)"),
            post.clone(), e, Auth::Header(archived.bearer()), email(json!({"template_id": archived.template_id})), 403, vec![auth_error("Invalid token: service is archived")]),
        case(format!("HS512 ({AUTH_TESTS} test_decode_jwt_token_should_not_allow_non_hs256_algorithm)"),
            post.clone(), e, Auth::Header(custom_jwt(json!({"typ": "JWT", "alg": "HS512"}), json!({"iss": sid, "iat": now}), &secret)), email(json!({})), 403,
            vec![auth_error("Invalid token: algorithm used is not HS256")]),
        case(format!("no iat ({AUTH_TESTS} test_decode_jwt_token_should_not_allow_no_iat)"),
            post.clone(), e, Auth::Header(custom_jwt(hs256(), json!({"iss": sid}), &secret)), email(json!({})), 403, vec![auth_error("Invalid token: API key not found")]),
        case(format!("iat a minute old ({AUTH_TESTS} test_decode_jwt_token_should_not_allow_old_iat)"),
            post.clone(), e, Auth::Header(signed_at(now - 60)), email(json!({})), 403, vec![auth_error(CLOCK)]),
        case("iat 31 s old (notifications-python-client authentication.py validate_jwt_token: now > iat + 30)",
            post.clone(), e, Auth::Header(signed_at(now - 31)), email(json!({})), 403, vec![auth_error(CLOCK)]),
        case(format!("iat 40 s in the future (PyJWT ImmatureSignatureError, leeway 30, via {AUTH})"),
            post.clone(), e, Auth::Header(signed_at(now + 40)), email(json!({})), 403, vec![auth_error(CLOCK)]),
        case("iat 25 s old is within the bound (notifications-python-client __bound__ = 30)",
            post.clone(), e, Auth::Header(signed_at(now - 25)), email(json!({})), 201, vec![]),
        case(format!("an audience claim ({AUTH_TESTS} test_decode_jwt_token_should_not_allow_extra_claims)"),
            post.clone(), e, Auth::Header(custom_jwt(hs256(), json!({"iss": sid, "iat": now, "aud": "notifications.service.gov.uk"}), &secret)), email(json!({})), 403,
            vec![auth_error(GENERAL_TOKEN_ERROR)]),
        case(format!("signed with another secret ({AUTH_TESTS} test_decode_jwt_token_should_not_allow_invalid_secret)"),
            post.clone(), e, Auth::Header(format!("Bearer {}", sign_jwt(sid, "not-so-secret", now))), email(json!({})), 403, vec![auth_error("Invalid token: API key not found")]),
        case(format!("a revoked key ({AUTH_TESTS} test_decode_jwt_token_errors_when_all_api_keys_are_expired)"),
            post.clone(), e, Auth::Header(revoked.bearer()), email(json!({"template_id": revoked.template_id})), 403, vec![auth_error("Invalid token: API key revoked")]),
        case(format!("a lower-case scheme ({AUTH_TESTS} test_get_auth_token_should_allow_valid_token)"),
            post.clone(), e, Auth::Header(signed_at(now).replacen("Bearer", "bearer", 1)), email(json!({})), 201, vec![]),
        case(format!("auth comes before the body (a bad body with no token is a 401: {AUTH} requires_auth runs first)"),
            post.clone(), e, Auth::Missing, raw("{nope"), 401, vec![auth_error("Unauthorized: authentication token must be provided")]),
        // ---- GET /v2/notifications/{id}: app/v2/notifications/get_notifications.py
        case(format!("an id never sent ({GET_TESTS} test_get_notification_by_id_nonexistent_id)"),
            get.clone(), "/v2/notifications/dd4b8b9d-d414-4a83-9256-580046bf18f9", Auth::Valid, None, 404, vec![("NoResultFound", "No result found".into())]),
        case(format!("a badly formatted id ({GET_TESTS} test_get_notification_by_id_invalid_id)"),
            get.clone(), "/v2/notifications/1234-badly-formatted-id-7890", Auth::Valid, None, 400, vec![v("notification_id is not a valid UUID")]),
        case(format!("the id 0 ({GET_TESTS} test_get_notification_by_id_invalid_id)"),
            get.clone(), "/v2/notifications/0", Auth::Valid, None, 400, vec![v("notification_id is not a valid UUID")]),
        case(format!("reading without a token ({AUTH} requires_auth)"),
            get.clone(), "/v2/notifications/0", Auth::Missing, None, 401, vec![auth_error("Unauthorized: authentication token must be provided")]),
        // ---- GET /v2/notifications filters: get_notifications_request
        case(format!("an unknown status ({GET_TESTS} test_get_all_notifications_filter_by_status_invalid_status)"),
            get.clone(), "/v2/notifications?status=elephant", Auth::Valid, None, 400, vec![v(format!("status elephant is not one of [{STATUSES}]"))]),
        case(format!("the same error twice is listed once ({VALIDATION} unique_errors)"),
            get.clone(), "/v2/notifications?status=elephant&status=elephant", Auth::Valid, None, 400, vec![v(format!("status elephant is not one of [{STATUSES}]"))]),
        case(format!("a comma is part of the status value, not a separator ({SCHEMAS} status items enum; get_notifications.py to_dict(flat=False))"),
            get.clone(), "/v2/notifications?status=sending,delivered", Auth::Valid, None, 400, vec![v(format!("status sending,delivered is not one of [{STATUSES}]"))]),
        case(format!("an unknown template_type ({GET_TESTS} test_get_all_notifications_filter_by_template_type_invalid_template_type)"),
            get.clone(), "/v2/notifications?template_type=orange", Auth::Valid, None, 400, vec![v("template_type orange is not one of [sms, email, letter]")]),
        case(format!("a badly formatted older_than ({GET_TESTS} test_get_all_notifications_filter_by_id_invalid_id)"),
            get.clone(), "/v2/notifications?older_than=1234-badly-formatted-id-7890", Auth::Valid, None, 400, vec![v("older_than is not a valid UUID")]),
        case(format!("include_jobs other than true/True ({SCHEMAS} include_jobs enum)"),
            get.clone(), "/v2/notifications?include_jobs=yes", Auth::Valid, None, 400, vec![v("include_jobs yes is not one of [true, True]")]),
        case(format!("an unknown parameter ({SCHEMAS} get_notifications_request additionalProperties false)"),
            get.clone(), "/v2/notifications?colour=red", Auth::Valid, None, 400, vec![v("Additional properties are not allowed (colour was unexpected)")]),
        case(format!("every filter error at once, in schema order ({VALIDATION} build_error_message)"),
            get.clone(), "/v2/notifications?colour=red&older_than=x&template_type=orange&status=elephant", Auth::Valid, None, 400,
            vec![v(format!("status elephant is not one of [{STATUSES}]")), v("template_type orange is not one of [sms, email, letter]"),
                 v("older_than is not a valid UUID"), v("Additional properties are not allowed (colour was unexpected)")]),
        case(format!("an older_than id never sent is an empty page ({GET_TESTS} test_get_all_notifications_filter_by_id_no_notifications_if_nonexistent_id)"),
            get.clone(), format!("/v2/notifications?older_than={unknown}"), Auth::Valid, None, 200, vec![]),
        case(format!("a reference nobody used is an empty page ({GET_TESTS} test_get_notification_by_reference_nonexistent_reference_returns_no_notifications)"),
            get.clone(), "/v2/notifications?reference=nonexistent-reference", Auth::Valid, None, 200, vec![]),
        case(format!("a letter status is a valid filter ({SCHEMAS} NOTIFICATION_STATUS_LETTER_ACCEPTED)"),
            get.clone(), "/v2/notifications?status=accepted&include_jobs=true", Auth::Valid, None, 200, vec![]),
        // ---- templates: app/v2/template/, app/v2/templates/
        case(format!("a template id that is not a uuid is the schema's `id` ({TEMPLATE_SCHEMAS} get_template_by_id_request)"),
            get.clone(), "/v2/template/not-a-uuid", Auth::Valid, None, 400, vec![v("id is not a valid UUID")]),
        case(format!("an unknown template ({TEMPLATE} dao_get_template_by_id_and_service_id: NoResultFound)"),
            get.clone(), format!("/v2/template/{unknown}"), Auth::Valid, None, 404, vec![("NoResultFound", "No result found".into())]),
        case(format!("another service's template ({TEMPLATE}: by id and service id)"),
            get.clone(), format!("/v2/template/{}", other.template_id), Auth::Valid, None, 404, vec![("NoResultFound", "No result found".into())]),
        case(format!("a version that does not exist ({TEMPLATE} /<template_id>/version/<int:version>)"),
            get.clone(), format!("/v2/template/{tid}/version/99"), Auth::Valid, None, 404, vec![("NoResultFound", "No result found".into())]),
        case(format!("version 0 reads as no version: the current template ({TEMPLATE} `if version:`)"),
            get.clone(), format!("/v2/template/{tid}/version/0"), Auth::Valid, None, 200, vec![]),
        case("an unknown template type (app/v2/templates/templates_schemas.py get_all_template_request)",
            get.clone(), "/v2/templates?type=orange", Auth::Valid, None, 400, vec![v("type orange is not one of [sms, email, letter]")]),
        case("a preview without a placeholder value (app/v2/template/post_template.py check_placeholders)",
            post.clone(), format!("/v2/template/{tid}/preview"), Auth::Valid, Some(json!({"personalisation": {"name": "Ann"}}).to_string()), 400,
            vec![bad("Missing personalisation: code")]),
        case(format!("a preview's personalisation of the wrong type ({TEMPLATE_SCHEMAS} post_template_preview_request)"),
            post.clone(), format!("/v2/template/{tid}/preview"), Auth::Valid, Some(json!({"personalisation": "x"}).to_string()), 400,
            vec![v("personalisation x is not of type object")]),
        case(format!("a preview may carry other properties ({TEMPLATE_SCHEMAS} post_template_preview_request has no additionalProperties)"),
            post.clone(), format!("/v2/template/{tid}/preview"), Auth::Valid, Some(json!({"personalisation": {"name": "A", "code": 1}, "extra": 1}).to_string()), 200, vec![]),
        case("a preview of an unknown template (app/v2/template/post_template.py dao_get_template_by_id_and_service_id)",
            post.clone(), format!("/v2/template/{unknown}/preview"), Auth::Valid, Some(json!({"personalisation": {}}).to_string()), 404,
            vec![("NoResultFound", "No result found".into())]),
    ];

    let mut failures = Vec::new();
    let total = cases.len();
    for c in cases {
        let mut h = HeaderMap::new();
        h.insert("host", HeaderValue::from_static("api.test"));
        let header = match &c.auth {
            Auth::Valid => Some(main.bearer()),
            Auth::Missing => None,
            Auth::Header(s) => Some(s.clone()),
        };
        if let Some(a) = header {
            h.insert("authorization", HeaderValue::from_str(&a).expect("header"));
        }
        let r = request(c.method.clone(), &c.path, h, c.body.clone());
        let is_ingest = c.method == Method::POST && c.path.starts_with("/v2/notifications");
        let resp = if is_ingest {
            ingest.handle(r).await
        } else {
            status.handle(r).await
        };
        let body: Value = serde_json::from_str(&response_text(&resp)).unwrap_or(Value::Null);
        let got: Vec<(String, String)> = body["errors"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|e| {
                        (
                            e["error"].as_str().unwrap_or_default().to_string(),
                            e["message"].as_str().unwrap_or_default().to_string(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        let want: Vec<(String, String)> = c
            .errors
            .iter()
            .map(|(a, b)| (a.to_string(), b.clone()))
            .collect();
        let status_field_ok = c.errors.is_empty() || body["status_code"] == json!(c.status);
        if resp.status_code != c.status || got != want || !status_field_ok {
            failures.push(format!(
                "{}\n    want {} {:?}\n    got  {} {}",
                c.name, c.status, want, resp.status_code, body
            ));
        }
    }
    println!("{total} Notify request cases run");

    // test_post_email_notification_sanitise_content_for_selected_personalisation
    // (tests/app/v2/notifications/test_post_notifications.py): the named value is made
    // inert, the answer says what changed, and every email's answer has the key.
    let (code, sanitised) = main
        .post(
            &ingest,
            e,
            &json!({"email_address": "amala@example.com", "template_id": tid,
                "personalisation": {"Name": "Amala, please [click this evil link](https://evil.link)", "code": "https://pab.gov.uk/123"},
                "sanitise_content_for": ["NAME"]}),
        )
        .await;
    assert_eq!(code, 201, "{sanitised}");
    assert_eq!(
        sanitised["sanitised_content"],
        json!({"Name": {"sanitised": "Amala, please \\[click this evil link\\]\\(\\)",
            "unsanitised": "Amala, please [click this evil link](https://evil.link)"}})
    );
    assert_eq!(
        sanitised["content"]["body"],
        "Dear Amala, please \\[click this evil link\\]\\(\\),\n\nYour code is https://pab.gov.uk/123."
    );
    let (_, plain) = main
        .post(
            &ingest,
            e,
            &json!({"email_address": "a@example.com", "template_id": tid,
        "personalisation": {"name": "A", "code": 1}}),
        )
        .await;
    assert_eq!(plain["sanitised_content"], json!({}), "{plain}");

    // What a list holds, beyond its status (app/dao/notifications_dao.py
    // get_notifications_for_service): a job's notifications only with include_jobs, and
    // an older_than that is not the service's own notification gives an empty page.
    let mut from_job = notification(sid, ProcessType::Bulk, 1);
    from_job.template_id = tid;
    personalise(&mut from_job, "code", json!(1));
    from_job.reference = Some("listed".into());
    from_job.job_id = Some(Uuid::now_v7());
    from_job.job_row_number = Some(0);
    let mut single = notification(sid, ProcessType::Normal, 2);
    single.template_id = tid;
    personalise(&mut single, "code", json!(2));
    single.reference = Some("listed".into());
    store_on_replica(&stack, &main.writer, &[from_job.clone(), single.clone()]).await;
    let list = |query: String| {
        let mut h = HeaderMap::new();
        h.insert("host", HeaderValue::from_static("api.test"));
        h.insert(
            "authorization",
            HeaderValue::from_str(&main.bearer()).expect("header"),
        );
        let r = request(Method::GET, &format!("/v2/notifications?{query}"), h, None);
        let status = &status;
        async move {
            let r = status.handle(r).await;
            let v: Value = serde_json::from_str(&response_text(&r)).unwrap_or(Value::Null);
            assert_eq!(r.status_code, 200, "{query}: {v}");
            v["notifications"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .map(|n| n["id"].as_str().unwrap_or_default().to_string())
                        .collect::<Vec<_>>()
                })
                .unwrap_or_default()
        }
    };
    assert_eq!(
        list("reference=listed".into()).await,
        vec![single.id.to_string()]
    );
    assert_eq!(
        list("reference=listed&include_jobs=true".into()).await,
        vec![single.id.to_string(), from_job.id.to_string()]
    );
    assert_eq!(
        list(format!(
            "reference=listed&include_jobs=true&older_than={}",
            single.id
        ))
        .await,
        vec![from_job.id.to_string()]
    );
    // A time-ordered id that was never sent: Notify finds no such notification.
    assert!(
        list(format!(
            "reference=listed&include_jobs=true&older_than={}",
            Uuid::now_v7()
        ))
        .await
        .is_empty()
    );
    // Another service's notification is no anchor either.
    let mut theirs = notification(other.service_id, ProcessType::Normal, 3);
    theirs.template_id = other.template_id;
    store_on_replica(&stack, &main.writer, std::slice::from_ref(&theirs)).await;
    assert!(
        list(format!(
            "reference=listed&include_jobs=true&older_than={}",
            theirs.id
        ))
        .await
        .is_empty()
    );
    assert!(total >= 60, "only {total} cases");
    assert!(
        failures.is_empty(),
        "{} of {total} cases differ from Notify:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Receives everything on `name`, hands it to `handle` in batches of 10 and deletes it.
async fn drain<F, Fut>(queue: &Arc<EmbeddedQueue>, name: QueueName, mut handle: F)
where
    F: FnMut(aws_lambda_events::event::sqs::SqsEvent) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    use floodgate_aws::Queue;
    loop {
        let msgs = queue
            .receive(name, 10, Duration::from_millis(100))
            .await
            .expect("receive");
        if msgs.is_empty() {
            return;
        }
        let bodies: Vec<String> = msgs.iter().map(|m| m.body.clone()).collect();
        handle(sqs_event(&bodies)).await;
        let handles: Vec<String> = msgs.iter().map(|m| m.receipt_handle.clone()).collect();
        queue.delete_batch(name, &handles).await.expect("delete");
    }
}

/// RFC 8058 one-click unsubscribe, end to end: the URL Notify's schema accepts
/// (app/v2/notifications/notification_schemas.py `one_click_unsubscribe_url: https_url`)
/// is stored, returned on reads (app/models.py `serialize`), and sent as the
/// `List-Unsubscribe` and `List-Unsubscribe-Post` headers: on what the mailbox simulator
/// received, and in the SES v2 SendEmail request itself (a loopback SES endpoint keeps
/// the request body: moto's SESv2 `send_email` drops `Content.Simple.Headers` and
/// `ReplyToAddresses`, so it cannot show them).
#[tokio::test]
async fn one_click_unsubscribe_headers_reach_ses_and_the_url_reads_back() {
    use floodgate_aws::mail::SesMailer;
    use floodgate_emulators::SimulatorMailer;
    use floodgate_persist::Persist;
    use floodgate_send::{SendConfig, Sender};

    let stack = shared_stack().await;
    let secrets = Arc::new(SecretBox::from_base64(&generate_encryption_key()).expect("key"));
    let f = service_fixture_with(&stack, ProcessType::Normal, BODY, secrets.clone()).await;
    let (ingest, status, queue) = handlers(&stack, secrets.clone()).await;
    let url = "https://www.someservice.com/unsubscribe?for=anne%40example.com&list=1";
    // A default reply-to address, and another one a notification names.
    floodgate_admin::add_reply_to(&f.writer, f.service_id, "help@example.gov", true)
        .await
        .expect("reply-to");
    let named = floodgate_admin::add_reply_to(&f.writer, f.service_id, "named@example.gov", false)
        .await
        .expect("reply-to");
    stack
        .wait_replica_caught_up(Duration::from_secs(30))
        .await
        .expect("replica caught up");
    let mut ids = Vec::new();
    for reply_to in [None, Some(named.id)] {
        let mut body = json!({"email_address": "success@simulator.amazonses.com", "template_id": f.template_id,
                "personalisation": {"name": "Ann", "code": 1}, "one_click_unsubscribe_url": url});
        if let Some(r) = reply_to {
            body["email_reply_to_id"] = json!(r);
        }
        let (code, v) = f.post(&ingest, "/v2/notifications/email", &body).await;
        assert_eq!(code, 201, "{v}");
        // app/v2/notifications/create_response.py: the 201 echoes the URL in content,
        // and links the template by Notify's services/.../templates/... path.
        assert_eq!(v["content"]["one_click_unsubscribe_url"], url);
        assert_eq!(
            v["template"]["uri"],
            format!(
                "https://api.test/services/{}/templates/{}",
                f.service_id, f.template_id
            )
        );
        ids.push(Uuid::parse_str(v["id"].as_str().unwrap()).unwrap());
    }
    let persist = Persist::new(f.writer.clone(), queue.clone(), Arc::new(Knobs::embedded()));
    drain(&queue, QueueName::Intake(ProcessType::Normal), |e| async {
        let (resp, _) = persist.handle(e).await.expect("persist");
        assert!(resp.batch_item_failures.is_empty(), "{resp:?}");
    })
    .await;
    // The send messages: the first goes to the simulator, the second to "SES".
    use floodgate_aws::Queue;
    let send_msgs = queue
        .receive(
            QueueName::Send(ProcessType::Normal),
            10,
            Duration::from_millis(500),
        )
        .await
        .expect("receive");
    let send_ids: Vec<Uuid> = send_msgs
        .iter()
        .flat_map(|m| {
            floodgate_core::SendEnvelope::decode(&m.body)
                .expect("send envelope")
                .notification_ids
        })
        .collect();
    assert_eq!(send_ids.len(), 2, "{send_ids:?}");
    let config = SendConfig {
        // Not the 14/s Terraform ships: the case sends a handful at once and asserts on their headers, not pacing. The shipped rate is tested in
        // delivery.rs (`at_the_shipped_14_per_second_the_shared_budget_...`).
        account_rate: 1_000.0,
        rate_per_second: 1_000.0,
        max_in_flight: 4,
        throttle_retries: 0,
    };
    let envelope = |id: Uuid| {
        floodgate_core::SendEnvelope {
            v: 1,
            process_type: ProcessType::Normal,
            notification_ids: vec![id],
            claim_tokens: vec![],
        }
        .encode()
    };
    let deadline = || std::time::Instant::now() + Duration::from_secs(30);

    let simulator = SimulatorMailer::new(queue.clone());
    let sender = Sender::new(
        f.writer.clone(),
        Arc::new(simulator.clone()),
        queue.clone(),
        Arc::new(Knobs::embedded()),
        config.clone(),
    );
    let (resp, _) = sender
        .handle(sqs_event(&[envelope(ids[0])]), deadline())
        .await
        .expect("send");
    assert!(resp.batch_item_failures.is_empty(), "{resp:?}");
    let want = vec![
        ("List-Unsubscribe".to_string(), format!("<{url}>")),
        (
            "List-Unsubscribe-Post".to_string(),
            "List-Unsubscribe=One-Click".to_string(),
        ),
    ];
    assert_eq!(simulator.headers_of(ids[0]), want);
    // No email_reply_to_id: the service's default (Notify's get_reply_to_text).
    assert_eq!(
        simulator.reply_to_of(ids[0]).as_deref(),
        Some("help@example.gov")
    );

    let (endpoint, bodies) = loopback_http(Reply::With(http_response(
        "200 OK",
        None,
        r#"{"MessageId":"0100-unsubscribe"}"#,
    )))
    .await;
    let ses = SesMailer::from_sdk(&local_aws_config(&endpoint).await, None);
    let sender = Sender::new(
        f.writer.clone(),
        Arc::new(ses),
        queue.clone(),
        Arc::new(Knobs::embedded()),
        config.clone(),
    );
    let (resp, _) = sender
        .handle(sqs_event(&[envelope(ids[1])]), deadline())
        .await
        .expect("send");
    assert!(resp.batch_item_failures.is_empty(), "{resp:?}");
    let seen = bodies.lock().unwrap().clone();
    assert_eq!(seen.len(), 1, "one SendEmail request");
    let request: Value = serde_json::from_str(&seen[0]).expect("SES v2 JSON");
    assert_eq!(
        request["Content"]["Simple"]["Headers"],
        json!([
            {"Name": "List-Unsubscribe", "Value": format!("<{url}>")},
            {"Name": "List-Unsubscribe-Post", "Value": "List-Unsubscribe=One-Click"},
        ]),
        "{request}"
    );
    assert_eq!(request["ReplyToAddresses"], json!(["named@example.gov"]));

    stack
        .wait_replica_caught_up(Duration::from_secs(30))
        .await
        .expect("replica caught up");
    let mut h = HeaderMap::new();
    h.insert("host", HeaderValue::from_static("api.test"));
    h.insert(
        "authorization",
        HeaderValue::from_str(&f.bearer()).expect("header"),
    );
    let r = status
        .handle(request_of(
            Method::GET,
            &format!("/v2/notifications/{}", ids[1]),
            h,
        ))
        .await;
    let n: Value = serde_json::from_str(&response_text(&r)).unwrap();
    assert_eq!(r.status_code, 200, "{n}");
    assert_eq!(n["one_click_unsubscribe_url"], url);
    // app/models.py serialize: the template version's link (TemplateHistory.get_link).
    assert_eq!(
        n["template"]["uri"],
        format!("https://api.test/v2/template/{}/version/1", f.template_id)
    );
}

fn request_of(
    method: Method,
    path: &str,
    headers: HeaderMap,
) -> aws_lambda_events::apigw::ApiGatewayV2httpRequest {
    request(method, path, headers, None)
}

/// Team and test keys as Notify defines them, through `admin`, `ingest`, `persist` and
/// `status`. A team key sends only to the service's team members and guest list, compared
/// case-insensitively (app/service/utils.py `service_allowed_to_send_to`; the refusal is
/// app/notifications/validators.py `service_can_send_to_recipient`, expected by
/// tests/app/v2/notifications/test_post_notifications.py
/// test_post_sms_notification_returns_400_if_number_not_in_guest_list and
/// tests/app/notifications/test_validators.py
/// test_service_can_send_to_recipient_passes_with_non_normalised_email); a bulk job with
/// such a row gets GC Notify's answer (cds-snc/notification-api
/// app/v2/notifications/post_notifications.py `check_for_csv_errors`). Lists hold only
/// the caller's key type's notifications (app/dao/notifications_dao.py
/// get_notifications_for_service `key_type`; tests/app/dao/notification_dao/
/// test_notification_dao.py test_get_notifications_with_a_test_api_key_type), and a
/// test key's notification is read by id only with a test key (Notify logs that mismatch
/// for now and plans to refuse it: app/v2/notifications/get_notifications.py
/// get_notification_by_id).
#[tokio::test]
async fn team_keys_send_to_the_team_and_guest_list_and_test_keys_read_only_their_own() {
    use floodgate_admin::{Admin, AdminCommand, issue_key};
    use floodgate_core::KeyType;
    use floodgate_core::keys::{BULK_TEAM_KEY_REFUSAL, TEAM_KEY_REFUSAL};
    use floodgate_persist::Persist;

    let stack = shared_stack().await;
    let secrets = Arc::new(SecretBox::from_base64(&generate_encryption_key()).expect("key"));
    let f = service_fixture_with(&stack, ProcessType::Normal, BODY, secrets.clone()).await;
    let sid = f.service_id;
    let team_key = issue_key(&f.writer, &secrets, sid, "team", KeyType::Team)
        .await
        .expect("team key");
    let test_key = issue_key(&f.writer, &secrets, sid, "test", KeyType::Test)
        .await
        .expect("test key");
    let admin = Admin::new(f.writer.clone(), None, None, None);
    for command in [
        AdminCommand::AddTeamMember {
            service_id: sid,
            email_address: "Member@Example.gov".into(),
        },
        AdminCommand::AddToGuestList {
            service_id: sid,
            email_address: "guest@example.com".into(),
        },
        AdminCommand::AddToGuestList {
            service_id: sid,
            email_address: "leaving@example.com".into(),
        },
        AdminCommand::RemoveFromGuestList {
            service_id: sid,
            email_address: "LEAVING@example.com".into(),
        },
    ] {
        admin.execute(&command).await.expect("admin command");
    }
    // Another service's team is no one's but theirs.
    let admin_error = admin
        .execute(&AdminCommand::AddTeamMember {
            service_id: Uuid::now_v7(),
            email_address: "x@example.gov".into(),
        })
        .await
        .unwrap_err();
    assert!(
        admin_error.to_string().contains("no service"),
        "{admin_error}"
    );
    let listing = admin
        .execute(&AdminCommand::List {
            service_id: Some(sid),
        })
        .await
        .expect("list");
    assert_eq!(listing["team_members"], json!(["member@example.gov"]));
    assert_eq!(listing["guest_list"], json!(["guest@example.com"]));
    stack
        .wait_replica_caught_up(Duration::from_secs(30))
        .await
        .expect("replica caught up");

    let (ingest, status, queue) = handlers(&stack, secrets.clone()).await;
    let email = |to: &str| {
        json!({"email_address": to, "template_id": f.template_id,
            "personalisation": {"name": "Ann", "code": 1}})
    };
    let bulk = |to: &[&str]| {
        let mut rows = vec![json!(["email address", "name", "code"])];
        rows.extend(to.iter().map(|a| json!([a, "Ann", "1"])));
        json!({"name": "team job", "template_id": f.template_id, "rows": rows})
    };
    let post = |key: &floodgate_admin::IssuedKey, path: &'static str, body: Value| {
        let auth = bearer_for(sid, &key.key);
        let (f, ingest) = (&f, &ingest);
        async move { f.post_with(ingest, path, &body, &auth, &[]).await }
    };
    let e = "/v2/notifications/email";
    let b = "/v2/notifications/bulk";
    let refused = json!({"status_code": 400, "errors": [{"error": "BadRequestError", "message": TEAM_KEY_REFUSAL}]});
    let mut sent: Vec<(KeyType, String)> = Vec::new();
    for to in [
        "member@example.gov",
        "MEMBER@example.GOV",
        "Guest@Example.com",
    ] {
        let (code, v) = post(&team_key, e, email(to)).await;
        assert_eq!(code, 201, "team key to {to}: {v}");
        sent.push((KeyType::Team, v["id"].as_str().unwrap_or_default().into()));
    }
    for to in [
        "stranger@example.com",
        "leaving@example.com",
        "member@example.gov.uk",
    ] {
        let (code, v) = post(&team_key, e, email(to)).await;
        assert_eq!((code, &v), (400, &refused), "team key to {to}");
    }
    // Everything else about the request is checked first (Notify's order).
    let (code, v) = post(
        &team_key,
        e,
        json!({"email_address": "stranger@example.com", "template_id": f.template_id}),
    )
    .await;
    assert_eq!(
        (code, v["errors"][0]["message"].as_str()),
        (400, Some("Missing personalisation: name, code"))
    );
    let (code, v) = post(
        &team_key,
        b,
        bulk(&["member@example.gov", "guest@example.com"]),
    )
    .await;
    assert_eq!(code, 201, "{v}");
    assert_eq!(v["data"]["notification_count"], 2);
    let team_job = v["data"]["id"].as_str().unwrap_or_default().to_string();
    let (code, v) = post(
        &team_key,
        b,
        bulk(&["member@example.gov", "stranger@example.com"]),
    )
    .await;
    assert_eq!(
        (code, v),
        (
            400,
            json!({"status_code": 400, "errors": [{"error": "BadRequestError", "message": BULK_TEAM_KEY_REFUSAL}]})
        )
    );
    // Live and test keys send to anyone.
    for (key, key_type) in [(&f.key, KeyType::Normal), (&test_key, KeyType::Test)] {
        let (code, v) = post(key, e, email("stranger@example.com")).await;
        assert_eq!(code, 201, "{key_type:?}: {v}");
        sent.push((key_type, v["id"].as_str().unwrap_or_default().into()));
    }

    let persist = Persist::new(f.writer.clone(), queue.clone(), Arc::new(Knobs::embedded()));
    for process_type in [ProcessType::Normal, ProcessType::Bulk] {
        drain(&queue, QueueName::Intake(process_type), |ev| async {
            let (resp, _) = persist.handle(ev).await.expect("persist");
            assert!(resp.batch_item_failures.is_empty(), "{resp:?}");
        })
        .await;
    }
    stack
        .wait_replica_caught_up(Duration::from_secs(30))
        .await
        .expect("replica caught up");
    let read = |key: &floodgate_admin::IssuedKey, path: String| {
        let mut h = HeaderMap::new();
        h.insert("host", HeaderValue::from_static("api.test"));
        h.insert(
            "authorization",
            HeaderValue::from_str(&bearer_for(sid, &key.key)).expect("header"),
        );
        let status = &status;
        async move {
            let r = status.handle(request_of(Method::GET, &path, h)).await;
            let v: Value = serde_json::from_str(&response_text(&r)).unwrap_or(Value::Null);
            (r.status_code, v)
        }
    };
    let listed = |v: &Value| -> Vec<String> {
        v["notifications"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|n| n["id"].as_str().unwrap_or_default().to_string())
                    .collect()
            })
            .unwrap_or_default()
    };
    let ids_of = |kt: KeyType| -> Vec<String> {
        let mut ids: Vec<String> = sent
            .iter()
            .filter(|(k, _)| *k == kt)
            .map(|(_, id)| id.clone())
            .collect();
        ids.reverse();
        ids
    };
    for (key, key_type) in [
        (&f.key, KeyType::Normal),
        (&team_key, KeyType::Team),
        (&test_key, KeyType::Test),
    ] {
        let (code, v) = read(key, "/v2/notifications".into()).await;
        assert_eq!(code, 200, "{v}");
        assert_eq!(
            listed(&v),
            ids_of(key_type),
            "{key_type:?} lists its own key type's notifications"
        );
        for (sent_with, id) in &sent {
            let (code, v) = read(key, format!("/v2/notifications/{id}")).await;
            let visible = (*sent_with == KeyType::Test) == (key_type == KeyType::Test);
            if visible {
                assert_eq!(
                    (code, v["id"].as_str()),
                    (200, Some(id.as_str())),
                    "{key_type:?} reads {sent_with:?}"
                );
            } else {
                assert_eq!(
                    (code, &v),
                    (
                        404,
                        &json!({"status_code": 404, "errors": [{"error": "NoResultFound", "message": "No result found"}]})
                    ),
                    "{key_type:?} reads {sent_with:?}"
                );
            }
        }
    }

    // A job is read as its notifications are: not by a test key when a team key sent it.
    let (code, v) = read(&team_key, format!("/v2/jobs/{team_job}")).await;
    assert_eq!(
        (code, v["data"]["id"].as_str()),
        (200, Some(team_job.as_str())),
        "{v}"
    );
    let (code, v) = read(&test_key, format!("/v2/jobs/{team_job}")).await;
    assert_eq!(
        (code, v["errors"][0]["error"].as_str()),
        (404, Some("NoResultFound")),
        "{v}"
    );

    // A removed team member: refused once the cache has it (a fresh instance here).
    admin
        .execute(&AdminCommand::RemoveTeamMember {
            service_id: sid,
            email_address: "member@example.gov".into(),
        })
        .await
        .expect("remove");
    stack
        .wait_replica_caught_up(Duration::from_secs(30))
        .await
        .expect("replica caught up");
    let fresh = f
        .ingest(
            &stack,
            Arc::new(EmbeddedQueue::uniform(Duration::from_secs(30), 5)),
        )
        .await;
    let (code, v) = f
        .post_with(
            &fresh,
            e,
            &email("member@example.gov"),
            &bearer_for(sid, &team_key.key),
            &[],
        )
        .await;
    assert_eq!((code, v), (400, refused));
}
