"""Schemathesis hooks for .ci/api-fuzz: a check that a 4xx answer changed nothing the admin API reports.

Before every call a snapshot is taken through the admin API: GET /accounts (every account), GET /identities,
and GET /accounts/{id}/history of the account in the request's path (when it has one). After a 4xx answer it
is taken again and must be equal. Only what requests change is compared (see ACCOUNT_FIELDS and below): the
settle requests recorded (by sequence, key, amount and time), the credits recorded, the accounts and what they
received, and the identities. Not compared: /alerts and claims sent (made by background workers only), and the
fields the workers move on their own.
"""

import atexit
import json
import sys
import os
import urllib.parse
import urllib.request

import schemathesis

ADMIN_URL = os.environ["API_FUZZ_ADMIN_URL"]
ADMIN_TOKEN = os.environ["API_FUZZ_ADMIN_TOKEN"]
VIOLATIONS = os.environ.get("API_FUZZ_VIOLATIONS")

# What requests change and the engine's background workers do not: the workers take queued settle requests
# (setting module units, the connector scale, leftovers and in-flight amounts), send and settle claims, credit
# the connector and retry, so those fields move between two snapshots without any request. Only these are
# compared.
ACCOUNT_FIELDS = ("id", "created_ms", "module", "module_scale", "received", "incoming_leftover")
SETTLEMENT_FIELDS = ("seq", "idempotency_key", "amount", "accepted_ms")
CREDIT_FIELDS = ("settlement_id", "idempotency_key", "amount", "received_ms")


def _get(path):
    request = urllib.request.Request(ADMIN_URL + path, headers={"Authorization": "Bearer " + ADMIN_TOKEN})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, None


def _pick(record, fields):
    return {k: record.get(k) for k in fields}


def _account(a):
    view = _pick(a, ACCOUNT_FIELDS)
    view["uncredited"] = sorted((_pick(c, CREDIT_FIELDS) for c in a.get("uncredited") or []), key=json.dumps)
    return view


def _history(h):
    if not isinstance(h, dict):
        return h
    return {
        "settlements": sorted((_pick(r, SETTLEMENT_FIELDS) for r in h.get("settlements") or []), key=json.dumps),
        "credits": sorted((_pick(c, CREDIT_FIELDS) for c in h.get("credits") or []), key=json.dumps),
    }


def _snapshot(case):
    """Every account (the fields above), the ledger identities, and the history of the request's account."""
    status, accounts = _get("/accounts")
    accounts = sorted((_account(a) for a in accounts or []), key=lambda a: str(a["id"]))
    snap = {"accounts": (status, accounts), "identities": _get("/identities")}
    account = (case.path_parameters or {}).get("id")
    if isinstance(account, str):
        quoted = urllib.parse.quote(account, safe="")
        status, history = _get(f"/accounts/{quoted}/history")
        snap["history"] = (status, _history(history))
    return snap


# How many 4xx answers were compared, printed when schemathesis exits (so a run shows the check ran).
_compared = [0]
atexit.register(lambda: print(f"four_xx_changes_nothing: {_compared[0]} 4xx answers compared", file=sys.stderr))

# The snapshot taken before the latest call (one worker: `-w 1`), with the case it was taken for.
_before = {"case": None, "snapshot": None}


@schemathesis.hook
def before_call(context, case, **kwargs):
    _before["case"] = case
    _before["snapshot"] = _snapshot(case)


@schemathesis.check
def four_xx_changes_nothing(ctx, response, case):
    if _before["case"] is not case or not 400 <= response.status_code < 500:
        return None
    before = _before["snapshot"]
    _compared[0] += 1
    after = _snapshot(case)
    if after != before:
        if VIOLATIONS:
            with open(VIOLATIONS, "a") as f:
                f.write(json.dumps({"method": case.method, "path": case.formatted_path,
                                    "headers": dict(case.headers or {}), "body": repr(case.body),
                                    "status": response.status_code, "response": response.text[:500],
                                    "before": before, "after": after}) + "\n")
        raise AssertionError(
            f"{case.method} {case.formatted_path} answered {response.status_code} but changed the store")
    return None
