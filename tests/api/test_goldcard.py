"""GoldcardClient over real HTTP against the Goldcard DAS simulator: every value is the simulator's own."""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from custom_components.meter_cloud.api import (
    AlarmPriority,
    AlarmType,
    AuthenticationError,
    CloudConnectionError,
    CloudTimeoutError,
    CommandError,
    CommandKind,
    CommandRef,
    ConfigurationError,
    CustomerInfo,
    DuplicateSerialError,
    GoldcardClient,
    MeterData,
    MeterRegistration,
    MeterReplacement,
    MeterStatus,
    PriceSchedule,
    PushError,
    PushResult,
    ResponseError,
    ValveState,
)
from simulator.common import sign
from simulator.goldcard import ENDPOINTS, MESSAGES, PUSH_PATHS, GoldcardSimulator, SimMeter

from ..timing import LOST_ANSWER_TIMEOUT
from .conftest import TZ, client_config

VALVES = {"open": ValveState.OPEN, "closed": ValveState.CLOSED, "unknown": ValveState.UNKNOWN}
MODELS = {"441": "IoT 10", "502": "IoT 40", "10521": "NB-IoT 10", "10522": "NB-IoT 40"}
READING, COMMAND, ALARM = PUSH_PATHS["2001"], PUSH_PATHS["2002"], PUSH_PATHS["2003"]


def at_price(volume: Decimal, price: Decimal) -> Decimal:
    """Money for a volume, rounded like the vendor: 4 decimals, half-up."""
    return (volume * price).quantize(Decimal("0.0001"), rounding=ROUND_HALF_UP)


def calls(sim: GoldcardSimulator, number: str) -> list[dict[str, Any]]:
    """Payloads the simulator received on one endpoint."""
    return [payload for endpoint, payload in sim.requests if endpoint == number]


def as_meter(meter: SimMeter) -> MeterData:
    """What the integration knows about a meter after a 1013 poll."""
    return MeterData(meter_id=meter.meter_no, user_no=meter.user_no, device_id=meter.device_id)


def first(sim: GoldcardSimulator, valve: str = "open") -> SimMeter:
    """The first simulated meter whose valve is in `valve`."""
    return next(meter for meter in sim.meters.values() if meter.valve == valve)


# ---- readings (1013) ------------------------------------------------------------------------------


async def test_get_meters_matches_simulator(sim: GoldcardSimulator, client: GoldcardClient) -> None:
    """One 1013 call lists every meter with exactly the simulator's numbers."""
    assert {m.valve for m in sim.meters.values()} == {"open", "closed"}  # both mappings get exercised
    meters = await client.async_get_meters()
    assert set(meters) == set(sim.meters)
    for meter_no, meter in sim.meters.items():
        got = meters[meter_no]
        assert got.user_no == meter.user_no
        assert got.device_id == meter.device_id
        assert got.reading == meter.reading
        assert got.balance == meter.balance
        assert got.total_gas == meter.sum_gas
        assert got.total_money == meter.sum_money
        assert got.total_gas != got.total_money  # sumGas/sumMoney are not swapped
        assert got.valve is VALVES[meter.valve]
        assert got.reading_time == meter.read_time
        assert got.reading_time is not None
        assert got.reading_time.utcoffset() == timedelta(hours=8)
    [payload] = calls(sim, "1013")
    assert payload["meterNo"] == ""
    assert (payload["companyCode"], payload["factorNo"]) == (sim.company_code, sim.factor_no)
    assert re.fullmatch(r"[0-9a-f]{32}", payload["serialNo"])


async def test_get_meters_follows_consumption(sim: GoldcardSimulator, client: GoldcardClient) -> None:
    """After a tick open meters used gas and paid for it at their price; closed ones did not move."""
    before = await client.async_get_meters()
    sim.tick(60)
    after = await client.async_get_meters()
    for meter_no, meter in sim.meters.items():
        old, new = before[meter_no], after[meter_no]
        assert None not in (old.reading, new.reading, old.balance, new.balance)
        used = Decimal(new.reading or 0) - Decimal(old.reading or 0)
        paid = Decimal(old.balance or 0) - Decimal(new.balance or 0)
        if meter.valve == "open":
            assert Decimal("0.03") <= used <= Decimal("0.25")
            assert paid == at_price(used, meter.price)
        else:
            assert used == paid == 0
        assert after[meter_no].reading == meter.reading


async def test_get_meters_large_company(sim: GoldcardSimulator, client: GoldcardClient) -> None:
    """A company with a thousand meters answers 1013 with a body of about 300 KB."""
    big = GoldcardSimulator(meters=1000, seed=3)
    sim.meters = big.meters
    meters = await client.async_get_meters()
    assert len(meters) == 1000


# ---- details (1014) -------------------------------------------------------------------------------


