"""The shared pieces of the client layer: converters, signing, HTTP statuses, the base interface."""

from __future__ import annotations

import base64
import math
from collections.abc import Mapping
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp
import pytest
from aiohttp import web

from custom_components.meter_cloud.api import (
    AuthenticationError,
    Capability,
    CloudConnectionError,
    CommandKind,
    CommandRef,
    ConfigurationError,
    CustomerInfo,
    MeterClient,
    MeterData,
    MeterReplacement,
    PriceSchedule,
    ResponseError,
    UnsupportedError,
    signing,
)
from custom_components.meter_cloud.api import http as api_http
from custom_components.meter_cloud.api.parse import (
    DATETIME_FORMATS,
    as_date,
    as_datetime,
    as_decimal,
    as_int,
    as_str,
    compact_time,
    lower_keys,
    money,
)

TZ = ZoneInfo("Asia/Shanghai")


def test_converters() -> None:
    """Numbers as strings, blanks, percentages, junk: never an exception, None when unknown."""
    assert as_str({"a": 1}) is None
    assert as_str("  ") is None
    assert as_str(12) == "12"
    assert as_decimal(True) is None
    assert as_decimal(0.1) == Decimal("0.1")
    assert as_decimal("59.0%") == Decimal("59.0")
    assert as_decimal("abc") is None
    assert as_decimal("NaN") is None
    assert as_decimal("") is None
    assert as_int("3") == 3
    assert as_int("3.5") is None
    assert as_datetime("2019-12-23 17:13:24", TZ) == datetime(2019, 12, 23, 17, 13, 24, tzinfo=TZ)
    assert as_datetime("20200227111615", TZ) == datetime(2020, 2, 27, 11, 16, 15, tzinfo=TZ)
    assert as_datetime("yesterday", TZ) is None
    assert as_datetime(None, TZ) is None
    assert as_date("2020-01-11") == date(2020, 1, 11)
    assert as_date("20200111") == date(2020, 1, 11)
    assert as_date("11/01/2020") is None
    assert as_date("") is None
    assert money(Decimal("100.005"), 2) == "100.01"
    assert money(Decimal(2), 4) == "2.0000"


@pytest.mark.parametrize(
    "value",
    [
        0,
        7,
        -83,
        10**30,
        2.5,
        0.1,
        -0.0,
        1e-7,
        123456.789,
        1e30,
        float("inf"),
        float("nan"),
        Decimal("2.65"),
        Decimal("1E+3"),
        Decimal("NaN"),
        Decimal("-0.0005"),
    ],
    ids=repr,
)
@pytest.mark.parametrize("places", [None, 0, 3, 4])
def test_number_fast_paths_read_what_the_text_reads(value: Any, places: int | None) -> None:
    """JSON numbers (and Decimals) go straight to Decimal: the same value and exponent as through their text."""
    text = repr(value) if isinstance(value, float) else str(value)
    fast, slow = as_decimal(value, places), as_decimal(text, places)
    assert (fast, str(fast)) == (slow, str(slow))
    if isinstance(value, int):
        assert as_int(value) == as_int(text)
        assert as_int(value) == (value if abs(value) < 10**29 else None)  # beyond 1e28: unknown


def test_numbers_beyond_a_decimal_at_the_spec_precision_are_unknown() -> None:
    """1e27 m³ to 3 places needs more digits than a Decimal holds: unknown (None), never an exception in a poll."""
    assert as_decimal(1e27, 3) is None
    assert as_decimal("1e27", 3) is None
    assert as_decimal(10**27, 3) is None
    assert as_decimal(1e27) == Decimal("1E+27")
    assert as_decimal("123456789012345678901234.5", 3) == Decimal("123456789012345678901234.500")


@pytest.mark.timeout(10)
def test_numbers_beyond_any_meter_are_unknown_and_cheap() -> None:
    """1e999999 would take seconds of the event loop to become an int and cannot be shown: unknown, at once."""
    for value in ("1e999999", "-1e999999", "1e-999999", "1e29", 10**40, 1e300, "1e99999999"):
        assert as_decimal(value) is None
        assert as_int(value) is None
    assert as_decimal("1e28") == Decimal("1e28")
    assert as_decimal("1e-28") == Decimal("1e-28")
    assert as_int("1e18") == 10**18
    assert as_decimal("0e-1000") == 0


