//! SES events as SES publishes them, and the SNS envelope around them: what the mailbox
//! simulator puts on the receipts queue, so the local stack exercises the same decoding as
//! production. The tests below check that production's decoding reads them as SES means them.

use chrono::{DateTime, Utc};
use floodgate_core::ses_event::{NOTIFICATION_ID_TAG, PROCESS_TYPE_TAG, SimulatedEvent};
use serde_json::{Value, json};
use uuid::Uuid;

/// What an SES event says about the message it belongs to (`mail` object).
#[derive(Debug, Clone)]
pub struct MailMeta<'a> {
    pub ses_message_id: &'a str,
    pub notification_id: Uuid,
    pub process_type: &'a str,
    pub from: &'a str,
    /// The recipient, as SES puts it in `destination`. Only the simulator and tests build
    /// events; nothing logs them.
    pub to: &'a str,
    pub subject: &'a str,
    pub sent_at: DateTime<Utc>,
    pub configuration_set: &'a str,
}

/// An SES event as SES publishes it (the fields Floodgate reads, plus the usual others), so
/// the simulator exercises the same decoding as production.
pub fn ses_event_json(kind: SimulatedEvent, m: &MailMeta<'_>, at: DateTime<Utc>) -> Value {
    let ts = at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let mail = json!({
        "timestamp": m.sent_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "source": m.from,
        "sendingAccountId": "123456789012",
        "messageId": m.ses_message_id,
        "destination": [m.to],
        "headersTruncated": false,
        "commonHeaders": {"from": [m.from], "to": [m.to], "subject": m.subject},
        "tags": {
            "ses:configuration-set": [m.configuration_set],
            NOTIFICATION_ID_TAG: [m.notification_id.to_string()],
            PROCESS_TYPE_TAG: [m.process_type],
        }
    });
    let bounce = |kind: &str, sub: &str, status: &str, code: &str| {
        json!({
            "bounceType": kind,
            "bounceSubType": sub,
            "bouncedRecipients": [{"emailAddress": m.to, "action": "failed",
                                   "status": status, "diagnosticCode": code}],
            "timestamp": ts,
            "feedbackId": format!("{}-bounce", m.ses_message_id),
            "reportingMTA": "dns; email.example.com"
        })
    };
    match kind {
        SimulatedEvent::Send => json!({"eventType": "Send", "mail": mail, "send": {}}),
        SimulatedEvent::Delivery => json!({
            "eventType": "Delivery", "mail": mail,
            "delivery": {"timestamp": ts, "processingTimeMillis": 546,
                         "recipients": [m.to], "smtpResponse": "250 ok",
                         "reportingMTA": "a8-70.smtp-out.amazonses.com"}
        }),
        SimulatedEvent::BouncePermanent => json!({
            "eventType": "Bounce", "mail": mail,
            "bounce": bounce("Permanent", "General", "5.1.1", "smtp; 550 5.1.1 user unknown")
        }),
        SimulatedEvent::BounceSuppressed => json!({
            "eventType": "Bounce", "mail": mail,
            "bounce": bounce("Permanent", "OnAccountSuppressionList", "5.1.1",
                             "Amazon SES did not send the message to this address because it is on the suppression list for your account.")
        }),
        SimulatedEvent::BounceTransient => json!({
            "eventType": "Bounce", "mail": mail,
            "bounce": bounce("Transient", "MailboxFull", "4.2.2", "smtp; 452 4.2.2 mailbox full")
        }),
        SimulatedEvent::BounceUndetermined => json!({
            "eventType": "Bounce", "mail": mail,
            "bounce": bounce("Undetermined", "Undetermined", "4.0.0", "smtp; 450 try later")
        }),
        SimulatedEvent::Complaint => json!({
            "eventType": "Complaint", "mail": mail,
            "complaint": {"complainedRecipients": [{"emailAddress": m.to}],
                          "timestamp": ts, "feedbackId": format!("{}-complaint", m.ses_message_id),
                          "userAgent": "Mozilla/5.0", "complaintFeedbackType": "abuse",
                          "arrivalDate": ts}
        }),
        SimulatedEvent::Reject => json!({
            "eventType": "Reject", "mail": mail, "reject": {"reason": "Bad content"}
        }),
        SimulatedEvent::DeliveryDelay => json!({
            "eventType": "DeliveryDelay", "mail": mail,
            "deliveryDelay": {"timestamp": ts, "delayType": "MailboxFull",
                              "expirationTime": ts,
                              "delayedRecipients": [{"emailAddress": m.to, "status": "4.2.2",
                                                     "diagnosticCode": "smtp; 452 4.2.2 mailbox full"}]}
        }),
        SimulatedEvent::RenderingFailure => json!({
            "eventType": "Rendering Failure", "mail": mail,
            "failure": {"errorMessage": "Attribute 'name' is not present in the rendering data.",
                        "templateName": "unused"}
        }),
    }
}

