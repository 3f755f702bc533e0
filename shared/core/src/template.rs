//! Templates as Notify has them: a subject and a markdown body with `((placeholder))`
//! fields and `((name??text))` optional content. Rendering is a pure function, used by
//! `ingest` (to validate and answer with the content) and by `send` (to build the email).

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeSet;

/// A template version as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Template {
    pub subject: String,
    pub body: String,
}

/// A rendered email: the subject as plain text, the body as markdown with the values
/// substituted (HTML-escaped).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rendered {
    pub subject: String,
    pub body: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    /// Notify's message, placeholder names in their order of first appearance.
    #[error("Missing personalisation: {}", .0.join(", "))]
    MissingPersonalisation(Vec<String>),
}

/// A placeholder occurrence in template text.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Placeholder<'a> {
    /// The name as written (without `??text`).
    name: &'a str,
    /// Optional content: shown when the value is truthy.
    conditional: Option<&'a str>,
    start: usize,
    end: usize,
}

/// Notify's key rule: case-insensitive, ignoring spaces, `_` and `-`.
pub fn normalise_key(key: &str) -> String {
    key.chars()
        .filter(|c| !matches!(c, ' ' | '_' | '-'))
        .flat_map(char::to_lowercase)
        .collect()
}

fn placeholders(text: &str) -> Vec<Placeholder<'_>> {
    let mut out = Vec::new();
    let mut i = 0;
    while let Some(open) = text[i..].find("((") {
        let start = i + open;
        // The innermost "((": "(((name)))" keeps its outer parentheses as text.
        let mut inner = start + 2;
        while text[inner..].starts_with('(') {
            inner += 1;
        }
        let Some(close) = text[inner..].find("))") else {
            break;
        };
        let content = &text[inner..inner + close];
        let blank = content
            .split("??")
            .next()
            .is_none_or(|n| n.trim().is_empty());
        if blank || content.contains('(') || content.contains('\n') {
            i = inner;
            continue;
        }
        let (name, conditional) = match content.split_once("??") {
            Some((n, t)) => (n, Some(t)),
            None => (content, None),
        };
        out.push(Placeholder {
            name: name.trim(),
            conditional,
            start: inner - 2,
            end: inner + close + 2,
        });
        i = inner + close + 2;
    }
    out
}

/// The placeholder names a template needs, normalised, in order of first appearance.
pub fn placeholder_names(t: &Template) -> Vec<String> {
    let mut seen = BTreeSet::new();
    let mut names = Vec::new();
    for p in placeholders(&t.subject)
        .into_iter()
        .chain(placeholders(&t.body))
    {
        if seen.insert(normalise_key(p.name)) {
            names.push(p.name.to_string());
        }
    }
    names
}

fn lookup<'v>(personalisation: &'v Map<String, Value>, name: &str) -> Option<&'v Value> {
    let want = normalise_key(name);
    personalisation
        .iter()
        .find(|(k, _)| normalise_key(k) == want)
        .map(|(_, v)| v)
        .filter(|v| !v.is_null())
}

