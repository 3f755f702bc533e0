//! Request validation as pure functions over the request bytes: the Notify v2 schemas for
//! `POST /v2/notifications/email` and GC Notify's `POST /v2/notifications/bulk`, with
//! Notify's messages. Nothing here does I/O; the handler looks the template up afterwards.

use chrono::{DateTime, Duration, NaiveDateTime, Utc};
use floodgate_api::ApiError;
use floodgate_core::auth::python_uuid as py_uuid;
use floodgate_core::keys::BULK_TEAM_KEY_REFUSAL;
use floodgate_core::template::normalise_key;
use serde_json::{Map, Value};
use uuid::Uuid;

/// Personalisation larger than this (as JSON) is refused (GC Notify's limit).
pub const MAX_PERSONALISATION_BYTES: usize = 51_200;
/// A client reference longer than this is refused.
pub const MAX_REFERENCE_CHARS: usize = 1_000;
/// The most rows one bulk request may carry (header row not counted).
pub const MAX_BULK_ROWS: usize = floodgate_core::limits::MAX_JOB_ROWS as usize;
/// How far ahead a bulk job may be scheduled (GC Notify: 96 hours).
pub const MAX_SCHEDULE_AHEAD_HOURS: i64 = 96;
/// How far ahead one email may be scheduled (Notify's `datetime_within_next_day`).
pub const MAX_EMAIL_SCHEDULE_AHEAD_HOURS: i64 = 24;

/// The properties of Notify's `post_email_request` schema that Floodgate accepts, in the
/// schema's order (the order Notify reports their errors in).
pub const EMAIL_FIELDS: &[&str] = &[
    "reference",
    "email_address",
    "template_id",
    "personalisation",
    "scheduled_for",
    "email_reply_to_id",
    "one_click_unsubscribe_url",
    "sanitise_content_for",
];

/// SES refuses a message header value longer than this.
pub const MAX_HEADER_VALUE_CHARS: usize = 870;

#[derive(Debug, Clone, PartialEq)]
pub struct EmailRequest {
    pub email_address: String,
    pub template_id: Uuid,
    pub personalisation: Map<String, Value>,
    pub reference: Option<String>,
    pub email_reply_to_id: Option<Uuid>,
    pub scheduled_for: Option<DateTime<Utc>>,
    /// RFC 8058 one-click unsubscribe: sent as the `List-Unsubscribe` header.
    pub one_click_unsubscribe_url: Option<String>,
    /// Notify's `sanitised_content` answer: for each personalisation value that
    /// `sanitise_content_for` changed, `{"unsanitised": ..., "sanitised": ...}`.
    /// `personalisation` already holds the sanitised values.
    pub sanitised_content: Map<String, Value>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct BulkRequest {
    pub name: String,
    pub template_id: Uuid,
    /// Header row first.
    pub rows: Vec<Vec<String>>,
    pub reference: Option<String>,
    pub reply_to_id: Option<Uuid>,
    pub scheduled_for: Option<DateTime<Utc>>,
}

/// One valid bulk row: recipient and personalisation (empty cells left out, so a
/// placeholder with an empty cell counts as missing, as in Notify).
#[derive(Debug, Clone, PartialEq)]
pub struct BulkRow {
    pub email_address: String,
    pub personalisation: Map<String, Value>,
}

fn parse_object(body: &[u8]) -> Result<Map<String, Value>, ApiError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|_| ApiError::bad_request("Invalid JSON supplied in POST data"))?;
    crate::storable::reject_unstorable(&value)?;
    match value {
        Value::Object(m) => Ok(m),
        _ => Err(ApiError::bad_request("Invalid JSON supplied in POST data")),
    }
}

/// Notify's `get_valid_json`: unparseable JSON is a `BadRequestError`; a falsy document
/// (`null`, `false`, `0`, `""`, `[]`, `{}`) counts as `{}`; any other non-object fails the
/// schema's `"type": "object"`.
fn parse_notify_object(body: &[u8]) -> Result<Map<String, Value>, ApiError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|_| ApiError::bad_request("Invalid JSON supplied in POST data"))?;
    crate::storable::reject_unstorable(&value)?;
    let falsy = match &value {
        Value::Null | Value::Bool(false) => true,
        Value::Bool(true) => false,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(_) => false,
    };
    match value {
        Value::Object(m) => Ok(m),
        _ if falsy => Ok(Map::new()),
        other => Err(type_error_unnamed(&other, "object")),
    }
}

