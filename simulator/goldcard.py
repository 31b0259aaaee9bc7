"""Goldcard (金卡) DAS simulator: the server side of endpoints 1001-1015 and the pushes 2001-2003."""

from __future__ import annotations

import asyncio
import copy
import json
import logging
import re
import uuid
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import date, datetime, time, timedelta, tzinfo
from decimal import Decimal, InvalidOperation
from functools import partial
from typing import Any, override
from zoneinfo import ZoneInfo

import aiohttp
from aiohttp import web

from .common import TIME_FORMAT, ZERO, SimulatorBase, dumps, q4, read_body, reply, s4, sign, signature_ok

_LOGGER = logging.getLogger(__name__)

WALL_FORMAT = "%Y-%m-%d %H:%M:%S"
HISTORY_DAYS = 60
# A seeded meter on a tiered price crossed into its second tier this many days ago.
TIER_CROSSED_DAYS_AGO = 10
DEFAULT_TZ = ZoneInfo("Asia/Shanghai")
# Appendix 5.
METER_TYPES = ("441", "502", "10521", "10522", "10524", "10523")
ENDPOINTS = {
    "1001": "api/v1/collect/meter/1001",
    "1002": "api/collect/meter/1002",
    "1004": "api/collect/meter/1004",
    "1005": "api/collect/meter/1005",
    "1007": "api/collect/meter/1007",
    "1008": "api/collect/meter/1008",
    "1009": "api/collect/meter/1009",
    "1013": "api/v2/collect/meter/1013",
    "1014": "api/v2/collect/meter/1014",
    "1015": "api/v1/collect/meter/1015",
}
PUSH_PATHS = {"2001": "api/collect/meter/2001", "2002": "api/collect/meter/2002", "2003": "api/collect/meter/2003"}
_TOKEN_MSG = "Token 校验未通过(检查 AccessToken 和 Authorization 是否正确)"
# Appendix 4.
MESSAGES = {
    "0101": _TOKEN_MSG,
    "0103": _TOKEN_MSG,
    "0105": _TOKEN_MSG,
    "0404": "厂商编码(factorNo)错误",
    "9995": "服务未启动",
    "9999": "参数异常",
}
DUPLICATE_SERIAL = "流水号重复"  # the strict answer to a serialNo seen before (2.2 "流水号做唯一校验")
BAD_RECHARGE_COUNT = "参数异常: 充值次数(rechargeCount)须为正整数"
# What a reverse proxy in front of the DAS answers when the DAS's own answer is lost (fault mode lost_502).
PROXY_502 = (
    "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
    "<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
)
# Each endpoint encodes the valve differently; 2001 has no "unknown".
VALVE_1013 = {"open": "0", "closed": "1", "unknown": "2"}
VALVE_1014 = {"open": "1", "closed": "2", "unknown": "3"}
VALVE_2001 = {"open": "2", "closed": "3", "unknown": ""}
PRICES: dict[str, dict[str, Any]] = {
    "SIM-RES": {"priceVersion": "V1.0", "priceType": "1", "priceDetail": {"priceLength": "1", "price1": "2.5000"}},
    "SIM-TIER": {
        "priceVersion": "V1.0",
        "priceType": "2",
        "cycleLength": "12",
        "priceDetail": {"priceLength": "3", "price1": "2.2800", "ladder1End": "300", "price2": "2.7400"}
        | {"ladder2End": "600", "price3": "3.4200"},
    },
}


class DasError(Exception):
    """A refusal, answered as {"echoCode": code, "echoMsg": message}."""

    def __init__(self, code: str, message: str | None = None) -> None:
        """Keep the code and the vendor-style message (appendix 4's when none is given)."""
        self.code = code
        self.message = message or MESSAGES.get(code, MESSAGES["9999"])
        super().__init__(self.message)


@dataclass(slots=True)
class DayUse:
    """One day of a meter's usage, as 1015 reports it: totals, and a record per tier price the day was billed at."""

    gas: Decimal
    amount: Decimal
    price: Decimal
    # Tier price → (gas, amount) billed at it; a day that crossed a tier has two, and 1015 lists each.
    tiers: dict[Decimal, tuple[Decimal, Decimal]] = field(default_factory=dict)

    def bill(self, parts: list[tuple[Decimal, Decimal]]) -> Decimal:
        """Add (gas, price) parts to the day; return their cost."""
        cost = ZERO
        for gas, price in parts:
            amount = q4(gas * price)
            before_gas, before_amount = self.tiers.get(price, (ZERO, ZERO))
            self.tiers[price] = (before_gas + gas, before_amount + amount)
            self.gas, self.amount, self.price, cost = self.gas + gas, self.amount + amount, price, cost + amount
        return cost


@dataclass(slots=True)
class SimMeter:
    """One simulated meter and its prepaid account."""

    meter_no: str
    user_no: str
    device_id: str
    meter_type: str
    reading: Decimal
    balance: Decimal
    price: Decimal
    price_code: str
    read_time: datetime
    set_up_time: date
    base_num: Decimal = ZERO
    sum_gas: Decimal = ZERO
    sum_money: Decimal = ZERO
    sum_recharge: Decimal = ZERO
    last_recharge_amount: Decimal = ZERO
    last_recharge_date: datetime | None = None
    recharge_count: int = 0
    valve: str = "open"  # open | closed | unknown
    # 1 the meter bills itself; 2/3 the CIS or the collection system bills it, driving it through 2001 answers.
    billing_model: str = "1"
    voltage: Decimal = Decimal("6.14")
    signal: int = 59
    state: str = "2"  # 1014 meterState: 1 disabled, 2 enabled
    user_name: str = ""
    address: str = ""
    rate: Decimal = Decimal("0.0300")  # m³ per 15 minutes while the valve is open
    cycle_gas: Decimal = ZERO  # m³ used in the current tier cycle (tiered prices bill by it)
    history: dict[date, DayUse] = field(default_factory=dict)
    recharges: list[tuple[datetime, Decimal]] = field(default_factory=list)


