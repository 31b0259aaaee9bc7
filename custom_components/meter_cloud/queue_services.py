"""Services of backends with a command queue: reads that return results, settings, queue management."""

from __future__ import annotations

import re
from datetime import date, datetime, timedelta
from typing import Any

import voluptuous as vol
from homeassistant.core import ServiceCall, ServiceResponse, SupportsResponse
from homeassistant.helpers import config_validation as cv
from homeassistant.util import dt as dt_util
from homeassistant.util.json import JsonValueType

from .api import Capability, CommandKind
from .queue_ops import async_batch, async_delete, async_detail, async_update, changes_of
from .service_helpers import (
    AMOUNT,
    ATTR_DEVICE_ID,
    DEVICE,
    TIERS,
    Handler,
    admin,
    command_response,
    invalid,
    price_schedule,
    require,
    resolve,
    run,
)

REFERENCE = re.compile(r"^[A-Za-z0-9_-]{1,32}$")
DEFAULT_WAIT = 30


def _schedule(call: ServiceCall) -> datetime | None:
    """schedule_time: a wall time without offset is Home Assistant's time zone."""
    when: datetime | None = call.data.get("schedule_time")
    if when is not None and when.tzinfo is None:
        when = when.replace(tzinfo=dt_util.get_default_time_zone())
    return when


async def _queue(
    call: ServiceCall, capability: Capability, kind: CommandKind, params: dict[str, Any], *, wait: bool
) -> ServiceResponse:
    coordinator, meter_id = resolve(call.hass, call.data[ATTR_DEVICE_ID])
    require(coordinator, capability, meter_id)
    if any(key in call.data for key in ("schedule_time", "timeout", "after")):
        # Scheduling, a timeout and chaining are the cloud queue's (IoT); a command alone needs only its capability
        # (a Goldcard centre-billed meter's remaining amount rides on the DAS's next report).
        require(coordinator, Capability.COMMAND_QUEUE, meter_id)
    command = await coordinator.actions.async_queue(
        meter_id,
        kind,
        params,
        call.data.get("reference"),
        schedule=_schedule(call),
        timeout=call.data.get("timeout"),
        after=call.data.get("after"),
    )
    seconds = call.data.get("wait", DEFAULT_WAIT if wait else 0)
    if seconds:
        command = await coordinator.actions.async_wait(command, seconds)
    return command_response(command)


async def _read_price(call: ServiceCall) -> ServiceResponse:
    return await _queue(call, Capability.READ_PRICE, CommandKind.READ_PRICE, {}, wait=True)


async def _get_charge_state(call: ServiceCall) -> ServiceResponse:
    return await _queue(call, Capability.CHARGE_STATE, CommandKind.CHARGE_STATE, {}, wait=True)


@admin
async def _set_remaining_balance(call: ServiceCall) -> ServiceResponse:
    params = {"amount": call.data["amount"]}
    return await _queue(call, Capability.SET_REMAINING, CommandKind.SET_REMAINING, params, wait=False)


@admin
async def _set_cumulative_volume(call: ServiceCall) -> ServiceResponse:
    params = {"std_sum": call.data["standard_volume"], "work_sum": call.data.get("working_volume")}
    params = {key: value for key, value in params.items() if value is not None}
    return await _queue(call, Capability.SET_CUMULATIVE, CommandKind.SET_CUMULATIVE, params, wait=False)


@admin
async def _release_valve_force(call: ServiceCall) -> ServiceResponse:
    return await _queue(call, Capability.RELEASE_FORCE, CommandKind.RELEASE_FORCE, {}, wait=False)


@admin
async def _open_account(call: ServiceCall) -> ServiceResponse:
    coordinator, _ = resolve(call.hass, call.data[ATTR_DEVICE_ID])
    effective: date | None = call.data.get("effective_date")
    schedule = price_schedule(dict(call.data), coordinator.client.max_price_tiers, effective_date=effective)
    params = {"amount": call.data["amount"], "price": schedule}
    return await _queue(call, Capability.OPEN_ACCOUNT, CommandKind.OPEN_ACCOUNT, params, wait=False)