/// The top-level keys of a JSON object in the order the client wrote them (`Map` sorts
/// them; Notify names unexpected properties in document order). `body` has parsed as a
/// JSON object already.
fn top_level_keys(body: &[u8]) -> Vec<String> {
    let mut keys = Vec::new();
    let mut depth = 0usize;
    let mut i = 0usize;
    // At depth 1, a string right after `{` or `,` is a key.
    let mut expect_key = false;
    while i < body.len() {
        match body[i] {
            b'{' | b'[' => {
                depth += 1;
                expect_key = depth == 1 && body[i] == b'{';
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            b',' if depth == 1 => expect_key = true,
            b'"' => {
                let start = i;
                i += 1;
                while i < body.len() && body[i] != b'"' {
                    if body[i] == b'\\' {
                        i += 1;
                    }
                    i += 1;
                }
                if expect_key
                    && depth == 1
                    && let Some(raw) = body.get(start..=i)
                    && let Ok(k) = serde_json::from_slice::<String>(raw)
                {
                    keys.push(k);
                }
                expect_key = false;
            }
            _ => {}
        }
        i += 1;
    }
    keys
}

/// jsonschema's `additionalProperties` message, apostrophes stripped as Notify does.
fn additional_properties(extras: &[String]) -> String {
    let names: Vec<String> = extras
        .iter()
        .map(|k| shown_value(&Value::String(k.clone())))
        .collect();
    let verb = if extras.len() == 1 { "was" } else { "were" };
    format!(
        "Additional properties are not allowed ({} {verb} unexpected)",
        names.join(", ")
    )
}

fn reject_unknown(m: &Map<String, Value>, allowed: &[&str]) -> Result<(), ApiError> {
    if let Some(k) = m.keys().find(|k| !allowed.contains(&k.as_str())) {
        // Echo the field name only if it is short and printable: it is attacker input.
        let shown: String = k.chars().filter(|c| !c.is_control()).take(100).collect();
        return Err(ApiError::validation(format!(
            "Additional properties are not allowed ({shown} was unexpected)"
        )));
    }
    Ok(())
}

fn required<'a>(m: &'a Map<String, Value>, field: &str) -> Result<&'a Value, ApiError> {
    m.get(field)
        .ok_or_else(|| ApiError::validation(format!("{field} is a required property")))
}

fn string<'a>(v: &'a Value, field: &str) -> Result<&'a str, ApiError> {
    v.as_str().ok_or_else(|| type_error(field, v, "string"))
}

/// Notify's type error: jsonschema's message names the value as Python prints it, and
/// Notify strips every apostrophe from it (app/schema_validation/__init__.py).
fn type_error(field: &str, v: &Value, expected: &str) -> ApiError {
    ApiError::validation(type_message(field, v, expected))
}

fn type_message(field: &str, v: &Value, expected: &str) -> String {
    format!("{field} {} is not of type {expected}", shown_value(v))
}

/// The document itself is of the wrong type: jsonschema's error has no path.
fn type_error_unnamed(v: &Value, expected: &str) -> ApiError {
    ApiError::validation(format!("{} is not of type {expected}", shown_value(v)))
}

/// A value as jsonschema's messages print it (Python's `repr`, apostrophes stripped).
/// Unlike Notify, at most 100 characters and no control characters: it is client input
/// echoed back, and may be megabytes long.
fn shown_value(v: &Value) -> String {
    shown_text(&py_repr(v), 100)
}

fn shown_text(text: &str, max_chars: usize) -> String {
    let mut shown = text.replace('\'', "");
    if shown.chars().count() > max_chars {
        shown = shown.chars().take(max_chars).collect::<String>() + "...";
    }
    shown.chars().filter(|c| !c.is_control()).collect()
}

