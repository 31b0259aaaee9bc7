"""Cangnan (苍南) CNMCSP simulator: the /rest/Standard/ endpoints of chapter 5 and the pushes of chapter 6."""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hashlib
import hmac
import json
import uuid
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, tzinfo
from decimal import Decimal, InvalidOperation
from functools import partial
from typing import Any, override
from zoneinfo import ZoneInfo

from aiohttp import web
from Crypto.Cipher import DES, DES3
from Crypto.Util.Padding import pad, unpad

from .common import (
    LOST_ANSWER_MODES,
    TIME_FORMAT,
    ZERO,
    Fault,
    SimulatorBase,
    dumps,
    q4,
    read_body,
    reply,
    s4,
    sign,
    signature_ok,
)

WALL_FORMAT = "%Y-%m-%d %H:%M:%S"
DEFAULT_TZ = ZoneInfo("Asia/Shanghai")
_PATHS = (
    "meter/meteradd meter/metermodify meter/meterDelete meter/meterSuspend meter/meterResume meter/meterChange "
    "reading/ReadCurrentData fee/recharge fee/cancelRecharge price/changePrice price/batchChangePrice "
    "valve/controlValve fee/remainOption"
)
# Short name (what fail_next and .requests use) → path under /rest/Standard/.
ENDPOINTS = {path.rsplit("/", 1)[1]: path for path in _PATHS.split()}
API_ROOT = "rest/Standard"
# Chapter 6 leaves the address to the CIS; these are ours, under push_url.
PUSH_PATHS = {"reading": "reading", "alarm": "alarm"}
PARAM_MODELS = ("CNMCPUJE", "CNMCPUJF")
PROTOCOLS = ("CNModbusV61", "CNNBIoTV1")
MAX_METERS = 100
# Chapter 7. 80002013 and 80002029 appear twice there; the first text is the default.
MESSAGES = {
    "80002001": "传入参数解析失败",
    "80002002": "传入参数数据类型转换错误",
    "80001010": "传入参数数据插入中间数据库表失败",
    "80002003": "传入参数缺少重要字段 或 字段不符合规范",
    "80002009": "数据库中已经存在该用户号或气表号，开户失败",
    "80002004": "传入参数 中价格数据不符合规范",
    "80002007": "向 CNM系统中新增价格信息失败",
    "80002005": "传入参数中用户数据不符合规范",
    "80002006": "传入参数中气表数据不符合规范",
    "80002008": "向 CNM系统中新增用户或气表信息失败",
    "80002010": "CNM 系统中远程开户失败",
    "80002011": "数据库中不存在该用户号或气表号，用户修改失败",
    "80002012": "向 CNM系统中修改用户信息失败",
    "80002013": "数据库中用户号或气表号对应不一致",
    "80002014": "表具抄表失败",
    "80002015": "数据库中已经存在该新气表号，换表失败",
    "80002016": "向 CNM系统中 换表操作 失败",
    "80002017": "数据库中用户或气表 没有与系统 ID相对应",
    "80002018": "传入参数中气表 ID不合规范,采集仪系数生成失败",
    "80002019": "远程阀控 操作失败",
    "80002020": "销户 操作失败",
    "80002022": "购气次数 获取 失败",
    "80002021": "表号变更 操作失败",
    "80002023": "该用户是 销户、报停、休户 用户，无法进行接口功能操作",
    "80002024": "非远传表，无法进行远程操作",
    "80002025": "表具 停用失败",
    "80002026": "表具 启用失败",
    "80002027": "取消 远程充值 失败",
    "80002028": "找不到该气表型号",
    "80002029": "找不到该气表通信协议",
    "80002030": "远程充值失败",
    "80002031": "无警报数据需要发送",
    "80002032": "对方服务器无响应",
    "80002033": "交易流水号已存在",
    "80002034": "传入参数中价格 ID已经存在",
    "80002035": "传入参数的价格 ID不存在",
    "80002036": "传入参数的流水号已经存在",
    "80002037": "传入参数的指令流水号不存在",
    "80002038": "远程 返充补扣 操作失败",
}
PRICE_REFUSED = "远程调价失败"  # the second meaning of 80002029
OK_MESSAGE = "接口功能执行成功"
AUTH_FAILED = {"returnCode": "401", "returnMessage": "身份验证失败"}
BAD_ENVELOPE = {"returnCode": "80002001", "returnMessage": MESSAGES["80002001"]}
# Our alarm codes (6.2 leaves AlarmType and AlarmMessage to the CIS).
_ALARMS = ("通信故障", "燃气泄漏", "干簧管故障", "阀门漏气", "阀门故障", "电池故障", "强磁干扰", "余额不足", "非法拆装")
ALARM_TYPES = {f"{number:02d}": text for number, text in enumerate(_ALARMS, 1)}
VALVE_OPEN, VALVE_CLOSED, VALVE_MOVING, VALVE_ABNORMAL = "01", "00", "10", "11"
CONTROLS = {"1010": VALVE_OPEN, "2010": VALVE_CLOSED}
# Meter states (chapter 8): opened, in use, suspended, cancelled.
OPENED, IN_USE, SUSPENDED, CANCELLED = 0, 1, -1, -2
# What a suspended meter still accepts; a cancelled one is only still read.
SUSPENDED_OK = frozenset({"meterResume", "meterDelete", "metermodify", "ReadCurrentData"})
QUIRKY_KEYS = {"RemainMoney": "remainMoney", "Price": "price"}
# Garbage as the spec's own samples are: unquoted keys, a typographic quote.
MALFORMED = '{ReturnCode:"0",ReturnMessage:"接口功能执行成功"}'
MALFORMED_READING = '{"ReturnCode":"0","ReturnMessage":"接口功能执行成功",ReadingData:[{"Temperature”:32.2}]}'
# What a reverse proxy in front of the platform answers when the platform's own answer never reached it.
PROXY_502 = (
    "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
    "<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
)
# Trades other CIS terminals (a counter, an app, a bank) made on the platform, seeded as each meter's history.
FOREIGN_PREFIX = "T-OTHER-"
TRADE_KINDS = ("recharge", "credit", "deduct")
SEED_PRICES: dict[str, dict[str, Any]] = {
    "5020": {"price_mode": "100", "prices": ["2.5000"], "levels": [], "month_count": 0},
    "5021": {"price_mode": "101", "prices": ["1.2000", "1.8000", "3.0000"], "levels": [2000, 5000], "month_count": 12},
}


