"""The blueprints under blueprints/automation/meter_cloud, loaded by Home Assistant's blueprint component, made into
automations and driven by the simulators' pushes and polls."""

from __future__ import annotations

import asyncio
import shutil
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from freezegun.api import FrozenDateTimeFactory
from homeassistant.components.automation.helpers import async_get_blueprints
from homeassistant.core import HomeAssistant, ServiceCall
from homeassistant.helpers import device_registry as dr
from homeassistant.setup import async_setup_component
from homeassistant.util import dt as dt_util
from pytest_homeassistant_custom_component.common import MockConfigEntry, async_fire_time_changed, async_mock_service

from simulator.goldcard import GoldcardSimulator
from simulator.iotmeter import IotMeterSimulator

from .sequences import device, entity

BLUEPRINTS = Path(__file__).resolve().parent.parent / "blueprints" / "automation" / "meter_cloud"
NAMES = ("gas_leak_close_valve", "low_balance", "tampering", "silent_meter")
TIMEOUT = timedelta(hours=1)


@pytest.fixture(autouse=True)
def blueprint_folder(hass: HomeAssistant, tmp_path: Path) -> None:
    """A configuration folder holding the repository's blueprints where a user copies them."""
    hass.config.config_dir = str(tmp_path)
    shutil.copytree(BLUEPRINTS, tmp_path / "blueprints" / "automation" / "meter_cloud")


@pytest.fixture
def notify(hass: HomeAssistant) -> list[ServiceCall]:
    """Calls of notify.test, the notify action every automation here is given."""
    return async_mock_service(hass, "notify", "test")


@pytest.fixture
def extra(hass: HomeAssistant) -> list[ServiceCall]:
    """Calls of test.extra, the blueprints' extra actions."""
    return async_mock_service(hass, "test", "extra")


async def automation(hass: HomeAssistant, name: str, **inputs: Any) -> str:
    """Set up one automation from a blueprint; its entity id (it must be on: a blueprint that does not validate
    gives an automation that is off or missing)."""
    config = {
        "alias": name,
        "use_blueprint": {
            "path": f"meter_cloud/{name}.yaml",
            "input": {"notify_action": "notify.test", **inputs},
        },
    }
    assert await async_setup_component(hass, "automation", {"automation": [config]})
    await hass.async_block_till_done()
    state = hass.states.get(f"automation.{name}")
    assert state is not None
    assert state.state == "on"
    return state.entity_id


async def until(check: Any) -> None:
    """Let the event loop run until `check()` holds (a waiting automation never lets async_block_till_done end)."""
    for _ in range(2000):
        if check():
            return
        await asyncio.sleep(0.005)
    raise AssertionError("not reached")


def idle(hass: HomeAssistant, automation_id: str) -> bool:
    """Whether an automation has no run under way."""
    state = hass.states.get(automation_id)
    return state is not None and state.attributes.get("current") == 0


def sent(calls: list[ServiceCall]) -> list[tuple[str, str]]:
    """(title, message) of each notification."""
    return [(call.data["title"], call.data["message"]) for call in calls]


@pytest.mark.parametrize("name", NAMES)
async def test_blueprint_is_valid(hass: HomeAssistant, name: str) -> None:
    """Each file loads through the automation component's blueprints (schema and domain checked) as a blueprint of
    at least 2025.4, and every input has a default but what the user must choose."""
    blueprint = await async_get_blueprints(hass).async_get_blueprint(f"meter_cloud/{name}.yaml")
    assert blueprint.metadata["homeassistant"]["min_version"] == "2025.4.0"
    required = {key for key, spec in blueprint.inputs.items() if "default" not in (spec or {})}
    assert required == ({"meter"} if name == "gas_leak_close_valve" else {"sensor"} if name != "tampering" else set())
    assert sorted(path.stem for path in BLUEPRINTS.glob("*.yaml")) == sorted(NAMES)


# --- gas leak -------------------------------------------------------------------------------------------------------

URGENT = {"push": {"interruption-level": "critical"}}


