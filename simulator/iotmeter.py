"""IoT meter data platform simulator (spec 002): the data API, the iotmeterv1 control API and its pushes."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import math
import random
import secrets
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from datetime import date, datetime, time, timedelta, tzinfo
from decimal import ROUND_HALF_UP, Decimal
from functools import partial
from typing import Any, override
from zoneinfo import ZoneInfo

import aiohttp
from aiohttp import web

from .common import FAIL_MODES, SimulatorBase, dumps, read_body, reply

DEFAULT_TZ = ZoneInfo("Asia/Shanghai")
WIRE_FORMAT = "%Y-%m-%dT%H:%M:%S"
HISTORY_DAYS = 60
RESEND_DAYS = 7  # 1.1: the platform keeps undelivered pushes for 7 days
DEFAULT_TIMEOUT = timedelta(days=1)
MAX_ROWS = 100
METER, RTU = 1, 2
PROCESSOR = "iotmeterv1"
Q3 = Decimal("0.001")
ZERO = Decimal("0.000")
_DATA, _CTRL = "api/Data", "api/Conf/CtrlData"
# Short name (what fail_next and .requests use) → route. The two GetList2 need their controller to differ.
ENDPOINTS = {
    "GetRealModel": f"{_DATA}/MeterData/GetRealModel/{{meter_comm_no}}",
    "GetRealList2": f"{_DATA}/MeterData/GetRealList2",
    "GetHistoryList2": f"{_DATA}/MeterData/GetHistoryList2",
    "DeviceAlarm/GetList2": f"{_DATA}/DeviceAlarm/GetList2",
    "DeviceEvent/GetList2": f"{_DATA}/DeviceEvent/GetList2",
    "Login": "api/Conf/Account/Login",
    **{name: f"{_CTRL}/{name}" for name in ("Add", "Update", "GetList", "AddMulti", "UpdateMulti", "DeleteMulti")},
    **{name: f"{_CTRL}/{name}" for name in ("CancelMulti", "RetryMulti")},
    **{name: f"{_CTRL}/{name}/{{ctrl_id}}" for name in ("Delete", "GetModel", "Cancel", "Retry", "GetDetial")},
}
# Where the platform calls us in push mode (3.1.1, 3.2.1, 3.3.1, 4.2.12), under push_url.
PUSH_PATHS = {
    "reading": f"{_DATA}/MeterData/Add",
    "alarm": f"{_DATA}/DeviceAlarm/Add",
    "event": f"{_DATA}/DeviceEvent/Add",
    "report": f"{_CTRL}/Report",
}
AUTH_FAILED, TOKEN_FAILED, LOGIN_FAILED = "认证失败", "token无效或已过期", "用户名或密码错误"
NOT_FOUND, SERVER_ERROR, BAD_BODY = "找不到数据", "服务器内部错误", "参数格式错误"
BAD_CTRL_DATA, BAD_TYPE = "ctrl_data 格式错误", "不支持的任务类型"
NO_UPDATE_TARGET, NO_DELETE_TARGET = "找不到要修改的数据", "找不到要删除的数据"  # 4.2.3 and 4.2.6's samples
# How a dead token is refused (2.2.2 does not say): HTTP 401 or 403 with the envelope, or the usual HTTP 200 with
# State "failed". Fault mode "token" kills the token of the next control request just before it arrives.
TOKEN_REFUSALS = {"http401": 401, "http403": 403, "http200": 200}
IOT_FAIL_MODES = FAIL_MODES | {"token"}
_STATES = "等待发送 已经发送 已经应答 任务成功 任务失败 任务被取消 任务超时 发送数据失败 其他错误"
STATE_MSG = dict(zip((0, 1, 2, 3, 4, 5, 6, 7, 99), _STATES.split(), strict=True))
FINAL = frozenset({3, 4, 5, 6, 7, 99})
CANCELLABLE, RETRYABLE = frozenset({0, 1}), frozenset({4, 5, 6, 7})
CTRL_TYPES = frozenset(
    [f"{PROCESSOR}.common.{n}" for n in ("setvalveon", "setvalveoff", "setcumulant", "releaseforce")]
    + [f"{PROCESSOR}.prepay.{n}" for n in ("setprice", "getprice", "setremain", "remotecharge")]
    + [f"{PROCESSOR}.prepay.{n}" for n in ("getchargestate", "openaccount")]
)
_PRICES = (("price1", "pos"), *((f"price{n}", "num") for n in range(2, 6)))
_UINT_LADDERS = tuple((f"ladder{n}", "uint") for n in range(1, 5))
_START, _MONTHS = ("cycle_start_time", "time"), ("cycle_month", "uint")
# 4.5.3's classes, flattened into ctrl_data: "pos" > 0, "num" >= 0, "uint" a whole number >= 0, "time" a date.
CTRL_PARAMS: dict[str, tuple[tuple[str, str], ...]] = {
    "setprice": (*_PRICES, *((f"ladder{n}", "num") for n in range(1, 5)), ("cycle_start", "time"), _MONTHS),
    "setremain": (("remain_value", "num"),),
    "remotecharge": (("charge_value", "pos"), ("total_value", "num"), ("charge_times", "uint")),
    "openaccount": (("charge_value", "num"), ("total_value", "num"), *_PRICES, *_UINT_LADDERS, _START, _MONTHS),
    "setcumulant": (("std_sum", "num"), ("work_sum", "num")),
}
# Our codes: the spec has no table. Alarms 1-5 are a meter's, 6-7 an RTU's; events 101-105.
ALARMS = {1: "磁攻击", 2: "阀门故障", 3: "电池低电", 4: "燃气泄漏", 5: "拆表", 6: "RTU门禁打开", 7: "RTU市电中断"}
EVENTS = {101: "开阀", 102: "关阀", 103: "远程充值", 104: "价格调整", 105: "换表(累计量重置)"}
# meter_state / rtu_state bits (ours as well): bit → text for meter_stat_emsg and rtu_state_msg.
METER_BITS = {1: "阀门故障", 2: "低电", 4: "磁攻击", 8: "干簧管故障", 16: "拆表", 32: "燃气泄漏", 64: "电池断电"}
RTU_BITS = {1: "门禁打开", 2: "市电中断", 4: "围栏异常", 8: "振动报警"}
# Alarm code → (device type, state bit, ext_data flags it sets).
ALARM_EFFECTS: dict[int, tuple[int, int, dict[str, Any]]] = {
    1: (METER, 4, {"magnetic_attack": True}),
    2: (METER, 1, {}),
    3: (METER, 2, {"power_level": 1}),
    4: (METER, 32, {}),
    5: (METER, 16, {"apart_valve_off": True, "valve_open": False}),
    6: (RTU, 1, {"rtu_door_open": True}),
    7: (RTU, 2, {"rtu_power": False, "ext_power": False}),
}
# ext_data after rtu_state, rtu_state_msg, base_volume and total_buy_value, in the spec's order and defaults.
EXT_FLAGS: dict[str, Any] = {
    "open_state": False,
    "valve_open": False,
    "power_level": 0,
    **dict.fromkeys(("remote_valve_off", "apart_valve_off", "max_flow_valve_off", "min_flow_valve_off"), False),
    **dict.fromkeys(("dead_valve_off", "magnetic_attack", "ext_power"), False),
    "calc_type": 0,
    **dict.fromkeys(("pulse_fault", "battery_cut", "force_valve_on", "rtu_door_open", "rtu_power"), False),
    **dict.fromkeys(("rtu_fence_alarm", "rtu_vibrate_alarm"), False),
}
LADDER_KEYS = ("price1", "ladder1", "price2", "ladder2", "price3", "ladder3", "price4", "ladder4", "price5")
ORDERABLE = frozenset({"meter_comm_no", "acquisition_time", "receive_time", "meter_define_no1", "meter_define_no3"})
# remote_charge_return (4.5.3): success 0xaa charged, 0xbb refused. The spec lists no reasons; these are ours.
CHARGE_OK, CHARGE_REFUSED = 0xAA, 0xBB
REASON_TIMES, REASON_TOTAL, REASON_REFUSED = 1, 2, 3
CHARGE_REASONS = {REASON_TIMES: "充值次数不连续", REASON_TOTAL: "累计充值金额不符", REASON_REFUSED: "表计拒绝充值"}
CARD_SEED = Decimal(100)  # what a seeded meter got on its IC card; the rest came remotely, in steps of this
# What a proxy in front of the platform answers when the platform itself did not (fault mode lost_502).
BAD_GATEWAY = "<html><head><title>502 Bad Gateway</title></head><body><h1>502 Bad Gateway</h1></body></html>"


def q3(value: Decimal) -> Decimal:
    """Round to the spec's Decimal(18,3), half-up."""
    return value.quantize(Q3, rounding=ROUND_HALF_UP)


def n3(value: Decimal) -> float:
    """A Decimal as the JSON number the platform sends: 3 decimals."""
    return float(q3(value))


def ok(data: Any, message: str = "") -> dict[str, Any]:
    """The success envelope."""
    return {"Data": data, "State": "success", "Message": message}


class IotError(Exception):
    """A refusal, answered with HTTP 200 and State "failed"."""

    def __init__(self, message: str, data: Any = None) -> None:
        """Keep the message and the Data to send (null, or 0 where the spec's samples say so)."""
        self.message, self.data = message, data
        super().__init__(message)

    def answer(self) -> dict[str, Any]:
        """The failure envelope."""
        return {"Data": self.data, "State": "failed", "Message": self.message}


