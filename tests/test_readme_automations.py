"""The automations README.md shows, run as written through Home Assistant's automation component."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp.test_utils import TestClient
from homeassistant.components import persistent_notification
from homeassistant.core import HomeAssistant
from homeassistant.setup import async_setup_component
from pytest_homeassistant_custom_component.common import MockConfigEntry

from simulator.goldcard import GoldcardSimulator

README = Path(__file__).resolve().parent.parent / "README.md"


def readme_automation(alias: str) -> dict[str, Any]:
    """The YAML block of README.md that defines the automation called `alias`."""
    for block in re.findall(r"```yaml\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.DOTALL):
        for loaded in yaml.safe_load_all(block):  # a block may hold several documents (`---`)
            if isinstance(loaded, dict):
                for automation in loaded.get("automation", []):
                    if automation.get("alias") == alias:
                        return dict(automation)
    raise AssertionError(f"README.md has no automation {alias!r}")


async def until(check: Any) -> None:
    """Let the event loop run until `check()` holds; the automation waits on its own, so no block_till_done."""
    for _ in range(2000):
        if check():
            return
        await asyncio.sleep(0.005)
    raise AssertionError("the automation did not get there")


def titles(hass: HomeAssistant) -> list[str]:
    """Titles of the persistent notifications shown now."""
    return [n["title"] for n in persistent_notification._async_get_or_create_notifications(hass).values()]


@pytest.mark.parametrize("closes", [True, False], ids=["valve_closes", "valve_refuses"])
async def test_gas_leak_automation(
    hass: HomeAssistant, push_client: TestClient, sim: GoldcardSimulator, setup_entry: MockConfigEntry, closes: bool
) -> None:
    """Gas leak → close the valve → a second, loud notification only when the close did not succeed."""
    automation = readme_automation("Gas leak - close the valve, and say so if it did not close")
    assert await async_setup_component(hass, "persistent_notification", {})
    assert await async_setup_component(hass, "automation", {"automation": [automation]})
    meter_no = next(iter(sim.meters))
    if not closes:
        sim.fail_commands = {meter_no}
    status, _ = await sim.push_alarm(meter_no, alarm_type="02", priority="3", content="燃气泄漏")
    assert status == 200
    valve = f"valve.goldcard_{meter_no}_valve"
    await until(lambda: hass.states.get(valve).state == "closing")
    assert titles(hass) == [f"Gas leak at meter {meter_no}"]
    await sim.settle()  # the meter answers the close (2002 pushed to Home Assistant)
    await until(lambda: hass.states.get(valve).attributes.get("last_command_state") != "pending")
    await hass.async_block_till_done()  # the automation's run ends now
    assert sim.meters[meter_no].valve == ("closed" if closes else "open")
    loud = f"The gas valve of meter {meter_no} did NOT close"
    assert (loud in titles(hass)) is not closes


async def test_money_command_automation(
    hass: HomeAssistant, push_client: TestClient, sim: GoldcardSimulator, setup_entry: MockConfigEntry
) -> None:
    """A recharge whose answer was lost is reported by the README's command-result automation."""
    from .sequences import act, device

    automation = readme_automation("Money command did not go through")
    assert await async_setup_component(hass, "persistent_notification", {})
    assert await async_setup_component(hass, "automation", {"automation": [automation]})
    meter_no = next(iter(sim.meters))
    sim.fail_next("lost_502", endpoint="1004")
    with pytest.raises(Exception):  # noqa: B017, PT011 - the action itself reports the lost answer
        await act(
            hass,
            "recharge",
            {"device_id": device(hass, setup_entry, "goldcard", meter_no), "amount": 5, "reference": "README-1"},
        )
    await hass.async_block_till_done()
    assert titles(hass) == ["recharge README-1: unknown"]


