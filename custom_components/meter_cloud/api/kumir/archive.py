"""KUMIR-RESURS xml_import_export documents: the export request, its answer, the import document.

Spec sections 5.1.1 (import structure, also the shape of an export answer) and 5.2.1 (export
request). Pure functions over bytes; the HTTP session lives elsewhere.

Times: `dat` carries no offset and is wall time of the account's zone. A wall time that does not
exist (the spring-forward gap) is read with the offset in force before the change, i.e. it moves
forward by the gap (02:30 -> 03:30). An ambiguous wall time (fall back) is the first occurrence
(fold=0); when the same ambiguous wall time appears again for the same node, device, archive and
system, as an hourly archive does across the change, that repeat is the second occurrence (fold=1).
Rows keep their wall time in the given zone, so compare them as instants (PEP 495: datetimes
sharing a tzinfo compare by wall time, ignoring fold).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo
from decimal import Decimal, InvalidOperation
from types import MappingProxyType
from typing import Any

from lxml import etree

from ..errors import InvalidRequestError, ResponseError
from ..parse import YEARS, is_reading
from .xmlsafe import DEFAULT_MAX_BYTES, parse

ARCHIVES = ("hour", "day", "month", "year", "total")
_ARCHIVE_SET = frozenset(ARCHIVES)
_TRUE = frozenset({"true", "1"})
# A `dat` that reads as no time; a value not read yet in this answer.
_NO_TIME: tuple[None, None, None] = (None, None, None)
_UNREAD: Any = object()
# An XML element name we are willing to write (ASCII NCName; enough for every known parameter).
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]*\Z")


@dataclass(frozen=True, slots=True)
class ArchiveRow:
    """One archive record of one node: the values a device stored at `time`."""

    node_code: str
    serial: str
    devtype: str
    archive: str
    system: int
    time: datetime
    values: Mapping[str, Decimal]


# --- export request (5.2.1) ---------------------------------------------------------------


def _iso(moment: datetime, what: str) -> str:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise InvalidRequestError(f"{what} must carry a time zone")
    return moment.isoformat(timespec="seconds")


def _text(parent: etree._Element, tag: str, text: str) -> etree._Element:
    element = etree.SubElement(parent, tag)
    element.text = text
    return element


def _credentials(cfg: etree._Element, login: str | None, password: str | None) -> None:
    if (login is None) != (password is None):
        raise InvalidRequestError("login and password go together")
    if login is not None and password is not None:
        _text(cfg, "login", login)
        _text(cfg, "password", password)


def _build(root: etree._Element, build: Callable[[etree._Element], None]) -> bytes:
    """Run a builder and serialize; lxml refusing text XML cannot carry (control characters) is a bad request."""
    try:
        build(root)
    except ValueError as err:
        raise InvalidRequestError(str(err)) from err
    # The declaration spelled as the spec's samples spell it (lxml would use single quotes).
    body: bytes = etree.tostring(root, encoding="UTF-8", pretty_print=True)
    return b'<?xml version="1.0" encoding="UTF-8"?>\n' + body


def export_request(
    *,
    begin: datetime,
    end: datetime,
    archives: Sequence[str],
    systems: Sequence[int],
    nodes: Sequence[tuple[str, str, str]],
    login: str | None = None,
    password: str | None = None,
) -> bytes:
    """The export request document; `nodes` are (code, serial, devtype), none meaning all nodes.

    With `login`/`password` the document authenticates itself (no session cookie needed).
    """
    begin_text, end_text = _iso(begin, "begin"), _iso(end, "end")
    if begin > end:
        raise InvalidRequestError("begin is after end")
    if not archives or any(archive not in _ARCHIVE_SET for archive in archives):
        raise InvalidRequestError(f"archives must be some of {', '.join(ARCHIVES)}")
    if not systems or any(isinstance(num, bool) or not isinstance(num, int) or num < 0 for num in systems):
        raise InvalidRequestError("systems must be non-negative integers")
    for node in nodes:
        if len(node) != 3 or not all(isinstance(part, str) and part.strip() for part in node):
            raise InvalidRequestError("a node is (code, serial, devtype), none of them empty")

    def build(root: etree._Element) -> None:
        cfg = etree.SubElement(root, "cfg")
        _credentials(cfg, login, password)
        _text(cfg, "timestamp_begin", begin_text)
        _text(cfg, "timestamp_end", end_text)
        archives_element = etree.SubElement(cfg, "archives")
        for archive in dict.fromkeys(archives):
            etree.SubElement(archives_element, "arch", type=archive)
        systems_element = etree.SubElement(cfg, "systems")
        for num in dict.fromkeys(systems):
            etree.SubElement(systems_element, "sys", num=str(num))
        nodes_element = etree.SubElement(root, "nodes")
        for code, serial, devtype in nodes:
            _text(nodes_element, "dev", devtype).set("num", serial)
            _text(nodes_element, "node", code)

    return _build(etree.Element("d"), build)


# --- export answer (5.1.1 structure) ------------------------------------------------------


def _local(element: etree._Element) -> str | None:
    """The element's name without namespace; None for anything that is not an element."""
    tag = element.tag
    if not isinstance(tag, str):  # pragma: no cover - comments and PIs are stripped by the parser
        return None
    # "{namespace}name" → "name"; most documents have no namespace (QName costs ~30% of a parse).
    return tag.rsplit("}", 1)[-1] if tag.startswith("{") else tag


