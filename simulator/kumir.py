"""NTC KUMIR "KUMIR-RESURS" simulator: the session of chapter 4 and the xml_import_export module of chapter 5."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import random
import secrets
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, tzinfo
from decimal import Decimal, InvalidOperation
from functools import cache, partial
from typing import Any, override
from xml.parsers import expat
from zoneinfo import ZoneInfo

from aiohttp import web

from .common import Fault, SimulatorBase, read_body, reply

DEFAULT_TZ = ZoneInfo("Europe/Moscow")
MODULE = "modules/xml_import_export"
# Short name (what fail_next and .requests use) → path.
ENDPOINTS = {
    "login": "login.php",
    "session": "session.php",
    "logout": "logout.php",
    "export": f"{MODULE}/export.php",
    "import": f"{MODULE}/import.php",
}
COOKIE = "SESSID"
COOKIE_ALIASES = (COOKIE, "session_id")  # the text calls it session_id, the sample code matches SESSID
DAT_FORMAT = "%Y-%m-%dT%H:%M:%S"
ARCHIVES = ("hour", "day", "month", "year", "total")
XML_MODES = frozenset({"malformed", "entity_bomb", "external_entity", "huge", "unknown_elements"})
EXPORT_ONLY = frozenset({"huge", "unknown_elements"})
# http401/http403: the server has dropped the session and answers a cookie-only request with the status
# (export, import, session.php; login.php answers it too, for a client that must not take it for a wrong
# password). refuse: a refusal in one of REFUSAL_SHAPES (see refuse()).
KUMIR_FAIL_MODES = XML_MODES | {"http500", "timeout", "session_gone", "drop", "http401", "http403", "refuse"}
# The spec defines no error document: the shapes a refusal may plausibly take (see _refusal_body).
REFUSAL_SHAPES = ("legacy", "result", "result_attributes", "error", "error_attributes", "text")
REFUSAL_MESSAGE = "Нет прав на запись в архив узла"
MAX_ROWS = 200_000  # more rows than this in one export is refused: our guard, the spec names none
MAX_BODY = 32 * 2**20
ANCHOR = date(2020, 1, 1)  # counters are believable readings grown from here
# Share of a day's use in each local hour (averages 1): low at night, peaks morning and evening.
PROFILE = (
    0.5,
    0.4,
    0.4,
    0.4,
    0.4,
    0.5,
    0.8,
    1.2,
    1.4,
    1.3,
    1.2,
    1.1,
    1.1,
    1.1,
    1.1,
    1.1,
    1.2,
    1.4,
    1.6,
    1.6,
    1.4,
    1.1,
    0.8,
    0.8,
)
ALL_HOURS = frozenset(range(24))
PEAK = frozenset({7, 8, 9, 17, 18, 19, 20})
NIGHT = frozenset({23, 0, 1, 2, 3, 4, 5, 6})
HALF_PEAK = ALL_HOURS - PEAK - NIGHT
# Billion laughs: ten levels of ten references, a gigabyte of "lol" for a parser that expands entities.
BOMB_DTD = (
    '<!DOCTYPE d [<!ENTITY lol "lol">'
    + "".join(f'<!ENTITY lol{i} "{f"&lol{i - 1 or ''};" * 10}">' for i in range(1, 10))
    + "]>"
)
XXE_DTD = '<!DOCTYPE d [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
XML_HEAD = '<?xml version="1.0" encoding="UTF-8"?>\n'
HTML = "<html><head><meta charset='utf-8'><title>КУМИР-РЕСУРС</title></head><body>{}</body></html>"


@dataclass(frozen=True, slots=True)
class Counter:
    """A cumulative parameter: `start` at ANCHOR (scaled by the system's share), then `rate` per weighted hour."""

    start: float
    rate: float
    flat: bool = False  # grows every hour alike (operating hours), whatever the load


@dataclass(frozen=True, slots=True)
class Gauge:
    """An instantaneous parameter: `centre` ± `spread`, shown with `digits` decimals."""

    centre: float
    spread: float
    digits: int


@dataclass(frozen=True, slots=True)
class DeviceKind:
    """What a device type reports: its systems ("accounting schemes"), parameters in wire order, sums."""

    title: str
    scheme: str
    systems: tuple[int, ...]
    params: Mapping[str, Counter | Gauge]
    hours: Mapping[int, frozenset[int]] = field(default_factory=dict)  # metered system → hours it counts in
    derived: Mapping[int, tuple[tuple[int, ...], float]] = field(default_factory=dict)  # system → (parts, factor)
    scale: Mapping[int, float] = field(default_factory=dict)
    shared_gauges: bool = False  # tariffs of one meter see the same voltage; heat systems do not

    def describe(self) -> str:
        """One line for the command line: systems and what the derived ones mean."""
        notes = [
            f"{sys} = {'sum' if factor == 1 else f'losses, {factor:.0%}'} of {','.join(map(str, parts))}"
            for sys, (parts, factor) in self.derived.items()
        ]
        return f"{self.scheme} {','.join(map(str, self.systems))}" + (f" ({'; '.join(notes)})" if notes else "")


_ELECTRIC = {
    "EAi": Counter(8000.0, 1.2),
    "EAo": Counter(0.0, 0.0),
    "ERi": Counter(300.0, 0.35),
    "ERo": Counter(170.0, 0.12),
}
_PHASES: dict[str, Counter | Gauge] = {f"U_{p}": Gauge(228.0, 4.0, 2) for p in "ABC"}
_PHASES |= {f"I_{p}": Gauge(4.0, 2.5, 3) for p in "ABC"} | {"F0": Gauge(50.0, 0.05, 2)}
_MERCURY: dict[str, Counter | Gauge] = (
    _ELECTRIC
    | _PHASES
    | {f"COS_{p}": Gauge(0.92, 0.05, 3) for p in ("A", "B", "C", "S")}
    | {name: Gauge(120.0, 1.5, 2) for name in ("F_AB", "F_CA", "F_BC")}
    | {"RF7": Gauge(0.0, 0.0, 0)}  # in the spec's sample, meaning unknown: always 0
)
KINDS: dict[str, DeviceKind] = {
    "m234": DeviceKind(
        "Mercury 234 electricity meter",
        "tariffs",
        (1, 2, 3, 4),
        _MERCURY,
        hours={1: PEAK, 2: NIGHT, 3: HALF_PEAK, 4: frozenset()},  # tariff 4 exists but nothing is billed on it
        shared_gauges=True,
    ),
    # The glossary's Mercury 230 ART: tariff 6 is the sum of 1-4, tariff 5 the technical losses.
    "m230": DeviceKind(
        "Mercury 230 ART electricity meter",
        "tariffs",
        (1, 2, 3, 4, 5, 6),
        _MERCURY,
        hours={1: PEAK, 2: NIGHT, 3: HALF_PEAK, 4: frozenset()},
        derived={5: ((1, 2, 3, 4), 0.02), 6: ((1, 2, 3, 4), 1.0)},
        shared_gauges=True,
    ),
    "ce303": DeviceKind(
        "Energomera CE303 electricity meter",
        "tariffs",
        (1, 2, 3, 4, 5),
        _ELECTRIC | _PHASES,
        hours={2: PEAK, 3: NIGHT, 4: HALF_PEAK, 5: frozenset()},
        derived={1: ((2, 3, 4, 5), 1.0)},
        scale={},
        shared_gauges=True,
    ),
    "tv7": DeviceKind(
        "TV7 heat meter",
        "heat systems",
        (1, 2),
        {
            "Q": Counter(1500.0, 0.05),
            "M1": Counter(40000.0, 2.0),
            "M2": Counter(39000.0, 1.95),
            "V1": Counter(41000.0, 2.05),
            "V2": Counter(40000.0, 2.0),
            "T1": Gauge(70.0, 5.0, 2),
            "T2": Gauge(45.0, 4.0, 2),
            "P1": Gauge(0.6, 0.03, 3),
            "P2": Gauge(0.4, 0.03, 3),
            "Tnar": Counter(30000.0, 1.0, flat=True),
        },
        scale={2: 0.3},
    ),
    "ek270": DeviceKind(
        "Elster EK270 gas volume corrector",
        "channels",
        (1, 2),
        {
            "Vs": Counter(120000.0, 5.1),
            "Vw": Counter(118000.0, 5.0),
            "P": Gauge(103.5, 1.5, 2),
            "T": Gauge(8.0, 4.0, 2),
        },
        scale={2: 0.4},
    ),
    "pulsar": DeviceKind(
        "Pulsar pulse counter",
        "channels",
        (1, 2, 3, 4),
        {"C": Counter(900.0, 0.05)},
        # Not 0.6 + 0.3 + 0.1: channel 1 would be the exact sum of the others, which a client rightly takes for a sum.
        scale={2: 0.6, 3: 0.35, 4: 0.1},
    ),
    # Device types whose parameter names Meter Cloud's table does not know (an independent reading of what a
    # gas corrector and a pulse counter report): Vc/Vr standard and working volume, Tw operating hours, Imp pulses.
    "spg761": DeviceKind(
        "Logika SPG761 gas volume corrector",
        "channels",
        (1, 2),
        {
            "Vc": Counter(98000.0, 4.2),
            "Vr": Counter(96000.0, 4.1),
            "P": Gauge(104.0, 1.5, 2),
            "T": Gauge(7.0, 4.0, 2),
            "Tw": Counter(25000.0, 1.0, flat=True),
        },
        scale={2: 0.5},
    ),
    "imp4": DeviceKind(
        "Four-channel pulse counter",
        "channels",
        (1, 2, 3, 4),
        {"Imp": Counter(5000.0, 0.4), "Flags": Gauge(0.0, 0.0, 0)},
        scale={2: 0.7, 3: 0.45, 4: 0.2},
    ),
    # Not a device type of its own: a Mercury 234 laid out like the 230 ART (add_node(..., "m234", kind="m234_art")).
    "m234_art": DeviceKind(
        "Mercury 234 electricity meter laid out like the 230 ART",
        "tariffs",
        (1, 2, 3, 4, 5, 6),
        _MERCURY,
        hours={1: PEAK, 2: NIGHT, 3: HALF_PEAK, 4: frozenset()},
        derived={5: ((1, 2, 3, 4), 0.02), 6: ((1, 2, 3, 4), 1.0)},
        shared_gauges=True,
    ),
}
KIND_ORDER = ("m234", "ce303", "tv7", "ek270", "pulsar", "m230")


@cache
def _prefix(hours: frozenset[int]) -> tuple[float, ...]:
    """Weighted hours of `hours` before each hour of the day, and the whole day's at index 24."""
    sums = [0.0]
    for hour in range(24):
        sums.append(sums[-1] + (PROFILE[hour] if hour in hours else 0.0))
    return tuple(sums)


class XmlRefused(ValueError):
    """A request document we will not parse (DOCTYPE, entities) or that is not XML."""


def parse_xml(data: bytes) -> ET.Element:
    """Parse a request with expat, refusing any DOCTYPE: no entity is ever declared, so none is expanded."""
    builder = ET.TreeBuilder()
    parser = expat.ParserCreate()
    parser.buffer_text = True

    def refuse(*_args: Any) -> None:
        raise XmlRefused("DOCTYPE is not accepted")

    parser.StartDoctypeDeclHandler = refuse
    parser.EntityDeclHandler = refuse  # belt and braces: cannot happen without a DOCTYPE
    parser.StartElementHandler = builder.start
    parser.EndElementHandler = builder.end
    parser.CharacterDataHandler = builder.data
    try:
        parser.Parse(data, True)
    except expat.ExpatError as err:
        raise XmlRefused(f"not well-formed XML: {err}") from None
    return builder.close()


@dataclass(slots=True)
class SimNode:
    """One metering node ("узел учёта"): a code, a device serial and type, and its data."""

    code: str
    num: str
    dev: str
    scale: float = 1.0
    position: int = 0
    imported_only: bool = False  # created by an import: it has only what was imported
    kind: str = ""  # what it reports, when not what its device type usually does (KINDS key; "" = dev)
    resets: list[tuple[str, datetime, float]] = field(default_factory=list)
    gaps: list[tuple[datetime, datetime]] = field(default_factory=list)
    # (archive, system, dat) → None for nodata, else the parameters as imported
    imported: dict[tuple[str, int, str], dict[str, str] | None] = field(default_factory=dict)


@dataclass(slots=True)
class ExportQuery:
    """What an export document asks for."""

    begin: datetime
    end: datetime
    archives: list[str]
    systems: list[int]
    nodes: list[SimNode]


class KumirError(Exception):
    """A refused request: answered as <result><status>error</status><message>…</message></result>, HTTP 400."""


@dataclass(slots=True)
class RefusalFault(Fault):
    """A queued refusal: the shape of its body, the HTTP status, the server's code and message."""

    shape: str = "result"
    status: int = 400
    message: str = REFUSAL_MESSAGE


def _refusal_body(shape: str, code: str, message: str) -> tuple[str, str]:
    """(content type, body) of a refusal in `shape`."""
    if shape == "text":
        return "text/plain", f"Ошибка {code}: {message}"
    if shape == "legacy":  # what this simulator has always answered: a status and a message, no code
        root = ET.Element("result")
        ET.SubElement(root, "status").text = "error"
        ET.SubElement(root, "message").text = message
    elif shape == "result":
        root = ET.Element("result")
        for name, value in (("status", "error"), ("code", code), ("message", message)):
            ET.SubElement(root, name).text = value
    elif shape == "result_attributes":
        root = ET.Element("result", status="error", code=code, message=message)
    elif shape == "error":
        root = ET.Element("error")
        ET.SubElement(root, "code").text = code
        ET.SubElement(root, "message").text = message
    else:
        root = ET.Element("error", code=code, message=message)
    return "application/xml", XML_HEAD + ET.tostring(root, encoding="unicode")


def _fmt(value: float, digits: int = 3) -> str:
    text = f"{value:.{digits}f}"
    text = text.rstrip("0").rstrip(".") if "." in text else text
    return "0" if text in ("-0", "") else text


def _with_node(text: str, rows: str, code: str) -> str:
    """An export answer with one more m234 node holding `rows` (hour archive, system 1)."""
    node = f"<n code='{code}' num='66666666' dev='m234'><m234><hour><sys num='1'>{rows}</sys></hour></m234></n>"
    if "<nodes />" in text:
        return text.replace("<nodes />", f"<nodes>{node}</nodes>", 1)
    return text.replace("</nodes>", f"{node}</nodes>", 1)


class KumirSimulator(SimulatorBase):
    """An aiohttp app answering like KUMIR-RESURS for a handful of nodes of different device types."""

    def __init__(
        self,
        *,
        login: str = "example",
        password: str = "example",  # noqa: S107 - the spec's sample credentials
        tz: tzinfo = DEFAULT_TZ,
        session_ttl: float = 1800.0,
        nodes: int | Sequence[tuple[str, ...]] = 6,
        seed: int = 1,
        lists_nodes: bool = True,
    ) -> None:
        """Build the nodes (a count cycling through KIND_ORDER, or (code, serial, device type[, kind])) and the app.

        `lists_nodes=False`: an export that names no node answers with none (an account that does not
        list its nodes on its own; named ones are still answered).
        """
        super().__init__(endpoints=ENDPOINTS, tz=tz, push_url=None, seed=seed, fail_modes=KUMIR_FAIL_MODES)
        self.login, self.password, self.session_ttl, self.seed = login, password, session_ttl, seed
        self.huge_bytes = 20 * 2**20
        self.late_hours = 0.0
        # The total archive holds what the collector read "at the moment of the request to the meter" (the
        # document's glossary): 0 (the default) reads every meter at every export, so totals move each second;
        # N > 0 reads them every N minutes (on the clock), so exports between two readings are byte for byte equal.
        self.collector_minutes = 0.0
        # With collector_minutes: the collector reads the nodes in this many turns, one turn per reading (node
        # positions in turn), as a collector working through a long list does; 1 (the default) reads them all.
        self.collector_turns = 1
        self.sessions: dict[str, datetime] = {}  # session id → expiry on the simulator's clock
        self.nodes: dict[str, SimNode] = {}
        self.meters = self.nodes
        self.removed: dict[str, SimNode] = {}  # taken out of the account by remove_node(), kept for restore_node()
        self.lists_nodes = lists_nodes
        self._offset = timedelta()
        if isinstance(nodes, int):
            nodes = [self._default_node(i) for i in range(nodes)]
        for code, num, dev, *kind in nodes:
            self.add_node(code, num, dev, kind=kind[0] if kind else None)
        self.app = self.make_app()

    def _default_node(self, index: int) -> tuple[str, str, str]:
        num = "34781353" if index == 0 else str(self._rng.randint(10_000_000, 99_999_999))
        return f"Pol_{276 + index}", num, KIND_ORDER[index % len(KIND_ORDER)]

    def add_node(
        self, code: str, num: str, dev: str, *, imported_only: bool = False, kind: str | None = None
    ) -> SimNode:
        """Add a node of a known device type (any type when it only holds imported data).

        `kind` makes it report like another KINDS entry (an m234 laid out like the m230: kind "m234_art").
        """
        if (kind or dev) not in KINDS and not imported_only:
            raise ValueError(f"unknown device type {kind or dev!r}; use one of {sorted(KINDS)}")
        scale = random.Random(f"{self.seed}:{code}").uniform(0.6, 1.6)
        node = SimNode(code, num, dev, scale, len(self.nodes), imported_only, kind=kind or "")
        self.nodes[code] = node
        return node

    def make_app(self) -> web.Application:
        """Build the aiohttp application: the vendor endpoints, the pages redirects lead to, /_sim/ control."""
        app = web.Application(client_max_size=MAX_BODY)
        for name, path in ENDPOINTS.items():
            app.router.add_post(f"/{path}", partial(self._serve, name))
        for page in ("index.php", "interface.php", "failed.php"):
            app.router.add_route("*", f"/{page}", partial(self._page, page))
        self.add_control_routes(app)
        for name in ("advance", "late", "release_late", "reset", "gap", "remove_node", "restore_node", "refuse"):
            app.router.add_post(f"/_sim/{name}", getattr(self, f"_sim_{name}"))
        return app

    # --- the clock and the knobs ------------------------------------------------------------------

    def _clock(self) -> datetime:
        return datetime.now(self.tz) + self._offset

    @override
    def _now(self) -> datetime:
        return self._clock().replace(microsecond=0)

    def advance(self, seconds: float) -> None:
        """Move the simulator's clock on: sessions expire, new archive rows appear."""
        self._offset += timedelta(seconds=seconds)

    @override
    def tick(self, minutes: float = 15) -> None:
        """Let `minutes` pass: the data follow the clock, so ticking only moves it."""
        self.advance(minutes * 60)

    def late(self, hours: float) -> None:
        """Rows of the newest `hours` hours read as nodata until release_late() (a collector running behind)."""
        self.late_hours = max(0.0, hours)

    def release_late(self) -> None:
        """Let the late rows arrive."""
        self.late_hours = 0.0

    def reset(self, node: str, param: str, value: float = 0.0, at: datetime | None = None) -> None:
        """Restart cumulative `param` of `node` at `value` on every system from `at` (now): a replaced meter."""
        target = self._node(node)
        kind = None if target.imported_only else KINDS.get(target.kind or target.dev)
        if kind is None or not isinstance(kind.params.get(param), Counter):
            raise ValueError(f"{param!r} is not a cumulative parameter of {target.dev}")
        target.resets.append((param, (at or self._now()).astimezone(self.tz), value))
        target.resets.sort(key=lambda item: item[1])

    def gap(self, node: str, start: datetime, end: datetime) -> None:
        """Make every row of `node` dated in [start, end] nodata for good."""
        self._node(node).gaps.append((start.astimezone(self.tz), end.astimezone(self.tz)))

    def remove_node(self, code: str) -> None:
        """Take a node out of the account: exports no longer name it, imports to it are refused."""
        self.removed[code] = self._node(code)
        del self.nodes[code]

    def restore_node(self, code: str) -> None:
        """Put a removed node back, with everything it had, in its old place."""
        if code not in self.removed:
            raise ValueError(f"node {code!r} was not removed")
        self.nodes[code] = self.removed.pop(code)
        ordered = sorted(self.nodes.values(), key=lambda node: node.position)
        self.nodes.clear()  # in place: self.meters is the same dict
        self.nodes.update((node.code, node) for node in ordered)

    def refuse(
        self,
        shape: str = "result",
        *,
        status: int = 400,
        code: str = "17",
        message: str = REFUSAL_MESSAGE,
        count: int = 1,
        endpoint: str = "export",
    ) -> None:
        """Refuse the next `count` exports or imports with a body in `shape` (REFUSAL_SHAPES) and HTTP `status`."""
        if shape not in REFUSAL_SHAPES:
            raise ValueError(f"unknown refusal shape {shape!r}; use one of {', '.join(REFUSAL_SHAPES)}")
        if not 200 <= status <= 599:
            raise ValueError(f"HTTP status {status} is not an answer")
        if endpoint not in ("export", "import"):
            raise ValueError("refusals are for export or import")
        self.faults.add("refuse", count, endpoint, code)
        plain = self.faults.faults.pop()
        self.faults.faults.append(RefusalFault(plain.mode, plain.count, endpoint, code, shape, status, message))

    @override
    def fail_next(self, mode: str, count: int = 1, endpoint: str | None = None, *, code: str | None = None) -> None:
        """Fail the next `count` requests; the hostile-XML modes go to export unless `endpoint` says import."""
        if mode == "refuse":
            self.refuse(count=count, endpoint=endpoint or "export", code=code or "17")
            return
        if mode in XML_MODES:
            endpoint = endpoint or "export"
            if endpoint not in ("export", "import") or (mode in EXPORT_ONLY and endpoint != "export"):
                raise ValueError(f"mode {mode!r} does not apply to {endpoint!r}")
        super().fail_next(mode, count, endpoint, code=code)

    @override
    async def push_reading(self, meter_no: str) -> tuple[int, Any]:
        """KUMIR-RESURS never calls us: there is nothing to push."""
        raise RuntimeError("KUMIR-RESURS does not push; export the archives instead")

    @override
    async def push_alarm(self, meter_no: str, *args: Any, **kwargs: Any) -> tuple[int, Any]:
        """KUMIR-RESURS never calls us: there is nothing to push."""
        raise RuntimeError("KUMIR-RESURS does not push alarms")

    def _node(self, code: str) -> SimNode:
        if code not in self.nodes:
            raise ValueError(f"unknown node {code!r}")
        return self.nodes[code]

    # --- the data ---------------------------------------------------------------------------------

    def _raw(self, node: SimNode, kind: DeviceKind, sys: int, counter: Counter, when: datetime) -> float:
        local = when.astimezone(self.tz)
        days = (local.date() - ANCHOR).days
        if counter.flat:
            return counter.start + counter.rate * (days * 24 + local.hour + (local.minute * 60 + local.second) / 3600)
        hours = kind.hours.get(sys, ALL_HOURS)
        prefix = _prefix(hours)
        share = prefix[24] / _prefix(ALL_HOURS)[24]
        now_part = PROFILE[local.hour] * (local.minute * 60 + local.second) / 3600 if local.hour in hours else 0.0
        weighted = days * prefix[24] + prefix[local.hour] + now_part
        return node.scale * kind.scale.get(sys, 1.0) * (counter.start * share + counter.rate * weighted)

    def counter_value(self, node: SimNode, sys: int, param: str, when: datetime) -> float:
        """A cumulative parameter of one system at `when`, after any meter replacement."""
        kind = KINDS[node.kind or node.dev]
        if sys in kind.derived:
            parts, factor = kind.derived[sys]
            return factor * sum(self.counter_value(node, part, param, when) for part in parts)
        counter = kind.params[param]
        assert isinstance(counter, Counter)
        raw = self._raw(node, kind, sys, counter, when)
        for name, at, value in reversed(node.resets):  # the newest replacement before `when` counts
            if name == param and at <= when:
                return value + raw - self._raw(node, kind, sys, counter, at)
        return raw

    def _gauge(self, node: SimNode, sys: int, param: str, gauge: Gauge, key: str) -> str:
        sys_key = 0 if KINDS[node.kind or node.dev].shared_gauges else sys
        digest = hashlib.blake2b(f"{self.seed}|{node.code}|{sys_key}|{param}|{key}".encode(), digest_size=8).digest()
        noise = int.from_bytes(digest) / 2**64
        return _fmt(gauge.centre + gauge.spread * (2 * noise - 1), gauge.digits)

    def _periods(self, archive: str, begin: datetime, end: datetime, node: SimNode) -> Iterator[datetime]:
        """Starts of the periods of `archive` that meet [begin, end] and have begun by now (total: the node's last
        reading)."""
        now = self._now()
        if archive == "total":
            yield self._collected(now, node)
            return
        local = begin.astimezone(self.tz)
        if archive == "hour":
            start = local.replace(minute=0, second=0, microsecond=0)
        else:
            day = local.date()
            day = {"day": day, "month": day.replace(day=1), "year": day.replace(month=1, day=1)}[archive]
            start = datetime.combine(day, time(), tzinfo=self.tz)
        while start <= end and start <= now:
            yield start
            if archive == "hour":
                start = (start.astimezone(self.tz) + timedelta(hours=1)).astimezone(self.tz)
            elif archive == "day":
                start = datetime.combine(start.date() + timedelta(days=1), time(), tzinfo=self.tz)
            elif archive == "month":
                month = start.date().replace(day=28) + timedelta(days=4)
                start = datetime.combine(month.replace(day=1), time(), tzinfo=self.tz)
            else:
                start = datetime.combine(date(start.year + 1, 1, 1), time(), tzinfo=self.tz)

    def _collected(self, now: datetime, node: SimNode) -> datetime:
        """When the collector last read this node (see collector_minutes and collector_turns)."""
        period = int(self.collector_minutes * 60)
        if period <= 0:
            return now
        reading = int(now.timestamp()) // period
        turns = max(1, self.collector_turns)
        reading -= (reading - node.position) % turns  # the last reading whose turn was this node's
        return datetime.fromtimestamp(reading * period, self.tz)

    def _nodata(self, node: SimNode, archive: str, when: datetime) -> bool:
        if any(start <= when <= end for start, end in node.gaps):
            return True
        if archive == "total":
            return False
        if self.late_hours and when > self._now() - timedelta(hours=self.late_hours):
            return True
        # Every 37th hour the collector missed the meter: a row that says so, with no parameters.
        hour_index = int((when - datetime.combine(ANCHOR, time(), tzinfo=self.tz)).total_seconds() // 3600)
        return archive == "hour" and (hour_index + node.position * 7) % 37 == 0

    def _row(self, node: SimNode, archive: str, sys: int, when: datetime) -> dict[str, str] | None:
        """The parameters of one row, or None for nodata."""
        if self._nodata(node, archive, when):
            return None
        key = f"{archive}:{when.strftime(DAT_FORMAT)}"
        return {
            name: self._gauge(node, sys, name, spec, key)
            if isinstance(spec, Gauge)
            else _fmt(self.counter_value(node, sys, name, when))
            for name, spec in KINDS[node.kind or node.dev].params.items()
        }

    def rows(
        self, node: SimNode, archive: str, sys: int, begin: datetime, end: datetime
    ) -> list[tuple[str, dict[str, str] | None]]:
        """(dat, parameters or None) of one node's system in one archive, imported rows overriding ours."""
        found: dict[str, dict[str, str] | None] = {}
        if not node.imported_only and sys in KINDS[node.kind or node.dev].systems:
            for when in self._periods(archive, begin, end, node):
                found[when.astimezone(self.tz).strftime(DAT_FORMAT)] = self._row(node, archive, sys, when)
        first = next(self._periods(archive, begin, begin, node), begin).astimezone(self.tz).strftime(DAT_FORMAT)
        last = end.astimezone(self.tz).strftime(DAT_FORMAT)
        for (arch, number, dat), params in node.imported.items():
            if arch == archive and number == sys and (archive == "total" or first <= dat <= last):
                found[dat] = params
        return sorted(found.items())

    def export_document(self, query: ExportQuery) -> ET.Element:
        """Build the answer to an export: the import structure of 5.1.1."""
        root = ET.Element("d")
        nodes = ET.SubElement(root, "nodes")
        for node in query.nodes:
            n = ET.SubElement(nodes, "n", code=node.code, num=node.num, dev=node.dev)
            device = ET.SubElement(n, node.dev)
            for archive in query.archives:
                arch = ET.Element(archive)
                for sys in query.systems or self._systems(node):
                    rows = self.rows(node, archive, sys, query.begin, query.end)
                    if rows:
                        self._add_rows(ET.SubElement(arch, "sys", num=str(sys)), rows)
                if len(arch):
                    device.append(arch)
        return root

    def _systems(self, node: SimNode) -> list[int]:
        kind = KINDS.get(node.kind or node.dev)
        own = set(kind.systems) if kind is not None and not node.imported_only else set()
        return sorted(own | {sys for _arch, sys, _dat in node.imported})

    @staticmethod
    def _add_rows(parent: ET.Element, rows: list[tuple[str, dict[str, str] | None]]) -> None:
        for dat, params in rows:
            r = ET.SubElement(parent, "r")
            ET.SubElement(r, "nodata").text = "true" if params is None else "false"
            ET.SubElement(r, "dat").text = dat
            for name, value in (params or {}).items():
                ET.SubElement(r, name).text = value

    # --- reading requests -------------------------------------------------------------------------

    def _when(self, text: str | None, name: str) -> datetime:
        try:
            parsed = datetime.fromisoformat((text or "").strip())
        except ValueError:
            raise KumirError(f"{name}: not an ISO 8601 date and time") from None
        # The spec always sends an offset; without one we read local time rather than refuse.
        return parsed.replace(tzinfo=self.tz) if parsed.tzinfo is None else parsed.astimezone(self.tz)

    def export_query(self, root: ET.Element) -> ExportQuery:
        """Read an export request (5.2.1); raise KumirError for what the export scheme would refuse."""
        cfg = root.find("cfg")
        if root.tag != "d" or cfg is None:
            raise KumirError("the document must be <d> with a <cfg>")
        begin = self._when(cfg.findtext("timestamp_begin"), "timestamp_begin")
        end = self._when(cfg.findtext("timestamp_end"), "timestamp_end")
        if end < begin:
            raise KumirError("timestamp_end is before timestamp_begin")
        archives = [arch.get("type", "") for arch in cfg.iterfind("archives/arch")]
        if not archives or any(arch not in ARCHIVES for arch in archives):
            raise KumirError(f"archives: one or more of {', '.join(ARCHIVES)}")
        try:
            systems = sorted({int(sys.get("num", "")) for sys in cfg.iterfind("systems/sys")})
        except ValueError:
            raise KumirError("systems: sys num must be a number") from None
        codes = {(node.text or "").strip() for node in root.iterfind("nodes/node")}
        devs = {((dev.get("num") or "").strip(), (dev.text or "").strip()) for dev in root.iterfind("nodes/dev")}
        # A list without nodes means all of the account's nodes; a node is in when its code or its device is named.
        chosen = [
            node
            for node in self.nodes.values()
            if (not (codes or devs) and self.lists_nodes)
            or node.code in codes
            or (node.num, node.dev) in devs
            or (node.num, "") in devs
        ]
        hours = (end - begin).total_seconds() / 3600 + 1
        per_system = sum({"hour": hours, "day": hours / 24 + 1}.get(arch, 13) for arch in archives)
        if per_system * sum(len(systems or self._systems(node)) for node in chosen) > MAX_ROWS:
            raise KumirError(f"the period is too long: more than {MAX_ROWS} rows")
        return ExportQuery(begin, end, archives, systems, chosen)

    def import_rows(self, root: ET.Element) -> int:
        """Check an import document (5.1.1) whole, then store its rows; return how many."""
        nodes = root.find("nodes")
        if root.tag != "d" or nodes is None:
            raise KumirError("the document must be <d> with <nodes>")
        staged: list[tuple[tuple[str, str, str], tuple[str, int, str], dict[str, str] | None]] = []
        for n in nodes:
            code, num, dev = (n.get(name, "").strip() for name in ("code", "num", "dev"))
            if n.tag != "n" or not (code and num and dev):
                raise KumirError("every node must be <n code=… num=… dev=…>")
            if code in self.removed:
                raise KumirError(f"node {code} is not in this account")
            known = self.nodes.get(code)
            if known is not None and (known.num, known.dev) != (num, dev):
                raise KumirError(f"node {code}: device {num} {dev} does not match {known.num} {known.dev}")
            for device in n:
                if device.tag != dev:
                    raise KumirError(f"node {code}: <{device.tag}> where <{dev}> was expected")
                for archive in device:
                    if archive.tag not in ARCHIVES:
                        raise KumirError(f"node {code}: unknown archive <{archive.tag}>")
                    for sys in archive:
                        try:
                            number = int(sys.get("num", "")) if sys.tag == "sys" else -1
                        except ValueError:
                            number = -1
                        if number < 0:
                            raise KumirError(f"node {code}: every system must be <sys num=N>")
                        for r in sys:
                            staged.append(
                                ((code, num, dev), (archive.tag, number, self._dat(r, code)), self._params(r))
                            )
        for (code, num, dev), key, params in staged:
            node = self.nodes.get(code) or self.add_node(code, num, dev, imported_only=True)
            node.imported[key] = params
        return len(staged)

    def _dat(self, r: ET.Element, code: str) -> str:
        if r.tag != "r":
            raise KumirError(f"node {code}: <{r.tag}> where <r> was expected")
        return self._when(r.findtext("dat"), f"node {code}: dat").strftime(DAT_FORMAT)

    @staticmethod
    def _params(r: ET.Element) -> dict[str, str] | None:
        nodata = (r.findtext("nodata") or "false").strip().lower()
        if nodata not in ("true", "false", "1", "0"):
            raise KumirError("nodata must be true or false")
        if nodata in ("true", "1"):
            return None
        params: dict[str, str] = {}
        for child in r:
            if child.tag in ("nodata", "dat"):
                continue
            text = (child.text or "").strip()
            try:
                finite = Decimal(text).is_finite()
            except InvalidOperation:
                finite = False
            if not finite:
                raise KumirError(f"{child.tag}: {text!r} is not a number")
            params[child.tag] = text
        return params

    async def _document(self, request: web.Request, field_name: str, *, form: bool) -> tuple[str, bytes | None]:
        """(transport, document bytes) of a request: raw body, form field `xml`, or multipart `field_name`."""
        kind = request.content_type
        if kind == "multipart/form-data":
            data = (await request.post()).get(field_name)
            if isinstance(data, web.FileField):
                return "multipart", data.file.read()
            return "multipart", data.encode() if isinstance(data, str) else None
        if kind == "application/x-www-form-urlencoded":
            data = (await request.post()).get("xml") if form else None
            return "form", data.encode() if isinstance(data, str) else None
        raw = await request.read()
        if not raw.strip():
            return "none", None
        return "raw", raw  # application/xml as the spec says; text/xml or none at all are read the same

    # --- the wire ---------------------------------------------------------------------------------

    def _live_session(self, request: web.Request) -> str | None:
        """The request's live session id, dropping it when it has expired."""
        for name in COOKIE_ALIASES:
            sid = request.cookies.get(name, "")
            expiry = self.sessions.get(sid)
            if expiry is not None and self._clock() < expiry:
                return sid
            self.sessions.pop(sid, None)
        return None

    def _credentials_ok(self, login: str | None, password: str | None) -> bool:
        return hmac.compare_digest((login or "").encode(), self.login.encode()) and hmac.compare_digest(
            (password or "").encode(), self.password.encode()
        )

    @staticmethod
    def _redirect(request: web.Request, page: str) -> web.Response:
        return web.Response(status=302, headers={"Location": f"{request.url.origin()}/{page}"})

    @staticmethod
    def _xml(text: str | bytes, status: int = 200) -> web.Response:
        body = (XML_HEAD + text).encode() if isinstance(text, str) else text
        return web.Response(status=status, body=body, content_type="application/xml", charset="utf-8")

    def _result(self, status: str, **fields: str) -> str:
        root = ET.Element("result")
        ET.SubElement(root, "status").text = status
        for name, value in fields.items():
            ET.SubElement(root, name).text = value
        return ET.tostring(root, encoding="unicode")

    async def _page(self, page: str, _request: web.Request) -> web.Response:
        """The HTML a redirect leads to, as a browser (or a client following redirects) would get it."""
        text = {"index.php": "Вход в систему", "interface.php": "КУМИР-РЕСУРС", "failed.php": "Ошибка авторизации"}
        return web.Response(text=HTML.format(text[page]), content_type="text/html")

    async def _serve(self, name: str, request: web.Request) -> web.StreamResponse:
        fault = self.faults.take(name)
        mode = fault.mode if fault else None
        if mode == "http500":
            self.requests.append((name, "none", {"fault": mode}))
            return web.Response(status=500, text="Internal Server Error")
        if mode == "drop" and request.transport is not None:
            self.requests.append((name, "none", {"fault": mode}))
            request.transport.close()
            return web.Response(status=500)
        if mode in ("http401", "http403"):
            # The server has dropped the session; a cookie-only request is answered with the bare status.
            self.requests.append((name, "none", {"fault": mode}))
            self.sessions.pop(self._live_session(request) or "", None)
            return web.Response(status=int(mode[4:]))
        if isinstance(fault, RefusalFault):
            self.requests.append((name, "none", {"fault": mode, "shape": fault.shape, "status": fault.status}))
            content_type, body = _refusal_body(fault.shape, fault.code or "17", fault.message)
            return web.Response(status=fault.status, text=body, content_type=content_type, charset="utf-8")
        if name in ("export", "import"):
            response = await self._exchange(name, request, mode)
        else:
            response = await getattr(self, f"_do_{name}")(request, mode)
        if mode == "timeout":  # the work is done; only the answer is late
            await asyncio.sleep(self.hang_seconds)
        return response

    async def _do_login(self, request: web.Request, mode: str | None) -> web.Response:
        form = await request.post() if request.content_type == "application/x-www-form-urlencoded" else {}
        login, password = form.get("login"), form.get("password")
        ok = isinstance(login, str) and isinstance(password, str) and self._credentials_ok(login, password)
        self.requests.append(("login", "form" if form else "none", {"login": login, "ok": ok and mode is None}))
        if not ok or mode == "session_gone":
            return self._redirect(request, "failed.php")
        sid = secrets.token_hex(16)
        self.sessions[sid] = self._clock() + timedelta(seconds=self.session_ttl)
        response = self._redirect(request, "interface.php")
        response.set_cookie(COOKIE, sid, path="/")
        return response

    async def _do_session(self, request: web.Request, mode: str | None) -> web.Response:
        sid = self._live_session(request)
        self.requests.append(("session", "none", {"session": sid is not None}))
        # Our decision: a gone session is the same 302 to index.php that every other endpoint gives.
        if sid is None or mode == "session_gone":
            self.sessions.pop(sid or "", None)
            return self._redirect(request, "index.php")
        self.sessions[sid] = self._clock() + timedelta(seconds=self.session_ttl)
        return web.Response(text="")

    async def _do_logout(self, request: web.Request, _mode: str | None) -> web.Response:
        sid = self._live_session(request)
        self.requests.append(("logout", "none", {"session": sid is not None}))
        self.sessions.pop(sid or "", None)
        return self._redirect(request, "index.php")

    async def _exchange(self, name: str, request: web.Request, mode: str | None) -> web.Response:
        """Export or import: read the document, check who asks, answer (or fail as told)."""
        field_name = "xml_file_export" if name == "export" else "xml_file_import"
        transport, data = await self._document(request, field_name, form=name == "export")
        info: dict[str, Any] = {"fault": mode} if mode else {}
        self.requests.append((name, transport, info))
        if mode == "session_gone":  # the server lost the session: the client has to log in again
            self.sessions.pop(self._live_session(request) or "", None)
            return self._redirect(request, "index.php")
        if transport == "form" and name == "import":
            info["error"] = "import takes application/xml or multipart xml_file_import"
            return self._xml(self._result("error", message=info["error"]), 400)
        if data is None:
            info["error"] = f"no XML document (raw body, {'form field xml, ' if name == 'export' else ''}{field_name})"
            return self._xml(self._result("error", message=info["error"]), 400)
        try:
            root = parse_xml(data)
        except XmlRefused as err:
            info["error"] = str(err)
            return self._xml(self._result("error", message=str(err)), 400)
        cfg = root.find("cfg")
        sid = self._live_session(request)
        if sid is not None:
            info["auth"] = "cookie"
        elif cfg is not None and self._credentials_ok(cfg.findtext("login"), cfg.findtext("password")):
            info["auth"] = "cfg"
        else:
            info["auth"] = None
            return self._redirect(request, "index.php")
        try:
            if name == "import":
                info["rows"] = self.import_rows(root)
                return self._hostile(mode, self._result("ok", imported=str(info["rows"])))
            query = self.export_query(root)
        except KumirError as err:
            info["error"] = str(err)
            return self._xml(self._result("error", message=str(err)), 400)
        info |= {"begin": query.begin.isoformat(), "end": query.end.isoformat(), "archives": query.archives}
        info |= {"systems": query.systems, "nodes": [node.code for node in query.nodes]}
        document = self.export_document(query)
        if mode == "unknown_elements":
            self._add_unknown(document)
        if mode == "huge":
            return self._huge(document)
        return self._hostile(mode, ET.tostring(document, encoding="unicode"))

    def _hostile(self, mode: str | None, text: str) -> web.Response:
        """The answer, spoilt as `mode` says: truncated, or with a DOCTYPE no safe client may expand."""
        if mode == "malformed":
            return self._xml((XML_HEAD + text).encode()[: max(40, len(text) // 2)])
        if mode in ("entity_bomb", "external_entity"):
            dtd, ref = (BOMB_DTD, "&lol9;") if mode == "entity_bomb" else (XXE_DTD, "&x;")
            if "<status>" in text:  # an import's result
                return self._xml(f"{dtd}\n{text.replace('<status>', '<status>' + ref, 1)}")
            row = f"<r><nodata>false</nodata><dat>{self._now().strftime(DAT_FORMAT)}</dat><EAi>{ref}</EAi></r>"
            return self._xml(f"{dtd}\n{_with_node(text, row, 'Pol_evil')}")
        return self._xml(text)

    def _add_unknown(self, document: ET.Element) -> None:
        """Mix in what a newer KUMIR version might send: an unknown device, archive, parameter and attribute."""
        ET.SubElement(document, "meta", version="4.9").text = "extra"
        nodes = document.find("nodes")
        assert nodes is not None
        stranger = ET.SubElement(nodes, "n", code="Pol_999", num="99999999", dev="zx900", model="new")
        ET.SubElement(ET.SubElement(ET.SubElement(stranger, "zx900"), "hour"), "sys", num="1")
        for n in nodes.findall("n"):
            for device in list(n):
                ET.SubElement(device, "minute").append(ET.Element("sys", num="1"))
                ET.SubElement(n, "m999", note="unknown device").text = "?"
                for r in device.iter("r"):
                    ET.SubElement(r, "RF9").text = "1.5"
                    ET.SubElement(r, "Status", code="0").text = "OK"
                for sys in device.iter("sys"):
                    sys.set("unit", "kWh")

    def _huge(self, document: ET.Element) -> web.Response:
        """The answer padded past huge_bytes with rows of one more node, so a client must cap what it reads."""
        values = "".join(f"<{name}>{i}.125</{name}>" for i, name in enumerate(KINDS["m234"].params))
        row = f"<r><nodata>false</nodata><dat>{self._now().strftime(DAT_FORMAT)}</dat>{values}</r>"
        rows = row * (self.huge_bytes // len(row) + 1)
        return self._xml(_with_node(ET.tostring(document, encoding="unicode"), rows, "Pol_huge"))

    # --- /_sim/ -----------------------------------------------------------------------------------

    async def _sim_advance(self, request: web.Request) -> web.Response:
        self.advance(float((await read_body(request)).get("seconds", 0)))
        return reply({"ok": True, "now": self._now().isoformat()})

    async def _sim_late(self, request: web.Request) -> web.Response:
        self.late(float((await read_body(request)).get("hours", 3)))
        return reply({"ok": True, "late_hours": self.late_hours})

    async def _sim_release_late(self, _request: web.Request) -> web.Response:
        self.release_late()
        return reply({"ok": True})

    async def _sim_reset(self, request: web.Request) -> web.Response:
        data = await read_body(request)
        try:
            self.reset(str(data.get("node")), str(data.get("param")), float(data.get("value", 0)))
        except ValueError as err:
            return reply({"error": str(err)}, status=400)
        return reply({"ok": True})

    async def _sim_gap(self, request: web.Request) -> web.Response:
        data = await read_body(request)
        try:
            start, end = (self._when(str(data.get(key)), key) for key in ("start", "end"))
            self.gap(str(data.get("node")), start, end)
        except (ValueError, KumirError) as err:
            return reply({"error": str(err)}, status=400)
        return reply({"ok": True})

    async def _sim_remove_node(self, request: web.Request) -> web.Response:
        try:
            self.remove_node(str((await read_body(request)).get("node")))
        except ValueError as err:
            return reply({"error": str(err)}, status=400)
        return reply({"ok": True, "removed": list(self.removed)})

    async def _sim_restore_node(self, request: web.Request) -> web.Response:
        try:
            self.restore_node(str((await read_body(request)).get("node")))
        except ValueError as err:
            return reply({"error": str(err)}, status=400)
        return reply({"ok": True, "removed": list(self.removed)})

    async def _sim_refuse(self, request: web.Request) -> web.Response:
        data = await read_body(request)
        try:
            self.refuse(
                str(data.get("shape", "result")),
                status=int(data.get("status", 400)),
                code=str(data.get("code", "17")),
                message=str(data.get("message", REFUSAL_MESSAGE)),
                count=int(data.get("count", 1)),
                endpoint=str(data.get("endpoint", "export")),
            )
        except (TypeError, ValueError) as err:
            return reply({"error": str(err)}, status=400)
        return reply({"ok": True})

    @override
    def state(self) -> dict[str, Any]:
        """Return everything the simulator holds (not the generated rows: export them)."""
        clock = self._clock()
        return {
            "credentials": {"login": self.login, "password": self.password},
            "now": self._now().isoformat(),
            "session_ttl": self.session_ttl,
            "sessions": {sid: (expiry - clock).total_seconds() for sid, expiry in self.sessions.items()},
            "late_hours": self.late_hours,
            "huge_bytes": self.huge_bytes,
            "lists_nodes": self.lists_nodes,
            "removed_nodes": list(self.removed),
            "nodes": [
                {
                    "code": node.code,
                    "num": node.num,
                    "dev": node.dev,
                    "systems": self._systems(node),
                    "imported_only": node.imported_only,
                    "imported_rows": len(node.imported),
                    "resets": [(param, at.isoformat(), value) for param, at, value in node.resets],
                    "gaps": [(start.isoformat(), end.isoformat()) for start, end in node.gaps],
                }
                for node in self.nodes.values()
            ],
        }
