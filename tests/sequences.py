"""Helpers of the command-sequence tests (test_sequences_*.py): entities, actions, and the events and warnings left."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from homeassistant.core import HomeAssistant
from homeassistant.helpers import entity_registry as er
from pytest_homeassistant_custom_component.common import MockConfigEntry

from custom_components.meter_cloud.compat import device_by_identifier
from custom_components.meter_cloud.const import DOMAIN


def entity(hass: HomeAssistant, backend: str, meter_id: str, key: str, platform: str = "sensor") -> str:
    """Entity id of one of a meter's entities."""
    found = er.async_get(hass).async_get_entity_id(platform, DOMAIN, f"{backend}_{meter_id}_{key}")
    assert found is not None, f"no {platform} {key} for {meter_id}"
    return found


def device(hass: HomeAssistant, entry: MockConfigEntry, backend: str, meter_id: str) -> str:
    """Device id of a meter."""
    found = device_by_identifier(hass, (DOMAIN, f"{backend}_{meter_id}"), entry.entry_id)
    assert found is not None
    return found.id


async def act(hass: HomeAssistant, service: str, data: dict[str, Any]) -> Any:
    """Call one of our actions and return its response."""
    return await hass.services.async_call(DOMAIN, service, data, blocking=True, return_response=True)


def state(hass: HomeAssistant, entity_id: str) -> str:
    """An entity's state."""
    current = hass.states.get(entity_id)
    assert current is not None
    return current.state


def warnings_about(caplog: pytest.LogCaptureFixture, meter_id: str) -> list[str]:
    """Our warnings that name a meter (no traceback allowed with them)."""
    found = []
    for record in caplog.records:
        if record.name.startswith("custom_components.meter_cloud") and record.levelno == logging.WARNING:
            assert record.exc_info is None
            if meter_id in record.getMessage():
                found.append(record.getMessage())
    return found


def outcomes(events: list[Any], serial_or_reference: str) -> list[str]:
    """States announced for one command, in order (meter_cloud_command_result)."""
    return [e.data["state"] for e in events if serial_or_reference in (e.data["serial"], e.data["reference"])]
