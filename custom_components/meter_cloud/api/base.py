"""The interface every backend implements, with its declared capabilities."""

from __future__ import annotations

import asyncio
import logging
import operator
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import date, datetime, timedelta, tzinfo
from decimal import Decimal
from itertools import compress
from typing import Any, ClassVar, cast

import aiohttp

from .errors import MeterCloudError, UnsupportedError
from .http import DEFAULT_TIMEOUT
from .models import (
    Alarm,
    AlarmType,
    Capability,
    ChargeCounters,
    CommandKind,
    CommandReceipt,
    CommandRef,
    CommandResult,
    ConfigField,
    CustomerInfo,
    DailySpend,
    DailyUsage,
    HistoryPoint,
    HistorySeries,
    ImportRecord,
    MeterData,
    MeterRegistration,
    MeterReplacement,
    PriceSchedule,
    PushResult,
    ValueInfo,
)
from .values import LayoutRow, ValueParam, ValueProblem

_LOGGER = logging.getLogger(__name__)

# Per-meter history requests in flight at once (backends without a batch history call).
HISTORY_CONCURRENCY = 4


def meters_by_id(meters: Iterable[MeterData | None]) -> dict[str, MeterData]:
    """Meters by id, None left out; a later one of the same meter wins (as a later row of an answer does)."""
    return {meter.meter_id: meter for meter in meters if meter is not None}


