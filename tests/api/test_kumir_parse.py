"""KUMIR-RESURS documents: the safe XML parser, export request/answer, import document, parameter table."""

from __future__ import annotations

import time
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from types import MappingProxyType
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from lxml import etree

from custom_components.meter_cloud.api import InvalidRequestError, ResponseError
from custom_components.meter_cloud.api.kumir import (
    PARAMS,
    ArchiveRow,
    Refusal,
    describe,
    export_request,
    find_refusal,
    import_document,
    is_losses_system,
    is_sum_system,
    parse,
    parse_export,
    parse_export_answer,
    sum_components,
    xmlsafe,
)

MOSCOW = ZoneInfo("Europe/Moscow")
BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")

# Spec 5.1.1, verbatim but for the blank lines of the PDF extraction.
SAMPLE_IMPORT = b"""<?xml version="1.0" encoding="UTF-8"?>
<d>
  <cfg>
    <login>example</login>
    <password>example</password>
    <timestamp_begin>2021-08-02T00:00:00+00:00</timestamp_begin>
    <timestamp_end>2021-08-02T00:00:00+00:00</timestamp_end>
    <archives>
      <arch type="day" />
    </archives>
    <systems>
      <sys num="1" />
    </systems>
  </cfg>
  <nodes>
    <n code="Pol_276" num="34781353" dev="m234">
      <m234>
        <day>
          <sys num="1">
            <r>
              <nodata>false</nodata>
              <dat>2021-08-02T00:00:00</dat>
              <EAi>8870.448</EAi>
              <EAo>0</EAo>
              <ERi>305.094</ERi>
              <ERo>173.728</ERo>
              <U_A>0</U_A>
              <U_B>0</U_B>
              <U_C>0</U_C>
              <I_A>0</I_A>
              <I_B>0</I_B>
              <I_C>0</I_C>
              <F0>0</F0>
              <COS_A>0</COS_A>
              <COS_B>0</COS_B>
              <COS_C>0</COS_C>
              <COS_S>0</COS_S>
              <F_AB>0</F_AB>
              <F_CA>0</F_CA>
              <F_BC>0</F_BC>
              <RF7>0</RF7>
            </r>
          </sys>
        </day>
      </m234>
    </n>
  </nodes>
</d>
"""

# Spec 5.2.1.
SAMPLE_EXPORT_REQUEST = b"""<?xml version="1.0" encoding="utf-8"?>
<d>
  <cfg>
    <login>example</login>
    <password>example</password>
    <timestamp_begin>2021-08-02T00:00:00+00:00</timestamp_begin>
    <timestamp_end>2021-08-02T00:00:00+00:00</timestamp_end>
    <archives>
      <arch type="hour" />
      <arch type="day" />
    </archives>
    <systems>
      <sys num="1" />
      <sys num="2" />
    </systems>
  </cfg>
  <nodes>
    <dev num="34781353">m234</dev>
    <node>Pol_276</node>
  </nodes>
</d>
"""

SAMPLE_PARAMS = [
    "EAi",
    "EAo",
    "ERi",
    "ERo",
    "U_A",
    "U_B",
    "U_C",
    "I_A",
    "I_B",
    "I_C",
    "F0",
    "COS_A",
    "COS_B",
    "COS_C",
    "COS_S",
    "F_AB",
    "F_CA",
    "F_BC",
    "RF7",
]

BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
 <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
 <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
 <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
 <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
<d><nodes><n code="x" num="1" dev="m234"><m234><day><sys num="1"><r>
<dat>2021-08-02T00:00:00</dat><EAi>&lol9;</EAi></r></sys></day></m234></n></nodes></d>
"""


def xxe(target: str) -> bytes:
    """A document whose entity would pull `target` into a parameter value if it were resolved."""
    return (
        f'<?xml version="1.0"?>\n<!DOCTYPE d [<!ENTITY xxe SYSTEM "{target}">]>\n'
        '<d><nodes><n code="x" num="1" dev="m234"><m234><day><sys num="1"><r>'
        "<dat>2021-08-02T00:00:00</dat><EAi>1</EAi><X>&xxe;</X></r></sys></day></m234></n></nodes></d>"
    ).encode()


def records(*bodies: str, dev: str = "m234", archive: str = "hour", system: str = "1") -> bytes:
    """An export answer with one node holding `bodies` as its `r` records."""
    rows = "".join(f"<r>{body}</r>" for body in bodies)
    return (
        f'<d><nodes><n code="N1" num="42" dev="{dev}"><{dev}><{archive}><sys num="{system}">{rows}'
        f"</sys></{archive}></{dev}></n></nodes></d>"
    ).encode()


def shape(element: etree._Element) -> tuple[Any, ...]:
    """A comparable picture of an element: name, attributes, stripped text, children in order."""
    return (
        element.tag,
        dict(element.attrib),
        (element.text or "").strip(),
        [shape(child) for child in element],
    )


# --- the safe parser -------------------------------------------------------------------


def test_billion_laughs_is_refused_quickly() -> None:
    """No expansion: refused before libxml2 sees the DTD, well under a second."""
    start = time.perf_counter()
    with pytest.raises(ResponseError) as err:
        parse_export(BILLION_LAUGHS, MOSCOW)
    assert time.perf_counter() - start < 1
    assert err.value.reason == "unsafe_xml"


def test_second_line_of_defence(monkeypatch: pytest.MonkeyPatch) -> None:
    """With the byte scan blinded, the document is still refused, unexpanded and quickly.

    libxml2's own amplification guard stops the laughs (malformed_xml); a harmless DTD is caught by
    the parsed tree's docinfo (unsafe_xml).
    """
    monkeypatch.setattr(xmlsafe, "_declares_dtd", lambda data: False)
    start = time.perf_counter()
    with pytest.raises(ResponseError) as err:
        parse(BILLION_LAUGHS)
    assert time.perf_counter() - start < 1
    assert err.value.reason in {"unsafe_xml", "malformed_xml"}
    with pytest.raises(ResponseError) as err:
        parse(b"<!DOCTYPE d><d/>")
    assert err.value.reason == "unsafe_xml"


def test_external_entity_reads_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """file:///etc/passwd and a file of our own: never read, never in the error, refused."""
    secret = tmp_path / "secret.txt"
    secret.write_text("TOPSECRET-4711")
    for target in ("file:///etc/passwd", secret.as_uri(), "http://127.0.0.1:9/x"):
        with pytest.raises(ResponseError) as err:
            parse_export(xxe(target), MOSCOW)
        assert err.value.reason == "unsafe_xml"
        assert "root:" not in str(err.value)
        assert "TOPSECRET" not in str(err.value)
    # Even when the DTD gets through the scan, the parser itself neither loads nor substitutes.
    monkeypatch.setattr(xmlsafe, "_declares_dtd", lambda data: False)
    root = etree.fromstring(xxe(secret.as_uri()), parser=xmlsafe.make_parser())
    assert b"TOPSECRET" not in etree.tostring(root)
    with pytest.raises(ResponseError) as err:
        parse(xxe(secret.as_uri()))
    assert err.value.reason == "unsafe_xml"
    assert "TOPSECRET" not in str(err.value)


