//! Notify's `sanitise_content_for`: the personalisation values a client names are made
//! inert before they are put into the email — every link-like text is removed (or, when it
//! is only words joined by dots, broken up with a space) and every Markdown character is
//! escaped, so a value cannot become a link, a heading or emphasis. The rules are
//! alphagov/notifications-api `app/v2/notifications/post_notifications.py`
//! (`sanitise_personalisation_item`) with notifications-utils' `formatters.url` pattern,
//! written out by hand because Rust's regex engine has no look-around.

/// Python's `\w` (Unicode): letters, digits and the underscore.
fn is_word(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// `\b` between `chars[i - 1]` and `chars[i]`.
fn boundary(chars: &[char], i: usize) -> bool {
    let before = i > 0 && is_word(chars[i - 1]);
    let after = chars.get(i).is_some_and(|c| is_word(*c));
    before != after
}

/// The end of the `formatters.url` match starting at `i`, if one does:
/// `(?i)\b(?<![@.])(https?://)?([\w-]+\.)+([a-z]{2,63})(?!@)\b([/?#][^<\s]*)?`.
fn url_at(chars: &[char], i: usize) -> Option<usize> {
    if !boundary(chars, i) || (i > 0 && matches!(chars[i - 1], '@' | '.')) {
        return None;
    }
    let lower = |j: usize, s: &str| {
        s.chars().enumerate().all(|(k, c)| {
            chars
                .get(j + k)
                .is_some_and(|x| x.to_ascii_lowercase() == c)
        })
    };
    let mut schemes = Vec::with_capacity(2);
    if lower(i, "https://") {
        schemes.push(8);
    } else if lower(i, "http://") {
        schemes.push(7);
    }
    schemes.push(0);
    for scheme in schemes {
        // `([\w-]+\.)+`: each label ends at its dot, so the possible ends are known.
        let mut ends = Vec::new();
        let mut k = i + scheme;
        loop {
            let start = k;
            while chars.get(k).is_some_and(|c| is_word(*c) || *c == '-') {
                k += 1;
            }
            if k == start || chars.get(k) != Some(&'.') {
                break;
            }
            k += 1;
            ends.push(k);
        }
        for &labels_end in ends.iter().rev() {
            let mut tld_end = labels_end;
            while tld_end - labels_end < 63
                && chars.get(tld_end).is_some_and(char::is_ascii_alphabetic)
            {
                tld_end += 1;
            }
            for end in (labels_end + 2..=tld_end).rev() {
                if chars.get(end) == Some(&'@') || !boundary(chars, end) {
                    continue;
                }
                let mut p = end;
                if chars.get(p).is_some_and(|c| matches!(c, '/' | '?' | '#')) {
                    p += 1;
                    while chars
                        .get(p)
                        .is_some_and(|c| *c != '<' && !c.is_whitespace())
                    {
                        p += 1;
                    }
                }
                return Some(p);
            }
        }
    }
    None
}

/// `_sanitise_url`: words joined by dots could be an honest typo ("J.Smith") and only get
/// a space after each dot; anything else that looks like a link is removed.
fn sanitise_url(link: &str) -> String {
    if link
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
    {
        link.replace('.', ". ")
    } else {
        String::new()
    }
}

/// Notify's `sanitise_personalisation_item`.
pub fn sanitise_item(value: &str) -> String {
    let chars: Vec<char> = value.chars().collect();
    let mut unlinked = String::with_capacity(value.len());
    let mut i = 0;
    while i < chars.len() {
        match url_at(&chars, i) {
            Some(end) if end > i => {
                let link: String = chars[i..end].iter().collect();
                unlinked.push_str(&sanitise_url(&link));
                i = end;
            }
            _ => {
                unlinked.push(chars[i]);
                i += 1;
            }
        }
    }
    let mut escaped = String::with_capacity(unlinked.len() * 2);
    for c in unlinked.chars() {
        if "`*_(){}[]<>#+-.!|\\".contains(c) {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}

#[cfg(test)]
mod tests {
    use super::*;

    /// alphagov/notifications-api tests/app/v2/notifications/test_post_notifications.py
    /// `test_sanitise_personalisation_item` (its `expected_sanitised` column).
    #[test]
    fn sanitises_as_notify_s_own_cases() {
        for (value, expected) in [
            (
                r"Amala, please [click this (evil link](https://evil.link)",
                r"Amala, please \[click this \(evil link\]\(\)",
            ),
            (
                "Marie.Curie-Sklodowska is rad",
                "Marie\\. Curie\\-Sklodowska is rad",
            ),
            ("https://evil.link and www.evil.link?arg=nam", " and "),
            (
                "evil. link and other-evil. lnk",
                "evil\\. link and other\\-evil\\. lnk",
            ),
            (
                "https://evil.link and www.evil.link",
                " and www\\. evil\\. link",
            ),
            (
                "www.evil.link and https://evil.link",
                "www\\. evil\\. link and ",
            ),
            (
                "foo.bar/baz and https://evil.link/foo.bar/bazpwnme",
                " and ",
            ),
            (
                "foo.bar/baz and https://localhost/foo.bar/bazsomething/weird",
                " and https://localhost/",
            ),
            (r"\# Rogue Header", r"\\\# Rogue Header"),
            (r"## Rogue Header", r"\#\# Rogue Header"),
            (
                "# Rogue Header\\\n# Rogue Header",
                "\\# Rogue Header\\\\\n\\# Rogue Header",
            ),
            (r"\\# Rogue Header", r"\\\\\# Rogue Header"),
            (r"Ulica Ceynowy 5\44", r"Ulica Ceynowy 5\\44"),
            (
                r"[żądło rządzi tą pszczołą](to-jest-atak.com)",
                r"\[żądło rządzi tą pszczołą\]\(to\-jest\-atak\. com\)",
            ),
            (r"Ulica Ceynowy 5\\\44", r"Ulica Ceynowy 5\\\\\\44"),
            (r"`*_(){}[]<>#+-.!|", r"\`\*\_\(\)\{\}\[\]\<\>\#\+\-\.\!\|"),
        ] {
            assert_eq!(sanitise_item(value), expected, "{value}");
        }
        // test_post_email_notification_sanitise_content_for_selected_personalisation
        assert_eq!(
            sanitise_item("Amala, please [click this evil link](https://evil.link)"),
            "Amala, please \\[click this evil link\\]\\(\\)"
        );
        // An address is not a link (the match may not start after `@` or end before it).
        assert_eq!(sanitise_item("ann@example.com"), "ann@example\\.com");
    }
}