async def test_get_details_matches_simulator(sim: GoldcardSimulator, client: GoldcardClient) -> None:
    """1014's typo fields, valve code 1/2/3, meterType and the recharge history all arrive."""
    assert len({m.price_code for m in sim.meters.values()}) == 2
    for meter in sim.meters.values():
        got = await client.async_get_details(as_meter(meter))
        assert got.model == MODELS[meter.meter_type]
        assert got.reading == meter.reading
        assert got.balance == meter.balance
        assert got.price == meter.price
        assert got.price_code == meter.price_code
        assert got.total_gas == meter.sum_gas
        assert got.total_money == meter.sum_money
        assert got.total_recharge == meter.sum_recharge
        assert got.total_recharge == sum(amount for _, amount in meter.recharges)
        assert got.last_recharge_amount == meter.last_recharge_amount
        assert got.last_recharge_time == meter.last_recharge_date
        assert got.recharge_count == meter.recharge_count == 2
        assert got.battery_voltage == meter.voltage
        assert got.signal_strength == Decimal(meter.signal)
        assert got.status is MeterStatus.ACTIVE
        assert got.valve is VALVES[meter.valve]
        assert got.reading_time == meter.read_time
    payload = calls(sim, "1014")[0]
    assert payload["userNo"] != payload["meterNo"]  # the client sends the account's user number


async def test_details_unknown_valve_and_disabled_meter(sim: GoldcardSimulator, client: GoldcardClient) -> None:
    """Valve "unknown" is 3 in 1014 and 2 in 1013; meterState 1 is a disabled meter."""
    meter = first(sim)
    meter.valve, meter.state = "unknown", "1"
    got = await client.async_get_details(as_meter(meter))
    assert got.valve is ValveState.UNKNOWN
    assert got.status is MeterStatus.INACTIVE
    assert (await client.async_get_meters())[meter.meter_no].valve is ValveState.UNKNOWN


# ---- commands (1004 / 1005) -----------------------------------------------------------------------


async def test_set_valve_acts_after_the_delay(sim: GoldcardSimulator, client: GoldcardClient) -> None:
    """The valve command is accepted at once and takes effect command_delay later."""
    sim.command_delay = 0.5
    meter = first(sim)
    receipt = await client.async_set_valve(as_meter(meter), False, "a" * 32)
    assert receipt.serial == "a" * 32
    assert receipt.accepted_at is not None
    assert abs(receipt.accepted_at - datetime.now(TZ)) < timedelta(seconds=5)
    assert calls(sim, "1004")[0]["paramContext"] == {"total": "1", "data": {"valveSet": "1"}}
    assert meter.valve == "open"
    assert sim.commands["a" * 32]["state"] == "pending"
    for _ in range(250):
        if sim.commands["a" * 32]["state"] != "pending":
            break
        await asyncio.sleep(0.02)
    assert sim.commands["a" * 32]["state"] == "done"
    assert (await client.async_get_meters())[meter.meter_no].valve is ValveState.CLOSED
    await client.async_set_valve(as_meter(meter), True, "b" * 32)
    await sim.settle()
    assert meter.valve == "open"


async def test_recharge_same_serial_applies_once(sim: GoldcardSimulator, client: GoldcardClient) -> None:
    """A resent recharge reuses its serial; the DAS refuses the repeat (2.2), which the client reports as such."""
    meter = first(sim)
    before, count = meter.balance, meter.recharge_count
    assert count >= 1  # recharged before, by the gas company's own system
    serial = client.recharge_serial("ORDER-1")
    assert serial == client.recharge_serial("ORDER-1") != client.recharge_serial("ORDER-2")
    when = datetime(2026, 3, 1, 9, 15, 30, tzinfo=TZ)
    counters = await client.async_charge_counters(as_meter(meter))
    assert (counters.times, counters.total) == (count, meter.sum_recharge)
    await client.async_recharge(
        as_meter(meter), Decimal("50"), "ORDER-1", serial=serial, when=when, counter=counters.times + 1
    )
    with pytest.raises(DuplicateSerialError) as err:
        await client.async_recharge(
            as_meter(meter), Decimal("50"), "ORDER-1", serial=serial, when=when, counter=counters.times + 1
        )
    assert (err.value.code, err.value.reason) == ("9999", "duplicate_serial")
    await sim.settle()
    assert meter.balance == before + 50
    assert meter.recharge_count == count + 1
    assert len(calls(sim, "1004")) == 2
    data = calls(sim, "1004")[0]["paramContext"]["data"]
    assert data == {
        "rechargeAmount": "50.00",
        "rechargeCount": str(count + 1),
        "rechargeDate": "2026-03-01 09:15:30",
        "rechargeStream": "ORDER-1",
    }
    details = await client.async_get_details(as_meter(meter))
    assert details.balance == before + 50
    assert details.last_recharge_amount == 50
    assert details.last_recharge_time == when
    assert details.recharge_count == count + 1