@admin
async def _retry_command(call: ServiceCall) -> ServiceResponse:
    coordinator, meter_id = resolve(call.hass, call.data[ATTR_DEVICE_ID])
    require(coordinator, Capability.COMMAND_QUEUE)
    return command_response(await coordinator.actions.async_retry(meter_id, call.data["serial"]))


async def _set_valve(call: ServiceCall) -> ServiceResponse:
    kind = CommandKind.VALVE_OPEN if call.data["position"] == "open" else CommandKind.VALVE_CLOSE
    return await _queue(call, Capability.VALVE, kind, {}, wait=False)


@admin
async def _update_command(call: ServiceCall) -> ServiceResponse:
    coordinator, meter_id = resolve(call.hass, call.data[ATTR_DEVICE_ID])
    require(coordinator, Capability.COMMAND_QUEUE, meter_id)
    params = {
        "amount": call.data.get("amount"),
        "std_sum": call.data.get("standard_volume"),
        "work_sum": call.data.get("working_volume"),
    }
    changes = changes_of(_schedule(call), call.data.get("timeout"), params)
    command, record = await async_update(coordinator, meter_id, call.data.get("serial"), changes)
    return {**command_response(command), "queued": record}


@admin
async def _delete_command(call: ServiceCall) -> ServiceResponse:
    coordinator, meter_id = resolve(call.hass, call.data[ATTR_DEVICE_ID])
    require(coordinator, Capability.COMMAND_QUEUE, meter_id)
    return command_response(await async_delete(coordinator, meter_id, call.data.get("serial")))


async def _get_command_detail(call: ServiceCall) -> ServiceResponse:
    coordinator, meter_id = resolve(call.hass, call.data[ATTR_DEVICE_ID])
    require(coordinator, Capability.COMMAND_QUEUE, meter_id)
    command, text = await async_detail(coordinator, meter_id, call.data.get("serial"))
    lines: list[JsonValueType] = [line.strip() for line in text.split("</br>") if line.strip()]
    return {"serial": command.serial, "ctrl_id": command.vendor_id, "detail": text, "lines": lines}


@admin
async def _batch_commands(call: ServiceCall) -> ServiceResponse:
    devices: list[str] = call.data[ATTR_DEVICE_ID]
    resolved = [resolve(call.hass, device) for device in devices]
    coordinator = resolved[0][0]
    if any(other is not coordinator for other, _ in resolved):
        raise invalid("batch_one_entry")
    meters = [meter_id for _, meter_id in resolved]
    for meter_id in meters:
        require(coordinator, Capability.COMMAND_QUEUE, meter_id)
    targets: list[tuple[str, str | None]]
    if serials := call.data.get("serial"):
        owners = {serial: getattr(coordinator.commands.get(serial), "meter_id", "") for serial in serials}
        if any(owner not in meters for owner in owners.values()):
            raise invalid("no_pending_command", error=", ".join(s for s, o in owners.items() if o not in meters))
        targets = [(owners[serial], serial) for serial in serials]
    else:
        targets = [(meter_id, None) for meter_id in meters]
    changes = changes_of(_schedule(call), call.data.get("timeout"), {})
    results = await async_batch(coordinator, call.data["operation"], targets, changes)
    commands: dict[str, JsonValueType] = {serial: dict(item) for serial, item in results.items()}
    return {"commands": commands}


async def _list_commands(call: ServiceCall) -> ServiceResponse:
    coordinator, meter_id = resolve(call.hass, call.data[ATTR_DEVICE_ID])
    require(coordinator, Capability.COMMAND_QUEUE)
    listed = await run(coordinator, coordinator.client.async_list_commands(coordinator.meter(meter_id)))
    commands: list[JsonValueType] = [*listed]
    return {"commands": commands}