@pytest.mark.parametrize(
    "text", ["0001-01-01T00:00:00", "0001-01-01 00:00:00", "00010101000000", "9999-12-31 23:59:59", "1899-12-31"]
)
def test_times_outside_any_meter_are_unknown(text: str) -> None:
    """.NET's unset DateTime (0001-01-01T00:00:00) and the like are no time: year 1 in UTC+8 cannot even be moved to
    UTC, which Home Assistant's timestamp sensors and every comparison with another zone do."""
    with pytest.raises(OverflowError):
        datetime(1, 1, 1, tzinfo=TZ).astimezone(UTC)
    assert as_datetime(text, TZ) is None
    assert as_date(text[:10]) is None


def test_times_of_old_and_far_years_within_range_are_read() -> None:
    """1900 to 9998 are read as they are."""
    assert as_datetime("1900-01-01 00:00:00", TZ) == datetime(1900, 1, 1, tzinfo=TZ)
    assert as_datetime("99981231235959", TZ) == datetime(9998, 12, 31, 23, 59, 59, tzinfo=TZ)
    assert as_date("1900-01-01") == date(1900, 1, 1)


def test_lower_keys_plain_and_mixed_spellings() -> None:
    """Keys stripped and in lower case, whether the set of keys was seen before or not; always a copy."""
    plain = {"meter_comm_no": "1", "std_sum": 2.5}
    for _ in range(2):  # the second time from the remembered verdict
        copy = lower_keys(plain)
        assert copy == plain
        assert copy is not plain
    mixed = {" ReturnCode ": 0, "Totalcount": 3, "data": []}
    for _ in range(2):
        assert lower_keys(mixed) == {"returncode": 0, "totalcount": 3, "data": []}
    assert lower_keys({1: "a"}) == {"1": "a"}


def _strptime_reading(text: str) -> datetime | None:
    """What as_datetime read before its fast paths: the formats in order, through strptime."""
    for fmt in DATETIME_FORMATS:
        try:
            return datetime.strptime(text.strip(), fmt).replace(tzinfo=TZ)
        except ValueError:
            continue
    return None


@pytest.mark.parametrize(
    "text",
    [
        "20200227111615",
        "20241231235959",
        "20240229000000",  # a leap day
        "20230229000000",  # no such day
        "20261305100000",  # no month 13
        "20261205240000",  # no hour 24
        "20261205106000",  # no minute 60
        "20261205100060",  # no second 60
        "2026120510000",  # 13 digits
        "２０２６１２０５１０００００",  # full-width digits: str.isdigit says yes, the fast path says no
        " 20200227111615 ",
        "2019-12-23 17:13:24",
        "2019-12-23T17:13:24",
        "2019-12-32 17:13:24",
        "2026-12-05",
    ],
)
def test_datetime_fast_paths_read_what_strptime_reads(text: str) -> None:
    """The 14-digit and ISO fast paths give strptime's answer or leave the text to it, never another answer."""
    expected = _strptime_reading(text)
    if expected is not None:
        assert as_datetime(text, TZ) == expected
    fast = compact_time(text.strip(), TZ)
    assert fast == (expected if len(text.strip()) == 14 and text.strip().isascii() and text.strip().isdigit() else None)


def test_signing_matches_the_spec_sample_shape() -> None:
    """AccessToken is upper-case MD5 hex; Authorization is Base64(appCode:time); verify catches each fault."""
    now = datetime(2019, 11, 27, 2, 0, 56, tzinfo=UTC)
    stamp = signing.timestamp(now, TZ)
    assert stamp == "20191127100056"
    headers = signing.sign("00000072", "secret", stamp)
    assert base64.b64decode(headers["Authorization"]).decode() == "00000072:20191127100056"
    assert headers["AccessToken"] == headers["AccessToken"].upper()
    assert len(headers["AccessToken"]) == 32
    window = timedelta(minutes=5)

    def check(h: Mapping[str, str]) -> str | None:
        return signing.verify(h, "00000072", "secret", now=now, tz=TZ, window=window)

    assert check(headers) is None
    assert check({**headers, "AccessToken": headers["AccessToken"].lower()}) is None
    assert check({**headers, "Authorization": "%%%"}) == "malformed_authorization"
    assert check({**headers, "Authorization": base64.b64encode(b"00000072:notatime").decode()}) == (
        "malformed_timestamp"
    )
    assert check({**headers, "Authorization": base64.b64encode(b"no-colon").decode()}) == "unknown_sender"
    assert check({}) == "unknown_sender"


