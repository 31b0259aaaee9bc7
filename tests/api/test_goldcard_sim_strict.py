"""The Goldcard simulator's strict mode over real HTTP: unique serials, recharge counts, lost answers.

Strict is what the DAS document lets a real server do: 2.2 "流水号做唯一校验" (a serial is used once,
on any endpoint), 1004 paramNo 05's rechargeCount (充值次数) checked against the meter's own count when
the command executes, and answers lost after the work was done (a proxy's 502, a body cut short).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator
from datetime import datetime
from decimal import Decimal
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from custom_components.meter_cloud.api import (
    CloudConnectionError,
    CommandError,
    GoldcardClient,
    MeterData,
    PushResult,
    ResponseError,
)
from simulator.common import TIME_FORMAT, dumps, sign
from simulator.goldcard import (
    BAD_RECHARGE_COUNT,
    DUPLICATE_SERIAL,
    ENDPOINTS,
    PROXY_502,
    WALL_FORMAT,
    GoldcardSimulator,
    SimMeter,
)

from ..timing import LOST_ANSWER_HANG
from .conftest import TZ

WHEN = datetime(2026, 3, 1, 9, 15, 30, tzinfo=TZ)


@pytest.fixture
async def sim(socket_enabled: None) -> AsyncGenerator[GoldcardSimulator]:
    """The conftest's four meters, strict; commands wait for settle()."""
    simulator = GoldcardSimulator(meters=4, command_delay=3600, seed=7, strict=True)
    simulator.hang_seconds = LOST_ANSWER_HANG
    yield simulator
    await simulator.close()


def first(sim: GoldcardSimulator) -> SimMeter:
    """The first meter with an open valve."""
    return next(meter for meter in sim.meters.values() if meter.valve == "open")


def as_meter(meter: SimMeter, count: int | None = None) -> MeterData:
    """What the integration knows about a meter, with the recharge count it last read (None: unknown)."""
    return MeterData(meter_id=meter.meter_no, user_no=meter.user_no, device_id=meter.device_id, recharge_count=count)


async def recharge(
    client: GoldcardClient, meter: SimMeter, amount: str, reference: str, count: int | None = None
) -> str:
    """Recharge through the client with rechargeCount = count + 1; return the 1004 serial."""
    serial = client.recharge_serial(reference)
    await client.async_recharge(as_meter(meter, count), Decimal(amount), reference, serial=serial, when=WHEN)
    return serial


def executed(sim: GoldcardSimulator) -> list[tuple[str, str]]:
    """(sendSerialNo, excuteState) of every 2002 the simulator pushed."""
    return [(body["sendSerialNo"], body["excuteState"]) for number, body, _ in sim.pushes if number == "2002"]


class Raw:
    """Signed requests built by hand, to send what the client never would (a reused serial, a bad count)."""

    def __init__(self, sim: GoldcardSimulator, server: TestServer, session: aiohttp.ClientSession) -> None:
        """Remember where and as whom to send."""
        self.sim, self.server, self.session = sim, server, session

    def body(self, number: str, serial: str, meter: SimMeter, **extra: Any) -> dict[str, Any]:
        """A complete request body for endpoint `number` about `meter`; `data` goes into 1004's paramContext."""
        sim, changed = self.sim, extra.pop("data", {})
        base = {"serialNo": serial, "companyCode": sim.company_code, "factorNo": sim.factor_no}
        base |= {"meterNo": meter.meter_no}
        if number != "1013":
            base |= {"userNo": meter.user_no}
        if number == "1004":
            base |= {"paramNo": "05", "sdateTime": datetime.now(TZ).strftime(TIME_FORMAT)}
            data = {"rechargeAmount": "10", "rechargeCount": str(meter.recharge_count + 1)}
            data |= {"rechargeDate": WHEN.strftime(WALL_FORMAT), "rechargeStream": f"RAW-{serial[:8]}"}
            base["paramContext"] = {"total": "1", "data": data | changed}
        return base | extra

    async def post(self, number: str, body: dict[str, Any], *, secret: str | None = None) -> tuple[int, bytes]:
        """POST `body` to endpoint `number`, signed now (with `secret` instead of the right one if given)."""
        stamp = datetime.now(TZ).strftime(TIME_FORMAT)
        headers = sign(self.sim.app_code, secret or self.sim.app_secret, stamp)
        headers |= {"Accept": "application/json", "Content-Type": "application/json;charset=utf-8"}
        url = str(self.server.make_url("/" + ENDPOINTS[number]))
        async with self.session.post(url, data=dumps(body).encode(), headers=headers) as resp:
            return resp.status, await resp.read()

    async def call(self, number: str, body: dict[str, Any], *, secret: str | None = None) -> dict[str, Any]:
        """POST and decode the JSON answer."""
        status, raw = await self.post(number, body, secret=secret)
        assert status == 200
        answer: dict[str, Any] = json.loads(raw)
        return answer