class MeterClient(ABC):
    """A vendor cloud: read meters, send commands, understand its pushes."""

    backend: ClassVar[str]
    # What this account can do; an instance may narrow it (e.g. by billing mode).
    capabilities: frozenset[Capability] = frozenset()
    alarm_types: ClassVar[tuple[AlarmType, ...]] = ()
    # Device events (a valve moved, a recharge taken) a backend reports apart from its alarms.
    event_types: ClassVar[tuple[AlarmType, ...]] = ()
    config_fields: ClassVar[tuple[ConfigField, ...]] = ()
    # Values the config-flow texts show by placeholder (addresses: hassfest refuses a URL inside a translation).
    form_placeholders: ClassVar[Mapping[str, str]] = {}
    # Paths the vendor appends to the push URL it is given.
    push_paths: ClassVar[tuple[str, ...]] = ()
    max_price_tiers: ClassVar[int] = 0
    # Decimal places of money amounts a recharge may carry.
    money_places: ClassVar[int] = 2
    # The vendor's time zone; None means Home Assistant's own (see timezone_for()).
    default_timezone: ClassVar[str | None] = "UTC"
    # Long-term statistics: how often they are imported and how far back each import re-reads.
    history_interval: ClassVar[timedelta] = timedelta(hours=6)
    history_lookback: ClassVar[timedelta] = timedelta(days=30)

    def __init__(self, session: aiohttp.ClientSession, config: Mapping[str, Any], *, tz: tzinfo) -> None:
        """Keep the shared session, the entry's settings and the vendor's time zone."""
        self._session = session
        self._config = dict(config)
        self._tz = tz
        self.request_timeout = DEFAULT_TIMEOUT
        # Requests sent so far, for the coordinator's per-poll figure and the benchmark.
        self.request_count = 0
        # The last bytes of each poll request's answer and what they decoded to (same_answer).
        self._raw_answers: dict[str, tuple[bytes, Any]] = {}
        # The last poll's raw rows of each answer, each row's meter and the meters by id (unchanged_answer).
        self._answers: dict[str, tuple[list[Any], list[MeterData | None], dict[str, MeterData]]] = {}
        # The last poll's raw row and MeterData of each meter (unchanged_or_built).
        self._rows: dict[str, tuple[Any, MeterData]] = {}
        # What the client keeps across restarts (attach_store); in memory only until the entry attaches one.
        self._store_state: dict[str, Any] = {}
        self._store_save: Callable[[], None] = lambda: None

    manufacturer: ClassVar[str] = ""
    currency: ClassVar[str] = "CNY"
    # MeterData fields this backend can fill (entities exist only for these); per instance too.
    fields: frozenset[str] = frozenset()
    # Recharges carry the meter's sequence number (and cumulative total): see async_charge_counters().
    uses_charge_counters: ClassVar[bool] = False
    # The cloud has account states its polls never return (Cangnan): the entry keeps what it learns of them.
    learns_account_state: ClassVar[bool] = False
    # Backends with no "all meters" call follow a list kept in the entry under this key.
    meter_list_key: ClassVar[str | None] = None

    # How far back the first import of a meter's statistics reaches.
    backfill: timedelta | None = None

    @classmethod
    def timezone_for(cls, config: Mapping[str, Any]) -> str | None:
        """The time zone the account's settings ask for (None: the default)."""
        return cls.default_timezone

    async def async_close(self) -> None:
        """End the session with the cloud, if the backend keeps one (on unload); never raises."""
        return

    def value_info(self, meter: MeterData, key: str) -> ValueInfo:
        """What a named value (MeterData.values) is; only backends that report values have any."""
        raise UnsupportedError("named values")

    # The user may describe the named values (parameter meanings, system layouts) in the entry's options.
    value_options: ClassVar[bool] = False

    def use_options(self, options: Mapping[str, Any]) -> None:
        """Read what the user said about the named values (entry options; see api/values.py)."""
        return

    def value_params(self) -> list[ValueParam]:
        """The named values' parameters seen so far, with what is known of each (value_options backends)."""
        return []

    def value_layouts(self) -> list[LayoutRow]:
        """Per device type: its systems, the layout in force and what the data showed (value_options backends)."""
        return []

    def value_problems(self) -> list[ValueProblem]:
        """Meters whose data contradict a declared layout (value_options backends)."""
        return []

    def attach_store(self, state: dict[str, Any], save: Callable[[], None]) -> None:
        """A dict kept across restarts for this client, and how to have it saved (after a change to it).

        For backends that must remember something of their own between runs (Goldcard: what it owes
        centre-billed meters in its next answer).
        """
        self._store_state, self._store_save = state, save

    def same_answer[T](self, key: str | None, raw: bytes, decode: Callable[[bytes], T], *, echo: str = "") -> T:
        """A poll answer decoded: what the last answer to the same request (`key`) decoded to when the bytes are
        the same (nothing parsed; `echo`, our own serial the cloud repeats, left out of the comparison), else
        `decode(raw)`. What comes back is shared with the next poll: callers read it, never change it."""
        if key is None:
            return decode(raw)
        compared = raw.replace(echo.encode(), b"") if echo else raw
        if (last := self._raw_answers.get(key)) is not None and last[0] == compared:
            return cast("T", last[1])
        value = decode(raw)
        self._raw_answers[key] = (compared, value)
        return value

    def unchanged_answer(
        self, key: str, rows: list[Any], meter_of: Callable[[Any], MeterData | None]
    ) -> dict[str, MeterData]:
        """A poll answer's meters by id, `meter_of` each row (a later row of the same meter wins; None: no meter).

        The rows are compared with the last answer's position by position, in C: when all are the same, the last
        answer's very MeterData objects come back; otherwise `meter_of` reads only the rows that differ (it hands
        back the last object of a meter whose row is the same but moved: unchanged_or_built), and a row at its
        place of last time keeps what it gave then. A poll that changed 100 of 1000 rows reads 100.
        """
        last = self._answers.get(key)
        if last is None:
            items = list(map(meter_of, rows))
        else:
            last_rows, last_items, last_meters = last
            if last_rows == rows:
                return dict(last_meters)
            same = list(map(operator.eq, rows, last_rows))  # as far as the shorter goes
            items = last_items[: len(same)]
            for index in compress(range(len(same)), map(operator.not_, same)):
                items[index] = meter_of(rows[index])
            items.extend(map(meter_of, rows[len(same) :]))
        meters = meters_by_id(items)
        self._answers[key] = (rows, items, meters)
        return dict(meters)

    def unchanged_or_built(
        self, key: str | None, row: Any, build: Callable[[Any], MeterData | None]
    ) -> MeterData | None:
        """A poll row's MeterData: the very object of the last poll when the row is the same (nothing parsed again,
        and the coordinator sees by identity that nothing changed), else `build(row)`."""
        if key is not None and (cached := self._rows.get(key)) is not None and cached[0] == row:
            return cached[1]
        meter = build(row)
        if key is not None and meter is not None:
            self._rows[key] = (row, meter)
        return meter

    def lookback(self) -> timedelta:
        """How far back the next history import reads (a backend may widen it once, e.g. for back-filled days)."""
        return self.history_lookback

    def new_serial(self) -> str:
        """A fresh 32-character request serial."""
        return uuid.uuid4().hex

    def fields_for(self, meter: MeterData) -> frozenset[str]:
        """The fields one device can have (an RTU reports other things than a meter)."""
        return self.fields

    def supports(self, capability: Capability) -> bool:
        """Whether this backend can do `capability`."""
        return capability in self.capabilities

    @classmethod
    @abstractmethod
    def unique_id(cls, config: Mapping[str, Any]) -> str:
        """The account's stable identity, from the config-flow fields."""

    @classmethod
    @abstractmethod
    def title(cls, config: Mapping[str, Any]) -> str:
        """A human title for the account."""

    @abstractmethod
    async def async_validate(self, *, credentials_only: bool = False) -> None:
        """Make one real call that proves the settings work.

        `credentials_only` (reauthentication): prove the credentials; what else the settings name (a meter list)
        is not checked, as the user is asked only for credentials.
        """

    @abstractmethod
    async def async_get_meters(self) -> dict[str, MeterData]:
        """Latest readings of every meter of the account, in as few requests as the API allows."""

    async def async_get_meter(self, meter_id: str) -> MeterData | None:
        """One device's latest data, for a refresh after a command (None when the cloud has none)."""
        raise UnsupportedError(Capability.SINGLE_READ)

    async def async_get_details(self, meter: MeterData) -> MeterData:
        """Slow-changing details of one meter."""
        raise UnsupportedError(Capability.DETAILS)

    async def async_set_valve(self, meter: MeterData, open_valve: bool, serial: str) -> CommandReceipt:
        """Ask the meter to open or close its valve."""
        raise UnsupportedError(Capability.VALVE)

    async def async_recharge(
        self,
        meter: MeterData,
        amount: Decimal,
        reference: str,
        *,
        serial: str,
        when: datetime,
        counter: int | None = None,
        total: Decimal | None = None,
    ) -> CommandReceipt:
        """Add money to a prepaid meter; serial, time and counters are reused verbatim on any resend.

        Backends that count recharges (`uses_charge_counters`) get the sequence number and cumulative
        total this recharge must carry (see charges.py); the others get None.
        """
        raise UnsupportedError(Capability.RECHARGE)

    async def async_charge_counters(self, meter: MeterData) -> ChargeCounters | None:
        """The meter's recharge counters read now, where one request can (None: they must be queued for)."""
        return None

    def charge_counters_of(self, result: CommandResult) -> ChargeCounters | None:
        """The counters a finished charge-state command reported (backends that have one)."""
        return None

    def supports_for(self, capability: Capability, meter: MeterData) -> bool:
        """Whether this one device can do `capability` (an account can hold devices that cannot)."""
        return self.supports(capability)

    def unsupported_reason(self, capability: Capability, meter: MeterData | None) -> str:
        """Why this account or device cannot do `capability`: a translation key of exceptions."""
        return "not_supported"

    async def async_cancel_command(self, meter: MeterData, command: CommandRef) -> None:
        """Cancel a command that has not reached the meter yet."""
        raise UnsupportedError(Capability.CANCEL_COMMAND)

    async def async_adjust_balance(
        self, meter: MeterData, amount: Decimal, reference: str, *, credit: bool, serial: str, when: datetime
    ) -> CommandReceipt:
        """Credit (refund) or deduct money on a prepaid meter; idempotent by serial like a recharge."""
        raise UnsupportedError(Capability.ADJUST_BALANCE)

    async def async_suspend_meter(self, meter: MeterData, suspend: bool) -> dict[str, Any]:
        """Suspend (or resume) a meter's account."""
        raise UnsupportedError(Capability.SUSPEND_METER)

    async def async_modify_customer(self, meter: MeterData, customer: CustomerInfo) -> dict[str, Any]:
        """Change the customer details of a meter's account."""
        raise UnsupportedError(Capability.MODIFY_CUSTOMER)

    async def async_set_price(self, meters: list[MeterData], schedule: PriceSchedule) -> dict[str, Any]:
        """Create or adjust a price and assign it to `meters`."""
        raise UnsupportedError(Capability.SET_PRICE)

    async def async_daily_usage(self, meter: MeterData, start: date, end: date) -> list[DailyUsage]:
        """Daily usage records between two dates, inclusive."""
        raise UnsupportedError(Capability.DAILY_USAGE)

    async def async_daily_spend(self, meter: MeterData, start: date, end: date) -> list[DailySpend]:
        """Money used on each day between two dates (inclusive) the cloud can tell; a day it cannot is left out."""
        raise UnsupportedError(Capability.DAILY_SPEND)

    @property
    def tz(self) -> tzinfo:
        """The vendor's time zone: its days are the days of daily usage and spend."""
        return self._tz

    async def async_register_meter(self, registration: MeterRegistration) -> dict[str, Any]:
        """Open an account for a new meter."""
        raise UnsupportedError(Capability.REGISTER_METER)

    async def async_deregister_meter(self, meter: MeterData, reading: Decimal, reason: str) -> dict[str, Any]:
        """Close a meter's account."""
        raise UnsupportedError(Capability.DEREGISTER_METER)

    async def async_replace_meter(self, meter: MeterData, replacement: MeterReplacement) -> dict[str, Any]:
        """Replace a meter by a new one on the same account."""
        raise UnsupportedError(Capability.REPLACE_METER)

    async def async_command(
        self, meter: MeterData, kind: CommandKind, params: Mapping[str, Any], *, serial: str
    ) -> CommandReceipt:
        """Queue another remote command (read price, set remaining balance, ...)."""
        raise UnsupportedError(kind)

    async def async_command_states(self, commands: list[CommandRef]) -> list[CommandResult]:
        """What the cloud says now of commands still under way."""
        raise UnsupportedError(Capability.COMMAND_QUEUE)

    async def async_retry_command(self, meter: MeterData, command: CommandRef) -> None:
        """Queue a failed, cancelled or timed-out command again."""
        raise UnsupportedError(Capability.COMMAND_QUEUE)

    async def async_list_commands(self, meter: MeterData) -> list[dict[str, Any]]:
        """The cloud's command queue for a device."""
        raise UnsupportedError(Capability.COMMAND_QUEUE)

    async def async_update_command(
        self, meter: MeterData, command: CommandRef, changes: Mapping[str, Any]
    ) -> dict[str, Any]:
        """Change a command still waiting in the cloud's queue (schedule, timeout, parameters)."""
        raise UnsupportedError(Capability.COMMAND_QUEUE)

    async def async_delete_command(self, meter: MeterData, command: CommandRef) -> None:
        """Remove a command from the cloud's queue."""
        raise UnsupportedError(Capability.COMMAND_QUEUE)

    async def async_command_detail(self, meter: MeterData, command: CommandRef) -> str:
        """The cloud's own description of a queued command."""
        raise UnsupportedError(Capability.COMMAND_QUEUE)

    async def async_commands_batch(
        self, operation: str, commands: list[tuple[MeterData, CommandRef]], changes: Mapping[str, Any]
    ) -> dict[str, str | None]:
        """Cancel, retry, delete or update several queued commands in one request: serial → None or the refusal."""
        raise UnsupportedError(Capability.COMMAND_QUEUE)

    async def async_history(self, meter: MeterData, start: datetime, end: datetime) -> list[HistoryPoint]:
        """Frozen cumulative readings between two instants, oldest first."""
        raise UnsupportedError(Capability.HISTORY)

    async def async_history_series(
        self, meters: Sequence[MeterData], start: datetime, end: datetime
    ) -> list[HistorySeries]:
        """Statistics series of `meters`: by default each meter's frozen volume, a few meters at a time."""
        semaphore = asyncio.Semaphore(HISTORY_CONCURRENCY)

        async def one(meter: MeterData) -> HistorySeries | None:
            async with semaphore:
                try:
                    points = await self.async_history(meter, start, end)
                except MeterCloudError as err:
                    _LOGGER.debug("History of %s not read this time: %s", meter.meter_id, err)
                    return None
            name = f"{self.manufacturer} {meter.meter_id} standard volume"
            return HistorySeries(
                meter_id=meter.meter_id, key="volume", name=name, unit="m³", points=points, sensor_key="reading"
            )

        return [series for series in await asyncio.gather(*(one(meter) for meter in meters)) if series]

    async def async_discover(self) -> list[Any]:
        """The account's meters before any is followed (backends with DISCOVER)."""
        raise UnsupportedError(Capability.DISCOVER)

    async def async_import(self, records: Sequence[ImportRecord]) -> dict[str, str]:
        """Upload readings to the cloud and return its answer (backends with IMPORT)."""
        raise UnsupportedError(Capability.IMPORT)

    async def async_alarms_since(self, since: datetime) -> list[Alarm]:
        """Alarms and events recorded since `since`, oldest first."""
        raise UnsupportedError(Capability.ALARM_HISTORY)

    def meter_list(self) -> str:
        """The followed meters in their stored form (backends with a `meter_list_key`)."""
        raise UnsupportedError("meter list")

    def followed(self) -> frozenset[str] | None:
        """The meter ids the entry follows by its list; None when it follows whatever the account lists."""
        return None

    def stop_following(self, meter_id: str) -> None:
        """Take a meter off the entry's list (meter_list() then gives the list to store)."""
        raise UnsupportedError("meter list")

    @classmethod
    def format_meter_list(cls, meters: Sequence[Any]) -> str:
        """Discovered meters (async_discover) in the stored form of `meter_list_key`."""
        raise UnsupportedError(Capability.DISCOVER)

    def recharge_serial(self, reference: str) -> str:
        """The request serial of a money command: derived from its reference, so retries reuse it."""
        raise UnsupportedError(Capability.RECHARGE)

    @classmethod
    def refusal_envelope(cls, message: str) -> dict[str, object]:
        """A refused push answered in the vendor's own envelope (its fields for code and message)."""
        return {"error": message}

    def push_refusal(self, message: str) -> dict[str, object] | bytes:
        """This account's refusal of a push (a backend may seal it)."""
        return self.refusal_envelope(message)

    def parse_push(self, path: str, headers: Mapping[str, str], body: bytes, now: datetime) -> PushResult:
        """Authenticate and parse a push the cloud sent to `path`; raise PushError if rejected."""
        raise UnsupportedError(Capability.PUSH)