def _children(element: etree._Element, name: str | None = None) -> Iterator[tuple[str, etree._Element]]:
    for child in element:
        local = _local(child)
        if local is not None and (name is None or local == name):
            yield local, child


def _attr(element: etree._Element, name: str) -> str | None:
    value = element.get(name)
    if value is None:
        return None
    value = value.strip()
    return value or None


def _number(text: str | None) -> Decimal | None:
    """A Decimal from "8870.448", "8870,448", "1e3"; None for anything else (never a guess), a number no meter
    reports (parse.is_reading) included."""
    if text is None:
        return None
    text = text.strip()
    if "," in text:
        if "." in text or text.count(",") != 1:
            return None
        text = text.replace(",", ".")
    try:
        number = Decimal(text)
    except InvalidOperation:
        return None
    return number if is_reading(number) else None


def _namespace_free(data: bytes, root: etree._Element) -> None:
    """Drop namespaces from every tag, so the walk below compares plain names.

    Skipped, in one scan of the bytes, for the usual document that declares none: a walk of the tree costs
    about a third of the parse. An encoding that does not spell "xmlns" in ASCII is always walked.
    """
    encoding = root.getroottree().docinfo.encoding or "utf-8"
    try:
        spelled = "xmlns".encode(encoding) == b"xmlns"
    except LookupError:
        spelled = False
    if spelled and b"xmlns" not in data:
        return
    for element in root.iter():
        local = _local(element)
        if local is not None and local != element.tag:
            element.tag = local


def _instant(text: str | None, tz: tzinfo) -> tuple[datetime | None, datetime | None, datetime | None]:
    """A `dat` read (see the module notes): its instant, and for an ambiguous wall time that time and its later one."""
    if text is None:
        return _NO_TIME
    try:
        # The spec's 2021-08-02T00:00:00, and the other ISO 8601 spellings (space, minutes, a date).
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        return _NO_TIME
    if moment.year not in YEARS:  # a "none" or junk date; year 1 cannot even be moved to UTC
        return _NO_TIME
    if moment.tzinfo is not None:  # the spec says no offset; one given anyway is honoured
        return moment.astimezone(tz), None, None
    first = moment.replace(tzinfo=tz, fold=0)
    later = moment.replace(tzinfo=tz, fold=1)
    # Through UTC and back: a wall time in a gap becomes the wall time that exists. Both folds give different
    # offsets in a gap and in an overlap; only in an overlap is the wall time real (survives the round trip).
    instant = first.astimezone(UTC).astimezone(tz)
    if first.utcoffset() == later.utcoffset() or _round_trip(first, tz) != moment:
        return instant, None, None
    return instant, moment, later.astimezone(UTC).astimezone(tz)


def _round_trip(moment: datetime, tz: tzinfo) -> datetime:
    return moment.astimezone(UTC).astimezone(tz).replace(tzinfo=None)


type NodeKey = tuple[str, str, str]
# A node's part of an answer, as a digest of its bytes, and the rows read from it (parse_export_answer's `known`).
type NodeRows = dict[NodeKey, tuple[bytes, list[ArchiveRow]]]


