"""KUMIR-RESURS client: the session of chapter 4 and the xml_import_export module of chapter 5.

Session: login.php answers 302 with a session cookie (Location interface.php) or 302 to failed.php
(wrong credentials). A session lives 30 minutes; we renew it through session.php well before that
and log in again whenever the server sends us back to index.php ("session gone"). The cookie goes
with each request explicitly, never through the shared session's cookie jar: two accounts on one
server would otherwise swap sessions. Credentials go only into the login form, never into logs or
error messages.

Data: one export per followed archive covers every followed node and system. Sensors show the
newest value of each (system, parameter) across the archives; hour and day archives also feed
long-term statistics.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from functools import partial
from typing import Any, ClassVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import aiohttp

from ..base import MeterClient
from ..errors import (
    AuthenticationError,
    CommandError,
    ConfigurationError,
    InvalidRequestError,
    MeterCloudError,
    ResponseError,
)
from ..http import RawAnswer, check_status, post_raw
from ..models import Capability, ConfigField, HistoryPoint, HistorySeries, ImportRecord, MeterData, ValueInfo
from .archive import ARCHIVES, ArchiveRow, export_request, import_document, parse_export
from .params import PARAMS, describe, is_losses_system, sum_components
from .xmlsafe import parse

_LOGGER = logging.getLogger(__name__)

CONF_BASE_URL = "base_url"
CONF_LOGIN = "login"
CONF_PASSWORD = "login_password"  # noqa: S105 - a config key, not a secret
CONF_NODES = "nodes"
CONF_SYSTEMS = "systems"
CONF_ARCHIVES = "archives"
CONF_TRANSPORT = "transport"
CONF_TIME_ZONE = "time_zone"
CONF_BACKFILL_DAYS = "backfill_days"

DEFAULT_BASE_URL = "https://v4.ntckumir.ru"
DEFAULT_SYSTEMS = "1, 2, 3, 4, 5, 6"
DEFAULT_ARCHIVES = ("hour", "day", "total")
DEFAULT_BACKFILL_DAYS = 30
MAX_BACKFILL_DAYS = 366
TRANSPORTS = ("raw", "form", "multipart")

EXPORT_PATH = "modules/xml_import_export/export.php"
IMPORT_PATH = "modules/xml_import_export/import.php"
COOKIE_NAMES = ("SESSID", "session_id")
# Where the server sends a request whose session it does not know (4.3's index.php; the start page).
SESSION_GONE_PAGES = frozenset({"index.php", "failed.php", ""})
# A session lives 30 minutes after login or renewal; renew when this much of it is gone.
SESSION_TTL = 30 * 60.0
RENEW_AFTER = 20 * 60.0
# How far back each archive is read for the sensors: enough to see its newest record.
POLL_WINDOW = {
    "hour": timedelta(hours=3),
    "day": timedelta(days=2),
    "month": timedelta(days=62),
    "year": timedelta(days=400),
    "total": timedelta(0),
}
# Newest value wins; at the same instant the archive earlier in this list wins (total = current).
PRIORITY = {archive: rank for rank, archive in enumerate(("total", "hour", "day", "month", "year"))}
STATISTIC_ARCHIVES = ("hour", "day")
# Backfill exports are cut so one answer holds at most about this many records.
MAX_RECORDS_PER_EXPORT = 20_000
MAX_EXPORT_BYTES = 32 * 1024 * 1024
UNKNOWN_TRANSLATION = "kumir_param"

_SEPARATORS = re.compile(r"[;,\t]|\s+")


@dataclass(frozen=True, slots=True)
class Node:
    """A followed device: node code, device serial number, device type."""

    code: str
    serial: str
    devtype: str

    @property
    def meter_id(self) -> str:
        """Our id of the device: node code and serial (a node may hold several devices)."""
        return meter_id(self.code, self.serial)

    def __str__(self) -> str:
        """As a person would name it in a list."""
        return f"{self.code} · {self.devtype} {self.serial}"


def meter_id(code: str, serial: str) -> str:
    """The meter id of a node's device."""
    return f"{code}/{serial}"


