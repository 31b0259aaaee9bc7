"""Goldcard (金卡) DAS standard interface for IoT meters."""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import uuid
from collections.abc import Mapping, Sequence
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from functools import partial
from typing import Any, ClassVar, override

from . import signing
from .base import MeterClient, meters_by_id
from .errors import (
    AuthenticationError,
    CloudConnectionError,
    CommandError,
    ConfigurationError,
    DuplicateSerialError,
    InvalidRequestError,
    PushError,
    ResponseError,
    UnsupportedError,
)
from .http import decode_json, json_body, post_bytes
from .models import (
    Alarm,
    AlarmPriority,
    AlarmType,
    Capability,
    ChargeCounters,
    CommandKind,
    CommandReceipt,
    CommandRef,
    CommandResult,
    ConfigField,
    DailySpend,
    DailyUsage,
    HistoryPoint,
    HistorySeries,
    MeterData,
    MeterRegistration,
    MeterReplacement,
    MeterStatus,
    PriceSchedule,
    PushResult,
    ValveState,
)
from .parse import as_date, as_datetime, as_decimal, as_int, as_str, money

CONF_BASE_URL = "base_url"
CONF_APP_CODE = "app_code"
CONF_APP_SECRET = "app_secret"  # noqa: S105
CONF_COMPANY_CODE = "company_code"
CONF_FACTOR_NO = "factor_no"

SUCCESS_CODES = frozenset({"0000", "0"})
AUTH_CODES = frozenset({"0101", "0103", "0105"})
INVALID_FACTOR_CODE = "0404"
SERVICE_DOWN = "9995"
# 2.2 "流水号做唯一校验": a repeated serialNo is refused. The spec gives no code or text for it; a 9999 whose
# message speaks of a repeat (重复) or of a serial that exists (流水号…存在) is read as such.
DUPLICATE_SERIAL = re.compile(r"重复|流水号?.{0,6}已经?存在|duplicat|repeat", re.IGNORECASE)

# Appendix 5.
METER_TYPES = {
    "441": "IoT 10",
    "502": "IoT 40",
    "10521": "NB-IoT 10",
    "10522": "NB-IoT 40",
    "10524": "Thermal R1",
    "10523": "Temperature-compensated 10",
}

# Appendix 2: alarm code → kind (priorities come with each alarm).
ALARM_TYPES = {
    "01": AlarmType.COMMUNICATION_FAULT,
    "02": AlarmType.GAS_LEAK,
    "03": AlarmType.REED_SWITCH_FAULT,
    "04": AlarmType.VALVE_LEAK,
    "05": AlarmType.VALVE_FAULT,
    "06": AlarmType.BATTERY_FAULT,
    "07": AlarmType.MAGNETIC_INTERFERENCE,
}
PRIORITIES = {"1": AlarmPriority.LOW, "2": AlarmPriority.MEDIUM, "3": AlarmPriority.HIGH}

# Each endpoint encodes the valve differently.
VALVE_1013 = {"0": ValveState.OPEN, "1": ValveState.CLOSED, "2": ValveState.UNKNOWN}
VALVE_1014 = {"1": ValveState.OPEN, "2": ValveState.CLOSED, "3": ValveState.UNKNOWN}
VALVE_2001 = {"2": ValveState.OPEN, "3": ValveState.CLOSED}
METER_STATE_1014 = {"1": MeterStatus.INACTIVE, "2": MeterStatus.ACTIVE}

PARAM_VALVE = "03"
PARAM_RECHARGE = "05"
PUSH_READING = "api/collect/meter/2001"
PUSH_COMMAND = "api/collect/meter/2002"
PUSH_ALARM = "api/collect/meter/2003"
PUSH_WINDOW = timedelta(minutes=5)
DEFAULT_TIER_CYCLE_MONTHS = 12
# billingModel: 1 the meter bills itself; 2 the CIS bills, 3 the collection system bills. A centre-billed meter is
# driven through our answer to its 2001 report (valvecontrol, currentprice, remainquantity), not through 1004.
CENTRE_BILLED = frozenset({"2", "3"})
# Our answer's valvecontrol: 0 open, 1 close, 2 leave alone (3 "ordinary close" is not used).
ANSWER_VALVE = {True: "0", False: "1"}
# Reports that may pass after delivering a valve directive before the meter's valve must show it.
CENTRE_VALVE_TRIES = 3
# History: days asked of 1013 at once; a back-filled (addGas) day's reading stands at its end.
HISTORY_DAYS_AT_ONCE = 4
DAY_END = time(23, 59, 59)


