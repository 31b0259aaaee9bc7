"""IoT platform sign-in through Home Assistant against the simulator: the flow's errors, reauth, dead tokens."""

from __future__ import annotations

from typing import Any
from unittest.mock import patch

import pytest
from aiohttp.test_utils import TestServer
from homeassistant.config_entries import SOURCE_USER
from homeassistant.core import HomeAssistant
from homeassistant.data_entry_flow import FlowResultType
from homeassistant.exceptions import HomeAssistantError
from pytest_homeassistant_custom_component.common import MockConfigEntry

from custom_components.meter_cloud.api import Capability
from custom_components.meter_cloud.const import DOMAIN
from simulator.iotmeter import IotMeterSimulator

from .conftest import iot_data
from .test_iotmeter import eid, meters, refresh

CONTROL = ("control_url", "login_name", "password")


def account(sim: IotMeterSimulator, server: TestServer, **changes: Any) -> dict[str, Any]:
    """The account form's input (a change to None leaves the field out, as a cleared field is)."""
    form = {k: v for k, v in iot_data(sim, server).items() if k not in ("backend", "push_id")} | changes
    return {k: v for k, v in form.items() if v is not None}


def count(sim: IotMeterSimulator, name: str) -> int:
    """Requests the simulator received on an endpoint."""
    return [n for n, *_ in sim.requests].count(name)


def reauth_flows(hass: HomeAssistant) -> list[Any]:
    """Reauthentication flows in progress."""
    return [f for f in hass.config_entries.flow.async_progress_by_handler(DOMAIN) if f["context"]["source"] == "reauth"]


async def close_valve(hass: HomeAssistant, meter: str) -> None:
    """Close a meter's valve through its entity."""
    await hass.services.async_call(
        "valve", "close_valve", {"entity_id": eid(hass, meter, "valve", "valve")}, blocking=True
    )


# --- config flow and reconfigure --------------------------------------------------------------


@pytest.mark.parametrize(
    "given", [("control_url",), ("login_name",), ("password",), ("control_url", "password"), ("login_name", "password")]
)
async def test_flow_control_settings_all_or_nothing(
    hass: HomeAssistant, iot_sim: IotMeterSimulator, iot_server: TestServer, given: tuple[str, ...]
) -> None:
    """One or two of the control settings: an error on each missing field, nothing sent; all three: an entry."""
    result = await hass.config_entries.flow.async_init(DOMAIN, context={"source": SOURCE_USER})
    result = await hass.config_entries.flow.async_configure(result["flow_id"], {"backend": "iotmeter"})
    partial = account(iot_sim, iot_server, **{key: None for key in CONTROL if key not in given})
    result = await hass.config_entries.flow.async_configure(result["flow_id"], partial)
    assert result["type"] is FlowResultType.FORM
    assert result["errors"] == {key: "control_incomplete" for key in CONTROL if key not in given}
    assert iot_sim.requests == []
    with patch("custom_components.meter_cloud.async_setup_entry", return_value=True):
        result = await hass.config_entries.flow.async_configure(result["flow_id"], account(iot_sim, iot_server))
    assert result["type"] is FlowResultType.CREATE_ENTRY
    assert all(result["data"][key] for key in CONTROL)


async def test_reconfigure_control_settings(
    hass: HomeAssistant, iot_entry: MockConfigEntry, iot_sim: IotMeterSimulator, iot_server: TestServer
) -> None:
    """Reconfigure: a cleared password is an error beside it, a wrong one the platform's words; none is read-only."""
    result = await iot_entry.start_reconfigure_flow(hass)
    result = await hass.config_entries.flow.async_configure(
        result["flow_id"], account(iot_sim, iot_server, password=None)
    )
    assert result["errors"] == {"password": "control_incomplete"}
    result = await hass.config_entries.flow.async_configure(
        result["flow_id"], account(iot_sim, iot_server, password="wrong")
    )
    assert result["errors"] == {"base": "invalid_control_auth"}
    assert result["description_placeholders"]["error"] == "用户名或密码错误"
    read_only = account(iot_sim, iot_server, **dict.fromkeys(CONTROL))
    result = await hass.config_entries.flow.async_configure(result["flow_id"], read_only)
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "reconfigure_successful"
    await hass.async_block_till_done()
    assert not any(key in iot_entry.data for key in CONTROL)
    assert not iot_entry.runtime_data.client.supports(Capability.VALVE)


# --- reauth ------------------------------------------------------------------------------------


async def test_reauth_asks_for_the_refused_control_password(
    hass: HomeAssistant, iot_entry: MockConfigEntry, iot_sim: IotMeterSimulator
) -> None:
    """The control login refused: reauth asks for the control password alone and shows the platform's words."""
    iot_sim.password = "changed"
    result = await iot_entry.start_reauth_flow(hass)
    assert result["step_id"] == "reauth_confirm_iotmeter"
    assert list(result["data_schema"].schema) == ["password"]
    assert result["description_placeholders"]["error"] == "用户名或密码错误"
    result = await hass.config_entries.flow.async_configure(result["flow_id"], {"password": "still-wrong"})
    assert result["errors"] == {"base": "invalid_control_auth"}
    result = await hass.config_entries.flow.async_configure(result["flow_id"], {"password": "changed"})
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "reauth_successful"
    assert iot_entry.data["password"] == "changed"