@pytest.mark.parametrize(
    "data",
    [
        b"<!DOCTYPE d><d/>",
        b'<?xml version="1.0"?><!DOCTYPE d SYSTEM "http://127.0.0.1:9/d.dtd"><d/>',
        b"<d><!ENTITY a 'b'></d>",
        '<?xml version="1.0" encoding="UTF-16"?><!DOCTYPE d><d/>'.encode("utf-16"),
    ],
    ids=["doctype-alone", "external-dtd", "stray-entity", "utf16-doctype"],
)
def test_any_dtd_is_refused(data: bytes) -> None:
    """A DOCTYPE or ENTITY declaration, however small or encoded, is unsafe."""
    with pytest.raises(ResponseError) as err:
        parse(data)
    assert err.value.reason == "unsafe_xml"


@pytest.mark.parametrize(
    "data",
    [
        SAMPLE_IMPORT[: len(SAMPLE_IMPORT) // 2],
        b"",
        b"not xml at all",
        b"<d><a></b></d>",
        b"<d>&undefined;</d>",
        "<d><n code='Пол'/></d>".encode("cp1251"),
    ],
    ids=["truncated", "empty", "text", "mismatched", "undefined-entity", "cp1251-undeclared"],
)
def test_malformed(data: bytes) -> None:
    """Anything libxml2 refuses is malformed_xml; undeclared non-UTF-8 bytes included."""
    with pytest.raises(ResponseError) as err:
        parse_export(data, MOSCOW)
    assert err.value.reason == "malformed_xml"


def test_declared_encoding_is_honoured() -> None:
    """A document that says windows-1251 (a Russian server might) is read as such."""
    data = (
        '<?xml version="1.0" encoding="windows-1251"?><d><nodes><n code="Котельная" num="1" dev="tv7"><tv7>'
        '<day><sys num="2"><r><dat>2021-08-02T00:00:00</dat><Q>1,5</Q></r></sys></day></tv7></n></nodes></d>'
    ).encode("cp1251")
    [row] = parse_export(data, MOSCOW)
    assert row.node_code == "Котельная"
    assert row.values == {"Q": Decimal("1.5")}


def test_size_limit() -> None:
    """Bigger than max_bytes is refused unparsed; exactly max_bytes is fine."""
    data = b"<d>" + b"x" * 93 + b"</d>"
    assert len(data) == 100
    assert parse(data, max_bytes=100).tag == "d"
    with pytest.raises(ResponseError) as err:
        parse(data, max_bytes=99)
    assert err.value.reason == "xml_too_large"
    with pytest.raises(ResponseError) as err:
        parse_export(SAMPLE_IMPORT, MOSCOW, max_bytes=len(SAMPLE_IMPORT) - 1)
    assert err.value.reason == "xml_too_large"


def test_parser_settings_and_input_type() -> None:
    """Comments and processing instructions are dropped; text must come as bytes."""
    root = parse(b"<d><!-- note --><?php echo 1; ?><a>1</a></d>")
    assert [child.tag for child in root] == ["a"]
    with pytest.raises(TypeError):
        parse("<d/>")  # type: ignore[arg-type]


# --- export answer -----------------------------------------------------------------------


def test_spec_sample_parses_exactly() -> None:
    """The 5.1.1 sample: one day row, exact Decimals, dat read in the account's zone."""
    [row] = parse_export(SAMPLE_IMPORT, MOSCOW)
    assert (row.node_code, row.serial, row.devtype, row.archive, row.system) == (
        "Pol_276",
        "34781353",
        "m234",
        "day",
        1,
    )
    assert row.time == datetime(2021, 8, 2, tzinfo=MOSCOW)
    assert row.time.astimezone(UTC) == datetime(2021, 8, 1, 21, tzinfo=UTC)
    assert list(row.values) == SAMPLE_PARAMS
    assert row.values["EAi"] == Decimal("8870.448")
    assert str(row.values["EAi"]) == "8870.448"
    assert row.values["ERi"] == Decimal("305.094")
    assert row.values["ERo"] == Decimal("173.728")
    assert all(isinstance(value, Decimal) for value in row.values.values())
    assert isinstance(row.values, MappingProxyType)
    with pytest.raises(AttributeError):
        row.archive = "hour"  # type: ignore[misc]


def test_nodata_rows_are_skipped_not_zeroed() -> None:
    """nodata true (any case, or 1) drops the row; false or absent keeps it."""
    data = records(
        "<nodata>true</nodata><dat>2024-01-01T00:00:00</dat><EAi>0</EAi>",
        "<nodata> TRUE </nodata><dat>2024-01-01T01:00:00</dat><EAi>0</EAi>",
        "<nodata>1</nodata><dat>2024-01-01T02:00:00</dat><EAi>0</EAi>",
        "<nodata>false</nodata><dat>2024-01-01T03:00:00</dat><EAi>5</EAi>",
        "<dat>2024-01-01T04:00:00</dat><EAi>6</EAi>",
        "<nodata>0</nodata><dat>2024-01-01T05:00:00</dat><EAi>7</EAi>",
    )
    rows = parse_export(data, MOSCOW)
    assert [(row.time.hour, row.values["EAi"]) for row in rows] == [
        (3, Decimal(5)),
        (4, Decimal(6)),
        (5, Decimal(7)),
    ]


def test_dst_fall_back_berlin() -> None:
    """The repeated 02:00 of an hourly archive: first is summer time, the repeat winter time."""
    data = records(
        "<dat>2021-10-31T01:00:00</dat><EAi>1</EAi>",
        "<dat>2021-10-31T02:00:00</dat><EAi>2</EAi>",
        "<dat>2021-10-31T02:00:00</dat><EAi>3</EAi>",
        "<dat>2021-10-31T03:00:00</dat><EAi>4</EAi>",
    )
    rows = parse_export(data, BERLIN)
    assert [row.time.astimezone(UTC) for row in rows] == [
        datetime(2021, 10, 30, 23, tzinfo=UTC),
        datetime(2021, 10, 31, 0, tzinfo=UTC),
        datetime(2021, 10, 31, 1, tzinfo=UTC),
        datetime(2021, 10, 31, 2, tzinfo=UTC),
    ]
    assert [row.time.fold for row in rows] == [0, 0, 1, 0]
    # A lone ambiguous time (daily archive, other systems) is the first occurrence.
    [lone] = parse_export(records("<dat>2021-10-31T02:30:00</dat><EAi>1</EAi>"), BERLIN)
    assert lone.time.astimezone(UTC) == datetime(2021, 10, 31, 0, 30, tzinfo=UTC)


def test_dst_repeat_is_per_system_and_counts_nodata() -> None:
    """The second-occurrence rule looks within one node/archive/system; a nodata slot still counts."""
    data = (
        b'<d><nodes><n code="N1" num="42" dev="m234"><m234><hour>'
        b'<sys num="1"><r><dat>2021-11-07T01:00:00</dat><EAi>1</EAi></r></sys>'
        b'<sys num="2"><r><dat>2021-11-07T01:00:00</dat><EAi>2</EAi></r></sys>'
        b'<sys num="3"><r><nodata>true</nodata><dat>2021-11-07T01:00:00</dat></r>'
        b"<r><dat>2021-11-07T01:00:00</dat><EAi>3</EAi></r></sys>"
        b"</hour></m234></n></nodes></d>"
    )
    rows = parse_export(data, NEW_YORK)
    assert [(row.system, row.time.astimezone(UTC)) for row in rows] == [
        (1, datetime(2021, 11, 7, 5, tzinfo=UTC)),
        (2, datetime(2021, 11, 7, 5, tzinfo=UTC)),
        (3, datetime(2021, 11, 7, 6, tzinfo=UTC)),
    ]


def test_dst_gap_moves_forward() -> None:
    """A wall time that never happened (spring forward) is read with the old offset: 02:30 -> 03:30."""
    rows = parse_export(
        records(
            "<dat>2021-03-14T02:30:00</dat><EAi>1</EAi>",
            "<dat>2021-03-14T02:30:00</dat><EAi>2</EAi>",
        ),
        NEW_YORK,
    )
    for row in rows:
        assert row.time.astimezone(UTC) == datetime(2021, 3, 14, 7, 30, tzinfo=UTC)
        assert (row.time.hour, row.time.minute) == (3, 30)
    [berlin] = parse_export(records("<dat>2021-03-28T02:30:00</dat><EAi>1</EAi>"), BERLIN)
    assert berlin.time.astimezone(UTC) == datetime(2021, 3, 28, 1, 30, tzinfo=UTC)


def test_dat_formats() -> None:
    """The spec's format, a few neighbours, and an offset given anyway (honoured)."""
    data = records(
        "<dat>2024-05-01T10:00:00.500</dat><EAi>1</EAi>",
        "<dat>2024-05-01 11:00:00</dat><EAi>2</EAi>",
        "<dat>2024-05-01</dat><EAi>3</EAi>",
        "<dat>2024-05-01T12:00:00+00:00</dat><EAi>4</EAi>",
        "<dat>2024-05-01T13:00:00Z</dat><EAi>5</EAi>",
        "<dat>2024-05-01T14:00</dat><EAi>6</EAi>",
        "<dat>20240501T150000</dat><EAi>6</EAi>",
        "<dat>yesterday</dat><EAi>7</EAi>",
        "<dat></dat><EAi>8</EAi>",
        "<EAi>9</EAi>",
    )
    rows = parse_export(data, MOSCOW)
    assert [row.time.astimezone(UTC) for row in rows] == [
        datetime(2024, 5, 1, 7, 0, 0, 500000, tzinfo=UTC),
        datetime(2024, 5, 1, 8, tzinfo=UTC),
        datetime(2024, 4, 30, 21, tzinfo=UTC),
        datetime(2024, 5, 1, 12, tzinfo=UTC),
        datetime(2024, 5, 1, 13, tzinfo=UTC),
        datetime(2024, 5, 1, 11, tzinfo=UTC),
        datetime(2024, 5, 1, 12, tzinfo=UTC),
    ]
    assert all(row.time.tzinfo is MOSCOW for row in rows)


def test_values_tolerant() -> None:
    """Comma decimals accepted; junk, non-finite, beyond 1e±28, ambiguous separators and nested elements skipped."""
    [row] = parse_export(
        records(
            "<dat>2024-01-01T00:00:00</dat>"
            "<EAi>8870,448</EAi><EAo> 12.50 </EAo><ERi>1e3</ERi><ERo>-0</ERo>"
            "<U_A>abc</U_A><U_B></U_B><U_C>NaN</U_C><I_A>Infinity</I_A><I_B>1,234.5</I_B><I_C>1,2,3</I_C>"
            "<F0>50</F0><F0>51</F0><NEW_PARAM>7</NEW_PARAM><Block><EAi>99</EAi></Block><F_AB/>"
            "<HUGE>1e999999</HUGE><TINY>1e-999999</TINY><BIG>1e29</BIG><EDGE>1e28</EDGE><NIL>0e-1000</NIL>"
        ),
        MOSCOW,
    )
    assert dict(row.values) == {
        "EAi": Decimal("8870.448"),
        "EAo": Decimal("12.50"),
        "ERi": Decimal("1E+3"),
        "ERo": Decimal("-0"),
        "F0": Decimal(50),
        "NEW_PARAM": Decimal(7),
        "EDGE": Decimal("1e28"),
        "NIL": Decimal(0),
    }
    assert str(row.values["EAo"]) == "12.50"


def test_a_record_dated_year_one_is_skipped() -> None:
    """A `dat` of 0001-01-01 (a platform's "none") is no time: the record is skipped, the others read."""
    rows = parse_export(
        records("<dat>0001-01-01T00:00:00</dat><EAi>1</EAi>", "<dat>2024-01-01T00:00:00</dat><EAi>2</EAi>"), MOSCOW
    )
    assert [row.values["EAi"] for row in rows] == [Decimal(2)]


def test_rows_without_values_are_skipped() -> None:
    """A record with a time but nothing numeric says nothing."""
    assert parse_export(records("<dat>2024-01-01T00:00:00</dat><X>n/a</X>"), MOSCOW) == []


def test_unknown_structure_is_tolerated() -> None:
    """Unknown devices are read; unknown archives, bad nodes and stray elements are passed over."""
    data = b"""<?xml version="1.0" encoding="UTF-8"?>
<d xmlns:x="urn:extra">
  <cfg><future>1</future></cfg>
  <x:meta>ignored</x:meta>
  <summary>whatever</summary>
  <nodes>
    <note>stray</note>
    <n code="Boiler" num="777" dev="tv7">
      <info><day><sys num="1"><r><dat>2024-01-01T00:00:00</dat><Q>99</Q></r></sys></day></info>
      <TV7>
        <halfhour><sys num="1"><r><dat>2024-01-01T00:00:00</dat><Q>1</Q></r></sys></halfhour>
        <total>
          <sys num="2"><r><dat>2024-01-01T00:00:00</dat><Q>12.5</Q><Xyz>3</Xyz><extra><a/></extra></r></sys>
          <sys><r><dat>2024-01-01T00:00:00</dat><Q>2</Q></r></sys>
          <sys num="x"><r><dat>2024-01-01T00:00:00</dat><Q>3</Q></r></sys>
          <sys num="-1"><r><dat>2024-01-01T00:00:00</dat><Q>4</Q></r></sys>
          <sys num="\xd9\xa3"><r><dat>2024-01-01T00:00:00</dat><Q>5</Q></r></sys>
          <other/>
        </total>
      </TV7>
    </n>
    <n num="1" dev="m234"><m234><day><sys num="1"><r><dat>2024-01-01T00:00:00</dat><EAi>1</EAi></r></sys>
    </day></m234></n>
    <n code="A" dev="m234"><m234><day><sys num="1"><r><dat>2024-01-01T00:00:00</dat><EAi>1</EAi></r></sys>
    </day></m234></n>
    <n code="A" num="2" dev="  "><m234><day><sys num="1"><r><dat>2024-01-01T00:00:00</dat><EAi>1</EAi></r></sys>
    </day></m234></n>
    <n code="NS" num="3" dev="m234"><m234 xmlns="urn:kumir"><day><sys num="4"><r><dat>2024-01-01T00:00:00</dat>
    <EAi>8</EAi></r></sys></day></m234></n>
  </nodes>
</d>"""
    rows = parse_export(data, MOSCOW)
    assert [(row.node_code, row.devtype, row.archive, row.system, dict(row.values)) for row in rows] == [
        ("Boiler", "tv7", "total", 2, {"Q": Decimal("12.5"), "Xyz": Decimal(3)}),
        ("NS", "m234", "day", 4, {"EAi": Decimal(8)}),
    ]


def test_empty_and_foreign_documents() -> None:
    """A `d` with no nodes is no data; any other root is not an answer."""
    assert parse_export(b"<d/>", MOSCOW) == []
    assert parse_export(b"<d><nodes/></d>", MOSCOW) == []
    assert parse_export(SAMPLE_EXPORT_REQUEST, MOSCOW) == []
    with pytest.raises(ResponseError) as err:
        parse_export(b"<html><body>Login</body></html>", MOSCOW)
    assert err.value.reason == "invalid_response"


def test_nodes_named_without_rows() -> None:
    """A node whose rows are all nodata (a late collector) is still named; a node without code/num/dev is not."""
    data = (
        b'<d><nodes><n code="A" num="1" dev="m234"><m234><hour><sys num="1"><r><nodata>true</nodata>'
        b"<dat>2026-11-01T10:00:00</dat></r></sys></hour></m234></n>"
        b'<n code="B" num="2" dev="tv7"/><n code="C" dev="tv7"/><n code="A" num="1" dev="m234"/></nodes></d>'
    )
    answer = parse_export_answer(data, MOSCOW)
    assert answer.rows == []
    assert answer.nodes == [("A", "1", "m234"), ("B", "2", "tv7")]


def _answer_of(values: dict[str, str]) -> bytes:
    """An export answer of three nodes (two systems of hour rows each) whose EAi at 10:00 are `values`."""
    nodes = "".join(
        f'<n code="{code}" num="{index}" dev="m230"><m230><hour>'
        + "".join(
            f'<sys num="{sys}"><r><nodata>false</nodata><dat>2026-11-01T{hour:02d}:00:00</dat>'
            f"<EAi>{values[code] if hour == 10 else index}</EAi><U_A>230</U_A></r></sys>"
            for sys in (1, 2)
            for hour in (9, 10)
        )
        + "</hour></m230></n>"
        for index, code in enumerate(values, 1)
    )
    return f"<d><nodes>{nodes}</nodes></d>".encode()


def test_a_node_whose_part_is_the_same_is_not_read_again() -> None:
    """Given the last answer's parts, a node with the very bytes of last time keeps its rows (the same objects,
    not read); one that changed is read; every row equals a fresh parse's, in document order."""
    values = {"A": "1.5", "B": "2.5", "C": "3.5"}
    first = parse_export_answer(_answer_of(values), MOSCOW, known={})
    assert first.read == first.rows
    assert len(first.rows) == 12
    assert set(first.by_node) == {("A", "1", "m230"), ("B", "2", "m230"), ("C", "3", "m230")}
    same = parse_export_answer(_answer_of(values), MOSCOW, known=first.by_node)
    assert same.read == []
    assert all(new is old for new, old in zip(same.rows, first.rows, strict=True))
    values["B"] = "2.75"
    changed = parse_export_answer(_answer_of(values), MOSCOW, known=same.by_node)
    assert {row.node_code for row in changed.read} == {"B"}
    assert len(changed.read) == 4
    assert changed.rows == parse_export_answer(_answer_of(values), MOSCOW).rows
    assert [row.node_code for row in changed.rows] == ["A"] * 4 + ["B"] * 4 + ["C"] * 4
    assert all(new is old for new, old in zip(changed.rows, first.rows, strict=True) if new.node_code != "B")
    fewer = parse_export_answer(_answer_of({"C": "3.5", "A": "1.5"}), MOSCOW, known=changed.by_node)
    assert {row.node_code for row in fewer.read} == {"A", "C"}  # their num moved with their place: new parts
    assert set(fewer.by_node) == {("C", "1", "m230"), ("A", "2", "m230")}
    assert parse_export_answer(_answer_of(values), MOSCOW).by_node == {}  # without `known`, nothing is kept


# --- refusals: the spec defines no error document -------------------------------------------


@pytest.mark.parametrize(
    ("body", "status", "expected"),
    [
        (b"<result><status>error</status><message>bad period</message></result>", 400, Refusal(None, "bad period")),
        (b"<result><status>error</status><code>5</code><message>m</message></result>", 200, Refusal("5", "m")),
        (b'<result status="failed" code="5" message="m"/>', 500, Refusal("5", "m")),
        (b"<error><code>E1</code><message>\xd0\x9d\xd0\xb5\xd1\x82</message></error>", 403, Refusal("E1", "Нет")),
        (b'<error code="7" msg="no rights"/>', 400, Refusal("7", "no rights")),
        (b"<error>Session expired</error>", 200, Refusal(None, "Session expired")),
        (b'<errors><error code="1">a</error><error code="2">b</error></errors>', 400, Refusal("1", "a; b")),
        (b'<result><error code="9">late</error></result>', 200, Refusal("9", "late")),
        (b"<d><error><code>3</code><description>no node</description></error></d>", 200, Refusal("3", "no node")),
        (b'<x:error xmlns:x="urn:k"><x:code>4</x:code><x:message>ns</x:message></x:error>', 400, Refusal("4", "ns")),
        (b"<result><status>error</status><error>plain</error></result>", 400, Refusal(None, "plain")),
        ("Ошибка 17: нет прав".encode(), 200, Refusal("17", "нет прав")),
        ("Ошибка: нет прав".encode("cp1251"), 400, Refusal(None, "нет прав")),
        (b"Error #E-5 - too long a period", 500, Refusal("E-5", "too long a period")),
        (b"Period is too long", 400, Refusal(None, "Period is too long")),
        (b"Database is down", 503, Refusal(None, "Database is down")),
    ],
)
def test_refusal_shapes(body: bytes, status: int, expected: Refusal) -> None:
    """Elements or attributes, several roots, namespaces, plain text in UTF-8 or windows-1251."""
    assert find_refusal(body, status, "application/xml") == expected


@pytest.mark.parametrize(
    ("body", "status", "content_type"),
    [
        (b"", 500, ""),
        (b"OK", 200, "text/plain"),
        (b"Errors: 0", 200, "text/plain"),
        (b"Internal Server Error", 500, "text/plain"),
        (b"500 Internal Server Error", 500, "text/plain"),
        (b"Forbidden", 403, "text/plain"),
        (b"<result><status>ok</status><imported>1</imported></result>", 200, "application/xml"),
        (b"<d><nodes/></d>", 200, "application/xml"),
        (b"<html><body>Error: login</body></html>", 500, "text/plain"),
        (b"Error: a page", 500, "text/html; charset=utf-8"),
        (b"<error><code>1</code>", 400, "application/xml"),  # malformed: not read, never raised
        (b'<!DOCTYPE error [<!ENTITY x SYSTEM "file:///etc/passwd">]><error>&x;</error>', 400, ""),
        (b"<error>" + b"x" * 70_000 + b"</error>", 400, ""),  # too big to be a refusal
    ],
)
def test_not_refusals(body: bytes, status: int, content_type: str) -> None:
    """Success, a bare reason phrase, an HTML page, unsafe or malformed XML: not taken for the server's words."""
    assert find_refusal(body, status, content_type) is None


# --- export request ----------------------------------------------------------------------


def test_export_request_matches_spec_sample() -> None:
    """Element for element the 5.2.1 sample, read back through the safe parser."""
    data = export_request(
        begin=datetime(2021, 8, 2, tzinfo=UTC),
        end=datetime(2021, 8, 2, tzinfo=UTC),
        archives=["hour", "day"],
        systems=[1, 2],
        nodes=[("Pol_276", "34781353", "m234")],
        login="example",
        password="example",
    )
    assert data.startswith(b'<?xml version="1.0" encoding="UTF-8"?>\n<d>')
    assert shape(parse(data)) == shape(parse(SAMPLE_EXPORT_REQUEST))


def test_export_request_variants() -> None:
    """Offsets kept, seconds precision, duplicates once, pairs in order, no credentials, all nodes."""
    msk = timezone(timedelta(hours=3))
    root = parse(
        export_request(
            begin=datetime(2024, 1, 1, 0, 0, 0, 999999, tzinfo=msk),
            end=datetime(2024, 1, 31, 23, 59, 59, tzinfo=MOSCOW),
            archives=["day", "day", "total"],
            systems=[3, 1, 3],
            nodes=[("A & B", "1", "m234"), ("Котельная", "2", "tv7")],
        )
    )
    cfg = root.find("cfg")
    assert cfg is not None
    assert [child.tag for child in cfg] == ["timestamp_begin", "timestamp_end", "archives", "systems"]
    assert cfg.findtext("timestamp_begin") == "2024-01-01T00:00:00+03:00"
    assert cfg.findtext("timestamp_end") == "2024-01-31T23:59:59+03:00"
    assert [arch.get("type") for arch in cfg.iterfind("archives/arch")] == ["day", "total"]
    assert [sys.get("num") for sys in cfg.iterfind("systems/sys")] == ["3", "1"]
    nodes = root.find("nodes")
    assert nodes is not None
    assert [(child.tag, child.get("num"), child.text) for child in nodes] == [
        ("dev", "1", "m234"),
        ("node", None, "A & B"),
        ("dev", "2", "tv7"),
        ("node", None, "Котельная"),
    ]
    everything = parse(
        export_request(
            begin=datetime(2024, 1, 1, tzinfo=UTC),
            end=datetime(2024, 1, 1, tzinfo=UTC),
            archives=["day"],
            systems=[1],
            nodes=[],
        )
    )
    assert len(everything.find("nodes")) == 0  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"begin": datetime(2024, 1, 1)}, "time zone"),
        ({"end": datetime(2024, 1, 1)}, "time zone"),
        ({"begin": datetime(2024, 2, 1, tzinfo=UTC)}, "after"),
        ({"archives": []}, "archives"),
        ({"archives": ["day", "week"]}, "archives"),
        ({"systems": []}, "systems"),
        ({"systems": [True]}, "systems"),
        ({"systems": [-1]}, "systems"),
        ({"nodes": [("A", "", "m234")]}, "node"),
        ({"nodes": [("A", "1")]}, "node"),
        ({"login": "u"}, "together"),
        ({"password": "p"}, "together"),
        ({"login": "u\x01", "password": "p"}, "XML"),
        ({"nodes": [("A\x00", "1", "m234")]}, "XML"),
    ],
)
def test_export_request_refuses_bad_input(overrides: Mapping[str, Any], message: str) -> None:
    """Nothing half-built goes out: every bad argument is an InvalidRequestError."""
    arguments: dict[str, Any] = {
        "begin": datetime(2024, 1, 1, tzinfo=UTC),
        "end": datetime(2024, 1, 2, tzinfo=UTC),
        "archives": ["day"],
        "systems": [1],
        "nodes": [("A", "1", "m234")],
    } | dict(overrides)
    with pytest.raises(InvalidRequestError, match=message) as err:
        export_request(**arguments)
    assert err.value.request_sent is False