class GoldcardClient(MeterClient):
    """Client of a Goldcard DAS server."""

    backend: ClassVar[str] = "goldcard"
    capabilities: frozenset[Capability] = frozenset(
        {
            Capability.DETAILS,
            Capability.SINGLE_READ,
            Capability.VALVE,
            Capability.RECHARGE,
            Capability.CANCEL_COMMAND,
            Capability.SET_PRICE,
            Capability.SET_REMAINING,
            Capability.HISTORY,
            Capability.DAILY_USAGE,
            Capability.DAILY_SPEND,
            Capability.REGISTER_METER,
            Capability.DEREGISTER_METER,
            Capability.REPLACE_METER,
            Capability.PUSH,
        }
    )
    alarm_types: ClassVar[tuple[AlarmType, ...]] = (*ALARM_TYPES.values(), AlarmType.OTHER)
    config_fields: ClassVar[tuple[ConfigField, ...]] = (
        ConfigField(CONF_BASE_URL, kind="url"),
        ConfigField(CONF_APP_CODE, credential=True, identity=True),
        ConfigField(CONF_APP_SECRET, kind="password", credential=True),
        ConfigField(CONF_COMPANY_CODE, identity=True),
        ConfigField(CONF_FACTOR_NO),
    )
    form_placeholders: ClassVar[Mapping[str, str]] = {"example_url": "http://120.55.14.102:80"}
    push_paths: ClassVar[tuple[str, ...]] = (PUSH_READING, PUSH_COMMAND, PUSH_ALARM)
    # 1007's priceDetail has no stated limit; five tiers covers every tariff we know of.
    max_price_tiers: ClassVar[int] = 5
    money_places: ClassVar[int] = 2
    default_timezone: ClassVar[str] = "Asia/Shanghai"
    manufacturer: ClassVar[str] = "Goldcard"
    currency: ClassVar[str] = "CNY"
    uses_charge_counters: ClassVar[bool] = True
    # Reading history: 1013 with readingDate answers every meter's reading of that day in one request, so a day of
    # history costs one request for the whole account: 30 on the first import, the last 2 days every 6 hours after.
    history_lookback: ClassVar[timedelta] = timedelta(days=2)
    history_interval: ClassVar[timedelta] = timedelta(hours=6)
    backfill: timedelta | None = timedelta(days=30)
    _widened: timedelta | None = None
    fields: frozenset[str] = frozenset(
        {
            "reading",
            "reading_time",
            "balance",
            "price",
            "total_gas",
            "total_money",
            "total_recharge",
            "last_recharge_amount",
            "last_recharge_time",
            "battery_voltage",
            "signal_strength",
            "status",
            "valve",
            # 2001's engineering values (disabled by default): compensated meters report them.
            "temperature",
            "pressure",
            "std_volume",
            "work_volume",
            "std_flow",
            "work_flow",
        }
    )

    @classmethod
    @override
    def unique_id(cls, config: Mapping[str, Any]) -> str:
        """Account identity: appCode at a company."""
        return f"goldcard_{config[CONF_COMPANY_CODE]}_{config[CONF_APP_CODE]}".lower()

    @classmethod
    @override
    def title(cls, config: Mapping[str, Any]) -> str:
        """Title shown for the entry."""
        return f"Goldcard {config[CONF_COMPANY_CODE]}"

    @property
    def _base(self) -> str:
        return str(self._config[CONF_BASE_URL]).rstrip("/")

    @property
    def _company(self) -> str:
        return str(self._config[CONF_COMPANY_CODE])

    @property
    def _factor(self) -> str:
        return str(self._config[CONF_FACTOR_NO])

    def _now_text(self, fmt: str = signing.TIME_FORMAT) -> str:
        return datetime.now(self._tz).strftime(fmt)

    async def _call(self, path: str, payload: dict[str, Any], *, same_as: str | None = None) -> Any:
        """Send one signed request; return `echoMsg` on success, raise on any failure. With `same_as`, an answer
        that differs from the last one of that name only by the echo of our serial is not parsed again."""
        self.request_count += 1
        headers = signing.request_headers(
            str(self._config[CONF_APP_CODE]), str(self._config[CONF_APP_SECRET]), self._tz
        )
        serial = payload.setdefault("serialNo", uuid.uuid4().hex)
        raw = await post_bytes(
            self._session, f"{self._base}/{path}", json_body(payload), headers=headers, timeout=self.request_timeout
        )
        answer = self.same_answer(same_as, raw, decode_json, echo=str(serial))
        if not isinstance(answer, dict):
            raise ResponseError("answer is not a JSON object")
        code = as_str(answer.get("echoCode"))
        message = answer.get("echoMsg")
        if code in SUCCESS_CODES:
            return message
        text = message if isinstance(message, str) else json.dumps(message, ensure_ascii=False)
        if code in AUTH_CODES:
            raise AuthenticationError(text, code=code)
        if code == INVALID_FACTOR_CODE:
            raise ConfigurationError(text, code=code, reason="invalid_factor_code")
        if code == SERVICE_DOWN:
            raise CloudConnectionError(text, code=code, reason="service_unavailable")
        if code is None:
            raise ResponseError("answer has no echoCode")
        if DUPLICATE_SERIAL.search(text):
            raise DuplicateSerialError(text, code=code)
        raise CommandError(text, code=code)

    def _meter_fields(self, meter: MeterData) -> dict[str, Any]:
        return {
            "userNo": meter.user_no or meter.meter_id,
            "deviceId": meter.device_id or "",
            "factorNo": self._factor,
            "meterNo": meter.meter_id,
            "companyCode": self._company,
        }

    @override
    async def async_validate(self, *, credentials_only: bool = False) -> None:
        """1013 for the whole company proves URL, credentials, company and factor code."""
        await self.async_get_meters()

    @override
    async def async_get_meters(self) -> dict[str, MeterData]:
        """1013 without meterNo: the latest reading of every meter in one request."""
        return await self._readings("")

    @override
    async def async_get_meter(self, meter_id: str) -> MeterData | None:
        """1013 with meterNo: one meter's latest reading (after a command was confirmed)."""
        return (await self._readings(meter_id)).get(meter_id)

    @override
    async def async_history_series(
        self, meters: Sequence[MeterData], start: datetime, end: datetime
    ) -> list[HistorySeries]:
        """Each meter's reading at the end of every day in the window (1013 readingDate: one request a day for
        all meters, a few days at a time), plus the readings a 2001 back-filled (addGas) after days of silence."""
        wanted = {meter.meter_id for meter in meters}
        first, last = start.astimezone(self._tz).date(), end.astimezone(self._tz).date()
        days = [first + timedelta(days=n) for n in range((last - first).days + 1)]
        semaphore = asyncio.Semaphore(HISTORY_DAYS_AT_ONCE)

        async def day(when: date) -> dict[str, MeterData]:
            async with semaphore:
                return await self._readings("", when)

        points: dict[str, dict[datetime, Decimal]] = {meter_id: {} for meter_id in wanted}
        for readings in await asyncio.gather(*(day(when) for when in days)):
            for meter_id, meter in readings.items():
                if meter_id in wanted and meter.reading is not None and meter.reading_time is not None:
                    points[meter_id][meter.reading_time] = meter.reading
        for meter_id, filled in self._store_state.get("add_gas", {}).items():
            if meter_id in wanted:
                for text, value in filled.items():
                    when = datetime.combine(date.fromisoformat(text), DAY_END, tzinfo=self._tz)
                    points[meter_id].setdefault(when, Decimal(value))
        self._widened = None  # a widened window (addGas) has been read
        return [
            HistorySeries(
                meter_id=meter_id,
                key="volume",
                name=f"{self.manufacturer} {meter_id} reading",
                unit="m³",
                points=[HistoryPoint(when, value) for when, value in sorted(found.items()) if start <= when <= end],
                sensor_key="reading",
            )
            for meter_id, found in points.items()
            if found
        ]

    @override
    def lookback(self) -> timedelta:
        """The usual 2 days, or back to the oldest day a 2001 back-filled since the last import."""
        return self._widened or self.history_lookback

    def _learn_add_gas(self, meter_id: str, raw: Any) -> None:
        """2001 addGas: the standard readings of days the meter did not report ({"2018-05-20": "0", …})."""
        if isinstance(raw, str) and raw.strip().startswith("{"):
            try:
                raw = json.loads(raw)
            except ValueError:
                return
        if not isinstance(raw, dict) or not raw:
            return
        days = {
            day.isoformat(): str(value)
            for key, text in raw.items()
            if (day := as_date(key)) is not None and (value := as_decimal(text)) is not None
        }
        if not days:
            return
        kept = self._store_state.setdefault("add_gas", {}).setdefault(meter_id, {})
        kept.update(days)
        oldest = date.fromisoformat(min(kept))
        # Keep what the next imports can still use; widen the next import to reach the oldest filled day.
        today = datetime.now(self._tz).date()
        horizon = today - (self.backfill or timedelta(days=30))
        for text in [text for text in kept if date.fromisoformat(text) < horizon]:
            del kept[text]
        reach = today - oldest + timedelta(days=1)
        self._widened = max(self.history_lookback, reach)
        self._store_save()

    async def _readings(self, meter_no: str, day: date | None = None) -> dict[str, MeterData]:
        poll = not meter_no and day is None
        message = await self._call(
            "api/v2/collect/meter/1013",
            {
                "companyCode": self._company,
                "factorNo": self._factor,
                "meterNo": meter_no,
                "readingDate": day.isoformat() if day else "",
            },
            same_as="1013" if poll else None,
        )
        if not isinstance(message, dict):
            raise ResponseError("1013 answer has no readingData")
        reading_data = message.get("readingData")
        data = reading_data.get("data") if isinstance(reading_data, dict) else None
        if not isinstance(data, list):
            raise ResponseError("1013 answer has no readingData.data list")
        # The poll (all meters, latest): an answer like the last one is the last one's meters; a row like the last
        # one of its meter is the last one's MeterData.
        if not poll:
            return meters_by_id(map(partial(self._row_1013, False), data))
        return self.unchanged_answer("1013", data, partial(self._row_1013, True))

    def _row_1013(self, poll: bool, row: Any) -> MeterData | None:
        """A 1013 row's meter (None without a meter number); for the poll, the last poll's when its row is the same."""
        if not isinstance(row, dict) or not (meter_id := as_str(row.get("gasMeterNo"))):
            return None
        return self.unchanged_or_built(meter_id if poll else None, row, partial(self._row, meter_id))

    def _row(self, meter_id: str, row: Mapping[str, Any]) -> MeterData:
        """A 1013 row."""
        return MeterData(
            meter_id=meter_id,
            user_no=as_str(row.get("userArchivesNum")),
            device_id=as_str(row.get("deviceId")),
            reading=as_decimal(row.get("readNum")),
            reading_time=as_datetime(row.get("readDate"), self._tz),
            balance=as_decimal(row.get("meterBalance")),
            # The spec's descriptions of sumGas/sumMoney are swapped; the names are right.
            total_gas=as_decimal(row.get("sumGas")),
            total_money=as_decimal(row.get("sumMoney")),
            valve=VALVE_1013.get(as_str(row.get("valveState")) or "", ValveState.UNKNOWN),
        )

    @override
    async def async_get_details(self, meter: MeterData) -> MeterData:
        """1014: account, price, recharge history, battery and signal of one meter."""
        msg = await self._call("api/v2/collect/meter/1014", self._meter_fields(meter))
        if not isinstance(msg, dict):
            raise ResponseError("1014 answer is not an object")
        meter_type = as_str(msg.get("meterType"))
        return MeterData(
            meter_id=meter.meter_id,
            user_no=meter.user_no,
            device_id=as_str(msg.get("deviceId")) or meter.device_id,
            model=METER_TYPES.get(meter_type or "", meter_type),
            reading=as_decimal(msg.get("readingNum")),
            reading_time=as_datetime(msg.get("lastReadingTime"), self._tz),
            balance=as_decimal(msg.get("balance")),
            price=as_decimal(msg.get("price")),
            price_code=as_str(msg.get("priceCode")),
            total_gas=as_decimal(msg.get("sumUseGas")),
            total_money=as_decimal(msg.get("sumUseMoney")),
            total_recharge=as_decimal(msg.get("sumRechargeAomunt")),
            last_recharge_amount=as_decimal(msg.get("lastRechargeAmount")),
            last_recharge_time=as_datetime(msg.get("lastRechargeDate"), self._tz),
            recharge_count=as_int(msg.get("rechargeCount")),
            battery_voltage=as_decimal(msg.get("voltage")),
            signal_strength=as_decimal(msg.get("signalStrength")),
            status=METER_STATE_1014.get(as_str(msg.get("meterState")) or ""),
            valve=VALVE_1014.get(as_str(msg.get("valveState")) or "", ValveState.UNKNOWN),
            account=_account(msg),
        )

    async def _command(self, meter: MeterData, param_no: str, data: dict[str, str], serial: str) -> CommandReceipt:
        payload = {
            "serialNo": serial,
            **self._meter_fields(meter),
            "paramNo": param_no,
            "paramContext": {"total": "1", "data": data},
            "sdateTime": self._now_text(),
        }
        msg = await self._call("api/collect/meter/1004", payload)
        when = as_datetime(msg.get("rdateTime"), self._tz) if isinstance(msg, dict) else None
        return CommandReceipt(serial=serial, meter_id=meter.meter_id, accepted_at=when)

    # ---- centre-billed meters (billingModel 2/3): commands ride on our answer to the meter's next 2001 ----------

    def centre_billed(self, meter_id: str) -> bool:
        """Whether the meter's reports (or our own registration) said the CIS/collection system bills it."""
        return meter_id in self._store_state.get("centre_billed", [])

    def _learn_billing(self, meter_id: str, model: str | None) -> None:
        known = set(self._store_state.get("centre_billed", []))
        if model in CENTRE_BILLED and meter_id not in known:
            known.add(meter_id)
        elif model == "1" and meter_id in known:
            known.discard(meter_id)
        else:
            return
        self._store_state["centre_billed"] = sorted(known)
        self._store_save()

    def _owe(self, meter_id: str, field: str, value: str, serial: str | None) -> CommandReceipt:
        """Queue a directive for the meter's next report; a newer one for the same field joins its serials."""
        owed = self._store_state.setdefault("owed", {}).setdefault(meter_id, {"delivered_in": None, "tries": 0})
        earlier = owed.get(field) or {"serials": []}
        serials = [*earlier["serials"], serial] if serial else earlier["serials"]
        owed[field] = {"value": value, "serials": serials}
        owed["delivered_in"], owed["tries"] = None, 0  # delivered again, with the new value, next time
        self._store_save()
        return CommandReceipt(serial=serial or "", meter_id=meter_id)

    def owed(self, meter_id: str) -> dict[str, Any] | None:
        """What the next answer to this meter's report will carry (for diagnostics and tests)."""
        found: dict[str, Any] | None = self._store_state.get("owed", {}).get(meter_id)
        return found

    def _answer_report(self, meter_id: str, serial: str, reported: ValveState) -> tuple[dict[str, str], list[Any]]:
        """Our answer's directives for a 2001 and the results the report settles.

        A report after the one our directives went out in settles them: a valve directive when the reported valve
        shows it (else it goes out again, CENTRE_VALVE_TRIES times, then fails), a price or remaining amount at
        once (the report proves our answer was taken). The same report again (the DAS re-sent it: our answer was
        lost) gets the same directives and settles nothing.
        """
        owed_all = self._store_state.get("owed", {})
        owed = owed_all.get(meter_id)
        if not owed:
            return {}, []
        results: list[CommandResult] = []
        delivered = owed.get("delivered_in")
        if delivered is not None and delivered != serial:
            if (valve := owed.get("valve")) is not None:
                wanted = ValveState.OPEN if valve["value"] == ANSWER_VALVE[True] else ValveState.CLOSED
                if reported is wanted:
                    results += [CommandResult(meter_id=meter_id, serial=x, success=True) for x in valve["serials"]]
                    del owed["valve"]
                elif owed["tries"] >= CENTRE_VALVE_TRIES:
                    message = f"the meter reported its valve {reported.value} after {owed['tries']} answers"
                    results += [
                        CommandResult(meter_id=meter_id, serial=x, success=False, message=message)
                        for x in valve["serials"]
                    ]
                    del owed["valve"]
            for field in ("remaining", "price"):
                if (item := owed.pop(field, None)) is not None:
                    results += [CommandResult(meter_id=meter_id, serial=x, success=True) for x in item["serials"]]
        directives: dict[str, str] = {}
        if owed.get("valve") is not None:
            directives["valvecontrol"] = owed["valve"]["value"]
        if owed.get("price") is not None:
            directives["currentprice"] = owed["price"]["value"]
        if owed.get("remaining") is not None:
            directives["remainquantity"] = owed["remaining"]["value"]
        if directives:
            if owed.get("delivered_in") != serial:
                owed["delivered_in"], owed["tries"] = serial, owed["tries"] + 1
        else:
            del owed_all[meter_id]
        self._store_save()
        return directives, results

    @override
    def supports_for(self, capability: Capability, meter: MeterData) -> bool:
        """A centre-billed meter keeps no money (no recharge); only it takes a remaining amount."""
        centre = self.centre_billed(meter.meter_id)
        if capability is Capability.RECHARGE and centre:
            return False
        if capability is Capability.SET_REMAINING and not centre:
            return False
        return self.supports(capability)

    @override
    def unsupported_reason(self, capability: Capability, meter: MeterData | None) -> str:
        """Say which billing model stands in the way."""
        if meter is not None and capability is Capability.RECHARGE and self.centre_billed(meter.meter_id):
            return "centre_billed_no_recharge"
        if meter is not None and capability is Capability.SET_REMAINING:
            return "meter_billed_no_remaining"
        return super().unsupported_reason(capability, meter)

    @override
    async def async_set_valve(self, meter: MeterData, open_valve: bool, serial: str) -> CommandReceipt:
        """1004 paramNo 03 (valveSet 0 opens, 1 closes); a centre-billed meter gets it in our next 2001 answer."""
        if self.centre_billed(meter.meter_id):
            return self._owe(meter.meter_id, "valve", ANSWER_VALVE[open_valve], serial)
        return await self._command(meter, PARAM_VALVE, {"valveSet": "0" if open_valve else "1"}, serial)

    @override
    async def async_command(
        self, meter: MeterData, kind: CommandKind, params: Mapping[str, Any], *, serial: str
    ) -> CommandReceipt:
        """A remaining amount for a centre-billed meter (remainquantity in our next 2001 answer)."""
        if kind is CommandKind.SET_REMAINING and self.centre_billed(meter.meter_id):
            return self._owe(meter.meter_id, "remaining", money(Decimal(params["amount"]), 4), serial)
        raise UnsupportedError(kind)

    @override
    def recharge_serial(self, reference: str) -> str:
        """32 hex characters derived from the account and the reference."""
        return hashlib.md5(f"{self.unique_id(self._config)}:{reference}".encode()).hexdigest()

    @override
    async def async_charge_counters(self, meter: MeterData) -> ChargeCounters:
        """1014 now: the meter's recharge count (every system's) and cumulative recharge."""
        details = await self.async_get_details(meter)
        return ChargeCounters(times=details.recharge_count or 0, total=details.total_recharge)

    @override
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
        """1004 paramNo 05: the reference as rechargeStream, `counter` as rechargeCount (the meter's count + 1)."""
        count = counter if counter is not None else (meter.recharge_count or 0) + 1
        data = {
            "rechargeAmount": money(amount, self.money_places),
            "rechargeCount": str(count),
            "rechargeDate": when.astimezone(self._tz).strftime("%Y-%m-%d %H:%M:%S"),
            "rechargeStream": reference,
        }
        return await self._command(meter, PARAM_RECHARGE, data, serial)

    @override
    async def async_cancel_command(self, meter: MeterData, command: CommandRef) -> None:
        """1005: cancel a 1004 command by its serial."""
        payload = {**self._meter_fields(meter), "sendSerialNo": command.serial}
        await self._call("api/collect/meter/1005", payload)

    @override
    async def async_set_price(self, meters: list[MeterData], schedule: PriceSchedule) -> dict[str, Any]:
        """1007 creates or adjusts the price, then 1008 assigns it to each meter.

        A centre-billed meter is billed by the CIS, not by a DAS price: it gets the (flat) price as currentprice in
        our answer to its next report; a tiered price cannot be shown as one current price, so it is refused.
        """
        centre = [meter for meter in meters if self.centre_billed(meter.meter_id)]
        meters = [meter for meter in meters if not self.centre_billed(meter.meter_id)]
        if centre and schedule.tiered:
            raise InvalidRequestError("a centre-billed meter takes one price", reason="centre_billed_flat_price")
        for meter in centre:
            self._owe(meter.meter_id, "price", money(schedule.prices[0], 4), None)
        queued = {"queued": [meter.meter_id for meter in centre]} if centre else {}
        if centre and not meters:  # only centre-billed meters: the DAS needs no price of its own
            return {"price_code": None, "meters": [], **queued}
        code = schedule.code or f"HA{self._now_text('%Y%m%d%H%M%S')}"
        detail: dict[str, str] = {"priceLength": str(len(schedule.prices))}
        for index, price in enumerate(schedule.prices, start=1):
            detail[f"price{index}"] = money(price, 4)
        for index, limit in enumerate(schedule.ladder_limits, start=1):
            detail[f"ladder{index}End"] = format(limit.normalize(), "f")
        payload: dict[str, Any] = {
            "factorNo": self._factor,
            "companyCode": self._company,
            "priceCode": code,
            "priceVersion": schedule.version or "V1.0",
            "priceProperty": "2" if schedule.adjust else "1",
            "priceType": "2" if schedule.tiered else "1",
            "priceDetail": detail,
        }
        # The spec requires a begin date for adjustments and a cycle for tiers: default to today
        # and to the yearly cycle that Chinese tiered gas tariffs use.
        begin = schedule.effective_date or (datetime.now(self._tz).date() if schedule.adjust else None)
        if begin is not None:
            payload["priceBeginDate"] = begin.isoformat()
        cycle = schedule.cycle_months or (DEFAULT_TIER_CYCLE_MONTHS if schedule.tiered else None)
        if cycle is not None:
            payload["cycleLength"] = str(cycle)
        if schedule.adjust:
            payload["clearFlag"] = "0" if schedule.reset_cycle else "1"
        await self._call("api/collect/meter/1007", payload)
        assigned = []
        for meter in meters:
            await self._call("api/collect/meter/1008", {**self._meter_fields(meter), "newPriceCode": code})
            assigned.append(meter.meter_id)
        return {"price_code": code, "meters": assigned, **queued}

    @override
    async def async_daily_usage(self, meter: MeterData, start: date, end: date) -> list[DailyUsage]:
        """1015: one record per day (several when a day crosses a tier)."""
        payload = {**self._meter_fields(meter), "startTime": start.isoformat(), "endTime": end.isoformat()}
        msg = await self._call("api/v1/collect/meter/1015", payload)
        rows = msg.get("gasData") if isinstance(msg, dict) else None
        if not isinstance(rows, list):
            raise ResponseError("1015 answer has no gasData list")
        records = []
        for row in rows:
            if not isinstance(row, dict) or (day := as_date(row.get("useDate"))) is None:
                continue
            records.append(
                DailyUsage(
                    day=day,
                    meter_id=as_str(row.get("meterNo")) or meter.meter_id,
                    volume=as_decimal(row.get("useGas")) or Decimal(0),
                    amount=as_decimal(row.get("useAmount")) or Decimal(0),
                    price=as_decimal(row.get("price")) or Decimal(0),
                )
            )
        return records

    @override
    async def async_daily_spend(self, meter: MeterData, start: date, end: date) -> list[DailySpend]:
        """1015's useAmount per day: the DAS's own bill, the records of one day (one per tier) added up."""
        by_day: dict[date, Decimal] = {}
        for record in await self.async_daily_usage(meter, start, end):
            by_day[record.day] = by_day.get(record.day, Decimal(0)) + record.amount
        return [DailySpend(day, by_day[day]) for day in sorted(by_day)]

    @override
    async def async_register_meter(self, registration: MeterRegistration) -> dict[str, Any]:
        """1001: register a meter under a user number."""
        if not registration.meter_type or not registration.price_code:
            raise InvalidRequestError("meter_type, price_code", reason="missing_field")
        customer = registration.customer
        payload: dict[str, Any] = {
            "userNo": registration.user_no,
            "username": customer.user_name or "",
            "deviceId": "",
            "factorNo": self._factor,
            "meterType": registration.meter_type,
            "meterNo": registration.meter_no,
            "initNum": money(registration.initial_reading, 4),
            "billingModel": registration.billing_mode,
            "payModel": registration.pay_mode,
            "companyCode": self._company,
            "sdateTime": self._now_text(),
            "priceCode": registration.price_code,
        }
        optional = {
            "address": customer.address,
            "phoneNum": customer.phone,
            "customerType": customer.customer_type,
            "overdraft": None if registration.overdraft is None else money(registration.overdraft, 2),
            "commNo": registration.comm_no,
            "initCycle": None if registration.init_cycle is None else money(registration.init_cycle, 4),
        }
        payload.update({key: value for key, value in optional.items() if value is not None})
        msg = await self._call("api/v1/collect/meter/1001", payload)
        self._learn_billing(registration.meter_no, registration.billing_mode)
        return {"meter_id": registration.meter_no, "device_id": _device_id(msg)}

    @override
    async def async_deregister_meter(self, meter: MeterData, reading: Decimal, reason: str) -> dict[str, Any]:
        """1002: deregister a meter with its final reading."""
        payload = {
            **self._meter_fields(meter),
            "initNum": money(reading, 4),
            "reason": (reason or "Deregistered from Home Assistant")[:100],
            "sdateTime": self._now_text(),
        }
        msg = await self._call("api/collect/meter/1002", payload)
        return {"meter_id": meter.meter_id, "device_id": _device_id(msg)}

    @override
    async def async_replace_meter(self, meter: MeterData, replacement: MeterReplacement) -> dict[str, Any]:
        """1009: replace a meter by one of the same factor."""
        payload = {
            **self._meter_fields(meter),
            "newMeterType": replacement.new_meter_type,
            "newMeterNo": replacement.new_meter_no,
            "newCommNo": replacement.new_comm_no or "",
            "oldNum": money(replacement.old_reading, 4),
            "newNum": money(replacement.new_reading, 4),
        }
        msg = await self._call("api/collect/meter/1009", payload)
        return {"meter_id": replacement.new_meter_no, "old_meter_id": meter.meter_id, "device_id": _device_id(msg)}

    @classmethod
    @override
    def refusal_envelope(cls, message: str) -> dict[str, object]:
        """echoCode 9999 with the reason as echoMsg, as the DAS answers a bad request."""
        return {"echoCode": "9999", "echoMsg": message}

    @override
    def parse_push(self, path: str, headers: Mapping[str, str], body: bytes, now: datetime) -> PushResult:
        """Authenticate and parse 2001/2002/2003."""
        path = path.strip("/")
        if path not in self.push_paths:
            raise _reject(f"unknown push path {path!r}", 404, "9999", "unknown_path")
        problem = signing.verify(
            headers,
            str(self._config[CONF_APP_CODE]),
            str(self._config[CONF_APP_SECRET]),
            now=now,
            tz=self._tz,
            window=PUSH_WINDOW,
        )
        if problem is not None:
            raise _reject(problem, 401, "0101", problem)
        try:
            data = json.loads(body.decode("utf-8-sig"))
        except (UnicodeDecodeError, ValueError) as err:
            raise _reject(f"body is not JSON: {err}", 400, "9999", "malformed") from err
        if not isinstance(data, dict):
            raise _reject("body is not a JSON object", 400, "9999", "malformed")
        serial = as_str(data.get("serialNo"))
        meter_id = as_str(data.get("meterNo"))
        if not serial or not meter_id:
            raise _reject("serialNo and meterNo are required", 400, "9999", "malformed")
        stamp = now.astimezone(self._tz).strftime(signing.TIME_FORMAT)
        ack = {"serialNo": serial, "deviceId": as_str(data.get("deviceId")) or "", "rdateTime": stamp}
        if path == PUSH_READING:
            reading = self._push_reading(meter_id, data)
            self._learn_billing(meter_id, as_str(data.get("billingModel")))
            self._learn_add_gas(meter_id, data.get("addGas"))
            directives, results = self._answer_report(meter_id, serial, reading.valve or ValveState.UNKNOWN)
            return PushResult(
                serial=serial,
                response={
                    "echoCode": "0000",
                    "serialNo": serial,
                    "userNo": as_str(data.get("userNo")) or "",
                    "deviceId": ack["deviceId"],
                    "factorNo": as_str(data.get("factorNo")) or self._factor,
                    "meterNo": meter_id,
                    # 2 = leave the valve alone, unless a centre-billed meter is owed a directive.
                    "valvecontrol": "2",
                    **directives,
                    "rdateTime": stamp,
                },
                reading=reading,
                commands=tuple(results),
            )
        response = {"echoCode": "0000", "echoMsg": ack}
        if path == PUSH_COMMAND:
            sent = as_str(data.get("sendSerialNo"))
            state = as_str(data.get("excuteState"))
            if not sent or state not in {"1", "2"}:
                raise _reject("sendSerialNo and excuteState are required", 400, "9999", "malformed")
            result = CommandResult(
                meter_id=meter_id, serial=sent, success=state == "1", kind=as_str(data.get("paramNo"))
            )
            return PushResult(serial=serial, response=response, command=result)
        code = as_str(data.get("alarmType")) or ""
        alarm = Alarm(
            meter_id=meter_id,
            type=ALARM_TYPES.get(code.zfill(2), AlarmType.OTHER),
            priority=PRIORITIES.get(as_str(data.get("alarmPriority")) or "", AlarmPriority.HIGH),
            message=as_str(data.get("alarmContent")) or "",
            code=code,
            time=as_datetime(data.get("sdateTime"), self._tz),
        )
        return PushResult(serial=serial, response=response, alarm=alarm)

    def _push_reading(self, meter_id: str, data: dict[str, Any]) -> MeterData:
        day = as_str(data.get("readDate")) or ""
        clock = (as_str(data.get("readTime")) or "").replace(":", "")
        return MeterData(
            meter_id=meter_id,
            user_no=as_str(data.get("userNo")),
            device_id=as_str(data.get("deviceId")),
            reading=as_decimal(data.get("readNum")),
            reading_time=as_datetime(f"{day}{clock}", self._tz),
            balance=as_decimal(data.get("meterBalance")),
            price=as_decimal(data.get("curPrice")),
            total_gas=as_decimal(data.get("sumUseGas")),
            total_money=as_decimal(data.get("sumUseAmount")),
            battery_voltage=as_decimal(data.get("batteryCap")),
            signal_strength=as_decimal(data.get("semaphore")),
            temperature=as_decimal(data.get("temperature")),
            pressure=as_decimal(data.get("pressureValue")),
            std_volume=as_decimal(data.get("standardTotalValue")),
            work_volume=as_decimal(data.get("workTotalValue")),
            std_flow=as_decimal(data.get("standardInstantValue")),
            work_flow=as_decimal(data.get("workInstantValue")),
            valve=VALVE_2001.get(as_str(data.get("valveState")) or "", ValveState.UNKNOWN),
        )


def _account(msg: Mapping[str, Any]) -> dict[str, str] | None:
    """1014's customer data (the spec spells the base reading beseNum; baseNum accepted too)."""
    base = as_decimal(msg.get("beseNum", msg.get("baseNum")))
    found = {
        "user_name": as_str(msg.get("userName")),
        "address": as_str(msg.get("address")),
        "user_type": as_str(msg.get("userType")),
        "set_up_date": None if (day := as_date(msg.get("setUpTime"))) is None else day.isoformat(),
        "base_reading": None if base is None else format(base, "f"),
    }
    return {key: value for key, value in found.items() if value} or None


def _reject(message: str, status: int, code: str, reason: str) -> PushError:
    return PushError(message, status=status, response={"echoCode": code, "echoMsg": message}, reason=reason)


def _device_id(message: Any) -> str | None:
    return as_str(message.get("deviceId")) if isinstance(message, dict) else None