@pytest.fixture
def raw(sim: GoldcardSimulator, sim_server: TestServer, session: aiohttp.ClientSession) -> Raw:
    """Hand-built signed requests to the simulator."""
    return Raw(sim, sim_server, session)


REFUSED = {"echoCode": "9999", "echoMsg": DUPLICATE_SERIAL}


# ---- the switch ---------------------------------------------------------------------------------


async def test_strict_switch_and_attributes(socket_enabled: None) -> None:
    """strict (the default) turns every check on; each is its own attribute; strict=False is lenient."""
    lenient, strict = GoldcardSimulator(meters=1, strict=False), GoldcardSimulator(meters=1)
    assert (lenient.strict, lenient.unique_serials, lenient.check_recharge_count) == (False, False, False)
    assert (strict.strict, strict.unique_serials, strict.check_recharge_count) == (True, True, True)
    assert strict.state()["strict"] == {"unique_serials": True, "check_recharge_count": True}
    strict.unique_serials = False
    assert (strict.strict, strict.check_recharge_count) == (False, True)
    lenient.strict = True
    assert (lenient.unique_serials, lenient.check_recharge_count) == (True, True)
    for simulator in (lenient, strict):
        await simulator.close()


# ---- unique serials (2.2) -----------------------------------------------------------------------


async def test_repeated_serial_refused_on_queries(sim: GoldcardSimulator, raw: Raw) -> None:
    """A serial used on 1013 or 1014 is refused the second time, on that endpoint or any other."""
    meter = first(sim)
    one, two = "1" * 32, "2" * 32
    assert (await raw.call("1013", raw.body("1013", one, meter)))["echoCode"] == "0000"
    assert await raw.call("1013", raw.body("1013", one, meter)) == REFUSED
    assert (await raw.call("1014", raw.body("1014", two, meter)))["echoCode"] == "0000"
    assert await raw.call("1014", raw.body("1014", two, meter)) == REFUSED
    assert await raw.call("1014", raw.body("1014", one, meter)) == REFUSED  # 1013's serial on 1014
    assert await raw.call("1013", raw.body("1013", two, meter)) == REFUSED


async def test_serial_used_up_once_past_the_signature(sim: GoldcardSimulator, raw: Raw) -> None:
    """A request refused for its content still uses its serial; one refused for its signature does not."""
    meter = first(sim)
    refused = await raw.call("1014", raw.body("1014", "3" * 32, meter, userNo="nobody"))
    assert refused == {"echoCode": "9999", "echoMsg": "用户不存在"}
    assert await raw.call("1014", raw.body("1014", "3" * 32, meter)) == REFUSED
    forged = await raw.call("1014", raw.body("1014", "4" * 32, meter), secret="wrong")
    assert forged["echoCode"] == "0101"
    assert (await raw.call("1014", raw.body("1014", "4" * 32, meter)))["echoCode"] == "0000"
    sim.fail_next("error", endpoint="1013", code="9995")  # refused before any work: nothing used up
    assert (await raw.call("1013", raw.body("1013", "5" * 32, meter)))["echoCode"] == "9995"
    assert (await raw.call("1013", raw.body("1013", "5" * 32, meter)))["echoCode"] == "0000"


