"""Schemathesis hooks for the contract test (tests/tests/contract.rs).

Every request carries a Notify JWT signed at that moment (Notify accepts an `iat` within
30 seconds, so a token made once would expire mid-run), and some requests name the
service's real template (one without placeholders), notification or job instead of a random
id, so the success answers
are checked against the document too.
"""

import os
import random
import time

import jwt
import schemathesis

SERVICE_ID = os.environ["FLOODGATE_CONTRACT_SERVICE_ID"]
SECRET = os.environ["FLOODGATE_CONTRACT_KEY_SECRET"]
TEMPLATE_ID = os.environ["FLOODGATE_CONTRACT_TEMPLATE_ID"]
NOTIFICATION_ID = os.environ["FLOODGATE_CONTRACT_NOTIFICATION_ID"]
JOB_ID = os.environ["FLOODGATE_CONTRACT_JOB_ID"]


def _is_uuid(value):
    if not isinstance(value, str):
        return False
    try:
        import uuid

        uuid.UUID(value)
        return True
    except ValueError:
        return False


@schemathesis.auth(refresh_interval=None)
class NotifyJwt:
    def get(self, case, ctx):
        claims = {"iss": SERVICE_ID, "iat": int(time.time())}
        return jwt.encode(claims, SECRET, algorithm="HS256", headers={"typ": "JWT"})

    def set(self, case, data, ctx):
        case.headers = case.headers or {}
        case.headers["Authorization"] = f"Bearer {data}"


@schemathesis.hook
def map_body(ctx, body):
    if not isinstance(body, dict) or random.random() < 0.5:
        return body
    if _is_uuid(body.get("template_id")):
        body = dict(body, template_id=TEMPLATE_ID)
    # Rows of the right type become rows a job can have; everything else stays as drawn.
    rows = body.get("rows")
    if "csv" not in body and isinstance(rows, list) and all(isinstance(r, list) for r in rows):
        body = dict(body, rows=[["email address"], ["success@simulator.amazonses.com"]])
    return body


@schemathesis.hook
def map_path_parameters(ctx, path_parameters):
    if not path_parameters or random.random() < 0.5:
        return path_parameters
    params = dict(path_parameters)
    if _is_uuid(params.get("id")):
        params["id"] = TEMPLATE_ID
    if _is_uuid(params.get("notification_id")):
        params["notification_id"] = NOTIFICATION_ID
    if _is_uuid(params.get("job_id")):
        params["job_id"] = JOB_ID
    return params
