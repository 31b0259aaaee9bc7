"""Pieces every simulator shares: the MD5 + Base64 header scheme, failure injection, JSON helpers."""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hashlib
import hmac
import json
import logging
import random
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from dataclasses import asdict, dataclass
from datetime import date, datetime, timedelta, tzinfo
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, cast

import aiohttp
from aiohttp import web

_LOGGER = logging.getLogger(__name__)

TIME_FORMAT = "%Y%m%d%H%M%S"
CLOCK_SKEW = timedelta(minutes=5)
Q4 = Decimal("0.0001")
ZERO = Decimal("0.0000")
FAIL_MODES = frozenset({"timeout", "http500", "malformed", "error", "auth", "drop", "lost_502", "lost_garbled"})
# Modes that strike after the request was carried out: only the answer is lost (a 502 from a proxy, a
# garbled body, no answer in time, a dropped connection). Money sent into one of these has moved.
LOST_ANSWER_MODES = frozenset({"timeout", "drop", "lost_502", "lost_garbled"})


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
    """Headers of the scheme (Goldcard appCode, Cangnan appToken): MD5(code+secret+time) and Base64(code:time)."""
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

    def __init__(self, endpoints: Mapping[str, str], modes: frozenset[str] = FAIL_MODES) -> None:
        """Remember which endpoint names and failure modes are valid."""
        self._endpoints, self._modes = endpoints, modes
        self.faults: list[Fault] = []

    def add(self, mode: str, count: int = 1, endpoint: str | None = None, code: str | None = None) -> None:
        """Queue a failure; reject unknown modes and endpoints at once."""
        if mode not in self._modes:
            raise ValueError(f"unknown failure mode {mode!r}; use one of {sorted(self._modes)}")
        if endpoint is not None and endpoint not in self._endpoints:
            raise ValueError(f"unknown endpoint {endpoint!r}")
        self.faults.append(Fault(mode, max(1, count), endpoint, code))

    def take(self, endpoint: str) -> Fault | None:
        """Consume and return the failure to apply to this request to `endpoint`, if any."""
        for fault in self.faults:
            if fault.endpoint in (None, endpoint):
                fault.count -= 1
                if fault.count <= 0:
                    self.faults.remove(fault)
                return fault
        return None


