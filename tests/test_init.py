"""Setup, unload, reload, auth and configuration failures, device removal, diagnostics."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import Any

from freezegun.api import FrozenDateTimeFactory
from homeassistant.config_entries import SOURCE_REAUTH, ConfigEntryState
from homeassistant.core import HomeAssistant
from homeassistant.helpers import device_registry as dr
from homeassistant.setup import async_setup_component
from homeassistant.util import dt as dt_util
from pytest_homeassistant_custom_component.common import MockConfigEntry, async_fire_time_changed

from custom_components.meter_cloud.compat import device_by_identifier
from custom_components.meter_cloud.const import DOMAIN
from custom_components.meter_cloud.diagnostics import async_get_config_entry_diagnostics
from simulator.goldcard import GoldcardSimulator

from .test_sensor import entity_id


async def test_unload_and_reload(hass: HomeAssistant, setup_entry: MockConfigEntry) -> None:
    """The entry unloads and reloads cleanly."""
    assert setup_entry.state is ConfigEntryState.LOADED
    assert await hass.config_entries.async_unload(setup_entry.entry_id)
    assert setup_entry.state is ConfigEntryState.NOT_LOADED
    assert await hass.config_entries.async_setup(setup_entry.entry_id)
    assert setup_entry.state is ConfigEntryState.LOADED
    await hass.config_entries.async_remove(setup_entry.entry_id)
    await hass.async_block_till_done()


async def test_setup_retry_when_cloud_down(
    hass: HomeAssistant, config_entry: MockConfigEntry, sim: GoldcardSimulator
) -> None:
    """A cloud fault at start-up retries later instead of failing for good."""
    sim.fail_next("http500", endpoint="1013")
    await hass.config_entries.async_setup(config_entry.entry_id)
    assert config_entry.state is ConfigEntryState.SETUP_RETRY


async def test_auth_failure_starts_reauth(
    hass: HomeAssistant, setup_entry: MockConfigEntry, sim: GoldcardSimulator
) -> None:
    """A refused token on a poll starts reauthentication."""
    sim.fail_next("auth", endpoint="1013")
    await setup_entry.runtime_data.async_refresh()
    await hass.async_block_till_done()
    flows = hass.config_entries.flow.async_progress_by_handler(DOMAIN)
    assert [f["context"]["source"] for f in flows] == [SOURCE_REAUTH]


async def test_wrong_factor_code_is_a_config_error(
    hass: HomeAssistant, config_entry: MockConfigEntry, sim: GoldcardSimulator
) -> None:
    """0404 at setup is a permanent configuration error, not a retry loop."""
    sim.factor_no = "7777"
    await hass.config_entries.async_setup(config_entry.entry_id)
    assert config_entry.state is ConfigEntryState.SETUP_ERROR


async def test_details_slower_and_bounded(
    hass: HomeAssistant, setup_entry: MockConfigEntry, sim: GoldcardSimulator
) -> None:
    """A poll is one 1013; 1014 runs once per meter at setup and again only when due; failures keep old details."""
    counts = {n: [x for x, _ in sim.requests].count(n) for n in ("1013", "1014")}
    assert counts == {"1013": 1, "1014": len(sim.meters)}
    coordinator = setup_entry.runtime_data
    await coordinator.async_refresh()
    assert [x for x, _ in sim.requests].count("1014") == len(sim.meters)
    assert coordinator.requests_last_poll == 1
    meter_no = next(iter(sim.meters))
    voltage = hass.states.get(entity_id(hass, meter_no, "battery_voltage")).state
    coordinator.refresh_details_soon(meter_no)
    sim.fail_next("error", endpoint="1014", code="9999")
    await coordinator.async_refresh()
    await hass.async_block_till_done()
    assert hass.states.get(entity_id(hass, meter_no, "battery_voltage")).state == voltage


async def test_scheduled_poll(hass: HomeAssistant, setup_entry: MockConfigEntry, sim: GoldcardSimulator) -> None:
    """The coordinator polls on its interval by itself."""
    before = [x for x, _ in sim.requests].count("1013")
    async_fire_time_changed(hass, dt_util.utcnow() + timedelta(minutes=11))
    await hass.async_block_till_done(wait_background_tasks=True)
    assert [x for x, _ in sim.requests].count("1013") == before + 1


async def test_vanished_meter_removed(
    hass: HomeAssistant, setup_entry: MockConfigEntry, sim: GoldcardSimulator, hass_ws_client: Any
) -> None:
    """A meter absent from one poll is unavailable but keeps its device (and the user's name for it); absent
    from three polls in a row, the device goes; a listed one cannot be removed by hand."""
    assert await async_setup_component(hass, "config", {})
    gone, kept = list(sim.meters)[:2]
    kept_device = device_by_identifier(hass, (DOMAIN, f"goldcard_{kept}"), setup_entry.entry_id)
    gone_device = device_by_identifier(hass, (DOMAIN, f"goldcard_{gone}"), setup_entry.entry_id)
    registry = dr.async_get(hass)
    registry.async_update_device(gone_device.id, name_by_user="Kitchen")
    away = sim.meters.pop(gone)
    for _ in range(2):  # one bad poll, then another: still the user's device
        await setup_entry.runtime_data.async_refresh()
        await hass.async_block_till_done()
        assert hass.states.get(entity_id(hass, gone, "reading")).state == "unavailable"
        assert registry.async_get(gone_device.id).name_by_user == "Kitchen"
    sim.meters[gone] = away  # back after two polls: nothing lost
    await setup_entry.runtime_data.async_refresh()
    await hass.async_block_till_done()
    assert hass.states.get(entity_id(hass, gone, "reading")).state != "unavailable"
    del sim.meters[gone]
    for _ in range(3):
        await setup_entry.runtime_data.async_refresh()
        await hass.async_block_till_done()
    assert device_by_identifier(hass, (DOMAIN, f"goldcard_{gone}"), setup_entry.entry_id) is None
    listed = dict(sim.meters)
    sim.meters.clear()  # a glitch: the cloud lists nothing at all, however often
    for _ in range(4):
        await setup_entry.runtime_data.async_refresh()
        await hass.async_block_till_done()
    assert device_by_identifier(hass, (DOMAIN, f"goldcard_{kept}"), setup_entry.entry_id) is not None
    sim.meters.update(listed)
    await setup_entry.runtime_data.async_refresh()
    client = await hass_ws_client(hass)
    await client.send_json_auto_id(
        {
            "type": "config/device_registry/remove_config_entry",
            "config_entry_id": setup_entry.entry_id,
            "device_id": kept_device.id,
        }
    )
    response = await client.receive_json()
    assert not response["success"]
    assert dr.async_get(hass).async_get(kept_device.id) is not None


async def test_diagnostics_redacted(hass: HomeAssistant, setup_entry: MockConfigEntry, sim: GoldcardSimulator) -> None:
    """Diagnostics carry meters and commands, never secrets."""
    diagnostics = await async_get_config_entry_diagnostics(hass, setup_entry)
    text = str(diagnostics)
    assert sim.app_secret not in text
    assert setup_entry.data["push_id"] not in text
    assert set(diagnostics["meter_data"]) == set(sim.meters)
    assert diagnostics["entry"]["data"]["app_secret"] == "**REDACTED**"
    assert diagnostics["last_update_success"] is True
    for meter in sim.meters.values():  # the account the DAS keeps (1014) is personal: shown, never in diagnostics
        assert meter.user_name not in text
        assert meter.address not in text


async def test_account_data_on_the_meter_state(
    hass: HomeAssistant, setup_entry: MockConfigEntry, sim: GoldcardSimulator
) -> None:
    """1014's customer data as attributes of the meter state sensor, exactly as the DAS keeps it, unrecorded."""
    for meter_no, meter in sim.meters.items():
        state = hass.states.get(entity_id(hass, meter_no, "status"))
        assert state is not None
        assert {k: state.attributes.get(k) for k in ("user_name", "address", "user_type", "set_up_date")} == {
            "user_name": meter.user_name,
            "address": meter.address,
            "user_type": "居民户",
            "set_up_date": meter.set_up_time.isoformat(),
        }
        assert Decimal(state.attributes["base_reading"]) == meter.base_num
    entity = hass.data["entity_components"]["sensor"].get_entity(entity_id(hass, next(iter(sim.meters)), "status"))
    assert {"user_name", "address", "base_reading"} <= entity._unrecorded_attributes


async def test_command_expiry(
    hass: HomeAssistant, freezer: FrozenDateTimeFactory, setup_entry: MockConfigEntry, sim: GoldcardSimulator
) -> None:
    """A valve command with no result for a day stops showing as pending."""
    sim.command_delay = 30 * 86400  # the meter never wakes up within the test
    meter_no = next(iter(sim.meters))
    eid = entity_id(hass, meter_no, "valve", "valve")
    await hass.services.async_call("valve", "close_valve", {"entity_id": eid}, blocking=True)
    assert hass.states.get(eid).state == "closing"
    freezer.tick(timedelta(hours=25))
    await setup_entry.runtime_data.async_refresh()
    await hass.async_block_till_done()
    assert hass.states.get(eid).state == "open"