async def test_repeated_1004_refused_and_not_run(
    sim: GoldcardSimulator, client: GoldcardClient, cis: list[PushResult]
) -> None:
    """The same 1004 serial again, same payload or another, is 9999 流水号重复: the money moves once."""
    meter = first(sim)
    before, count = meter.balance, meter.recharge_count
    serial = await recharge(client, meter, "50", "ORDER-1", count)
    with pytest.raises(CommandError) as err:
        await recharge(client, meter, "50", "ORDER-1", count)
    assert (err.value.code, str(err.value)) == ("9999", DUPLICATE_SERIAL)
    with pytest.raises(CommandError, match=DUPLICATE_SERIAL):  # another payload under the same serial
        await client.async_set_valve(as_meter(meter), False, serial)
    await sim.settle()
    assert list(sim.commands) == [serial]
    assert (meter.balance, meter.recharge_count, meter.valve) == (before + 50, count + 1, "open")
    assert executed(sim) == [(serial, "1")]
    assert [result.command.success for result in cis if result.command] == [True]
    with pytest.raises(CommandError, match=DUPLICATE_SERIAL):  # and after it ran, still refused
        await recharge(client, meter, "50", "ORDER-1", count + 1)
    await sim.settle()
    assert meter.balance == before + 50


async def test_lenient_serials(sim: GoldcardSimulator, raw: Raw, client: GoldcardClient) -> None:
    """Lenient: a repeated 1004 gets its first answer and runs once; a refused query's serial is free."""
    sim.unique_serials = False
    meter = first(sim)
    before, count = meter.balance, meter.recharge_count
    first_answer = await raw.call("1004", raw.body("1004", "6" * 32, meter))
    again = await raw.call("1004", raw.body("1004", "6" * 32, meter, data={"rechargeAmount": "99"}))
    assert again == first_answer
    assert first_answer["echoCode"] == "0000"
    await sim.settle()
    assert (meter.balance, meter.recharge_count) == (before + 10, count + 1)
    assert (await raw.call("1014", raw.body("1014", "7" * 32, meter, userNo="nobody")))["echoCode"] == "9999"
    assert (await raw.call("1014", raw.body("1014", "7" * 32, meter)))["echoCode"] == "0000"
    refused = await raw.call("1014", raw.body("1014", "7" * 32, meter))
    assert refused == {"echoCode": "9999", "echoMsg": f"流水号 {'7' * 32} 重复"}


# ---- recharge counts (1004 paramNo 05 rechargeCount, 1014 rechargeCount) ---------------------------


async def test_seeded_meters_have_recharge_history(sim: GoldcardSimulator, client: GoldcardClient) -> None:
    """Every meter was topped up by other systems before us; 1014 reports the count and its totals."""
    for meter in sim.meters.values():
        assert meter.recharge_count == len(meter.recharges) >= 1
        details = await client.async_get_details(as_meter(meter))
        assert details.recharge_count == meter.recharge_count
        assert details.total_recharge == sum(amount for _, amount in meter.recharges)
        assert (details.last_recharge_time, details.last_recharge_amount) == meter.recharges[-1]


async def test_two_recharges_accepted_before_either_runs(
    sim: GoldcardSimulator, client: GoldcardClient, cis: list[PushResult]
) -> None:
    """Two recharges in flight carry count+1 and count+2; both run, in the order they were accepted."""
    meter = first(sim)
    before, count = meter.balance, meter.recharge_count
    one = await recharge(client, meter, "30", "ORDER-A", count)
    two = await recharge(client, meter, "20.5", "ORDER-B", count + 1)
    await sim.settle()
    assert (meter.balance, meter.recharge_count) == (before + Decimal("50.5"), count + 2)
    assert executed(sim) == [(one, "1"), (two, "1")]
    assert [(r.command.serial, r.command.success) for r in cis if r.command] == [(one, True), (two, True)]
    details = await client.async_get_details(as_meter(meter))
    assert (details.recharge_count, details.last_recharge_amount) == (count + 2, Decimal("20.5"))


async def test_a_later_command_does_not_overtake(sim: GoldcardSimulator, client: GoldcardClient) -> None:
    """The second recharge's delay runs out first; the meter still runs the first one before it."""
    meter = first(sim)
    before, count = meter.balance, meter.recharge_count
    one = await recharge(client, meter, "30", "ORDER-C", count)  # waits an hour
    sim.command_delay = 0
    two = await recharge(client, meter, "20", "ORDER-D", count + 1)  # due at once
    for _ in range(500):  # the second command's own task does the work; wait until it did (at most 10 s)
        if sim.commands[two]["state"] != "pending":
            break
        await asyncio.sleep(0.02)
    assert [sim.commands[serial]["state"] for serial in (one, two)] == ["done", "done"]
    assert (meter.balance, meter.recharge_count) == (before + 50, count + 2)
    assert [amount for _, amount in meter.recharges[-2:]] == [Decimal(30), Decimal(20)]


