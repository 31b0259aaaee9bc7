"""Cangnan Instrument (苍南仪表) smart cloud platform CNMCSP, CIS interface (RESTful)."""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Mapping
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, ClassVar, override

from . import signing
from .base import MeterClient
from .envelope import ENCODINGS, MACS, MODES, PADDINGS, Envelope
from .errors import (
    CloudConnectionError,
    CommandError,
    ConfigurationError,
    DuplicateSerialError,
    InvalidRequestError,
    MeterCloudError,
    PushError,
    ResponseError,
    UnsupportedError,
)
from .http import decode_json, post_bytes
from .models import (
    Alarm,
    AlarmPriority,
    AlarmType,
    Capability,
    CommandKind,
    CommandReceipt,
    CommandRef,
    ConfigField,
    CustomerInfo,
    MeterData,
    MeterRegistration,
    MeterReplacement,
    MeterStatus,
    PriceSchedule,
    PushResult,
    ValveState,
)
from .parse import as_datetime, as_decimal, as_int, as_str, lower_keys, money

_LOGGER = logging.getLogger(__name__)

CONF_BASE_URL = "base_url"
CONF_APP_TOKEN = "app_token"  # noqa: S105
CONF_APP_SECRET = "app_secret"  # noqa: S105
CONF_DATA_FROM = "data_from"
CONF_BILLING = "billing_side"
CONF_METERS = "meters"
CONF_KEY = "encryption_key"
CONF_MODE = "encryption_mode"
CONF_PADDING = "encryption_padding"
CONF_MAC = "encryption_mac"
CONF_ENCODING = "encryption_encoding"

BILLING_METER = "meter"
BILLING_SYSTEM = "system"
TIME_FORMAT = "%Y-%m-%d %H:%M:%S"
# Chapter 3: money in RMB and readings in m³, both with 4 decimals.
PLACES = 4
# ReadCurrentData takes a list of meters; the document sets no limit, our strict simulator (like a cautious
# platform) takes at most 100. Batches keep each answer small (~30 KB) and a bad pair's damage local. A pair
# refused alone is asked alone from then on, so it costs one request a poll. A platform that refuses a batch as
# malformed (SIZE_CODES: it may count the meters) is asked again in batches of the next size down this ladder, and
# the size it then answered is used from then on, across restarts ("read_batch" in the client's store).
BATCH_SIZES = (100, 50, 20, 10, 5, 2, 1)
SIZE_CODES = frozenset({"80002003"})
# Batch bodies kept for the next poll (_read); a steady account of 1000 meters uses 10.
READ_REQUESTS_KEPT = 256
BATCHES_IN_FLIGHT = 2
PUSH_READING = "reading"
PUSH_ALARM = "alarm"
PUSH_WINDOW = timedelta(minutes=5)

# Chapter 8 dictionaries.
VALVE = {"01": ValveState.OPEN, "00": ValveState.CLOSED, "10": ValveState.MOVING, "11": ValveState.FAULT}
# The alarm codes are ours to define (6.2: "由 CIS 系统定义"); README lists them for the vendor.
ALARM_TYPES = {
    "01": AlarmType.COMMUNICATION_FAULT,
    "02": AlarmType.GAS_LEAK,
    "03": AlarmType.REED_SWITCH_FAULT,
    "04": AlarmType.VALVE_LEAK,
    "05": AlarmType.VALVE_FAULT,
    "06": AlarmType.BATTERY_FAULT,
    "07": AlarmType.MAGNETIC_INTERFERENCE,
    "08": AlarmType.LOW_BALANCE,
    "09": AlarmType.TAMPERING,
}
ALARM_PRIORITY = {
    AlarmType.MAGNETIC_INTERFERENCE: AlarmPriority.MEDIUM,
    AlarmType.LOW_BALANCE: AlarmPriority.MEDIUM,
    AlarmType.COMMUNICATION_FAULT: AlarmPriority.MEDIUM,
}