# --- import document -----------------------------------------------------------------------


def row(**overrides: Any) -> ArchiveRow:
    """An hourly m234 row; fields overridable."""
    fields: dict[str, Any] = {
        "node_code": "Pol_276",
        "serial": "34781353",
        "devtype": "m234",
        "archive": "hour",
        "system": 1,
        "time": datetime(2021, 8, 2, 0, tzinfo=MOSCOW),
        "values": {"EAi": Decimal("8870.448")},
    } | overrides
    return ArchiveRow(**fields)


def test_import_document_of_the_sample_round_trips() -> None:
    """The sample's rows rebuilt as an import document read back identically; cfg as in 5.1.1."""
    rows = parse_export(SAMPLE_IMPORT, MOSCOW)
    data = import_document(rows, login="example", password="example")
    assert parse_export(data, MOSCOW) == rows
    root = parse(data)
    cfg = root.find("cfg")
    assert cfg is not None
    assert [child.tag for child in cfg] == [
        "login",
        "password",
        "timestamp_begin",
        "timestamp_end",
        "archives",
        "systems",
    ]
    assert cfg.findtext("timestamp_begin") == "2021-08-02T00:00:00+03:00"
    record = root.find("nodes/n/m234/day/sys/r")
    assert record is not None
    assert record.findtext("nodata") == "false"
    assert record.findtext("dat") == "2021-08-02T00:00:00"
    assert record.findtext("EAi") == "8870.448"