async def test_stale_count_fails_at_execution(
    sim: GoldcardSimulator, client: GoldcardClient, cis: list[PushResult]
) -> None:
    """A recharge whose count is not the meter's + 1 is accepted, then fails: excuteState 2, no money."""
    meter = first(sim)
    before, count = meter.balance, meter.recharge_count
    stale = await recharge(client, meter, "40", "ORDER-S", count - 1)  # rechargeCount = count
    unknown = await recharge(client, meter, "40", "ORDER-U")  # the client knows no count: rechargeCount 1
    await sim.settle()
    assert executed(sim) == [(stale, "2"), (unknown, "2")]
    assert [r.command.success for r in cis if r.command] == [False, False]
    assert (meter.balance, meter.recharge_count) == (before, count)
    assert "充值次数不符" in sim.commands[stale]["reason"]
    sim.check_recharge_count = False  # the check alone can be turned off
    await recharge(client, meter, "40", "ORDER-S2", count - 1)
    await sim.settle()
    assert (meter.balance, meter.recharge_count) == (before + 40, count + 1)


async def test_external_recharge_moves_the_count(
    sim: GoldcardSimulator, client: GoldcardClient, cis: list[PushResult]
) -> None:
    """Another system's top-up counts: our next recharge must carry its count + 1, not ours."""
    meter = first(sim)
    before, count, total = meter.balance, meter.recharge_count, meter.sum_recharge
    at = datetime(2026, 2, 27, 10, 0, 0, tzinfo=TZ)
    assert sim.external_recharge(meter.meter_no, Decimal("30"), at) is meter
    assert (meter.balance, meter.recharge_count, meter.sum_recharge) == (before + 30, count + 1, total + 30)
    assert (meter.last_recharge_amount, meter.last_recharge_date, meter.recharges[-1]) == (30, at, (at, 30))
    details = await client.async_get_details(as_meter(meter))
    assert (details.recharge_count, details.balance, details.total_recharge) == (count + 1, before + 30, total + 30)
    assert (details.last_recharge_amount, details.last_recharge_time) == (30, at)
    assert sim.commands == {}  # nothing came through 1004
    stale = await recharge(client, meter, "10", "ORDER-E1", count)  # what we knew before: count + 1
    fresh = await client.async_recharge(details, Decimal(10), "ORDER-E2", serial="e" * 32, when=WHEN)
    await sim.settle()
    assert executed(sim) == [(stale, "2"), (fresh.serial, "1")]
    assert (meter.balance, meter.recharge_count) == (before + 40, count + 2)
    sim.external_recharge(meter.meter_no, Decimal("5"))  # `when` defaults to now, in the DAS's zone
    assert meter.last_recharge_date is not None
    assert abs((meter.last_recharge_date - datetime.now(TZ)).total_seconds()) < 60
    with pytest.raises(ValueError, match="positive"):
        sim.external_recharge(meter.meter_no, Decimal(0))
    with pytest.raises(KeyError):
        sim.external_recharge("000000000000", Decimal(1))


@pytest.mark.parametrize("count", ["abc", "", "1.5", "0", "-3", None, True, "２"])
async def test_count_not_a_positive_integer_refused_at_once(sim: GoldcardSimulator, raw: Raw, count: Any) -> None:
    """rechargeCount must be a whole number ≥ 1: otherwise 9999 at once and nothing is queued."""
    meter = first(sim)
    answer = await raw.call("1004", raw.body("1004", "8" * 32, meter, data={"rechargeCount": count}))
    assert answer == {"echoCode": "9999", "echoMsg": BAD_RECHARGE_COUNT}
    assert sim.commands == {}
    sim.check_recharge_count = False  # lenient: taken as it is (and the serial is new)
    assert (await raw.call("1004", raw.body("1004", "9" * 32, meter, data={"rechargeCount": count})))[
        "echoCode"
    ] == "0000"
    assert list(sim.commands) == ["9" * 32]