WAIT = {vol.Optional("wait"): vol.All(vol.Coerce(int), vol.Range(min=0, max=300))}
# The platform re-sends for 7 days; a longer timeout would outlive everything else about the command.
TIMEOUT = vol.All(cv.time_period, vol.Range(min=timedelta(minutes=1), max=timedelta(days=7)))
WHEN: dict[Any, Any] = {vol.Optional("schedule_time"): cv.datetime, vol.Optional("timeout"): TIMEOUT}
OPTIONAL_REF = {
    vol.Optional("reference"): vol.Match(REFERENCE),
    **WHEN,
    vol.Optional("after"): vol.Match(REFERENCE),
}
SERIAL = {vol.Optional("serial"): vol.Match(REFERENCE)}
QUEUE_SERVICES: dict[str, tuple[Handler, vol.Schema, SupportsResponse]] = {
    "read_price": (_read_price, vol.Schema({**DEVICE, **WAIT, **OPTIONAL_REF}), SupportsResponse.ONLY),
    "get_charge_state": (_get_charge_state, vol.Schema({**DEVICE, **WAIT, **OPTIONAL_REF}), SupportsResponse.ONLY),
    "set_remaining_balance": (
        _set_remaining_balance,
        vol.Schema({**DEVICE, vol.Required("amount"): AMOUNT, **OPTIONAL_REF}),
        SupportsResponse.OPTIONAL,
    ),
    "set_cumulative_volume": (
        _set_cumulative_volume,
        vol.Schema(
            {**DEVICE, vol.Required("standard_volume"): AMOUNT, vol.Optional("working_volume"): AMOUNT, **OPTIONAL_REF}
        ),
        SupportsResponse.OPTIONAL,
    ),
    "release_valve_force": (_release_valve_force, vol.Schema({**DEVICE, **OPTIONAL_REF}), SupportsResponse.OPTIONAL),
    "open_account": (
        _open_account,
        vol.Schema(
            {
                **DEVICE,
                vol.Required("amount"): AMOUNT,
                **TIERS,
                vol.Optional("effective_date"): cv.date,
                **OPTIONAL_REF,
            }
        ),
        SupportsResponse.OPTIONAL,
    ),
    "retry_command": (
        _retry_command,
        vol.Schema({**DEVICE, vol.Required("serial"): cv.string}),
        SupportsResponse.OPTIONAL,
    ),
    "list_commands": (_list_commands, vol.Schema(DEVICE), SupportsResponse.ONLY),
    "set_valve": (
        _set_valve,
        vol.Schema({**DEVICE, vol.Required("position"): vol.In(("open", "close")), **OPTIONAL_REF}),
        SupportsResponse.OPTIONAL,
    ),
    "update_command": (
        _update_command,
        vol.Schema(
            {
                **DEVICE,
                **SERIAL,
                **WHEN,
                vol.Optional("amount"): AMOUNT,
                vol.Optional("standard_volume"): AMOUNT,
                vol.Optional("working_volume"): AMOUNT,
            }
        ),
        SupportsResponse.OPTIONAL,
    ),
    "delete_command": (_delete_command, vol.Schema({**DEVICE, **SERIAL}), SupportsResponse.OPTIONAL),
    "get_command_detail": (_get_command_detail, vol.Schema({**DEVICE, **SERIAL}), SupportsResponse.ONLY),
    "batch_commands": (
        _batch_commands,
        vol.Schema(
            {
                vol.Required(ATTR_DEVICE_ID): vol.All(cv.ensure_list, [cv.string], vol.Length(min=1, max=100)),
                vol.Required("operation"): vol.In(("cancel", "retry", "delete", "update")),
                vol.Optional("serial"): vol.All(cv.ensure_list, [vol.Match(REFERENCE)]),
                **WHEN,
            }
        ),
        SupportsResponse.OPTIONAL,
    ),
}
