"""Tolerant converters for vendor fields: numbers as strings, empty strings, odd formats."""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import date, datetime, tzinfo
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

_ISO = re.compile(
    r"(?P<date>\d{4}-\d{2}-\d{2})[T ](?P<time>\d{2}:\d{2}(?::\d{2})?)"
    r"(?:[.,](?P<fraction>\d+))?\s*(?P<zone>Z|z|[+-]\d{2}(?::?\d{2})?)?"
)
# The largest power of ten a meter's number may reach, either way (as_decimal): 1e28 of anything is no reading, and a
# number like 1e999999 would cost seconds of CPU to turn into an int and cannot be shown.
MAGNITUDE_LIMIT = 28
_INT_LIMIT = 10 ** (MAGNITUDE_LIMIT + 1)
# Decimal places → the quantum for them (as_decimal).
_STEPS = {places: Decimal(1).scaleb(-places) for places in range(9)}
# The years a meter's time can fall in. Outside them a time is a platform's "none" (.NET writes 0001-01-01T00:00:00
# for an unset DateTime) or junk, and year 1 or 9999 cannot even be moved to UTC (OverflowError in every comparison
# with another zone and in Home Assistant's timestamp sensors).
YEARS = range(1900, 9999)
# Key tuples of vendor objects, and whether every key is already stripped lower case (lower_keys); bounded.
_PLAIN_KEYS: dict[tuple[Any, ...], bool] = {}
_PLAIN_KEYS_MAX = 256
DATETIME_FORMATS = ("%Y-%m-%d %H:%M:%S", "%Y%m%d%H%M%S", "%Y-%m-%dT%H:%M:%S", "%Y%m%d%H%M", "%Y-%m-%d", "%Y%m%d")


def as_str(value: Any) -> str | None:
    """A stripped string, or None for null/empty."""
    if value is None or isinstance(value, (dict, list)):
        return None
    text = str(value).strip()
    return text or None


def lower_keys(obj: Mapping[str, Any]) -> dict[str, Any]:
    """A copy with every key stripped and in lower case: the vendors' documents and samples disagree (" ReturnCode ",
    "returnCode"; "Totalcount" / "totalcount").

    A platform's rows repeat the same keys: whether a set of keys is already plain is remembered, so a usual row is
    a copy made in C rather than a string operation per key.
    """
    keys = tuple(obj)
    plain = _PLAIN_KEYS.get(keys)
    if plain is None:
        plain = all(type(key) is str and key == key.strip().lower() for key in keys)
        if len(_PLAIN_KEYS) < _PLAIN_KEYS_MAX:
            _PLAIN_KEYS[keys] = plain
    if plain:
        return dict(obj)
    return {str(key).strip().lower(): value for key, value in obj.items()}


def is_reading(number: Decimal) -> bool:
    """Whether a number can be a meter's: finite, and zero or within MAGNITUDE_LIMIT powers of ten either way."""
    return number.is_finite() and (not number or -MAGNITUDE_LIMIT <= number.adjusted() <= MAGNITUDE_LIMIT)


def as_decimal(value: Any, places: int | None = None) -> Decimal | None:
    """A Decimal from a number or numeric string ("59.0%" → 59.0); None when absent, not numeric or beyond
    MAGNITUDE_LIMIT.

    With `places`, the value is given the spec's precision, so 2.5 and "2.5000" read the same.
    """
    kind = type(value)
    # The usual JSON numbers straight to Decimal (what their text would give); anything else through the text.
    if kind is int:
        number = Decimal(value)
    elif kind is float:
        number = Decimal(repr(value))
    elif kind is Decimal:
        number = value
    else:
        if kind is bool:
            return None
        if isinstance(value, float):
            value = repr(value)
        text = as_str(value)
        if text is None:
            return None
        try:
            number = Decimal(text.removesuffix("%").strip())
        except InvalidOperation:
            return None
    if not is_reading(number):
        return None
    if places is None:
        return number
    step = _STEPS.get(places) or Decimal(1).scaleb(-places)
    try:
        return number.quantize(step, rounding=ROUND_HALF_UP)
    except InvalidOperation:  # more digits than a Decimal holds at that precision (1e30 to 3 places): no reading
        return None


def as_int(value: Any) -> int | None:
    """An int from a number or numeric string."""
    if type(value) is int and -_INT_LIMIT < value < _INT_LIMIT:
        return value
    number = as_decimal(value)
    return None if number is None or number != number.to_integral_value() else int(number)


def as_datetime(value: Any, tz: tzinfo) -> datetime | None:
    """A zone-aware datetime from the vendor's wall-clock formats; None for a year outside YEARS."""
    moment = _as_datetime(value, tz)
    return moment if moment is None or moment.year in YEARS else None


def _as_datetime(value: Any, tz: tzinfo) -> datetime | None:
    text = as_str(value)
    if text is None:
        return None
    if len(text) == 14 and (moment := compact_time(text, tz)) is not None:
        return moment  # Goldcard's yyyyMMddHHmmss: what the second format reads, without strptime's cost
    if len(text) == 19 and text[10] in " T" and text[4] == text[7] == "-" and text[13] == text[16] == ":":
        # The usual "2026-12-05 10:07:51": what the first format reads, without strptime's cost (pushes, polls).
        try:
            return datetime.fromisoformat(text).replace(tzinfo=tz)
        except ValueError:
            pass
    for fmt in DATETIME_FORMATS:
        try:
            return datetime.strptime(text, fmt).replace(tzinfo=tz)
        except ValueError:
            continue
    return _iso(text, tz)


def compact_time(text: str, tz: tzinfo) -> datetime | None:
    """yyyyMMddHHmmss (14 ASCII digits) in `tz`, read as strptime("%Y%m%d%H%M%S") reads it but a few times faster;
    None for anything else, a time that does not exist included (strptime then decides, as before)."""
    if len(text) != 14 or not text.isascii() or not text.isdigit():
        return None
    try:
        return datetime(
            int(text[:4]), int(text[4:6]), int(text[6:8]), int(text[8:10]), int(text[10:12]), int(text[12:]), tzinfo=tz
        )
    except ValueError:
        return None


def _iso(text: str, tz: tzinfo) -> datetime | None:
    """ISO 8601 with fractions (.NET writes 7 digits), `Z` or an offset, `T` or a space between date and time."""
    match = _ISO.fullmatch(text)
    if match is None:
        return None
    fraction = (match["fraction"] or "")[:6].ljust(6, "0")
    zone = match["zone"] or ""
    if zone in ("Z", "z"):
        zone = "+00:00"
    elif zone and ":" not in zone:
        zone = f"{zone[:3]}:{zone[3:] or '00'}"
    try:
        clock = match["time"] if match["time"].count(":") == 2 else f"{match['time']}:00"
        parsed = datetime.fromisoformat(f"{match['date']}T{clock}.{fraction}{zone}")
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=tz)


def as_date(value: Any) -> date | None:
    """A date from yyyy-mm-dd or yyyymmdd; None for a year outside YEARS."""
    text = as_str(value)
    if text is None:
        return None
    for fmt in ("%Y-%m-%d", "%Y%m%d"):
        try:
            day = datetime.strptime(text, fmt).date()  # noqa: DTZ007
        except ValueError:
            continue
        return day if day.year in YEARS else None
    return None


def money(amount: Decimal, places: int) -> str:
    """Format an amount with exactly `places` decimals (half-up), as the wire wants it."""
    return str(amount.quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP))