class GoldcardSimulator(SimulatorBase):
    """An aiohttp app answering like a Goldcard DAS for a handful of believable meters."""

    def __init__(
        self,
        *,
        app_code: str = "SIMAPP01",
        app_secret: str = "sim-secret",  # noqa: S107 - a well-known test credential
        company_code: str = "10001058",
        factor_no: str = "0011",
        meters: int = 3,
        tz: tzinfo = DEFAULT_TZ,
        command_delay: float = 1.0,
        push_url: str | None = None,
        seed: int = 1,
        strict: bool = True,
    ) -> None:
        """Build the meters, the prices and the web app.

        `strict` turns on every check the document lets a real DAS make; each one is also its own
        attribute (`unique_serials`, `check_recharge_count`) so a test can turn one off again.
        """
        super().__init__(endpoints=ENDPOINTS, tz=tz, push_url=push_url, seed=seed)
        self.app_code, self.app_secret = app_code, app_secret
        self.company_code, self.factor_no, self.command_delay = company_code, factor_no, command_delay
        # Strict: a serialNo seen before on any endpoint is refused with 9999 流水号重复 and nothing runs.
        # Lenient: a repeated 1004 gets its first answer again; other endpoints refuse a serial only
        # when it was used by a request that succeeded.
        self.unique_serials = strict
        # Strict: a recharge's rechargeCount must be a positive integer (else 9999 at once) and equal the
        # meter's recharge count + 1 when it executes (else the command fails, excuteState 2).
        self.check_recharge_count = strict
        # True fails every command; a set fails only those meters' commands.
        self.fail_commands: bool | set[str] = False
        # Centre-billed meters: the 2001 answers they took, how many answers to lose next, valves that do not move.
        self.centre_answers: list[tuple[str, dict[str, Any]]] = []
        self.lose_answers = 0
        self.stuck_valves: set[str] = set()
        # Days a meter did not report: 1013 readingDate answers the reading before them; 2001 can back-fill them.
        self.silent_days: dict[str, set[date]] = {}
        self.back_filled: set[str] = set()
        self.commands: dict[str, dict[str, Any]] = {}
        self.prices = {code: {"priceCode": code, **copy.deepcopy(price)} for code, price in PRICES.items()}
        self.meters: dict[str, SimMeter] = {}
        self._answers: dict[str, dict[str, Any]] = {}  # accepted 1004 serial → its original answer
        self._seen: set[str] = set()
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._handlers: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
            "1001": self._register,
            "1002": self._deregister,
            "1004": self._command,
            "1005": self._cancel,
            "1007": self._set_price,
            "1008": self._assign_price,
            "1009": self._replace,
            "1013": self._readings,
            "1014": self._details,
            "1015": self._daily,
        }
        for index in range(meters):
            self._seed_meter(index)
        self.app = self.make_app()

    @property
    def strict(self) -> bool:
        """Whether every strict check is on; setting it turns them all on or off."""
        return self.unique_serials and self.check_recharge_count

    @strict.setter
    def strict(self, value: bool) -> None:
        self.unique_serials = self.check_recharge_count = value

    def make_app(self) -> web.Application:
        """Build the aiohttp application: vendor endpoints plus the /_sim/ control endpoints."""
        app = web.Application()
        for number, path in ENDPOINTS.items():
            app.router.add_post(f"/{path}", partial(self._serve, number))
        self.add_control_routes(app)
        app.router.add_post("/_sim/external_recharge", self._sim_external_recharge)
        return app

    def _new_meter(self, meter_no: str, user_no: str, meter_type: str, price_code: str, **extra: Any) -> SimMeter:
        """Make a meter with the price of `price_code`, installed today unless `extra` says otherwise."""
        now, reading = self._now(), extra.pop("reading", ZERO)
        fields: dict[str, Any] = {
            "device_id": f"{self._rng.getrandbits(128):032x}",
            "set_up_time": now.date(),
            "rate": q4(Decimal(self._rng.randint(150, 400)) / 10000),
        }
        price = Decimal(self.prices[price_code]["priceDetail"]["price1"])
        fields |= {"reading": reading, "base_num": reading, "balance": ZERO, "price": price, "read_time": now} | extra
        return SimMeter(meter_no=meter_no, user_no=user_no, meter_type=meter_type, price_code=price_code, **fields)

    def _seed_meter(self, index: int) -> None:
        rng, today = self._rng, self._now().date()
        meter = self._new_meter(
            f"20191126{index + 1:04d}",
            f"09120300{index + 1:04d}",
            METER_TYPES[index % len(METER_TYPES)],
            "SIM-TIER" if index % 4 == 3 else "SIM-RES",
            set_up_time=today - timedelta(days=HISTORY_DAYS),
            voltage=Decimal(rng.randint(580, 640)) / 100,
            signal=rng.randint(35, 95),
            user_name=f"模拟用户{index + 1}",
            address=f"模拟小区{index // 10 + 1}栋{index % 10 + 1}号",
            # Some valves closed from the start, so every state shows up in a listing.
            valve="closed" if index % 3 == 2 else "open",
        )
        meter.base_num = q4(Decimal(rng.randint(0, 500)) / 10)
        # 96 quarter-hours a day, ±40 % from day to day.
        uses = [q4(meter.rate * 96 * Decimal(rng.randint(60, 140)) / 100) for _ in range(HISTORY_DAYS)]
        if (ends := self._ladder(meter)[1]) and len(uses) > TIER_CROSSED_DAYS_AGO:
            # A tiered meter crosses its first tier limit TIER_CROSSED_DAYS_AGO days ago, so 1015 shows a split day.
            before = sum(uses[: len(uses) - TIER_CROSSED_DAYS_AGO], ZERO)
            meter.cycle_gas = ends[0] - before - q4(uses[-TIER_CROSSED_DAYS_AGO] / 2)
        for back, gas in zip(range(HISTORY_DAYS, 0, -1), uses, strict=True):
            day = meter.history[today - timedelta(days=back)] = DayUse(ZERO, ZERO, meter.price)
            day.bill(self._split(meter, gas))
        meter.price = self._price_now(meter)
        meter.sum_gas = sum((use.gas for use in meter.history.values()), ZERO)
        meter.sum_money = sum((use.amount for use in meter.history.values()), ZERO)
        meter.reading = meter.base_num + meter.sum_gas
        # Two top-ups that leave a positive balance: one at installation, one mid-way. Other systems (the
        # gas company's counter) made them, so every seeded meter starts at recharge_count 2 and our first
        # 1004 recharge must say 3. A meter we register through 1001 is new: it starts at 0.
        first = Decimal(100 * (int(meter.sum_money) // 200 + 1))
        second = Decimal(100 * (int(meter.sum_money) // 100 + 1)) - first + Decimal(rng.choice((50, 100, 200)))
        start = datetime.combine(meter.set_up_time, time(9, 30), tzinfo=self.tz)
        meter.recharges = [(start, q4(first)), (start + timedelta(days=HISTORY_DAYS // 2, hours=9), q4(second))]
        meter.recharge_count, meter.sum_recharge = len(meter.recharges), q4(first + second)
        meter.last_recharge_date, meter.last_recharge_amount = meter.recharges[-1]
        meter.balance = meter.sum_recharge - meter.sum_money
        self.meters[meter.meter_no] = meter

    @override
    def tick(self, minutes: float = 15) -> None:
        """Let `minutes` of gas flow through every open, enabled meter."""
        now, factor = self._now(), Decimal(str(minutes)) / 15
        for meter in self.meters.values():
            meter.read_time = now
            if meter.valve != "open" or meter.state != "2":
                continue
            gas = q4(meter.rate * factor * Decimal(self._rng.randint(75, 125)) / 100)
            day = meter.history.setdefault(now.date(), DayUse(ZERO, ZERO, meter.price))
            cost = day.bill(self._split(meter, gas))
            meter.price = self._price_now(meter)
            meter.reading, meter.sum_gas = meter.reading + gas, meter.sum_gas + gas
            meter.sum_money, meter.balance = meter.sum_money + cost, meter.balance - cost
            if meter.balance <= 0:
                meter.valve = "closed"  # a prepaid meter shuts its own valve when the money runs out

    def _ladder(self, meter: SimMeter) -> tuple[list[Decimal], list[Decimal]]:
        """The tier prices of the meter's price and the m³ each tier but the last ends at (per cycle)."""
        detail = self.prices[meter.price_code]["priceDetail"]
        length = int(detail.get("priceLength", "1"))
        prices = [Decimal(detail[f"price{index}"]) for index in range(1, length + 1)]
        return prices, [Decimal(detail[f"ladder{index}End"]) for index in range(1, length)]

    def _price_now(self, meter: SimMeter) -> Decimal:
        """The tier price the next m³ is billed at."""
        prices, ends = self._ladder(meter)
        return prices[sum(1 for end in ends if meter.cycle_gas >= end)]

    def _split(self, meter: SimMeter, gas: Decimal) -> list[tuple[Decimal, Decimal]]:
        """`gas` as (m³, price) parts by tier, moving the meter through its cycle."""
        prices, ends = self._ladder(meter)
        parts = []
        while gas > 0:
            tier = sum(1 for end in ends if meter.cycle_gas >= end)
            room = ends[tier] - meter.cycle_gas if tier < len(ends) else gas
            part = min(gas, room)
            parts.append((part, prices[tier]))
            meter.cycle_gas, gas = meter.cycle_gas + part, gas - part
        return parts

    async def settle(self) -> None:
        """Finish every pending command now instead of after its delay (for deterministic tests)."""
        for task in list(self._tasks.values()):
            task.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)
        self._tasks.clear()
        for serial, command in list(self.commands.items()):
            if command["state"] == "pending":
                await self._finish(serial)

    @override
    async def close(self) -> None:
        """Cancel pending commands and background work, close the push session."""
        for task in self._tasks.values():
            task.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)
        self._tasks.clear()
        await super().close()

    async def _serve(self, number: str, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        try:
            payload = json.loads(raw.decode("utf-8-sig"))
        except (UnicodeDecodeError, ValueError):
            payload = None
        self.requests.append((number, payload if isinstance(payload, dict) else {}))
        fault = self.faults.take(number)
        mode = fault.mode if fault else None
        if mode == "http500":
            return web.Response(status=500, text="Internal Server Error")
        if mode == "malformed":
            return web.Response(text="<html><body>502 Bad Gateway</body></html>", content_type="text/html")
        if fault is not None and mode in ("error", "auth"):
            code = "0101" if mode == "auth" else fault.code or "9995"
            return reply({"echoCode": code, "echoMsg": MESSAGES.get(code, MESSAGES["9999"])})
        try:
            answer = {"echoCode": "0000", "echoMsg": self._handle(number, request.headers, payload)}
        except DasError as err:
            answer = {"echoCode": err.code, "echoMsg": err.message}
        # The lost-answer modes strike after the work is done: the request got through, only the answer
        # is lost (no answer in time, a dropped connection, a proxy's 502, a body cut short).
        if mode == "timeout":
            await asyncio.sleep(self.hang_seconds)
        if mode == "drop" and request.transport is not None:
            request.transport.close()
        if mode == "lost_502":
            return web.Response(status=502, text=PROXY_502, content_type="text/html")
        if mode == "lost_garbled":
            text = dumps(answer)  # a JSON object: any proper prefix of it is not JSON
            return web.Response(text=text[: len(text) // 2], content_type="application/json")
        return reply(answer)

    def _handle(self, number: str, headers: Mapping[str, str], payload: Any) -> dict[str, Any]:
        if not signature_ok(headers, self.app_code, self.app_secret, self._now(), self.tz):
            raise DasError("0101")
        if not isinstance(payload, dict):
            raise DasError("9999", "请求报文不是合法的 JSON 对象")
        serial = str(payload.get("serialNo") or "").strip()
        if self.unique_serials:
            # 2.2 "流水号做唯一校验". A serial is used up once its request was accepted for processing: it
            # passed the signature check (a forged or stale request proves nothing and must not burn the
            # real sender's serial) and is a JSON object naming one. From then on it counts whatever
            # happens next, a refusal by the handler (9999 用户不存在, a bad field) included, as a DAS
            # logging every request by serial under a unique key would. Injected "auth", "error",
            # "http500" and "malformed" faults answer before this point and use nothing up.
            if serial in self._seen:
                raise DasError("9999", DUPLICATE_SERIAL)
            if serial:
                self._seen.add(serial)
            return self._handlers[number](payload)
        # Lenient: a repeated 1004 is answered as before instead (see _command).
        if number != "1004" and serial in self._seen:
            raise DasError("9999", f"流水号 {serial} 重复")
        message = self._handlers[number](payload)
        self._seen.add(serial)
        return message

    def _require(self, p: Mapping[str, Any], names: str) -> None:
        """Refuse with 9999 unless every space-separated name is present; check factor and company codes."""
        missing = [name for name in names.split() if p.get(name) is None or str(p[name]).strip() == ""]
        if missing:
            raise DasError("9999", f"参数异常: 缺少 {', '.join(missing)}")
        # factorNo is optional for 1005, so it is checked whenever it is given.
        if str(p.get("factorNo") or "").strip() not in ("", self.factor_no):
            raise DasError("0404")
        if "companyCode" in names and str(p["companyCode"]).strip() != self.company_code:
            raise DasError("9999", f"公司编码 {p['companyCode']} 不存在")

    def _account(self, p: Mapping[str, Any]) -> SimMeter:
        meter_no, user_no = str(p.get("meterNo") or "").strip(), str(p.get("userNo") or "").strip()
        if meter_no:
            meter = self.meters.get(meter_no)
        else:  # 1015's own sample asks by userNo alone
            meter = next((m for m in self.meters.values() if m.user_no == user_no), None)
        if meter is None or meter.user_no != user_no:
            raise DasError("9999", "用户不存在")
        return meter

    def _ack(self, serial: Any, device_id: str = "") -> dict[str, Any]:
        return {"serialNo": str(serial), "deviceId": device_id, "rdateTime": self._now().strftime(TIME_FORMAT)}

    @staticmethod
    def _decimal(value: Any, name: str) -> Decimal:
        try:
            number = Decimal(str(value).strip())
        except InvalidOperation:
            raise DasError("9999", f"{name} 格式错误") from None
        if isinstance(value, bool) or not number.is_finite() or number < 0:
            raise DasError("9999", f"{name} 格式错误")
        return number

    @staticmethod
    def _parse(value: Any, fmt: str, name: str) -> datetime:
        try:
            return datetime.strptime(str(value).strip(), fmt)
        except ValueError:
            raise DasError("9999", f"{name} 格式错误") from None

    def _register(self, p: dict[str, Any]) -> dict[str, Any]:
        self._require(p, "serialNo userNo factorNo meterType meterNo initNum billingModel payModel companyCode")
        self._require(p, "sdateTime priceCode")
        user_no, meter_no, code = (str(p[key]).strip() for key in ("userNo", "meterNo", "priceCode"))
        if len(user_no) > 17 or len(meter_no) != 12 or not meter_no.isdigit():
            raise DasError("9999", "用户号不超过 17 位, 表号须为 12 位数字")
        if str(p["meterType"]) not in METER_TYPES:
            raise DasError("9999", f"表具类型 {p['meterType']} 不存在")
        if str(p["billingModel"]) not in ("1", "2", "3") or str(p["payModel"]) not in ("1", "2"):
            raise DasError("9999", "结算模式或付费模式错误")
        if code not in self.prices:
            raise DasError("9999", f"价格编码 {code} 不存在")
        if any(m.user_no == user_no for m in self.meters.values()):
            raise DasError("9999", f"用户号 {user_no} 已存在，表具注册失败！")
        if meter_no in self.meters:
            raise DasError("9999", f"表号 {meter_no} 已存在，表具注册失败！")
        initial = q4(self._decimal(p["initNum"], "initNum"))
        meter = self._new_meter(meter_no, user_no, str(p["meterType"]), code, reading=initial)
        meter.device_id = str(p.get("deviceId") or "").strip() or meter.device_id
        meter.user_name, meter.address = str(p.get("username") or ""), str(p.get("address") or "")
        meter.billing_model = str(p["billingModel"])
        self.meters[meter_no] = meter
        return self._ack(p["serialNo"], meter.device_id)

    def _deregister(self, p: dict[str, Any]) -> dict[str, Any]:
        self._require(p, "serialNo userNo factorNo meterNo initNum reason companyCode sdateTime")
        meter = self.meters.get(str(p["meterNo"]).strip())
        if meter is None or meter.user_no != str(p["userNo"]).strip():
            raise DasError("9999", f"用户号 {p['userNo']} 不存在，表具注销失败！")
        if len(str(p["reason"])) > 100:
            raise DasError("9999", "注销原因不得超过 100 字符")
        self._decimal(p["initNum"], "initNum")
        del self.meters[meter.meter_no]
        return self._ack(p["serialNo"], meter.device_id)

    def _command(self, p: dict[str, Any]) -> dict[str, Any]:
        serial = str(p.get("serialNo") or "").strip()
        if serial in self._answers:
            return self._answers[serial]  # already accepted: answer as the first time, do not run it again
        self._require(p, "serialNo userNo factorNo meterNo paramNo paramContext companyCode sdateTime")
        meter = self._account(p)
        if meter.billing_model != "1" and self.strict:
            # The CIS (or the collection system) drives a centre-billed meter through its 2001 answers.
            raise DasError("9999", "中心计费表具不支持该指令")
        context = p["paramContext"]
        data = context.get("data") if isinstance(context, dict) else None
        if not isinstance(data, dict):
            raise DasError("9999", "参数正文(paramContext)格式错误")
        param = str(p["paramNo"]).strip()
        if param == "03":
            if (valve := str(data.get("valveSet", "")).strip()) not in ("0", "1"):
                raise DasError("9999", "valveSet 须为 0(开阀) 或 1(关阀)")
            detail: dict[str, Any] = {"valveSet": valve}
        elif param == "05":
            amount = self._decimal(data.get("rechargeAmount"), "rechargeAmount")
            if amount <= 0 or not (stream := str(data.get("rechargeStream") or "").strip()):
                raise DasError("9999", "充值金额须大于 0, 充值流水号不能为空")
            when = self._parse(data.get("rechargeDate"), WALL_FORMAT, "rechargeDate").replace(tzinfo=self.tz)
            count = str(data.get("rechargeCount") or "")
            if self.check_recharge_count:
                count = str(self._recharge_count(data.get("rechargeCount")))
            detail = {"rechargeAmount": q4(amount), "rechargeCount": count, "rechargeDate": when}
            detail["rechargeStream"] = stream
        else:
            raise DasError("9999", f"不支持的命令码 {param}")
        self.commands[serial] = {
            "serial": serial,
            "meter_no": meter.meter_no,
            "user_no": meter.user_no,
            "param_no": param,
            "data": detail,
            "state": "pending",
            "accepted": self._now(),
            "finished": None,
            "reason": None,  # why it failed, when it did
        }
        self._tasks[serial] = asyncio.get_running_loop().create_task(self._run_later(serial))
        self._answers[serial] = self._ack(serial, meter.device_id)
        return self._answers[serial]

    async def _run_later(self, serial: str) -> None:
        await asyncio.sleep(self.command_delay)
        self._tasks.pop(serial, None)
        await self._finish(serial)

    @staticmethod
    def _recharge_count(value: Any) -> int:
        """A rechargeCount as the strict DAS takes it: a positive integer, as a string ("3") or a number."""
        text = str(value).strip() if isinstance(value, (str, int)) and not isinstance(value, bool) else ""
        if not re.fullmatch(r"[0-9]+", text) or int(text) < 1:
            raise DasError("9999", BAD_RECHARGE_COUNT)
        return int(text)

    @classmethod
    def _count_or_none(cls, value: Any) -> int | None:
        try:
            return cls._recharge_count(value)
        except DasError:
            return None  # accepted while the check was off: it cannot match

    async def _finish(self, serial: str) -> None:
        """Execute a pending command, after the pending commands of its meter accepted before it."""
        command = self.commands.get(serial)
        if command is None or command["state"] != "pending":
            return
        # A meter carries out its commands in the order they were accepted, whatever their delays were.
        for earlier, other in list(self.commands.items()):
            if earlier == serial:
                break
            if other["meter_no"] == command["meter_no"] and other["state"] == "pending":
                if (task := self._tasks.pop(earlier, None)) is not None:
                    task.cancel()
                await self._execute(earlier)
        await self._execute(serial)

    async def _execute(self, serial: str) -> None:
        command = self.commands[serial]
        if command["state"] != "pending":
            return
        meter, data = self.meters.get(command["meter_no"]), command["data"]
        failing = self.fail_commands is True or (
            isinstance(self.fail_commands, set) and command["meter_no"] in self.fail_commands
        )
        command["finished"], command["state"] = self._now(), "done"
        if meter is None or meter.user_no != command["user_no"]:
            command["state"], command["reason"] = "failed", "表具不存在"
        elif failing:
            command["state"], command["reason"] = "failed", "模拟执行失败(fail_commands)"
        elif command["param_no"] == "03":
            meter.valve = "open" if data["valveSet"] == "0" else "closed"
        elif self.check_recharge_count and self._count_or_none(data["rechargeCount"]) != meter.recharge_count + 1:
            # The meter refuses a top-up whose count is not the next one: money moves once, in order.
            command["state"] = "failed"
            command["reason"] = (
                f"充值次数不符: 表已充值 {meter.recharge_count} 次, 应为 {meter.recharge_count + 1}, "
                f"收到 {data['rechargeCount'] or '(空)'}"
            )
        else:
            self._apply_recharge(meter, data["rechargeAmount"], data["rechargeDate"])
        if self.push_url:
            try:
                await self._post("2002", self.command_body(serial))
            except (aiohttp.ClientError, TimeoutError) as err:
                _LOGGER.warning("2002 push for %s failed: %s", serial, err)

    @staticmethod
    def _apply_recharge(meter: SimMeter, amount: Decimal, when: datetime) -> None:
        meter.balance, meter.sum_recharge = meter.balance + amount, meter.sum_recharge + amount
        meter.last_recharge_amount, meter.last_recharge_date = amount, when
        meter.recharge_count += 1
        meter.recharges.append((when, amount))

    def external_recharge(self, meter_no: str, amount: Decimal, when: datetime | None = None) -> SimMeter:
        """Another system (the gas company's counter) tops a meter up, without any request from us.

        The meter's recharge count goes up by one, so our next 1004 recharge must carry the new count + 1.
        Raises KeyError for an unknown meter and ValueError for an amount that is not positive.
        """
        meter = self.meters[meter_no]
        amount = Decimal(amount)
        if not amount.is_finite() or amount <= 0:
            raise ValueError(f"recharge amount must be positive, not {amount}")
        when = when or self._now()
        self._apply_recharge(meter, q4(amount), when if when.tzinfo else when.replace(tzinfo=self.tz))
        return meter

    def _cancel(self, p: dict[str, Any]) -> dict[str, Any]:
        self._require(p, "serialNo userNo meterNo sendSerialNo companyCode")
        meter = self._account(p)
        sent = str(p["sendSerialNo"]).strip()
        command = self.commands.get(sent)
        if command is None or command["meter_no"] != meter.meter_no or command["state"] != "pending":
            raise DasError("9999", f"指令 {sent} 不存在或已执行, 无法取消")
        command["state"], command["finished"] = "cancelled", self._now()
        if (task := self._tasks.pop(sent, None)) is not None:
            task.cancel()
        return self._ack(p["serialNo"], meter.device_id)

    def _set_price(self, p: dict[str, Any]) -> dict[str, Any]:
        self._require(p, "serialNo factorNo companyCode priceCode priceVersion priceProperty priceType priceDetail")
        code, prop, kind = str(p["priceCode"]).strip(), str(p["priceProperty"]), str(p["priceType"])
        if prop not in ("1", "2") or kind not in ("1", "2"):
            raise DasError("9999", "价格属性(priceProperty)或价格类型(priceType)错误")
        detail = self._price_detail(p["priceDetail"], kind)
        if kind == "2":  # "启用阶梯需填"
            self._require(p, "cycleLength")
            if not str(p["cycleLength"]).isdigit() or int(p["cycleLength"]) <= 0:
                raise DasError("9999", "周期长度(cycleLength)格式错误")
        if prop == "1" and code in self.prices:
            raise DasError("2004", "价格信息已存在")
        if prop == "2":
            if code not in self.prices:
                raise DasError("9999", f"价格编码 {code} 不存在")
            self._require(p, "priceBeginDate")  # "调价必填"
            self._parse(p["priceBeginDate"], "%Y-%m-%d", "priceBeginDate")
        optional = {
            key: str(p[key]) for key in ("cycleLength", "priceBeginDate", "clearFlag") if p.get(key) is not None
        }
        self.prices[code] = {"priceCode": code, "priceVersion": str(p["priceVersion"]), "priceType": kind, **optional}
        self.prices[code]["priceDetail"] = detail
        for meter in self.meters.values():
            if meter.price_code == code:  # adjustments apply at once; priceBeginDate is not waited for
                meter.price = self._price_now(meter)
        return self._ack(p["serialNo"])

    def _price_detail(self, raw: Any, kind: str) -> dict[str, str]:
        if not isinstance(raw, dict):
            raise DasError("9999", "价格表(priceDetail)格式错误")
        detail = {str(key): str(value).strip() for key, value in raw.items()}
        length = detail.get("priceLength", "")
        if not length.isdigit() or int(length) < 1 or (kind == "1") != (int(length) == 1):
            raise DasError("9999", "价格阶梯数(priceLength)与价格类型不符")
        for index in range(1, int(length) + 1):
            self._decimal(detail.get(f"price{index}"), f"price{index}")
        ends = [self._decimal(detail.get(f"ladder{index}End"), f"ladder{index}End") for index in range(1, int(length))]
        if any(low >= high for low, high in zip([ZERO, *ends], ends, strict=False)):
            raise DasError("9999", "阶梯止方须递增")
        return detail

    def _assign_price(self, p: dict[str, Any]) -> dict[str, Any]:
        self._require(p, "serialNo userNo factorNo meterNo newPriceCode companyCode")
        meter = self._account(p)
        if (code := str(p["newPriceCode"]).strip()) not in self.prices:
            raise DasError("9999", f"价格编码 {code} 不存在")
        meter.price_code, meter.cycle_gas = code, ZERO  # a newly assigned price starts its own cycle
        meter.price = self._price_now(meter)
        return self._ack(p["serialNo"], meter.device_id)

    def _replace(self, p: dict[str, Any]) -> dict[str, Any]:
        self._require(p, "serialNo userNo meterNo factorNo newMeterType newMeterNo oldNum newNum companyCode")
        if "deviceId" not in p:  # required, but the spec's own sample sends it empty
            raise DasError("9999", "参数异常: 缺少 deviceId")
        meter = self._account(p)
        if str(p["deviceId"] or "").strip() not in ("", meter.device_id):
            raise DasError("9999", "旧表设备 id 不匹配")
        new_no = str(p["newMeterNo"]).strip()
        if len(new_no) != 12 or not new_no.isdigit():
            raise DasError("9999", "新表表号须为 12 位数字")
        if new_no in self.meters:
            raise DasError("9999", f"表号 {new_no} 已存在, 换表失败")
        if str(p["newMeterType"]) not in METER_TYPES:
            raise DasError("9999", f"表具类型 {p['newMeterType']} 不存在")
        self._decimal(p["oldNum"], "oldNum")
        new_num = q4(self._decimal(p["newNum"], "newNum"))
        del self.meters[meter.meter_no]
        meter.meter_no, meter.meter_type = new_no, str(p["newMeterType"])
        meter.device_id = f"{self._rng.getrandbits(128):032x}"
        meter.reading = meter.base_num = new_num
        meter.read_time, meter.set_up_time = self._now(), self._now().date()
        self.meters[new_no] = meter
        return self._ack(p["serialNo"], meter.device_id)

    def _readings(self, p: dict[str, Any]) -> dict[str, Any]:
        self._require(p, "serialNo companyCode factorNo")
        meter_no = str(p.get("meterNo") or "").strip()  # the spec's sample pads it with a space
        if meter_no and meter_no not in self.meters:
            raise DasError("9999", "用户不存在")
        day = self._parse(p["readingDate"], "%Y-%m-%d", "readingDate").date() if p.get("readingDate") else None
        meters = [self.meters[meter_no]] if meter_no else list(self.meters.values())
        rows = [self._reading_row(m, self._contact_day(m, day)) for m in meters if day is None or day >= m.set_up_time]
        return {"readingData": {"total": str(len(rows)), "data": rows}, "serialNo": str(p["serialNo"])}

    def _contact_day(self, m: SimMeter, day: date | None) -> date | None:
        """A day the meter did not report (silent_days) has no reading of its own: the nearest before it answers."""
        while day is not None and day in self.silent_days.get(m.meter_no, set()):
            day -= timedelta(days=1)
        return day

    def add_gas(self, meter_no: str) -> dict[str, str]:
        """2001 addGas for the meter's silent days: each day's closing standard reading."""
        m = self.meters[meter_no]
        return {
            day.isoformat(): self._reading_row(m, day)["readNum"] for day in sorted(self.silent_days.get(meter_no, ()))
        }

    def _reading_row(self, m: SimMeter, day: date | None) -> dict[str, str]:
        reading, gas, money, balance, when = m.reading, m.sum_gas, m.sum_money, m.balance, m.read_time
        if day is not None and day < when.date():
            # The last reading of that day: undo what happened after it.
            later_gas = sum((use.gas for used, use in m.history.items() if used > day), ZERO)
            later_money = sum((use.amount for used, use in m.history.items() if used > day), ZERO)
            topped = sum((amount for at, amount in m.recharges if at.date() > day), ZERO)
            reading, gas, money = reading - later_gas, gas - later_gas, money - later_money
            balance, when = balance + later_money - topped, datetime.combine(day, time(23, 59, 59), tzinfo=self.tz)
        return {
            "userArchivesNum": m.user_no,
            "valveState": VALVE_1013[m.valve],
            "gasMeterNo": m.meter_no,
            "readNum": s4(reading),
            "readDate": when.strftime(WALL_FORMAT),
            "meterBalance": s4(balance),
            "sumGas": s4(gas),  # the spec's table swaps the two descriptions; the names are what they say
            "deviceId": m.device_id,
            "sumMoney": s4(money),
        }

    def _details(self, p: dict[str, Any]) -> dict[str, Any]:
        self._require(p, "serialNo userNo factorNo meterNo companyCode")
        m = self._account(p)
        last = m.last_recharge_date
        return {
            "serialNo": str(p["serialNo"]),
            "deviceId": m.device_id,
            "meterNo": m.meter_no,
            "meterState": m.state,
            "setUpTime": m.set_up_time.isoformat(),
            "beseNum": s4(m.base_num),
            "readingNum": s4(m.reading),
            "userName": m.user_name,
            "address": m.address,
            "userType": "居民户",
            "valveState": VALVE_1014[m.valve],
            "sumUseGas": s4(m.sum_gas),
            "sumUseMoney": s4(m.sum_money),
            "priceCode": m.price_code,
            "sumRechargeAomunt": s4(m.sum_recharge),
            "lastReadingTime": m.read_time.strftime(WALL_FORMAT),
            "balance": s4(m.balance),
            "price": s4(m.price),
            "lastRechargeAmount": s4(m.last_recharge_amount),
            "lastRechargeDate": last.astimezone(self.tz).strftime(WALL_FORMAT) if last else "",
            "rechargeCount": str(m.recharge_count),
            "voltage": str(m.voltage),
            "signalStrength": f"{m.signal}.0%",
            "meterType": m.meter_type,  # not in the spec's table; our client reads it for the model
        }

    def _daily(self, p: dict[str, Any]) -> dict[str, Any]:
        self._require(p, "serialNo userNo factorNo startTime endTime companyCode")
        m = self._account(p)
        start = self._parse(p["startTime"], "%Y-%m-%d", "startTime").date()
        end = self._parse(p["endTime"], "%Y-%m-%d", "endTime").date()
        if start > end:
            raise DasError("9999", "开始时间不能晚于结束时间")
        # One record per day and tier price it was billed at (a day that crossed a tier has two).
        rows = [
            {"useDate": day.isoformat(), "price": s4(price), "useGas": s4(gas), "useAmount": s4(amount)}
            | {"deviceId": m.device_id, "meterNo": m.meter_no}
            for day, use in sorted(m.history.items())
            if start <= day <= end
            for price, (gas, amount) in (use.tiers or {use.price: (use.gas, use.amount)}).items()
        ]
        return {"serialNo": str(p["serialNo"]), "gasData": rows}

    def signed_push(
        self, path: str, body: Mapping[str, Any] | bytes, *, now: datetime | None = None
    ) -> tuple[dict[str, str], bytes]:
        """Sign a push to `path` (2001/2002/2003) at `now`; return its headers and body bytes."""
        if path.strip("/") not in PUSH_PATHS.values():
            raise ValueError(f"{path!r} is not a push path")
        stamp = (now or self._now()).astimezone(self.tz).strftime(TIME_FORMAT)
        data = body if isinstance(body, bytes) else dumps(body).encode()
        headers = {"Accept": "application/json", "Content-Type": "application/json;charset=utf-8"}
        return headers | sign(self.app_code, self.app_secret, stamp), data

    def _push_head(self, m: SimMeter | None, serial: str | None, user_no: str = "") -> dict[str, Any]:
        user, device = (m.user_no, m.device_id) if m else (user_no, "")
        return {"serialNo": serial or uuid.uuid4().hex, "userNo": user, "deviceId": device, "factorNo": self.factor_no}

    def reading_body(self, meter_no: str, serial: str | None = None) -> dict[str, Any]:
        """Build the 2001 report (spec 2.4.11); a centre-billed meter has no price, balance or sums of its own."""
        m = self.meters[meter_no]
        blank = ("temperature", "standardTotalValue", "workTotalValue", "standardInstantValue", "workInstantValue")
        centre = m.billing_model != "1"
        return self._push_head(m, serial) | {
            "meterNo": m.meter_no,
            "billingModel": m.billing_model,
            "readNum": s4(m.reading),
            # The first report after silent days back-fills them; later ones do not repeat it.
            "addGas": self.add_gas(meter_no)
            if meter_no not in self.back_filled and self.silent_days.get(meter_no)
            else "",
            "sumUseGas": "" if centre else s4(m.sum_gas),
            "sumUseAmount": "" if centre else s4(m.sum_money),
            "readDate": m.read_time.strftime("%Y%m%d"),
            "readTime": m.read_time.strftime("%H%M%S"),
            "batteryCap": str(m.voltage),
            "semaphore": f"{m.signal}.0%",
            **dict.fromkeys(blank, ""),
            "pressureValue": "",
            **self._compensated(m),
            "valveState": VALVE_2001[m.valve],
            "curPrice": "" if centre else s4(m.price),
            "meterBalance": "" if centre else s4(m.balance),
            "companyCode": self.company_code,
            "sdateTime": self._now().strftime("%Y-%m-%d"),
        }

    @staticmethod
    def _compensated(m: SimMeter) -> dict[str, str]:
        """A temperature-compensated meter (10523) reports its conditions, both totals and both flows."""
        if m.meter_type != "10523":
            return {}
        flow = m.rate * 4 if m.valve == "open" else ZERO  # m³ per hour
        return {
            "temperature": "12.5",
            "pressureValue": "2.1",
            "standardTotalValue": s4(m.reading),
            "workTotalValue": s4(m.reading * Decimal("1.0215")),
            "standardInstantValue": s4(flow),
            "workInstantValue": s4(flow * Decimal("1.0215")),
        }

    def command_body(self, send_serial: str, serial: str | None = None) -> dict[str, Any]:
        """Build the 2002 callback of a finished command (spec 2.4.12)."""
        command = self.commands[send_serial]
        return self._push_head(self.meters.get(command["meter_no"]), serial, command["user_no"]) | {
            "meterNo": command["meter_no"],
            "sendSerialNo": send_serial,
            "paramNo": command["param_no"],
            "excuteState": "1" if command["state"] == "done" else "2",
            "companyCode": self.company_code,
            "sdateTime": self._now().strftime(TIME_FORMAT),
        }

    def alarm_body(
        self,
        meter_no: str,
        alarm_type: str = "02",
        priority: str = "3",
        content: str = "燃气泄漏",
        serial: str | None = None,
    ) -> dict[str, Any]:
        """Build the 2003 alarm report (spec 2.4.13)."""
        m = self.meters[meter_no]
        return self._push_head(m, serial) | {
            "meterNo": m.meter_no,
            "alarmType": alarm_type,
            "alarmContent": content,
            "alarmPriority": priority,
            "companyCode": self.company_code,
            "sdateTime": self._now().strftime(TIME_FORMAT),
        }

    @override
    async def push_reading(self, meter_no: str, serial: str | None = None) -> tuple[int, Any]:
        """POST a signed 2001 for `meter_no`; return the HTTP status and the answer.

        A centre-billed meter does what the answer says: valvecontrol 0 opens, 1 or 3 closes, 2 leaves it;
        currentprice and remainquantity are what it shows next (`lose_answer`: the answer never reaches it).
        """
        body = self.reading_body(meter_no, serial)
        status, answer = await self._post("2001", body)
        if body["addGas"] and status == 200:
            self.back_filled.add(meter_no)
        meter = self.meters.get(meter_no)
        if meter is not None and meter.billing_model != "1" and status == 200 and isinstance(answer, dict):
            if self.lose_answers > 0:
                self.lose_answers -= 1
                return status, answer
            if answer.get("echoCode") == "0000":
                self.centre_answers.append((meter_no, dict(answer)))
                valve = str(answer.get("valvecontrol", "2"))
                if valve in ("0", "1", "3") and meter.valve != "unknown" and meter_no not in self.stuck_valves:
                    meter.valve = "open" if valve == "0" else "closed"
                if answer.get("currentprice") not in (None, ""):
                    meter.price = Decimal(str(answer["currentprice"]))
                if answer.get("remainquantity") not in (None, ""):
                    meter.balance = Decimal(str(answer["remainquantity"]))
        return status, answer

    @override
    async def push_alarm(
        self,
        meter_no: str,
        alarm_type: str = "02",
        priority: str = "3",
        content: str = "燃气泄漏",
        serial: str | None = None,
    ) -> tuple[int, Any]:
        """POST a signed 2003 for `meter_no`; return the HTTP status and the answer."""
        return await self._post("2003", self.alarm_body(meter_no, alarm_type, priority, content, serial))

    async def _post(self, number: str, body: dict[str, Any]) -> tuple[int, Any]:
        if not self.push_url:
            raise RuntimeError("no push_url is set")
        headers, data = self.signed_push(PUSH_PATHS[number], body)
        status, answer = await self.post_push(f"{self.push_url.rstrip('/')}/{PUSH_PATHS[number]}", headers, data)
        self.pushes.append((number, body, answer))
        return status, answer

    async def _sim_external_recharge(self, request: web.Request) -> web.Response:
        """POST /_sim/external_recharge {"meter_no", "amount", "when"?: "yyyy-mm-dd hh:mm:ss"}."""
        data = await read_body(request)
        meter_no = str(data.get("meter_no"))
        if meter_no not in self.meters:
            return reply({"error": f"unknown meter {meter_no!r}"}, status=404)
        try:
            when = datetime.strptime(str(data["when"]), WALL_FORMAT) if data.get("when") else None
            meter = self.external_recharge(meter_no, Decimal(str(data.get("amount"))), when)
        except (ArithmeticError, ValueError) as err:  # InvalidOperation is an ArithmeticError
            return reply({"error": f"bad amount or when: {err}"}, status=400)
        return reply(
            {"ok": True, "meter_no": meter_no, "recharge_count": meter.recharge_count, "balance": s4(meter.balance)}
        )

    @override
    def state(self) -> dict[str, Any]:
        """Return everything the simulator holds (the last 14 days of history per meter)."""
        meters = []
        for meter in self.meters.values():
            recent = sorted(meter.history.items())[-14:]
            history = {
                day.isoformat(): asdict(use) | {"tiers": {str(price): part for price, part in use.tiers.items()}}
                for day, use in recent
            }
            meters.append(asdict(meter) | {"history": history})
        credentials = {"app_code": self.app_code, "app_secret": self.app_secret}
        credentials |= {"company_code": self.company_code, "factor_no": self.factor_no}
        return {
            "credentials": credentials,
            "push_url": self.push_url,
            "strict": {"unique_serials": self.unique_serials, "check_recharge_count": self.check_recharge_count},
            "meters": meters,
            "commands": list(self.commands.values()),
            "prices": self.prices,
        }