async def _serve(aiohttp_server: Any, status: int, body: bytes) -> str:
    async def handler(request: web.Request) -> web.Response:
        return web.Response(status=status, body=body)

    app = web.Application()
    app.router.add_post("/x", handler)
    server = await aiohttp_server(app, host="127.0.0.1")
    return str(server.make_url("/x"))


@pytest.mark.parametrize(
    ("status", "body", "error"),
    [
        (401, b"{}", AuthenticationError),
        (403, b"{}", AuthenticationError),
        (429, b"{}", CloudConnectionError),
        (404, b"{}", ResponseError),
        (200, b"\xff\xfe not json", ResponseError),
    ],
)
async def test_http_status_table(
    socket_enabled: None, aiohttp_server: Any, status: int, body: bytes, error: type[Exception]
) -> None:
    """Each status maps to one error class."""
    url = await _serve(aiohttp_server, status, body)
    async with aiohttp.ClientSession() as session:
        with pytest.raises(error):
            api_http.decode_json(await api_http.post_bytes(session, url, api_http.json_body({}), headers={}))


async def test_http_body_bound(socket_enabled: None, aiohttp_server: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """A body over the bound is refused, not read into memory without end."""
    monkeypatch.setattr(api_http, "MAX_RESPONSE_BYTES", 1000)
    url = await _serve(aiohttp_server, 200, b"[" + b"1," * 2000 + b"1]")
    async with aiohttp.ClientSession() as session:
        with pytest.raises(ResponseError, match="larger"):
            api_http.decode_json(await api_http.post_bytes(session, url, api_http.json_body({}), headers={}))


class _ReadOnly(MeterClient):
    """A backend that can only read: every other capability must say 'not supported'."""

    backend = "readonly"

    @classmethod
    def unique_id(cls, config: Mapping[str, Any]) -> str:
        return "readonly"

    @classmethod
    def title(cls, config: Mapping[str, Any]) -> str:
        return "Read only"

    async def async_validate(self) -> None:
        return None

    async def async_get_meters(self) -> dict[str, MeterData]:
        return {}


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            b'{"id": 12345678901234567890123, "n": -98765432109876543210}',
            {"id": 12345678901234567890123, "n": -98765432109876543210},
        ),
        (b"[18446744073709551616]", [18446744073709551616]),
        (
            b'{"deviceId": "0c5f1c3bd4059218014569427071", "v": "123.4500"}',
            {"deviceId": "0c5f1c3bd4059218014569427071", "v": "123.4500"},
        ),
        (b'\xef\xbb\xbf{"ReturnCode": "0"}', {"ReturnCode": "0"}),
        (b'{"a": "\\ud800", "b": 1.10}', {"a": "\ud800", "b": 1.1}),
        ('{"名": "值"}'.encode(), {"名": "值"}),
    ],
)
def test_decode_json_reads_what_python_reads(body: bytes, expected: Any) -> None:
    """orjson where it is exact; integers beyond 64 bits (bare, not inside strings), a BOM, lone surrogates and
    NaN read exactly as Python's json reads them."""
    decoded = api_http.decode_json(body)
    assert decoded == expected
    assert [type(v) for v in (decoded.values() if isinstance(decoded, dict) else decoded)] == [
        type(v) for v in (expected.values() if isinstance(expected, dict) else expected)
    ]
    assert math.isnan(api_http.decode_json(b'{"a": NaN}')["a"])


@pytest.mark.parametrize("body", [b"{", b"\xff\xfe{}", b"", b'{"a": 1,}'])
def test_decode_json_refuses_junk(body: bytes) -> None:
    """Junk is a ResponseError, whichever parser saw it."""
    with pytest.raises(ResponseError, match="not valid JSON"):
        api_http.decode_json(body)