@dataclass(slots=True)
class SimDevice:
    """One meter (device_type 1) or RTU (device_type 2) and what the platform knows of it."""

    comm_no: str
    device_type: int
    define_nos: list[str]
    area_no: str
    guid: str
    acquired: datetime
    received: datetime
    factory_code: str = "01"
    std_sum: Decimal = ZERO
    work_sum: Decimal = ZERO
    std_flow: Decimal = ZERO
    work_flow: Decimal = ZERO
    temperature: Decimal = Decimal("20.000")
    pressure: Decimal = Decimal("2.300")
    magatt_times: int = 0
    this_month_sum: Decimal = ZERO
    last_month_sum: Decimal = ZERO
    this_cycle_sum: Decimal = ZERO
    last_cycle_sum: Decimal = ZERO
    remain_money: Decimal = ZERO
    curr_price: Decimal = ZERO
    rssi: int = -80
    battery_voltage: Decimal = Decimal("3.600")
    battery_level: int = 90
    base_volume: Decimal = ZERO
    total_buy_value: Decimal = ZERO
    state_bits: int = 0  # meter_state (a meter) or rtu_state (an RTU)
    flags: dict[str, Any] = field(default_factory=lambda: dict(EXT_FLAGS))
    ladder: dict[str, Any] = field(default_factory=dict)  # ladder_price as getprice returns it
    charges: dict[str, Any] = field(default_factory=dict)  # remote_charge_state
    rate: Decimal = Decimal("0.0100")  # m³ per 15 minutes while the valve is open
    work_ratio: Decimal = Decimal("1.020")  # working over standard volume


@dataclass(slots=True)
class Push:
    """One push to us, kept so it can be sent again."""

    path: str
    body: Any
    first: datetime
    attempts: int = 0
    delivered: bool = False


