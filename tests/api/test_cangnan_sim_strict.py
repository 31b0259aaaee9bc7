"""The Cangnan simulator's strict mode over raw HTTP: one TradeNo namespace, foreign trades, lost answers, bad valves.

These tests talk to the simulator with the simulator's own signing helpers and assert on its state and on the raw
returnCode, never on what the client concludes from an answer.
"""

from __future__ import annotations

import json
from datetime import datetime
from decimal import Decimal
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from simulator.cangnan import ENDPOINTS, MESSAGES, OK_MESSAGE, PROXY_502, CangnanEnvelope, CangnanSimulator, SimMeter
from simulator.common import LOST_ANSWER_MODES, TIME_FORMAT, dumps, sign

from .test_cangnan import KEY16, Serve, Wire, make_sim, nth

TAKEN = "80002033"
WHEN = "2026-03-01 09:15:30"


@pytest.fixture
def wire() -> Wire:
    """The recorder the `serve` fixture puts between us and the simulator."""
    return Wire()


async def post(
    sim: CangnanSimulator,
    server: TestServer,
    session: aiohttp.ClientSession,
    name: str,
    payload: dict[str, Any],
    *,
    timeout: float = 5.0,
) -> tuple[int, bytes]:
    """POST a signed (and, with an envelope, sealed) request to one endpoint; return status and raw body."""
    stamp = datetime.now(sim.tz).strftime(TIME_FORMAT)
    headers = {"Accept": "application/json", "Content-Type": "application/json;charset=utf-8"}
    headers |= sign(sim.app_token, sim.app_secret, stamp)
    data = dumps(payload | {"DataFrom": sim.data_from}).encode()
    if sim.envelope is not None:
        data = sim.envelope.seal(data)
    url = server.make_url(f"/rest/Standard/{ENDPOINTS[name]}")
    async with session.post(url, data=data, headers=headers, timeout=aiohttp.ClientTimeout(total=timeout)) as resp:
        return resp.status, await resp.read()


def answer(sim: CangnanSimulator, raw: bytes) -> tuple[str, str]:
    """(returnCode, returnMessage) of an answer, whatever the keys' casing and spacing."""
    decoded = json.loads(sim.envelope.open(raw) if sim.envelope is not None else raw)
    keys = {key.strip().lower(): value for key, value in decoded.items()}
    return str(keys["returncode"]), str(keys["returnmessage"])


def pair(meter: SimMeter) -> dict[str, str]:
    """The UserID/MeterID pair of a request."""
    return {"UserID": meter.user_id, "MeterID": meter.meter_id}


def recharge(meter: SimMeter, trade_no: str, amount: str = "20.5000") -> dict[str, Any]:
    """A fee/recharge payload."""
    return pair(meter) | {"TradeNo": trade_no, "RechargeTime": WHEN, "RechargeAmt": amount}


def option(meter: SimMeter, trade_no: str, amount: str = "20.5000", *, credit: bool = True) -> dict[str, Any]:
    """A fee/remainOption payload: 1000 credits, 2000 deducts."""
    cmd = 1000 if credit else 2000
    return pair(meter) | {"TradeNo": trade_no, "CMDOption": cmd, "OptionTime": WHEN, "OptionAmt": amount}


def money_request(name: str, meter: SimMeter, trade_no: str, amount: str = "20.5000") -> dict[str, Any]:
    """The payload of `name` (recharge or remainOption, a credit) moving `amount`."""
    return recharge(meter, trade_no, amount) if name == "recharge" else option(meter, trade_no, amount)


async def reading_row(
    sim: CangnanSimulator, server: TestServer, session: aiohttp.ClientSession, meter: SimMeter
) -> dict[str, Any]:
    """The meter's ReadCurrentData row, keys lower-cased (the simulator varies their casing)."""
    status, raw = await post(sim, server, session, "ReadCurrentData", {"Meters": [pair(meter)]})
    assert status == 200
    [row] = json.loads(sim.envelope.open(raw) if sim.envelope is not None else raw)["ReadingData"]
    return {key.lower(): value for key, value in row.items()}


def money(value: Any) -> Decimal:
    """A money or reading value as sent: a JSON number or a 4-decimal string."""
    return Decimal(str(value)).quantize(Decimal("0.0001"))


