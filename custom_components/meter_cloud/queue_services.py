"""Services of backends with a command queue: reads that return results, settings, queue management."""

from __future__ import annotations

import re
from datetime import date
from typing import Any

import voluptuous as vol
from homeassistant.core import ServiceCall, ServiceResponse, SupportsResponse
from homeassistant.helpers import config_validation as cv
from homeassistant.util.json import JsonValueType

from .api import Capability, CommandKind
from .service_helpers import (
    AMOUNT,
    ATTR_DEVICE_ID,
    DEVICE,
    TIERS,
    Handler,
    admin,
    command_response,
    price_schedule,
    require,
    resolve,
    run,
)

REFERENCE = re.compile(r"^[A-Za-z0-9_-]{1,32}$")
DEFAULT_WAIT = 30


async def _queue(
    call: ServiceCall, capability: Capability, kind: CommandKind, params: dict[str, Any], *, wait: bool
) -> ServiceResponse:
    coordinator, meter_id = resolve(call.hass, call.data[ATTR_DEVICE_ID])
    require(coordinator, capability, meter_id)
    command = await coordinator.actions.async_queue(meter_id, kind, params, call.data.get("reference"))
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


async def _list_commands(call: ServiceCall) -> ServiceResponse:
    coordinator, meter_id = resolve(call.hass, call.data[ATTR_DEVICE_ID])
    require(coordinator, Capability.COMMAND_QUEUE)
    listed = await run(coordinator, coordinator.client.async_list_commands(coordinator.meter(meter_id)))
    commands: list[JsonValueType] = [*listed]
    return {"commands": commands}


WAIT = {vol.Optional("wait"): vol.All(vol.Coerce(int), vol.Range(min=0, max=300))}
OPTIONAL_REF = {vol.Optional("reference"): vol.Match(REFERENCE)}
QUEUE_SERVICES: dict[str, tuple[Handler, vol.Schema, SupportsResponse]] = {
    "read_price": (_read_price, vol.Schema({**DEVICE, **WAIT}), SupportsResponse.ONLY),
    "get_charge_state": (_get_charge_state, vol.Schema({**DEVICE, **WAIT}), SupportsResponse.ONLY),
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
}