async def test_lenient_das_answers_a_repeat_as_before(sim: GoldcardSimulator, client: GoldcardClient) -> None:
    """A DAS that answers a repeated serial with its first answer: a receipt again, and still one charge."""
    sim.unique_serials = False
    meter = first(sim)
    before, count = meter.balance, meter.recharge_count
    serial = client.recharge_serial("ORDER-L")
    when = datetime(2026, 3, 1, 9, 15, 30, tzinfo=TZ)
    one = await client.async_recharge(
        as_meter(meter), Decimal(5), "ORDER-L", serial=serial, when=when, counter=count + 1
    )
    await asyncio.sleep(1.1)  # rdateTime has one-second resolution: a fresh answer would differ
    two = await client.async_recharge(
        as_meter(meter), Decimal(5), "ORDER-L", serial=serial, when=when, counter=count + 1
    )
    assert one == two
    await sim.settle()
    assert (meter.balance, meter.recharge_count) == (before + 5, count + 1)


async def test_recharge_retry_after_lost_answer(sim: GoldcardSimulator, client: GoldcardClient) -> None:
    """The first attempt is processed but its answer never comes; the resend is refused as a repeat: paid once."""
    meter = first(sim)
    before = meter.balance
    serial = client.recharge_serial("ORDER-9")
    now = datetime.now(TZ)
    sim.fail_next("timeout", endpoint="1004")
    client.request_timeout = LOST_ANSWER_TIMEOUT
    counter = meter.recharge_count + 1
    with pytest.raises(CloudTimeoutError):
        await client.async_recharge(
            as_meter(meter), Decimal("20.5"), "ORDER-9", serial=serial, when=now, counter=counter
        )
    client.request_timeout = 5
    with pytest.raises(DuplicateSerialError):
        await client.async_recharge(
            as_meter(meter), Decimal("20.5"), "ORDER-9", serial=serial, when=now, counter=counter
        )
    await sim.settle()
    assert meter.balance == before + Decimal("20.5")


async def test_cancel_before_execution(sim: GoldcardSimulator, client: GoldcardClient, cis: list[PushResult]) -> None:
    """A cancelled command never acts and sends no 2002; cancelling twice or late is refused."""
    meter = first(sim)
    await client.async_set_valve(as_meter(meter), False, "c" * 32)
    await client.async_cancel_command(as_meter(meter), CommandRef("c" * 32, CommandKind.VALVE_CLOSE))
    assert calls(sim, "1005")[0]["sendSerialNo"] == "c" * 32
    assert sim.commands["c" * 32]["state"] == "cancelled"
    await sim.settle()
    assert meter.valve == "open"
    assert cis == []
    with pytest.raises(CommandError, match="c" * 32) as err:
        await client.async_cancel_command(as_meter(meter), CommandRef("c" * 32, CommandKind.VALVE_CLOSE))
    assert err.value.code == "9999"
    await client.async_set_valve(as_meter(meter), False, "d" * 32)
    await sim.settle()
    with pytest.raises(CommandError):
        await client.async_cancel_command(as_meter(meter), CommandRef("d" * 32, CommandKind.VALVE_CLOSE))
    assert meter.valve == "closed"


async def test_command_results_arrive_as_2002(
    sim: GoldcardSimulator, client: GoldcardClient, cis: list[PushResult]
) -> None:
    """Finished commands call back with excuteState 1; a failed one with 2 and no money moved."""
    meter = first(sim)
    await client.async_set_valve(as_meter(meter), False, "e" * 32)
    await sim.settle()
    [done] = cis
    assert done.command is not None
    assert (done.command.serial, done.command.meter_id, done.command.success) == ("e" * 32, meter.meter_no, True)
    assert done.command.kind == "03"
    balance = meter.balance
    sim.fail_commands = {meter.meter_no}
    serial = client.recharge_serial("ORDER-F")
    await client.async_recharge(as_meter(meter), Decimal(10), "ORDER-F", serial=serial, when=datetime.now(TZ))
    await sim.settle()
    failed = cis[1].command
    assert failed is not None
    assert (failed.serial, failed.success, failed.kind) == (serial, False, "05")
    assert meter.balance == balance
    assert [answer["echoCode"] for _, _, answer in sim.pushes] == ["0000", "0000"]


# ---- prices (1007 / 1008) -------------------------------------------------------------------------


