"""IoT meter data platform: data API (company_no + data_api_key) and command queue (login token)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
from collections.abc import Mapping
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Any, ClassVar, override
from urllib.parse import urlencode

from ..base import MeterClient
from ..errors import (
    AuthenticationError,
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
from ..http import check_status, decode_json, post_raw
from ..models import (
    Alarm,
    AlarmType,
    Capability,
    ChargeCounters,
    CommandKind,
    CommandReceipt,
    CommandRef,
    CommandResult,
    ConfigField,
    DailySpend,
    HistoryPoint,
    MeterData,
    PriceSchedule,
    PushResult,
)
from ..parse import as_datetime, as_decimal, as_int, as_str, lower_keys
from .auth import CONF_CONTROL_URL, CONF_LOGIN, CONF_PASSWORD, is_token_refusal, missing_control_fields
from .control import TIME_FORMAT, WAITING, ctrl_record, ladder, open_account_data, parse_expiration, result_of
from .records import (
    alarm_from_record,
    history_point,
    meter_from_record,
    money_point,
    record_key,
    spend_between,
)

_LOGGER = logging.getLogger(__name__)


def _as_int_or_text(text: str) -> int | str:
    number = as_int(text)
    return text if number is None else number


CONF_DATA_URL = "data_url"
CONF_COMPANY_NO = "company_no"
CONF_DATA_KEY = "data_api_key"

PAGE_SIZE = 100
# A command the meter has not taken within this time is given up by the platform (state 6). Home Assistant's
# ledger gives a command without a timeout of its own as long (COMMAND_EXPIRY), so neither outlives the other.
COMMAND_TIMEOUT = timedelta(hours=24)
# Alarms and events are queried by their own time (3.2.2's filter), but a meter may upload one hours after it
# happened: each catch-up looks this far back and keeps what the platform received since the last one.
LATE_UPLOADS = timedelta(days=3)
# How often the catch-up looks LATE_UPLOADS back (other polls read only the new window: a few requests, not dozens).
LATE_SCAN_EVERY = timedelta(hours=1)
# The changes a queued command's parameters take, by kind (update_command); money kinds keep theirs.
CHANGEABLE = frozenset({CommandKind.SET_REMAINING, CommandKind.SET_CUMULATIVE})
BATCH_PATHS = {
    "cancel": "api/Conf/CtrlData/CancelMulti",
    "retry": "api/Conf/CtrlData/RetryMulti",
    "delete": "api/Conf/CtrlData/DeleteMulti",
    "update": "api/Conf/CtrlData/UpdateMulti",
}
# Log in again this long before the token expires.
TOKEN_MARGIN = timedelta(minutes=5)
PUSH_READING = "api/Data/MeterData/Add"
PUSH_ALARM = "api/Data/DeviceAlarm/Add"
PUSH_EVENT = "api/Data/DeviceEvent/Add"
PUSH_REPORT = "api/Conf/CtrlData/Report"

METER_FIELDS = frozenset(
    {
        "reading",
        "work_volume",
        "reading_time",
        "std_flow",
        "work_flow",
        "temperature",
        "pressure",
        "magnetic_attacks",
        "this_month",
        "last_month",
        "this_cycle",
        "last_cycle",
        "balance",
        "remain_volume",
        "price",
        "total_recharge",
        "state_code",
        "state_message",
        "rssi",
        "battery_voltage",
        "battery_level",
        "valve",
        "flags",
    }
)
RTU_FIELDS = frozenset({"reading_time", "state_code", "state_message", "rssi", "battery_voltage", "flags"})
# Alarm and event kinds the platform's words are read as (records.ALARM_WORDS, EVENT_WORDS).
ALARM_KINDS = (
    AlarmType.GAS_LEAK,
    AlarmType.TAMPERING,
    AlarmType.MAGNETIC_INTERFERENCE,
    AlarmType.VALVE_FAULT,
    AlarmType.BATTERY_CUT,
    AlarmType.BATTERY_FAULT,
    AlarmType.REED_SWITCH_FAULT,
    AlarmType.COMMUNICATION_FAULT,
    AlarmType.DOOR_OPEN,
    AlarmType.MAINS_LOST,
    AlarmType.FENCE_ALARM,
    AlarmType.VIBRATION,
    AlarmType.DEVICE_ALARM,
)
EVENT_KINDS = (
    AlarmType.VALVE_OPENED,
    AlarmType.VALVE_CLOSED,
    AlarmType.RECHARGED,
    AlarmType.PRICE_CHANGED,
    AlarmType.METER_REPLACED,
    AlarmType.DEVICE_EVENT,
)
CONTROL = frozenset(
    {
        Capability.VALVE,
        Capability.RECHARGE,
        Capability.SET_PRICE,
        Capability.CANCEL_COMMAND,
        Capability.COMMAND_QUEUE,
        Capability.READ_PRICE,
        Capability.SET_REMAINING,
        Capability.CHARGE_STATE,
        Capability.OPEN_ACCOUNT,
        Capability.SET_CUMULATIVE,
        Capability.RELEASE_FORCE,
    }
)


def _envelope(raw: bytes) -> dict[str, Any]:
    """An answer's JSON object, keys in lower case."""
    decoded = decode_json(raw)
    if not isinstance(decoded, dict):
        raise ResponseError("answer is not a JSON object")
    return lower_keys(decoded)


