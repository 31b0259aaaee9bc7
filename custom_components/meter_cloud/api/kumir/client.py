"""KUMIR-RESURS client: archives through the xml_import_export module of chapter 5.

The session (chapter 4) and the document exchange live in session.py. One export per followed archive
covers every followed node and system. Sensors show the newest value of each (system, parameter)
across the archives; hour and day archives also feed long-term statistics.

Which meters a poll reports: the followed nodes (or, with none listed, every node) that the poll's
export answers name. A node named with only nodata rows (its collector is late) keeps its last values;
a node the answers no longer name at all (the account stopped listing it) is not reported, so its
values are never shown as current. Its last values are kept, so it is whole again when it returns.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from functools import partial
from typing import Any, ClassVar, override
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import aiohttp

from ..errors import ConfigurationError, InvalidRequestError
from ..models import Capability, ConfigField, HistoryPoint, HistorySeries, ImportRecord, MeterData, ValueInfo
from ..values import Layout, LayoutFinding, LayoutRow, ValueParam, ValueProblem, layouts_from, meanings_from
from .archive import (
    ARCHIVES,
    ArchiveRow,
    ExportAnswer,
    NodeRows,
    export_request,
    import_document,
    parse_export_answer,
)
from .parameters import ParamTable
from .params import PARAMS
from .refusal import result_fields
from .session import (
    CONF_BASE_URL,
    CONF_LOGIN,
    CONF_PASSWORD,
    DEFAULT_BASE_URL,
    MAX_EXPORT_BYTES,
    TRANSPORTS,
    KumirSessionClient,
)
from .tariffs import Resolved, SumDetector, agrees, glossary_layout, resolve

CONF_NODES = "nodes"
CONF_SYSTEMS = "systems"
CONF_ARCHIVES = "archives"
CONF_TRANSPORT = "transport"
CONF_TIME_ZONE = "time_zone"
CONF_BACKFILL_DAYS = "backfill_days"
# Energy registers whose sum and losses tariffs have names of their own (entity translations *_sum, *_losses).
NAMED_SUM_AND_LOSSES = frozenset({"eai", "eao", "eri", "ero"})

DEFAULT_SYSTEMS = "1, 2, 3, 4, 5, 6"
DEFAULT_ARCHIVES = ("hour", "day", "total")
DEFAULT_BACKFILL_DAYS = 30
MAX_BACKFILL_DAYS = 366

EXPORT_PATH = "modules/xml_import_export/export.php"
IMPORT_PATH = "modules/xml_import_export/import.php"
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

    @override
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
        if not part.isdigit() or not part.isascii() or len(part.lstrip("0")) > 3:
            raise ConfigurationError(f"{part!r} is not a system number", reason="invalid_systems")
        found.append(int(part))
    if not found:
        raise ConfigurationError("no system number given", reason="invalid_systems")
    return sorted(set(found))


class KumirClient(KumirSessionClient):
    """Client of KUMIR-RESURS (NTC KUMIR): archives of heat, electricity, gas and pulse meters."""

    backend: ClassVar[str] = "kumir"
    value_options: ClassVar[bool] = True
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
    form_placeholders: ClassVar[Mapping[str, str]] = {"default_url": DEFAULT_BASE_URL}
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
        # (meter, key) → (time, archive rank, value): the newest value seen, kept across polls.
        self._latest: dict[str, dict[str, tuple[datetime, int, Decimal]]] = {}
        self._kinds: dict[str, Node] = {}
        # The parameter table and tariff layouts in force (the entry's options: see use_options).
        self._table = ParamTable()
        self._layouts: dict[str, Layout] = {}
        # Device type (lower case) → its spelling and the parameters and systems its rows carried.
        self._seen: dict[str, tuple[str, dict[str, None], set[int]]] = {}
        self._detectors: dict[str, SumDetector] = {}
        self._findings: dict[str, LayoutFinding] = {}
        # Archive → the last poll's export answer (its bytes) and the nodes it named; its rows were remembered and
        # judged then.
        self._last_exports: dict[str, tuple[bytes, list[tuple[str, str, str]]]] = {}
        # Archive → each node's part of the last poll's answer (a digest) and its rows: a node whose part is the
        # same is not read, remembered or judged again (parse_export_answer's `known`).
        self._node_rows: dict[str, NodeRows] = {}
        # Meters whose latest values a poll's rows touched (so their MeterData is built again).
        self._touched: set[str] = set()
        # The node list `_follows` last read, and its codes and serials.
        self._followed: tuple[list[Node], frozenset[str], frozenset[str]] | None = None
        # The last poll's meters, and the followed and named meters they were built for.
        self._last_meters: tuple[tuple[tuple[str, ...], tuple[str, ...]], dict[str, MeterData]] | None = None

    @classmethod
    @override
    def unique_id(cls, config: Mapping[str, Any]) -> str:
        """Account identity: the server and the login."""
        host = str(config.get(CONF_BASE_URL) or DEFAULT_BASE_URL).rstrip("/").split("://", 1)[-1]
        return f"kumir_{host}_{config[CONF_LOGIN]}".lower()

    @classmethod
    @override
    def title(cls, config: Mapping[str, Any]) -> str:
        """Title shown for the entry."""
        return f"KUMIR-RESURS {config[CONF_LOGIN]}"

    @classmethod
    @override
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

    @override
    async def async_validate(self, *, credentials_only: bool = False) -> None:
        """A real login proves the server and the credentials; one total-archive export, the followed nodes.

        A mistyped node code, or a right code with a wrong serial (which would otherwise add a second
        device beside the one the node really holds), is named rather than followed in silence. With
        no node listed there is nothing to check: the config flow offers the account's own nodes; on
        reauthentication (`credentials_only`) the login alone is the proof.
        """
        async with self._lock:
            await self._login()
        if not self.nodes or credentials_only:
            return
        now = self._now()
        answer = await self._export("total", now, now)
        problems = self._unknown_nodes(answer.nodes)
        if problems:
            raise ConfigurationError(", ".join(problems), reason="unknown_nodes")

    def _unknown_nodes(self, named: Iterable[tuple[str, str, str]]) -> list[str]:
        """Followed nodes an export did not return as written, each with what the server has instead."""
        by_code: dict[str, list[tuple[str, str, str]]] = {}
        by_serial: dict[str, list[tuple[str, str, str]]] = {}
        for triple in named:
            by_code.setdefault(triple[0], []).append(triple)
            by_serial.setdefault(triple[1], []).append(triple)
        problems: list[str] = []
        for node in self.nodes:
            written = f"{node.code} {node.serial} {node.devtype}"
            same = [t for t in by_code.get(node.code, []) if t[1] == node.serial]
            if same and any(t[2].lower() == node.devtype.lower() for t in same):
                continue
            instead = same or by_code.get(node.code) or by_serial.get(node.serial) or []
            problems.append(f"{written} → {' / '.join(' '.join(t) for t in instead)}" if instead else written)
        return problems

    # --- export -------------------------------------------------------------------------------

    def _node_triples(self, nodes: Sequence[Node] | None) -> list[tuple[str, str, str]]:
        return [(node.code, node.serial, node.devtype) for node in (self.nodes if nodes is None else nodes)]

    async def _export(
        self, archive: str, begin: datetime, end: datetime, nodes: Sequence[Node] | None = None
    ) -> ExportAnswer:
        return await self._parse(await self._export_body(archive, begin, end, nodes))

    async def _export_body(
        self, archive: str, begin: datetime, end: datetime, nodes: Sequence[Node] | None = None
    ) -> bytes:
        document = export_request(
            begin=begin, end=end, archives=[archive], systems=self.systems, nodes=self._node_triples(nodes)
        )
        return await self._exchange(EXPORT_PATH, document, "xml_file_export")

    async def _parse(self, body: bytes, known: NodeRows | None = None) -> ExportAnswer:
        """Parse off the event loop: a large export takes seconds of CPU (see the benchmark)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            None, partial(parse_export_answer, body, self._tz, max_bytes=self.max_export_bytes, known=known)
        )

    def _now(self) -> datetime:
        return datetime.now(self._tz).replace(microsecond=0)

    @override
    async def async_get_meters(self) -> dict[str, MeterData]:
        """One export per followed archive; each named meter's newest value of every parameter.

        Only meters this poll's answers name are returned (see the module notes); the answers are all
        successful by then, since any failure fails the whole poll.
        """
        now = self._now()
        named: dict[str, None] = {}
        changed = False
        for archive in self.archives:
            body = await self._export_body(archive, now - POLL_WINDOW[archive], now)
            last = self._last_exports.get(archive)
            if last is not None and last[0] == body:
                # The very bytes of the last answer: its rows were remembered and judged then (both idempotent),
                # so nothing is parsed (a steady poll of 1000 nodes costs no parse_export at all).
                nodes = last[1]
            else:
                # Nodes whose part of the answer is as last time keep their rows, remembered and judged then.
                answer = await self._parse(body, self._node_rows.get(archive, {}))
                nodes = answer.nodes
                self._last_exports[archive] = (body, nodes)
                self._node_rows[archive] = answer.by_node
                changed = True
                for row in answer.read:
                    self._remember(row)
                self._judge(answer.read)
            for code, serial, devtype in nodes:
                if self._follows(code, serial):
                    meter = meter_id(code, serial)
                    named[meter] = None
                    self._kinds.setdefault(meter, Node(code, serial, devtype))
        ids = self._meter_ids()
        shape = (tuple(named), tuple(ids))
        touched, self._touched = self._touched, set()
        kept = self._last_meters
        previous = kept[1] if kept is not None and kept[0] == shape else {}
        if not changed and previous:
            return dict(previous)  # the very objects: the coordinator sees nothing changed
        # For the same meters, those no row touched are the very objects of the last poll.
        meters = {
            meter: previous[meter] if meter in previous and meter not in touched else self._meter(meter)
            for meter in ids
            if meter in named
        }
        self._last_meters = (shape, meters)
        return dict(meters)

    def _meter_ids(self) -> list[str]:
        ids = {node.meter_id: None for node in self.nodes}
        ids.update(dict.fromkeys(self._kinds))
        return list(ids)

    def _follows(self, code: str, serial: str) -> bool:
        """Whether a node is followed (all nodes when none are listed; a node by code or serial)."""
        nodes = self.nodes
        if not nodes:
            return True
        # Asked for every row of every answer: the listed codes and serials as sets, made again when the list is
        # replaced (stop_following), not a walk of the list per row (30,000 rows × 1000 nodes a poll).
        if self._followed is None or self._followed[0] is not nodes:
            self._followed = (nodes, frozenset(node.code for node in nodes), frozenset(node.serial for node in nodes))
        _, codes, serials = self._followed
        return code in codes or serial in serials

    def _remember(self, row: ArchiveRow) -> None:
        if not self._follows(row.node_code, row.serial):
            return
        meter = meter_id(row.node_code, row.serial)
        self._touched.add(meter)
        self._kinds[meter] = Node(row.node_code, row.serial, row.devtype)
        _, params, systems = self._seen.setdefault(row.devtype.lower(), (row.devtype, {}, set()))
        params.update(dict.fromkeys(row.values))
        systems.add(row.system)
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

    @override
    async def async_discover(self) -> list[Node]:
        """The account's nodes, when an export without a node list names them (the total archive)."""
        now = self._now()
        answer = await self._export("total", now, now, nodes=[])
        found = {meter_id(code, serial): Node(code, serial, devtype) for code, serial, devtype in answer.nodes}
        return list(found.values())

    @override
    def meter_list(self) -> str:
        """The followed nodes in their stored form."""
        return format_nodes(self.nodes)

    @override
    def followed(self) -> frozenset[str] | None:
        """The listed nodes' meters (and those they were reported as); None when every node is followed."""
        return frozenset(self._meter_ids()) if self.nodes else None

    @override
    def stop_following(self, meter_id: str) -> None:
        """Take a node's device off the list (the listed line that matched it, by code or serial)."""
        reported = self._kinds.pop(meter_id, None)
        self.nodes = [
            node
            for node in self.nodes
            if node.meter_id != meter_id
            and (reported is None or (node.code != reported.code and node.serial != reported.serial))
        ]

    @classmethod
    @override
    def format_meter_list(cls, meters: Sequence[Any]) -> str:
        """Discovered nodes in their stored form."""
        return format_nodes(meters)

    # --- what the values mean -----------------------------------------------------------------

    @override
    def unsupported_reason(self, capability: Capability, meter: MeterData | None) -> str:
        """Heat, electricity and gas-corrector nodes have neither a prepaid balance nor a remote valve."""
        if capability is Capability.VALVE:
            return "no_valve"
        if capability in (Capability.RECHARGE, Capability.ADJUST_BALANCE, Capability.SET_PRICE):
            return "no_prepaid_balance"
        return super().unsupported_reason(capability, meter)

    @override
    def value_info(self, meter: MeterData, key: str) -> ValueInfo:
        """Unit, classes and defaults of one value, from the parameter table and the tariff layout in force."""
        system, param = split_key(key)
        devtype = meter.model or ""
        info = self._table.info(devtype, param)
        if info is None:
            return ValueInfo(key, param, system, UNKNOWN_TRANSLATION, None, None, None, enabled=False)
        # A sum tariff repeats energy the followed component tariffs already count; losses are not use.
        layout = self._resolved(meter)
        parts = layout.sums.get(system, ())
        losses = system in layout.losses
        repeats = bool(parts) and any(part in self.systems for part in parts)
        off_dashboard = repeats or losses or not info.energy
        state_class = None if info.cumulative and off_dashboard else info.state_class
        lowest = min((s for s, p in map(split_key, meter.values or {}) if p == param), default=system)
        enabled = info.shown and (info.cumulative or not info.meter_wide or system == lowest)
        translation = f"kumir_{param.lower()}" if param in PARAMS else UNKNOWN_TRANSLATION
        if param.lower() in NAMED_SUM_AND_LOSSES and (parts or losses):
            # Named as what it is, so nobody wonders why it is not on the Energy dashboard.
            translation += "_sum" if parts else "_losses"
        return ValueInfo(
            key,
            param,
            system,
            translation,
            info.unit,
            info.device_class,
            state_class,
            enabled=enabled,
            statistic=info.cumulative and not off_dashboard,
            label=info.label,
            parts=f"{min(parts)}-{max(parts)}"
            if len(parts) > 1 and list(parts) == list(range(min(parts), max(parts) + 1))
            else ", ".join(map(str, parts)),
        )

    # --- the parameter table and tariff layouts (entry options) ------------------------------------

    @override
    def use_options(self, options: Mapping[str, Any]) -> None:
        """The user's parameter meanings and tariff layouts."""
        self._table = ParamTable(meanings_from(options))
        self._layouts = layouts_from(options)
        # The next poll reads (and judges) every answer again under the new table.
        self._last_exports.clear()
        self._node_rows.clear()
        self._last_meters = None

    def _layout(self, devtype: str) -> Layout:
        """The user's layout, else the glossary's, else detection."""
        return self._layouts.get(devtype.lower()) or glossary_layout(devtype) or Layout()

    def _resolved(self, meter: MeterData) -> Resolved:
        reported = {split_key(key)[0] for key in meter.values or {}}
        return resolve(self._layout(meter.model or ""), self._findings.get(meter.meter_id), reported)

    def _judge(self, rows: Iterable[ArchiveRow]) -> None:
        """Feed each meter's records (all systems of one time) to its sum detector."""
        records: dict[tuple[str, str, datetime], dict[int, Mapping[str, Decimal]]] = {}
        for row in rows:
            if self._follows(row.node_code, row.serial):
                meter = meter_id(row.node_code, row.serial)
                records.setdefault((meter, row.archive, row.time.astimezone(UTC)), {})[row.system] = row.values
        for (meter, archive, when), record in records.items():
            devtype = self._kinds[meter].devtype
            counters = {
                param
                for values in record.values()
                for param in values
                if (info := self._table.info(devtype, param)) is not None and info.cumulative
            }
            self._detectors.setdefault(meter, SumDetector()).feed(archive, when, record, counters)
        for meter in {meter for meter, _, _ in records}:
            finding = self._detectors[meter].finding(meter)
            if finding is not None:
                self._findings[meter] = finding

    @override
    def value_params(self) -> list[ValueParam]:
        """Every parameter each device type's rows carried (and those the user described), with what is known."""
        rows: list[ValueParam] = []
        described = {devtype: dict.fromkeys(params) for devtype, params in self._table.described().items()}
        for lower in sorted({*self._seen, *described}):
            spelling, params, _ = self._seen.get(lower, (lower, {}, set()))
            for param in {**params, **described.get(lower, {})}:
                rows.append(self._table.row(spelling, param))
        return rows

    @override
    def value_layouts(self) -> list[LayoutRow]:
        """Every device type with more than one system: its layout in force and what each meter's data showed."""
        rows: list[LayoutRow] = []
        for lower, (spelling, _, systems) in sorted(self._seen.items()):
            if len(systems) < 2:
                continue
            findings = tuple(
                finding
                for meter, finding in sorted(self._findings.items())
                if meter in self._kinds and self._kinds[meter].devtype.lower() == lower
            )
            rows.append(
                LayoutRow(spelling, tuple(sorted(systems)), self._layout(spelling), lower in self._layouts, findings)
            )
        return rows

    @override
    def value_problems(self) -> list[ValueProblem]:
        """Meters whose data contradict their device type's declared layout."""
        problems: list[ValueProblem] = []
        for meter, finding in sorted(self._findings.items()):
            node = self._kinds.get(meter)
            if node is None:
                continue
            layout = self._layout(node.devtype)
            reported = {split_key(key)[0] for key in self._latest.get(meter, {})}
            if layout.mode == "declared" and not agrees(layout, finding, reported):
                problems.append(ValueProblem(meter, node.devtype, layout, finding))
        return problems

    # --- long-term statistics -----------------------------------------------------------------

    @override
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
                for row in (await self._export(archive, chunk_start, chunk_end, nodes)).rows:
                    meter = meter_id(row.node_code, row.serial)
                    if meter not in wanted:
                        continue
                    for param, value in row.values.items():
                        param_info = self._table.info(row.devtype, param)
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

    @override
    async def async_import(self, records: Sequence[ImportRecord]) -> dict[str, str]:
        """Upload readings in one import.php request (the entry's transport); the server's answer, field by field.

        `dat` is wall time of the account's zone, the zone exports are read in, so a round trip agrees:
        an aware record time is converted to that zone, a naive one is taken as its wall time already.
        """
        rows = [
            ArchiveRow(
                node_code=record.node,
                serial=record.serial,
                devtype=record.device_type,
                archive=record.archive,
                system=record.system,
                time=record.time.astimezone(self._tz) if record.time.tzinfo else record.time.replace(tzinfo=self._tz),
                values=record.values,
            )
            for record in records
        ]
        document = import_document(rows)
        # A refusal, in any shape the server may give it, is raised by the exchange.
        return result_fields(await self._exchange(IMPORT_PATH, document, "xml_file_import"))


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
    "MAX_EXPORT_BYTES",
    "InvalidRequestError",
    "KumirClient",
    "Node",
    "format_nodes",
    "parse_nodes",
    "parse_systems",
]