async def test_set_flat_price(sim: GoldcardSimulator, client: GoldcardClient) -> None:
    """A flat price is created with 4-decimal strings and assigned to each meter."""
    meters = list(sim.meters.values())[:2]
    result = await client.async_set_price(
        [as_meter(m) for m in meters], PriceSchedule(prices=(Decimal("3.1"),), code="HA-FLAT")
    )
    assert result == {"price_code": "HA-FLAT", "meters": [m.meter_no for m in meters]}
    stored = sim.prices["HA-FLAT"]
    assert stored["priceDetail"] == {"priceLength": "1", "price1": "3.1000"}
    assert (stored["priceType"], calls(sim, "1007")[0]["priceProperty"]) == ("1", "1")
    assert [p["newPriceCode"] for p in calls(sim, "1008")] == ["HA-FLAT", "HA-FLAT"]
    for meter in meters:
        assert (meter.price_code, meter.price) == ("HA-FLAT", Decimal("3.1"))
    details = await client.async_get_details(as_meter(meters[0]))
    assert (details.price, details.price_code) == (Decimal("3.1"), "HA-FLAT")
    assert list(sim.meters.values())[2].price_code != "HA-FLAT"


async def test_set_tiered_price(sim: GoldcardSimulator, client: GoldcardClient) -> None:
    """A tiered price carries every tier and ladder end."""
    meter = first(sim)
    schedule = PriceSchedule(
        prices=(Decimal("2.5"), Decimal("3.5"), Decimal("4.25")),
        ladder_limits=(Decimal("50"), Decimal("300.5")),
        code="HA-TIER",
        cycle_months=12,
    )
    await client.async_set_price([as_meter(meter)], schedule)
    assert sim.prices["HA-TIER"]["priceDetail"] == {
        "priceLength": "3",
        "price1": "2.5000",
        "price2": "3.5000",
        "price3": "4.2500",
        "ladder1End": "50",
        "ladder2End": "300.5",
    }
    assert (sim.prices["HA-TIER"]["priceType"], sim.prices["HA-TIER"]["cycleLength"]) == ("2", "12")
    assert (meter.price_code, meter.price) == ("HA-TIER", Decimal("2.5"))


async def test_price_exists_then_adjust(sim: GoldcardSimulator, client: GoldcardClient) -> None:
    """Creating an existing code is 2004; adjusting it reprices the meters that use it."""
    on_res = [m for m in sim.meters.values() if m.price_code == "SIM-RES"]
    with pytest.raises(CommandError, match="价格信息已存在") as err:
        await client.async_set_price([], PriceSchedule(prices=(Decimal(3),), code="SIM-RES"))
    assert err.value.code == "2004"
    adjust = PriceSchedule(prices=(Decimal("2.75"),), code="SIM-RES", adjust=True, effective_date=date(2026, 7, 1))
    await client.async_set_price([], adjust)
    payload = calls(sim, "1007")[-1]
    assert (payload["priceProperty"], payload["priceBeginDate"], payload["clearFlag"]) == ("2", "2026-07-01", "1")
    assert all(m.price == Decimal("2.75") for m in on_res)
    with pytest.raises(CommandError, match="NOPE") as err:
        await client.async_set_price(
            [], PriceSchedule(prices=(Decimal(1),), code="NOPE", adjust=True, effective_date=date(2026, 7, 1))
        )
    assert err.value.code == "9999"


async def test_tiered_price_without_cycle(sim: GoldcardSimulator, client: GoldcardClient) -> None:
    """A tiered schedule without cycle_months still sends the cycle length the spec requires (12)."""
    await client.async_set_price([], PriceSchedule(prices=(Decimal(2), Decimal(3)), ladder_limits=(Decimal(100),)))
    assert calls(sim, "1007")[-1]["cycleLength"] == "12"


async def test_adjust_without_begin_date(sim: GoldcardSimulator, client: GoldcardClient) -> None:
    """An adjustment without effective_date still sends the begin date the spec requires (today, vendor time)."""
    await client.async_set_price([], PriceSchedule(prices=(Decimal(2),), code="SIM-RES", adjust=True))
    assert calls(sim, "1007")[-1]["priceBeginDate"] == datetime.now(sim.tz).date().isoformat()


# ---- daily usage (1015) ---------------------------------------------------------------------------


async def test_daily_usage_matches_history(sim: GoldcardSimulator, client: GoldcardClient) -> None:
    """Both ends are inclusive and each day is the simulator's record."""
    meter = first(sim)
    days = sorted(meter.history)
    start, end = days[10], days[16]
    records = await client.async_daily_usage(as_meter(meter), start, end)
    assert [r.day for r in records] == days[10:17]
    for record in records:
        use = meter.history[record.day]
        assert (record.volume, record.amount, record.price) == (use.gas, use.amount, use.price)
        assert record.meter_id == meter.meter_no
        assert record.amount == at_price(record.volume, record.price)
    assert calls(sim, "1015")[0]["startTime"] == start.isoformat()
    assert await client.async_daily_usage(as_meter(meter), date(2001, 1, 1), date(2001, 1, 31)) == []


