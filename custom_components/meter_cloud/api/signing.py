"""The MD5 + Base64 header scheme shared by Cangnan CNMCSP and Goldcard DAS."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Mapping
from datetime import datetime, timedelta, tzinfo

from .parse import compact_time

TIME_FORMAT = "%Y%m%d%H%M%S"


def sign(app_id: str, secret: str, timestamp: str) -> dict[str, str]:
    """Return the AccessToken and Authorization headers for one request."""
    token = hashlib.md5(f"{app_id}{secret}{timestamp}".encode()).hexdigest().upper()
    auth = base64.b64encode(f"{app_id}:{timestamp}".encode()).decode("ascii")
    return {"AccessToken": token, "Authorization": auth}


def request_headers(app_id: str, secret: str, tz: tzinfo) -> dict[str, str]:
    """All headers of a signed JSON request, stamped now in the vendor's zone."""
    stamp = timestamp(datetime.now(tz), tz)
    return {
        "Accept": "application/json",
        "Content-Type": "application/json;charset=utf-8",
        **sign(app_id, secret, stamp),
    }


def timestamp(now: datetime, tz: tzinfo) -> str:
    """Format `now` in the vendor's wall-clock zone, as the headers carry it."""
    return now.astimezone(tz).strftime(TIME_FORMAT)


def verify(
    headers: Mapping[str, str],
    app_id: str,
    secret: str,
    *,
    now: datetime,
    tz: tzinfo,
    window: timedelta,
) -> str | None:
    """Check a pushed request's headers; return None if valid, else a short reason."""
    get = headers.get
    token = get("AccessToken") or ""
    auth = get("Authorization") or ""
    try:
        decoded = base64.b64decode(auth.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return "malformed_authorization"
    sender, sep, stamp = decoded.partition(":")
    if not sep or not hmac.compare_digest(sender, app_id):
        return "unknown_sender"
    try:
        sent = _stamp_time(stamp, tz)
    except ValueError:
        return "malformed_timestamp"
    if abs(now - sent) > window:
        return "stale_timestamp"
    expected = sign(app_id, secret, stamp)["AccessToken"]
    if not hmac.compare_digest(token.strip().upper(), expected):
        return "bad_signature"
    return None


def _stamp_time(stamp: str, tz: tzinfo) -> datetime:
    """yyyyMMddHHmmss in `tz`, as strptime(TIME_FORMAT) reads it (every push: without strptime's cost)."""
    return compact_time(stamp, tz) or datetime.strptime(stamp, TIME_FORMAT).replace(tzinfo=tz)
