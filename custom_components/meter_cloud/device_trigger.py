"""Device triggers: a meter's alarms, command outcomes and a low balance in the automation editor."""

from __future__ import annotations

from typing import Any

import voluptuous as vol
from homeassistant.components.device_automation import DEVICE_TRIGGER_BASE_SCHEMA, InvalidDeviceAutomationConfig
from homeassistant.components.homeassistant.triggers import event as event_trigger
from homeassistant.components.homeassistant.triggers import numeric_state as numeric_state_trigger
from homeassistant.config_entries import ConfigEntryState
from homeassistant.const import CONF_BELOW, CONF_DEVICE_ID, CONF_DOMAIN, CONF_ENTITY_ID, CONF_PLATFORM, CONF_TYPE
from homeassistant.core import CALLBACK_TYPE, HomeAssistant, callback
from homeassistant.helpers import device_registry as dr
from homeassistant.helpers import entity_registry as er
from homeassistant.helpers.trigger import TriggerActionType, TriggerInfo
from homeassistant.helpers.typing import ConfigType

from .api import BACKENDS, AlarmType, Capability, CommandKind, CommandState
from .compat import device_entry_ids
from .const import DOMAIN, EVENT_ALARM, EVENT_COMMAND_RESULT, EVENT_DEVICE_EVENT

# Command outcomes, each on the states that mean it: a valve that "did not close" includes an unknown outcome
# (the answer was lost, nothing confirmed it): an automation closing the valve on a gas leak must hear of both.
COMMAND_TRIGGERS: dict[str, tuple[CommandKind, tuple[CommandState, ...], Capability]] = {
    "valve_close_failed": (CommandKind.VALVE_CLOSE, (CommandState.FAILED, CommandState.UNKNOWN), Capability.VALVE),
    "valve_open_failed": (CommandKind.VALVE_OPEN, (CommandState.FAILED, CommandState.UNKNOWN), Capability.VALVE),
    "recharge_confirmed": (CommandKind.RECHARGE, (CommandState.CONFIRMED,), Capability.RECHARGE),
    "recharge_failed": (CommandKind.RECHARGE, (CommandState.FAILED,), Capability.RECHARGE),
    "recharge_unknown": (CommandKind.RECHARGE, (CommandState.UNKNOWN,), Capability.RECHARGE),
}
BALANCE_BELOW = "balance_below"
ALARM_TRIGGERS = frozenset(kind.value for kind in AlarmType)
TRIGGER_TYPES = ALARM_TRIGGERS | set(COMMAND_TRIGGERS) | {BALANCE_BELOW}


def _threshold(config: ConfigType) -> ConfigType:
    """Only the balance trigger has a threshold, and it must have one."""
    if config[CONF_TYPE] == BALANCE_BELOW and CONF_BELOW not in config:
        raise vol.Invalid("balance_below needs a threshold (below)")
    if config[CONF_TYPE] != BALANCE_BELOW and CONF_BELOW in config:
        raise vol.Invalid(f"{config[CONF_TYPE]} takes no threshold")
    return config


TRIGGER_SCHEMA = vol.All(
    DEVICE_TRIGGER_BASE_SCHEMA.extend(
        {vol.Required(CONF_TYPE): vol.In(TRIGGER_TYPES), vol.Optional(CONF_BELOW): vol.Coerce(float)}
    ),
    _threshold,
)


def _meter(hass: HomeAssistant, device_id: str) -> tuple[str, str] | None:
    """The backend and device key (identifier) of one of our meters."""
    device = dr.async_get(hass).async_get(device_id)
    if device is None:
        return None
    for entry_id in device_entry_ids(device):
        entry = hass.config_entries.async_get_entry(entry_id)
        if entry is None or entry.domain != DOMAIN:
            continue
        for domain, key in device.identifiers:
            if domain == DOMAIN:
                return entry_id, key
    return None


def _balance_entity(hass: HomeAssistant, device_key: str) -> str | None:
    return er.async_get(hass).async_get_entity_id("sensor", DOMAIN, f"{device_key}_balance")