async def test_daily_usage_includes_today(sim: GoldcardSimulator, client: GoldcardClient) -> None:
    """Gas used today shows up as today's record."""
    meter = first(sim)
    today = datetime.now(TZ).date()
    assert await client.async_daily_usage(as_meter(meter), today, today) == []
    sim.tick(30)
    [record] = await client.async_daily_usage(as_meter(meter), today, today)
    assert record.volume == meter.history[today].gas > 0


# ---- meter lifecycle (1001 / 1002 / 1009) ---------------------------------------------------------


async def test_register_replace_deregister(sim: GoldcardSimulator, client: GoldcardClient) -> None:
    """A registered meter is read like the others, survives a replacement under the same user, then goes."""
    registration = MeterRegistration(
        user_no="U2026000001",
        meter_no="202601010001",
        meter_type="502",
        price_code="SIM-RES",
        initial_reading=Decimal("12.5"),
        customer=CustomerInfo(user_name="新用户"),
        overdraft=Decimal(20),
    )
    result = await client.async_register_meter(registration)
    added = sim.meters["202601010001"]
    assert result == {"meter_id": "202601010001", "device_id": added.device_id}
    assert calls(sim, "1001")[0]["initNum"] == "12.5000"
    listed = (await client.async_get_meters())["202601010001"]
    assert (listed.reading, listed.user_no, listed.balance) == (Decimal("12.5"), "U2026000001", Decimal(0))
    with pytest.raises(CommandError, match="用户号 U2026000001 已存在，表具注册失败！"):
        await client.async_register_meter(registration)

    old_device = added.device_id
    replaced = await client.async_replace_meter(
        listed, MeterReplacement(new_meter_no="202601010002", new_meter_type="10521", old_reading=Decimal("13"))
    )
    assert "202601010001" not in sim.meters
    new = sim.meters["202601010002"]
    assert replaced == {"meter_id": "202601010002", "old_meter_id": "202601010001", "device_id": new.device_id}
    assert new.device_id != old_device
    assert calls(sim, "1009")[0]["deviceId"] == old_device
    listed = (await client.async_get_meters())["202601010002"]
    assert (listed.reading, listed.user_no) == (Decimal(0), "U2026000001")
    assert (await client.async_get_details(listed)).model == "NB-IoT 10"

    result = await client.async_deregister_meter(listed, Decimal("0.75"), "用户销户")
    assert result == {"meter_id": "202601010002", "device_id": new.device_id}
    assert "202601010002" not in await client.async_get_meters()
    with pytest.raises(CommandError, match="不存在"):
        await client.async_deregister_meter(listed, Decimal("0.75"), "用户销户")


async def test_replace_onto_existing_number(sim: GoldcardSimulator, client: GoldcardClient) -> None:
    """A replacement onto a number already in use is refused and changes nothing."""
    one, two = list(sim.meters.values())[:2]
    with pytest.raises(CommandError, match=two.meter_no):
        await client.async_replace_meter(
            as_meter(one), MeterReplacement(new_meter_no=two.meter_no, new_meter_type="441", old_reading=one.reading)
        )
    assert sim.meters[one.meter_no] is one


# ---- vendor error codes ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "error", "reason"),
    [
        ("0101", AuthenticationError, "invalid_auth"),
        ("0103", AuthenticationError, "invalid_auth"),
        ("0105", AuthenticationError, "invalid_auth"),
        ("0404", ConfigurationError, "invalid_factor_code"),
        ("9995", CloudConnectionError, "service_unavailable"),
        ("9999", CommandError, "command_failed"),
    ],
)
async def test_error_codes(
    sim: GoldcardSimulator, client: GoldcardClient, code: str, error: type[Exception], reason: str
) -> None:
    """Each appendix-4 code becomes its error class, with the vendor's code and message."""
    sim.fail_next("error", code=code)
    with pytest.raises(error) as err:
        await client.async_get_meters()
    assert type(err.value) is error
    assert (err.value.code, err.value.reason) == (code, reason)  # type: ignore[attr-defined]
    assert str(err.value) == MESSAGES[code]
    assert len(await client.async_get_meters()) == len(sim.meters)


async def test_wrong_secret(sim: GoldcardSimulator, sim_server: TestServer, session: aiohttp.ClientSession) -> None:
    """The simulator checks the signature itself: a wrong secret is 0101."""
    other = GoldcardClient(session, client_config(sim, sim_server, app_secret="wrong"), tz=TZ)
    with pytest.raises(AuthenticationError) as err:
        await other.async_get_meters()
    assert err.value.code == "0101"


async def test_clock_in_the_wrong_zone(
    sim: GoldcardSimulator, sim_server: TestServer, session: aiohttp.ClientSession
) -> None:
    """The timestamp is the vendor's wall clock: signing in UTC is eight hours off and refused."""
    other = GoldcardClient(session, client_config(sim, sim_server), tz=UTC)
    with pytest.raises(AuthenticationError):
        await other.async_get_meters()


