//! What each key type may do beyond authenticating, as Notify rules it: a team key sends
//! only to the service's team members and guest list (alphagov/notifications-api
//! app/service/utils.py `service_allowed_to_send_to`), and a test key's notifications are
//! read only by test keys. Floodgate has no trial mode: a normal key sends to anyone.

use crate::KeyType;
use std::collections::BTreeSet;

/// Notify's answer to a team key sending elsewhere (app/notifications/validators.py
/// `service_can_send_to_recipient`), its typographic apostrophe included.
pub const TEAM_KEY_REFUSAL: &str = "Can\u{2019}t send to this recipient using a team-only API key";

/// GC Notify's answer to a bulk job with such a row (cds-snc/notification-api
/// app/v2/notifications/post_notifications.py `check_for_csv_errors`; GC Notify calls the
/// guest list a safelist).
pub const BULK_TEAM_KEY_REFUSAL: &str =
    "You cannot send to these recipients because you used a team and safelist API key.";

/// Zero-width characters notifications-utils removes before comparing addresses
/// (`OBSCURE_ZERO_WIDTH_WHITESPACE`).
const ZERO_WIDTH: &[char] = &[
    '\u{180E}', '\u{200B}', '\u{200C}', '\u{200D}', '\u{2060}', '\u{FEFF}',
];

/// An address as Notify compares recipients (notifications-utils `format_email_address`):
/// zero-width characters removed, surrounding whitespace trimmed, lower-cased.
pub fn normalise_address(address: &str) -> String {
    address
        .chars()
        .filter(|c| !ZERO_WIDTH.contains(c))
        .collect::<String>()
        .trim()
        .to_lowercase()
}

/// A service's team members and guest list together: the addresses a team key may send
/// to, normalised once when loaded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TeamAndGuestList(BTreeSet<String>);

impl TeamAndGuestList {
    pub fn new<S: AsRef<str>>(addresses: impl IntoIterator<Item = S>) -> Self {
        TeamAndGuestList(
            addresses
                .into_iter()
                .map(|a| normalise_address(a.as_ref()))
                .filter(|a| !a.is_empty())
                .collect(),
        )
    }

    pub fn contains(&self, address: &str) -> bool {
        self.0.contains(&normalise_address(address))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Whether a key of `key_type` may send to `address`: a team key only to `team`, the
/// others to anyone.
pub fn may_send_to(key_type: KeyType, team: &TeamAndGuestList, address: &str) -> bool {
    key_type != KeyType::Team || team.contains(address)
}

/// Whether a key of `reader` type may read a notification sent with a `sent_with` key:
/// test-key notifications only by test keys, and test keys only those. (Notify's lists
/// filter on the exact key type; by id it plans the same restriction and logs a mismatch
/// for now — app/v2/notifications/get_notifications.py.)
pub fn may_read(reader: KeyType, sent_with: KeyType) -> bool {
    (reader == KeyType::Test) == (sent_with == KeyType::Test)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_compare_as_notify_s() {
        // tests/app/notifications/test_validators.py
        // test_service_can_send_to_recipient_passes_with_non_normalised_email
        let team = TeamAndGuestList::new(["test@example.com"]);
        assert!(team.contains("TeSt@EXAMPLE.com"));
        assert!(team.contains(" test@example.com\u{200B} "));
        assert!(!team.contains("test@example.co"));
        assert_eq!(TeamAndGuestList::new(["A@b.co", "a@B.CO", " "]).len(), 1);
    }

    #[test]
    fn only_a_team_key_is_restricted() {
        let team = TeamAndGuestList::new(["member@example.gov", "Guest@Example.com"]);
        for key in [KeyType::Normal, KeyType::Test] {
            assert!(may_send_to(key, &team, "anyone@else.com"));
            assert!(may_send_to(
                key,
                &TeamAndGuestList::default(),
                "anyone@else.com"
            ));
        }
        assert!(may_send_to(KeyType::Team, &team, "member@example.gov"));
        assert!(may_send_to(KeyType::Team, &team, "guest@example.COM"));
        assert!(!may_send_to(KeyType::Team, &team, "anyone@else.com"));
        assert!(!may_send_to(
            KeyType::Team,
            &TeamAndGuestList::default(),
            "member@example.gov"
        ));
    }

    #[test]
    fn test_key_notifications_are_read_by_test_keys_only() {
        use KeyType::*;
        assert!(may_read(Test, Test));
        assert!(!may_read(Test, Normal));
        assert!(!may_read(Test, Team));
        assert!(!may_read(Normal, Test));
        assert!(!may_read(Team, Test));
        assert!(may_read(Normal, Team));
        assert!(may_read(Team, Normal));
        assert!(may_read(Normal, Normal));
    }

    #[test]
    fn the_refusals_are_notify_s_words() {
        assert_eq!(
            TEAM_KEY_REFUSAL,
            "Can’t send to this recipient using a team-only API key"
        );
    }
}