/// `repr()` of the value Python's json module would decode `v` into.
fn py_repr(v: &Value) -> String {
    match v {
        Value::Null => "None".into(),
        Value::Bool(true) => "True".into(),
        Value::Bool(false) => "False".into(),
        Value::Number(n) => n.to_string(),
        Value::String(s) if s.contains('\'') && !s.contains('"') => format!("\"{s}\""),
        Value::String(s) => format!("'{s}'"),
        Value::Array(a) => format!("[{}]", a.iter().map(py_repr).collect::<Vec<_>>().join(", ")),
        Value::Object(o) => format!(
            "{{{}}}",
            o.iter()
                .map(|(k, v)| format!("'{k}': {}", py_repr(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

fn optional_string<'a>(
    m: &'a Map<String, Value>,
    field: &str,
) -> Result<Option<&'a str>, ApiError> {
    match m.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => string(v, field).map(Some),
    }
}

fn uuid_field(v: &Value, field: &str) -> Result<Uuid, ApiError> {
    v.as_str()
        .and_then(py_uuid)
        .ok_or_else(|| ApiError::validation(format!("{field} is not a valid UUID")))
}

fn optional_uuid(m: &Map<String, Value>, field: &str) -> Result<Option<Uuid>, ApiError> {
    match m.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => uuid_field(v, field).map(Some),
    }
}

/// The bulk API's reference: null is an absence there (GC Notify).
fn bulk_reference(m: &Map<String, Value>) -> Result<Option<String>, ApiError> {
    let r = optional_string(m, "reference")?;
    if let Some(r) = r
        && r.chars().count() > MAX_REFERENCE_CHARS
    {
        return Err(ApiError::validation(format!(
            "reference {} is too long",
            shown_text(r, 2 * MAX_REFERENCE_CHARS)
        )));
    }
    Ok(r.map(str::to_string))
}

/// Notify's `scheduled_for`: ISO 8601 (`2024-01-31T12:00:00Z`), `2024-01-31 12:00` or a
/// date alone (taken as UTC); not in the past (a minute's grace for clock drift); at most
/// `max_hours` ahead. The error is the message without the field name. `past` is the
/// wording of the API at hand ("can not" in Notify, "cannot" in GC Notify's bulk API).
fn parse_schedule(
    s: &str,
    now: DateTime<Utc>,
    max_hours: i64,
    past: &str,
    ahead: &str,
) -> Result<DateTime<Utc>, String> {
    let parsed = DateTime::parse_from_rfc3339(s)
        .map(|d| d.with_timezone(&Utc))
        .ok()
        .or_else(|| {
            ["%Y-%m-%d %H:%M", "%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S",
             "%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f"]
                .iter()
                .find_map(|f| NaiveDateTime::parse_from_str(s, f).ok())
                .or_else(|| {
                    chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d")
                        .ok()
                        .and_then(|d| d.and_hms_opt(0, 0, 0))
                })
                .map(|n| n.and_utc())
        })
        .ok_or_else(|| {
            "datetime format is invalid. It must be a valid ISO8601 date time format, https://en.wikipedia.org/wiki/ISO_8601".to_string()
        })?;
    if parsed < now - Duration::minutes(1) {
        return Err(format!("datetime {past} be in the past"));
    }
    if parsed > now + Duration::hours(max_hours) {
        return Err(format!(
            "datetime can only be {ahead}{max_hours} hours in the future"
        ));
    }
    Ok(parsed)
}

/// GC Notify's bulk `scheduled_for`: at most 96 hours ahead.
pub fn scheduled_for(
    m: &Map<String, Value>,
    now: DateTime<Utc>,
) -> Result<Option<DateTime<Utc>>, ApiError> {
    let Some(s) = optional_string(m, "scheduled_for")? else {
        return Ok(None);
    };
    parse_schedule(s, now, MAX_SCHEDULE_AHEAD_HOURS, "cannot", "up to ")
        .map(Some)
        .map_err(|m| ApiError::validation(format!("scheduled_for {m}")))
}

const LOCAL_CHARS: &str = ".!#$%&'*+/=?^_`{|}~-";

/// Notify's email rule (notifications-utils `validate_email_address`): a local part of
/// permitted characters, a hostname of at least two valid labels, no `..`, at most 320
/// characters. Stricter than Notify on purpose: a local part is at most 64 characters
/// (SES refuses longer ones) and a hostname must already be ASCII (Notify IDNA-encodes).
pub fn is_valid_email(address: &str) -> bool {
    let a = address.trim();
    if a.is_empty() || a.len() > 320 || a.contains("..") {
        return false;
    }
    let Some((local, host)) = a.rsplit_once('@') else {
        return false;
    };
    if local.is_empty()
        || local.len() > 64
        || !local
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || LOCAL_CHARS.contains(c))
    {
        return false;
    }
    let labels: Vec<&str> = host.split('.').collect();
    if labels.len() < 2 || host.len() > 253 {
        return false;
    }
    if !labels.iter().all(|l| l.len() <= 63 && hostname_part(l)) {
        return false;
    }
    let tld = labels.last().copied().unwrap_or_default();
    let punycode = tld
        .strip_prefix("xn--")
        .or_else(|| tld.strip_prefix("XN--"))
        .is_some_and(|rest| {
            !rest.is_empty()
                && !rest.starts_with('-')
                && !rest.ends_with('-')
                && !rest.contains("--")
                && rest.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        });
    (2..=63).contains(&tld.len()) && tld.chars().all(|c| c.is_ascii_alphabetic()) || punycode
}

/// notifications-utils' `hostname_part`, `^(xn|[a-z0-9]+)(-?-[a-z0-9]+)*$`: runs of letters
/// and digits joined by one or two hyphens, never at either end.
fn hostname_part(label: &str) -> bool {
    !label.is_empty()
        && !label.starts_with('-')
        && !label.ends_with('-')
        && !label.contains("---")
        && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
}

/// Notify's `personalisation` property is `{"type": "object"}`: null is a type error.
fn personalisation(m: &Map<String, Value>) -> Result<Map<String, Value>, ApiError> {
    match m.get("personalisation") {
        None => Ok(Map::new()),
        Some(Value::Object(p)) => {
            let size = serde_json::to_string(p)
                .map(|s| s.len())
                .unwrap_or(usize::MAX);
            if size > MAX_PERSONALISATION_BYTES {
                return Err(ApiError::validation(format!(
                    "Personalisation variables size of {size} bytes is greater than allowed limit of {MAX_PERSONALISATION_BYTES} bytes."
                )));
            }
            Ok(p.clone())
        }
        Some(v) => Err(type_error("personalisation", v, "object")),
    }
}

/// `POST /v2/notifications/email`: Notify's `post_email_request` schema, every error of
/// the request listed in the order Notify's jsonschema finds them (properties in schema
/// order, then the required ones, then unexpected ones).
pub fn email_request(body: &[u8], now: DateTime<Utc>) -> Result<EmailRequest, ApiError> {
    let m = parse_notify_object(body)?;
    let mut errors: Vec<String> = Vec::new();
    let reference = match m.get("reference") {
        None => None,
        Some(Value::String(r)) => {
            if r.chars().count() > MAX_REFERENCE_CHARS {
                // Notify echoes the whole value; a cap keeps a hostile one from being
                // reflected at length.
                errors.push(format!(
                    "reference {} is too long",
                    shown_text(r, 2 * MAX_REFERENCE_CHARS)
                ));
            }
            Some(r.clone())
        }
        Some(v) => {
            errors.push(type_message("reference", v, "string"));
            None
        }
    };
    let email_address = match m.get("email_address") {
        None => None,
        Some(Value::String(e)) => {
            if !is_valid_email(e) {
                errors.push("email_address Not a valid email address".into());
            }
            Some(e.trim().to_string())
        }
        Some(v) => {
            errors.push(type_message("email_address", v, "string"));
            None
        }
    };
    let template_id = m.get("template_id").and_then(|v| {
        let id = v.as_str().and_then(py_uuid);
        if id.is_none() {
            errors.push("template_id is not a valid UUID".into());
        }
        id
    });
    let personalisation = match personalisation(&m) {
        Ok(p) => p,
        Err(e) => {
            errors.push(e.message);
            Map::new()
        }
    };
    let scheduled_for = match m.get("scheduled_for") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => {
            match parse_schedule(s, now, MAX_EMAIL_SCHEDULE_AHEAD_HOURS, "can not", "") {
                Ok(at) => Some(at),
                Err(message) => {
                    errors.push(format!("scheduled_for {message}"));
                    None
                }
            }
        }
        Some(v) => {
            errors.push(type_message("scheduled_for", v, "string, null"));
            None
        }
    };
    // A uuid property: null is not absent, it is not a valid UUID.
    let email_reply_to_id = m.get("email_reply_to_id").and_then(|v| {
        let id = v.as_str().and_then(py_uuid);
        if id.is_none() {
            errors.push("email_reply_to_id is not a valid UUID".into());
        }
        id
    });
    // Notify's `https_url` definition: a string, a URI (rfc3987), starting "https"; any of
    // these failing is the one validationMessage.
    let one_click_unsubscribe_url = match m.get("one_click_unsubscribe_url") {
        None => None,
        Some(Value::String(u)) if u.starts_with("https") && is_uri(u) => {
            if u.chars().count() > MAX_HEADER_VALUE_CHARS - 2 {
                // Floodgate's own limit: the header value is `<url>`, and SES refuses
                // longer ones; Notify has none.
                errors.push(format!(
                    "one_click_unsubscribe_url is longer than {} characters",
                    MAX_HEADER_VALUE_CHARS - 2
                ));
            }
            Some(u.clone())
        }
        Some(_) => {
            errors.push("one_click_unsubscribe_url is not a valid https url".into());
            None
        }
    };
    let sanitise_for: Vec<String> = match m.get("sanitise_content_for") {
        None | Some(Value::Null) => Vec::new(),
        // Names match as Notify's InsensitiveSet does; an item that is not a string names
        // nothing (Notify fails on one with a 500).
        Some(Value::Array(names)) => names
            .iter()
            .filter_map(Value::as_str)
            .map(normalise_key)
            .collect(),
        Some(v) => {
            errors.push(type_message("sanitise_content_for", v, "array, null"));
            Vec::new()
        }
    };
    for field in ["email_address", "template_id"] {
        if !m.contains_key(field) {
            errors.push(format!("{field} is a required property"));
        }
    }
    let mut extras: Vec<String> = top_level_keys(body)
        .into_iter()
        .filter(|k| !EMAIL_FIELDS.contains(&k.as_str()))
        .collect();
    let mut seen = Vec::new();
    extras.retain(|k| {
        let first = !seen.contains(k);
        seen.push(k.clone());
        first
    });
    if !extras.is_empty() {
        errors.push(additional_properties(&extras));
    }
    if let Some(e) = ApiError::validation_all(errors) {
        return Err(e);
    }
    let (Some(email_address), Some(template_id)) = (email_address, template_id) else {
        // Both are required properties, checked above.
        return Err(ApiError::validation("email_address is a required property"));
    };
    let mut personalisation = personalisation;
    let mut sanitised_content = Map::new();
    if !sanitise_for.is_empty() {
        for (key, value) in personalisation.iter_mut() {
            let Value::String(text) = value else {
                continue;
            };
            if !sanitise_for.contains(&normalise_key(key)) {
                continue;
            }
            let clean = crate::sanitise::sanitise_item(text);
            if clean != *text {
                let mut change = Map::new();
                change.insert("unsanitised".into(), Value::String(text.clone()));
                change.insert("sanitised".into(), Value::String(clean.clone()));
                sanitised_content.insert(key.clone(), Value::Object(change));
                *text = clean;
            }
        }
    }
    Ok(EmailRequest {
        email_address,
        template_id,
        personalisation,
        reference,
        email_reply_to_id,
        scheduled_for,
        one_click_unsubscribe_url,
        sanitised_content,
    })
}

