"""Reloads as current Home Assistant wants them: each change reloads the entry once, with no frame-helper report.

Home Assistant 2026 logs "Detected that custom integration ... has an update listener and should use it for
scheduling a reload. This will stop working in Home Assistant 2026.12.0" when a flow that reloads an entry finds an
update listener on it. These tests count the entry's setups and fail on any such report.
"""

from __future__ import annotations

import logging
from collections.abc import Generator
from typing import Any
from unittest.mock import patch

import pytest
from homeassistant.config_entries import ConfigEntryState
from homeassistant.core import HomeAssistant
from homeassistant.data_entry_flow import FlowResultType
from pytest_homeassistant_custom_component.common import MockConfigEntry

import custom_components.meter_cloud as integration
from custom_components.meter_cloud.compat import HAS_OPTIONS_FLOW_WITH_RELOAD
from custom_components.meter_cloud.const import CONF_SCAN_INTERVAL
from simulator.cangnan import CangnanSimulator
from simulator.goldcard import GoldcardSimulator

from .test_config_flow import account

FRAME_REPORT = "Detected that custom integration"


@pytest.fixture
def setups() -> Generator[list[str]]:
    """Entry ids in the order Home Assistant set them up (a reload is one more setup)."""
    calls: list[str] = []
    original = integration.async_setup_entry

    async def counting(hass: HomeAssistant, entry: Any) -> bool:
        calls.append(entry.entry_id)
        return await original(hass, entry)

    with patch.object(integration, "async_setup_entry", counting):
        yield calls


def frame_reports(caplog: pytest.LogCaptureFixture) -> list[str]:
    """Frame-helper reports about this integration, at any level."""
    return [
        r.getMessage() for r in caplog.records if FRAME_REPORT in r.getMessage() and "meter_cloud" in r.getMessage()
    ]


async def test_options_change_reloads_once(
    hass: HomeAssistant, setup_entry: MockConfigEntry, setups: list[str], caplog: pytest.LogCaptureFixture
) -> None:
    """A saved options change reloads the entry exactly once; saving the same options again reloads nothing."""
    caplog.set_level(logging.DEBUG)
    result = await hass.config_entries.options.async_init(setup_entry.entry_id)
    result = await hass.config_entries.options.async_configure(
        result["flow_id"], {CONF_SCAN_INTERVAL: 30, "details_interval": 120}
    )
    assert result["type"] is FlowResultType.CREATE_ENTRY
    await hass.async_block_till_done()
    assert setups == [setup_entry.entry_id]
    assert setup_entry.state is ConfigEntryState.LOADED
    assert setup_entry.runtime_data.update_interval.total_seconds() == 30 * 60

    result = await hass.config_entries.options.async_init(setup_entry.entry_id)
    await hass.config_entries.options.async_configure(
        result["flow_id"], {CONF_SCAN_INTERVAL: 30, "details_interval": 120}
    )
    await hass.async_block_till_done()
    assert setups == [setup_entry.entry_id]
    assert frame_reports(caplog) == []


async def test_reconfigure_reloads_once(
    hass: HomeAssistant,
    setup_entry: MockConfigEntry,
    entry_data: dict[str, Any],
    sim_server: Any,
    setups: list[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Reconfigure stores the new settings and the entry comes back once, running with them; so does a resubmit."""
    caplog.set_level(logging.DEBUG)
    new_url = str(sim_server.make_url("/"))
    result = await setup_entry.start_reconfigure_flow(hass)
    result = await hass.config_entries.flow.async_configure(result["flow_id"], account(entry_data, base_url=new_url))
    assert result["reason"] == "reconfigure_successful"
    await hass.async_block_till_done()
    assert setups == [setup_entry.entry_id]
    assert setup_entry.state is ConfigEntryState.LOADED
    assert setup_entry.runtime_data.client._config["base_url"] == new_url
    # The same settings again (the form submitted unchanged) still reload, once: the case in which Home
    # Assistant 2026 reports an update listener (with changed data the listener's own reload hides it).
    result = await setup_entry.start_reconfigure_flow(hass)
    result = await hass.config_entries.flow.async_configure(result["flow_id"], account(entry_data, base_url=new_url))
    assert result["reason"] == "reconfigure_successful"
    await hass.async_block_till_done()
    assert setups == [setup_entry.entry_id] * 2
    assert setup_entry.state is ConfigEntryState.LOADED
    assert frame_reports(caplog) == []


async def test_reauth_reloads_once(
    hass: HomeAssistant,
    setup_entry: MockConfigEntry,
    sim: GoldcardSimulator,
    setups: list[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A successful reauth reloads the entry once, with the new secret."""
    caplog.set_level(logging.DEBUG)
    sim.app_secret = "rotated-secret"
    result = await setup_entry.start_reauth_flow(hass)
    result = await hass.config_entries.flow.async_configure(result["flow_id"], {"app_secret": "rotated-secret"})
    assert result["reason"] == "reauth_successful"
    await hass.async_block_till_done()
    assert setups == [setup_entry.entry_id]
    assert setup_entry.state is ConfigEntryState.LOADED
    assert setup_entry.runtime_data.last_update_success
    assert frame_reports(caplog) == []


async def test_meter_list_change_reloads_once(
    hass: HomeAssistant,
    cn_entry: MockConfigEntry,
    cn_sim: CangnanSimulator,
    setups: list[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Registering a meter on a list-following backend stores the list and reloads once, following it."""
    caplog.set_level(logging.DEBUG)
    await hass.services.async_call(
        "meter_cloud",
        "register_meter",
        {
            "config_entry_id": cn_entry.entry_id,
            "user_no": "KYNEW0001",
            "meter_no": "990000000001",
            "meter_type": "CNMCPUJE",
            "meter_protocol": "CNModbusV61",
            "price_1": 2.5,
            "user_name": "New user",
        },
        blocking=True,
        return_response=True,
    )
    await hass.async_block_till_done()
    assert setups == [cn_entry.entry_id]
    assert "KYNEW0001:990000000001" in cn_entry.data["meters"].splitlines()
    assert "990000000001" in cn_entry.runtime_data.data
    assert frame_reports(caplog) == []


async def test_update_listener_only_where_needed(hass: HomeAssistant, setup_entry: MockConfigEntry) -> None:
    """Versions with OptionsFlowWithReload get no update listener; 2025.4 gets the one that reloads on options."""
    assert len(setup_entry.update_listeners) == (0 if HAS_OPTIONS_FLOW_WITH_RELOAD else 1)