class SimulatorBase(ABC):
    """What every vendor simulator shares: failure injection, background ticking, pushes, /_sim/ control."""

    meters: Mapping[str, Any]

    def __init__(
        self,
        *,
        endpoints: Mapping[str, str],
        tz: tzinfo,
        push_url: str | None,
        seed: int,
        fail_modes: frozenset[str] = FAIL_MODES,
    ) -> None:
        """Set up the shared state; the subclass builds its meters and calls make_app()."""
        self.tz, self.push_url = tz, push_url
        self.hang_seconds = 5.0
        # Goldcard and Cangnan log (endpoint, payload) and (path, body, answer); other vendors log more.
        self.requests: list[tuple[Any, ...]] = []
        self.pushes: list[tuple[Any, ...]] = []
        self.faults = FaultPlan(endpoints, fail_modes)
        self._rng = random.Random(seed)
        self._ticker: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None

    @abstractmethod
    def tick(self, minutes: float = 15) -> None:
        """Let `minutes` of use pass on every meter."""

    @abstractmethod
    def state(self) -> dict[str, Any]:
        """Return everything the simulator holds, for /_sim/state."""

    @abstractmethod
    async def push_reading(self, meter_no: str) -> tuple[int, Any]:
        """Push one meter's reading to push_url; return the HTTP status and the answer."""

    @abstractmethod
    async def push_alarm(self, meter_no: str, *args: Any, **kwargs: Any) -> tuple[int, Any]:
        """Push an alarm to push_url; return the HTTP status and the answer (the fields differ per vendor)."""

    def _now(self) -> datetime:
        return datetime.now(self.tz).replace(microsecond=0)

    def fail_next(self, mode: str, count: int = 1, endpoint: str | None = None, *, code: str | None = None) -> None:
        """Fail the next `count` requests (to `endpoint`, or any); `code` is the vendor error for mode "error"."""
        self.faults.add(mode, count, endpoint, code)

    async def start_ticking(self, interval_seconds: float, *, minutes: float = 15, push: bool = True) -> None:
        """Tick every `interval_seconds` (`minutes` of use each time); push readings when a push URL is set."""
        await self.stop_ticking()

        async def run() -> None:
            while True:
                await asyncio.sleep(interval_seconds)
                self.tick(minutes)
                for meter_no in list(self.meters) if push and self.push_url else ():
                    try:
                        await self.push_reading(meter_no)
                    except (aiohttp.ClientError, TimeoutError, RuntimeError) as err:
                        _LOGGER.warning("reading push for %s failed: %s", meter_no, err)

        self._ticker = asyncio.get_running_loop().create_task(run())

    async def stop_ticking(self) -> None:
        """Stop the background ticking, if any."""
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
            self._ticker = None

    async def close(self) -> None:
        """Stop ticking and close the push session."""
        await self.stop_ticking()
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def post_push(self, url: str, headers: Mapping[str, str], data: bytes) -> tuple[int, Any]:
        """POST a push; return the HTTP status and the decoded JSON answer (raw text if it is not JSON)."""
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession()
        timeout = aiohttp.ClientTimeout(total=10)
        async with self._session.post(url, data=data, headers=dict(headers), timeout=timeout) as resp:
            status, text = resp.status, await resp.text()
        try:
            return status, json.loads(text)
        except ValueError:
            return status, text

    def add_control_routes(self, app: web.Application) -> None:
        """Add the unauthenticated /_sim/ endpoints for humans and the dev script."""
        app.router.add_get("/_sim/state", self._sim_state)
        for name in ("tick", "fail", "alarm", "push_reading", "push_url"):
            app.router.add_post(f"/_sim/{name}", getattr(self, f"_sim_{name}"))

    async def _sim_state(self, _request: web.Request) -> web.Response:
        return reply(self.state() | {"faults": [asdict(fault) for fault in self.faults.faults]})

    async def _sim_tick(self, request: web.Request) -> web.Response:
        data = await read_body(request)
        minutes = float(data.get("minutes", 15))
        if "meters" in data:
            try:
                self.tick_some([str(meter_no) for meter_no in data["meters"]], minutes)
            except (KeyError, TypeError) as err:
                return reply({"error": f"no such meter: {err}"}, status=400)
        else:
            self.tick(minutes)
        return reply({"ok": True})

    def tick_some(self, meter_nos: list[str], minutes: float = 15) -> None:
        """Tick only these meters (the benchmark's "10% changed"): the others sit the tick out, untouched."""
        meters = cast("MutableMapping[str, Any]", self.meters)
        everyone = dict(meters)
        some = {meter_no: everyone[meter_no] for meter_no in meter_nos}
        meters.clear()
        meters.update(some)
        try:
            self.tick(minutes)
        finally:
            meters.clear()
            meters.update(everyone)

    async def _sim_fail(self, request: web.Request) -> web.Response:
        data = await read_body(request)
        try:
            self.fail_next(
                str(data.get("mode")), int(data.get("count", 1)), data.get("endpoint"), code=data.get("code")
            )
        except ValueError as err:
            return reply({"error": str(err)}, status=400)
        return reply({"ok": True})

    async def _sim_pushed(self, meter_no: str, send: Callable[[], Awaitable[tuple[int, Any]]]) -> web.Response:
        if meter_no not in self.meters:
            return reply({"error": f"unknown meter {meter_no!r}"}, status=404)
        try:
            status, answer = await send()
        except (RuntimeError, aiohttp.ClientError, TimeoutError) as err:
            return reply({"error": str(err) or type(err).__name__}, status=502)
        return reply({"status": status, "answer": answer})

    async def _sim_alarm(self, request: web.Request) -> web.Response:
        data = await read_body(request)
        meter_no, kind, priority = (
            str(data.get("meter_no")),
            str(data.get("alarm_type", "02")),
            str(data.get("priority", "3")),
        )
        content = str(data.get("content", "燃气泄漏"))
        return await self._sim_pushed(meter_no, lambda: self.push_alarm(meter_no, kind, priority, content))

    async def _sim_push_reading(self, request: web.Request) -> web.Response:
        data = await read_body(request)
        # Vendors name their meter key differently (Goldcard meterNo, Cangnan MeterID): take either.
        meter_no = str(data.get("meter_no") or data.get("meter_id"))
        return await self._sim_pushed(meter_no, lambda: self.push_reading(meter_no))

    async def _sim_push_url(self, request: web.Request) -> web.Response:
        self.push_url = (await read_body(request)).get("url") or None
        return reply({"ok": True, "push_url": self.push_url})