# ---- the switch ----------------------------------------------------------------------------------------


def test_default_is_strict_and_strict_sets_each_switch() -> None:
    """strict defaults on (as strict as the document allows); strict=False turns foreign_trade_nos off."""
    lenient, strict = make_sim(strict=False), make_sim()
    assert (lenient.strict, lenient.foreign_trade_nos) == (False, False)
    assert (strict.strict, strict.foreign_trade_nos) == (True, True)
    assert {key: lenient.state()[key] for key in ("strict", "foreign_trade_nos")} == dict.fromkeys(
        ("strict", "foreign_trade_nos"), False
    )
    assert strict.state()["foreign_trade_nos"] is True
    assert MESSAGES[TAKEN] == "交易流水号已存在"
    assert {"lost_502", "lost_garbled", "timeout", "drop"} == LOST_ANSWER_MODES


# ---- seeded history --------------------------------------------------------------------------------------


@pytest.mark.parametrize("strict", [False, True])
async def test_meters_start_with_foreign_recharges(
    serve: Serve, session: aiohttp.ClientSession, *, strict: bool
) -> None:
    """Every meter has bought money from other terminals; its trades add up to TotalBuyMoney = remain + used."""
    sim = make_sim(strict=strict)
    server = await serve(sim)
    numbers = [trade["trade_no"] for trade in sim.state()["foreign_trades"]]
    assert numbers == [f"T-OTHER-{n:04d}" for n in range(1, 2 * len(sim.meters) + 1)]
    for meter in sim.meters.values():
        assert meter.total_buy_money > 0
        assert meter.remain_money == meter.total_buy_money - meter.total_used_money
        mine = [trade for trade in sim.foreign_trades.values() if trade["meter_id"] == meter.meter_id]
        assert len(mine) == 2
        assert all(t["kind"] == "recharge" and t["state"] == "done" and t["amount"] > 0 for t in mine)
        assert sum(trade["amount"] for trade in mine) == meter.total_buy_money
        row = await reading_row(sim, server, session, meter)
        assert money(row["totalbuymoney"]) == meter.total_buy_money
        assert money(row["remainmoney"]) == meter.remain_money
        assert money(row["totalusedmoney"]) == meter.total_used_money
    assert sim.trades == {}


def test_system_billing_has_no_money_and_no_trades() -> None:
    """When the CIS bills, the platform holds no money, so it has no recharge history either."""
    sim = make_sim(billing_mode="system", strict=True)
    assert sim.foreign_trades == {}
    assert all(meter.total_buy_money == 0 for meter in sim.meters.values())


# ---- one TradeNo namespace -------------------------------------------------------------------------------


@pytest.mark.parametrize("strict", [False, True])
@pytest.mark.parametrize(("first", "second"), [("recharge", "remainOption"), ("remainOption", "recharge")])
async def test_recharge_and_remain_option_share_trade_nos(
    serve: Serve, session: aiohttp.ClientSession, first: str, second: str, *, strict: bool
) -> None:
    """Our own TradeNo is taken across both endpoints, strict or not (as before): refused again, money moved once."""
    sim = make_sim(strict=strict)
    server = await serve(sim)
    meter = nth(sim, 1)
    remain, bought = meter.remain_money, meter.total_buy_money
    status, raw = await post(sim, server, session, first, money_request(first, meter, "SHARED-1"))
    assert (status, answer(sim, raw)) == (200, ("0", OK_MESSAGE))
    status, raw = await post(sim, server, session, second, money_request(second, meter, "SHARED-1", "7.0000"))
    assert (status, answer(sim, raw)) == (200, (TAKEN, "交易流水号已存在"))
    assert list(sim.trades) == ["SHARED-1"]
    assert sim.trades["SHARED-1"]["kind"] == ("recharge" if first == "recharge" else "credit")
    assert sim.trades["SHARED-1"]["amount"] == Decimal("20.5")
    await sim.settle()
    assert meter.remain_money == remain + Decimal("20.5")
    assert meter.total_buy_money == bought + (Decimal("20.5") if first == "recharge" else 0)