# Chapter 7. Codes 80002013 and 80002029 appear twice in the spec with related meanings; one
# message covers both. Codes not listed become a generic refusal carrying the vendor's text.
ERRORS: dict[str, tuple[type[MeterCloudError], str]] = {
    "80002001": (CommandError, "request_unparsable"),
    "80002002": (CommandError, "request_type_error"),
    "80001010": (CommandError, "vendor_storage_failed"),
    "80002003": (CommandError, "request_missing_field"),
    "80002009": (CommandError, "meter_exists"),
    "80002004": (CommandError, "price_invalid"),
    "80002007": (CommandError, "price_add_failed"),
    "80002005": (CommandError, "user_data_invalid"),
    "80002006": (CommandError, "meter_data_invalid"),
    "80002008": (CommandError, "account_add_failed"),
    "80002010": (CommandError, "remote_open_failed"),
    "80002011": (CommandError, "account_not_found"),
    "80002012": (CommandError, "account_modify_failed"),
    "80002013": (CommandError, "meter_user_mismatch"),
    "80002014": (CommandError, "reading_failed"),
    "80002015": (CommandError, "new_meter_exists"),
    "80002016": (CommandError, "meter_change_failed"),
    "80002017": (CommandError, "no_system_id"),
    "80002018": (CommandError, "meter_id_invalid"),
    "80002019": (CommandError, "valve_failed"),
    "80002020": (CommandError, "account_close_failed"),
    "80002021": (CommandError, "meter_number_change_failed"),
    "80002022": (CommandError, "purchase_count_failed"),
    "80002023": (CommandError, "account_inactive"),
    "80002024": (CommandError, "not_remote_meter"),
    "80002025": (CommandError, "suspend_failed"),
    "80002026": (CommandError, "resume_failed"),
    "80002027": (CommandError, "cancel_recharge_failed"),
    "80002028": (CommandError, "meter_model_not_found"),
    "80002029": (CommandError, "protocol_or_price_failed"),
    "80002030": (CommandError, "recharge_failed"),
    "80002031": (CommandError, "no_alarm_data"),
    "80002032": (CloudConnectionError, "peer_no_response"),
    "80002033": (CommandError, "trade_no_exists"),
    "80002034": (CommandError, "price_id_exists"),
    "80002035": (CommandError, "price_id_not_found"),
    "80002036": (CommandError, "serial_exists"),
    "80002037": (CommandError, "command_serial_not_found"),
    "80002038": (CommandError, "balance_adjust_failed"),
}
# A batch fails as a whole when one of its pairs is wrong: these codes make us split it to find which.
PAIR_CODES = frozenset({"80002011", "80002013", "80002017"})
# The platform already has this trade or serial number: ours resent (its answer was lost) or another
# terminal's. Only the command ledger knows which (lifecycle.py).
DUPLICATE_CODES = frozenset({"80002033", "80002036"})

MONEY_CAPABILITIES = frozenset(
    {Capability.RECHARGE, Capability.CANCEL_COMMAND, Capability.SET_PRICE, Capability.ADJUST_BALANCE}
)
METER_FIELDS = frozenset({"reading", "reading_time", "valve", "temperature", "pressure", "total_gas", "status"})
# Meter state (chapter 8): no documented call returns it; a row's reserved column may ("预留", any of these names).
METER_STATES = {
    "0": MeterStatus.OPENED,
    "1": MeterStatus.ACTIVE,
    "-1": MeterStatus.SUSPENDED,
    "-2": MeterStatus.CANCELLED,
}
STATE_KEYS = ("meterstate", "meterstatus", "state", "status")
MONEY_FIELDS = frozenset({"balance", "price", "total_money", "total_recharge"})
PAIR = re.compile(r"^\s*([^\s:;,/]+)\s*[:/]\s*([^\s:;,/]+)\s*$")


def parse_meter_list(text: str, *, allow_empty: bool = False) -> list[tuple[str, str]]:
    """`UserID:MeterID` pairs, one per line (or separated by ; or ,)."""
    pairs: list[tuple[str, str]] = []
    for line in re.split(r"[\n;,]+", text or ""):
        if not line.strip():
            continue
        match = PAIR.match(line)
        if match is None:
            raise ConfigurationError(line.strip(), reason="invalid_meter_list")
        pairs.append((match.group(1), match.group(2)))
    if (not pairs and not allow_empty) or len({meter for _, meter in pairs}) != len(pairs):
        raise ConfigurationError(text, reason="invalid_meter_list")
    return pairs


def format_meter_list(pairs: list[tuple[str, str]]) -> str:
    """The stored form of a meter list."""
    return "\n".join(f"{user}:{meter}" for user, meter in pairs)