async def test_wrong_factor_code(
    sim: GoldcardSimulator, sim_server: TestServer, session: aiohttp.ClientSession
) -> None:
    """A wrong factorNo is 0404, a configuration problem the user must fix."""
    other = GoldcardClient(session, client_config(sim, sim_server, factor_no="9999"), tz=TZ)
    with pytest.raises(ConfigurationError) as err:
        await other.async_get_meters()
    assert (err.value.code, err.value.reason, str(err.value)) == (
        "0404",
        "invalid_factor_code",
        "厂商编码(factorNo)错误",
    )


async def test_unknown_meter_and_wrong_user(sim: GoldcardSimulator, client: GoldcardClient) -> None:
    """Unknown meters and a user number that does not own the meter are 9999 用户不存在."""
    with pytest.raises(CommandError, match="用户不存在"):
        await client.async_get_details(MeterData(meter_id="209901010001", user_no="X"))
    meter = first(sim)
    with pytest.raises(CommandError, match="用户不存在"):
        await client.async_set_valve(MeterData(meter_id=meter.meter_no, user_no="someone-else"), False, "f" * 32)
    assert sim.commands == {}


# ---- transport failures ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "error"),
    [
        ("http500", CloudConnectionError),
        ("malformed", ResponseError),
        ("drop", CloudTimeoutError),
        ("timeout", CloudTimeoutError),
        ("auth", AuthenticationError),
        ("error", CloudConnectionError),
    ],
)
async def test_failure_modes(sim: GoldcardSimulator, client: GoldcardClient, mode: str, error: type[Exception]) -> None:
    """Each injected failure maps to its error class exactly once; the next call works."""
    client.request_timeout = LOST_ANSWER_TIMEOUT
    sim.fail_next(mode)
    with pytest.raises(error) as err:
        await client.async_get_meters()
    assert type(err.value) is error
    # A lost or garbled answer leaves the outcome open; a vendor's refusal (auth, 9995) does not.
    unknown = ("drop", "timeout", "http500", "malformed")
    assert err.value.outcome_unknown is (mode in unknown)  # type: ignore[attr-defined]
    client.request_timeout = 10  # the next call must not fail only because the machine is busy
    assert len(await client.async_get_meters()) == len(sim.meters)
    assert len(calls(sim, "1013")) == 2


async def test_failure_limited_to_one_endpoint(sim: GoldcardSimulator, client: GoldcardClient) -> None:
    """A failure aimed at 1014 leaves 1013 alone, and lasts `count` calls."""
    sim.fail_next("http500", count=2, endpoint="1014")
    meters = await client.async_get_meters()
    meter = meters[first(sim).meter_no]
    for _ in range(2):
        with pytest.raises(CloudConnectionError):
            await client.async_get_details(meter)
    assert (await client.async_get_details(meter)).balance == first(sim).balance
    with pytest.raises(ValueError, match="unknown endpoint"):
        sim.fail_next("drop", endpoint="2001")
    with pytest.raises(ValueError, match="unknown failure mode"):
        sim.fail_next("explode")


async def test_connection_refused(session: aiohttp.ClientSession, socket_enabled: None, unused_tcp_port: int) -> None:
    """Nothing listening: the request never left, so it is a connection error and not a timeout."""
    config = {"base_url": f"http://127.0.0.1:{unused_tcp_port}", "app_code": "A", "app_secret": "B"}
    refused = GoldcardClient(session, config | {"company_code": "C", "factor_no": "D"}, tz=TZ)
    with pytest.raises(CloudConnectionError) as err:
        await refused.async_get_meters()
    assert not isinstance(err.value, CloudTimeoutError)
    assert (err.value.request_sent, err.value.outcome_unknown) == (False, False)


# ---- pushes from the DAS (2001 / 2002 / 2003) -----------------------------------------------------


@pytest.mark.parametrize("valve", ["open", "closed"])
async def test_parse_reading_push(sim: GoldcardSimulator, client: GoldcardClient, valve: str) -> None:
    """A 2001 is authenticated and carries exactly the simulator's numbers."""
    sim.tick(45)
    meter = first(sim, valve)
    headers, body = sim.signed_push(READING, sim.reading_body(meter.meter_no, serial="1" * 32))
    result = client.parse_push("/" + READING, headers, body, datetime.now(TZ))
    assert result.serial == "1" * 32
    assert result.response["echoCode"] == "0000"
    assert (result.response["serialNo"], result.response["meterNo"]) == ("1" * 32, meter.meter_no)
    got = result.reading
    assert got is not None
    assert (got.meter_id, got.user_no, got.device_id) == (meter.meter_no, meter.user_no, meter.device_id)
    assert (got.reading, got.balance, got.price) == (meter.reading, meter.balance, meter.price)
    assert (got.total_gas, got.total_money) == (meter.sum_gas, meter.sum_money)
    assert (got.battery_voltage, got.signal_strength) == (meter.voltage, Decimal(meter.signal))
    assert got.reading_time == meter.read_time
    assert got.valve is VALVES[valve]
    assert (got.temperature, got.pressure) == (None, None)