@pytest.mark.parametrize(
    ("outcome", "urgent"),
    [
        ("closes", None),
        ("fails", "The close failed: no reason given."),
        ("refused", "The close failed: 服务未启动."),
        ("no_answer", "No answer from the meter in time: the valve may still be open."),
        ("unavailable", "The valve cannot be closed: it is unavailable."),
    ],
)
async def test_gas_leak_closes_the_valve_and_says_so_loudly_when_it_did_not(
    hass: HomeAssistant,
    push_client: TestClient,
    sim: GoldcardSimulator,
    setup_entry: MockConfigEntry,
    notify: list[ServiceCall],
    extra: list[ServiceCall],
    outcome: str,
    urgent: str | None,
) -> None:
    """A pushed gas leak (2003) notifies and closes the valve; the urgent notification (with its loud data) and the
    extra actions follow only when the close failed (2002), was refused at once (1004), brought no answer within the
    timeout, or the valve was unavailable."""
    meter_no = next(iter(sim.meters))
    meter = device(hass, setup_entry, "goldcard", meter_no)
    dr.async_get(hass).async_update_device(meter, name_by_user="Kitchen gas meter")
    valve = entity(hass, "goldcard", meter_no, "valve", "valve")
    assert sim.meters[meter_no].valve == "open"
    automation_id = await automation(
        hass,
        "gas_leak_close_valve",
        meter=meter,
        urgent_data=URGENT,
        timeout={"hours": 1},
        not_closed_actions=[{"action": "test.extra", "data": {"meter": "{{ name }}"}}],
    )
    if outcome == "fails":
        sim.fail_commands = {meter_no}
    elif outcome == "no_answer":
        sim.command_delay = 24 * 3600  # the meter answers, but long after the automation stopped waiting
    elif outcome == "refused":
        sim.fail_next("error", endpoint="1004", code="9995")
    elif outcome == "unavailable":
        sim.fail_next("http500", endpoint="1013")
        await setup_entry.runtime_data.async_refresh()
        await hass.async_block_till_done()
        assert hass.states.get(valve).state == "unavailable"
    assert (await sim.push_alarm(meter_no, alarm_type="02", priority="3", content="燃气泄漏"))[0] == 200
    first = ("Gas leak: Kitchen gas meter", "Kitchen gas meter reported a gas leak (燃气泄漏). Closing its valve.")
    await until(lambda: len(notify) >= 1)
    if outcome in ("closes", "fails", "no_answer"):
        await until(lambda: hass.states.get(valve).state == "closing")
        assert not idle(hass, automation_id)
    if outcome == "no_answer":
        async_fire_time_changed(hass, dt_util.utcnow() + TIMEOUT - timedelta(seconds=5))
        await asyncio.sleep(0.05)
        assert sent(notify) == [first]
        async_fire_time_changed(hass, dt_util.utcnow() + TIMEOUT + timedelta(seconds=1))
    elif outcome in ("closes", "fails"):
        await sim.settle()
    await until(lambda: idle(hass, automation_id))
    await hass.async_block_till_done()
    if urgent is None:
        assert sent(notify) == [first]
        assert sim.meters[meter_no].valve == "closed"
        assert extra == []
        return
    assert sent(notify) == [first, ("Gas valve of Kitchen gas meter NOT closed", urgent)]
    assert notify[1].data["data"] == URGENT
    assert [call.data for call in extra] == [{"meter": "Kitchen gas meter"}]
    assert sim.meters[meter_no].valve == "open"


async def test_gas_leak_of_another_meter_or_another_alarm_does_nothing(
    hass: HomeAssistant,
    push_client: TestClient,
    sim: GoldcardSimulator,
    setup_entry: MockConfigEntry,
    notify: list[ServiceCall],
) -> None:
    """Only the chosen meter's gas leak: another meter's leak and the chosen meter's other alarms are ignored."""
    chosen, other = list(sim.meters)[:2]
    await automation(hass, "gas_leak_close_valve", meter=device(hass, setup_entry, "goldcard", chosen))
    assert (await sim.push_alarm(other, alarm_type="02", content="燃气泄漏"))[0] == 200
    assert (await sim.push_alarm(chosen, alarm_type="05", content="阀门故障"))[0] == 200
    await hass.async_block_till_done()
    assert notify == []
    assert len([number for number, _ in sim.requests if number == "1004"]) == 0


# --- low balance ----------------------------------------------------------------------------------------------------


async def test_low_balance_notifies_once_per_crossing(
    hass: HomeAssistant,
    setup_entry: MockConfigEntry,
    sim: GoldcardSimulator,
    notify: list[ServiceCall],
    extra: list[ServiceCall],
) -> None:
    """Polled balances 100 → 15 notify; 12 does not (still below); 60 re-arms; 19.5 notifies again."""
    meter_no = next(iter(sim.meters))
    balance = entity(hass, "goldcard", meter_no, "balance")
    await automation(hass, "low_balance", sensor=balance, threshold=20, extra_actions=[{"action": "test.extra"}])
    name = hass.states.get(balance).name
    for value in ("100", "15", "12", "60", "19.5"):
        sim.meters[meter_no].balance = Decimal(value)
        await setup_entry.runtime_data.async_refresh()
        await hass.async_block_till_done()
        assert float(hass.states.get(balance).state) == float(value)
    unit = hass.states.get(balance).attributes["unit_of_measurement"]
    assert sent(notify) == [
        (f"Low: {name}", f"{name} is 15.00 {unit}, below 20."),
        (f"Low: {name}", f"{name} is 19.50 {unit}, below 20."),
    ]
    assert len(extra) == 2


# --- tampering ------------------------------------------------------------------------------------------------------