def on_device(automation: dict[str, Any], device_id: str) -> dict[str, Any]:
    """A README example with its placeholder device id replaced by a real one."""
    text = yaml.safe_dump(automation, allow_unicode=True)
    placeholders = set(re.findall(r"\b[0-9a-f]{32}\b", text))
    assert len(placeholders) == 1, placeholders
    loaded: dict[str, Any] = yaml.safe_load(text.replace(placeholders.pop(), device_id))
    return loaded


async def test_device_trigger_examples_goldcard(
    hass: HomeAssistant, push_client: TestClient, sim: GoldcardSimulator, setup_entry: MockConfigEntry
) -> None:
    """Goldcard example: a gas leak closes the valve; the meter refuses; the second automation says so loudly."""
    from .sequences import device

    meter_no = next(iter(sim.meters))
    target = device(hass, setup_entry, "goldcard", meter_no)
    automations = [on_device(readme_automation(a), target) for a in ("Kitchen gas leak", "Kitchen valve did not close")]
    assert await async_setup_component(hass, "persistent_notification", {})
    assert await async_setup_component(hass, "automation", {"automation": automations})
    sim.fail_commands = {meter_no}
    await sim.push_alarm(next(iter(sim.meters)), alarm_type="02")
    await until(lambda: hass.states.get(f"valve.goldcard_{meter_no}_valve").state == "closing")
    assert titles(hass) == []
    await sim.settle()
    await hass.async_block_till_done()
    assert titles(hass) == ["The kitchen gas valve did NOT close (failed)"]
    assert sim.meters[meter_no].valve == "open"


async def test_device_trigger_example_cangnan(
    hass: HomeAssistant, cn_push: TestClient, cn_sim: Any, cn_entry: MockConfigEntry
) -> None:
    """Cangnan example: a top-up the platform refuses (its TradeNo used elsewhere) is announced with its amount."""
    from decimal import Decimal

    from .sequences import act, device

    meter = next(iter(cn_sim.meters.values()))
    target = device(hass, cn_entry, "cangnan", meter.meter_id)
    assert await async_setup_component(hass, "persistent_notification", {})
    automation = on_device(readme_automation("Top-up failed"), target)
    assert await async_setup_component(hass, "automation", {"automation": [automation]})
    cn_sim.foreign_trade("T-README", meter.meter_id, Decimal(50))
    with pytest.raises(Exception):  # noqa: B017, PT011 - the action itself reports the refusal
        await act(hass, "recharge", {"device_id": target, "amount": 15, "reference": "T-README"})
    await hass.async_block_till_done()
    assert titles(hass) == ["Top-up T-README failed"]


async def test_device_trigger_example_iotmeter(hass: HomeAssistant, iot_sim: Any, iot_entry: MockConfigEntry) -> None:
    """IoT example: the balance falls under 50 on a poll; one notification with the balance and its currency."""
    from decimal import Decimal

    from .sequences import device

    meter = next(d for d in iot_sim.devices.values() if d.device_type == 1)
    assert meter.remain_money > 50
    target = device(hass, iot_entry, "iotmeter", meter.comm_no)
    assert await async_setup_component(hass, "persistent_notification", {})
    automation = on_device(readme_automation("Gas balance low"), target)
    assert await async_setup_component(hass, "automation", {"automation": [automation]})
    meter.remain_money = Decimal("42.5")
    await iot_entry.runtime_data.async_refresh()
    await hass.async_block_till_done()
    assert titles(hass) == ["Gas balance is 42.500 CNY"]


async def test_kumir_example_names_a_real_sensor(
    hass: HomeAssistant, kumir_sim: Any, kumir_entry: MockConfigEntry
) -> None:
    """KUMIR example: its entity exists, has volts and a value, and the automation loads."""
    automation = readme_automation("Phase A voltage low")
    entity_id = automation["triggers"][0]["entity_id"]
    sensor = hass.states.get(entity_id)
    assert sensor is not None
    assert sensor.attributes["unit_of_measurement"] == "V"
    assert float(sensor.state) > 200
    assert await async_setup_component(hass, "automation", {"automation": [automation]})
    assert hass.states.get("automation.phase_a_voltage_low").state == "on"