/// Escapes text for HTML (values are untrusted input).
pub fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn value_text(v: &Value, in_body: bool, escape: bool) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Array(items) if in_body => items
            .iter()
            .map(|i| {
                let t = value_text(i, false, escape);
                format!("\n* {}", if escape { html_escape(&t) } else { t })
            })
            .collect::<String>()
            .trim_start_matches('\n')
            .to_string(),
        Value::Array(items) => items
            .iter()
            .map(|i| value_text(i, false, escape))
            .collect::<Vec<_>>()
            .join(", "),
        Value::Bool(true) => "yes".into(),
        Value::Bool(false) => "no".into(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn truthy(v: &Value) -> bool {
    match v {
        Value::Bool(b) => *b,
        Value::String(s) => matches!(s.trim().to_ascii_lowercase().as_str(), "yes" | "true"),
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        _ => false,
    }
}

fn substitute(
    text: &str,
    personalisation: &Map<String, Value>,
    in_body: bool,
    escape: bool,
) -> String {
    let mut out = String::with_capacity(text.len());
    let mut last = 0;
    for p in placeholders(text) {
        out.push_str(&text[last..p.start]);
        if let Some(v) = lookup(personalisation, p.name) {
            match p.conditional {
                Some(shown) if truthy(v) => out.push_str(shown),
                Some(_) => {}
                None => {
                    let t = value_text(v, in_body, escape);
                    // A list in the body is markdown already escaped item by item.
                    if !escape || (in_body && v.is_array()) {
                        out.push_str(&t);
                    } else {
                        out.push_str(&html_escape(&t));
                    }
                }
            }
        }
        last = p.end;
    }
    out.push_str(&text[last..]);
    out
}

/// Renders `t` with `personalisation`. Every placeholder needs a (non-null) value; the
/// error names all the missing ones.
pub fn render(t: &Template, personalisation: &Map<String, Value>) -> Result<Rendered, RenderError> {
    render_with(t, personalisation, true)
}

/// As [`render`], but the body carries the values as given, unescaped: what Notify returns
/// as a notification's `body` (escaping belongs to the HTML part of the email only).
pub fn render_text(
    t: &Template,
    personalisation: &Map<String, Value>,
) -> Result<Rendered, RenderError> {
    render_with(t, personalisation, false)
}

fn render_with(
    t: &Template,
    personalisation: &Map<String, Value>,
    escape_body: bool,
) -> Result<Rendered, RenderError> {
    let missing: Vec<String> = placeholder_names(t)
        .into_iter()
        .filter(|n| lookup(personalisation, n).is_none())
        .collect();
    if !missing.is_empty() {
        return Err(RenderError::MissingPersonalisation(missing));
    }
    Ok(Rendered {
        subject: substitute(&t.subject, personalisation, false, true)
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" "),
        body: substitute(&t.body, personalisation, true, escape_body),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn t(subject: &str, body: &str) -> Template {
        Template {
            subject: subject.into(),
            body: body.into(),
        }
    }

    fn p(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn substitutes_with_notify_key_rules_and_escapes_values() {
        let r = render(
            &t(
                "Hello ((First Name))",
                "Dear ((first_name)),\nyour code is ((CODE-number)).",
            ),
            &p(json!({"first-name": "Ada <script>", "code number": 1234})),
        )
        .unwrap();
        assert_eq!(r.subject, "Hello Ada &lt;script&gt;");
        assert_eq!(r.body, "Dear Ada &lt;script&gt;,\nyour code is 1234.");
    }

    #[test]
    fn the_text_body_carries_values_unescaped() {
        let tpl = t("Hi ((n))", "Dear ((n)):\n((items))");
        let r = render_text(&tpl, &p(json!({"n": "A&B <x>", "items": ["<c>"]}))).unwrap();
        assert_eq!(r.body, "Dear A&B <x>:\n* <c>");
        assert_eq!(r.subject, "Hi A&amp;B &lt;x&gt;");
    }

    #[test]
    fn missing_values_are_listed_in_order() {
        let e = render(&t("((a))", "((b)) ((a)) ((c??x))"), &p(json!({"b": "x"}))).unwrap_err();
        assert_eq!(e.to_string(), "Missing personalisation: a, c");
        let e = render(&t("((a))", ""), &p(json!({"a": null}))).unwrap_err();
        assert_eq!(e.to_string(), "Missing personalisation: a");
    }

    #[test]
    fn optional_content_follows_the_value() {
        let tpl = t("s", "Start((show??, with extra)). End");
        assert_eq!(
            render(&tpl, &p(json!({"show": "yes"}))).unwrap().body,
            "Start, with extra. End"
        );
        assert_eq!(
            render(&tpl, &p(json!({"show": true}))).unwrap().body,
            "Start, with extra. End"
        );
        assert_eq!(
            render(&tpl, &p(json!({"show": "no"}))).unwrap().body,
            "Start. End"
        );
    }

    #[test]
    fn lists_become_bullets_in_the_body_and_commas_in_the_subject() {
        let tpl = t("((items))", "You ordered:\n((items))");
        let r = render(&tpl, &p(json!({"items": ["tea", "<cake>"]}))).unwrap();
        assert_eq!(r.subject, "tea, &lt;cake&gt;");
        assert_eq!(r.body, "You ordered:\n* tea\n* &lt;cake&gt;");
    }

    #[test]
    fn odd_brackets_are_left_as_text() {
        let tpl = t("a (( b", "(((x))) and ((  )) and ((y");
        let r = render(&tpl, &p(json!({"x": "1"}))).unwrap();
        assert_eq!(r.subject, "a (( b");
        assert_eq!(r.body, "(1) and ((  )) and ((y");
        assert_eq!(placeholder_names(&tpl), vec!["x".to_string()]);
    }

    #[test]
    fn html_escape_covers_the_five() {
        assert_eq!(
            html_escape(r#"<a href="x">'&'</a>"#),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
    }
}