class CangnanError(Exception):
    """A refusal, answered as {"returnCode": code, "returnMessage": message}."""

    def __init__(self, code: str, message: str | None = None) -> None:
        """Keep the code and its chapter 7 text (or `message`)."""
        self.code, self.message = code, message or MESSAGES.get(code, MESSAGES["80002003"])
        super().__init__(self.message)

    def answer(self) -> dict[str, str]:
        """The error body, with the samples' lower-case keys."""
        return {"returnCode": self.code, "returnMessage": self.message}


@dataclass(frozen=True, slots=True)
class CangnanEnvelope:
    """Our reading of spec 4.2's "3DES + MAC": key 16/24 bytes, cbc|ecb, pkcs7|zero, x919|hmac_sha256, base64|hex."""

    key: bytes
    mode: str = "cbc"
    padding: str = "pkcs7"
    mac: str = "x919"
    encoding: str = "base64"

    def __post_init__(self) -> None:
        """Refuse settings the client could not share."""
        if len(self.key) not in (16, 24):
            raise ValueError("the 3DES key must be 16 or 24 bytes")
        if (self.mode, self.padding) not in {(m, p) for m in ("cbc", "ecb") for p in ("pkcs7", "zero")}:
            raise ValueError(f"unknown mode {self.mode!r} or padding {self.padding!r}")
        if self.mac not in ("x919", "x919_zero", "hmac_sha256") or self.encoding not in ("base64", "hex"):
            raise ValueError(f"unknown MAC {self.mac!r} or encoding {self.encoding!r}")
        DES3.adjust_key_parity(self.key)  # raises when K1 == K2: that 3DES would be single DES

    @classmethod
    def from_hex(cls, key_hex: str, **settings: str) -> CangnanEnvelope:
        """Build from a hex key, as the command line and the config flow take it."""
        return cls(bytes.fromhex(key_hex.strip()), **settings)

    def _cipher(self) -> Any:
        if self.mode == "cbc":
            return DES3.new(self.key, DES3.MODE_CBC, iv=bytes(8))
        return DES3.new(self.key, DES3.MODE_ECB)

    def mac_of(self, data: bytes) -> str:
        """The MAC over `data` (the ciphertext), upper-case hex."""
        if self.mac == "hmac_sha256":
            return hmac.new(self.key, data, hashlib.sha256).hexdigest().upper()
        # ISO 9797-1 algorithm 3, padding 2. Computed as single-DES CBC-MAC over all but the last block, then
        # two-key 3DES (E_K1 D_K2 E_K1) on the last: the same function, reached differently from the client.
        if self.mac == "x919_zero":  # ANSI X9.19's own padding: zeros (one zero block for empty data)
            padded = data + bytes(-len(data) % 8) if data else bytes(8)
        else:
            padded = data + b"\x80" + bytes(-(len(data) + 1) % 8)
        k1, k2 = self.key[:8], self.key[8:16]
        chain = DES.new(k1, DES.MODE_CBC, iv=bytes(8)).encrypt(padded[:-8])[-8:] if len(padded) > 8 else bytes(8)
        last = bytes(a ^ b for a, b in zip(padded[-8:], chain, strict=True))
        return DES3.new(k1 + k2, DES3.MODE_ECB).encrypt(last).hex().upper()

    def seal(self, plaintext: bytes) -> bytes:
        """Encrypt and MAC a body into {"Data": ..., "MAC": ...}."""
        padded = pad(plaintext, 8) if self.padding == "pkcs7" else plaintext + bytes(-len(plaintext) % 8)
        ciphertext = self._cipher().encrypt(padded)
        data = base64.b64encode(ciphertext).decode() if self.encoding == "base64" else ciphertext.hex().upper()
        return json.dumps({"Data": data, "MAC": self.mac_of(ciphertext)}).encode()

    def open_fields(self, data: Any, mac: Any) -> bytes:
        """Check the MAC and decrypt; raise ValueError for anything that is not our envelope."""
        if not isinstance(data, str) or not isinstance(mac, str):
            raise ValueError("Data and MAC must be strings")  # noqa: TRY004 - one error for any bad envelope
        try:
            raw = base64.b64decode(data, validate=True) if self.encoding == "base64" else bytes.fromhex(data)
        except binascii.Error as err:
            raise ValueError("Data is not Base64") from err
        if not raw or len(raw) % 8:
            raise ValueError("Data is not whole 3DES blocks")
        if not hmac.compare_digest(mac.strip().upper().encode(), self.mac_of(raw).encode()):
            raise ValueError("MAC mismatch")
        plain = self._cipher().decrypt(raw)
        return unpad(plain, 8) if self.padding == "pkcs7" else plain.rstrip(b"\x00")

    def open(self, body: bytes) -> bytes:
        """Open a wire body; raise ValueError unless it is a valid envelope."""
        outer = json.loads(body.decode("utf-8-sig"))
        if not isinstance(outer, dict):
            raise ValueError("not a JSON object")  # noqa: TRY004 - one error for any bad envelope
        return self.open_fields(outer.get("Data"), outer.get("MAC"))


@dataclass(slots=True)
class SimMeter:
    """One simulated meter, its user and (in meter billing mode) its prepaid account."""

    user_id: str
    meter_id: str
    meter_no: str
    user_name: str
    reading: Decimal
    read_time: datetime
    index: int = 0  # order of creation: decides the number style and key casing of its ReadingData row
    user_type: str = "002"
    phone: str = ""
    full_addr: str = ""
    addr_detail: str = ""
    building: str = ""
    param_model: str = "CNMCPUJE"
    protocol: str = "CNModbusV61"
    valve: str = VALVE_OPEN
    temperature: Decimal = Decimal("20.0000")
    pressure: Decimal = Decimal("110.0000")
    total_buy_money: Decimal = ZERO
    remain_money: Decimal = ZERO
    total_used_gas: Decimal = ZERO
    total_used_money: Decimal = ZERO
    price: Decimal = ZERO
    price_id: str = ""
    price_mode: str = "100"
    prices: list[Decimal] = field(default_factory=list)
    levels: list[int] = field(default_factory=list)
    month_count: int = 0
    state: int = IN_USE
    rate: Decimal = Decimal("0.0300")  # m³ per 15 minutes while the valve is open