def test_import_document_formats_exactly_and_groups() -> None:
    """Decimals in positional notation with every digit; grouping by node, archive, system; DST kept."""
    rows = [
        row(values={"EAi": Decimal("1E+3"), "EAo": Decimal("0.0000001"), "ERi": Decimal("8870.4480")}),
        row(node_code="B", serial="2", devtype="ce303", archive="day", system=5, values={"EAi": Decimal(-1)}),
        row(time=datetime(2021, 8, 2, 1, tzinfo=MOSCOW), values={"EAi": Decimal(2)}),
        row(system=2, values={"EAi": Decimal(3)}),
        row(
            node_code="DST",
            time=datetime(2021, 10, 31, 2, tzinfo=BERLIN),
            values={"EAi": Decimal(4)},
        ),
        row(
            node_code="DST",
            time=datetime(2021, 10, 31, 2, fold=1, tzinfo=BERLIN),
            values={"EAi": Decimal(5)},
        ),
    ]
    data = import_document(rows)
    root = parse(data)
    assert root.find("cfg/login") is None
    assert [arch.get("type") for arch in root.iterfind("cfg/archives/arch")] == ["hour", "day"]
    assert [sys.get("num") for sys in root.iterfind("cfg/systems/sys")] == ["1", "5", "2"]
    # Earliest and latest instants, each with its own offset.
    assert root.findtext("cfg/timestamp_begin") == "2021-08-02T00:00:00+03:00"
    assert root.findtext("cfg/timestamp_end") == "2021-10-31T02:00:00+01:00"
    first = root.find("nodes/n/m234/hour/sys/r")
    assert first is not None
    assert [(child.tag, child.text) for child in first] == [
        ("nodata", "false"),
        ("dat", "2021-08-02T00:00:00"),
        ("EAi", "1000"),
        ("EAo", "0.0000001"),
        ("ERi", "8870.4480"),
    ]
    assert [(n.get("code"), n.get("num"), n.get("dev")) for n in root.iterfind("nodes/n")] == [
        ("Pol_276", "34781353", "m234"),
        ("B", "2", "ce303"),
        ("DST", "34781353", "m234"),
    ]
    assert [sys.get("num") for sys in root.iterfind("nodes/n/m234/hour/sys")] == ["1", "2", "1"]
    back = parse_export(data, BERLIN)
    by_value = {next(iter(r.values.values())): r.time.astimezone(UTC) for r in back}
    assert by_value[Decimal(4)] == datetime(2021, 10, 31, 0, tzinfo=UTC)
    assert by_value[Decimal(5)] == datetime(2021, 10, 31, 1, tzinfo=UTC)
    assert by_value[Decimal("1E+3")] == datetime(2021, 8, 2, 0, tzinfo=BERLIN).astimezone(UTC)


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([], "nothing"),
        ([row(time=datetime(2024, 1, 1))], "time zone"),
        ([row(archive="week")], "archive"),
        ([row(devtype="m 234")], "device type"),
        ([row(values={"E Ai": Decimal(1)})], "parameter"),
        ([row(values={"<x>": Decimal(1)})], "parameter"),
        ([row(values={"EAi": Decimal("NaN")})], "finite"),
        ([row(values={"EAi": 1.5})], "finite"),
        ([row(node_code="bad\x01")], "XML"),
    ],
)
def test_import_document_refuses_bad_rows(rows: list[ArchiveRow], message: str) -> None:
    """Rows that cannot be written faithfully are refused, not mangled."""
    with pytest.raises(InvalidRequestError, match=message):
        import_document(rows)


