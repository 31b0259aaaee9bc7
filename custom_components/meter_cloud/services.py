"""Services of Meter Cloud, registered once; each checks the target backend's capabilities."""

from __future__ import annotations

import re
import uuid
from datetime import date
from decimal import Decimal
from typing import Any, cast

import voluptuous as vol
from homeassistant.core import HomeAssistant, ServiceCall, ServiceResponse, SupportsResponse
from homeassistant.helpers import config_validation as cv

from .account_services import ACCOUNT_SERVICES
from .api import Capability, CommandKind, DailyUsage
from .const import DOMAIN
from .queue_services import QUEUE_SERVICES
from .service_helpers import (
    ATTR_DEVICE_ID,
    DEVICE,
    PRICE_VERSION,
    TIERS,
    Handler,
    admin,
    as_decimal,
    command_response,
    invalid,
    price_schedule,
    require,
    resolve,
    run,
)

REFERENCE = re.compile(r"^[A-Za-z0-9_-]{1,32}$")
BALANCE_KINDS = {"credit": CommandKind.BALANCE_CREDIT, "deduct": CommandKind.BALANCE_DEDUCT}


def _usage_response(record: DailyUsage) -> dict[str, Any]:
    return {
        "date": record.day.isoformat(),
        "meter_id": record.meter_id,
        "volume": str(record.volume),
        "amount": str(record.amount),
        "price": str(record.price),
    }


async def _money(call: ServiceCall, capability: Capability, kind: CommandKind) -> ServiceResponse:
    coordinator, meter_id = resolve(call.hass, call.data[ATTR_DEVICE_ID])
    require(coordinator, capability, meter_id)
    amount: Decimal = call.data["amount"]
    places = coordinator.client.money_places
    # as_decimal lets finite numbers only through: their exponent is an int (NaN's and Infinity's are letters).
    exponent = cast(int, amount.as_tuple().exponent)
    if amount <= 0 or -exponent > places:
        raise invalid("invalid_amount", amount=str(amount), places=str(places))
    reference = call.data.get("reference") or uuid.uuid4().hex[:20]
    amount = amount.quantize(Decimal(1).scaleb(-places))
    return command_response(await coordinator.actions.async_money(meter_id, kind, amount, reference))


@admin
async def _recharge(call: ServiceCall) -> ServiceResponse:
    return await _money(call, Capability.RECHARGE, CommandKind.RECHARGE)


@admin
async def _adjust_balance(call: ServiceCall) -> ServiceResponse:
    return await _money(call, Capability.ADJUST_BALANCE, BALANCE_KINDS[call.data["operation"]])


@admin
async def _cancel_command(call: ServiceCall) -> ServiceResponse:
    coordinator, meter_id = resolve(call.hass, call.data[ATTR_DEVICE_ID])
    require(coordinator, Capability.CANCEL_COMMAND, meter_id)
    return command_response(await coordinator.actions.async_cancel(meter_id, call.data.get("serial")))


@admin
async def _set_price(call: ServiceCall) -> ServiceResponse:
    targets = [resolve(call.hass, device_id) for device_id in call.data[ATTR_DEVICE_ID]]
    if len({id(coordinator) for coordinator, _ in targets}) != 1:
        raise invalid("one_account_only")
    coordinator = targets[0][0]
    require(coordinator, Capability.SET_PRICE)
    schedule = price_schedule(
        dict(call.data),
        coordinator.client.max_price_tiers,
        code=call.data.get("price_code"),
        version=call.data.get("price_version"),
        effective_date=call.data.get("effective_date"),
        adjust=call.data["adjust"],
        reset_cycle=call.data["reset_cycle"],
    )
    meters = [coordinator.meter(meter_id) for _, meter_id in targets]
    result = await run(coordinator, coordinator.client.async_set_price(meters, schedule))
    for meter in meters:
        coordinator.refresh_details_soon(meter.meter_id)
    await coordinator.async_refresh()  # the user expects to see the change now
    return result


async def _get_daily_usage(call: ServiceCall) -> ServiceResponse:
    coordinator, meter_id = resolve(call.hass, call.data[ATTR_DEVICE_ID])
    require(coordinator, Capability.DAILY_USAGE)
    start: date = call.data["start_date"]
    end: date = call.data["end_date"]
    if end < start:
        raise invalid("invalid_date_range")
    records = await run(coordinator, coordinator.client.async_daily_usage(coordinator.meter(meter_id), start, end))
    return {"records": [_usage_response(r) for r in records]}


MONEY_SCHEMA: dict[Any, Any] = {
    **DEVICE,
    vol.Required("amount"): as_decimal,
    vol.Optional("reference"): vol.Match(REFERENCE),
}
SERVICES: dict[str, tuple[Handler, vol.Schema, SupportsResponse]] = {
    "recharge": (_recharge, vol.Schema(MONEY_SCHEMA), SupportsResponse.OPTIONAL),
    "adjust_balance": (
        _adjust_balance,
        vol.Schema({**MONEY_SCHEMA, vol.Required("operation"): vol.In(list(BALANCE_KINDS))}),
        SupportsResponse.OPTIONAL,
    ),
    "cancel_command": (
        _cancel_command,
        vol.Schema({**DEVICE, vol.Optional("serial"): cv.string}),
        SupportsResponse.OPTIONAL,
    ),
    "set_price": (
        _set_price,
        vol.Schema(
            {
                vol.Required(ATTR_DEVICE_ID): vol.All(cv.ensure_list, [cv.string], vol.Length(min=1)),
                **TIERS,
                vol.Optional("price_code"): vol.All(cv.string, vol.Length(min=1, max=25)),
                vol.Optional("price_version"): PRICE_VERSION,
                vol.Optional("effective_date"): cv.date,
                vol.Optional("adjust", default=False): cv.boolean,
                vol.Optional("reset_cycle", default=False): cv.boolean,
            }
        ),
        SupportsResponse.OPTIONAL,
    ),
    "get_daily_usage": (
        _get_daily_usage,
        vol.Schema({**DEVICE, vol.Required("start_date"): cv.date, vol.Required("end_date"): cv.date}),
        SupportsResponse.ONLY,
    ),
    **ACCOUNT_SERVICES,
    **QUEUE_SERVICES,
}


def async_setup_services(hass: HomeAssistant) -> None:
    """Register every service once, for all entries."""
    for name, (handler, schema, response) in SERVICES.items():
        hass.services.async_register(
            DOMAIN,
            name,
            handler,
            # Home Assistant 2026.9+ annotates probatio's Schema (what `import voluptuous` is at run time), mypy
            # reads the voluptuous package; 2025.4 annotates voluptuous' Schema, so the ignore is unused there.
            schema=schema,  # type: ignore[arg-type, unused-ignore]
            supports_response=response,
        )
