"""Drives Floodgate with GOV.UK Notify's published Python client, unmodified.

    notify_client_check.py send BASE_URL API_KEY TEMPLATE_ID EMAIL REFERENCE
    notify_client_check.py read BASE_URL API_KEY NOTIFICATION_ID TEMPLATE_ID REFERENCE
    notify_client_check.py methods BASE_URL API_KEY TEMPLATE_ID EMAIL PAGED_REFERENCE UNSUBSCRIBE_URL [REPLY_TO_ID]

Prints one JSON object with what the client returned; any error status raises (non-zero exit).
"""
import json
import sys

from notifications_python_client.errors import HTTPError
from notifications_python_client.notifications import NotificationsAPIClient


def error_of(call):
    """What the client raises for an error answer: its status and Notify's message list."""
    try:
        call()
    except HTTPError as e:
        return {"status_code": e.status_code, "message": e.message, "class": type(e).__name__}
    raise SystemExit("expected an HTTPError")


def methods(client, base_url, template_id, email, paged_reference, unsubscribe_url, reply_to_id):
    """Every public method of the client that concerns email, and the errors it raises."""
    out = {}
    kwargs = {}
    if reply_to_id:
        kwargs["email_reply_to_id"] = reply_to_id
    out["sent"] = client.send_email_notification(
        email_address=email,
        template_id=template_id,
        personalisation={"name": "Ada", "code": "42"},
        reference="py-methods",
        one_click_unsubscribe_url=unsubscribe_url,
        **kwargs,
    )
    out["sanitised"] = client.send_email_notification(
        email_address=email,
        template_id=template_id,
        personalisation={"name": "[click](https://evil.link)", "code": "42"},
        sanitise_content_for=["name"],
    )
    out["template"] = client.get_template(template_id)
    out["template_version"] = client.get_template_version(template_id, 1)
    out["all_templates"] = client.get_all_templates()
    out["email_templates"] = client.get_all_templates(template_type="email")
    out["sms_templates"] = client.get_all_templates(template_type="sms")
    out["preview"] = client.post_template_preview(template_id, {"name": "Bo", "code": "7"})
    out["filtered"] = client.get_all_notifications(
        status="created", template_type="email", reference=paged_reference
    )
    first = out["filtered"]["notifications"]
    out["older_than_page"] = client.get_all_notifications(
        reference=paged_reference, older_than=first[-1]["id"] if first else None
    )
    # Follows links.next across pages until the first empty one.
    out["iterated_ids"] = [n["id"] for n in client.get_all_notifications_iterator(reference=paged_reference)]
    out["errors"] = {
        "invalid_email": error_of(
            lambda: client.send_email_notification(email_address="not-an-address", template_id=template_id)
        ),
        "unknown_template": error_of(
            lambda: client.send_email_notification(
                email_address=email, template_id="0f0e0d0c-0b0a-4908-8706-050403020100"
            )
        ),
        "missing_personalisation": error_of(
            lambda: client.send_email_notification(email_address=email, template_id=template_id)
        ),
        "http_unsubscribe_url": error_of(
            lambda: client.send_email_notification(
                email_address=email,
                template_id=template_id,
                personalisation={"name": "Ada", "code": "42"},
                one_click_unsubscribe_url="http://example.com/unsubscribe",
            )
        ),
        "bad_notification_id": error_of(lambda: client.get_notification_by_id("not-a-uuid")),
        "unknown_notification": error_of(
            lambda: client.get_notification_by_id("dd4b8b9d-d414-4a83-9256-580046bf18f9")
        ),
        "bad_status_filter": error_of(lambda: client.get_all_notifications(status="elephant")),
        "unknown_template_read": error_of(
            lambda: client.get_template("0f0e0d0c-0b0a-4908-8706-050403020100")
        ),
        "unknown_template_version": error_of(lambda: client.get_template_version(template_id, 99)),
        "preview_missing_personalisation": error_of(
            lambda: client.post_template_preview(template_id, {"name": "Bo"})
        ),
    }
    if reply_to_id:
        out["errors"]["unknown_reply_to"] = error_of(
            lambda: client.send_email_notification(
                email_address=email,
                template_id=template_id,
                personalisation={"name": "Ada", "code": "42"},
                email_reply_to_id="0f0e0d0c-0b0a-4908-8706-050403020100",
            )
        )
    # A key of the same service whose secret is wrong: the JWT's signature matches no key.
    wrong_key = client.service_id + "-" + "0" * 8 + "-0000-4000-8000-" + "0" * 12
    wrong = NotificationsAPIClient("wrong-" + wrong_key, base_url=base_url)
    out["errors"]["wrong_secret"] = error_of(lambda: wrong.get_all_notifications())
    return out


def main():
    mode, base_url, api_key = sys.argv[1:4]
    client = NotificationsAPIClient(api_key, base_url=base_url)
    if mode == "send":
        template_id, email, reference = sys.argv[4:7]
        response = client.send_email_notification(
            email_address=email,
            template_id=template_id,
            personalisation={"name": "Ada <Lovelace>", "code": "42"},
            reference=reference,
        )
        print(json.dumps(response))
    elif mode == "read":
        notification_id, template_id, reference = sys.argv[4:7]
        print(
            json.dumps(
                {
                    "notification": client.get_notification_by_id(notification_id),
                    "list": client.get_all_notifications(reference=reference),
                    "template": client.get_template(template_id),
                    "preview": client.post_template_preview(template_id, {"name": "Ada", "code": "42"}),
                }
            )
        )
    elif mode == "methods":
        template_id, email, paged_reference, unsubscribe_url = sys.argv[4:8]
        reply_to_id = sys.argv[8] if len(sys.argv) > 8 else None
        print(json.dumps(methods(client, base_url, template_id, email, paged_reference, unsubscribe_url, reply_to_id)))
    else:
        raise SystemExit("unknown mode " + mode)


if __name__ == "__main__":
    main()
