"""Money foresight through Home Assistant against the simulators: daily spend from the cloud's daily money (Goldcard
1015, IoT frozen balances), days of credit left, when it runs out, and Low balance by the options' thresholds."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from datetime import date, datetime, timedelta
from decimal import ROUND_DOWN, ROUND_HALF_UP, Decimal

import pytest
from freezegun.api import FrozenDateTimeFactory
from homeassistant.const import STATE_OFF, STATE_ON, STATE_UNKNOWN
from homeassistant.core import HomeAssistant
from homeassistant.helpers import entity_registry as er
from pytest_homeassistant_custom_component.common import MockConfigEntry, async_fire_time_changed

from custom_components.meter_cloud.const import DOMAIN
from custom_components.meter_cloud.foresight import REFRESH
from simulator.goldcard import GoldcardSimulator, SimMeter
from simulator.iotmeter import IotMeterSimulator

CENT = Decimal("0.01")


@pytest.fixture
async def sim(socket_enabled: None) -> AsyncGenerator[GoldcardSimulator]:
    """Four meters: the fourth is on the tiered price and crossed into its second tier within the window."""
    simulator = GoldcardSimulator(meters=4, command_delay=3600)
    yield simulator
    await simulator.close()


def eid(hass: HomeAssistant, unique_id: str, platform: str = "sensor") -> str:
    """An entity id by its unique id."""
    found = er.async_get(hass).async_get_entity_id(platform, DOMAIN, unique_id)
    assert found is not None, unique_id
    return found


def state(hass: HomeAssistant, unique_id: str, platform: str = "sensor") -> str:
    """An entity's state by its unique id."""
    current = hass.states.get(eid(hass, unique_id, platform))
    assert current is not None
    return current.state


def today_of(sim: GoldcardSimulator | IotMeterSimulator) -> date:
    """The vendor's today."""
    return datetime.now(sim.tz).date()


def goldcard_average(meter: SimMeter, today: date, days: int) -> Decimal | None:
    """The mean of the simulator's daily money (all tiers of a day) over the known days of the window."""
    known = [
        meter.history[day].amount for n in range(1, days + 1) if (day := today - timedelta(days=n)) in meter.history
    ]
    return sum(known, Decimal(0)) / len(known) if known else None


def expected_days(balance: Decimal, average: Decimal) -> Decimal:
    """Days of credit left: the balance over the 7-day average, rounded down to a tenth."""
    return (balance / average).quantize(Decimal("0.1"), rounding=ROUND_DOWN)


async def settle(hass: HomeAssistant) -> None:
    """Let the background refresh finish."""
    await hass.async_block_till_done(wait_background_tasks=True)


def check_goldcard(hass: HomeAssistant, sim: GoldcardSimulator) -> None:
    """Every meter's foresight sensors show the simulator's numbers."""
    today = today_of(sim)
    for meter_no, meter in sim.meters.items():
        prefix = f"goldcard_{meter_no}"
        week, month = goldcard_average(meter, today, 7), goldcard_average(meter, today, 30)
        assert week is not None
        assert month is not None
        assert Decimal(state(hass, f"{prefix}_daily_spend_7d")) == week.quantize(CENT, ROUND_HALF_UP)
        assert Decimal(state(hass, f"{prefix}_daily_spend_30d")) == month.quantize(CENT, ROUND_HALF_UP)
        days = expected_days(meter.balance, week)
        assert Decimal(state(hass, f"{prefix}_days_left")) == days
        runs_out = datetime.fromisoformat(state(hass, f"{prefix}_credit_runs_out"))
        assert runs_out == (meter.read_time + timedelta(days=float(days))).replace(second=0)


async def test_goldcard_spend_from_the_daily_bill(
    hass: HomeAssistant, setup_entry: MockConfigEntry, sim: GoldcardSimulator
) -> None:
    """Averages of 1015's useAmount over 7 and 30 days, the tiers of a split day added up, days left and run-out."""
    tiered = next(m for m in sim.meters.values() if m.price_code == "SIM-TIER")
    split = [day for day, use in tiered.history.items() if len(use.tiers) == 2]
    assert len(split) == 1
    assert today_of(sim) - split[0] <= timedelta(days=30)
    await settle(hass)
    check_goldcard(hass, sim)
    attrs = hass.states.get(eid(hass, f"goldcard_{tiered.meter_no}_daily_spend_30d")).attributes
    assert (attrs["source"], attrs["days_with_data"]) == ("cloud", 30)
    # The split day is two 1015 records, one per tier price; the average counted both as that one day's money.
    use = tiered.history[split[0]]
    assert len({price for price in use.tiers}) == 2
    assert use.amount == sum((amount for _, amount in use.tiers.values()), Decimal(0))