async def test_tampering_and_magnetic_attack_notify(
    hass: HomeAssistant,
    cn_push: TestClient,
    cn_sim: Any,
    cn_entry: MockConfigEntry,
    notify: list[ServiceCall],
    extra: list[ServiceCall],
) -> None:
    """Cangnan pushes tampering (09) and a magnetic attack (07) of the chosen meters: both notify; a gas leak (02)
    and an alarm of a meter not chosen do not."""
    chosen, also, other = list(cn_sim.meters.values())[:3]
    devices = [device(hass, cn_entry, "cangnan", meter.meter_id) for meter in (chosen, also)]
    dr.async_get(hass).async_update_device(devices[0], name_by_user="Cellar meter")
    await automation(hass, "tampering", meters=devices, extra_actions=[{"action": "test.extra"}])
    also_name = dr.async_get(hass).async_get(devices[1]).name  # type: ignore[union-attr]
    for meter, code, words in (
        (chosen, "09", "表被拆"),
        (also, "07", "强磁"),
        (chosen, "02", "漏气"),
        (other, "09", "x"),
    ):
        status, _ = await cn_sim.push_alarm(meter.meter_id, alarm_type=code, message=words)
        assert status == 200
    await hass.async_block_till_done()
    assert sent(notify) == [
        ("Tampering: Cellar meter", "Cellar meter reported tampering (表被拆)."),
        (f"A magnetic attack: {also_name}", f"{also_name} reported a magnetic attack (强磁)."),
    ]
    assert len(extra) == 2


async def test_tampering_without_meters_watches_every_meter(
    hass: HomeAssistant,
    iot_push: TestClient,
    iot_sim: IotMeterSimulator,
    iot_entry: MockConfigEntry,
    notify: list[ServiceCall],
) -> None:
    """No meter chosen: the IoT platform's 拆表 (tampering) of any meter notifies; its 磁攻击 does not when only
    tampering is chosen."""
    meter = next(d for d in iot_sim.devices.values() if d.device_type == 1)
    await automation(hass, "tampering", kinds=["tampering"])
    assert (await iot_sim.push_alarm(meter.comm_no, 1))[0] == 200
    assert (await iot_sim.push_alarm(meter.comm_no, 5))[0] == 200
    await hass.async_block_till_done()
    name = dr.async_get(hass).async_get(device(hass, iot_entry, "iotmeter", meter.comm_no)).name  # type: ignore[union-attr]
    assert sent(notify) == [("Tampering: " + str(name), f"{name} reported tampering (拆表).")]


# --- silent meter ---------------------------------------------------------------------------------------------------


async def test_silent_meter_notifies_once_per_silence(
    hass: HomeAssistant,
    config_entry: MockConfigEntry,
    sim: GoldcardSimulator,
    notify: list[ServiceCall],
    freezer: FrozenDateTimeFactory,
) -> None:
    """A meter last read 2 days ago, watched for 3 days of silence: nothing yet; a day later one notification, and
    no second one an hour on; it reports (poll) and re-arms; 3 more silent days notify again."""
    meter_no = next(iter(sim.meters))
    start = dt_util.now().replace(microsecond=0)
    sim.meters[meter_no].read_time = (start - timedelta(days=2)).astimezone(sim.tz)  # the DAS writes its own wall time
    assert await hass.config_entries.async_setup(config_entry.entry_id)
    await hass.async_block_till_done()
    sensor = entity(hass, "goldcard", meter_no, "reading_time")
    assert dt_util.parse_datetime(hass.states.get(sensor).state) == start - timedelta(days=2)
    await automation(hass, "silent_meter", sensor=sensor, days=3)
    name = dr.async_get(hass).async_get(device(hass, config_entry, "goldcard", meter_no)).name  # type: ignore[union-attr]

    async def advance(by: timedelta) -> None:
        freezer.tick(by)
        async_fire_time_changed(hass)
        await hass.async_block_till_done()

    await advance(timedelta(hours=23))
    assert notify == []
    await advance(timedelta(hours=1, minutes=1))
    last = dt_util.as_local(start - timedelta(days=2)).strftime("%Y-%m-%d %H:%M")
    expected = (f"Silent meter: {name}", f"{name} has not reported for more than 3 days (last reading {last}).")
    assert sent(notify) == [expected]
    await advance(timedelta(hours=1))
    assert sent(notify) == [expected]
    sim.tick()  # the meter reports now
    await config_entry.runtime_data.async_refresh()
    await hass.async_block_till_done()
    reported = dt_util.parse_datetime(hass.states.get(sensor).state)
    assert reported == dt_util.now().replace(microsecond=0)
    await advance(timedelta(days=3, minutes=-2))
    assert len(notify) == 1
    await advance(timedelta(minutes=3))
    last = dt_util.as_local(reported).strftime("%Y-%m-%d %H:%M")  # type: ignore[arg-type]
    assert sent(notify) == [
        expected,
        (f"Silent meter: {name}", f"{name} has not reported for more than 3 days (last reading {last})."),
    ]


def test_readme_links_every_blueprint() -> None:
    """README's Blueprints section names each file and how to import it."""
    readme = (BLUEPRINTS.parents[2] / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("## Blueprints\n") :]
    section = section[: section.index("\n## ", 1)]
    for name in NAMES:
        assert f"`{name}.yaml`" in section, name
    assert "Import blueprint" in section
    assert "blueprints/automation/meter_cloud/" in section