async def test_reauth_asks_for_the_data_key_then_the_password(
    hass: HomeAssistant, iot_entry: MockConfigEntry, iot_sim: IotMeterSimulator
) -> None:
    """The data key refused: reauth asks for it; once it passes and the login is refused, for the password too."""
    iot_sim.data_api_key, iot_sim.password = "1" * 32, "changed"
    result = await iot_entry.start_reauth_flow(hass)
    assert list(result["data_schema"].schema) == ["data_api_key"]
    result = await hass.config_entries.flow.async_configure(result["flow_id"], {"data_api_key": "1" * 32})
    assert result["errors"] == {"base": "invalid_control_auth"}
    assert list(result["data_schema"].schema) == ["data_api_key", "password"]
    result = await hass.config_entries.flow.async_configure(
        result["flow_id"], {"data_api_key": "1" * 32, "password": "changed"}
    )
    assert result["reason"] == "reauth_successful"
    assert (iot_entry.data["data_api_key"], iot_entry.data["password"]) == ("1" * 32, "changed")


async def test_refused_login_on_a_poll_starts_reauth(
    hass: HomeAssistant, iot_entry: MockConfigEntry, iot_sim: IotMeterSimulator
) -> None:
    """A poll whose new login is refused (password changed on the platform): reauth, asking for the password."""
    await close_valve(hass, meters(iot_sim)[0])  # under way: each poll asks the queue about it
    iot_sim.password = "changed"
    iot_sim.expire_tokens()
    await refresh(hass, iot_entry)
    assert not iot_entry.runtime_data.last_update_success
    [flow] = reauth_flows(hass)
    result = await hass.config_entries.flow.async_configure(flow["flow_id"])
    assert list(result["data_schema"].schema) == ["password"]


# --- dead tokens -------------------------------------------------------------------------------


@pytest.mark.parametrize("refusal", ["http200", "http401"])
async def test_expired_token_on_a_command(
    hass: HomeAssistant, iot_entry: MockConfigEntry, iot_sim: IotMeterSimulator, refusal: str
) -> None:
    """The platform forgot its tokens: the valve command costs one new Login, is queued once, no reauth."""
    meter = meters(iot_sim)[0]
    await close_valve(hass, meter)
    logins, adds, queued = count(iot_sim, "Login"), count(iot_sim, "Add"), len(iot_sim.commands)
    iot_sim.token_refusal = refusal
    iot_sim.expire_tokens()
    await hass.services.async_call(
        "valve", "open_valve", {"entity_id": eid(hass, meter, "valve", "valve")}, blocking=True
    )
    assert count(iot_sim, "Login") == logins + 1
    assert (count(iot_sim, "Add"), len(iot_sim.commands)) == (adds + 1, queued + 1)
    assert iot_sim.commands[max(iot_sim.commands)]["ctrl_type"] == "iotmeterv1.common.setvalveon"
    await hass.async_block_till_done()
    assert reauth_flows(hass) == []


@pytest.mark.parametrize("refusal", ["http200", "http401"])
async def test_expired_token_on_a_poll(
    hass: HomeAssistant, iot_entry: MockConfigEntry, iot_sim: IotMeterSimulator, refusal: str
) -> None:
    """A poll asking about a command with a dead token: one new Login, the poll succeeds, no reauth."""
    meter = meters(iot_sim)[0]
    await close_valve(hass, meter)
    iot_sim.token_refusal = refusal
    iot_sim.expire_tokens()
    logins, models = count(iot_sim, "Login"), count(iot_sim, "GetModel")
    await iot_sim.settle()
    await refresh(hass, iot_entry)
    assert iot_entry.runtime_data.last_update_success
    assert (count(iot_sim, "Login"), count(iot_sim, "GetModel")) == (logins + 1, models + 2)
    assert hass.states.get(eid(hass, meter, "valve", "valve")).state == "closed"
    assert reauth_flows(hass) == []


async def test_fresh_token_refused_on_a_command(
    hass: HomeAssistant, iot_entry: MockConfigEntry, iot_sim: IotMeterSimulator
) -> None:
    """A token refused again right after a new login: its own translated error, nothing queued, no reauth."""
    iot_sim.token_refusal = "http200"
    iot_sim.fail_next("token", count=2, endpoint="Add")
    with pytest.raises(HomeAssistantError) as err:
        await close_valve(hass, meters(iot_sim)[0])
    assert err.value.translation_key == "token_refused"
    assert iot_sim.commands == {}
    await hass.async_block_till_done()
    assert reauth_flows(hass) == []
