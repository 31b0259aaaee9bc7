"""Error translation, the persisted recharge ledger, and edge states."""

from __future__ import annotations

from unittest.mock import patch

import pytest
import voluptuous as vol
from homeassistant.config_entries import SOURCE_REAUTH
from homeassistant.core import HomeAssistant
from homeassistant.exceptions import HomeAssistantError, ServiceValidationError
from homeassistant.helpers.network import NoURLAvailableError
from pytest_homeassistant_custom_component.common import MockConfigEntry

from custom_components.meter_cloud.api import (
    AuthenticationError,
    CloudConnectionError,
    CloudTimeoutError,
    CommandError,
    MeterCloudError,
    ResponseError,
    UnsupportedError,
)
from custom_components.meter_cloud.const import DOMAIN
from custom_components.meter_cloud.errors import to_ha_error
from custom_components.meter_cloud.health import push_url
from simulator.goldcard import GoldcardSimulator

from .test_sensor import entity_id
from .test_services import call, device, sent


@pytest.mark.parametrize(
    ("error", "key", "validation"),
    [
        (AuthenticationError("x"), "invalid_auth", False),
        (CloudTimeoutError("x"), "timeout", False),
        (CloudConnectionError("x"), "cannot_connect", False),
        (CommandError("x", code="9999"), "command_failed", False),
        (ResponseError("x"), "invalid_response", False),
        (MeterCloudError("x"), "unknown_error", False),
        (UnsupportedError("x"), "not_supported", True),
        (CommandError("m", reason="unknown_meter"), "unknown_meter", True),
    ],
)
def test_to_ha_error(error: MeterCloudError, key: str, validation: bool) -> None:
    """Every client error becomes a translated Home Assistant error of the right kind."""
    converted = to_ha_error(error)
    assert converted.translation_domain == DOMAIN
    assert converted.translation_key == key
    assert isinstance(converted, ServiceValidationError) is validation


async def test_ledger_survives_restart(
    hass: HomeAssistant, setup_entry: MockConfigEntry, sim: GoldcardSimulator
) -> None:
    """A pending recharge is on disk: after a reload the same reference is not sent again."""
    meter_no = next(iter(sim.meters))
    data = {"device_id": device(hass, setup_entry, meter_no), "amount": 30, "reference": "R-RESTART"}
    assert (await call(hass, "recharge", data))["state"] == "pending"
    assert await hass.config_entries.async_reload(setup_entry.entry_id)
    await hass.async_block_till_done()
    again = await call(hass, "recharge", data)
    assert again["state"] == "pending"
    assert again["reference"] == "R-RESTART"
    assert len(sent(sim, "1004")) == 1
    assert hass.states.get(entity_id(hass, meter_no, "recharge_status")).state == "pending"


async def test_refused_credentials_on_a_command_start_reauth(
    hass: HomeAssistant, setup_entry: MockConfigEntry, sim: GoldcardSimulator
) -> None:
    """A token refusal while recharging is a translated error and starts reauthentication."""
    sim.fail_next("auth", endpoint="1004")
    data = {"device_id": device(hass, setup_entry, next(iter(sim.meters))), "amount": 5, "reference": "R-AUTH"}
    with pytest.raises(HomeAssistantError) as err:
        await call(hass, "recharge", data)
    assert err.value.translation_key == "invalid_auth"
    await hass.async_block_till_done()
    flows = hass.config_entries.flow.async_progress_by_handler(DOMAIN)
    assert [f["context"]["source"] for f in flows] == [SOURCE_REAUTH]


async def test_service_on_unloaded_entry(
    hass: HomeAssistant, setup_entry: MockConfigEntry, sim: GoldcardSimulator
) -> None:
    """Services refuse meters of an unloaded entry, and bad numbers, with clear errors."""
    dev = device(hass, setup_entry, next(iter(sim.meters)))
    with pytest.raises(vol.Invalid):
        await call(hass, "recharge", {"device_id": dev, "amount": "lots"})
    await hass.config_entries.async_unload(setup_entry.entry_id)
    with pytest.raises(ServiceValidationError) as err:
        await call(hass, "recharge", {"device_id": dev, "amount": 1})
    assert err.value.translation_key == "entry_not_loaded"
    with pytest.raises(ServiceValidationError) as err:
        await call(
            hass,
            "register_meter",
            {
                "config_entry_id": setup_entry.entry_id,
                "user_no": "1",
                "meter_no": "1",
                "meter_type": "441",
                "price_code": "P",
            },
        )
    assert err.value.translation_key == "entry_not_loaded"


async def test_unknown_valve_state(hass: HomeAssistant, setup_entry: MockConfigEntry, sim: GoldcardSimulator) -> None:
    """A valve the cloud reports as unknown is neither open nor closed."""
    meter_no = next(iter(sim.meters))
    sim.meters[meter_no].valve = "unknown"
    await setup_entry.runtime_data.async_refresh()
    await hass.async_block_till_done()
    assert hass.states.get(entity_id(hass, meter_no, "valve", "valve")).state == "unknown"


async def test_push_url_without_a_known_address(hass: HomeAssistant) -> None:
    """Without any configured URL the push URL still shows where to put the address."""
    with patch("custom_components.meter_cloud.health.get_url", side_effect=NoURLAvailableError):
        assert push_url(hass, "abc") == "http://<home-assistant-address>:8123/api/meter_cloud/push/abc/"