async def test_base_declines_what_a_backend_lacks() -> None:
    """Default methods raise UnsupportedError, named by capability."""
    async with aiohttp.ClientSession() as session:
        client = _ReadOnly(session, {}, tz=TZ)
    meter = MeterData(meter_id="1")
    assert not client.supports(Capability.VALVE)
    assert len(client.new_serial()) == 32
    calls = [
        client.async_get_details(meter),
        client.async_set_valve(meter, True, "s"),
        client.async_recharge(meter, Decimal(1), "r", serial="s", when=datetime.now(UTC)),
        client.async_cancel_command(meter, CommandRef("s", CommandKind.RECHARGE)),
        client.async_adjust_balance(meter, Decimal(1), "r", credit=True, serial="s", when=datetime.now(UTC)),
        client.async_suspend_meter(meter, True),
        client.async_modify_customer(meter, CustomerInfo()),
        client.async_set_price([meter], PriceSchedule(prices=(Decimal(1),))),
        client.async_daily_usage(meter, date.today(), date.today()),
        client.async_register_meter(None),  # type: ignore[arg-type]
        client.async_deregister_meter(meter, Decimal(0), "x"),
        client.async_replace_meter(meter, MeterReplacement("2", "1", Decimal(0))),
    ]
    for call in calls:
        with pytest.raises(UnsupportedError):
            await call
    with pytest.raises(UnsupportedError):
        client.recharge_serial("r")
    with pytest.raises(UnsupportedError):
        client.meter_list()
    with pytest.raises(UnsupportedError):
        client.parse_push("p", {}, b"", datetime.now(UTC))


def test_retail_mac_standard_vector() -> None:
    """ANSI X9.19 with zero padding gives the published value; padding method 2 differs, as it must."""
    from custom_components.meter_cloud.api.envelope import Envelope, retail_mac

    key = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")
    data = b"Now is the time for all "
    assert retail_mac(key[:8], key[8:], data, zero_padding=True).hex().upper() == "A1C72E74EA3FA9B6"
    assert retail_mac(key[:8], key[8:], data).hex().upper() != "A1C72E74EA3FA9B6"
    envelope = Envelope.from_config(key.hex(), "cbc", "pkcs7", "x919_zero", "base64")
    assert envelope.open(envelope.seal(b'{"a": 1}')) == b'{"a": 1}'
    with pytest.raises(ConfigurationError, match="unknown mode"):
        Envelope.from_config(key.hex(), "ofb", "pkcs7", "x919", "base64")


async def test_unchanged_answer_reads_only_the_rows_that_differ() -> None:
    """Rows compared with the last answer's position by position: only those that differ are read; a row the same
    as its meter's last one, wherever it now stands, gives back that very object; a later row of a meter wins."""
    async with aiohttp.ClientSession() as session:
        client = _ReadOnly(session, {}, tz=TZ)
    read: list[Any] = []
    built: list[str] = []

    def build(row: dict[str, Any]) -> MeterData:
        built.append(row["id"])
        return MeterData(meter_id=row["id"], reading=Decimal(row["v"]))

    def meter_of(row: Any) -> MeterData | None:
        read.append(row)
        return client.unchanged_or_built(row["id"], row, build) if isinstance(row, dict) else None

    def answer(*rows: Any) -> dict[str, MeterData]:
        read.clear()
        built.clear()
        # A fresh decode every time: equal rows, never the same objects.
        return client.unchanged_answer("k", [dict(row) if isinstance(row, dict) else row for row in rows], meter_of)

    a, b, c = {"id": "a", "v": "1"}, {"id": "b", "v": "2"}, {"id": "c", "v": "3"}
    first = answer(a, b, "junk", c)
    assert list(first) == ["a", "b", "c"]
    assert len(read) == 4
    assert built == ["a", "b", "c"]
    same = answer(a, b, "junk", c)
    assert read == []
    assert all(same[key] is first[key] for key in first)
    b2 = {"id": "b", "v": "2.5"}
    changed = answer(a, b2, "junk", c)
    assert read == [b2]
    assert built == ["b"]
    assert changed["b"].reading == Decimal("2.5")
    assert changed["a"] is first["a"]
    assert changed["c"] is first["c"]
    moved = answer(c, a, b2)  # every place differs; every row is its meter's last
    assert len(read) == 3
    assert built == []
    assert all(moved[key] is changed[key] for key in ("a", "b", "c"))
    longer = answer(c, a, b2, {"id": "d", "v": "4"}, {"id": "a", "v": "9"})
    assert [row["id"] for row in read] == ["d", "a"]
    assert longer["a"].reading == Decimal(9)  # the later row of the meter
    assert longer["d"].reading == Decimal(4)
    shorter = answer(c)
    assert read == []
    assert shorter == {"c": changed["c"]}