/// Wraps an event the way SNS delivers it to SQS (without raw message delivery).
pub fn sns_envelope(event: &Value, topic_arn: &str, at: DateTime<Utc>) -> Value {
    json!({
        "Type": "Notification",
        "MessageId": Uuid::new_v4().to_string(),
        "TopicArn": topic_arn,
        "Message": event.to_string(),
        "Timestamp": at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "SignatureVersion": "1",
        "Signature": "c2ltdWxhdGVk",
        "SigningCertURL": "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-0000000000000000000000.pem",
        "UnsubscribeURL": "https://sns.us-east-1.amazonaws.com/?Action=Unsubscribe"
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use floodgate_core::ses_event::*;
    use floodgate_core::status::{NotificationStatus as S, fold_statuses};

    fn meta(id: Uuid) -> MailMeta<'static> {
        MailMeta {
            ses_message_id: "0100018c-abc",
            notification_id: id,
            process_type: "normal",
            from: "noreply@example.com",
            to: "success@simulator.amazonses.com",
            subject: "Hi",
            sent_at: Utc::now(),
            configuration_set: "floodgate",
        }
    }

    fn body(kind: SimulatedEvent, id: Uuid, sns: bool) -> String {
        let e = ses_event_json(kind, &meta(id), Utc::now());
        if sns {
            sns_envelope(&e, "arn:aws:sns:us-east-1:123456789012:t", Utc::now()).to_string()
        } else {
            e.to_string()
        }
    }

    #[test]
    fn every_event_type_maps_to_its_status_in_both_wrappings() {
        let id = Uuid::now_v7();
        let cases = [
            (SimulatedEvent::Send, Some(S::Sending)),
            (SimulatedEvent::DeliveryDelay, Some(S::Sending)),
            (SimulatedEvent::Delivery, Some(S::Delivered)),
            (SimulatedEvent::BouncePermanent, Some(S::PermanentFailure)),
            (SimulatedEvent::BounceSuppressed, Some(S::PermanentFailure)),
            (SimulatedEvent::BounceTransient, Some(S::TemporaryFailure)),
            (
                SimulatedEvent::BounceUndetermined,
                Some(S::TemporaryFailure),
            ),
            (SimulatedEvent::Complaint, Some(S::Delivered)),
            (SimulatedEvent::Reject, Some(S::TechnicalFailure)),
            (SimulatedEvent::RenderingFailure, Some(S::TechnicalFailure)),
        ];
        for (kind, status) in cases {
            for sns in [true, false] {
                let r = decode_receipt(&body(kind, id, sns)).unwrap();
                assert_eq!(r.status, status, "{kind:?} sns={sns}");
                assert_eq!(r.notification_id, id);
                assert_eq!(
                    Some(r.created_at),
                    floodgate_core::envelope::created_at_of(id)
                );
                assert_eq!(r.ses_message_id, "0100018c-abc");
                assert_eq!(r.complaint.is_some(), kind == SimulatedEvent::Complaint);
                let failed = matches!(
                    status,
                    Some(S::TechnicalFailure | S::PermanentFailure | S::TemporaryFailure)
                );
                assert_eq!(r.failure_reason.is_some(), failed, "{kind:?}");
            }
        }
        let r = decode_receipt(&body(SimulatedEvent::BounceTransient, id, true)).unwrap();
        assert_eq!(
            r.failure_reason.as_deref(),
            Some("Bounce Transient/MailboxFull")
        );
    }

    #[test]
    fn bad_bodies_are_errors() {
        assert!(matches!(
            decode_receipt("nope"),
            Err(ReceiptError::Malformed(_))
        ));
        assert!(matches!(
            decode_receipt(r#"{"Type":"Notification","Message":"{not json"}"#),
            Err(ReceiptError::Malformed(_))
        ));
        assert!(matches!(
            decode_receipt(r#"{"Type":"SubscriptionConfirmation","Message":"x"}"#),
            Err(ReceiptError::Malformed(_))
        ));
        let no_tag = r#"{"eventType":"Delivery","mail":{"messageId":"m","tags":{}}}"#;
        assert_eq!(decode_receipt(no_tag), Err(ReceiptError::NoNotificationId));
        let v4 = format!(
            r#"{{"eventType":"Delivery","mail":{{"messageId":"m","tags":{{"notification_id":["{}"]}}}}}}"#,
            Uuid::new_v4()
        );
        assert!(matches!(
            decode_receipt(&v4),
            Err(ReceiptError::BadNotificationId(_))
        ));
        let no_bounce = format!(
            r#"{{"eventType":"Bounce","mail":{{"messageId":"m","tags":{{"notification_id":["{}"]}}}}}}"#,
            Uuid::now_v7()
        );
        assert!(matches!(
            decode_receipt(&no_bounce),
            Err(ReceiptError::Malformed(_))
        ));
    }

    #[test]
    fn unknown_event_types_change_nothing() {
        let open = format!(
            r#"{{"eventType":"Open","mail":{{"messageId":"m","tags":{{"notification_id":["{}"]}}}}}}"#,
            Uuid::now_v7()
        );
        let r = decode_receipt(&open).unwrap();
        assert_eq!(r.status, None);
        assert_eq!(r.event_type, SesEventType::Other("Open".into()));
    }

    #[test]
    fn reduction_matches_in_order_folding_for_any_order() {
        let ids: Vec<Uuid> = (0..4).map(|_| Uuid::now_v7()).collect();
        let streams = [
            vec![SimulatedEvent::Send, SimulatedEvent::Delivery],
            vec![SimulatedEvent::Send, SimulatedEvent::BounceTransient],
            vec![
                SimulatedEvent::Send,
                SimulatedEvent::Delivery,
                SimulatedEvent::Complaint,
            ],
            vec![
                SimulatedEvent::Send,
                SimulatedEvent::Delivery,
                SimulatedEvent::BouncePermanent,
            ],
        ];
        let mut all = Vec::new();
        for (id, s) in ids.iter().zip(&streams) {
            for k in s {
                all.push(decode_receipt(&body(*k, *id, true)).unwrap());
            }
        }
        let forward = reduce_receipts(&all);
        all.reverse();
        let mut doubled = all.clone();
        doubled.extend(all.iter().cloned());
        let backward = reduce_receipts(&doubled);
        assert_eq!(forward, backward);
        for (id, s) in ids.iter().zip(&streams) {
            let in_order = fold_statuses(
                S::Created,
                s.iter().map(|k| {
                    decode_receipt(&body(*k, *id, false))
                        .unwrap()
                        .status
                        .unwrap()
                }),
            );
            assert_eq!(forward[id].status, Some(in_order));
        }
        assert_eq!(
            forward[&ids[2]].complaints.len(),
            1,
            "duplicate complaint kept once"
        );
        assert_eq!(forward[&ids[3]].status, Some(S::PermanentFailure));
    }

    #[test]
    fn simulator_addresses() {
        use SimulatedRecipient::*;
        assert_eq!(
            SimulatedRecipient::of("success@simulator.amazonses.com"),
            Success
        );
        assert_eq!(
            SimulatedRecipient::of("bounce+7@simulator.amazonses.com"),
            Bounce
        );
        assert_eq!(SimulatedRecipient::of("OOTO@Simulator.AmazonSES.com"), Ooto);
        assert_eq!(
            SimulatedRecipient::of("complaint+a+b@simulator.amazonses.com"),
            Complaint
        );
        assert_eq!(
            SimulatedRecipient::of("suppressionlist@simulator.amazonses.com"),
            SuppressionList
        );
        assert_eq!(SimulatedRecipient::of("bounce@example.com"), Success);
        assert_eq!(SimulatedRecipient::of("no-at-sign"), Success);
        for r in [Success, Bounce, Ooto, Complaint, SuppressionList] {
            let statuses = r.events().iter().map(|k| {
                decode_receipt(&body(*k, Uuid::now_v7(), true))
                    .unwrap()
                    .status
                    .unwrap()
            });
            assert_eq!(
                fold_statuses(S::Created, statuses),
                r.final_status(),
                "{r:?}"
            );
        }
    }
}