@dataclass(frozen=True, slots=True)
class ExportAnswer:
    """An export answer: its rows, and every node it names (code, serial, devtype), rows or not.

    `read` are the rows read anew (all of them unless `known` was given: then only those of nodes whose part of
    the answer changed); `by_node` is what to give as `known` when parsing the next answer to the same request.
    """

    rows: list[ArchiveRow]
    nodes: list[NodeKey]
    read: list[ArchiveRow] = field(default_factory=list)
    by_node: NodeRows = field(default_factory=dict)


def parse_export(data: bytes, tz: tzinfo, *, max_bytes: int = DEFAULT_MAX_BYTES) -> list[ArchiveRow]:
    """The rows of an export answer, in document order (see parse_export_answer)."""
    return parse_export_answer(data, tz, max_bytes=max_bytes).rows


def parse_export_answer(
    data: bytes, tz: tzinfo, *, max_bytes: int = DEFAULT_MAX_BYTES, known: NodeRows | None = None
) -> ExportAnswer:
    """The rows of an export answer, in document order, and the nodes it names.

    Rows marked nodata, rows without a readable `dat` and rows without any numeric value are
    skipped; nodes missing code/num/dev are skipped; unknown archives are skipped; unknown
    parameters are kept. A node whose rows are all skipped is still named: it is in the account,
    its collector is only late. Raises ResponseError when the document is unsafe, malformed or not a `d`.

    With `known` (the last answer's `by_node`), a node whose part of the document has the very bytes it had then
    is not read again: its rows are the same objects as then (a node's rows depend on its part alone). A collector
    that read a tenth of the nodes since costs lxml's parse and the reading of that tenth.
    """
    root = parse(data, max_bytes=max_bytes)
    if _local(root) != "d":
        raise ResponseError(f"unexpected root element {root.tag!r}")
    _namespace_free(data, root)
    walk = _Walk(tz)
    named: dict[NodeKey, None] = {}
    rows: list[ArchiveRow] = []
    by_node: NodeRows = {}
    for _, nodes in _children(root, "nodes"):
        for _, node in _children(nodes, "n"):
            code, serial, devtype = _attr(node, "code"), _attr(node, "num"), _attr(node, "dev")
            if code is None or serial is None or devtype is None:
                continue
            key = (code, serial, devtype)
            named[key] = None
            digest = b""
            if known is not None:
                digest = hashlib.blake2b(etree.tostring(node, with_tail=False), digest_size=16).digest()
                last = known.get(key)
                if last is not None and last[0] == digest:
                    rows.extend(last[1])
                    by_node[key] = last
                    continue
            first = len(walk.rows)
            _read_node(walk, node, key)
            rows.extend(walk.rows[first:])
            if known is not None:
                by_node[key] = (digest, walk.rows[first:])
    return ExportAnswer(rows, list(named), walk.rows, by_node)


def _read_node(walk: _Walk, node: etree._Element, key: NodeKey) -> None:
    """The rows of one `n` element, appended to the walk's."""
    devtype = key[2]
    for device_name, device in _children(node):
        if device_name.lower() != devtype.lower():
            continue
        for archive, archive_element in _children(device):
            if archive not in _ARCHIVE_SET:
                continue
            for _, system_element in _children(archive_element, "sys"):
                system = _system(_attr(system_element, "num"))
                if system is not None:
                    walk.records(system_element, (*key, archive, system))


def _system(text: str | None) -> int | None:
    if text is None or not text.isdigit() or not text.isascii() or len(text) > 9:
        return None
    return int(text)