@pytest.mark.parametrize("name", ["recharge", "remainOption"])
async def test_foreign_trade_no_refused_when_strict(serve: Serve, session: aiohttp.ClientSession, name: str) -> None:
    """A TradeNo another terminal used (seeded or foreign_trade) is 80002033 and nothing happens."""
    sim = make_sim(strict=True)
    server = await serve(sim)
    meter = nth(sim, 0)
    remain, bought = meter.remain_money, meter.total_buy_money
    record = sim.foreign_trade("COUNTER-7", meter.meter_id, Decimal(30))
    assert record["state"] == "done"
    assert (record["trade_no"], record["meter_id"], record["amount"]) == ("COUNTER-7", meter.meter_id, Decimal(30))
    # The other terminal's recharge is on the meter at once.
    assert (meter.remain_money, meter.total_buy_money) == (remain + 30, bought + 30)
    row = await reading_row(sim, server, session, meter)
    assert money(row["totalbuymoney"]) == bought + 30
    for trade_no in ("COUNTER-7", "T-OTHER-0001", "T-OTHER-0012"):
        status, raw = await post(sim, server, session, name, money_request(name, meter, trade_no))
        assert (status, answer(sim, raw)) == (200, (TAKEN, MESSAGES[TAKEN]))
    assert sim.trades == {}
    await sim.settle()
    assert (meter.remain_money, meter.total_buy_money) == (remain + 30, bought + 30)


@pytest.mark.parametrize("switch_off", [False, True])
async def test_foreign_trade_no_accepted_when_lenient(
    serve: Serve, session: aiohttp.ClientSession, *, switch_off: bool
) -> None:
    """Lenient (the default, or strict with foreign_trade_nos switched off): other terminals' TradeNos are not ours."""
    sim = make_sim(strict=switch_off)
    sim.foreign_trade_nos = False
    server = await serve(sim)
    meter = nth(sim, 0)
    sim.foreign_trade("COUNTER-8", meter.meter_id, Decimal(10))
    remain = meter.remain_money
    for trade_no in ("COUNTER-8", "T-OTHER-0001"):
        status, raw = await post(sim, server, session, "recharge", recharge(meter, trade_no, "5.0000"))
        assert (status, answer(sim, raw)) == (200, ("0", OK_MESSAGE))
    await sim.settle()
    assert meter.remain_money == remain + 10


async def test_foreign_trade_kinds_and_refusals() -> None:
    """foreign_trade: credit and deduct move RemainMoney only; no meter takes the number only; bad input is refused."""
    sim = make_sim(strict=True)
    meter = nth(sim, 2)
    remain, bought = meter.remain_money, meter.total_buy_money
    sim.foreign_trade("F-CREDIT", meter.meter_id, Decimal("3.5"), kind="credit")
    sim.foreign_trade("F-DEDUCT", meter.meter_id, "1.2500", kind="deduct")  # type: ignore[arg-type]
    assert (meter.remain_money, meter.total_buy_money) == (remain + Decimal("2.25"), bought)
    record = sim.foreign_trade("F-NOMETER")
    assert (record["meter_id"], record["user_id"], record["amount"]) == (None, None, Decimal(100))
    assert (meter.remain_money, meter.total_buy_money) == (remain + Decimal("2.25"), bought)
    for bad in ("F-CREDIT", "T-OTHER-0001", "  "):
        with pytest.raises(ValueError, match=r"exists|empty"):
            sim.foreign_trade(bad)
    with pytest.raises(ValueError, match="kind"):
        sim.foreign_trade("F-X", kind="refund")
    for amount in (Decimal(0), Decimal(-1), Decimal("0.00001"), "abc"):
        with pytest.raises(ValueError, match="amount"):
            sim.foreign_trade("F-X", amount=amount)  # type: ignore[arg-type]
    with pytest.raises(KeyError):
        sim.foreign_trade("F-X", "no-such-meter")
    assert "F-X" not in sim.foreign_trades
    system = make_sim(billing_mode="system", strict=True)
    other = nth(system, 0)
    system.foreign_trade("F-SYS", other.meter_id)
    assert (other.remain_money, other.total_buy_money) == (
        Decimal(0),
        Decimal(0),
    )  # the platform holds no money: only the number