def _state(row: Mapping[str, Any]) -> MeterStatus | None:
    """The meter state of a row (lower-case keys) that carries one; numbers may come as strings."""
    for key in STATE_KEYS:
        if (value := as_int(row.get(key))) is not None:
            return METER_STATES.get(str(value))
    return None


class CangnanClient(MeterClient):
    """Client of a CNMCSP platform for the meters an entry follows."""

    backend: ClassVar[str] = "cangnan"
    alarm_types: ClassVar[tuple[AlarmType, ...]] = (*ALARM_TYPES.values(), AlarmType.OTHER)
    config_fields: ClassVar[tuple[ConfigField, ...]] = (
        ConfigField(CONF_BASE_URL, kind="url"),
        ConfigField(CONF_APP_TOKEN, credential=True, identity=True),
        ConfigField(CONF_APP_SECRET, kind="password", credential=True),
        ConfigField(CONF_DATA_FROM, identity=True),
        ConfigField(CONF_BILLING, kind="select", default=BILLING_METER, options=(BILLING_METER, BILLING_SYSTEM)),
        ConfigField(CONF_METERS, kind="multiline"),
        ConfigField(CONF_KEY, kind="password", required=False, credential=True),
        ConfigField(CONF_MODE, kind="select", default="cbc", options=MODES),
        ConfigField(CONF_PADDING, kind="select", default="pkcs7", options=PADDINGS),
        ConfigField(CONF_MAC, kind="select", default="x919", options=MACS),
        ConfigField(CONF_ENCODING, kind="select", default="base64", options=ENCODINGS),
    )
    # The platform runs wherever the gas company hosts it: a pattern, not an example address.
    form_placeholders: ClassVar[Mapping[str, str]] = {"url_format": "http://IP:port"}
    push_paths: ClassVar[tuple[str, ...]] = (PUSH_READING, PUSH_ALARM)
    max_price_tiers: ClassVar[int] = 3
    money_places: ClassVar[int] = 2
    default_timezone: ClassVar[str] = "Asia/Shanghai"
    manufacturer: ClassVar[str] = "Cangnan"
    currency: ClassVar[str] = "CNY"
    meter_list_key: ClassVar[str | None] = CONF_METERS
    learns_account_state: ClassVar[bool] = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        """Read the billing side, the followed meters and the optional envelope."""
        super().__init__(*args, **kwargs)
        # An entry whose last meter was closed through Home Assistant follows none until more are added.
        self.pairs = parse_meter_list(str(self._config.get(CONF_METERS, "")), allow_empty=True)
        self.billing = self._config.get(CONF_BILLING, BILLING_METER)
        account = {
            Capability.SINGLE_READ,
            Capability.VALVE,
            Capability.REGISTER_METER,
            Capability.DEREGISTER_METER,
            Capability.REPLACE_METER,
            Capability.SUSPEND_METER,
            Capability.MODIFY_CUSTOMER,
            Capability.PUSH,
        }
        money_ops = MONEY_CAPABILITIES
        # System-side billing: the CIS (us) bills and the platform keeps no money; meter-side: the meter bills.
        if self.billing == BILLING_SYSTEM:
            self.capabilities = frozenset(account)
            self.fields = METER_FIELDS
        else:
            self.capabilities = frozenset(account | money_ops)
            self.fields = METER_FIELDS | MONEY_FIELDS
        key = as_str(self._config.get(CONF_KEY))
        self.envelope = (
            Envelope.from_config(
                key,
                self._config.get(CONF_MODE, "cbc"),
                self._config.get(CONF_PADDING, "pkcs7"),
                self._config.get(CONF_MAC, "x919"),
                self._config.get(CONF_ENCODING, "base64"),
            )
            if key
            else None
        )
        self.unknown_meters: set[str] = set()
        # Pairs the platform refused when asked alone: asked alone again, outside the batches, until it knows them.
        self._lone: set[tuple[str, str]] = set()
        # A ReadCurrentData batch's pairs → its JSON body and answer key (_read).
        self._read_requests: dict[tuple[tuple[str, str], ...], tuple[bytes, str]] = {}

    @override
    def unsupported_reason(self, capability: Capability, meter: MeterData | None) -> str:
        """System-side billing keeps no money on the platform."""
        if self.billing == BILLING_SYSTEM and capability in MONEY_CAPABILITIES:
            return "system_billing"
        return super().unsupported_reason(capability, meter)

    @classmethod
    @override
    def unique_id(cls, config: Mapping[str, Any]) -> str:
        """Account identity: the app token of a company."""
        return f"cangnan_{config[CONF_DATA_FROM]}_{config[CONF_APP_TOKEN]}".lower()

    @classmethod
    @override
    def title(cls, config: Mapping[str, Any]) -> str:
        """Title shown for the entry."""
        return f"Cangnan {config[CONF_DATA_FROM]}"

    @property
    def _data_from(self) -> str:
        return str(self._config[CONF_DATA_FROM])

    def _now(self) -> str:
        return datetime.now(self._tz).strftime(TIME_FORMAT)

    def _json(self, payload: dict[str, Any]) -> bytes:
        """A request's JSON body: the payload and our company (DataFrom)."""
        return json.dumps({**payload, "DataFrom": self._data_from}, ensure_ascii=False).encode()

    async def _call(self, path: str, payload: dict[str, Any] | bytes, *, same_as: str | None = None) -> dict[str, Any]:
        """Send one signed (and, if configured, sealed) request; return the answer on ReturnCode 0. `payload` is
        a dict, or its JSON body made already (_json). With `same_as`, an answer with the very bytes of the last
        one of that name is not parsed again."""
        self.request_count += 1
        headers = signing.request_headers(
            str(self._config[CONF_APP_TOKEN]), str(self._config[CONF_APP_SECRET]), self._tz
        )
        body = payload if isinstance(payload, bytes) else self._json(payload)
        if self.envelope is not None:
            body = self.envelope.seal(body)
        raw = await post_bytes(
            self._session,
            f"{str(self._config[CONF_BASE_URL]).rstrip('/')}/rest/Standard/{path}",
            body,
            headers=headers,
            timeout=self.request_timeout,
        )
        answer = self.same_answer(same_as, raw, self._decode)
        code = as_str(answer.get("returncode"))
        if code == "0":
            return answer
        if code is None:
            raise ResponseError("answer has no ReturnCode")
        message = as_str(answer.get("returnmessage")) or code
        error_cls, reason = ERRORS.get(code, (CommandError, "command_failed"))
        raise error_cls(message, code=code, reason=reason)

    def _decode(self, raw: bytes, *, sealed_only: bool = False) -> dict[str, Any]:
        """JSON object with lower-case keys; with an envelope, open it (errors may come unsealed)."""
        decoded = decode_json(raw)
        if not isinstance(decoded, dict):
            raise ResponseError("answer is not a JSON object")
        if self.envelope is not None and "Data" not in decoded:
            # Only a refusal may come in clear (the platform cannot seal what it could not open);
            # anything else without a MAC is not to be believed.
            code = as_str(lower_keys(decoded).get("returncode"))
            if sealed_only or code in (None, "0"):
                raise ResponseError("payload is not sealed although encryption is on")
        if self.envelope is not None and "Data" in decoded:
            decoded = decode_json(self.envelope.open(raw))
            if not isinstance(decoded, dict):
                raise ResponseError("decrypted answer is not a JSON object")
        return lower_keys(decoded)

    def _pair(self, meter: MeterData) -> dict[str, str]:
        return {"UserID": meter.user_no or "", "MeterID": meter.meter_id}

    # --- readings ---------------------------------------------------------------------------

    @override
    async def async_validate(self, *, credentials_only: bool = False) -> None:
        """Read every followed meter once; name the pairs the platform does not know (not on reauthentication)."""
        if not self.pairs:
            raise ConfigurationError("no meters", reason="invalid_meter_list")
        await self.async_get_meters()
        if self.unknown_meters and not credentials_only:
            raise ConfigurationError(", ".join(sorted(self.unknown_meters)), reason="unknown_meters")

    @override
    async def async_get_meters(self) -> dict[str, MeterData]:
        """ReadCurrentData in batches, a few in flight; a wrong pair costs only its own reading."""
        semaphore = asyncio.Semaphore(BATCHES_IN_FLIGHT)
        self.unknown_meters = set()

        async def run(batch: list[tuple[str, str]]) -> dict[str, MeterData]:
            async with semaphore:
                return await self._read(batch)

        known = [pair for pair in self.pairs if pair not in self._lone]
        size = self.batch_size
        batches = [known[i : i + size] for i in range(0, len(known), size)]
        batches += [[pair] for pair in self.pairs if pair in self._lone]
        meters: dict[str, MeterData] = {}
        for result in await asyncio.gather(*(run(batch) for batch in batches)):
            meters.update(result)
        return meters

    @override
    async def async_get_meter(self, meter_id: str) -> MeterData | None:
        """ReadCurrentData for one followed meter (after a command was accepted or confirmed)."""
        pair = next((pair for pair in self.pairs if pair[1] == meter_id), None)
        return None if pair is None else (await self._read([pair])).get(meter_id)

    @property
    def batch_size(self) -> int:
        """Meters per ReadCurrentData: the first of BATCH_SIZES, or the smaller size this platform was found to take."""
        learned = self._store_state.get("read_batch")
        return learned if isinstance(learned, int) and learned in BATCH_SIZES else BATCH_SIZES[0]

    async def _read(self, batch: list[tuple[str, str]]) -> dict[str, MeterData]:
        pairs = tuple(batch)
        if (request := self._read_requests.get(pairs)) is None:
            # The same batch every poll: its body and answer key are made once (1000 meters: 10 batches a poll).
            payload = {"Meters": [{"UserID": user, "MeterID": meter} for user, meter in batch]}
            if len(self._read_requests) >= READ_REQUESTS_KEPT:  # batches split and merged over months: start over
                self._read_requests.clear()
            request = self._read_requests[pairs] = (self._json(payload), " ".join(meter for _user, meter in batch))
        body, key = request
        try:
            answer = await self._call("reading/ReadCurrentData", body, same_as=key)
        except CommandError as err:
            if err.code in SIZE_CODES and len(batch) > 1:
                return await self._read_smaller(batch, err)
            if err.code not in PAIR_CODES:
                raise
            if len(batch) == 1:
                _LOGGER.debug("Meter %s is not known to the platform as %s: %s", batch[0][1], batch[0][0], err)
                self.unknown_meters.add(f"{batch[0][0]}:{batch[0][1]}")
                self._lone.add(batch[0])
                return {}
            half = len(batch) // 2
            return {**await self._read(batch[:half]), **await self._read(batch[half:])}
        rows = answer.get("readingdata")
        if not isinstance(rows, list):
            raise ResponseError("ReadCurrentData answer has no ReadingData list")
        if len(batch) == 1:
            self._lone.discard(batch[0])  # known again: back into the batches next poll
        # The same pairs answered as last time: the last answer's meters.
        return self.unchanged_answer(key, rows, self._row_read)

    async def _read_smaller(self, batch: list[tuple[str, str]], err: CommandError) -> dict[str, MeterData]:
        """A batch refused as malformed, asked again in batches of the next smaller size; when all of those were
        answered, that size is this platform's from then on. A pair refused alone still fails the poll (its data
        is what is malformed), and then nothing is learned."""
        size = next(size for size in BATCH_SIZES if size < len(batch))
        meters: dict[str, MeterData] = {}
        for start in range(0, len(batch), size):
            meters.update(await self._read(batch[start : start + size]))
        if size < self.batch_size:
            _LOGGER.debug("ReadCurrentData of %d meters refused (%s); asking %d at a time", len(batch), err, size)
            self._store_state["read_batch"] = size
            self._store_save()
        return meters

    def _row_read(self, raw: Any) -> MeterData | None:
        """A ReadCurrentData row's meter: the last one when the row is the same as its meter's last (keyed by the
        document's spelling; a row spelled otherwise is built every time)."""
        if not isinstance(raw, dict):
            return None
        return self.unchanged_or_built(as_str(raw.get("MeterID")), raw, self._raw_row)

    def _raw_row(self, raw: dict[str, Any]) -> MeterData | None:
        return self._row(lower_keys(raw))

    def _row(self, row: dict[str, Any]) -> MeterData | None:
        meter_id = as_str(row.get("meterid"))
        if meter_id is None:
            return None
        money_known = self.billing != BILLING_SYSTEM
        return MeterData(
            meter_id=meter_id,
            user_no=as_str(row.get("userid")),
            reading=as_decimal(row.get("reading"), PLACES),
            reading_time=as_datetime(row.get("readtime"), self._tz),
            valve=VALVE.get(as_str(row.get("valvestate")) or "", ValveState.UNKNOWN),
            temperature=as_decimal(row.get("temperature")),
            pressure=as_decimal(row.get("pressure")),
            total_gas=as_decimal(row.get("totalusedgas"), PLACES),
            total_recharge=as_decimal(row.get("totalbuymoney"), PLACES) if money_known else None,
            balance=as_decimal(row.get("remainmoney"), PLACES) if money_known else None,
            total_money=as_decimal(row.get("totalusedmoney"), PLACES) if money_known else None,
            price=as_decimal(row.get("price"), PLACES) if money_known else None,
            status=_state(row),
        )

    # --- commands ---------------------------------------------------------------------------

    @override
    async def async_set_valve(self, meter: MeterData, open_valve: bool, serial: str) -> CommandReceipt:
        """controlValve: 1010 opens, 2010 closes (the platform has no command serial; ours tracks it)."""
        await self._call("valve/controlValve", {**self._pair(meter), "Control": 1010 if open_valve else 2010})
        return CommandReceipt(serial=serial, meter_id=meter.meter_id)

    @override
    def recharge_serial(self, reference: str) -> str:
        """The reference is the trade number: the platform refuses a second trade with it (80002033)."""
        return reference

    async def _money(self, path: str, payload: dict[str, Any], meter: MeterData, serial: str) -> CommandReceipt:
        try:
            await self._call(path, payload)
        except CommandError as err:
            if err.code in DUPLICATE_CODES:
                raise DuplicateSerialError(str(err), code=err.code) from err
            raise
        return CommandReceipt(serial=serial, meter_id=meter.meter_id)

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
        """fee/recharge with TradeNo = the reference (the platform keeps no recharge counter of ours)."""
        payload = {
            **self._pair(meter),
            "TradeNo": serial,
            "RechargeTime": when.astimezone(self._tz).strftime(TIME_FORMAT),
            "RechargeAmt": money(amount, 4),
        }
        return await self._money("fee/recharge", payload, meter, serial)

    @override
    async def async_adjust_balance(
        self, meter: MeterData, amount: Decimal, reference: str, *, credit: bool, serial: str, when: datetime
    ) -> CommandReceipt:
        """fee/remainOption: CMDOption 1000 refunds (credits), 2000 deducts."""
        payload = {
            **self._pair(meter),
            "TradeNo": serial,
            "CMDOption": 1000 if credit else 2000,
            "OptionTime": when.astimezone(self._tz).strftime(TIME_FORMAT),
            "OptionAmt": money(amount, 4),
        }
        return await self._money("fee/remainOption", payload, meter, serial)

    @override
    async def async_cancel_command(self, meter: MeterData, command: CommandRef) -> None:
        """fee/cancelRecharge: only recharges can be cancelled, with their trade number and amount."""
        if command.kind is not CommandKind.RECHARGE or command.amount is None:
            raise UnsupportedError(f"{command.kind} cannot be cancelled on this platform")
        payload = {
            **self._pair(meter),
            "TradeNo": command.serial,
            "CancelTime": self._now(),
            "CancelAmt": money(command.amount, 4),
        }
        await self._call("fee/cancelRecharge", payload)

    def _price_fields(self, schedule: PriceSchedule, code: str) -> dict[str, Any]:
        if len(schedule.prices) > self.max_price_tiers:
            raise InvalidRequestError("more than 3 tiers", reason="invalid_price_schedule")
        if any(limit != limit.to_integral_value() for limit in schedule.ladder_limits):
            raise InvalidRequestError("tier limits must be whole m³", reason="ladder_not_integer")
        fields: dict[str, Any] = {"PriceID": code, "PriceMode": "101" if schedule.tiered else "100"}
        if schedule.version is not None:  # optional (VARCHAR(20)): never a made-up version
            fields["Version"] = schedule.version
        if schedule.effective_date is not None:
            fields["IniDate"] = f"{schedule.effective_date.isoformat()} 00:00:00"
        if schedule.tiered:
            fields["MonthCount"] = str(schedule.cycle_months or 12)
        for index, price in enumerate(schedule.prices, start=1):
            fields[f"Price{index}"] = money(price, 4)
        for index, limit in enumerate(schedule.ladder_limits, start=1):
            fields[f"Level{index}"] = int(limit)
        return fields

    @override
    async def async_set_price(self, meters: list[MeterData], schedule: PriceSchedule) -> dict[str, Any]:
        """changePrice for one meter, batchChangePrice for several (one request)."""
        code = schedule.code or f"HA{datetime.now(self._tz):%Y%m%d%H%M%S}"
        fields = {**self._price_fields(schedule, code), "ChangeTime": self._now()}
        if len(meters) == 1:
            await self._call("price/changePrice", {**self._pair(meters[0]), **fields})
        else:
            await self._call("price/batchChangePrice", {"Meters": [self._pair(m) for m in meters], **fields})
        return {"price_code": code, "meters": [m.meter_id for m in meters]}

    # --- account lifecycle ------------------------------------------------------------------

    def _customer_fields(self, customer: CustomerInfo) -> dict[str, str]:
        fields = {
            "UserName": customer.user_name,
            "UserType": customer.customer_type,
            "Phone": customer.phone,
            "FullAddrDetail": customer.address,
            "AddrDetail": customer.room,
            "BuildingName": customer.building,
        }
        return {key: value for key, value in fields.items() if value is not None}

    @override
    async def async_register_meter(self, registration: MeterRegistration) -> dict[str, Any]:
        """meteradd: open the account with its price; the new pair joins the followed meters."""
        missing = [
            name
            for name, value in (
                ("meter_type", registration.meter_type),
                ("meter_protocol", registration.meter_protocol),
                ("price_1", registration.price),
            )
            if not value
        ]
        if missing or registration.price is None:
            raise InvalidRequestError(", ".join(missing), reason="missing_field")
        meter_id = registration.meter_id or registration.meter_no
        code = registration.price_code or registration.price.code or f"HA{datetime.now(self._tz):%Y%m%d%H%M%S}"
        payload: dict[str, Any] = {
            "UserID": registration.user_no,
            "UserName": registration.customer.user_name or registration.user_no,
            **self._customer_fields(registration.customer),
            "PreSaving": money(registration.opening_balance or Decimal(0), 4),
            "MeterID": meter_id,
            "MeterNo": registration.meter_no,
            "MeterParamModel": registration.meter_type,
            "MeterProtocol": registration.meter_protocol,
            "MeterReading": money(registration.initial_reading, 4),
            **self._price_fields(registration.price, code),
        }
        if registration.fire_date is not None:
            payload["FireDate"] = f"{registration.fire_date.isoformat()} 00:00:00"
        await self._call("meter/meteradd", payload)
        # A followed meter the platform had lost may be opened again: it keeps one place in the list.
        self.pairs = [pair for pair in self.pairs if pair[1] != meter_id] + [(registration.user_no, meter_id)]
        return {"meter_id": meter_id, "user_no": registration.user_no}

    @override
    async def async_modify_customer(self, meter: MeterData, customer: CustomerInfo) -> dict[str, Any]:
        """metermodify: change the customer details (the ids cannot change)."""
        await self._call("meter/metermodify", {**self._pair(meter), **self._customer_fields(customer)})
        return {"meter_id": meter.meter_id}

    @override
    async def async_deregister_meter(self, meter: MeterData, reading: Decimal, reason: str) -> dict[str, Any]:
        """meterDelete: close the account and remove the meter (the API takes no reading or reason)."""
        await self._call("meter/meterDelete", self._pair(meter))
        self.stop_following(meter.meter_id)
        return {"meter_id": meter.meter_id}

    @override
    async def async_suspend_meter(self, meter: MeterData, suspend: bool) -> dict[str, Any]:
        """meterSuspend / meterResume."""
        await self._call("meter/meterSuspend" if suspend else "meter/meterResume", self._pair(meter))
        return {"meter_id": meter.meter_id, "status": (MeterStatus.SUSPENDED if suspend else MeterStatus.ACTIVE).value}

    @override
    async def async_replace_meter(self, meter: MeterData, replacement: MeterReplacement) -> dict[str, Any]:
        """meterChange: the account moves to the new meter (with the money transferred if given)."""
        if not replacement.new_meter_protocol:
            raise InvalidRequestError("new_meter_protocol", reason="missing_field")
        new_id = replacement.new_meter_id or replacement.new_meter_no
        payload: dict[str, Any] = {
            "UserID": meter.user_no or "",
            "OldMeterID": meter.meter_id,
            "OldENDREADING": money(replacement.old_reading, 4),
            "NewMeterID": new_id,
            "NewMeterNo": replacement.new_meter_no,
            "NewMeterParamModel": replacement.new_meter_type,
            "NewMeterProtocol": replacement.new_meter_protocol,
            "NewMeterReading": money(replacement.new_reading, 4),
            "ChangeTime": self._now(),
        }
        if replacement.transfer_amount is not None:
            payload["PreSaving"] = money(replacement.transfer_amount, 4)
        await self._call("meter/meterChange", payload)
        self.pairs = [(user, new_id if m == meter.meter_id else m) for user, m in self.pairs]
        return {"meter_id": new_id, "old_meter_id": meter.meter_id, "user_no": meter.user_no}

    @override
    def followed(self) -> frozenset[str]:
        """The MeterIDs of the entry's pairs (the platform has no call that lists the account)."""
        return frozenset(meter for _user, meter in self.pairs)

    @override
    def stop_following(self, meter_id: str) -> None:
        """Drop the meter's pair from the list."""
        self.pairs = [pair for pair in self.pairs if pair[1] != meter_id]

    @override
    def meter_list(self) -> str:
        """The followed meters after register/deregister/replace, in the stored form."""
        return format_meter_list(self.pairs)

    # --- pushes -----------------------------------------------------------------------------

    def _answer(self, code: str, message: str) -> bytes:
        body = json.dumps({"ReturnCode": code, "ReturnMessage": message}, ensure_ascii=False).encode()
        return self.envelope.seal(body) if self.envelope is not None else body

    @classmethod
    @override
    def refusal_envelope(cls, message: str) -> dict[str, object]:
        """ReturnCode 80002001 (the request cannot be taken) with the reason."""
        return {"ReturnCode": "80002001", "ReturnMessage": message}

    @override
    def push_refusal(self, message: str) -> bytes:
        """The refusal, sealed when the account uses the envelope."""
        return self._answer("80002001", message)

    def _reject(self, message: str, status: int, code: str, reason: str) -> PushError:
        return PushError(message, status=status, response=self._answer(code, message), reason=reason)

    @override
    def parse_push(self, path: str, headers: Mapping[str, str], body: bytes, now: datetime) -> PushResult:
        """Authenticate and parse chapter 6 pushes: real-time data (`reading`) and alarms (`alarm`)."""
        path = path.strip("/")
        if path not in self.push_paths:
            raise self._reject(f"unknown push path {path!r}", 404, "80002003", "unknown_path")
        problem = signing.verify(
            headers,
            str(self._config[CONF_APP_TOKEN]),
            str(self._config[CONF_APP_SECRET]),
            now=now,
            tz=self._tz,
            window=PUSH_WINDOW,
        )
        if problem is not None:
            raise self._reject(problem, 401, "401", problem)
        try:
            data = self._decode(body, sealed_only=True)
        except ResponseError as err:
            raise self._reject(str(err), 400, "80002001", "malformed") from err
        serial = as_str(data.get("requestserialno"))
        meter_id = as_str(data.get("meterno"))
        if not serial or not meter_id:
            raise self._reject("requestSerialNo and meterNo are required", 400, "80002003", "malformed")
        if as_str(data.get("datafrom")) not in (None, self._data_from):
            raise self._reject("DataFrom is another company", 400, "80002003", "malformed")
        response = self._answer("0", "接口功能执行成功")
        if path == PUSH_READING:
            reading = MeterData(
                meter_id=meter_id,
                user_no=as_str(data.get("userno")),
                reading=as_decimal(data.get("reading"), PLACES),
                reading_time=as_datetime(data.get("createdate"), self._tz),
                valve=VALVE.get(as_str(data.get("valvestate")) or ""),
                temperature=as_decimal(data.get("temperature")),
                pressure=as_decimal(data.get("pressure")),
                status=_state(data),
            )
            return PushResult(serial=serial, response=response, reading=reading)
        code = as_str(data.get("alarmtype")) or ""
        kind = ALARM_TYPES.get(code.zfill(2), AlarmType.OTHER)
        alarm = Alarm(
            meter_id=meter_id,
            type=kind,
            priority=ALARM_PRIORITY.get(kind, AlarmPriority.HIGH),
            message=as_str(data.get("alarmmessage")) or "",
            code=code,
            time=as_datetime(data.get("alarmtime"), self._tz),
        )
        return PushResult(serial=serial, response=response, alarm=alarm)