async def test_parse_command_push(sim: GoldcardSimulator, client: GoldcardClient) -> None:
    """A 2002 names the 1004 serial and whether it worked."""
    meter = first(sim)
    await client.async_set_valve(as_meter(meter), False, "9" * 32)
    await sim.settle()
    headers, body = sim.signed_push(COMMAND, sim.command_body("9" * 32, serial="2" * 32))
    result = client.parse_push(COMMAND, headers, body, datetime.now(TZ))
    assert result.command is not None
    assert (result.command.serial, result.command.meter_id, result.command.success) == ("9" * 32, meter.meter_no, True)
    assert result.response == {
        "echoCode": "0000",
        "echoMsg": {
            "serialNo": "2" * 32,
            "deviceId": meter.device_id,
            "rdateTime": result.response["echoMsg"]["rdateTime"],
        },
    }


@pytest.mark.parametrize(
    ("code", "priority", "kind", "level"),
    [
        ("02", "3", AlarmType.GAS_LEAK, AlarmPriority.HIGH),
        ("07", "2", AlarmType.MAGNETIC_INTERFERENCE, AlarmPriority.MEDIUM),
    ],
)
async def test_parse_alarm_push(
    sim: GoldcardSimulator, client: GoldcardClient, code: str, priority: str, kind: AlarmType, level: AlarmPriority
) -> None:
    """A 2003 becomes an alarm of the right kind and priority."""
    meter = first(sim)
    body = sim.alarm_body(meter.meter_no, code, priority, "阀门直通", serial="3" * 32)
    headers, raw = sim.signed_push(ALARM, body)
    result = client.parse_push(ALARM, headers, raw, datetime.now(TZ))
    alarm = result.alarm
    assert alarm is not None
    assert (alarm.meter_id, alarm.type, alarm.priority, alarm.message, alarm.code) == (
        meter.meter_no,
        kind,
        level,
        "阀门直通",
        code,
    )
    assert alarm.time is not None
    assert abs(alarm.time - datetime.now(TZ)) < timedelta(seconds=5)


def _tamper(headers: dict[str, str]) -> dict[str, str]:
    token = headers["AccessToken"]
    return headers | {"AccessToken": ("0" if token[0] != "0" else "1") + token[1:]}


@pytest.mark.parametrize(
    ("case", "status", "reason"),
    [
        ("bad_signature", 401, "bad_signature"),
        ("stale", 401, "stale_timestamp"),
        ("future", 401, "stale_timestamp"),
        ("other_app", 401, "unknown_sender"),
        ("malformed_json", 400, "malformed"),
        ("unknown_path", 404, "unknown_path"),
        ("no_serial", 400, "malformed"),
        ("no_authorization", 401, "unknown_sender"),
    ],
)
async def test_push_rejections(
    sim: GoldcardSimulator,
    sim_server: TestServer,
    session: aiohttp.ClientSession,
    client: GoldcardClient,
    case: str,
    status: int,
    reason: str,
) -> None:
    """Forged, stale, foreign, broken or misaddressed pushes are refused with a reason."""
    now = datetime.now(TZ)
    meter_no = first(sim).meter_no
    body: dict[str, Any] | bytes = sim.reading_body(meter_no)
    path, when = READING, now
    if case == "stale":
        when = now - timedelta(minutes=6)
    elif case == "future":
        when = now + timedelta(minutes=6)
    elif case == "malformed_json":
        body = b'{"serialNo": "1234", "meterNo": '
    elif case == "no_serial":
        body = {key: value for key, value in sim.reading_body(meter_no).items() if key != "serialNo"}
    headers, raw = sim.signed_push(READING, body, now=when)
    if case == "bad_signature":
        headers = _tamper(headers)
    elif case == "unknown_path":
        path = "api/collect/meter/2009"
    elif case == "no_authorization":
        headers = {key: value for key, value in headers.items() if key != "Authorization"}
    receiver = client
    if case == "other_app":
        receiver = GoldcardClient(session, client_config(sim, sim_server, app_code="OTHER01"), tz=TZ)
    with pytest.raises(PushError) as err:
        receiver.parse_push(path, headers, raw, now)
    assert (err.value.status, err.value.reason) == (status, reason)
    assert err.value.response["echoCode"] == ("0101" if status == 401 else "9999")


async def test_push_within_the_window(sim: GoldcardSimulator, client: GoldcardClient) -> None:
    """Four minutes of clock skew either way are tolerated."""
    now = datetime.now(TZ)
    for skew in (timedelta(minutes=-4), timedelta(minutes=4)):
        headers, raw = sim.signed_push(READING, sim.reading_body(first(sim).meter_no), now=now + skew)
        assert client.parse_push(READING, headers, raw, now).reading is not None