async def test_foreign_trade_route(serve: Serve, session: aiohttp.ClientSession) -> None:
    """POST /_sim/foreign_trade records a trade (200), and answers 409, 404 or 400 as foreign_trade refuses."""
    sim = make_sim(strict=True)
    server = await serve(sim)
    meter = nth(sim, 1)
    remain = meter.remain_money
    url = server.make_url("/_sim/foreign_trade")
    body = {"trade_no": "HTTP-1", "meter_id": meter.meter_id, "amount": "12.5"}
    async with session.post(url, json=body) as resp:
        assert resp.status == 200
        got = await resp.json()
    assert got["ok"] is True
    assert (got["trade"]["trade_no"], got["trade"]["amount"], got["trade"]["kind"]) == ("HTTP-1", "12.5000", "recharge")
    assert meter.remain_money == remain + Decimal("12.5")
    refused = [
        (body, 409),
        ({"trade_no": "T-OTHER-0003"}, 409),
        ({"trade_no": "HTTP-2", "meter_id": "nope"}, 404),
        ({"trade_no": "HTTP-2", "amount": "-1"}, 400),
        ({"trade_no": "HTTP-2", "kind": "gift"}, 400),
        ({"meter_id": meter.meter_id}, 400),
        ({"trade_no": ""}, 400),
    ]
    for refused_body, status in refused:
        async with session.post(url, json=refused_body) as resp:
            assert (resp.status, refused_body) == (status, refused_body)
            assert "error" in await resp.json()
    async with session.post(url, json={"trade_no": "HTTP-3", "kind": "deduct", "amount": 1}) as resp:
        assert resp.status == 200
    async with session.get(server.make_url("/_sim/state")) as resp:
        state = await resp.json()
    assert {"HTTP-1", "HTTP-3", "T-OTHER-0001"} <= {trade["trade_no"] for trade in state["foreign_trades"]}
    assert "HTTP-2" not in sim.foreign_trades
    status, raw = await post(sim, server, session, "recharge", recharge(meter, "HTTP-3"))
    assert answer(sim, raw)[0] == TAKEN


# ---- lost answers ----------------------------------------------------------------------------------------


async def lose(
    sim: CangnanSimulator,
    server: TestServer,
    session: aiohttp.ClientSession,
    mode: str,
    name: str,
    payload: dict[str, Any],
) -> None:
    """Send one request whose answer `mode` loses, and check it is lost the way the mode says."""
    sim.fail_next(mode, endpoint=name)
    if mode in ("timeout", "drop"):
        with pytest.raises((TimeoutError, aiohttp.ClientError)):
            await post(sim, server, session, name, payload, timeout=1.0)
        return
    status, raw = await post(sim, server, session, name, payload)
    if mode == "lost_502":
        assert (status, raw.decode()) == (502, PROXY_502)
        return
    assert status == 200
    assert raw
    with pytest.raises(ValueError):  # noqa: PT011 - json and the envelope both raise ValueError subclasses
        json.loads(raw)
    if sim.envelope is not None:
        with pytest.raises(ValueError):  # noqa: PT011
            sim.envelope.open(raw)


@pytest.mark.parametrize("mode", ["lost_502", "lost_garbled", "timeout", "drop"])
@pytest.mark.parametrize("name", ["recharge", "remainOption"])
async def test_resend_after_lost_answer_is_taken(
    serve: Serve, session: aiohttp.ClientSession, mode: str, name: str
) -> None:
    """The lost attempt was carried out; our re-send with its TradeNo is 80002033; the money moves exactly once."""
    sim = make_sim(strict=True)
    server = await serve(sim)
    meter = nth(sim, 0)
    remain, bought = meter.remain_money, meter.total_buy_money
    await lose(sim, server, session, mode, name, money_request(name, meter, "LOST-1"))
    assert sim.trades["LOST-1"]["state"] == "pending"
    status, raw = await post(sim, server, session, name, money_request(name, meter, "LOST-1"))
    assert (status, answer(sim, raw)) == (200, (TAKEN, MESSAGES[TAKEN]))
    await sim.settle()
    assert meter.remain_money == remain + Decimal("20.5")
    assert meter.total_buy_money == bought + (Decimal("20.5") if name == "recharge" else 0)
    assert [trade["trade_no"] for trade in sim.trades.values()] == ["LOST-1"]
    assert [payload["TradeNo"] for endpoint, payload in sim.requests if endpoint == name] == ["LOST-1", "LOST-1"]