/// An absolute URI as RFC 3986 (and the `rfc3987` package Notify's `uri` format uses)
/// defines it: a scheme, a colon, then only URI characters and well-formed `%XX` escapes.
/// No whitespace, no control character, no `<`, `>` or `"`, so the value is safe inside a
/// `List-Unsubscribe: <...>` header.
pub fn is_uri(s: &str) -> bool {
    let Some((scheme, rest)) = s.split_once(':') else {
        return false;
    };
    let mut chars = scheme.chars();
    if !chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        || !chars.all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
    {
        return false;
    }
    let bytes = rest.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'%' {
            let hex = |j: usize| bytes.get(j).is_some_and(u8::is_ascii_hexdigit);
            if !(hex(i + 1) && hex(i + 2)) {
                return false;
            }
            i += 3;
            continue;
        }
        let ok = b.is_ascii_alphanumeric() || b"-._~:/?#[]@!$&'()*+,;=".contains(&b);
        if !ok {
            return false;
        }
        i += 1;
    }
    // The hier-part of an https URL has an authority.
    !scheme.eq_ignore_ascii_case("https") || rest.starts_with("//") && rest.len() > 2
}

fn cell_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// `POST /v2/notifications/bulk`: shape only (rows are checked by [`bulk_rows`]).
pub fn bulk_request(body: &[u8], now: DateTime<Utc>) -> Result<BulkRequest, ApiError> {
    let m = parse_object(body)?;
    reject_unknown(
        &m,
        &[
            "name",
            "template_id",
            "rows",
            "csv",
            "reference",
            "scheduled_for",
            "reply_to_id",
        ],
    )?;
    let name = string(required(&m, "name")?, "name")?.to_string();
    let template_id = uuid_field(required(&m, "template_id")?, "template_id")?;
    let rows = match (m.get("rows"), m.get("csv")) {
        (Some(Value::Array(rows)), None) => rows
            .iter()
            .map(|r| match r {
                Value::Array(cells) => Ok(cells.iter().map(cell_text).collect()),
                _ => Err(ApiError::validation("rows is not an array of arrays")),
            })
            .collect::<Result<Vec<Vec<String>>, _>>()?,
        (Some(_), None) => return Err(ApiError::validation("rows is not of type array")),
        (None, Some(Value::String(csv))) => parse_csv(csv)?,
        (None, Some(_)) => return Err(ApiError::validation("csv is not of type string")),
        _ => {
            return Err(ApiError::bad_request(
                "You should specify either rows or csv",
            ));
        }
    };
    Ok(BulkRequest {
        name,
        template_id,
        rows,
        reference: bulk_reference(&m)?,
        reply_to_id: optional_uuid(&m, "reply_to_id")?,
        scheduled_for: scheduled_for(&m, now)?,
    })
}