class CangnanSimulator(SimulatorBase):
    """An aiohttp app answering like the CNMCSP platform for N meters, billed by the meter or by the CIS.

    `strict=True` turns on everything the document lets a real platform do that a client must survive; each
    such behaviour is also a public attribute a test may switch off on its own:

    - `foreign_trade_nos`: TradeNo is one namespace shared by fee/recharge, fee/remainOption and the trades of
      other CIS terminals (each meter's seeded history, `foreign_trade()`, POST /_sim/foreign_trade). A request
      of ours with a TradeNo any of them used is refused 80002033 交易流水号已存在 and changes nothing, so
      80002033 does not prove that *our* earlier attempt went through. Off (the default), only our own
      recharge and remainOption TradeNos are taken: they always share one namespace, strict or not.

    Always on, strict or not: lost answers (fault modes timeout, drop, lost_502, lost_garbled) strike after the
    work is done; a valve command reads 10 (moving) from acceptance until it runs, then 01/00, or 11 when
    `fail_valves` is True or holds the meter's MeterID.
    """

    def __init__(
        self,
        *,
        app_token: str = "SIMTOKEN01",  # noqa: S107 - well-known test credentials
        app_secret: str = "sim-secret",  # noqa: S107
        data_from: str = "苍南仪表集团",
        meters: int = 3,
        billing_mode: str = "meter",
        tz: tzinfo = DEFAULT_TZ,
        command_delay: float = 1.0,
        push_url: str | None = None,
        seed: int = 1,
        envelope: CangnanEnvelope | None = None,
        strict: bool = True,
    ) -> None:
        """Build the meters, the prices and the web app; `strict` as the class describes."""
        if billing_mode not in ("meter", "system"):
            raise ValueError("billing_mode is 'meter' or 'system'")
        super().__init__(endpoints=ENDPOINTS, tz=tz, push_url=push_url, seed=seed)
        self.app_token, self.app_secret, self.data_from = app_token, app_secret, data_from
        self.billing_mode, self.command_delay, self.envelope = billing_mode, command_delay, envelope
        self.strict = strict
        self.foreign_trade_nos = strict  # other terminals' TradeNos are taken too (see the class)
        # True: every valve command ends "11" (abnormal); a set: only those of these MeterIDs.
        self.fail_valves: bool | set[str] = False
        # A column name (e.g. "MeterState"): ReadingData rows carry the meter state (0/1/-1/-2) in it, as a
        # platform using the spec's reserved columns might. None (the default): the documented columns only.
        self.state_column: str | None = None
        # MeterID → for how many more polls its pair is refused 80002013 (refuse_pair()).
        self.refused_pairs: dict[str, int] = {}
        # Most meters one ReadCurrentData may ask for (more: 80002003); the document sets no limit.
        self.max_meters = MAX_METERS
        self.meters: dict[str, SimMeter] = {}
        self.trades: dict[str, dict[str, Any]] = {}  # ours: fee/recharge and fee/remainOption, by TradeNo
        self.foreign_trades: dict[str, dict[str, Any]] = {}  # other terminals', by TradeNo: done, never cancelled
        self.valve_commands: dict[str, dict[str, Any]] = {}  # by UserID: the latest command only
        self.prices: dict[str, dict[str, Any]] = {
            pid: {"price_id": pid, "version": "1", "ini_date": "", **price} for pid, price in SEED_PRICES.items()
        }
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._count = 0
        self._handlers: dict[str, Callable[[dict[str, Any]], list[dict[str, Any]] | None]] = {
            name: getattr(self, f"_do_{name.lower()}") for name in ENDPOINTS
        }
        for _ in range(meters):
            self._seed_meter()
        self.app = self.make_app()

    @property
    def billed_by_meter(self) -> bool:
        """Whether the platform (the meter) keeps the money: the other mode leaves billing to the CIS."""
        return self.billing_mode == "meter"

    def make_app(self) -> web.Application:
        """Build the aiohttp application: vendor endpoints plus the /_sim/ control endpoints."""
        app = web.Application()
        for name, path in ENDPOINTS.items():
            app.router.add_post(f"/{API_ROOT}/{path}", partial(self._serve, name))
        self.add_control_routes(app)
        app.router.add_post("/_sim/foreign_trade", self._sim_foreign_trade)
        app.router.add_post("/_sim/refuse_pair", self._sim_refuse_pair)
        app.router.add_post("/_sim/meter_state", self._sim_meter_state)
        return app

    def _seed_meter(self) -> None:
        index, rng = self._count, self._rng
        self._count += 1
        number = index + 1
        price_id = "5021" if index % 4 == 3 else "5020"
        meter = SimMeter(
            user_id=f"KYNYN1448{number:02d}",
            meter_id=f"0123456789{number:02d}",
            meter_no=f"0123456789{number:02d}",
            user_name=f"模拟用户{number}",
            reading=q4(Decimal(rng.randint(500_000, 20_000_000)) / 10000),
            read_time=self._now(),
            index=index,
            phone=f"135669562{number % 100:02d}",
            full_addr=f"浙江省温州市苍南县灵溪镇模拟小区{index // 10 + 1}栋{index % 10 + 1:02d}室",
            addr_detail=f"{index % 10 + 1:02d}室",
            building=f"{index // 10 + 1}栋",
            valve=VALVE_CLOSED if index % 4 == 2 else VALVE_OPEN,
            temperature=q4(Decimal(rng.randint(100, 300)) / 10),
            pressure=q4(Decimal(rng.randint(10_500, 12_800)) / 100),
            rate=q4(Decimal(rng.randint(150, 400)) / 10000),
        )
        self._apply_price(meter, self.prices[price_id])
        meter.total_used_gas = meter.reading  # installed at zero
        if self.billed_by_meter:
            meter.total_used_money = q4(meter.total_used_gas * meter.price)
            # Whole-hundred top-ups ahead of the use; every fifth meter is nearly out of money.
            spare = Decimal(rng.randint(100, 400)) / 100 if index % 5 == 4 else Decimal(rng.choice((100, 200, 500)))
            meter.total_buy_money = q4(Decimal(int(meter.total_used_money) // 100 * 100 + 100) + spare)
            meter.remain_money = meter.total_buy_money - meter.total_used_money
        self.meters[meter.meter_id] = meter
        if self.billed_by_meter:
            # The money was bought at other terminals: an opening purchase long ago and a top-up of 100 lately,
            # adding up to TotalBuyMoney. (When the CIS bills, the platform holds no money and no trades.)
            now = self._now()
            for days, amount in ((90, meter.total_buy_money - 100), (10, Decimal(100))):
                when = now - timedelta(days=days)
                self._record_foreign(self._next_foreign_no(), meter, q4(amount), "recharge", when, move=False)

    def _apply_price(self, meter: SimMeter, price: Mapping[str, Any]) -> None:
        meter.price_id, meter.price_mode = price["price_id"], price["price_mode"]
        meter.prices = [q4(Decimal(value)) for value in price["prices"]]
        meter.levels, meter.month_count = list(price["levels"]), price["month_count"]
        meter.price = meter.prices[0]

    @override
    def tick(self, minutes: float = 15) -> None:
        """Let `minutes` of gas flow through every open meter in use; bill it when the meter bills."""
        now, factor = self._now(), Decimal(str(minutes)) / 15
        for meter in self.meters.values():
            meter.read_time = now
            if meter.state not in (OPENED, IN_USE):
                continue
            meter.state = IN_USE
            # A slow random walk within believable bounds (°C; the samples' pressures, around 101-130).
            temperature = meter.temperature + Decimal(self._rng.randint(-5, 5)) / 10
            meter.temperature = q4(min(max(temperature, Decimal(-10)), Decimal(35)))
            pressure = meter.pressure + Decimal(self._rng.randint(-50, 50)) / 100
            meter.pressure = q4(min(max(pressure, Decimal(100)), Decimal(130)))
            if meter.valve != VALVE_OPEN:
                continue
            gas = q4(meter.rate * factor * Decimal(self._rng.randint(75, 125)) / 100)
            meter.reading, meter.total_used_gas = meter.reading + gas, meter.total_used_gas + gas
            if self.billed_by_meter:
                cost = q4(gas * meter.price)
                meter.total_used_money, meter.remain_money = meter.total_used_money + cost, meter.remain_money - cost
                if meter.remain_money <= 0:
                    meter.valve = VALVE_CLOSED  # a prepaid meter shuts itself when the money runs out

    async def settle(self) -> None:
        """Finish every pending recharge, balance option and valve command now (for deterministic tests)."""
        await self._cancel_tasks()
        for trade_no, trade in list(self.trades.items()):
            if trade["state"] == "pending":
                self._finish_trade(trade_no)
        for user_id, command in list(self.valve_commands.items()):
            if command["state"] == "pending":
                self._finish_valve(user_id)

    @override
    async def close(self) -> None:
        """Cancel pending commands and background work, close the push session."""
        await self._cancel_tasks()
        await super().close()

    async def _cancel_tasks(self) -> None:
        for task in self._tasks.values():
            task.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)
        self._tasks.clear()

    def _later(self, key: str, job: Callable[[], None]) -> None:
        """Run `job` after command_delay, replacing what was waiting under `key`."""

        async def run() -> None:
            await asyncio.sleep(self.command_delay)
            self._tasks.pop(key, None)
            job()

        if (old := self._tasks.pop(key, None)) is not None:
            old.cancel()
        self._tasks[key] = asyncio.get_running_loop().create_task(run())

    # --- the wire ---------------------------------------------------------------------------------

    def _answer(self, answer: Mapping[str, Any], status: int = 200) -> web.Response:
        if self.envelope is None:
            return reply(answer, status=status)
        sealed = self.envelope.seal(dumps(answer).encode())
        return web.Response(status=status, body=sealed, content_type="application/json")

    async def _serve(self, name: str, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        plain: bytes | None = raw
        if self.envelope is not None:
            try:
                plain = self.envelope.open(raw)
            except ValueError:  # includes JSON and UTF-8 errors
                plain = None
        try:
            payload = json.loads(plain.decode("utf-8-sig")) if plain is not None else None
        except ValueError:
            payload = None
        self.requests.append((name, payload if isinstance(payload, dict) else {}))
        fault = self.faults.take(name)
        mode = fault.mode if fault else None
        # http500 and malformed strike before the work: nothing was done.
        if mode == "http500":
            return web.Response(status=500, text="Internal Server Error")
        if mode == "malformed":
            body = MALFORMED_READING if name == "ReadCurrentData" else MALFORMED
            return web.Response(text=body, content_type="application/json")
        response = self._respond(name, request, plain, payload, fault)
        if mode in LOST_ANSWER_MODES:
            # The request got through and was carried out (or refused); only its answer is lost on the way back.
            return await self._lose(mode, request, response)
        return response

    def _respond(
        self, name: str, request: web.Request, plain: bytes | None, payload: Any, fault: Fault | None
    ) -> web.Response:
        """Check the headers and the envelope, do the work, answer (sealed when there is an envelope)."""
        mode = fault.mode if fault else None
        if mode == "auth" or not signature_ok(request.headers, self.app_token, self.app_secret, self._now(), self.tz):
            return self._answer(AUTH_FAILED, status=401)
        if plain is None:
            # Not our envelope: the client cannot read a sealed answer either, so this one is plain.
            return reply(BAD_ENVELOPE, status=400)
        if fault is not None and mode == "error":
            return self._answer(CangnanError(fault.code or "80002032").answer())
        try:
            answer = self._handle(name, payload)
        except CangnanError as err:
            answer = err.answer()
        return self._answer(answer)

    async def _lose(self, mode: str, request: web.Request, response: web.Response) -> web.Response:
        """Lose an answer whose work is done: hang, drop the connection, a proxy's 502, or a body cut short."""
        if mode == "timeout":
            await asyncio.sleep(self.hang_seconds)
        elif mode == "drop" and request.transport is not None:
            request.transport.close()
        elif mode == "lost_502":
            return web.Response(status=502, text=PROXY_502, content_type="text/html")
        elif mode == "lost_garbled":
            # Cut in half: never JSON, and with an envelope never a sealed answer either.
            body = response.body if isinstance(response.body, bytes) else b""
            return web.Response(status=200, body=body[: len(body) // 2], content_type="application/json")
        return response

    def _handle(self, name: str, payload: Any) -> dict[str, Any]:
        if not isinstance(payload, dict):
            raise CangnanError("80002001")
        if str(payload.get("DataFrom") or "").strip() != self.data_from:
            raise CangnanError("80002003")
        rows = self._handlers[name](payload)
        if rows is None:
            return {" ReturnCode ": "0", " ReturnMessage ": OK_MESSAGE}  # sic: the spec's samples, spaces and all
        return {"ReturnCode": "0", "ReturnMessage": OK_MESSAGE, "ReadingData": rows}

    # --- field helpers ----------------------------------------------------------------------------

    @staticmethod
    def _get(p: Mapping[str, Any], name: str) -> Any:
        value = p.get(name)
        if value is None and name.startswith("Price"):
            value = p.get(name.lower())  # the spec's samples send "price3"
        return None if isinstance(value, str) and not value.strip() else value

    def _str(self, p: Mapping[str, Any], name: str) -> str:
        value = self._get(p, name)
        if value is None or isinstance(value, (dict, list, bool)):
            raise CangnanError("80002003")
        return str(value).strip()

    def _opt(self, p: Mapping[str, Any], name: str) -> str | None:
        return None if self._get(p, name) is None else self._str(p, name)

    def _num(self, p: Mapping[str, Any], name: str, *, required: bool = True, code: str = "80002002") -> Decimal:
        """A NUMBER(16,4) sent as a number or a string: at most 12 integer digits and 4 decimals, not negative."""
        value = self._get(p, name)
        if value is None:
            if required:
                raise CangnanError("80002003")
            return ZERO
        try:
            number = Decimal(str(value).strip())
        except InvalidOperation:
            raise CangnanError(code) from None
        if isinstance(value, (bool, dict, list)) or not number.is_finite():
            raise CangnanError(code)
        if number < 0 or number != q4(number) or number >= 10**12:
            raise CangnanError("80002003" if code == "80002002" else code)
        return q4(number)

    def _int(self, p: Mapping[str, Any], name: str, code: str) -> int | None:
        value = self._get(p, name)
        if value is None:
            return None
        text = str(value).strip()
        if isinstance(value, bool) or not text.lstrip("-").isdigit():
            raise CangnanError(code)
        return int(text)

    def _time(self, p: Mapping[str, Any], name: str, *, required: bool = True) -> str | None:
        """A DATE field: "yyyy-mm-dd HH:MM:SS" (the terms' format) or a bare "yyyy-mm-dd"."""
        text = self._str(p, name) if required else self._opt(p, name)
        if text is None:
            return None
        for fmt in (WALL_FORMAT, "%Y-%m-%d"):
            try:
                datetime.strptime(text, fmt)
            except ValueError:
                continue
            return text
        raise CangnanError("80002003")

    def _meter(self, p: Mapping[str, Any], meter_key: str = "MeterID") -> SimMeter:
        user_id, meter_id = self._str(p, "UserID"), self._str(p, meter_key)
        meter = self.meters.get(meter_id)
        if meter is None or meter.user_id != user_id:
            raise CangnanError("80002013")
        return meter

    def _usable(self, meter: SimMeter, name: str) -> SimMeter:
        if name == "ReadCurrentData":
            return meter
        if meter.state == CANCELLED or (meter.state == SUSPENDED and name not in SUSPENDED_OK):
            raise CangnanError("80002023")
        return meter

    def _device(self, p: Mapping[str, Any], prefix: str = "") -> tuple[str, str]:
        """The required parameter model and protocol, checked against what the platform knows."""
        model, protocol = self._str(p, f"{prefix}MeterParamModel"), self._str(p, f"{prefix}MeterProtocol")
        if model not in PARAM_MODELS:
            raise CangnanError("80002028")
        if protocol not in PROTOCOLS:
            raise CangnanError("80002029")
        return model, protocol

    def _price(self, p: Mapping[str, Any]) -> dict[str, Any]:
        """The price fields shared by meteradd, changePrice and batchChangePrice, validated."""
        price_id, mode = self._str(p, "PriceID"), self._str(p, "PriceMode")
        self._num(p, "Price1", code="80002004")
        if mode not in ("100", "101"):
            raise CangnanError("80002004")
        self._time(p, "IniDate", required=False)
        record: dict[str, Any] = {"price_id": price_id, "price_mode": mode}
        record |= {"version": self._opt(p, "Version") or "", "ini_date": self._opt(p, "IniDate") or ""}
        tiers, levels = 1, []
        if mode == "101":
            level1, level2 = self._int(p, "Level1", "80002004"), self._int(p, "Level2", "80002004")
            if level1 is None or level1 <= 0 or (level2 is not None and level2 <= level1):
                raise CangnanError("80002004")
            levels = [level1] if level2 is None else [level1, level2]
            tiers = len(levels) + 1
        prices = [self._num(p, f"Price{n}", required=False, code="80002004") for n in range(1, tiers + 1)]
        if any(self._get(p, f"Price{n}") is None for n in range(1, tiers + 1)):
            raise CangnanError("80002004")  # each tier needs its price
        month_count = self._int(p, "MonthCount", "80002004")
        if month_count is not None and month_count <= 0:
            raise CangnanError("80002004")
        record |= {"prices": [s4(price) for price in prices], "levels": levels}
        record["month_count"] = month_count if month_count is not None else (12 if mode == "101" else 0)
        return record

    def _pair_list(self, p: Mapping[str, Any], name: str) -> list[SimMeter]:
        """The Meters array of ReadCurrentData and batchChangePrice: any bad pair fails the whole request."""
        pairs = p.get("Meters")
        if not isinstance(pairs, list) or not pairs or not all(isinstance(pair, dict) for pair in pairs):
            raise CangnanError("80002003")
        if name == "ReadCurrentData" and len(pairs) > self.max_meters:
            raise CangnanError("80002003")
        meters = [self._meter(pair) for pair in pairs]
        if name == "ReadCurrentData":
            for meter in meters:
                if self.refused_pairs.get(meter.meter_id, 0) > 0:
                    # As if the platform did not know the pair for a while (a migration, a glitch). A poll
                    # isolates a refused pair by splitting its batch; its one-pair request ends one poll.
                    if len(meters) == 1:
                        self.refused_pairs[meter.meter_id] -= 1
                    raise CangnanError("80002013")
        return [self._usable(meter, name) for meter in meters]

    def _by_user(self, user_id: str) -> SimMeter | None:
        return next((meter for meter in self.meters.values() if meter.user_id == user_id), None)

    # --- meter/ -----------------------------------------------------------------------------------

    def _do_meteradd(self, p: dict[str, Any]) -> None:
        user_id, meter_id, meter_no = self._str(p, "UserID"), self._str(p, "MeterID"), self._str(p, "MeterNo")
        user_name = self._str(p, "UserName")
        pre_saving = self._num(p, "PreSaving")
        price = self._price(p)
        reading = self._num(p, "MeterReading", required=False)
        self._time(p, "FireDate", required=False)
        model, protocol = self._device(p)
        if meter_id in self.meters or any(m.user_id == user_id or m.meter_no == meter_no for m in self.meters.values()):
            raise CangnanError("80002009")
        index, rng = self._count, self._rng
        self._count += 1
        meter = SimMeter(
            user_id=user_id,
            meter_id=meter_id,
            meter_no=meter_no,
            user_name=user_name,
            reading=reading,
            read_time=self._now(),
            index=index,
            param_model=model,
            protocol=protocol,
            state=OPENED,
            rate=q4(Decimal(rng.randint(150, 400)) / 10000),
        )
        self._modify(meter, p)
        self._apply_price(meter, price)
        if self.billed_by_meter:
            meter.total_buy_money = meter.remain_money = pre_saving
        self.prices[price["price_id"]] = price
        self.meters[meter_id] = meter

    def _modify(self, meter: SimMeter, p: Mapping[str, Any]) -> None:
        names = {"UserName": "user_name", "UserType": "user_type", "Phone": "phone", "FullAddrDetail": "full_addr"}
        for wire, attr in (names | {"AddrDetail": "addr_detail", "BuildingName": "building"}).items():
            if (value := self._opt(p, wire)) is not None:
                setattr(meter, attr, value)

    def _do_metermodify(self, p: dict[str, Any]) -> None:
        self._modify(self._usable(self._meter(p), "metermodify"), p)

    def _do_meterdelete(self, p: dict[str, Any]) -> None:
        meter = self._usable(self._meter(p), "meterDelete")
        del self.meters[meter.meter_id]
        # What was waiting for this meter can never reach it now.
        waiting = [trade for trade in self.trades.values() if trade["user_id"] == meter.user_id]
        if (command := self.valve_commands.get(meter.user_id)) is not None:
            waiting.append(command)
        for job in waiting:
            if job["state"] == "pending":
                job["state"], job["finished"] = "failed", self._now()
                if (task := self._tasks.pop(job["task"], None)) is not None:
                    task.cancel()

    def _do_metersuspend(self, p: dict[str, Any]) -> None:
        self._usable(self._meter(p), "meterSuspend").state = SUSPENDED

    def _do_meterresume(self, p: dict[str, Any]) -> None:
        meter = self._usable(self._meter(p), "meterResume")
        if meter.state != SUSPENDED:
            raise CangnanError("80002026")
        meter.state = IN_USE

    def _do_meterchange(self, p: dict[str, Any]) -> None:
        meter = self._meter(p, "OldMeterID")
        self._num(p, "OldENDREADING")
        new_id, new_no = self._str(p, "NewMeterID"), self._str(p, "NewMeterNo")
        reading = self._num(p, "NewMeterReading")
        self._time(p, "ChangeTime")
        transfer = self._num(p, "PreSaving", required=False)  # "不输入默认为 0"
        model, protocol = self._device(p, "New")
        self._usable(meter, "meterChange")
        if new_id in self.meters or any(m.meter_no == new_no for m in self.meters.values()):
            raise CangnanError("80002015")
        del self.meters[meter.meter_id]
        meter.meter_id, meter.meter_no, meter.param_model, meter.protocol = new_id, new_no, model, protocol
        meter.reading, meter.read_time, meter.state, meter.valve = reading, self._now(), OPENED, VALVE_OPEN
        if self.billed_by_meter:
            meter.remain_money = transfer
        self.meters[new_id] = meter

    # --- reading/ ---------------------------------------------------------------------------------

    def _do_readcurrentdata(self, p: dict[str, Any]) -> list[dict[str, Any]]:
        return [self.reading_row(meter) for meter in self._pair_list(p, "ReadCurrentData")]

    def reading_row(self, m: SimMeter) -> dict[str, Any]:
        """One ReadingData row, with the quirks a client must cope with (see the module's tests)."""

        # Even meters send JSON numbers, odd ones 4-decimal strings: the samples mix both.
        def num(value: Decimal) -> float | str:
            return float(value) if m.index % 2 == 0 else s4(value)

        row: dict[str, Any] = {
            "UserID": m.user_id,
            "MeterID": m.meter_id,
            "ReadTime": m.read_time.astimezone(self.tz).strftime(WALL_FORMAT),
            "Reading": num(m.reading),
            "ValveState": m.valve,
            "Temperature": num(m.temperature),
            "Pressure": num(m.pressure),
        }
        if self.billed_by_meter:  # when the CIS bills, the platform has no money to report
            row |= {"TotalBuyMoney": num(m.total_buy_money), "RemainMoney": num(m.remain_money)}
            row |= {"TotalUsedGas": num(m.total_used_gas), "TotalUsedMoney": num(m.total_used_money)}
            row["Price"] = num(m.price)
        else:
            row["TotalUsedGas"] = num(m.total_used_gas)
        if self.state_column is not None:
            row[self.state_column] = m.state if m.index % 2 == 0 else str(m.state)
        if m.index % 3 == 2:  # other casing and an unknown key, as a newer platform version might send
            row = {QUIRKY_KEYS.get(key, key): value for key, value in row.items()}
            row["SignalQuality"] = "87"
        return row

    # --- fee/, price/, valve/ ---------------------------------------------------------------------

    def _trade(self, p: Mapping[str, Any], kind: str, amount_key: str, time_key: str) -> None:
        meter = self._usable(self._meter(p), "fee")
        trade_no = self._str(p, "TradeNo")
        when = self._time(p, time_key)
        amount = self._num(p, amount_key)
        if trade_no in self.trades or (self.foreign_trade_nos and trade_no in self.foreign_trades):
            raise CangnanError("80002033")  # and nothing happens: the trade that has the number is not applied again
        if amount <= 0:
            raise CangnanError("80002003")
        trade: dict[str, Any] = {"trade_no": trade_no, "kind": kind, "user_id": meter.user_id}
        trade |= {"meter_id": meter.meter_id, "amount": amount, "time": when, "state": "pending"}
        trade |= {"accepted": self._now(), "finished": None}
        self.trades[trade_no] = trade | {"task": f"trade:{trade_no}"}
        self._later(f"trade:{trade_no}", partial(self._finish_trade, trade_no))

    def _finish_trade(self, trade_no: str) -> None:
        trade = self.trades[trade_no]
        if trade["state"] != "pending":
            return
        trade["finished"], meter = self._now(), self._by_user(trade["user_id"])
        if meter is None:
            trade["state"] = "failed"
            return
        trade["state"] = "done"
        self._move_money(meter, trade["kind"], trade["amount"])

    @staticmethod
    def _move_money(meter: SimMeter, kind: str, amount: Decimal) -> None:
        if kind == "recharge":
            meter.total_buy_money, meter.remain_money = meter.total_buy_money + amount, meter.remain_money + amount
        elif kind == "credit":
            meter.remain_money += amount
        else:
            meter.remain_money -= amount

    def refuse_pair(self, meter_id: str, polls: int = 1) -> None:
        """Refuse this meter's pair with 80002013, though it exists, for the next `polls` polls.

        Every ReadCurrentData naming it is refused; a poll ends with the one-pair request that isolates it.
        """
        if meter_id not in self.meters:
            raise KeyError(meter_id)
        self.refused_pairs[meter_id] = polls

    def set_state(self, meter_id: str, state: int) -> None:
        """Put the meter in a state (chapter 8) as another CIS terminal would: 0, 1, -1 suspended, -2 cancelled."""
        if state not in (OPENED, IN_USE, SUSPENDED, CANCELLED):
            raise ValueError(f"meter state {state!r} is none of 0, 1, -1, -2")
        self.meters[meter_id].state = state

    def foreign_trade(
        self,
        trade_no: str,
        meter_id: str | None = None,
        amount: Decimal = Decimal("100.0000"),
        *,
        kind: str = "recharge",
        when: datetime | None = None,
    ) -> dict[str, Any]:
        """Record a trade another CIS terminal made on the platform with `trade_no`; return its record.

        With `meter_id` (and the meter billing) the money moves at once, as the other terminal's trade has already
        reached the meter: a recharge adds to TotalBuyMoney and RemainMoney, a credit ("1000") to RemainMoney, a
        deduct ("2000") takes from it. Without a meter, or when the CIS bills, only the TradeNo is taken. Whether
        a later request of ours with this TradeNo is refused 80002033 is `foreign_trade_nos` (strict).
        Raises ValueError for an empty or already used TradeNo, an unknown kind or an amount that is not a positive
        4-decimal number, and KeyError for an unknown meter.
        """
        number = str(trade_no).strip()
        if not number:
            raise ValueError("trade_no is empty")
        if number in self.trades or number in self.foreign_trades:
            raise ValueError(f"TradeNo {number!r} already exists")  # the platform would refuse the other terminal
        if kind not in TRADE_KINDS:
            raise ValueError(f"kind is one of {TRADE_KINDS}")
        try:
            money = Decimal(str(amount).strip())
        except InvalidOperation:
            raise ValueError(f"amount {amount!r} is not a number") from None
        if not money.is_finite() or money <= 0 or money != q4(money) or money >= 10**12:
            raise ValueError(f"amount {amount!r} is not a positive NUMBER(16,4)")
        meter = None if meter_id is None else self.meters.get(str(meter_id).strip())
        if meter_id is not None and meter is None:
            raise KeyError(meter_id)
        return self._record_foreign(number, meter, q4(money), kind, when or self._now(), move=True)

    def _next_foreign_no(self) -> str:
        return f"{FOREIGN_PREFIX}{len(self.foreign_trades) + 1:04d}"

    def _record_foreign(
        self, trade_no: str, meter: SimMeter | None, amount: Decimal, kind: str, when: datetime, *, move: bool
    ) -> dict[str, Any]:
        trade: dict[str, Any] = {"trade_no": trade_no, "kind": kind, "terminal": "other", "amount": amount}
        trade |= {"user_id": meter.user_id if meter else None, "meter_id": meter.meter_id if meter else None}
        trade |= {"time": when.astimezone(self.tz).strftime(WALL_FORMAT), "state": "done"}
        self.foreign_trades[trade_no] = trade
        if move and meter is not None and self.billed_by_meter:
            self._move_money(meter, kind, amount)
        return trade

    def _do_recharge(self, p: dict[str, Any]) -> None:
        if not self.billed_by_meter:
            raise CangnanError("80002030")
        self._trade(p, "recharge", "RechargeAmt", "RechargeTime")

    def _do_cancelrecharge(self, p: dict[str, Any]) -> None:
        if not self.billed_by_meter:
            raise CangnanError("80002027")
        meter = self._usable(self._meter(p), "cancelRecharge")
        trade_no, amount = self._str(p, "TradeNo"), self._num(p, "CancelAmt")
        self._time(p, "CancelTime")
        trade = self.trades.get(trade_no)
        if trade is None or trade["kind"] != "recharge" or trade["user_id"] != meter.user_id:
            raise CangnanError("80002027")
        if trade["state"] != "pending" or trade["amount"] != amount:
            raise CangnanError("80002027")  # already on the meter (or the amount does not match): too late
        trade["state"], trade["finished"] = "cancelled", self._now()
        if (task := self._tasks.pop(trade["task"], None)) is not None:
            task.cancel()

    def _do_remainoption(self, p: dict[str, Any]) -> None:
        if not self.billed_by_meter:
            raise CangnanError("80002038")
        option = str(self._get(p, "CMDOption") or "").strip()
        if option not in ("1000", "2000"):
            raise CangnanError("80002003")
        self._trade(p, "credit" if option == "1000" else "deduct", "OptionAmt", "OptionTime")

    def _change_price(self, p: Mapping[str, Any], meters: list[SimMeter]) -> None:
        self._time(p, "ChangeTime")
        price = self._price(p)
        self.prices[price["price_id"]] = price
        for meter in meters:  # at once: the spec gives no way to follow a price command to the meter
            self._apply_price(meter, price)

    def _do_changeprice(self, p: dict[str, Any]) -> None:
        if not self.billed_by_meter:
            raise CangnanError("80002029", PRICE_REFUSED)
        self._change_price(p, [self._usable(self._meter(p), "changePrice")])

    def _do_batchchangeprice(self, p: dict[str, Any]) -> None:
        if not self.billed_by_meter:
            raise CangnanError("80002029", PRICE_REFUSED)
        self._change_price(p, self._pair_list(p, "batchChangePrice"))

    def _do_controlvalve(self, p: dict[str, Any]) -> None:
        meter = self._usable(self._meter(p), "controlValve")
        control = self._get(p, "Control")
        code = "" if isinstance(control, bool) else str(control).strip()
        if code not in CONTROLS:
            raise CangnanError("80002003")
        meter.valve = VALVE_MOVING  # what ReadCurrentData reports until the meter has acted (or failed: "11")
        command: dict[str, Any] = {"user_id": meter.user_id, "meter_id": meter.meter_id, "control": code}
        command |= {"state": "pending", "accepted": self._now(), "finished": None, "task": f"valve:{meter.user_id}"}
        self.valve_commands[meter.user_id] = command
        self._later(f"valve:{meter.user_id}", partial(self._finish_valve, meter.user_id))

    def _finish_valve(self, user_id: str) -> None:
        command = self.valve_commands[user_id]
        if command["state"] != "pending":
            return
        command["finished"], meter = self._now(), self._by_user(user_id)
        if meter is None:
            command["state"] = "failed"
            return
        failing = self.fail_valves is True or (isinstance(self.fail_valves, set) and meter.meter_id in self.fail_valves)
        command["state"] = "failed" if failing else "done"
        meter.valve = VALVE_ABNORMAL if failing else CONTROLS[command["control"]]

    # --- pushes (chapter 6) -----------------------------------------------------------------------

    def signed_push(
        self, path: str, body: Mapping[str, Any] | bytes, *, now: datetime | None = None
    ) -> tuple[dict[str, str], bytes]:
        """Sign (and seal, with an envelope) a push to `path` ("reading" or "alarm") at `now`."""
        if path.strip("/") not in PUSH_PATHS.values():
            raise ValueError(f"{path!r} is not a push path")
        stamp = (now or self._now()).astimezone(self.tz).strftime(TIME_FORMAT)
        data = body if isinstance(body, bytes) else dumps(body).encode()
        if self.envelope is not None:
            data = self.envelope.seal(data)
        headers = {"Accept": "application/json", "Content-Type": "application/json;charset=utf-8"}
        return headers | sign(self.app_token, self.app_secret, stamp), data

    def _push_head(self, command: str, meter_id: str, serial: str | None) -> dict[str, Any]:
        m = self.meters[meter_id]
        return {
            "cmdCode": command,
            "DataFrom": self.data_from,
            "requestSerialNo": serial or uuid.uuid4().hex,
            "userNo": m.user_id,
            "meterNo": m.meter_no,
        }

    def reading_body(self, meter_id: str, serial: str | None = None) -> dict[str, Any]:
        """Build the 6.1 real-time data push of one meter."""
        m = self.meters[meter_id]
        return self._push_head("RealTimeData", meter_id, serial) | {
            "CreateDate": m.read_time.astimezone(self.tz).strftime(WALL_FORMAT),
            "Reading": s4(m.reading),  # VARCHAR(50) in the table
            "ValveState": m.valve,
            "Temperature": float(m.temperature),  # NUMBER(16,4)
            "Pressure": float(m.pressure),
        }

    def alarm_body(
        self, meter_id: str, alarm_type: str = "02", message: str = "燃气泄漏", serial: str | None = None
    ) -> dict[str, Any]:
        """Build the 6.2 alarm push."""
        return self._push_head("Alarm", meter_id, serial) | {
            "AlarmTime": self._now().strftime(WALL_FORMAT),
            "AlarmType": alarm_type,
            "AlarmMessage": message,
        }

    @override
    async def push_reading(self, meter_id: str, serial: str | None = None) -> tuple[int, Any]:
        """POST a signed reading of `meter_id` to {push_url}/reading; return the HTTP status and the answer."""
        return await self._post("reading", self.reading_body(meter_id, serial))

    @override
    async def push_alarm(
        self, meter_id: str, alarm_type: str = "02", message: str = "燃气泄漏", serial: str | None = None
    ) -> tuple[int, Any]:
        """POST a signed alarm of `meter_id` to {push_url}/alarm; return the HTTP status and the answer."""
        return await self._post("alarm", self.alarm_body(meter_id, alarm_type, message, serial))

    async def _post(self, path: str, body: dict[str, Any]) -> tuple[int, Any]:
        if not self.push_url:
            raise RuntimeError("no push_url is set")
        headers, data = self.signed_push(path, body)
        status, answer = await self.post_push(f"{self.push_url.rstrip('/')}/{path}", headers, data)
        if self.envelope is not None and isinstance(answer, dict) and {"Data", "MAC"} <= answer.keys():
            # Not a valid envelope: hand back what came, so the caller sees it.
            with contextlib.suppress(ValueError):
                answer = json.loads(self.envelope.open_fields(answer["Data"], answer["MAC"]).decode("utf-8-sig"))
        self.pushes.append((path, body, answer))
        return status, answer

    # --- /_sim/ -----------------------------------------------------------------------------------

    async def _sim_foreign_trade(self, request: web.Request) -> web.Response:
        """{"trade_no", "meter_id"?, "amount"? (default 100), "kind"? (recharge|credit|deduct)}: see foreign_trade."""
        data = await read_body(request)
        trade_no, meter_id = data.get("trade_no"), data.get("meter_id")
        if not isinstance(trade_no, (str, int)) or isinstance(trade_no, bool) or not str(trade_no).strip():
            return reply({"error": "trade_no is required"}, status=400)
        number = str(trade_no).strip()
        if number in self.trades or number in self.foreign_trades:
            return reply({"error": f"TradeNo {number!r} already exists"}, status=409)
        try:
            trade = self.foreign_trade(
                number,
                None if meter_id in (None, "") else str(meter_id),
                data.get("amount", Decimal("100.0000")),
                kind=str(data.get("kind", "recharge")),
            )
        except KeyError:
            return reply({"error": f"unknown meter {meter_id!r}"}, status=404)
        except ValueError as err:
            return reply({"error": str(err)}, status=400)
        return reply({"ok": True, "trade": trade})

    async def _sim_refuse_pair(self, request: web.Request) -> web.Response:
        """{"meter_id", "polls"? (default 1)}: see refuse_pair."""
        data = await read_body(request)
        try:
            self.refuse_pair(str(data.get("meter_id")), int(data.get("polls", 1)))
        except KeyError:
            return reply({"error": f"unknown meter {data.get('meter_id')!r}"}, status=404)
        except (TypeError, ValueError) as err:
            return reply({"error": str(err)}, status=400)
        return reply({"ok": True, "refused_pairs": self.refused_pairs})

    async def _sim_meter_state(self, request: web.Request) -> web.Response:
        """{"meter_id", "state" (0, 1, -1, -2)}: see set_state."""
        data = await read_body(request)
        try:
            self.set_state(str(data.get("meter_id")), int(data.get("state", "")))
        except KeyError:
            return reply({"error": f"unknown meter {data.get('meter_id')!r}"}, status=404)
        except (TypeError, ValueError) as err:
            return reply({"error": str(err)}, status=400)
        return reply({"ok": True})

    @override
    async def _sim_alarm(self, request: web.Request) -> web.Response:
        data = await read_body(request)
        meter_id, kind = str(data.get("meter_id") or data.get("meter_no")), str(data.get("alarm_type", "02"))
        message = str(data.get("message") or data.get("content") or ALARM_TYPES.get(kind, "燃气泄漏"))
        return await self._sim_pushed(meter_id, lambda: self.push_alarm(meter_id, kind, message))

    @override
    def state(self) -> dict[str, Any]:
        """Return everything the simulator holds."""
        credentials = {"app_token": self.app_token, "app_secret": self.app_secret, "data_from": self.data_from}
        envelope = None
        if self.envelope is not None:
            envelope = asdict(self.envelope) | {"key": self.envelope.key.hex().upper()}
        return {
            "credentials": credentials,
            "billing_mode": self.billing_mode,
            "envelope": envelope,
            "push_url": self.push_url,
            "meters": [asdict(meter) for meter in self.meters.values()],
            "trades": list(self.trades.values()),
            "foreign_trades": list(self.foreign_trades.values()),
            "valve_commands": list(self.valve_commands.values()),
            "prices": self.prices,
            "fail_valves": sorted(self.fail_valves) if isinstance(self.fail_valves, set) else self.fail_valves,
            "strict": self.strict,
            "foreign_trade_nos": self.foreign_trade_nos,
        }