class IotMeterClient(MeterClient):
    """Client of the IoT meter data platform (processor iotmeterv1)."""

    backend: ClassVar[str] = "iotmeter"
    alarm_types: ClassVar[tuple[AlarmType, ...]] = ALARM_KINDS
    event_types: ClassVar[tuple[AlarmType, ...]] = EVENT_KINDS
    config_fields: ClassVar[tuple[ConfigField, ...]] = (
        ConfigField(CONF_DATA_URL, kind="url"),
        ConfigField(CONF_COMPANY_NO, identity=True),
        ConfigField(CONF_DATA_KEY, kind="password", credential=True),
        ConfigField(CONF_CONTROL_URL, kind="url", required=False),
        ConfigField(CONF_LOGIN, required=False),
        ConfigField(CONF_PASSWORD, kind="password", required=False, credential=True),
    )
    form_placeholders: ClassVar[Mapping[str, str]] = {
        "example_data_url": "http://120.55.75.63:2102",
        "example_control_url": "http://120.55.75.63:2101",
    }
    push_paths: ClassVar[tuple[str, ...]] = (PUSH_READING, PUSH_ALARM, PUSH_EVENT, PUSH_REPORT)
    max_price_tiers: ClassVar[int] = 5
    money_places: ClassVar[int] = 2
    default_timezone: ClassVar[str] = "Asia/Shanghai"
    manufacturer: ClassVar[str] = "IoT meter platform"
    currency: ClassVar[str] = "CNY"
    uses_charge_counters: ClassVar[bool] = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        """Control features only with a control URL, a login name and a password."""
        super().__init__(*args, **kwargs)
        # The last wide (late-upload) catch-up: when it ran, and from which receive time it kept records.
        self._wide_at: datetime | None = None
        self._wide_from: datetime | None = None
        self.fields = METER_FIELDS
        reading = {
            Capability.PUSH,
            Capability.HISTORY,
            Capability.DAILY_SPEND,
            Capability.ALARM_HISTORY,
            Capability.SINGLE_READ,
        }
        # An entry saved with only part of them (before the config flow refused that) stays read-only and says why.
        self.control_missing = missing_control_fields(self._config)
        self.has_control = not self.control_missing and bool(as_str(self._config.get(CONF_CONTROL_URL)))
        self.capabilities = frozenset(reading | (CONTROL if self.has_control else set()))
        self._token: str | None = None
        self._token_expires: datetime | None = None
        self._login_lock = asyncio.Lock()

    @classmethod
    @override
    def unique_id(cls, config: Mapping[str, Any]) -> str:
        """Account identity: the project company number."""
        return f"iotmeter_{config[CONF_COMPANY_NO]}".lower()

    @classmethod
    @override
    def title(cls, config: Mapping[str, Any]) -> str:
        """Title shown for the entry."""
        return f"IoT meter platform {config[CONF_COMPANY_NO]}"

    @override
    def fields_for(self, meter: MeterData) -> frozenset[str]:
        """RTUs report doors, mains and fences, not volumes or money."""
        return RTU_FIELDS if meter.kind == "rtu" else METER_FIELDS

    @override
    def supports_for(self, capability: Capability, meter: MeterData) -> bool:
        """An RTU takes no meter commands."""
        return self.supports(capability) and not (meter.kind == "rtu" and capability in CONTROL)

    @override
    def unsupported_reason(self, capability: Capability, meter: MeterData | None) -> str:
        """Read-only entries (no control login) and RTUs say so."""
        if capability in CONTROL and not self.has_control:
            return "control_incomplete" if self.control_missing else "read_only_entry"
        if meter is not None and meter.kind == "rtu" and capability in CONTROL:
            return "rtu_no_commands"
        return super().unsupported_reason(capability, meter)

    # --- transport ----------------------------------------------------------------------------

    def _now(self) -> datetime:
        return datetime.now(self._tz)

    async def _post(
        self,
        base: str,
        path: str,
        body: Any,
        headers: Mapping[str, str],
        *,
        credentials: tuple[str, ...] = (),
        same_as: str | None = None,
    ) -> dict[str, Any]:
        """One call: the envelope when State is success; HTTP 401/403 refuse `credentials`. With `same_as`, an
        answer with the very bytes of the last one of that name is not parsed again."""
        self.request_count += 1
        url = f"{base.rstrip('/')}/{path}"
        # Errors name the path without its query: Login's carries the password's MD5, which logs in as well.
        shown = url.partition("?")[0]
        try:
            answer = await post_raw(
                self._session,
                url,
                json.dumps(body, ensure_ascii=False).encode(),
                headers={"Content-Type": "application/json", **headers},
                timeout=self.request_timeout,
            )
        except MeterCloudError as err:
            if shown == url:
                raise
            raise _retold(err, str(err).replace(url, shown)) from err.__cause__
        if answer.status in (401, 403):
            message = _message(answer.body) or f"{shown} answered HTTP {answer.status}"
            raise AuthenticationError(message, code=str(answer.status), fields=credentials)
        check_status(shown, answer.status)
        envelope = self.same_answer(same_as, answer.body, _envelope)
        if as_str(envelope.get("state")) != "success":
            raise CommandError(as_str(envelope.get("message")) or "failed", code="failed")
        return envelope

    async def _data(self, path: str, body: Any, *, same_as_last: bool = False) -> dict[str, Any]:
        """A data call; `same_as_last`: a poll page, not parsed again when its bytes are the last ones'."""
        headers = {"company_no": str(self._config[CONF_COMPANY_NO]), "data_api_key": str(self._config[CONF_DATA_KEY])}
        return await self._post(
            str(self._config[CONF_DATA_URL]),
            path,
            body,
            headers,
            credentials=(CONF_DATA_KEY,),
            same_as=path if same_as_last else None,
        )

    async def _poll_page(self, path: str, body: Any) -> dict[str, Any]:
        return await self._data(path, body, same_as_last=True)

    async def _login(self) -> str:
        async with self._login_lock:
            if self._token and self._token_expires and self._now() < self._token_expires - TOKEN_MARGIN:
                return self._token
            password = hashlib.md5(str(self._config[CONF_PASSWORD]).encode()).hexdigest()
            query = "api/Conf/Account/Login?" + urlencode({"loginName": str(self._config[CONF_LOGIN]), "pwd": password})
            try:
                envelope = await self._post(str(self._config[CONF_CONTROL_URL]), query, {}, {})
            except (AuthenticationError, CommandError) as err:
                # The platform's own words (用户名或密码错误): the control login, not the data key, needs fixing.
                raise AuthenticationError(
                    str(err), code=err.code, reason="invalid_control_auth", fields=(CONF_PASSWORD,)
                ) from err
            data = envelope.get("data")
            token = as_str(data.get("token")) if isinstance(data, dict) else None
            if token is None:
                raise ResponseError("login answer has no token")
            self._token = token
            expires = parse_expiration(data.get("expiration"), self._tz) if isinstance(data, dict) else None
            self._token_expires = expires or self._now() + timedelta(minutes=30)
            return token

    async def _control(self, path: str, body: Any = None) -> dict[str, Any]:
        """A command-queue call with a valid token; a refused token costs one new login and one repeat."""
        if not self.has_control:
            raise UnsupportedError("no control credentials")
        refused: MeterCloudError | None = None
        for _attempt in (1, 2):
            token = await self._login()
            try:
                return await self._post(
                    str(self._config[CONF_CONTROL_URL]), path, {} if body is None else body, {"token": token}
                )
            except MeterCloudError as err:
                if not is_token_refusal(err):
                    raise
                # The token is checked before the call is looked at: nothing was done, so asking again is safe.
                refused = err
                if self._token == token:  # not one a concurrent call has just fetched
                    self._token = None
        # The login worked, its fresh token did not: no reauth (the password is right), and no third try.
        raise CloudConnectionError(
            f"the platform refused a fresh control token: {refused}",
            code=refused.code if refused else None,
            reason="token_refused",
        ) from refused

    async def _pages(self, call: Any, path: str, body: Any) -> list[dict[str, Any]]:
        """Every page of a list endpoint, one request per page (Totalcount / totalcount alike)."""
        rows: list[dict[str, Any]] = []
        start = 0
        while True:
            envelope = await call(f"{path}?startrow={start}&rowcount={PAGE_SIZE}", body)
            page = envelope.get("data")
            if not isinstance(page, list):
                raise ResponseError(f"{path} answer has no Data list")
            rows.extend(row for row in page if isinstance(row, dict))
            total = as_int(envelope.get("totalcount"))
            start += len(page)
            if not page or total is None or start >= total:
                return rows

    # --- data ---------------------------------------------------------------------------------

    @override
    async def async_validate(self, *, credentials_only: bool = False) -> None:
        """One data call, and a login when control credentials are given (all three, or none)."""
        if self.control_missing:
            raise ConfigurationError(
                f"control settings need {', '.join(self.control_missing)} as well",
                reason="control_incomplete",
                fields=self.control_missing,
            )
        await self._data("api/Data/MeterData/GetRealList2?startrow=0&rowcount=1", {})
        if self.has_control:
            await self._login()

    @override
    async def async_get_meters(self) -> dict[str, MeterData]:
        """GetRealList2, page by page: meters and RTUs."""
        rows = await self._pages(self._poll_page, "api/Data/MeterData/GetRealList2", {})
        return self.unchanged_answer("GetRealList2", rows, self._real_row)

    def _real_row(self, row: Any) -> MeterData | None:
        """A GetRealList2 row's device: the last one when the row is the same as its device's last."""
        if not isinstance(row, dict):
            return None
        key = next((str(v) for k, v in row.items() if str(k).strip().lower() == "meter_comm_no"), None)
        return self.unchanged_or_built(key, row, self._record_meter)

    def _record_meter(self, row: Mapping[str, Any]) -> MeterData | None:
        return meter_from_record(row, self._tz)

    @override
    async def async_get_meter(self, meter_id: str) -> MeterData | None:
        """GetRealModel: one device's latest record."""
        envelope = await self._data(f"api/Data/MeterData/GetRealModel/{meter_id}", {})
        data = envelope.get("data")
        return meter_from_record(data, self._tz) if isinstance(data, dict) else None

    @staticmethod
    def _window(start: datetime, end: datetime) -> list[dict[str, int]]:
        """Query bodies for [start, end]: the filters are per calendar month."""
        bodies = []
        month = start.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        while month <= end:
            first = start if start > month else month
            next_month = (month + timedelta(days=32)).replace(day=1)
            last = min(end, next_month - timedelta(minutes=1))
            bodies.append(
                {
                    "year": month.year,
                    "month": month.month,
                    "start_day": first.day,
                    "start_hour": first.hour,
                    "start_minute": first.minute,
                    "end_day": last.day,
                    "end_hour": last.hour,
                    "end_minute": last.minute,
                }
            )
            month = next_month
        return bodies

    async def _frozen(self, meter: MeterData, start: datetime, end: datetime) -> list[dict[str, Any]]:
        """GetHistoryList2: the frozen (data_type 1) records of one meter between two instants."""
        rows: list[dict[str, Any]] = []
        for window in self._window(start.astimezone(self._tz), end.astimezone(self._tz)):
            body = {"meter_comm_no": meter.meter_id, "data_type": 1, **window}
            rows.extend(await self._pages(self._data, "api/Data/MeterData/GetHistoryList2", body))
        return rows

    @override
    async def async_history(self, meter: MeterData, start: datetime, end: datetime) -> list[HistoryPoint]:
        """GetHistoryList2: frozen (data_type 1) standard volumes, oldest first."""
        points: dict[datetime, HistoryPoint] = {}
        for row in await self._frozen(meter, start, end):
            point = history_point(row, self._tz)
            if point is not None and start <= point.time <= end:
                points[point.time] = point
        return [points[when] for when in sorted(points)]

    @override
    async def async_daily_spend(self, meter: MeterData, start: date, end: date) -> list[DailySpend]:
        """The money the meter deducted each day, from the balance and cumulative recharge of its frozen records.

        A frozen record at the start of a day closes the day before: day D's spend is what the records of D and D+1
        tell (the balance's fall plus what was recharged between them); a day without both records is left out.
        """
        first = datetime.combine(start, time(), self._tz)
        last = datetime.combine(end + timedelta(days=1), time(23, 59), self._tz)
        at: dict[date, tuple[datetime, Decimal, Decimal | None]] = {}
        for row in await self._frozen(meter, first, last):
            point = money_point(row, self._tz)
            if point is None:
                continue
            day = point[0].astimezone(self._tz).date()
            if day not in at or point[0] < at[day][0]:
                at[day] = point
        spends = []
        day = start
        while day <= end:
            after = day + timedelta(days=1)
            if day in at and after in at:
                spent = spend_between(at[day][1:], at[after][1:])
                if spent is not None:
                    spends.append(DailySpend(day, spent))
            day = after
        return spends

    @override
    async def async_alarms_since(self, since: datetime) -> list[Alarm]:
        """Alarms and events the platform received since `since`, oldest first.

        The query filters by the alarm's own time; a record's receive_time says whether it is new to us. Once an
        hour the window reaches LATE_UPLOADS back and keeps what was received since the previous such scan, so an
        alarm uploaded hours after it happened is caught within the hour; other polls read only the new window
        (re-seen records are de-duplicated by their key). Records without a receive_time count by their alarm time.
        """
        now = self._now()
        wide = self._wide_at is None or now - self._wide_at >= LATE_SCAN_EVERY
        received_from = (self._wide_from or since) if wide else since
        start = (received_from - LATE_UPLOADS if wide else since).astimezone(self._tz)
        alarms: list[Alarm] = []
        for window in self._window(start, now):
            for path, event in (("api/Data/DeviceAlarm/GetList2", False), ("api/Data/DeviceEvent/GetList2", True)):
                for row in await self._pages(self._data, path, window):
                    alarm = alarm_from_record(row, self._tz, event=event)
                    if alarm is None:
                        continue
                    received = as_datetime(lower_keys(row).get("receive_time"), self._tz) or alarm.time
                    if received is None or received >= received_from:
                        alarms.append(alarm)
        if wide:
            self._wide_at, self._wide_from = now, since
        return sorted(alarms, key=lambda a: a.time or since)

    # --- commands -----------------------------------------------------------------------------

    async def _queue(
        self,
        meter: MeterData,
        kind: CommandKind,
        data: Mapping[str, Any],
        serial: str,
        options: Mapping[str, Any] | None = None,
    ) -> CommandReceipt:
        """Add a command, unless the queue has one with this reference already (ours resent, or another's).

        `options`: `schedule` (when it may run: ctrl_time), `timeout` (a timedelta from then: ctrl_timeout),
        `upper` (the queue id of the command it waits for: upper_ctrl_id).
        """
        options = options or {}
        if meter.kind == "rtu":
            raise UnsupportedError("RTUs take no meter commands")
        existing = await self._pages(
            self._control, "api/Conf/CtrlData/GetList", {"ctrl_define_no": serial, "target_comm_no": meter.meter_id}
        )
        if existing:
            ctrl_id = as_str(lower_keys(existing[0]).get("ctrl_id"))
            raise DuplicateSerialError(f"the queue has {serial} already as task {ctrl_id}", vendor_id=ctrl_id)
        now = self._now()
        schedule: datetime | None = options.get("schedule")
        start = max(schedule.astimezone(self._tz), now) if schedule else now
        timeout: timedelta = options.get("timeout") or COMMAND_TIMEOUT
        upper = as_str(options.get("upper"))
        body = ctrl_record(
            kind, meter.meter_id, data, reference=serial, now=start, timeout=start + timeout, upper=upper
        )
        envelope = await self._control("api/Conf/CtrlData/Add", body)
        new_id = as_int(envelope.get("data"))
        if not new_id:
            raise ResponseError("CtrlData/Add returned no ctrl_id")
        return CommandReceipt(serial=serial, meter_id=meter.meter_id, accepted_at=now, vendor_id=str(new_id))

    @override
    def recharge_serial(self, reference: str) -> str:
        """ctrl_define_no: the reference itself, so a retry finds the queued command."""
        return reference

    @override
    async def async_set_valve(self, meter: MeterData, open_valve: bool, serial: str) -> CommandReceipt:
        """common.setvalveon / setvalveoff."""
        kind = CommandKind.VALVE_OPEN if open_valve else CommandKind.VALVE_CLOSE
        return await self._queue(meter, kind, {}, serial)

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
        """prepay.remotecharge: this charge, and the meter's remote charge count and total after it.

        The meter refuses (0xbb) numbers that do not follow on from its own remote_charge_state.
        """
        if counter is None or total is None:
            raise InvalidRequestError(
                "a remote charge needs the meter's charge count and total", reason="invalid_request"
            )
        data = {"charge_value": float(amount), "total_value": float(total), "charge_times": counter}
        return await self._queue(meter, CommandKind.RECHARGE, data, serial)

    @override
    def charge_counters_of(self, result: CommandResult) -> ChargeCounters | None:
        """remote_charge_state of a finished getchargestate: the meter's remote count and total."""
        data = result.data or {}
        times = as_int(data.get("remote_charge_times"))
        if result.kind != CommandKind.CHARGE_STATE.value or not result.success or times is None:
            return None
        return ChargeCounters(times=times, total=as_decimal(data.get("remote_total_value"), 3) or Decimal(0))

    @override
    async def async_set_price(self, meters: list[MeterData], schedule: PriceSchedule) -> dict[str, Any]:
        """prepay.setprice for each meter, in one AddMulti request."""
        now = self._now()
        data = ladder(schedule, self._tz, now)
        code = schedule.code or f"HA{now:%Y%m%d%H%M%S}"
        bodies = [
            ctrl_record(
                CommandKind.SET_PRICE,
                m.meter_id,
                data,
                reference=f"{code}-{m.meter_id}",
                now=now,
                timeout=now + COMMAND_TIMEOUT,
            )
            for m in meters
        ]
        envelope = await self._control("api/Conf/CtrlData/AddMulti", bodies)
        results = envelope.get("data")
        if not isinstance(results, list):
            raise ResponseError("AddMulti answer has no Data list")
        commands: dict[str, str] = {}
        refused: dict[str, str] = {}
        for raw in results:
            row = lower_keys(raw) if isinstance(raw, dict) else {}
            target = as_str(row.get("target_comm_no")) or ""
            ctrl_id = as_int(row.get("ctrl_id")) or 0
            if ctrl_id > 0 and row.get("result") is not False:
                commands[target] = str(ctrl_id)
            else:
                refused[target] = as_str(row.get("message")) or "refused"
        if not commands:
            raise CommandError("; ".join(f"{k}: {v}" for k, v in refused.items()) or "refused", code="failed")
        return {"price_code": code, "meters": list(commands), "commands": commands, "refused": refused}

    @override
    async def async_command(
        self, meter: MeterData, kind: CommandKind, params: Mapping[str, Any], *, serial: str
    ) -> CommandReceipt:
        """The other commands of 4.3.2 (and a valve move with options), each with `_queue`'s options in params."""
        data: Mapping[str, Any]
        if kind is CommandKind.OPEN_ACCOUNT:
            data = open_account_data(params, params["price"], self._tz, self._now())
        elif kind in CHANGEABLE:
            data = self._ctrl_data(kind, params)
        elif kind in (
            CommandKind.READ_PRICE,
            CommandKind.CHARGE_STATE,
            CommandKind.RELEASE_FORCE,
            CommandKind.VALVE_OPEN,
            CommandKind.VALVE_CLOSE,
        ):
            data = {}
        else:
            raise UnsupportedError(kind)
        return await self._queue(meter, kind, data, serial, params)

    @staticmethod
    def _ctrl_data(kind: CommandKind, params: Mapping[str, Any]) -> dict[str, Any]:
        if kind is CommandKind.SET_REMAINING:
            return {"remain_value": float(params["amount"])}
        return {"std_sum": float(params["std_sum"]), "work_sum": float(params.get("work_sum", params["std_sum"]))}

    async def _waiting_model(self, command: CommandRef, changes: Mapping[str, Any]) -> dict[str, Any]:
        """GetModel, then the whole record again with the changes (4.2.2 and 4.2.9 take the entity)."""
        envelope = await self._control(f"api/Conf/CtrlData/GetModel/{self._ctrl_id(command)}")
        data = envelope.get("data")
        if not isinstance(data, dict):
            raise ResponseError("GetModel answer has no Data object")
        row = lower_keys(data)
        if as_int(row.get("ctrl_state")) != WAITING:
            raise CommandError(f"task {command.vendor_id} is no longer waiting", reason="command_not_waiting")
        now = self._now()
        start = as_datetime(row.get("ctrl_time"), self._tz) or now
        deadline = as_datetime(row.get("ctrl_timeout"), self._tz) or start + COMMAND_TIMEOUT
        span = max(deadline - start, timedelta(minutes=1))
        if (schedule := changes.get("schedule")) is not None:
            start = max(schedule.astimezone(self._tz), now)
        timeout: timedelta = changes.get("timeout") or span
        row["ctrl_time"] = start.strftime(TIME_FORMAT)
        row["ctrl_timeout"] = (start + timeout).strftime(TIME_FORMAT)
        if any(key in changes for key in ("amount", "std_sum", "work_sum")):
            if command.kind not in CHANGEABLE:
                raise InvalidRequestError(f"{command.kind.value} keeps its parameters", reason="command_data_fixed")
            data_now = json.loads(row.get("ctrl_data") or "{}") if isinstance(row.get("ctrl_data"), str) else {}
            merged = {**data_now, **self._ctrl_data(command.kind, {**_current(command.kind, data_now), **changes})}
            row["ctrl_data"] = json.dumps(merged, ensure_ascii=False)
        return row

    @override
    async def async_update_command(
        self, meter: MeterData, command: CommandRef, changes: Mapping[str, Any]
    ) -> dict[str, Any]:
        """CtrlData/Update: a waiting command's time, timeout or parameters; the rest as the platform has it."""
        row = await self._waiting_model(command, changes)
        await self._control("api/Conf/CtrlData/Update", row)
        return {key: row.get(key) for key in ("ctrl_id", "ctrl_time", "ctrl_timeout", "ctrl_data")}

    @override
    async def async_delete_command(self, meter: MeterData, command: CommandRef) -> None:
        """CtrlData/Delete/{ctrl_id}."""
        await self._control(f"api/Conf/CtrlData/Delete/{self._ctrl_id(command)}")

    @override
    async def async_command_detail(self, meter: MeterData, command: CommandRef) -> str:
        """CtrlData/GetDetial/{ctrl_id} (the spec's spelling): the platform's text, lines ending in `</br>`."""
        envelope = await self._control(f"api/Conf/CtrlData/GetDetial/{self._ctrl_id(command)}")
        return as_str(envelope.get("data")) or ""

    @override
    async def async_commands_batch(
        self, operation: str, commands: list[tuple[MeterData, CommandRef]], changes: Mapping[str, Any]
    ) -> dict[str, str | None]:
        """CancelMulti, RetryMulti, DeleteMulti ([ctrl_id, ...]) or UpdateMulti (the records): one request."""
        if operation == "update":
            body: list[Any] = [await self._waiting_model(ref, changes) for _, ref in commands]
        else:
            # ctrl_id is an int in the document; one the platform spelled otherwise goes back as it came.
            body = [_as_int_or_text(self._ctrl_id(ref)) for _, ref in commands]
        envelope = await self._control(BATCH_PATHS[operation], body)
        results = envelope.get("data")
        if not isinstance(results, list) or len(results) != len(commands):
            raise ResponseError(f"{BATCH_PATHS[operation]} answer has not one result per command")
        outcome: dict[str, str | None] = {}
        for (_, ref), raw in zip(commands, results, strict=True):
            row = lower_keys(raw) if isinstance(raw, dict) else {}
            done = row.get("result") is True and (as_int(row.get("ctrl_id")) or 0) > 0
            outcome[ref.serial] = None if done else as_str(row.get("message")) or "refused"
        return outcome

    @override
    async def async_cancel_command(self, meter: MeterData, command: CommandRef) -> None:
        """CtrlData/Cancel/{ctrl_id}: only while the command waits or is being sent."""
        await self._control(f"api/Conf/CtrlData/Cancel/{self._ctrl_id(command)}")

    @override
    async def async_retry_command(self, meter: MeterData, command: CommandRef) -> None:
        """CtrlData/Retry/{ctrl_id}: a failed, cancelled or timed-out command goes back in the queue."""
        await self._control(f"api/Conf/CtrlData/Retry/{self._ctrl_id(command)}")

    @staticmethod
    def _ctrl_id(command: CommandRef) -> str:
        if not command.vendor_id:
            raise CommandError(command.serial, reason="no_pending_command")
        return command.vendor_id

    @override
    async def async_command_states(self, commands: list[CommandRef]) -> list[CommandResult]:
        """GetModel for each command under way (a handful at most; the Report push is the fast path)."""
        results = []
        for command in commands:
            if not command.vendor_id:
                continue
            try:
                envelope = await self._control(f"api/Conf/CtrlData/GetModel/{command.vendor_id}")
            except CommandError as err:
                # The platform no longer has it (deleted): it will not run; the others still count.
                results.append(
                    CommandResult(
                        meter_id=command.meter_id or "",
                        serial=command.serial,
                        success=False,
                        kind=command.kind.value,
                        vendor_id=command.vendor_id,
                        message=f"no longer in the platform's queue: {err}",
                    )
                )
                continue
            data = envelope.get("data")
            if isinstance(data, dict) and (result := result_of(data)) is not None:
                results.append(result)
        return results

    @override
    async def async_list_commands(self, meter: MeterData) -> list[dict[str, Any]]:
        """The platform's queue for one device, newest first."""
        rows = await self._pages(self._control, "api/Conf/CtrlData/GetList", {"target_comm_no": meter.meter_id})
        listed = []
        for row in rows:
            result = result_of(row)
            if result is None:
                continue
            state = lower_keys(row)
            listed.append(
                {
                    "ctrl_id": result.vendor_id,
                    "reference": result.serial,
                    "kind": result.kind,
                    "state": as_int(state.get("ctrl_state")),
                    "state_message": as_str(state.get("ctrl_state_msg")),
                    "time": as_str(state.get("ctrl_time")),
                    "result": dict(result.data) if result.data else None,
                }
            )
        return sorted(listed, key=lambda item: as_int(item["ctrl_id"]) or 0, reverse=True)

    # --- pushes -------------------------------------------------------------------------------

    @classmethod
    @override
    def refusal_envelope(cls, message: str) -> dict[str, object]:
        """The platform's own envelope: State failed with the reason."""
        return {"Data": None, "State": "failed", "Message": message}

    @override
    def parse_push(self, path: str, headers: Mapping[str, str], body: bytes, now: datetime) -> PushResult:
        """Push mode: authenticate by company_no + data_api_key, parse, answer with the spec's envelope."""
        path = path.strip("/")
        if path not in self.push_paths:
            raise _reject(f"unknown push path {path!r}", 404)
        company = headers.get("company_no") or ""
        key = headers.get("data_api_key") or ""
        if not hmac.compare_digest(company.encode(), str(self._config[CONF_COMPANY_NO]).encode()) or not (
            hmac.compare_digest(key.encode(), str(self._config[CONF_DATA_KEY]).encode())
        ):
            raise _reject("company_no or data_api_key refused", 401, reason="bad_key")
        try:
            data = json.loads(body.decode("utf-8-sig"))
        except (UnicodeDecodeError, ValueError) as err:
            raise _reject(f"body is not JSON: {err}", 400, reason="malformed") from err
        if path == PUSH_REPORT:
            return self._report(data)
        if not isinstance(data, dict):
            raise _reject("body is not a JSON object", 400, reason="malformed")
        if path == PUSH_READING:
            meter = meter_from_record(data, self._tz)
            if meter is None:
                raise _reject("meter_comm_no is required", 400, reason="malformed")
            row = lower_keys(data)
            # Re-sends are the same body: the whole body is the identity (two readings within one
            # second of acquisition_time are still two readings).
            canonical = json.dumps(data, sort_keys=True, ensure_ascii=False, default=str)
            serial = record_key("reading", meter.meter_id, canonical, "")
            # Frozen records (data_type 1) are history, not the meter's present state.
            reading = meter if as_int(row.get("data_type")) != 1 else None
            guid = base64.b64encode(hashlib.md5(serial.encode()).digest()).decode()
            return PushResult(serial=serial, response=_ok(guid), reading=reading)
        alarm = alarm_from_record(data, self._tz, event=path == PUSH_EVENT)
        if alarm is None or alarm.key is None:
            raise _reject("device_comm_no is required", 400, reason="malformed")
        # A stable id, so the platform's re-sends get the answer they got the first time.
        number = int(alarm.key[:7], 16)
        return PushResult(serial=alarm.key, response=_ok(number), alarm=alarm)

    def _report(self, data: Any) -> PushResult:
        items = data if isinstance(data, list) else [data]
        results = tuple(r for item in items if isinstance(item, dict) and (r := result_of(item)) is not None)
        if not results:
            raise _reject("no ctrl_id/ctrl_state in the report", 400, reason="malformed")
        answer = [
            {"ctrl_id": as_int(r.vendor_id), "meter_comm_no": r.meter_id, "result": True, "message": ""}
            for r in results
        ]
        serial = record_key("report", ",".join(f"{r.vendor_id}:{r.message}" for r in results), "", "")
        return PushResult(serial=serial, response=_ok(answer), commands=results)


def _current(kind: CommandKind, data: Mapping[str, Any]) -> dict[str, Any]:
    """A queued command's parameters in the words `_ctrl_data` takes."""
    if kind is CommandKind.SET_REMAINING:
        return {"amount": data.get("remain_value", 0)}
    return {"std_sum": data.get("std_sum", 0), "work_sum": data.get("work_sum", data.get("std_sum", 0))}


def _message(body: bytes) -> str | None:
    """The Message of an envelope that came with a refusal, if the body is one."""
    try:
        answer = decode_json(body)
    except ResponseError:
        return None
    return as_str(lower_keys(answer).get("message")) if isinstance(answer, dict) else None


def _retold(err: MeterCloudError, message: str) -> MeterCloudError:
    """The same error in other words."""
    return type(err)(
        message, code=err.code, reason=err.reason, outcome_unknown=err.outcome_unknown, request_sent=err.request_sent
    )


def _ok(data: Any) -> dict[str, Any]:
    return {"Data": data, "State": "success", "Message": ""}


def _reject(message: str, status: int, *, reason: str = "unknown_path") -> PushError:
    return PushError(message, status=status, response=IotMeterClient.refusal_envelope(message), reason=reason)


__all__ = ["IotMeterClient", "MeterCloudError"]