def value_key(system: int, param: str) -> str:
    """The key of one parameter of one system in MeterData.values."""
    return f"s{system}_{param}"


def split_key(key: str) -> tuple[int, str]:
    """(system, parameter) of a value key."""
    system, param = key[1:].split("_", 1)
    return int(system), param


def parse_nodes(text: str) -> list[Node]:
    """Nodes from text, one per line: code, serial number and device type (spaces, ';' or ',' between)."""
    nodes: list[Node] = []
    for number, line in enumerate(str(text or "").splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        parts = [part for part in _SEPARATORS.split(line.strip()) if part]
        if len(parts) != 3:
            raise ConfigurationError(
                f"line {number}: expected node code, serial number and device type", reason="invalid_node_list"
            )
        nodes.append(Node(*parts))
    return nodes


def format_nodes(nodes: Iterable[Node]) -> str:
    """The stored form of a node list."""
    return "\n".join(f"{node.code} {node.serial} {node.devtype}" for node in nodes)


def parse_systems(text: Any) -> list[int]:
    """Accounting schemes (tariffs, heat systems, channels) from "1, 2, 3"."""
    found: list[int] = []
    for part in _SEPARATORS.split(str(text or "").strip()):
        if not part:
            continue
        if not part.isdigit() or not part.isascii() or int(part) > 999:
            raise ConfigurationError(f"{part!r} is not a system number", reason="invalid_systems")
        found.append(int(part))
    if not found:
        raise ConfigurationError("no system number given", reason="invalid_systems")
    return sorted(set(found))


class KumirClient(MeterClient):
    """Client of KUMIR-RESURS (NTC KUMIR): archives of heat, electricity, gas and pulse meters."""

    backend: ClassVar[str] = "kumir"
    config_fields: ClassVar[tuple[ConfigField, ...]] = (
        ConfigField(CONF_BASE_URL, kind="url", default=DEFAULT_BASE_URL, identity=True),
        ConfigField(CONF_LOGIN, credential=True, identity=True),
        ConfigField(CONF_PASSWORD, kind="password", credential=True),
        ConfigField(CONF_NODES, kind="multiline", required=False),
        ConfigField(CONF_SYSTEMS, default=DEFAULT_SYSTEMS),
        ConfigField(CONF_ARCHIVES, kind="multiselect", default=list(DEFAULT_ARCHIVES), options=ARCHIVES),
        ConfigField(CONF_TRANSPORT, kind="select", default="raw", options=TRANSPORTS),
        ConfigField(CONF_TIME_ZONE, required=False),
        ConfigField(CONF_BACKFILL_DAYS, kind="number", default=DEFAULT_BACKFILL_DAYS, maximum=MAX_BACKFILL_DAYS),
    )
    manufacturer: ClassVar[str] = "KUMIR-RESURS"
    currency: ClassVar[str] = "RUB"
    meter_list_key: ClassVar[str | None] = CONF_NODES
    default_timezone: ClassVar[str | None] = None  # the archives' wall time: Home Assistant's zone unless set
    history_interval: ClassVar[timedelta] = timedelta(hours=1)
    # Archives arrive hours late: each hourly import re-reads two days.
    history_lookback: ClassVar[timedelta] = timedelta(days=2)

    def __init__(self, session: aiohttp.ClientSession, config: Mapping[str, Any], **kwargs: Any) -> None:
        """Read the settings; nothing is sent until the first request."""
        super().__init__(session, config, **kwargs)
        self.fields = frozenset({"reading_time", "values"})
        self.capabilities = frozenset({Capability.HISTORY, Capability.IMPORT, Capability.DISCOVER})
        self._base = str(self._config.get(CONF_BASE_URL) or DEFAULT_BASE_URL).rstrip("/")
        self.nodes = parse_nodes(self._config.get(CONF_NODES) or "")
        self.systems = parse_systems(self._config.get(CONF_SYSTEMS, DEFAULT_SYSTEMS))
        archives = self._config.get(CONF_ARCHIVES) or list(DEFAULT_ARCHIVES)
        self.archives = [archive for archive in ARCHIVES if archive in archives]
        if not self.archives:
            raise ConfigurationError("no archive chosen", reason="invalid_archives")
        self.transport = str(self._config.get(CONF_TRANSPORT) or "raw")
        if self.transport not in TRANSPORTS:
            raise ConfigurationError(f"unknown transport {self.transport!r}", reason="invalid_config")
        days = int(float(self._config.get(CONF_BACKFILL_DAYS, DEFAULT_BACKFILL_DAYS) or 0))
        self.backfill = timedelta(days=min(max(days, 0), MAX_BACKFILL_DAYS))
        self.max_export_bytes = MAX_EXPORT_BYTES
        self.clock: Callable[[], float] = time.monotonic
        self._session_id: tuple[str, str] | None = None  # (cookie name, value)
        self._session_since = 0.0
        self._lock = asyncio.Lock()
        # (meter, key) → (time, archive rank, value): the newest value seen, kept across polls.
        self._latest: dict[str, dict[str, tuple[datetime, int, Decimal]]] = {}
        self._kinds: dict[str, Node] = {}

    @classmethod
    def unique_id(cls, config: Mapping[str, Any]) -> str:
        """Account identity: the server and the login."""
        host = str(config.get(CONF_BASE_URL) or DEFAULT_BASE_URL).rstrip("/").split("://", 1)[-1]
        return f"kumir_{host}_{config[CONF_LOGIN]}".lower()

    @classmethod
    def title(cls, config: Mapping[str, Any]) -> str:
        """Title shown for the entry."""
        return f"KUMIR-RESURS {config[CONF_LOGIN]}"

    @classmethod
    def timezone_for(cls, config: Mapping[str, Any]) -> str | None:
        """The zone the archives' `dat` is read in, when the user set one."""
        name = str(config.get(CONF_TIME_ZONE) or "").strip()
        if not name:
            return None
        try:
            ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError) as err:
            raise ConfigurationError(f"unknown time zone {name!r}", reason="invalid_time_zone") from err
        return name

    # --- session ------------------------------------------------------------------------------

    def _url(self, path: str) -> str:
        return f"{self._base}/{path}"

    def _cookies(self) -> dict[str, str]:
        return dict([self._session_id]) if self._session_id else {}

    async def _post(self, path: str, body: Any, headers: Mapping[str, str] | None = None) -> RawAnswer:
        self.request_count += 1
        return await post_raw(
            self._session,
            self._url(path),
            body,
            headers=headers,
            cookies=self._cookies(),
            timeout=self.request_timeout,
            max_bytes=self.max_export_bytes,
        )

    @staticmethod
    def _redirect(answer: RawAnswer) -> str | None:
        """The page a 302 leads to (its last path segment), None when not redirected."""
        if answer.status not in (301, 302, 303, 307):
            return None
        location = answer.headers.get("Location", "")
        return location.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1].lower()

    async def _login(self) -> None:
        self._session_id = None
        form = aiohttp.FormData({"login": str(self._config[CONF_LOGIN]), "password": str(self._config[CONF_PASSWORD])})
        answer = await self._post("login.php", form)
        page = self._redirect(answer)
        if page == "failed.php":
            raise AuthenticationError("KUMIR-RESURS refused the login or password")
        if page is None:
            check_status(self._url("login.php"), answer.status)
            raise ResponseError(f"login answered HTTP {answer.status} instead of a redirect")
        for name in COOKIE_NAMES:
            if answer.cookies.get(name):
                self._session_id = (name, answer.cookies[name])
                break
        else:
            raise ResponseError("login gave no session cookie", reason="no_session")
        self._session_since = self.clock()
        _LOGGER.debug("Logged in to %s", self._base)

    async def _ensure_session(self) -> None:
        """A live session: log in, or renew one that is getting old."""
        async with self._lock:
            if self._session_id is None:
                await self._login()
                return
            if self.clock() - self._session_since < RENEW_AFTER:
                return
            answer = await self._post("session.php", b"")
            if answer.status == 200:
                self._session_since = self.clock()
                return
            if self._redirect(answer) is None:
                check_status(self._url("session.php"), answer.status)
            # Renewal refused: the session is gone, start a new one.
            await self._login()

    async def _exchange(self, path: str, document: bytes, field: str) -> bytes:
        """Send a document (export or import) on a live session; log in again once if it is gone."""
        for attempt in (1, 2):
            await self._ensure_session()
            answer = await self._post(path, *self._body(document, field))
            page = self._redirect(answer)
            if page is None:
                return self._checked(path, answer)
            if page not in SESSION_GONE_PAGES:
                # Not the login flow's pages: a moved server (http → https) is a setting to fix.
                raise ConfigurationError(
                    f"{path} redirected to {answer.headers.get('Location', '')!r}", reason="unexpected_redirect"
                )
            # Sent back to the start page: the server has forgotten our session.
            _LOGGER.debug("KUMIR-RESURS session gone (%s); logging in again", page)
            async with self._lock:
                self._session_id = None
            if attempt == 2:
                # A brand-new session refused too: not the password (login worked); the account's rights.
                raise CommandError("KUMIR-RESURS refuses a new session for this module", reason="session_refused")
        raise AssertionError("unreachable")  # pragma: no cover

    def _body(self, document: bytes, field: str) -> tuple[Any, Mapping[str, str] | None]:
        transport = self.transport
        if transport == "form" and field == "xml_file_import":
            transport = "raw"  # import has no form-field variant (table 5.2 is multipart)
        if transport == "form":
            return aiohttp.FormData({"xml": document.decode()}), None
        if transport == "multipart":
            form = aiohttp.FormData()
            form.add_field(field, document, filename=f"{field}.xml", content_type="application/xml")
            return form, None
        return document, {"Content-Type": "application/xml; charset=utf-8"}

    def _checked(self, path: str, answer: RawAnswer) -> bytes:
        """The body of a 2xx answer; a refusal the server explains becomes a CommandError with its words."""
        if answer.status == 400:
            result = _result(answer.body)
            if result.get("status") == "error":
                raise CommandError(result.get("message") or "refused", code="400", reason="kumir_refused")
        check_status(self._url(path), answer.status)
        return answer.body

    async def async_close(self) -> None:
        """End the session (the spec asks for it, though it is not obligatory); a failed goodbye changes nothing."""
        async with self._lock:
            if self._session_id is None:
                return
            try:
                await self._post("logout.php", b"")
            except MeterCloudError as err:
                _LOGGER.debug("Could not end the session with %s: %s", self._base, err)
            finally:
                self._session_id = None

    async def async_validate(self) -> None:
        """A real login proves the server and the credentials."""
        async with self._lock:
            await self._login()

    # --- export -------------------------------------------------------------------------------

    def _node_triples(self, nodes: Sequence[Node] | None) -> list[tuple[str, str, str]]:
        return [(node.code, node.serial, node.devtype) for node in (self.nodes if nodes is None else nodes)]

    async def _export(
        self, archive: str, begin: datetime, end: datetime, nodes: Sequence[Node] | None = None
    ) -> list[ArchiveRow]:
        document = export_request(
            begin=begin, end=end, archives=[archive], systems=self.systems, nodes=self._node_triples(nodes)
        )
        body = await self._exchange(EXPORT_PATH, document, "xml_file_export")
        return await self._parse(body)

    async def _parse(self, body: bytes) -> list[ArchiveRow]:
        """Parse off the event loop: a large export takes seconds of CPU (see the benchmark)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(None, partial(parse_export, body, self._tz, max_bytes=self.max_export_bytes))

    def _now(self) -> datetime:
        return datetime.now(self._tz).replace(microsecond=0)

    async def async_get_meters(self) -> dict[str, MeterData]:
        """One export per followed archive; each meter's newest value of every parameter."""
        now = self._now()
        for archive in self.archives:
            for row in await self._export(archive, now - POLL_WINDOW[archive], now):
                self._remember(row)
        return {meter: self._meter(meter) for meter in self._meter_ids()}

    def _meter_ids(self) -> list[str]:
        ids = {node.meter_id: None for node in self.nodes}
        ids.update(dict.fromkeys(self._kinds))
        return list(ids)

    def _follows(self, row: ArchiveRow) -> bool:
        """Whether a row is of a followed node (all nodes when none are listed; a node by code or serial)."""
        if not self.nodes:
            return True
        return any(node.code == row.node_code or node.serial == row.serial for node in self.nodes)

    def _remember(self, row: ArchiveRow) -> None:
        if not self._follows(row):
            return
        meter = meter_id(row.node_code, row.serial)
        self._kinds[meter] = Node(row.node_code, row.serial, row.devtype)
        latest = self._latest.setdefault(meter, {})
        rank = PRIORITY.get(row.archive, len(PRIORITY))
        # Compared as instants: the repeated hour of a DST fall-back has the same wall time.
        instant = row.time.astimezone(UTC)
        for param, value in row.values.items():
            key = value_key(row.system, param)
            known = latest.get(key)
            if known is None or (instant, -rank) >= (known[0].astimezone(UTC), -known[1]):
                latest[key] = (row.time, rank, value)

    def _meter(self, meter: str) -> MeterData:
        node = self._kinds.get(meter) or next(node for node in self.nodes if node.meter_id == meter)
        latest = self._latest.get(meter, {})
        return MeterData(
            meter_id=meter,
            device_id=node.serial,
            user_no=node.code,
            model=node.devtype,
            reading_time=max((when for when, _, _ in latest.values()), default=None),
            values={key: value for key, (_, _, value) in sorted(latest.items())},
        )

    async def async_discover(self) -> list[Node]:
        """The account's nodes, when an export without a node list names them (the total archive)."""
        now = self._now()
        rows = await self._export("total", now, now, nodes=[])
        found = {meter_id(row.node_code, row.serial): Node(row.node_code, row.serial, row.devtype) for row in rows}
        return list(found.values())

    def meter_list(self) -> str:
        """The followed nodes in their stored form."""
        return format_nodes(self.nodes)

    @classmethod
    def format_meter_list(cls, meters: Sequence[Any]) -> str:
        """Discovered nodes in their stored form."""
        return format_nodes(meters)

    # --- what the values mean -----------------------------------------------------------------

    def unsupported_reason(self, capability: Capability, meter: MeterData | None) -> str:
        """Heat, electricity and gas-corrector nodes have neither a prepaid balance nor a remote valve."""
        if capability is Capability.VALVE:
            return "no_valve"
        if capability in (Capability.RECHARGE, Capability.ADJUST_BALANCE, Capability.SET_PRICE):
            return "no_prepaid_balance"
        return super().unsupported_reason(capability, meter)

    def value_info(self, meter: MeterData, key: str) -> ValueInfo:
        """Unit, classes and defaults of one value, from the parameter table and the tariff rules."""
        system, param = split_key(key)
        devtype = meter.model or ""
        info = describe(param)
        if info is None:
            return ValueInfo(key, param, system, UNKNOWN_TRANSLATION, None, None, None, enabled=False)
        # A sum tariff repeats energy the followed component tariffs already count; losses are not use.
        parts = sum_components(devtype, system)
        repeats = bool(parts) and any(part in self.systems for part in parts)
        off_dashboard = repeats or is_losses_system(devtype, system)
        state_class = None if info.cumulative and off_dashboard else info.state_class
        lowest = min((s for s, p in map(split_key, meter.values or {}) if p == param), default=system)
        enabled = info.shown and (info.cumulative or not info.meter_wide or system == lowest)
        return ValueInfo(
            key,
            param,
            system,
            f"kumir_{param.lower()}",
            info.unit,
            info.device_class,
            state_class,
            enabled=enabled,
            statistic=info.cumulative and not off_dashboard,
            label=info.label,
        )

    # --- long-term statistics -----------------------------------------------------------------

    async def async_history_series(
        self, meters: Sequence[MeterData], start: datetime, end: datetime
    ) -> list[HistorySeries]:
        """Hour and day records of every cumulative parameter, in as few exports as the size allows."""
        wanted = {meter.meter_id: meter for meter in meters}
        nodes = [self._node_of(meter) for meter in meters]
        points: dict[tuple[str, str], dict[datetime, tuple[int, Decimal]]] = {}
        for archive in (a for a in STATISTIC_ARCHIVES if a in self.archives):
            rank = PRIORITY[archive]
            for chunk_start, chunk_end in self._chunks(archive, start, end, len(nodes)):
                for row in await self._export(archive, chunk_start, chunk_end, nodes):
                    meter = meter_id(row.node_code, row.serial)
                    if meter not in wanted:
                        continue
                    for param, value in row.values.items():
                        param_info = PARAMS.get(param)
                        if param_info is None or not param_info.cumulative:
                            continue
                        slot = points.setdefault((meter, value_key(row.system, param)), {})
                        # Keyed by the instant: both occurrences of a fall-back hour are kept.
                        instant = row.time.astimezone(UTC)
                        if instant not in slot or rank < slot[instant][0]:
                            slot[instant] = (rank, value)
        series: list[HistorySeries] = []
        for (meter, key), slot in points.items():
            info = self.value_info(wanted[meter], key)
            if not info.statistic:
                continue
            ordered = sorted(slot.items())
            series.append(
                HistorySeries(
                    meter_id=meter,
                    key=key,
                    name=f"{meter} {info.label} (system {info.system})",
                    unit=info.unit,
                    points=[HistoryPoint(time=when, value=value) for when, (_, value) in ordered],
                )
            )
        return series

    def _node_of(self, meter: MeterData) -> Node:
        node = self._kinds.get(meter.meter_id)
        if node is not None:
            return node
        return Node(meter.user_no or meter.meter_id, meter.device_id or "", meter.model or "")

    def _chunks(self, archive: str, start: datetime, end: datetime, nodes: int) -> list[tuple[datetime, datetime]]:
        """Windows small enough that one export stays under MAX_RECORDS_PER_EXPORT records."""
        step = timedelta(hours=1) if archive == "hour" else timedelta(days=1)
        per_window = max(1, MAX_RECORDS_PER_EXPORT // max(1, nodes * len(self.systems)))
        width = step * per_window
        chunks: list[tuple[datetime, datetime]] = []
        begin = start
        while begin <= end:
            stop = min(end, begin + width - timedelta(seconds=1))
            chunks.append((begin, stop))
            begin = stop + timedelta(seconds=1)
        return chunks

    # --- import -------------------------------------------------------------------------------

    async def async_import(self, records: Sequence[ImportRecord]) -> dict[str, str]:
        """Upload readings (import.php, the entry's transport) and return the server's answer, field by field.

        A naive record time is wall time of the account's zone.
        """
        rows = [
            ArchiveRow(
                node_code=record.node,
                serial=record.serial,
                devtype=record.device_type,
                archive=record.archive,
                system=record.system,
                time=record.time if record.time.tzinfo else record.time.replace(tzinfo=self._tz),
                values=record.values,
            )
            for record in records
        ]
        document = import_document(rows)
        body = await self._exchange(IMPORT_PATH, document, "xml_file_import")
        result = _result(body)
        if result.get("status") == "error":
            raise CommandError(result.get("message") or "refused", reason="kumir_refused")
        return result


def _result(body: bytes) -> dict[str, str]:
    """The fields of a `<result>` answer ({} when the body is no such document)."""
    if not body.strip():
        return {}
    try:
        root = parse(body, max_bytes=1024 * 1024)
    except ResponseError:
        if body.lstrip().startswith(b"<"):
            raise
        return {}
    return {child.tag: (child.text or "").strip() for child in root if isinstance(child.tag, str)}


__all__ = [
    "CONF_ARCHIVES",
    "CONF_BACKFILL_DAYS",
    "CONF_BASE_URL",
    "CONF_LOGIN",
    "CONF_NODES",
    "CONF_PASSWORD",
    "CONF_SYSTEMS",
    "CONF_TIME_ZONE",
    "CONF_TRANSPORT",
    "InvalidRequestError",
    "KumirClient",
    "Node",
    "format_nodes",
    "parse_nodes",
    "parse_systems",
]