class _Walk:
    """The rows of one answer's records, read in one pass over each record's children.

    The hot loop of a parse (a 1000-node day is some 90,000 records and a million values): the many values and
    times an answer repeats (a zero, a voltage, every node's same hours) are read once per answer and shared,
    and nothing is made for a value that is not kept.
    """

    def __init__(self, tz: tzinfo) -> None:
        self.tz = tz
        self.rows: list[ArchiveRow] = []
        self._numbers: dict[str | None, Decimal | None] = {}
        self._times: dict[str | None, tuple[datetime | None, datetime | None, datetime | None]] = {}

    def records(self, system_element: etree._Element, where: tuple[str, str, str, str, int]) -> None:
        """Append the rows of one system's records (see parse_export_answer for what is skipped)."""
        code, serial, devtype, archive, system = where
        numbers, times, rows = self._numbers, self._times, self.rows
        seen: set[datetime] = set()  # the ambiguous wall times met so far in this system's records
        for record in system_element:
            if record.tag != "r":
                continue
            dat: etree._Element | None = None
            nodata: etree._Element | None = None
            # Keyed by tag: a record's children are all elements (comments and PIs are dropped by the parser,
            # entity references cannot exist without a DTD), so each tag is a str; no check in the hot loop.
            values: dict[Any, Decimal] = {}
            for child in record:
                name = child.tag
                if name == "dat":
                    dat = child if dat is None else dat
                elif name == "nodata":
                    nodata = child if nodata is None else nodata
                elif name not in values and not len(child):
                    text = child.text
                    number = numbers.get(text, _UNREAD)
                    if number is _UNREAD:
                        number = numbers[text] = _number(text)
                    if number is not None:
                        values[name] = number
            # The time first: a nodata record still occupies its slot of an ambiguous hour.
            text = None if dat is None else dat.text
            when = times.get(text)
            if when is None:
                when = times[text] = _instant(text, self.tz)
            moment, ambiguous, later = when
            if ambiguous is not None:
                if ambiguous in seen:
                    moment = later
                seen.add(ambiguous)
            if moment is None or not values:
                continue
            if nodata is not None and (flag := nodata.text) is not None and flag.strip().lower() in _TRUE:
                continue
            rows.append(ArchiveRow(code, serial, devtype, archive, system, moment, MappingProxyType(values)))


# --- import document (5.1.1) --------------------------------------------------------------


def _decimal_text(value: Decimal, name: str) -> str:
    if not isinstance(value, Decimal) or not value.is_finite():
        raise InvalidRequestError(f"{name} must be a finite Decimal")
    # Positional notation, every digit kept: Decimal("1E+3") -> "1000", "8870.4480" stays.
    return format(value, "f")


def import_document(rows: Sequence[ArchiveRow], *, login: str | None = None, password: str | None = None) -> bytes:
    """The import document for `rows`: grouped by node, archive and system in first-seen order.

    `dat` is each row's wall time without offset; the cfg carries the period and the archives and
    systems present, as the spec's sample does.
    """
    if not rows:
        raise InvalidRequestError("nothing to import")
    for row in rows:
        if row.time.tzinfo is None or row.time.utcoffset() is None:
            raise InvalidRequestError("row times must carry a time zone")
        if row.archive not in _ARCHIVE_SET:
            raise InvalidRequestError(f"unknown archive {row.archive!r}")
        if not _NAME.match(row.devtype):
            raise InvalidRequestError(f"device type {row.devtype!r} is not an XML name")
        for name in row.values:
            if not _NAME.match(name):
                raise InvalidRequestError(f"parameter {name!r} is not an XML name")

    grouped: dict[tuple[str, str, str], dict[str, dict[int, list[ArchiveRow]]]] = {}
    for row in rows:
        archives = grouped.setdefault((row.node_code, row.serial, row.devtype), {})
        archives.setdefault(row.archive, {}).setdefault(row.system, []).append(row)
    first = min(rows, key=lambda row: row.time.astimezone(UTC))
    last = max(rows, key=lambda row: row.time.astimezone(UTC))

    def build(root: etree._Element) -> None:
        cfg = etree.SubElement(root, "cfg")
        _credentials(cfg, login, password)
        _text(cfg, "timestamp_begin", _iso(first.time, "time"))
        _text(cfg, "timestamp_end", _iso(last.time, "time"))
        archives_element = etree.SubElement(cfg, "archives")
        for archive in dict.fromkeys(row.archive for row in rows):
            etree.SubElement(archives_element, "arch", type=archive)
        systems_element = etree.SubElement(cfg, "systems")
        for num in dict.fromkeys(row.system for row in rows):
            etree.SubElement(systems_element, "sys", num=str(num))
        nodes_element = etree.SubElement(root, "nodes")
        for (code, serial, devtype), archives in grouped.items():
            node = etree.SubElement(nodes_element, "n", code=code, num=serial, dev=devtype)
            device = etree.SubElement(node, devtype)
            for archive, systems in archives.items():
                archive_element = etree.SubElement(device, archive)
                for num, system_rows in systems.items():
                    system_element = etree.SubElement(archive_element, "sys", num=str(num))
                    for row in system_rows:
                        record = etree.SubElement(system_element, "r")
                        _text(record, "nodata", "false")
                        _text(record, "dat", row.time.replace(tzinfo=None).isoformat(timespec="seconds"))
                        for name, value in row.values.items():
                            _text(record, name, _decimal_text(value, name))

    return _build(etree.Element("d"), build)