class IotMeterSimulator(SimulatorBase):
    """One aiohttp app serving both the data API and the control API of the IoT meter platform."""

    def __init__(
        self,
        *,
        company_no: str = "1001",
        data_api_key: str = "496d1bac094f11e79d9c0a0027000010",  # the spec's test-server key
        login_name: str = "admin",
        password: str = "123456",  # noqa: S107 - the spec's test-server password
        meters: int = 3,
        rtus: int = 1,
        tz: tzinfo = DEFAULT_TZ,
        token_ttl: float = 3600.0,
        command_delay: float = 1.0,
        push_url: str | None = None,
        seed: int = 1,
        strict: bool = True,
        token_refusal: str = "http401",  # noqa: S107 - a mode, not a secret
    ) -> None:
        """Build the devices, their 60 days of frozen history and the web app.

        `strict` turns on every check a real platform and meter make that a lenient test double may skip;
        each is also its own attribute (check_charge_sequence) so a test can turn one off again.
        `token_refusal` (TOKEN_REFUSALS) is how a control call with a dead token is answered, with token_message.
        """
        super().__init__(endpoints=ENDPOINTS, tz=tz, push_url=push_url, seed=seed, fail_modes=IOT_FAIL_MODES)
        self.company_no, self.data_api_key = company_no, data_api_key
        self.login_name, self.password = login_name, password
        self.token_ttl, self.command_delay = token_ttl, command_delay
        if token_refusal not in TOKEN_REFUSALS:
            raise ValueError(f"token_refusal must be one of {sorted(TOKEN_REFUSALS)}")
        self.token_refusal = token_refusal
        self.token_message, self.login_message = TOKEN_FAILED, LOGIN_FAILED
        # True applies to every command; a set of comm numbers only to those meters' commands.
        self.fail_commands: bool | set[str] = False
        self.timeout_commands: bool | set[str] = False
        self.send_fail_commands: bool | set[str] = False
        self.refuse_charges: bool | set[str] = False
        # Strict: the meter takes a remote charge only as the next in its sequence (charge_times is its
        # remote_charge_times + 1, total_value its remote_total_value + charge_value); otherwise 0xbb.
        self.strict = strict
        self.check_charge_sequence = strict
        self.devices: dict[str, SimDevice] = {}
        self.meters = self.devices  # what SimulatorBase ticks, pushes and checks /_sim/ requests against
        self.history: dict[str, list[dict[str, Any]]] = {}
        self.commands: dict[int, dict[str, Any]] = {}
        self.alarms: list[dict[str, Any]] = []
        self.events: list[dict[str, Any]] = []
        self.outbox: list[Push] = []
        self.attempts: dict[int, int] = {}  # ctrl_id → how often it was started (Add, then each Retry)
        self._reports: dict[int, Push] = {}  # ctrl_id → its last Report push, for resend_report()
        self._offset = timedelta()
        self._ids = random.Random(seed ^ 0x10E7)  # GUIDs apart, so asking for records never shifts the gas
        self._tokens: dict[str, datetime] = {}
        self._tasks: dict[int, asyncio.Task[None]] = {}
        self._push_tasks: set[asyncio.Task[Any]] = set()
        self._next_id = {"ctrl": 0, "alarm": 0, "event": 0}
        self._frozen_through = self._now().date()
        self._handlers: dict[str, Callable[[dict[str, str], Any], dict[str, Any]]] = {
            "GetRealModel": self._real_model,
            "GetRealList2": self._real_list,
            "GetHistoryList2": self._history_list,
            "DeviceAlarm/GetList2": partial(self._log_list, "alarm"),
            "DeviceEvent/GetList2": partial(self._log_list, "event"),
            "Login": self._login,
            "Add": partial(self._one, self._add, None),
            "Update": partial(self._one, self._update, None),
            "Delete": partial(self._one, self._delete, "ctrl_id"),
            "GetModel": self._get_model,
            "GetList": self._get_list,
            "Cancel": partial(self._one, self._cancel, "ctrl_id"),
            "Retry": partial(self._one, self._retry, "ctrl_id"),
            "AddMulti": partial(self._multi, self._add),
            "UpdateMulti": partial(self._multi, self._update),
            "DeleteMulti": partial(self._multi, self._delete),
            "CancelMulti": partial(self._multi, self._cancel),
            "RetryMulti": partial(self._multi, self._retry),
            "GetDetial": self._detail,
        }
        for number in range(1, meters + 1):
            self._seed_meter(number)
        for number in range(1, rtus + 1):
            self._seed_rtu(number)
        self.app = self.make_app()

    def make_app(self) -> web.Application:
        """Build the aiohttp application: both APIs plus the /_sim/ control endpoints."""
        app = web.Application()
        for name, path in ENDPOINTS.items():
            app.router.add_post(f"/{path}", partial(self._serve, name))
        self.add_control_routes(app)
        for name in ("event", "advance", "settle", "step", "external_recharge", "resend_report", "expire_tokens"):
            app.router.add_post(f"/_sim/{name}", getattr(self, f"_sim_{name}"))
        return app

    # --- the clock --------------------------------------------------------------------------------

    def _clock(self) -> datetime:
        return datetime.now(self.tz) + self._offset

    @override
    def _now(self) -> datetime:
        return self._clock().replace(microsecond=0)

    def advance(self, seconds: float) -> None:
        """Move the simulator's clock on: tokens expire, commands time out, the next tick sees the new time."""
        self._offset += timedelta(seconds=seconds)
        self._expire()

    def expire_tokens(self) -> int:
        """Invalidate every token handed out (the platform restarted, or an administrator logged us out)."""
        count = len(self._tokens)
        self._tokens.clear()
        return count

    def _fmt(self, when: datetime, fmt: str = WIRE_FORMAT) -> str:
        return when.astimezone(self.tz).strftime(fmt)

    def _midnight(self, day: date) -> datetime:
        return datetime.combine(day, time(), tzinfo=self.tz)

    def _parse(self, value: Any, name: str, *, end: bool = False) -> datetime:
        """A datetime field, with or without time and offset; a bare date as an upper bound means its whole day."""
        try:
            parsed = datetime.fromisoformat(value.strip()) if isinstance(value, str) else None
        except ValueError:
            parsed = None
        if parsed is None:
            raise IotError(f"{name} 格式错误")
        parsed = parsed.replace(tzinfo=self.tz) if parsed.tzinfo is None else parsed.astimezone(self.tz)
        return parsed + timedelta(days=1, seconds=-1) if end and len(value.strip()) == 10 else parsed

    # --- devices ----------------------------------------------------------------------------------

    def _guid(self) -> str:
        return base64.b64encode(self._ids.getrandbits(128).to_bytes(16, "big")).decode()

    def _seed_meter(self, number: int) -> None:
        rng, now, index = self._rng, self._now(), number - 1
        today = now.date()
        price = Decimal(rng.choice(("2.650", "2.980", "3.150")))
        dev = SimDevice(
            comm_no=f"8600000000{number:04d}",
            device_type=METER,
            # No3 runs against the comm numbers, so ordering by it is visibly different.
            define_nos=[
                f"YH{100000 + number}",
                f"模拟小区{index // 10 + 1}栋{index % 10 + 1:02d}室",
                f"{(-number) % 97:02d}",
                "",
            ],
            area_no=f"{index // 10 + 1:02d}",
            guid=self._guid(),
            acquired=now,
            received=now,
            temperature=q3(Decimal(rng.randint(100, 250)) / 10),
            pressure=q3(Decimal(rng.randint(200, 280)) / 100),  # kPa, a household supply
            rssi=-rng.randint(75, 95),
            battery_voltage=q3(Decimal(rng.randint(3400, 3650)) / 1000),
            battery_level=rng.randint(60, 100),
            curr_price=price,
            rate=Decimal(rng.randint(40, 150)) / 10000,
            work_ratio=1 + Decimal(rng.randint(5, 30)) / 1000,
        )
        dev.flags |= {"open_state": True, "valve_open": True}
        dev.ladder = {"price1": float(price), "ladder1": 300.0, "price2": n3(price * Decimal("1.2")), "ladder2": 600.0}
        dev.ladder |= {"price3": n3(price * Decimal("1.5")), "ladder3": 0.0, "price4": 0.0, "ladder4": 0.0}
        dev.ladder |= {"price5": 0.0, "cycle_start": f"{today.year}-01-01T00:00:00", "cycle_month": 12}
        first, daily = today - timedelta(days=HISTORY_DAYS - 1), dev.rate * 96
        closed = index % 3 == 2  # closed a few days ago, so both valve states show up
        days = [first + timedelta(days=back) for back in range(HISTORY_DAYS)]
        uses = [
            ZERO if closed and day > today - timedelta(days=4) else q3(daily * rng.randint(60, 140) / 100)
            for day in days
        ]
        since = int((now - self._midnight(today)).total_seconds())
        uses[-1] = q3(uses[-1] * since / 86400)
        cost = sum((q3(gas * price) for gas in uses), ZERO)
        if index % 5 == 4:  # nearly out of money
            total = q3(cost + Decimal(rng.randint(500, 1500)) / 100)
        else:
            total = Decimal((int(cost) // 100 + 2) * 100 + rng.choice((0, 50)))
        # Recharged before by other systems: one IC card charge, then remote ones in steps of 100 (the last
        # one the rest), so every meter has a card charge, remote charges and a remote total above zero.
        card = CARD_SEED if total > CARD_SEED else q3(total / 2)
        remote = total - card
        times = max(1, math.ceil(remote / CARD_SEED))
        dev.charges = {"card_charge_times": 1, "card_charge_value": n3(card), "card_total_value": n3(card)}
        dev.charges |= {"remote_charge_times": times, "remote_charge_value": n3(remote - CARD_SEED * (times - 1))}
        dev.charges["remote_total_value"] = n3(remote)
        dev.remain_money, dev.total_buy_value = total, total
        dev.base_volume = Decimal(rng.randint(0, 50))
        dev.std_sum = dev.base_volume + q3(daily * rng.randint(200, 1500))
        dev.work_sum = q3(dev.std_sum * dev.work_ratio)
        dev.this_month_sum, dev.last_month_sum = q3(daily * (first.day - 1)), q3(daily * rng.randint(24, 36))
        dev.this_cycle_sum = q3(daily * (first - date(first.year, 1, 1)).days)
        dev.last_cycle_sum = q3(daily * rng.randint(300, 430))
        self.history[dev.comm_no] = []
        for day, gas in zip(days, uses, strict=True):
            self._roll_over(dev, day)
            received = min(self._midnight(day) + timedelta(minutes=rng.randint(5, 180)), now)
            self._store_frozen(dev, self._record(dev, 1, self._midnight(day), received))
            self._use(dev, gas, 1440 if day < today else max(since // 60, 1))
        if closed:
            dev.flags |= {"valve_open": False, "remote_valve_off": True}
        self.devices[dev.comm_no] = dev

    def _seed_rtu(self, number: int) -> None:
        rng, now = self._rng, self._now()
        dev = SimDevice(
            comm_no=f"9900000000{number:04d}",
            device_type=RTU,
            define_nos=[f"RTU{number:03d}", f"模拟调压站{number}", f"Z{number:02d}", ""],
            area_no="90",
            guid=self._guid(),
            acquired=now,
            received=now,
            factory_code="02",
            temperature=q3(Decimal(rng.randint(100, 250)) / 10),
            pressure=q3(Decimal(rng.randint(1500, 3500)) / 10),  # kPa, a regulator station's inlet
            rssi=-rng.randint(75, 90),
            battery_voltage=q3(Decimal(rng.randint(12_600, 13_400)) / 1000),
            battery_level=100,
        )
        dev.flags |= {"rtu_power": True, "ext_power": True, "calc_type": None}
        self.history[dev.comm_no] = []  # an RTU freezes no volumes
        self.devices[dev.comm_no] = dev

    def _use(self, dev: SimDevice, gas: Decimal, minutes: float) -> None:
        """Let `gas` m³ through `dev` over `minutes`: volumes grow, the money falls by gas * curr_price."""
        work, hours = q3(gas * dev.work_ratio), Decimal(str(minutes)) / 60
        dev.std_sum, dev.work_sum = dev.std_sum + gas, dev.work_sum + work
        dev.this_month_sum, dev.this_cycle_sum = dev.this_month_sum + gas, dev.this_cycle_sum + gas
        dev.remain_money -= q3(gas * dev.curr_price)
        dev.std_flow, dev.work_flow = (q3(gas / hours), q3(work / hours)) if gas and hours else (ZERO, ZERO)

    def _roll_over(self, dev: SimDevice, day: date) -> None:
        """At the midnight starting `day`: a new month, and maybe a new billing cycle."""
        if day.day != 1:
            return
        dev.last_month_sum, dev.this_month_sum = dev.this_month_sum, ZERO
        start, months = datetime.strptime(dev.ladder["cycle_start"], WIRE_FORMAT), int(dev.ladder["cycle_month"])
        if months > 0 and (day.year * 12 + day.month - start.year * 12 - start.month) % months == 0:
            dev.last_cycle_sum, dev.this_cycle_sum = dev.this_cycle_sum, ZERO

    def _store_frozen(self, dev: SimDevice, record: dict[str, Any]) -> None:
        """Add a frozen record, replacing one of the same day, keeping the history in time order."""
        kept = [r for r in self.history[dev.comm_no] if r["acquisition_time"] != record["acquisition_time"]]
        self.history[dev.comm_no] = sorted([*kept, record], key=lambda r: str(r["acquisition_time"]))

    def _device(self, comm_no: str, kind: int | None = None) -> SimDevice:
        dev = self.devices.get(comm_no)
        if dev is None or (kind is not None and dev.device_type != kind):
            raise ValueError(f"unknown {'meter' if kind == METER else 'device'} {comm_no!r}")
        return dev

    def _status(self, dev: SimDevice) -> tuple[int, str]:
        names = METER_BITS if dev.device_type == METER else RTU_BITS
        return dev.state_bits, ",".join(text for bit, text in names.items() if dev.state_bits & bit) or "正常"

    def _record(
        self, dev: SimDevice, data_type: int = 0, at: datetime | None = None, received: datetime | None = None
    ) -> dict[str, Any]:
        """A 3.1.2 record; a frozen one (data_type 1) gets its own GUID and times."""
        meter = dev.device_type == METER
        state, message = self._status(dev)

        def vol(value: Decimal) -> float | None:
            return n3(value) if meter else None  # an RTU measures no volumes and holds no money

        remain_volume = dev.remain_money / dev.curr_price if dev.curr_price else ZERO
        ext = {"rtu_state": 0 if meter else state, "rtu_state_msg": "" if meter else message}
        ext |= {"base_volume": vol(dev.base_volume), "total_buy_value": vol(dev.total_buy_value)} | dev.flags
        return {
            "data_guid": dev.guid if data_type == 0 else self._guid(),
            "company_no": self.company_no,
            "meter_comm_no": dev.comm_no,
            "device_type": dev.device_type,
            "device_type_name": "物联网表" if meter else "RTU",
            "factory_code": dev.factory_code,
            "meter_area_no": dev.area_no,
            **{f"meter_define_no{n}": value for n, value in enumerate(dev.define_nos, 1)},
            "data_type": data_type,
            "data_type_name": "冻结数据" if data_type else "实时数据",
            "acquisition_time": self._fmt(at or dev.acquired),
            "receive_time": self._fmt(received or dev.received),
            **{name: vol(getattr(dev, name)) for name in ("std_sum", "work_sum", "std_flow", "work_flow")},
            "temperature": n3(dev.temperature),
            "pressure": n3(dev.pressure),
            "magatt_times": dev.magatt_times if meter else None,
            **{name: vol(getattr(dev, name)) for name in ("this_month_sum", "last_month_sum", "this_cycle_sum")},
            "last_cycle_sum": vol(dev.last_cycle_sum),
            "remain_money": vol(dev.remain_money),
            "remain_volume": vol(remain_volume),
            "curr_price": vol(dev.curr_price),
            "meter_state": state,
            "meter_stat_emsg": message,
            "rssi": dev.rssi,
            "battery_voltage": n3(dev.battery_voltage),
            "battery_level": dev.battery_level,
            "ext_data": ext,
        }

    def record(self, comm_no: str) -> dict[str, Any]:
        """The device's current real-time record, as GetRealModel answers it."""
        return self._record(self._device(comm_no))

    @override
    def tick(self, minutes: float = 15) -> None:
        """Let `minutes` of gas through every open meter; freeze each midnight the clock has passed."""
        now = self._now()
        while self._frozen_through < now.date():
            self._frozen_through += timedelta(days=1)
            self.freeze_day(self._frozen_through, received=now, roll_over=True)
        factor = Decimal(str(minutes)) / 15
        for dev in self.devices.values():
            dev.acquired = dev.received = now
            dev.guid = self._guid()
            dev.temperature = q3(
                min(max(dev.temperature + Decimal(self._rng.randint(-5, 5)) / 10, Decimal(-10)), Decimal(35))
            )
            dev.rssi = min(max(dev.rssi + self._rng.randint(-2, 2), -95), -75)
            if dev.device_type != METER:
                continue
            if not (dev.flags["valve_open"] and dev.flags["open_state"]):
                dev.std_flow = dev.work_flow = ZERO
                continue
            self._use(dev, q3(dev.rate * factor * self._rng.randint(75, 125) / 100), minutes)
            if dev.remain_money <= 0:
                dev.flags["valve_open"] = False  # a prepaid meter shuts its own valve when the money runs out
        self._expire()

    def freeze_day(self, day: date | None = None, *, received: datetime | None = None, roll_over: bool = False) -> None:
        """Add (or replace) every meter's frozen record at 00:00 of `day` (today) with its current values."""
        day = day or self._now().date()
        for dev in self.devices.values():
            if dev.device_type == METER:
                if roll_over:
                    self._roll_over(dev, day)
                self._store_frozen(dev, self._record(dev, 1, self._midnight(day), received or self._now()))

    def late_history(self, comm_no: str, day: date, std_sum: float | Decimal) -> dict[str, Any]:
        """Add or replace the frozen record of `day` with `std_sum`, received now (it "arrives late")."""
        dev = self._device(comm_no, METER)
        record = self._record(dev, 1, self._midnight(day), self._now())
        volume = q3(Decimal(str(std_sum)))
        record |= {"std_sum": n3(volume), "work_sum": n3(volume * dev.work_ratio)}
        self._store_frozen(dev, record)
        return record

    def reset_meter(self, comm_no: str, std_sum: float | Decimal = 0) -> None:
        """The meter was replaced: its counters restart at `std_sum`; an event 105 says so."""
        dev = self._device(comm_no, METER)
        dev.std_sum = dev.base_volume = q3(Decimal(str(std_sum)))
        dev.work_sum = q3(dev.std_sum * dev.work_ratio)
        dev.this_month_sum = dev.last_month_sum = dev.this_cycle_sum = dev.last_cycle_sum = ZERO
        dev.magatt_times, dev.guid, dev.acquired, dev.received = 0, self._guid(), self._now(), self._now()
        self.add_event(comm_no, 105, data={"std_sum": n3(dev.std_sum)})

    def recharged_on(self, comm_no: str, day: date, amount: Decimal | float | str) -> None:
        """A recharge another system made during `day`: the frozen records after it and the meter now hold it too.

        The frozen balance and cumulative recharge (ext_data.total_buy_value) of every later midnight rise by
        `amount`, as they would have had the meter taken it that day.
        """
        dev, value = self._device(comm_no, METER), q3(Decimal(str(amount)))
        dev.remain_money, dev.total_buy_value = dev.remain_money + value, dev.total_buy_value + value
        for record in self.history[comm_no]:
            if record["acquisition_time"][:10] > day.isoformat():
                record["remain_money"] = n3(Decimal(str(record["remain_money"])) + value)
                ext = record["ext_data"] = dict(record["ext_data"])
                ext["total_buy_value"] = n3(Decimal(str(ext["total_buy_value"])) + value)

    def gap(self, comm_no: str, days: int | date | Iterable[date]) -> int:
        """Remove frozen records: of the `days` days before today (an int), or of the given dates; return how many."""
        if isinstance(days, int):
            today = self._now().date()
            wanted = {(today - timedelta(days=back)).isoformat() for back in range(1, days + 1)}
        else:
            wanted = {day.isoformat() for day in ([days] if isinstance(days, date) else days)}
        before = self.history[self._device(comm_no).comm_no]
        self.history[comm_no] = [r for r in before if r["acquisition_time"][:10] not in wanted]
        return len(before) - len(self.history[comm_no])

    # --- alarms and events ------------------------------------------------------------------------

    def _log(
        self, kind: str, comm_no: str, code: int, content: str | None, *, when: datetime | None = None, data: Any = None
    ) -> dict[str, Any]:
        dev, now = self._device(comm_no), self._now()
        if kind == "alarm" and (effect := ALARM_EFFECTS.get(code)) and effect[0] == dev.device_type:
            dev.state_bits |= effect[1]
            dev.flags |= effect[2]
            if code == 1:
                dev.magatt_times += 1
            if code == 3:
                dev.battery_level = min(dev.battery_level, 10)
        if data is None:
            state, message = self._status(dev)
            data = {"meter_state": state, "meter_stat_emsg": message}
            data |= {"magatt_times": dev.magatt_times} if kind == "alarm" and code == 1 else {}
        self._next_id[kind] += 1
        texts = ALARMS if kind == "alarm" else EVENTS
        entry = {f"{kind}_id": self._next_id[kind], "company_no": self.company_no, "device_comm_no": comm_no}
        # device_type is nvarchar(50) in 3.2 and 3.3's tables: a string, unlike the meter record's int.
        entry |= {"device_type": str(dev.device_type), f"{kind}_time": self._fmt(when or now)}
        entry |= {"receive_time": self._fmt(now), f"{kind}_code": code}
        entry |= {f"{kind}_content": content or texts.get(code, f"代码{code}"), f"{kind}_data": data}
        (self.alarms if kind == "alarm" else self.events).append(entry)
        return entry

    def add_alarm(
        self, comm_no: str, code: int, content: str | None = None, when: datetime | None = None, data: Any = None
    ) -> dict[str, Any]:
        """Record an alarm (and its effect on the device); push it in the background when push_url is set."""
        entry = self._log("alarm", comm_no, code, content, when=when, data=data)
        if self.push_url:
            self._queue(PUSH_PATHS["alarm"], self._push_body(entry, "alarm_id"))
        return entry

    def add_event(
        self, comm_no: str, code: int, content: str | None = None, when: datetime | None = None, data: Any = None
    ) -> dict[str, Any]:
        """Record a device event; push it in the background when push_url is set."""
        entry = self._log("event", comm_no, code, content, when=when, data=data)
        if self.push_url:
            self._queue(PUSH_PATHS["event"], self._push_body(entry, "event_id"))
        return entry

    # --- the wire ---------------------------------------------------------------------------------

    async def _serve(self, name: str, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        body: Any = None
        if raw.strip():
            try:
                body = json.loads(raw.decode("utf-8-sig"))
            except (UnicodeDecodeError, ValueError):
                body = raw.decode("utf-8", "replace")  # kept as text: every handler refuses it
        params = dict(request.query) | dict(request.match_info)
        self.requests.append((name, params, body))
        fault = self.faults.take(name)
        mode = fault.mode if fault else None
        if mode == "http500":
            return web.Response(status=500, text="Internal Server Error")
        if mode == "malformed":
            return web.Response(text="<html><body>502 Bad Gateway</body></html>", content_type="text/html")
        control = "/Conf/" in ENDPOINTS[name] and name != "Login"
        if mode == "token":
            self._tokens.pop(request.headers.get("token", ""), None)
        if mode == "auth" or not self._authorized(name, request):
            if control and mode != "auth":
                return reply(IotError(self.token_message).answer(), status=TOKEN_REFUSALS[self.token_refusal])
            message = self.login_message if name == "Login" else TOKEN_FAILED if control else AUTH_FAILED
            return reply(IotError(message).answer(), status=401)
        if fault is not None and mode == "error":
            return reply(IotError(fault.code or SERVER_ERROR).answer())
        try:
            answer = self._handlers[name](params, body)
        except IotError as err:
            answer = err.answer()
        # The lost-answer modes (LOST_ANSWER_MODES) strike after the work is done: the request got through,
        # only its answer is lost (no answer in time, a dropped connection, a proxy's 502, a garbled body).
        if mode == "timeout":
            await asyncio.sleep(self.hang_seconds)
        if mode == "drop" and request.transport is not None:
            request.transport.close()
        if mode == "lost_502":
            return web.Response(status=502, text=BAD_GATEWAY, content_type="text/html")
        if mode == "lost_garbled":
            text = dumps(answer)  # cut halfway: a strict prefix of a JSON object is never JSON
            return web.Response(text=text[: len(text) // 2], content_type="application/json")
        return reply(answer)

    def _authorized(self, name: str, request: web.Request) -> bool:
        if name == "Login":
            return True
        if "/Conf/" in ENDPOINTS[name]:
            expiry = self._tokens.get(request.headers.get("token", ""))
            return expiry is not None and self._clock() < expiry
        sent = (request.headers.get("company_no", ""), request.headers.get("data_api_key", ""))
        return all(
            hmac.compare_digest(given.encode(), wanted.encode())
            for given, wanted in zip(sent, (self.company_no, self.data_api_key), strict=True)
        )

    @staticmethod
    def _object(body: Any) -> dict[str, Any]:
        if body is None:
            return {}
        if not isinstance(body, dict):
            raise IotError(BAD_BODY)
        return body

    @staticmethod
    def _int(p: dict[str, Any], key: str) -> int | None:
        """An optional int filter or field: absent, null or "" means none; numeric text is accepted."""
        value = p.get(key)
        if value is None or value == "":
            return None
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str) and value.strip().lstrip("-").isdigit():
            return int(value)
        raise IotError(f"{key} 格式错误")

    def _id(self, value: Any) -> int:
        ctrl_id = self._int({"ctrl_id": value}, "ctrl_id")
        if ctrl_id is None:
            raise IotError("ctrl_id 格式错误", 0)
        return ctrl_id

    @staticmethod
    def _page(params: dict[str, str]) -> tuple[int, int]:
        try:
            start, count = int(params.get("startrow") or 0), int(params.get("rowcount") or 20)
        except ValueError:
            raise IotError("startrow/rowcount 格式错误") from None
        if start < 0 or count < 0:
            raise IotError("startrow/rowcount 格式错误")
        return start, min(count, MAX_ROWS)

    @staticmethod
    def _listing(rows: list[dict[str, Any]], page: tuple[int, int], *, upper: bool) -> dict[str, Any]:
        """A page of rows; the sample's "Totalcount" casing, or the table's lower-case one."""
        start, count = page
        chosen = rows[start : start + count]
        names = ("Totalcount", "Startrow", "Rowcount") if upper else ("totalcount", "startrow", "rowcount")
        counts = dict(zip(names, (len(rows), start, len(chosen)), strict=True))
        return {"Data": chosen, **counts, "State": "success", "Message": ""}

    def _in_period(self, rows: list[dict[str, Any]], key: str, p: dict[str, Any]) -> list[dict[str, Any]]:
        """The year/month and (day, hour, minute) range filter of 3.1.4, 3.2.2 and 3.3.2."""
        year, month = self._int(p, "year"), self._int(p, "month")
        if month is not None and not 1 <= month <= 12:
            raise IotError("month 格式错误")
        units = ("day", "hour", "minute")
        start = [self._int(p, f"start_{unit}") for unit in units]
        end = [self._int(p, f"end_{unit}") for unit in units]
        low = tuple(d if v is None else v for v, d in zip(start, (1, 0, 0), strict=True))
        high = tuple(d if v is None else v for v, d in zip(end, (31, 23, 59), strict=True))

        def keep(row: dict[str, Any]) -> bool:
            at = datetime.strptime(row[key], WIRE_FORMAT)
            if (year is not None and at.year != year) or (month is not None and at.month != month):
                return False
            return low <= (at.day, at.hour, at.minute) <= high

        return [row for row in rows if keep(row)]

    # --- data API ---------------------------------------------------------------------------------

    def _real_model(self, params: dict[str, str], _body: Any) -> dict[str, Any]:
        dev = self.devices.get(params["meter_comm_no"])
        if dev is None:
            raise IotError(NOT_FOUND)
        return ok(self._record(dev))

    def _real_list(self, params: dict[str, str], body: Any) -> dict[str, Any]:
        p, page = self._object(body), self._page(params)
        wanted = p.get("meter_comm_nos")
        if wanted is not None and (not isinstance(wanted, list) or not all(isinstance(n, str) for n in wanted)):
            raise IotError("meter_comm_nos 格式错误")
        rows = [self._record(dev) for dev in self.devices.values() if not wanted or dev.comm_no in wanted]
        for name, key, end in (
            ("acq_start_time", "acquisition_time", False),
            ("acq_end_time", "acquisition_time", True),
            ("rec_start_time", "receive_time", False),
            ("rec_end_time", "receive_time", True),
        ):
            if p.get(name) not in (None, ""):
                bound = self._fmt(self._parse(p[name], name, end=end))
                rows = [row for row in rows if (row[key] <= bound if end else row[key] >= bound)]
        order, sequence = str(p.get("orderby") or "meter_comm_no").strip(), str(p.get("sequence") or "asc").lower()
        if order not in ORDERABLE or sequence not in ("asc", "desc"):
            raise IotError(f"排序参数错误: {order} {sequence}")
        rows.sort(key=lambda row: (row[order], row["meter_comm_no"]), reverse=sequence == "desc")
        return self._listing(rows, page, upper=True)

    def _history_list(self, params: dict[str, str], body: Any) -> dict[str, Any]:
        p, page = self._object(body), self._page(params)
        comm_no, data_type = p.get("meter_comm_no") or None, self._int(p, "data_type")
        rows = [r for no, records in self.history.items() if comm_no in (None, no) for r in records]
        rows = [r for r in self._in_period(rows, "acquisition_time", p) if data_type in (None, r["data_type"])]
        rows.sort(key=lambda r: (r["meter_comm_no"], r["acquisition_time"]))
        return self._listing(rows, page, upper=False)

    def _log_list(self, kind: str, params: dict[str, str], body: Any) -> dict[str, Any]:
        p, page = self._object(body), self._page(params)
        comm_no, device_type = p.get("device_comm_no") or None, self._int(p, "device_type")
        rows = [
            entry
            for entry in (self.alarms if kind == "alarm" else self.events)
            if comm_no in (None, entry["device_comm_no"]) and device_type in (None, int(entry["device_type"]))
        ]
        return self._listing(self._in_period(rows, f"{kind}_time", p), page, upper=False)

    # --- control API ------------------------------------------------------------------------------

    def _login(self, params: dict[str, str], _body: Any) -> dict[str, Any]:
        expected = hashlib.md5(self.password.encode()).hexdigest()
        given = params.get("pwd", "").strip().lower()
        if params.get("loginName") != self.login_name or not hmac.compare_digest(given.encode(), expected.encode()):
            raise IotError(self.login_message)
        token, expiry = secrets.token_hex(128).upper(), self._clock() + timedelta(seconds=self.token_ttl)
        self._tokens[token] = expiry
        # The sample's expiration: 7 fraction digits (.NET ticks) and the offset.
        stamp = f"{expiry.strftime(WIRE_FORMAT)}.{expiry.microsecond:06d}0{expiry.isoformat()[-6:]}"
        data = {"token": token, "expiration": stamp, "admin_id": 1, "company_no": self.company_no}
        data |= {"admin_name": self.login_name, "admin_remark": "模拟管理员"}
        return ok(data | {"admin_ext_data": json.dumps({"role": "admin"})})  # a JSON string, as in the sample

    def _check_ctrl_data(self, ctrl_type: str, data: dict[str, Any]) -> None:
        """Refuse ctrl_data that does not fill its 4.5.3 class: every field present, numbers as JSON numbers."""
        for key, rule in CTRL_PARAMS.get(ctrl_type.rsplit(".", 1)[1], ()):
            value = data.get(key)
            if rule == "time":
                try:
                    self._parse(value, key)
                except IotError:
                    raise IotError(f"{BAD_CTRL_DATA}: {key}") from None
                continue
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
                raise IotError(f"{BAD_CTRL_DATA}: {key}")
            whole = float(value).is_integer() and value <= 0xFFFFFFFF
            if value < 0 or (rule == "pos" and value <= 0) or (rule == "uint" and not whole):
                raise IotError(f"{BAD_CTRL_DATA}: {key}")

    def _ctrl_fields(self, p: dict[str, Any], default_timeout: datetime) -> dict[str, Any]:
        """Validate an Add or Update body; return the fields it sets."""
        if p.get("processor_name") != PROCESSOR:
            raise IotError(f"处理程序标识错误: {p.get('processor_name')}")
        if self._int(p, "target_devtype") != METER:
            raise IotError("目标设备类型错误")
        comm_no = p.get("target_comm_no")
        if not isinstance(comm_no, str) or getattr(self.devices.get(comm_no), "device_type", None) != METER:
            raise IotError(f"找不到目标设备: {comm_no}")
        ctrl_type, raw = p.get("ctrl_type"), p.get("ctrl_data")
        if ctrl_type not in CTRL_TYPES:
            raise IotError(BAD_TYPE)
        try:
            data = json.loads(raw) if isinstance(raw, str) else None
        except ValueError:
            data = None
        if not isinstance(data, dict):
            raise IotError(BAD_CTRL_DATA)
        self._check_ctrl_data(str(ctrl_type), data)
        timeout = default_timeout
        if p.get("ctrl_timeout") not in (None, ""):
            timeout = self._parse(p["ctrl_timeout"], "ctrl_timeout")
        fields = {"upper_ctrl_id": self._int(p, "upper_ctrl_id") or 0, "processor_name": PROCESSOR}
        if p.get("ctrl_time") not in (None, ""):
            # A ctrl_time ahead of the clock schedules the command; one in the past (4.2.1's date) means now.
            fields["ctrl_time"] = self._fmt(max(self._parse(p["ctrl_time"], "ctrl_time"), self._now()))
        if (upper := fields["upper_ctrl_id"]) and upper not in self.commands:
            raise IotError(f"找不到上级任务: {upper}")
        fields |= {"ctrl_define_no": str(p.get("ctrl_define_no") or ""), "target_comm_no": comm_no}
        fields |= {"target_devtype": METER, "ctrl_timeout": self._fmt(timeout), "ctrl_type": ctrl_type}
        return fields | {"ctrl_data": raw}

    def _add(self, p: Any) -> dict[str, Any]:
        now = self._now()
        f = self._ctrl_fields(self._object(p), now + DEFAULT_TIMEOUT)
        self._next_id["ctrl"] += 1
        ctrl_id = self._next_id["ctrl"]
        # 4.2.4's key order. The platform stamps ctrl_time itself: 4.2.1 sends a date, 4.2.4 shows a time of day.
        command = {
            "ctrl_id": ctrl_id,
            "upper_ctrl_id": f["upper_ctrl_id"],
            "company_no": self.company_no,
            **{key: f[key] for key in ("processor_name", "ctrl_define_no", "target_comm_no", "target_devtype")},
            "ctrl_time": f.get("ctrl_time", self._fmt(now)),
            "ctrl_timeout": f["ctrl_timeout"],
            "ctrl_state": 0,
            "ctrl_state_msg": STATE_MSG[0],
            "ctrl_feedback_msg": "",
            "ctrl_type": f["ctrl_type"],
            "ctrl_data": f["ctrl_data"],
            "return_data": "{}",
            "sync_flag": 0,
            "sync_time": f["ctrl_timeout"],
            "sync_msg": "",
        }
        self.commands[ctrl_id] = command
        self.attempts[ctrl_id] = 1
        self._start(ctrl_id)
        return command

    def _command(self, ctrl_id: int, missing: str = NO_UPDATE_TARGET) -> dict[str, Any]:
        self._expire()
        if (command := self.commands.get(ctrl_id)) is None:
            raise IotError(missing, 0)
        return command

    def _update(self, p: Any) -> dict[str, Any]:
        p = self._object(p)
        command = self._command(self._id(p.get("ctrl_id")))
        if command["ctrl_state"] != 0:
            raise IotError("任务状态不允许修改", 0)
        deadline = self._parse(command["ctrl_timeout"], "ctrl_timeout")
        command |= self._ctrl_fields(p, deadline)
        # The state is the platform's; only the sync bookkeeping of the upper system is taken as sent.
        command |= {key: p[key] for key in ("sync_flag", "sync_time", "sync_msg") if key in p}
        self._start(command["ctrl_id"])
        return command

    def _delete(self, ctrl_id: Any) -> dict[str, Any]:
        command = self._command(self._id(ctrl_id), NO_DELETE_TARGET)
        del self.commands[command["ctrl_id"]]
        if (task := self._tasks.pop(command["ctrl_id"], None)) is not None:
            task.cancel()
        return command

    def _cancel(self, ctrl_id: Any) -> dict[str, Any]:
        command = self._command(self._id(ctrl_id))
        if command["ctrl_state"] not in CANCELLABLE:
            raise IotError("任务状态不允许取消", 0)
        self._finish(command, 5, "任务被取消")
        return command

    def _retry(self, ctrl_id: Any) -> dict[str, Any]:
        command = self._command(self._id(ctrl_id))
        if command["ctrl_state"] not in RETRYABLE:
            raise IotError("任务状态不允许重试", 0)
        now = self._now()
        created, deadline = (self._parse(command[key], key) for key in ("ctrl_time", "ctrl_timeout"))
        if deadline <= now:  # a fresh deadline as long as the first, else it would time out at once
            span = deadline - created if deadline > created else DEFAULT_TIMEOUT
            command["ctrl_timeout"] = self._fmt(now + span)
        # ctrl_time stays the task's generation time (4.1): the retry is the same task, run again.
        command |= {"ctrl_state": 0, "ctrl_state_msg": STATE_MSG[0], "ctrl_feedback_msg": "", "return_data": "{}"}
        self.attempts[command["ctrl_id"]] = self.attempts.get(command["ctrl_id"], 1) + 1
        self._start(command["ctrl_id"])
        return command

    @staticmethod
    def _one(
        action: Callable[[Any], dict[str, Any]], key: str | None, params: dict[str, str], body: Any
    ) -> dict[str, Any]:
        """Add, Update, Delete, Cancel, Retry: Data is the ctrl_id, or 0 when refused (4.2.2-4.2.7's samples)."""
        try:
            return ok(action(body if key is None else params[key])["ctrl_id"])
        except IotError as err:
            raise IotError(err.message, 0) from None

    def _multi(self, action: Callable[[Any], dict[str, Any]], _params: dict[str, str], body: Any) -> dict[str, Any]:
        """4.2.8-4.2.10: one result per item; the call succeeds even when items fail."""
        if not isinstance(body, list):
            raise IotError(BAD_BODY)
        results = []
        for item in body:
            try:
                command = action(item)
            except IotError as err:
                target = item.get("target_comm_no") if isinstance(item, dict) else None
                if target is None and isinstance(item, (int, str)):
                    target = self.commands.get(int(item) if str(item).isdigit() else -1, {}).get("target_comm_no")
                results.append({"ctrl_id": 0, "target_comm_no": target or "", "result": False, "message": err.message})
            else:
                results.append(
                    {"ctrl_id": command["ctrl_id"], "target_comm_no": command["target_comm_no"]}
                    | {"result": True, "message": ""}
                )
        counts = {"Totalcount": len(results), "Startrow": 0, "Rowcount": len(results)}
        return {"Data": results, **counts, "State": "success", "Message": "操作完成"}

    def _get_model(self, params: dict[str, str], _body: Any) -> dict[str, Any]:
        try:
            return ok(dict(self._command(self._id(params["ctrl_id"]))))
        except IotError:
            raise IotError(NOT_FOUND) from None

    def _get_list(self, params: dict[str, str], body: Any) -> dict[str, Any]:
        p, page = self._object(body), self._page(params)
        self._expire()
        rows = list(self.commands.values())
        for key in ("upper_ctrl_id", "target_devtype", "ctrl_state"):
            if (number := self._int(p, key)) is not None:
                rows = [row for row in rows if row[key] == number]
        for key in ("processor_name", "ctrl_define_no", "target_comm_no", "ctrl_type"):
            if p.get(key) not in (None, ""):
                rows = [row for row in rows if row[key] == str(p[key])]
        for key, end in (("ctrl_time_from", False), ("ctrl_time_to", True)):
            if p.get(key) not in (None, ""):
                bound = self._fmt(self._parse(p[key], key, end=end))
                rows = [row for row in rows if (row["ctrl_time"] <= bound if end else row["ctrl_time"] >= bound)]
        return self._listing([dict(row) for row in rows], page, upper=True)

    def _detail(self, params: dict[str, str], _body: Any) -> dict[str, Any]:
        try:
            c = self._command(self._id(params["ctrl_id"]))
        except IotError:
            raise IotError(NOT_FOUND) from None
        created, deadline = (c[key].replace("T", " ") for key in ("ctrl_time", "ctrl_timeout"))
        # 4.2.11's sample, label by label: each line ends in " </br>".
        lines = [f"事物流水号:{c['ctrl_id']}", f"处理程序标识:{c['processor_name']}"]
        lines += [f"自定义命令编号:{c['ctrl_define_no']}", f"通信编号:{c['target_comm_no']}"]
        lines += [f"设备类型:{'表计' if c['target_devtype'] == METER else 'RTU'}", f"任务类型:{c['ctrl_type']}"]
        lines += [f"生成时间:{created}", f"超时时间:{deadline}", f"任务状态:{c['ctrl_state']} ({c['ctrl_state_msg']})"]
        lines += [f"反馈信息:{c['ctrl_feedback_msg']}", f"任务数据:</br> {c['ctrl_data']}"]
        lines.append(f"响应数据:</br> {c['return_data']}")
        return ok("".join(f"{line} </br>" for line in lines))

    # --- the command state machine (4.1) ----------------------------------------------------------

    def _start(self, ctrl_id: int) -> None:
        """(Re)start the command's timer: one state every command_delay seconds."""
        if (old := self._tasks.pop(ctrl_id, None)) is not None:
            old.cancel()
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no loop (a synchronous test): only step() and settle() move it
        self._tasks[ctrl_id] = loop.create_task(self._run(ctrl_id))

    async def _run(self, ctrl_id: int) -> None:
        try:
            while (command := self.commands.get(ctrl_id)) is not None and command["ctrl_state"] not in FINAL:
                await asyncio.sleep(self.command_delay)
                self._advance(ctrl_id)
        finally:
            if self._tasks.get(ctrl_id) is asyncio.current_task():
                del self._tasks[ctrl_id]

    @staticmethod
    def _hits(setting: bool | set[str], comm_no: str) -> bool:
        return setting is True or (isinstance(setting, (set, frozenset)) and comm_no in setting)

    def _held(self, command: dict[str, Any]) -> str | None:
        """Why a waiting command may not go yet: its ctrl_time is ahead, or its upper command has not succeeded.

        Returns "wait" to keep it waiting, "upper" when its upper command ended without success (it never runs).
        """
        if command["ctrl_state"] != 0:
            return None
        if self._now() < self._parse(command["ctrl_time"], "ctrl_time"):
            return "wait"
        if upper_id := command.get("upper_ctrl_id"):
            upper = self.commands.get(upper_id)
            if upper is None or (upper["ctrl_state"] in FINAL and upper["ctrl_state"] != 3):
                return "upper"
            if upper["ctrl_state"] != 3:
                return "wait"
        return None

    def _advance(self, ctrl_id: int) -> bool:
        """Move one command on by one state; False when it cannot move now (scheduled, or its upper is under way)."""
        command = self.commands[ctrl_id]
        state, comm_no = command["ctrl_state"], command["target_comm_no"]
        if state in FINAL:
            return False
        held = self._held(command)
        if self._now() >= self._parse(command["ctrl_timeout"], "ctrl_timeout"):
            self._finish(command, 6, "等待应答超时")
        elif held == "upper":
            self._finish(command, 99, "上级任务未成功")
        elif held == "wait":
            return False
        elif state == 0 and self._hits(self.send_fail_commands, comm_no):
            self._finish(command, 7, "发送数据失败")
        elif state == 1 and self._hits(self.timeout_commands, comm_no):
            self._finish(command, 6, "等待应答超时")
        elif state in (0, 1):
            command |= {"ctrl_state": state + 1, "ctrl_state_msg": STATE_MSG[state + 1]}
        elif self._hits(self.fail_commands, comm_no):
            self._finish(command, 4, "表计执行失败")
        else:
            self._succeed(command)
        return True

    def _expire(self) -> None:
        """Time out every unfinished command whose ctrl_timeout the clock has passed."""
        now = self._now()
        for command in list(self.commands.values()):
            if command["ctrl_state"] not in FINAL and now >= self._parse(command["ctrl_timeout"], "ctrl_timeout"):
                self._finish(command, 6, "等待应答超时")

    def _finish(self, command: dict[str, Any], state: int, feedback: str, result: Any = None) -> None:
        command |= {"ctrl_state": state, "ctrl_state_msg": STATE_MSG[state], "ctrl_feedback_msg": feedback}
        if result is not None:
            command["return_data"] = json.dumps(result, ensure_ascii=False)
        if self.push_url:  # every end of every attempt is reported, a retried task's too
            self._reports[command["ctrl_id"]] = self._queue(PUSH_PATHS["report"], self.report_body(command["ctrl_id"]))

    def _succeed(self, command: dict[str, Any]) -> None:
        """The meter answered: apply the command's effect and fill return_data."""
        dev = self.devices.get(command["target_comm_no"])
        if dev is None:
            self._finish(command, 99, "设备不存在")
            return
        kind, flags, ctrl_id = command["ctrl_type"].rsplit(".", 1)[1], dev.flags, command["ctrl_id"]
        data = json.loads(command["ctrl_data"])

        def d(key: str) -> Decimal:
            return q3(Decimal(str(data[key])))

        if ".prepay." in command["ctrl_type"] and kind != "openaccount" and not flags["open_state"]:
            self._finish(command, 4, "表计未开户")
            return
        result: dict[str, Any] = {}
        if kind in ("setvalveon", "setvalveoff"):
            flags |= {"valve_open": kind == "setvalveon", "remote_valve_off": kind == "setvalveoff"}
            self.add_event(dev.comm_no, 101 if kind == "setvalveon" else 102, data={"ctrl_id": ctrl_id})
        elif kind == "releaseforce":
            flags["force_valve_on"] = False
        elif kind == "setcumulant":
            dev.std_sum, dev.work_sum = d("std_sum"), d("work_sum")
        elif kind in ("setprice", "openaccount"):
            start = self._parse(data.get("cycle_start", data.get("cycle_start_time")), "cycle_start")
            dev.ladder = {key: float(data[key]) for key in LADDER_KEYS}
            dev.ladder |= {"cycle_start": self._fmt(start), "cycle_month": int(data["cycle_month"])}
            dev.curr_price = d("price1")
            if kind == "openaccount":
                dev.remain_money, dev.total_buy_value = d("charge_value"), d("total_value")
                flags["open_state"] = True
                result = {"success": 0, "reason": 0, "reason_msg": "", "remain": n3(dev.remain_money)}
            else:
                self.add_event(dev.comm_no, 104, data={"ctrl_id": ctrl_id} | dev.ladder)
        elif kind == "getprice":
            result = dict(dev.ladder)
        elif kind == "setremain":
            dev.remain_money = d("remain_value")
            result = {"remain_value": n3(dev.remain_money)}
        elif kind == "remotecharge":
            result = self._remote_charge(dev, data, ctrl_id)
        elif kind == "getchargestate":
            result = dict(dev.charges)
        self._finish(command, 3, "", result)

    def _remote_charge(self, dev: SimDevice, data: dict[str, Any], ctrl_id: int) -> dict[str, Any]:
        """remote_charge_param in, remote_charge_return out; a refusal (0xbb) moves no money."""
        result = {"success": CHARGE_OK, "reason": 0, "calc_type": dev.flags["calc_type"]}
        value, total = (q3(Decimal(str(data[key]))) for key in ("charge_value", "total_value"))
        if reason := self._charge_refusal(dev, data):  # the task succeeds, the meter says no
            result |= {"success": CHARGE_REFUSED, "reason": reason}
        elif self.check_charge_sequence:  # the next in the sequence, checked: its count and total are right
            self._charge(dev, value, int(data["charge_times"]), total)
        else:  # lenient: any count (0 means the next) and any total are taken
            times = int(data["charge_times"]) or dev.charges["remote_charge_times"] + 1
            self._charge(dev, value, times, Decimal(str(dev.charges["remote_total_value"])) + value)
        if result["success"] == CHARGE_OK:
            self.add_event(dev.comm_no, 103, data={"ctrl_id": ctrl_id, "charge_value": n3(value)})
        return result | {"remain": n3(dev.remain_money)}

    def _charge_refusal(self, dev: SimDevice, data: dict[str, Any]) -> int:
        """Why the meter refuses this remote_charge_param (a CHARGE_REASONS code), or 0 when it takes it."""
        if self._hits(self.refuse_charges, dev.comm_no):
            return REASON_REFUSED
        if not self.check_charge_sequence:
            return 0
        if int(data["charge_times"]) != int(dev.charges["remote_charge_times"]) + 1:
            return REASON_TIMES
        expected = q3(Decimal(str(dev.charges["remote_total_value"])) + q3(Decimal(str(data["charge_value"]))))
        return REASON_TOTAL if q3(Decimal(str(data["total_value"]))) != expected else 0

    @staticmethod
    def _charge(dev: SimDevice, value: Decimal, times: int, remote_total: Decimal) -> None:
        """A remote charge the meter took: its counters (remote_charge_state), its money and what was bought."""
        dev.remain_money, dev.total_buy_value = dev.remain_money + value, dev.total_buy_value + value
        dev.charges |= {"remote_charge_times": times, "remote_charge_value": n3(value)}
        dev.charges["remote_total_value"] = n3(remote_total)

    def external_recharge(self, comm_no: str, amount: Decimal | float | str) -> dict[str, Any]:
        """Another system charged the meter remotely (no request of ours): the next count, totals, money.

        Return the meter's remote_charge_state afterwards. The meter logs it as event 103, as it does ours.
        """
        dev = self._device(comm_no, METER)
        try:
            value = Decimal(str(amount))
        except ArithmeticError:
            raise ValueError(f"amount is not a number: {amount!r}") from None
        if not value.is_finite() or (value := q3(value)) <= 0:
            raise ValueError(f"amount must be above zero, not {amount!r}")
        if not dev.flags["open_state"]:
            raise ValueError(f"meter {comm_no!r} has no account opened")
        times = int(dev.charges["remote_charge_times"]) + 1
        self._charge(dev, value, times, Decimal(str(dev.charges["remote_total_value"])) + value)
        self.add_event(comm_no, 103, data={"charge_value": n3(value), "charge_times": times})
        return dict(dev.charges)

    async def step(self) -> None:
        """Move every unfinished command on by one state now, then restart their timers."""
        await self._stop_commands()
        for ctrl_id in list(self.commands):
            self._advance(ctrl_id)
        for ctrl_id, command in self.commands.items():
            if command["ctrl_state"] not in FINAL:
                self._start(ctrl_id)
        await self.drain()

    async def settle(self) -> None:
        """Bring every unfinished command to its final state now (for deterministic tests)."""
        await self._stop_commands()
        moved = True
        while moved:  # a chained command moves once its upper one (maybe later in the table) has finished
            moved = False
            for ctrl_id, command in self.commands.items():
                while command["ctrl_state"] not in FINAL and self._advance(ctrl_id):
                    moved = True
        for ctrl_id, command in self.commands.items():
            if command["ctrl_state"] not in FINAL:
                self._start(ctrl_id)  # scheduled or chained: still waiting, its timer runs on
        await self.drain()

    async def _stop_commands(self) -> None:
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.clear()

    @override
    async def close(self) -> None:
        """Stop the commands' timers and background pushes, close the push session."""
        await self._stop_commands()
        for task in list(self._push_tasks):
            task.cancel()
        await asyncio.gather(*self._push_tasks, return_exceptions=True)
        await super().close()

    # --- pushes to us -----------------------------------------------------------------------------

    @staticmethod
    def _push_body(entry: dict[str, Any], *drop: str) -> dict[str, Any]:
        return {key: value for key, value in entry.items() if key not in {"company_no", *drop}}

    def reading_body(self, comm_no: str) -> dict[str, Any]:
        """3.1.1's body: the current record without data_guid and company_no."""
        return self._push_body(self.record(comm_no), "data_guid")

    def report_body(self, ctrl_id: int) -> list[dict[str, Any]]:
        """4.2.12's body: a one-element array; its sample writes a space where 4.2.4's writes "T"."""
        c = self.commands[ctrl_id]
        created, deadline = (c[key].replace("T", " ") for key in ("ctrl_time", "ctrl_timeout"))
        return [
            {"ctrl_id": ctrl_id, "meter_comm_no": c["target_comm_no"], "ctrl_time": created, "ctrl_timeout": deadline}
            | {key: c[key] for key in ("ctrl_type", "ctrl_state", "ctrl_state_msg", "ctrl_feedback_msg", "return_data")}
        ]

    def _new_push(self, path: str, body: Any) -> Push:
        if not self.push_url:
            raise RuntimeError("no push_url is set")
        push = Push(path, body, self._now())
        self.outbox.append(push)
        return push

    def _queue(self, path: str, body: Any) -> Push:
        """Push in the background; without a running loop the push waits for resend_pending()."""
        push = self._new_push(path, body)
        try:
            task = asyncio.get_running_loop().create_task(self._deliver(push))
        except RuntimeError:
            return push
        self._push_tasks.add(task)
        task.add_done_callback(self._push_tasks.discard)
        return push

    async def _deliver(self, push: Push) -> tuple[int, Any]:
        """POST a push with our data API headers; status 0 when it never got an answer."""
        if not self.push_url:
            return 0, "no push_url is set"
        headers = {"Content-Type": "application/json; charset=utf-8"}
        headers |= {"company_no": self.company_no, "data_api_key": self.data_api_key}
        push.attempts += 1
        url = f"{self.push_url.rstrip('/')}/{push.path}"
        try:
            status, answer = await self.post_push(url, headers, dumps(push.body).encode())
        except (aiohttp.ClientError, TimeoutError) as err:
            status, answer = 0, f"{type(err).__name__}: {err}"
        push.delivered = status == 200 and isinstance(answer, dict) and answer.get("State") == "success"
        self.pushes.append((push.path, push.body, status, answer))
        return status, answer

    async def drain(self) -> None:
        """Wait for every background push (alarms, events, command reports) to get its answer."""
        while self._push_tasks:
            await asyncio.gather(*list(self._push_tasks), return_exceptions=True)

    async def resend_pending(self) -> list[tuple[int, Any]]:
        """Send again every push not yet answered with State success, as the platform does for 7 days."""
        await self.drain()
        cutoff = self._now() - timedelta(days=RESEND_DAYS)
        return [await self._deliver(push) for push in self.outbox if not push.delivered and push.first > cutoff]

    async def push_again(self, index: int = -1) -> tuple[int, Any]:
        """Send the identical body of outbox[index] once more (a platform re-send)."""
        return await self._deliver(self.outbox[index])

    async def resend_report(self, ctrl_id: int) -> tuple[int, Any]:
        """POST the task's last Report once more, byte for byte (the platform re-delivering it); the answer."""
        await self.drain()  # the first delivery goes first, as on the platform
        push = self._reports.get(int(ctrl_id))
        if push is None:
            raise ValueError(f"no Report was pushed for ctrl_id {ctrl_id!r}")
        return await self._deliver(push)

    async def push_twice(self, comm_no: str) -> list[tuple[int, Any]]:
        """Push a device's reading, then the identical body again; return both answers."""
        push = self._new_push(PUSH_PATHS["reading"], self.reading_body(comm_no))
        return [await self._deliver(push), await self._deliver(push)]

    @override
    async def push_reading(self, meter_no: str) -> tuple[int, Any]:
        """POST the device's current record to {push_url}/api/Data/MeterData/Add."""
        return await self._deliver(self._new_push(PUSH_PATHS["reading"], self.reading_body(meter_no)))

    @override
    async def push_alarm(self, meter_no: str, code: int = 4, content: str | None = None) -> tuple[int, Any]:
        """Record an alarm and POST it to {push_url}/api/Data/DeviceAlarm/Add at once; return the answer."""
        return await self._push_logged("alarm", meter_no, code, content)

    async def push_event(self, meter_no: str, code: int = 101, content: str | None = None) -> tuple[int, Any]:
        """Record an event and POST it to {push_url}/api/Data/DeviceEvent/Add at once; return the answer."""
        return await self._push_logged("event", meter_no, code, content)

    async def _push_logged(self, kind: str, comm_no: str, code: int, content: str | None) -> tuple[int, Any]:
        if not self.push_url:
            raise RuntimeError("no push_url is set")
        body = self._push_body(self._log(kind, comm_no, code, content), f"{kind}_id")
        return await self._deliver(self._new_push(PUSH_PATHS[kind], body))

    # --- /_sim/ -----------------------------------------------------------------------------------

    async def _sim_logged(self, request: web.Request, kind: str) -> web.Response:
        data = await read_body(request)
        comm_no = str(data.get("comm_no") or data.get("device_comm_no") or data.get("meter_no"))
        code = int(data.get("code") or (4 if kind == "alarm" else 101))
        content = data.get("content")
        if comm_no not in self.devices:
            return reply({"error": f"unknown device {comm_no!r}"}, status=404)
        if self.push_url:
            return await self._sim_pushed(comm_no, lambda: self._push_logged(kind, comm_no, code, content))
        entry = (self.add_alarm if kind == "alarm" else self.add_event)(comm_no, code, content)
        return reply({kind: entry})

    @override
    async def _sim_alarm(self, request: web.Request) -> web.Response:
        return await self._sim_logged(request, "alarm")

    async def _sim_event(self, request: web.Request) -> web.Response:
        return await self._sim_logged(request, "event")

    @override
    async def _sim_push_reading(self, request: web.Request) -> web.Response:
        data = await read_body(request)
        comm_no = str(data.get("comm_no") or data.get("meter_comm_no") or data.get("meter_no"))
        return await self._sim_pushed(comm_no, lambda: self.push_reading(comm_no))

    async def _sim_advance(self, request: web.Request) -> web.Response:
        self.advance(float((await read_body(request)).get("seconds", 0)))
        return reply({"ok": True, "now": self._fmt(self._now())})

    async def _sim_expire_tokens(self, request: web.Request) -> web.Response:
        """Kill every token; {"refusal": "http200", "message": ..., "login_message": ...} also sets how."""
        data = await read_body(request)
        refusal = data.get("refusal", self.token_refusal)
        if refusal not in TOKEN_REFUSALS:
            return reply({"error": f"refusal must be one of {sorted(TOKEN_REFUSALS)}"}, status=400)
        self.token_refusal = refusal
        self.token_message = str(data.get("message") or self.token_message)
        self.login_message = str(data.get("login_message") or self.login_message)
        return reply({"ok": True, "expired": self.expire_tokens(), "refusal": refusal})

    async def _sim_settle(self, _request: web.Request) -> web.Response:
        await self.settle()
        return reply({"ok": True, "commands": list(self.commands.values())})

    async def _sim_step(self, _request: web.Request) -> web.Response:
        await self.step()
        return reply({"ok": True, "commands": list(self.commands.values())})

    async def _sim_external_recharge(self, request: web.Request) -> web.Response:
        data = await read_body(request)
        comm_no = str(data.get("comm_no") or data.get("meter_comm_no") or data.get("meter_no"))
        if getattr(self.devices.get(comm_no), "device_type", None) != METER:
            return reply({"error": f"unknown meter {comm_no!r}"}, status=404)
        try:
            charges = self.external_recharge(comm_no, str(data.get("amount")))
        except ValueError as err:
            return reply({"error": str(err)}, status=400)
        dev = self.devices[comm_no]
        money = {"remain_money": n3(dev.remain_money), "total_buy_value": n3(dev.total_buy_value)}
        return reply({"ok": True, "remote_charge_state": charges} | money)

    async def _sim_resend_report(self, request: web.Request) -> web.Response:
        raw = (await read_body(request)).get("ctrl_id")
        ctrl_id = int(raw) if isinstance(raw, int) or (isinstance(raw, str) and raw.isdigit()) else -1
        if ctrl_id not in self._reports:
            return reply({"error": f"no Report was pushed for ctrl_id {raw!r}"}, status=404)
        status, answer = await self.resend_report(ctrl_id)
        return reply({"status": status, "answer": answer})

    @override
    def state(self) -> dict[str, Any]:
        """Return everything the simulator holds (the last 14 frozen records per device)."""
        credentials = {"company_no": self.company_no, "data_api_key": self.data_api_key}
        credentials |= {"login_name": self.login_name, "password": self.password}
        settings = {name: getattr(self, name) for name in ("fail_commands", "timeout_commands", "send_fail_commands")}
        return {
            "credentials": credentials,
            "now": self._fmt(self._now()),
            "push_url": self.push_url,
            "devices": [self._record(dev) | {"sim": asdict(dev)} for dev in self.devices.values()],
            "history": {comm_no: records[-14:] for comm_no, records in self.history.items()},
            "commands": list(self.commands.values()),
            "attempts": dict(self.attempts),
            "alarms": self.alarms,
            "events": self.events,
            "outbox": [asdict(push) for push in self.outbox[-50:]],
            "settings": settings
            | {"refuse_charges": self.refuse_charges, "command_delay": self.command_delay}
            | {"strict": self.strict, "check_charge_sequence": self.check_charge_sequence}
            | {"token_refusal": self.token_refusal, "token_message": self.token_message}
            | {"login_message": self.login_message, "tokens_alive": len(self._tokens)},
        }