async def test_days_without_data_and_a_meter_without_history(
    hass: HomeAssistant, setup_entry: MockConfigEntry, sim: GoldcardSimulator
) -> None:
    """A day the cloud has no record of is left out of the average (not taken for zero); a meter with no daily
    records at all shows unknown, never a made-up number."""
    first, second, *_ = sim.meters.values()
    today = today_of(sim)
    for back in (2, 5):
        del first.history[today - timedelta(days=back)]
    second.history.clear()
    await setup_entry.runtime_data.foresight.async_refresh()
    await settle(hass)
    week = goldcard_average(first, today, 7)
    assert week is not None
    five = sum((first.history[today - timedelta(days=n)].amount for n in (1, 3, 4, 6, 7)), Decimal(0)) / 5
    assert week == five
    assert Decimal(state(hass, f"goldcard_{first.meter_no}_daily_spend_7d")) == five.quantize(CENT, ROUND_HALF_UP)
    assert hass.states.get(eid(hass, f"goldcard_{first.meter_no}_daily_spend_7d")).attributes["days_with_data"] == 5
    for key in ("daily_spend_7d", "daily_spend_30d", "days_left", "credit_runs_out"):
        assert state(hass, f"goldcard_{second.meter_no}_{key}") == STATE_UNKNOWN, key


async def options(hass: HomeAssistant, entry: MockConfigEntry, **thresholds: float) -> None:
    """Save the options form with these thresholds (the others left empty)."""
    result = await hass.config_entries.options.async_init(entry.entry_id)
    result = await hass.config_entries.options.async_configure(
        result["flow_id"], {"scan_interval": 10, "details_interval": 60, **thresholds}
    )
    assert result["type"] == "create_entry"
    await settle(hass)


async def test_low_balance_by_money_and_by_days(
    hass: HomeAssistant, vendor_morning: FrozenDateTimeFactory, setup_entry: MockConfigEntry, sim: GoldcardSimulator
) -> None:
    """No threshold, no Low balance entity; a money threshold compares the balance, a days threshold the days of
    credit left; a meter whose days cannot be told is unknown rather than off."""
    await settle(hass)
    meters = sorted(sim.meters.values(), key=lambda m: m.balance)
    low = meters[0]
    assert (
        er.async_get(hass).async_get_entity_id("binary_sensor", DOMAIN, f"goldcard_{low.meter_no}_low_balance") is None
    )

    between = ((meters[0].balance + meters[1].balance) / 2).quantize(CENT)
    await options(hass, setup_entry, low_balance_amount=float(between))
    assert setup_entry.options["low_balance_amount"] == str(between)
    assert "low_balance_days" not in setup_entry.options
    for meter in meters:
        expected = STATE_ON if meter.balance <= between else STATE_OFF
        assert state(hass, f"goldcard_{meter.meter_no}_low_balance", "binary_sensor") == expected
    assert [m.balance <= between for m in meters].count(True) == 1

    days = {m.meter_no: Decimal(state(hass, f"goldcard_{m.meter_no}_days_left")) for m in meters}
    limit = int(min(days.values())) + 1
    meters[-1].history.clear()  # its days can no longer be told
    await options(hass, setup_entry, low_balance_days=limit)
    assert setup_entry.options["low_balance_days"] == limit
    assert "low_balance_amount" not in setup_entry.options
    # The options reload reads the stored outlooks; the cleared history shows at the next refresh.
    await setup_entry.runtime_data.foresight.async_refresh()
    await settle(hass)
    for meter in meters[:-1]:
        expected = STATE_ON if days[meter.meter_no] <= limit else STATE_OFF
        assert state(hass, f"goldcard_{meter.meter_no}_low_balance", "binary_sensor") == expected
    assert state(hass, f"goldcard_{meters[-1].meter_no}_low_balance", "binary_sensor") == STATE_UNKNOWN
    assert any(days[m.meter_no] <= limit for m in meters)
    assert any(days[m.meter_no] > limit for m in meters[:-1])

    # Both: the money threshold still judges the meter whose days are unknown.
    await options(hass, setup_entry, low_balance_amount=float(meters[-1].balance + 1), low_balance_days=limit)
    assert state(hass, f"goldcard_{meters[-1].meter_no}_low_balance", "binary_sensor") == STATE_ON


