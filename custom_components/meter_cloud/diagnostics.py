"""Diagnostics with secrets redacted."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from homeassistant.components.diagnostics import async_redact_data
from homeassistant.core import HomeAssistant

from .const import CONF_PUSH_ID
from .coordinator import MeterCloudConfigEntry
from .health import push_url

TO_REDACT = {
    "app_secret",
    "app_code",
    "app_token",
    "data_api_key",
    "login_name",
    "encryption_key",
    "meters",
    "password",
    "login",
    "login_password",
    "nodes",
    CONF_PUSH_ID,
    "push_url",
    "user_no",
    "device_id",
    "account",
}


async def async_get_config_entry_diagnostics(hass: HomeAssistant, entry: MeterCloudConfigEntry) -> dict[str, Any]:
    """Entry settings, runtime state and every meter's latest data."""
    coordinator = entry.runtime_data
    meters = {
        meter_id: {k: None if v is None else str(v) for k, v in asdict(m).items()}
        for meter_id, m in (coordinator.data or {}).items()
    }
    return async_redact_data(
        {
            "entry": {"data": dict(entry.data), "options": dict(entry.options)},
            "push_url": push_url(hass, entry.data[CONF_PUSH_ID]),
            "capabilities": sorted(coordinator.client.capabilities),
            "last_update_success": coordinator.last_update_success,
            "runtime": coordinator.diagnostics(),
            "meter_data": meters,
        },
        TO_REDACT,
    )