async def test_pushes_over_http(sim: GoldcardSimulator, cis: list[PushResult]) -> None:
    """The simulator's own push sender reaches our receiver and gets our answers back."""
    meter = first(sim, "closed")
    status, answer = await sim.push_reading(meter.meter_no, serial="4" * 32)
    assert status == 200
    assert (answer["echoCode"], answer["serialNo"], answer["valvecontrol"]) == ("0000", "4" * 32, "2")
    status, answer = await sim.push_alarm(meter.meter_no, "06", "3", "电池故障")
    assert status == 200
    assert answer["echoCode"] == "0000"
    reading, alarm = cis[0].reading, cis[1].alarm
    assert reading is not None
    assert alarm is not None
    assert (reading.reading, reading.valve) == (meter.reading, ValveState.CLOSED)
    assert (alarm.type, alarm.message) == (AlarmType.BATTERY_FAULT, "电池故障")
    sim.app_secret = "changed"  # now our receiver must refuse the simulator
    status, answer = await sim.push_reading(meter.meter_no)
    assert (status, answer["echoCode"]) == (401, "0101")
    assert len(cis) == 2


# ---- the simulator's own contract (what other tests and the dev script rely on) ---------------------


async def test_simulator_checks_requests(sim: GoldcardSimulator, sim_server: TestServer) -> None:
    """Unsigned, stale-signed and incomplete requests are refused like the real DAS would."""
    url = str(sim_server.make_url("/" + ENDPOINTS["1014"]))
    meter = first(sim)
    body = {"serialNo": "5" * 32, "userNo": meter.user_no, "factorNo": sim.factor_no, "meterNo": meter.meter_no}
    stale = (datetime.now(TZ) - timedelta(minutes=6)).strftime("%Y%m%d%H%M%S")
    fresh = datetime.now(TZ).strftime("%Y%m%d%H%M%S")
    async with aiohttp.ClientSession() as raw:
        answers = []
        for headers, payload in (
            ({}, body),
            (sign(sim.app_code, sim.app_secret, stale), body),
            # companyCode missing (its serial is spent all the same: the DAS checked it)
            (sign(sim.app_code, sim.app_secret, fresh), body | {"serialNo": "4" * 32}),
            (sign(sim.app_code, sim.app_secret, fresh), body | {"companyCode": sim.company_code}),
            (sign(sim.app_code, sim.app_secret, fresh), body | {"companyCode": sim.company_code}),  # same serial
        ):
            async with raw.post(url, json=payload, headers=headers) as resp:
                answers.append(await resp.json())
    assert [a["echoCode"] for a in answers] == ["0101", "0101", "9999", "0000", "9999"]
    assert "companyCode" in answers[2]["echoMsg"]
    assert answers[3]["echoMsg"]["beseNum"] == str(meter.base_num)
    assert "重复" in answers[4]["echoMsg"]


async def test_control_endpoints(sim: GoldcardSimulator, sim_server: TestServer, cis: list[PushResult]) -> None:
    """/_sim/ lets a human or a script look, tick, inject failures and trigger pushes."""
    meter = first(sim)
    reading = meter.reading
    async with aiohttp.ClientSession() as raw:

        async def post(name: str, body: dict[str, Any]) -> tuple[int, Any]:
            async with raw.post(str(sim_server.make_url(f"/_sim/{name}")), json=body) as resp:
                return resp.status, await resp.json()

        assert (await post("tick", {"minutes": 60}))[0] == 200
        assert meter.reading > reading
        assert (await post("fail", {"mode": "http500", "endpoint": "1013"}))[0] == 200
        assert (await post("fail", {"mode": "nope"}))[0] == 400
        status, answer = await post("push_reading", {"meter_no": meter.meter_no})
        assert (status, answer["status"], answer["answer"]["echoCode"]) == (200, 200, "0000")
        status, answer = await post("alarm", {"meter_no": meter.meter_no, "alarm_type": "04", "priority": "3"})
        assert (status, answer["answer"]["echoCode"]) == (200, "0000")
        assert (await post("alarm", {"meter_no": "000000000000"}))[0] == 404
        assert (await post("push_url", {"url": None}))[1] == {"ok": True, "push_url": None}
        assert (await post("push_reading", {"meter_no": meter.meter_no}))[0] == 502
        async with raw.get(str(sim_server.make_url("/_sim/state"))) as resp:
            state = await resp.json()
    assert [m["meter_no"] for m in state["meters"]] == list(sim.meters)
    assert state["meters"][0]["reading"] == str(sim.meters[state["meters"][0]["meter_no"]].reading)
    assert state["faults"] == [{"mode": "http500", "count": 1, "endpoint": "1013", "code": None}]
    assert cis[1].alarm is not None
    assert cis[1].alarm.type is AlarmType.VALVE_LEAK
