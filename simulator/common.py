"""Pieces every simulator shares: the MD5 + Base64 header scheme, failure injection, JSON helpers."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta, tzinfo
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from aiohttp import web

TIME_FORMAT = "%Y%m%d%H%M%S"
CLOCK_SKEW = timedelta(minutes=5)
Q4 = Decimal("0.0001")
ZERO = Decimal("0.0000")
FAIL_MODES = frozenset({"timeout", "http500", "malformed", "error", "auth", "drop"})


def q4(value: Decimal) -> Decimal:
    """Round to 4 decimals, half-up, as the vendors' money and volumes are."""
    return value.quantize(Q4, rounding=ROUND_HALF_UP)


def s4(value: Decimal) -> str:
    """Format a Decimal as a 4-decimal string."""
    return str(q4(value))


def dumps(data: Any) -> str:
    """Encode JSON with Chinese text kept readable and Decimals/dates as strings."""
    return json.dumps(data, ensure_ascii=False, default=_jsonable)


def _jsonable(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, (date, datetime)):
        return value.isoformat()
    if isinstance(value, (set, tuple)):
        return list(value)
    raise TypeError(f"cannot encode {type(value).__name__}")


def reply(answer: Any, status: int = 200) -> web.Response:
    """Answer with a JSON body."""
    return web.Response(status=status, text=dumps(answer), content_type="application/json")


async def read_body(request: web.Request) -> dict[str, Any]:
    """Read a control endpoint's JSON object body (empty when there is none)."""
    try:
        data = await request.json() if request.can_read_body else {}
    except ValueError:
        raise web.HTTPBadRequest(text="body is not JSON") from None
    if not isinstance(data, dict):
        raise web.HTTPBadRequest(text="body is not a JSON object")
    return data


def sign(app_code: str, secret: str, stamp: str) -> dict[str, str]:
    """Headers of the scheme: AccessToken = upper-hex MD5(code+secret+time), Authorization = Base64(code:time)."""
    token = hashlib.md5(f"{app_code}{secret}{stamp}".encode()).hexdigest().upper()
    return {"AccessToken": token, "Authorization": base64.b64encode(f"{app_code}:{stamp}".encode()).decode()}


def signature_ok(headers: Mapping[str, str], app_code: str, secret: str, now: datetime, tz: tzinfo) -> bool:
    """Whether a request's headers carry our app code, a fresh time in `tz` and the matching token."""
    try:
        decoded = base64.b64decode(headers.get("Authorization", ""), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return False
    code, _, stamp = decoded.partition(":")
    if code != app_code or len(stamp) != len("yyyyMMddHHmmss") or not stamp.isdigit():
        return False
    try:
        sent = datetime.strptime(stamp, TIME_FORMAT).replace(tzinfo=tz)
    except ValueError:
        return False
    expected = sign(app_code, secret, stamp)["AccessToken"]
    return abs(now - sent) <= CLOCK_SKEW and hmac.compare_digest(headers.get("AccessToken", ""), expected)


@dataclass(slots=True)
class Fault:
    """Fail the next `count` requests (to `endpoint`, or to any) in `mode`."""

    mode: str
    count: int
    endpoint: str | None = None
    code: str | None = None


class FaultPlan:
    """Queued failures, consumed one request at a time."""

    def __init__(self, endpoints: Mapping[str, str]) -> None:
        """Remember which endpoint names are valid."""
        self._endpoints = endpoints
        self.faults: list[Fault] = []

    def add(self, mode: str, count: int = 1, endpoint: str | None = None, code: str | None = None) -> None:
        """Queue a failure; reject unknown modes and endpoints at once."""
        if mode not in FAIL_MODES:
            raise ValueError(f"unknown failure mode {mode!r}; use one of {sorted(FAIL_MODES)}")
        if endpoint is not None and endpoint not in self._endpoints:
            raise ValueError(f"unknown endpoint {endpoint!r}")
        self.faults.append(Fault(mode, max(1, count), endpoint, code))

    def take(self, endpoint: str) -> Fault | None:
        """The failure to apply to this request to `endpoint`, if any."""
        for fault in self.faults:
            if fault.endpoint in (None, endpoint):
                fault.count -= 1
                if fault.count <= 0:
                    self.faults.remove(fault)
                return fault
        return None