fn parse_csv(text: &str) -> Result<Vec<Vec<String>>, ApiError> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(text.as_bytes());
    let mut rows = Vec::new();
    for (i, record) in reader.records().enumerate() {
        let record = record.map_err(|_| {
            ApiError::bad_request(format!("Error converting to CSV: line {}", i + 1))
        })?;
        rows.push(record.iter().map(str::to_string).collect());
        if rows.len() > MAX_BULK_ROWS + 1 {
            break;
        }
    }
    Ok(rows)
}

/// How many row errors one answer lists (the count says how many there were).
const LISTED_ROW_ERRORS: usize = 10;

/// Checks every row of a bulk request against the template's placeholders and the caller's
/// `may_send_to` (a team key's rule); all rows or none. Rows are numbered from 1, the first
/// row after the header.
pub fn bulk_rows(
    rows: &[Vec<String>],
    placeholders: &[String],
    may_send_to: &dyn Fn(&str) -> bool,
) -> Result<Vec<BulkRow>, ApiError> {
    let Some((header, data)) = rows.split_first() else {
        return Err(ApiError::bad_request(
            "Missing column headers: email address",
        ));
    };
    let keys: Vec<String> = header.iter().map(|h| normalise_key(h)).collect();
    let Some(recipient) = keys.iter().position(|k| k == "emailaddress") else {
        return Err(ApiError::bad_request(
            "Missing column headers: email address",
        ));
    };
    if data.is_empty() {
        return Err(ApiError::bad_request(
            "No rows: a header row and at least one row are needed",
        ));
    }
    if data.len() > MAX_BULK_ROWS {
        return Err(ApiError::bad_request(format!(
            "Too many rows. Maximum number of rows allowed is {MAX_BULK_ROWS}"
        )));
    }
    // GC Notify checks the recipients against a team key's list here, after the row count
    // and before each row's errors (check_for_csv_errors).
    if data
        .iter()
        .any(|row| !may_send_to(row.get(recipient).map(|s| s.trim()).unwrap_or_default()))
    {
        return Err(ApiError::bad_request(BULK_TEAM_KEY_REFUSAL));
    }
    let needed: Vec<(String, &String)> = placeholders
        .iter()
        .map(|p| (normalise_key(p), p))
        .filter(|(k, _)| k != "emailaddress")
        .collect();
    let mut out = Vec::with_capacity(data.len());
    let mut errors: Vec<String> = Vec::new();
    let mut error_count = 0usize;
    for (i, row) in data.iter().enumerate() {
        let email = row.get(recipient).map(|s| s.trim()).unwrap_or_default();
        let mut problems = Vec::new();
        if !is_valid_email(email) {
            problems.push("`email address`: invalid recipient".to_string());
        }
        let mut p = Map::new();
        for (c, cell) in row.iter().enumerate() {
            if c != recipient && !cell.is_empty() && c < header.len() {
                p.insert(header[c].clone(), Value::String(cell.clone()));
            }
        }
        let missing: Vec<&str> = needed
            .iter()
            .filter(|(k, _)| {
                !keys
                    .iter()
                    .enumerate()
                    .any(|(c, hk)| hk == k && row.get(c).is_some_and(|v| !v.is_empty()))
            })
            .map(|(_, name)| name.as_str())
            .collect();
        if !missing.is_empty() {
            problems.push(format!("Missing personalisation: {}", missing.join(", ")));
        }
        if problems.is_empty() {
            out.push(BulkRow {
                email_address: email.to_string(),
                personalisation: p,
            });
        } else {
            error_count += 1;
            if errors.len() < LISTED_ROW_ERRORS {
                errors.push(format!("Row {} - {}", i + 1, problems.join("; ")));
            }
        }
    }
    if error_count > 0 {
        let more = if error_count > errors.len() {
            format!(" ({} rows have errors in all)", error_count)
        } else {
            String::new()
        };
        return Err(ApiError::bad_request(format!(
            "Some rows have errors. {}.{more}",
            errors.join(". ")
        )));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        Utc::now()
    }

    fn msg(e: ApiError) -> (u16, &'static str, String) {
        (e.status, e.error, e.message)
    }

    #[test]
    fn emails() {
        for ok in [
            "a@b.co",
            "first.last+tag@sub.example.org",
            "x@xn--bcher-kva.ch",
            " a@b.co ",
            "a@b--c.co",
            "it's@example.com",
            "a@example.xn--p1ai",
        ] {
            assert!(is_valid_email(ok), "{ok}");
        }
        for bad in [
            "",
            "a",
            "a@",
            "@b.co",
            "a@b",
            "a@b.c",
            "a..b@c.co",
            "a b@c.co",
            "a@-b.co",
            "a@b_c.co",
            "a@b---c.co",
            "a@example.c0m",
            "a@b.co@d.co",
        ] {
            assert!(!is_valid_email(bad), "{bad}");
        }
    }

    #[test]
    fn email_request_errors_are_notify_s() {
        let tid = Uuid::now_v7();
        let e = |body: &str| msg(email_request(body.as_bytes(), now()).unwrap_err());
        assert_eq!(
            e("{nope"),
            (
                400,
                "BadRequestError",
                "Invalid JSON supplied in POST data".into()
            )
        );
        assert_eq!(e("[]").0, 400);
        assert_eq!(
            e(&format!(
                r#"{{"email_address":"a@b.co","template_id":"{tid}","colour":1}}"#
            )),
            (
                400,
                "ValidationError",
                "Additional properties are not allowed (colour was unexpected)".into()
            )
        );
        assert_eq!(
            e(&format!(r#"{{"template_id":"{tid}"}}"#)),
            (
                400,
                "ValidationError",
                "email_address is a required property".into()
            )
        );
        assert_eq!(
            e(r#"{"email_address":"a@b.co","template_id":"x"}"#),
            (
                400,
                "ValidationError",
                "template_id is not a valid UUID".into()
            )
        );
        assert_eq!(
            e(&format!(
                r#"{{"email_address":"nope","template_id":"{tid}"}}"#
            )),
            (
                400,
                "ValidationError",
                "email_address Not a valid email address".into()
            )
        );
        assert_eq!(
            e(&format!(r#"{{"email_address":5,"template_id":"{tid}"}}"#)).2,
            "email_address 5 is not of type string"
        );
        // alphagov/notifications-api tests/app/v2/notifications/test_notification_schemas.py
        assert_eq!(
            e(&format!(
                r#"{{"email_address":"a@b.co","template_id":"{tid}","reference":null}}"#
            ))
            .2,
            "reference None is not of type string"
        );
        assert_eq!(
            e(&format!(
                r#"{{"email_address":["it's"],"template_id":"{tid}"}}"#
            ))
            .2,
            "email_address [\"its\"] is not of type string"
        );
        assert_eq!(
            e(&format!(
                r#"{{"email_address":"a@b.co","template_id":"{tid}","personalisation":"x"}}"#
            ))
            .2,
            "personalisation x is not of type object"
        );
        assert_eq!(
            e(&format!(
                r#"{{"email_address":"a@b.co","template_id":"{tid}","personalisation":[]}}"#
            ))
            .2,
            "personalisation [] is not of type object"
        );
        let big = "x".repeat(MAX_PERSONALISATION_BYTES);
        assert!(
            e(&format!(r#"{{"email_address":"a@b.co","template_id":"{tid}","personalisation":{{"a":"{big}"}}}}"#))
                .2
                .starts_with("Personalisation variables size of 51208 bytes")
        );
        let long = "r".repeat(MAX_REFERENCE_CHARS + 1);
        assert_eq!(
            e(&format!(
                r#"{{"email_address":"a@b.co","template_id":"{tid}","reference":"{long}"}}"#
            ))
            .2,
            format!("reference {long} is too long")
        );
        assert_eq!(
            e(&format!(r#"{{"email_address":"a@b.co","template_id":"{tid}","scheduled_for":"2001-01-01 10:00"}}"#)).2,
            "scheduled_for datetime can not be in the past"
        );
        let ok = email_request(
            format!(r#"{{"email_address":"a@b.co","template_id":"{tid}","personalisation":{{"n":1}},"reference":"r"}}"#)
                .as_bytes(),
            now(),
        )
        .unwrap();
        assert_eq!(ok.template_id, tid);
        assert_eq!(ok.reference.as_deref(), Some("r"));
        assert_eq!(ok.personalisation["n"], 1);
    }

    /// alphagov/notifications-api app/schema_validation/__init__.py (`build_error_message`
    /// lists every error) and tests/app/v2/notifications/test_post_notifications.py
    /// (`test_notification_returns_400_and_for_schema_problems`).
    #[test]
    fn every_schema_error_is_listed_in_notify_s_order() {
        let e = email_request(
            br#"{"zz": 1, "template": "x", "email_address": 12345, "personalisation": [], "reference": null}"#,
            now(),
        )
        .unwrap_err();
        assert_eq!(
            e.messages(),
            vec![
                "reference None is not of type string",
                "email_address 12345 is not of type string",
                "personalisation [] is not of type object",
                "template_id is a required property",
                "Additional properties are not allowed (zz, template were unexpected)",
            ]
        );
        // A falsy document is an empty object (Notify's get_valid_json).
        for body in ["null", "[]", "0", "\"\"", "{}", "false"] {
            assert_eq!(
                email_request(body.as_bytes(), now())
                    .unwrap_err()
                    .messages(),
                vec![
                    "email_address is a required property",
                    "template_id is a required property"
                ],
                "{body}"
            );
        }
        assert_eq!(
            email_request(b"[1]", now()).unwrap_err().messages(),
            vec!["[1] is not of type object"]
        );
    }

    #[test]
    fn uuids_parse_as_python_s() {
        let id = Uuid::now_v7();
        for ok in [
            id.to_string(),
            id.simple().to_string(),
            format!("{{{id}}}"),
            format!("urn:uuid:{id}"),
            id.to_string().to_uppercase(),
        ] {
            assert_eq!(py_uuid(&ok), Some(id), "{ok}");
        }
        for bad in ["", "0", "1234-badly-formatted-id-7890", &format!("{id}0")] {
            assert_eq!(py_uuid(bad), None, "{bad}");
        }
    }

    #[test]
    fn keys_come_in_document_order() {
        assert_eq!(
            top_level_keys(br#"{"b": {"x": [1, {"y": 2}]}, "a\"q": "s,t", "c": []}"#),
            vec!["b", "a\"q", "c"]
        );
    }

    #[test]
    fn bulk_shapes() {
        let tid = Uuid::now_v7();
        let r = bulk_request(
            format!(
                r#"{{"name":"j","template_id":"{tid}","csv":"email address,name\na@b.co,Ann\n"}}"#
            )
            .as_bytes(),
            now(),
        )
        .unwrap();
        assert_eq!(
            r.rows,
            vec![vec!["email address", "name"], vec!["a@b.co", "Ann"]]
        );
        let r = bulk_request(
            format!(r#"{{"name":"j","template_id":"{tid}","rows":[["email address","n"],["a@b.co",5]]}}"#).as_bytes(),
            now(),
        )
        .unwrap();
        assert_eq!(r.rows[1], vec!["a@b.co", "5"]);
        let e = bulk_request(
            format!(r#"{{"name":"j","template_id":"{tid}"}}"#).as_bytes(),
            now(),
        )
        .unwrap_err();
        assert_eq!(msg(e).2, "You should specify either rows or csv");
        let e = bulk_request(
            format!(r#"{{"name":"j","template_id":"{tid}","rows":[],"csv":""}}"#).as_bytes(),
            now(),
        )
        .unwrap_err();
        assert_eq!(msg(e).2, "You should specify either rows or csv");
    }

    #[test]
    fn bulk_rows_are_all_checked_and_named() {
        let s = |v: &[&[&str]]| -> Vec<Vec<String>> {
            v.iter()
                .map(|r| r.iter().map(|c| c.to_string()).collect())
                .collect()
        };
        let ph = vec!["name".to_string()];
        let anyone = |_: &str| true;
        let ok = bulk_rows(
            &s(&[
                &["Email Address", "Name"],
                &["a@b.co", "Ann"],
                &["c@d.co", "Bo"],
            ]),
            &ph,
            &anyone,
        )
        .unwrap();
        assert_eq!(ok.len(), 2);
        assert_eq!(ok[1].personalisation["Name"], "Bo");
        let e = bulk_rows(
            &s(&[
                &["email address", "name"],
                &["a@b.co", "Ann"],
                &["bad", "X"],
                &["c@d.co", ""],
            ]),
            &ph,
            &anyone,
        )
        .unwrap_err();
        assert_eq!(
            msg(e),
            (400, "BadRequestError", "Some rows have errors. Row 2 - `email address`: invalid recipient. Row 3 - Missing personalisation: name.".into())
        );
        let e = bulk_rows(&s(&[&["to", "name"], &["a@b.co", "x"]]), &ph, &anyone).unwrap_err();
        assert_eq!(msg(e).2, "Missing column headers: email address");
        let mut many = vec![vec!["email address".to_string()]];
        many.extend((0..=MAX_BULK_ROWS).map(|_| vec!["a@b.co".to_string()]));
        assert!(
            msg(bulk_rows(&many, &[], &anyone).unwrap_err())
                .2
                .starts_with("Too many rows")
        );
        let mut bad = vec![vec!["email address".to_string()]];
        bad.extend((0..25).map(|_| vec!["x".to_string()]));
        assert!(
            msg(bulk_rows(&bad, &[], &anyone).unwrap_err())
                .2
                .ends_with("(25 rows have errors in all)")
        );
        // A team key's refusal comes before the rows' own errors, as in GC Notify's
        // check_for_csv_errors (cds-snc/notification-api
        // app/v2/notifications/post_notifications.py).
        let team = |a: &str| a == "a@b.co";
        let rows = s(&[&["email address", "name"], &["a@b.co", "Ann"], &["bad", ""]]);
        assert_eq!(
            msg(bulk_rows(&rows, &ph, &team).unwrap_err()),
            (400, "BadRequestError", BULK_TEAM_KEY_REFUSAL.into())
        );
        assert_eq!(bulk_rows(&rows[..2], &ph, &team).unwrap().len(), 1);
    }
}