def test_import_document_credentials_go_together() -> None:
    """A login without a password is a mistake."""
    with pytest.raises(InvalidRequestError, match="together"):
        import_document([row()], login="example")


# --- parameter table and tariff semantics --------------------------------------------------


def test_every_sample_parameter_is_described() -> None:
    """5.1.1's parameters, and the heat, gas and pulse names the integration relies on."""
    for name in [*SAMPLE_PARAMS, "Q", "M1", "M2", "V1", "V2", "T1", "T2", "T3", "P1", "P2", "Tnar"]:
        assert describe(name) is not None, name
    for name in ("Vs", "Vw", "P", "T", "C"):
        assert describe(name) is not None, name
    assert describe("unknown") is None
    assert describe("eai") is None
    assert describe("") is None


def test_descriptions() -> None:
    """Spot checks that would catch a swapped unit or class."""
    eai, eri, u_a, cos_s, f_ab, q, p1, gas_p, vs, vw, pulses = (
        describe(name) for name in ("EAi", "ERi", "U_A", "COS_S", "F_AB", "Q", "P1", "P", "Vs", "Vw", "C")
    )
    assert eai is not None
    assert (eai.unit, eai.device_class, eai.state_class, eai.cumulative) == ("kWh", "energy", "total_increasing", True)
    assert eri is not None
    assert (eri.unit, eri.device_class) == ("kvarh", "reactive_energy")
    assert u_a is not None
    assert (u_a.unit, u_a.device_class, u_a.state_class, u_a.cumulative) == ("V", "voltage", "measurement", False)
    assert cos_s is not None
    assert (cos_s.unit, cos_s.device_class) == (None, "power_factor")
    assert f_ab is not None
    assert (f_ab.unit, f_ab.device_class) == ("°", None)
    assert q is not None
    assert (q.unit, q.device_class, q.cumulative) == ("Gcal", "energy", True)
    assert p1 is not None
    assert (p1.unit, p1.device_class) == ("MPa", None)
    assert gas_p is not None
    assert (gas_p.unit, gas_p.device_class) == ("kPa", "pressure")
    assert vs is not None
    assert (vs.unit, vs.device_class) == ("m³", "gas")
    assert vw is not None
    assert (vw.unit, vw.device_class) == ("m³", "volume")
    assert pulses is not None
    assert pulses.cumulative