async def test_count_as_a_json_number(sim: GoldcardSimulator, raw: Raw) -> None:
    """The spec's sample sends numbers unquoted elsewhere ("total": 1): a whole JSON number is taken too."""
    meter = first(sim)
    count = meter.recharge_count
    answer = await raw.call("1004", raw.body("1004", "a" * 32, meter, data={"rechargeCount": count + 1}))
    assert answer["echoCode"] == "0000"
    await sim.settle()
    assert meter.recharge_count == count + 1


# ---- answers lost after the work (lost_502, lost_garbled) ----------------------------------------


@pytest.mark.parametrize(("mode", "error"), [("lost_502", CloudConnectionError), ("lost_garbled", ResponseError)])
async def test_lost_answer_on_1004_still_runs(
    sim: GoldcardSimulator, client: GoldcardClient, mode: str, error: type[Exception]
) -> None:
    """The recharge is carried out, only its answer is lost: the client cannot know, the money moved."""
    meter = first(sim)
    before, count = meter.balance, meter.recharge_count
    sim.fail_next(mode, endpoint="1004")
    with pytest.raises(error) as err:
        await recharge(client, meter, "25", "ORDER-L", count)
    assert err.value.outcome_unknown is True  # type: ignore[attr-defined]
    await sim.settle()
    assert (meter.balance, meter.recharge_count) == (before + 25, count + 1)
    with pytest.raises(CommandError, match=DUPLICATE_SERIAL):  # a blind retry is refused, not paid twice
        await recharge(client, meter, "25", "ORDER-L", count)
    await sim.settle()
    assert meter.balance == before + 25


@pytest.mark.parametrize("number", ["1013", "1014", "1004"])
async def test_lost_answer_bodies(sim: GoldcardSimulator, raw: Raw, number: str) -> None:
    """lost_502 is a proxy's HTML 502, lost_garbled a 200 whose JSON is cut short; both after the work."""
    meter = first(sim)
    sim.fail_next("lost_502", endpoint=number)
    status, body = await raw.post(number, raw.body(number, "b" * 32, meter))
    assert (status, body.decode()) == (502, PROXY_502)
    sim.fail_next("lost_garbled", endpoint=number)
    status, body = await raw.post(number, raw.body(number, "c" * 32, meter))
    assert status == 200
    assert body.startswith(b'{"echoCode": "0000"')
    with pytest.raises(json.JSONDecodeError):
        json.loads(body)
    for serial in ("b" * 32, "c" * 32):  # both were processed: their serials are used up
        assert await raw.call(number, raw.body(number, serial, meter)) == REFUSED


# ---- control ------------------------------------------------------------------------------------


async def test_external_recharge_control_route(
    sim: GoldcardSimulator, sim_server: TestServer, session: aiohttp.ClientSession
) -> None:
    """POST /_sim/external_recharge tops a meter up as another system; /_sim/state shows the count."""
    meter = first(sim)
    before, count = meter.balance, meter.recharge_count

    async def post(body: dict[str, Any]) -> tuple[int, Any]:
        async with session.post(str(sim_server.make_url("/_sim/external_recharge")), json=body) as resp:
            return resp.status, await resp.json()

    status, answer = await post({"meter_no": meter.meter_no, "amount": "12.5"})
    assert (status, answer) == (
        200,
        {"ok": True, "meter_no": meter.meter_no, "recharge_count": count + 1, "balance": str(before + Decimal("12.5"))},
    )
    status, _ = await post({"meter_no": meter.meter_no, "amount": 5, "when": "2026-02-28 08:00:00"})
    assert status == 200
    assert meter.last_recharge_date == datetime(2026, 2, 28, 8, 0, 0, tzinfo=TZ)
    assert (await post({"meter_no": "000000000000", "amount": "1"}))[0] == 404
    for bad in ({"amount": "-1"}, {"amount": "x"}, {}, {"amount": "1", "when": "yesterday"}):
        assert (await post({"meter_no": meter.meter_no} | bad))[0] == 400
    assert meter.recharge_count == count + 2
    async with session.get(str(sim_server.make_url("/_sim/state"))) as resp:
        state = await resp.json()
    shown = {m["meter_no"]: m["recharge_count"] for m in state["meters"]}
    assert shown == {m.meter_no: m.recharge_count for m in sim.meters.values()}
    assert state["strict"] == {"unique_serials": True, "check_recharge_count": True}
