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
        loaded = yaml.safe_load(block)
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