def test_table_is_consistent_with_home_assistant() -> None:
    """Each unit is one HA accepts for the device class, and each state class suits it (HA installed here)."""
    from homeassistant.components.sensor import (
        DEVICE_CLASS_STATE_CLASSES,
        DEVICE_CLASS_UNITS,
        SensorDeviceClass,
        SensorStateClass,
    )

    known = {str(device_class) for device_class in SensorDeviceClass}
    missing = set()
    for name, info in PARAMS.items():
        assert info.name == name
        assert info.label
        assert info.cumulative == (info.state_class == "total_increasing"), name
        state_class = SensorStateClass(info.state_class)
        if info.device_class is None:
            continue
        if info.device_class not in known:
            missing.add(info.device_class)
            continue
        device_class = SensorDeviceClass(info.device_class)
        assert info.unit in DEVICE_CLASS_UNITS[device_class], name
        if device_class in DEVICE_CLASS_STATE_CLASSES:
            assert state_class in DEVICE_CLASS_STATE_CLASSES[device_class], name
    # Only the reactive energy class is newer than the oldest Home Assistant supported.
    assert missing <= {"reactive_energy"}


def test_tariff_semantics_of_the_glossary() -> None:
    """CE303: 1 is the sum of 2-5. Mercury 230 ART: 6 is the sum of 1-4, 5 is technical losses."""
    assert is_sum_system("ce303", 1)
    assert is_sum_system("CE303", 1)
    assert sum_components("ce303", 1) == (2, 3, 4, 5)
    assert not any(is_sum_system("ce303", system) for system in (2, 3, 4, 5, 6))
    assert not any(is_losses_system("ce303", system) for system in range(7))
    assert is_sum_system("m230", 6)
    assert sum_components("m230", 6) == (1, 2, 3, 4)
    assert not any(is_sum_system("m230", system) for system in (1, 2, 3, 4, 5))
    assert is_losses_system("m230", 5)
    assert is_losses_system("M230", 5)
    assert not any(is_losses_system("m230", system) for system in (1, 2, 3, 4, 6))
    # The glossary says nothing of others: their systems are plain tariffs.
    assert not is_sum_system("m234", 1)
    assert not is_losses_system("m234", 5)
    assert sum_components("tv7", 1) == ()