@pytest.mark.parametrize("mode", ["lost_502", "lost_garbled"])
@pytest.mark.parametrize("sealed", [False, True])
async def test_lost_answer_on_control_valve_still_moves(
    serve: Serve, session: aiohttp.ClientSession, mode: str, *, sealed: bool
) -> None:
    """controlValve whose answer is lost (plain or sealed) was accepted: 10 at once, 00 after settle()."""
    sim = make_sim(envelope=CangnanEnvelope.from_hex(KEY16) if sealed else None)
    server = await serve(sim)
    meter = nth(sim, 0)
    assert meter.valve == "01"
    await lose(sim, server, session, mode, "controlValve", pair(meter) | {"Control": 2010})
    assert sim.valve_commands[meter.user_id]["state"] == "pending"
    assert (await reading_row(sim, server, session, meter))["valvestate"] == "10"
    await sim.settle()
    assert (await reading_row(sim, server, session, meter))["valvestate"] == "00"


@pytest.mark.parametrize("mode", ["lost_502", "lost_garbled"])
async def test_lost_answer_on_other_endpoints(serve: Serve, session: aiohttp.ClientSession, mode: str) -> None:
    """Every endpoint does its work before the answer is lost: a suspension holds, a read is just lost."""
    sim = make_sim()
    server = await serve(sim)
    meter = nth(sim, 3)
    await lose(sim, server, session, mode, "meterSuspend", pair(meter))
    assert meter.state == -1
    await lose(sim, server, session, mode, "ReadCurrentData", {"Meters": [pair(meter)]})
    # A refusal is an answer too, and it is lost the same way.
    await lose(sim, server, session, mode, "recharge", recharge(meter, "SUSP-1"))
    assert "SUSP-1" not in sim.trades
    assert sim.faults.faults == []


@pytest.mark.parametrize("mode", ["http500", "malformed"])
async def test_http500_and_malformed_strike_before_the_work(
    serve: Serve, session: aiohttp.ClientSession, mode: str
) -> None:
    """A 500 or a malformed answer means nothing was done: the same TradeNo goes through afterwards."""
    sim = make_sim(strict=True)
    server = await serve(sim)
    meter = nth(sim, 0)
    sim.fail_next(mode, endpoint="recharge")
    status, _ = await post(sim, server, session, "recharge", recharge(meter, "EARLY-1"))
    assert status == (500 if mode == "http500" else 200)
    assert sim.trades == {}
    status, raw = await post(sim, server, session, "recharge", recharge(meter, "EARLY-1"))
    assert answer(sim, raw) == ("0", OK_MESSAGE)
    assert list(sim.trades) == ["EARLY-1"]


# ---- valves that fail on the meter -----------------------------------------------------------------------


async def test_failing_valve_reads_moving_then_abnormal(serve: Serve, session: aiohttp.ClientSession) -> None:
    """fail_valves as a set fails only those meters: accepted (0), 10 until it runs, then 11; the others move."""
    sim = make_sim(strict=True)
    server = await serve(sim)
    failing, working = nth(sim, 0), nth(sim, 1)
    sim.fail_valves = {failing.meter_id}
    assert sim.state()["fail_valves"] == [failing.meter_id]
    for meter in (failing, working):
        status, raw = await post(sim, server, session, "controlValve", pair(meter) | {"Control": 2010})
        assert (status, answer(sim, raw)) == (200, ("0", OK_MESSAGE))
        assert (await reading_row(sim, server, session, meter))["valvestate"] == "10"
    await sim.settle()
    assert (await reading_row(sim, server, session, failing))["valvestate"] == "11"
    assert (await reading_row(sim, server, session, working))["valvestate"] == "00"
    assert sim.valve_commands[failing.user_id]["state"] == "failed"
    assert sim.valve_commands[working.user_id]["state"] == "done"
    # Off again: the next command reaches the meter and clears the fault.
    sim.fail_valves = set()
    await post(sim, server, session, "controlValve", pair(failing) | {"Control": 1010})
    await sim.settle()
    assert (await reading_row(sim, server, session, failing))["valvestate"] == "01"
    sim.fail_valves = True
    await post(sim, server, session, "controlValve", pair(working) | {"Control": 1010})
    await sim.settle()
    assert (await reading_row(sim, server, session, working))["valvestate"] == "11"
    assert sim.state()["fail_valves"] is True