async def test_refreshes_over_time_and_a_restart(
    hass: HomeAssistant, vendor_morning: FrozenDateTimeFactory, setup_entry: MockConfigEntry, sim: GoldcardSimulator
) -> None:
    """Refreshed a few times a day, not at every poll; a restart shows the stored outlook without asking the cloud;
    the next day's refresh moves the window and counts what was used meanwhile."""
    await settle(hass)

    def asked() -> int:
        return sum(1 for number, _ in sim.requests if number == "1015")

    first = asked()
    assert first == len(sim.meters)
    check_goldcard(hass, sim)
    sim.tick(600)  # today's use: not in the averages until the day is complete
    await setup_entry.runtime_data.async_refresh()
    vendor_morning.tick(timedelta(hours=1))
    async_fire_time_changed(hass)
    await settle(hass)
    assert asked() == first  # a poll and an hour later: no new daily requests

    assert await hass.config_entries.async_reload(setup_entry.entry_id)
    await settle(hass)
    assert asked() == first  # restored from disk
    check_goldcard(hass, sim)

    vendor_morning.tick(timedelta(days=1))
    sim.tick(30)
    await setup_entry.runtime_data.async_refresh()
    async_fire_time_changed(hass)
    await settle(hass)
    assert asked() == 2 * first
    check_goldcard(hass, sim)
    assert timedelta(hours=8) >= REFRESH


async def test_iot_spend_from_frozen_balances_with_a_recharge_and_a_gap(
    hass: HomeAssistant, iot_entry: MockConfigEntry, iot_sim: IotMeterSimulator
) -> None:
    """The IoT platform's frozen records carry the balance and the cumulative recharge: a day's spend is the fall
    plus what was recharged, so a recharge mid-window is not negative spend; a missing frozen record leaves out the
    two days it closes and opens."""
    meter = next(no for no, d in iot_sim.devices.items() if d.device_type == 1 and d.flags["valve_open"])
    today = today_of(iot_sim)
    iot_sim.recharged_on(meter, today - timedelta(days=3), 100)
    iot_sim.gap(meter, [today - timedelta(days=5)])
    await iot_entry.runtime_data.foresight.async_refresh()
    await settle(hass)
    frozen = {r["acquisition_time"][:10]: r for r in iot_sim.history[meter]}
    price = iot_sim.devices[meter].curr_price

    def used(day: date) -> Decimal | None:
        """The simulator's bill of a day from its frozen volumes (not its money): gas times price, to 3 places."""
        start, end = frozen.get(day.isoformat()), frozen.get((day + timedelta(days=1)).isoformat())
        if start is None or end is None:
            return None
        gas = Decimal(str(end["std_sum"])) - Decimal(str(start["std_sum"]))
        return (gas * price).quantize(Decimal("0.001"), ROUND_HALF_UP)

    known = [u for n in range(1, 8) if (u := used(today - timedelta(days=n))) is not None]
    assert len(known) == 5
    week = sum(known, Decimal(0)) / 5
    prefix = f"iotmeter_{meter}"
    assert Decimal(state(hass, f"{prefix}_daily_spend_7d")) == week.quantize(CENT, ROUND_HALF_UP)
    assert hass.states.get(eid(hass, f"{prefix}_daily_spend_7d")).attributes["days_with_data"] == 5
    balance = Decimal(state(hass, f"{prefix}_balance"))
    assert Decimal(state(hass, f"{prefix}_days_left")) == expected_days(balance, week)


async def test_no_money_no_foresight(
    hass: HomeAssistant, iot_entry: MockConfigEntry, iot_sim: IotMeterSimulator
) -> None:
    """An RTU holds no money: no foresight entities; no Gas cost where the cloud has no cumulative bill."""
    rtu = next(no for no, d in iot_sim.devices.items() if d.device_type != 1)
    meter = next(no for no, d in iot_sim.devices.items() if d.device_type == 1)
    registry = er.async_get(hass)
    assert registry.async_get_entity_id("sensor", DOMAIN, f"iotmeter_{rtu}_days_left") is None
    assert registry.async_get_entity_id("sensor", DOMAIN, f"iotmeter_{meter}_days_left") is not None
    assert registry.async_get_entity_id("sensor", DOMAIN, f"iotmeter_{meter}_gas_cost") is None
