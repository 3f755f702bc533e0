"""Drives Floodgate with GOV.UK Notify's published Python client, unmodified.

    notify_client_check.py send BASE_URL API_KEY TEMPLATE_ID EMAIL REFERENCE
    notify_client_check.py read BASE_URL API_KEY NOTIFICATION_ID TEMPLATE_ID REFERENCE

Prints one JSON object with what the client returned; any error status raises (non-zero exit).
"""
import json
import sys

from notifications_python_client.notifications import NotificationsAPIClient


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
    else:
        raise SystemExit("unknown mode " + mode)


if __name__ == "__main__":
    main()