def _available_types(hass: HomeAssistant, entry_id: str, device_key: str) -> list[str]:
    """The triggers a meter offers: its backend's alarm and event kinds, the commands it takes, a low balance."""
    entry = hass.config_entries.async_get_entry(entry_id)
    if entry is None or (backend := BACKENDS.get(entry.data.get("backend", ""))) is None:
        return []
    types = [kind.value for kind in (*backend.client.alarm_types, *backend.client.event_types)]
    if entry.state is ConfigEntryState.LOADED:
        client = entry.runtime_data.client
        if not client.supports(Capability.PUSH) and not client.supports(Capability.ALARM_HISTORY):
            types = []
        types += [name for name, (_, _, capability) in COMMAND_TRIGGERS.items() if client.supports(capability)]
    # Not loaded (starting, or failing): what a command can do depends on the account, so only its alarm kinds.
    if _balance_entity(hass, device_key) is not None:
        types.append(BALANCE_BELOW)
    return types


async def async_get_triggers(hass: HomeAssistant, device_id: str) -> list[dict[str, Any]]:
    """The triggers of one meter device."""
    found = _meter(hass, device_id)
    if found is None:
        return []
    return [
        {CONF_PLATFORM: "device", CONF_DOMAIN: DOMAIN, CONF_DEVICE_ID: device_id, CONF_TYPE: trigger_type}
        for trigger_type in _available_types(hass, *found)
    ]


async def async_get_trigger_capabilities(hass: HomeAssistant, config: ConfigType) -> dict[str, vol.Schema]:
    """The balance trigger asks for its threshold, in the balance sensor's unit."""
    if config[CONF_TYPE] != BALANCE_BELOW:
        return {}
    unit = None
    if (found := _meter(hass, config[CONF_DEVICE_ID])) and (entity_id := _balance_entity(hass, found[1])):
        entity = er.async_get(hass).async_get(entity_id)
        unit = entity.unit_of_measurement if entity else None
    return {"extra_fields": vol.Schema({vol.Required(CONF_BELOW, description={"suffix": unit}): vol.Coerce(float)})}


async def async_attach_trigger(
    hass: HomeAssistant, config: ConfigType, action: TriggerActionType, trigger_info: TriggerInfo
) -> CALLBACK_TYPE:
    """Listen for the bus event (or the balance sensor's state) behind a trigger."""
    trigger_type = config[CONF_TYPE]
    device_id = config[CONF_DEVICE_ID]
    if trigger_type == BALANCE_BELOW:
        found = _meter(hass, device_id)
        entity_id = _balance_entity(hass, found[1]) if found else None
        if entity_id is None:
            raise InvalidDeviceAutomationConfig(f"Device {device_id} has no balance sensor")
        numeric = await numeric_state_trigger.async_validate_trigger_config(
            hass,
            {CONF_PLATFORM: "numeric_state", CONF_ENTITY_ID: entity_id, CONF_BELOW: config[CONF_BELOW]},
        )
        return await numeric_state_trigger.async_attach_trigger(
            hass, numeric, action, trigger_info, platform_type="device"
        )
    if trigger_type in COMMAND_TRIGGERS:
        kind, states, _ = COMMAND_TRIGGERS[trigger_type]
        matches = [(EVENT_COMMAND_RESULT, {"command": kind.value, "state": state.value}) for state in states]
    else:
        # An alarm kind or a device-event kind: whichever bus event carries it.
        matches = [(bus_event, {CONF_TYPE: trigger_type}) for bus_event in (EVENT_ALARM, EVENT_DEVICE_EVENT)]
    listeners = [
        await _event(hass, bus_event, {CONF_DEVICE_ID: device_id, **data}, action, trigger_info)
        for bus_event, data in matches
    ]

    @callback
    def detach() -> None:
        for remove in listeners:
            remove()

    return detach


async def _event(
    hass: HomeAssistant,
    event_type: str,
    data: dict[str, str],
    action: TriggerActionType,
    trigger_info: TriggerInfo,
) -> CALLBACK_TYPE:
    config = event_trigger.TRIGGER_SCHEMA(
        {
            event_trigger.CONF_PLATFORM: "event",
            event_trigger.CONF_EVENT_TYPE: event_type,
            event_trigger.CONF_EVENT_DATA: data,
        }
    )
    return await event_trigger.async_attach_trigger(hass, config, action, trigger_info, platform_type="device")
