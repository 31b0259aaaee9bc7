"""Services of Meter Cloud, registered once; each checks the target backend's capabilities."""

from __future__ import annotations

import itertools
import re
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from datetime import date
from decimal import Decimal, InvalidOperation
from functools import wraps
from typing import Any

import voluptuous as vol
from homeassistant.config_entries import ConfigEntryState
from homeassistant.core import HomeAssistant, ServiceCall, ServiceResponse, SupportsResponse
from homeassistant.exceptions import ServiceValidationError, Unauthorized
from homeassistant.helpers import config_validation as cv
from homeassistant.helpers import device_registry as dr

from .api import Capability, DailyUsage, MeterCloudError, MeterRegistration, PriceSchedule
from .commands import TrackedCommand
from .compat import device_entry_ids
from .const import DOMAIN
from .coordinator import MeterCloudCoordinator

ATTR_DEVICE_ID = "device_id"
ATTR_CONFIG_ENTRY_ID = "config_entry_id"
MAX_TIERS = 5
REFERENCE = re.compile(r"^[A-Za-z0-9_-]{1,32}$")

type Handler = Callable[[ServiceCall], Coroutine[Any, Any, ServiceResponse]]


def _decimal(value: Any) -> Decimal:
    """A Decimal from a selector's number without float noise (0.1 stays 0.1)."""
    try:
        number = Decimal(str(value).strip())
    except InvalidOperation as err:
        raise vol.Invalid(f"not a number: {value}") from err
    if not number.is_finite():
        raise vol.Invalid(f"not a number: {value}")
    return number


def _invalid(key: str, **placeholders: str) -> ServiceValidationError:
    return ServiceValidationError(translation_domain=DOMAIN, translation_key=key, translation_placeholders=placeholders)


def _text(value: Any) -> str:
    return str(value) if isinstance(value, Decimal) else value  # type: ignore[no-any-return]


def _command_response(command: TrackedCommand) -> dict[str, Any]:
    return {k: _text(v) for k, v in command.as_dict().items()}


def _usage_response(record: DailyUsage) -> dict[str, Any]:
    return {
        "date": record.day.isoformat(),
        "meter_id": record.meter_id,
        "volume": str(record.volume),
        "amount": str(record.amount),
        "price": str(record.price),
    }


def _resolve(hass: HomeAssistant, device_id: str) -> tuple[MeterCloudCoordinator, str]:
    """The coordinator and meter number behind a device."""
    device = dr.async_get(hass).async_get(device_id)
    if device is not None:
        for entry_id in device_entry_ids(device):
            entry = hass.config_entries.async_get_entry(entry_id)
            if entry is None or entry.domain != DOMAIN:
                continue
            if entry.state is not ConfigEntryState.LOADED:
                raise _invalid("entry_not_loaded")
            coordinator: MeterCloudCoordinator = entry.runtime_data
            prefix = f"{coordinator.client.backend}_"
            for domain, ident in device.identifiers:
                if domain == DOMAIN and ident.startswith(prefix):
                    return coordinator, ident.removeprefix(prefix)
    raise _invalid("unknown_device", device_id=device_id)


def _require(coordinator: MeterCloudCoordinator, capability: Capability) -> None:
    if not coordinator.client.supports(capability):
        raise _invalid("not_supported")


def _admin(handler: Handler) -> Handler:
    """Money and account actions: only administrators (automations run without a user)."""

    @wraps(handler)
    async def check(call: ServiceCall) -> ServiceResponse:
        if call.context.user_id:
            user = await call.hass.auth.async_get_user(call.context.user_id)
            if user is None or not user.is_admin:
                raise Unauthorized(context=call.context)
        return await handler(call)

    return check


async def _run[T](coordinator: MeterCloudCoordinator, call: Awaitable[T]) -> T:
    """Await a client call, translating its errors."""
    try:
        return await call
    except MeterCloudError as err:
        raise coordinator.error_for(err) from err


@_admin
async def _recharge(call: ServiceCall) -> ServiceResponse:
    coordinator, meter_id = _resolve(call.hass, call.data[ATTR_DEVICE_ID])
    _require(coordinator, Capability.RECHARGE)
    amount: Decimal = call.data["amount"]
    places = coordinator.client.money_places
    if amount <= 0 or -amount.as_tuple().exponent > places:  # type: ignore[operator]
        raise _invalid("invalid_amount", amount=str(amount), places=str(places))
    reference = call.data.get("reference") or uuid.uuid4().hex[:20]
    command = await coordinator.async_recharge(meter_id, amount.quantize(Decimal(1).scaleb(-places)), reference)
    return _command_response(command)


@_admin
async def _cancel_command(call: ServiceCall) -> ServiceResponse:
    coordinator, meter_id = _resolve(call.hass, call.data[ATTR_DEVICE_ID])
    _require(coordinator, Capability.CANCEL_COMMAND)
    command = await coordinator.async_cancel(meter_id, call.data.get("serial"))
    return _command_response(command)


def _schedule(data: dict[str, Any], max_tiers: int) -> PriceSchedule:
    prices = [data[f"price_{i}"] for i in range(1, MAX_TIERS + 1) if f"price_{i}" in data]
    ladders = [data[f"ladder_{i}"] for i in range(1, MAX_TIERS) if f"ladder_{i}" in data]
    tiers_given = [f"price_{i}" in data for i in range(1, MAX_TIERS + 1)]
    contiguous = tiers_given == sorted(tiers_given, reverse=True)
    if (
        not prices
        or not contiguous
        or len(prices) > max_tiers
        or len(ladders) != len(prices) - 1
        or any(p < 0 for p in prices)
        or any(b <= a for a, b in itertools.pairwise(ladders))
        or any(limit <= 0 for limit in ladders)
    ):
        raise _invalid("invalid_price_schedule", max_tiers=str(max_tiers))
    return PriceSchedule(
        prices=tuple(prices),
        ladder_limits=tuple(ladders),
        code=data.get("price_code"),
        cycle_months=data.get("cycle_months"),
        effective_date=data.get("effective_date"),
        adjust=data["adjust"],
        reset_cycle=data["reset_cycle"],
    )


@_admin
async def _set_price(call: ServiceCall) -> ServiceResponse:
    targets = [_resolve(call.hass, device_id) for device_id in call.data[ATTR_DEVICE_ID]]
    coordinators = {id(c): c for c, _ in targets}
    if len(coordinators) != 1:
        raise _invalid("one_account_only")
    coordinator = targets[0][0]
    _require(coordinator, Capability.SET_PRICE)
    schedule = _schedule(dict(call.data), coordinator.client.max_price_tiers)
    meters = [coordinator.meter(meter_id) for _, meter_id in targets]
    result = await _run(coordinator, coordinator.client.async_set_price(meters, schedule))
    for meter in meters:
        coordinator.refresh_details_soon(meter.meter_id)
    await coordinator.async_refresh()  # the user expects to see the change now
    return result


async def _get_daily_usage(call: ServiceCall) -> ServiceResponse:
    coordinator, meter_id = _resolve(call.hass, call.data[ATTR_DEVICE_ID])
    _require(coordinator, Capability.DAILY_USAGE)
    start: date = call.data["start_date"]
    end: date = call.data["end_date"]
    if end < start:
        raise _invalid("invalid_date_range")
    records = await _run(coordinator, coordinator.client.async_daily_usage(coordinator.meter(meter_id), start, end))
    return {"records": [_usage_response(r) for r in records]}


@_admin
async def _register_meter(call: ServiceCall) -> ServiceResponse:
    entry = call.hass.config_entries.async_get_entry(call.data[ATTR_CONFIG_ENTRY_ID])
    if entry is None or entry.domain != DOMAIN:
        raise _invalid("unknown_entry")
    if entry.state is not ConfigEntryState.LOADED:
        raise _invalid("entry_not_loaded")
    coordinator: MeterCloudCoordinator = entry.runtime_data
    _require(coordinator, Capability.REGISTER_METER)
    data = call.data
    registration = MeterRegistration(
        user_no=data["user_no"],
        meter_no=data["meter_no"],
        meter_type=data["meter_type"],
        price_code=data["price_code"],
        initial_reading=data["initial_reading"],
        billing_mode=data["billing_mode"],
        pay_mode=data["pay_mode"],
        user_name=data.get("user_name"),
        address=data.get("address"),
        phone=data.get("phone"),
        customer_type=data.get("customer_type"),
    )
    result = await _run(coordinator, coordinator.client.async_register_meter(registration))
    await coordinator.async_refresh()  # the user expects to see the change now
    return result


@_admin
async def _deregister_meter(call: ServiceCall) -> ServiceResponse:
    coordinator, meter_id = _resolve(call.hass, call.data[ATTR_DEVICE_ID])
    _require(coordinator, Capability.DEREGISTER_METER)
    meter = coordinator.meter(meter_id)
    reading = call.data.get("reading", meter.reading)
    if reading is None:
        raise _invalid("reading_required")
    result = await _run(coordinator, coordinator.client.async_deregister_meter(meter, reading, call.data["reason"]))
    await coordinator.async_refresh()  # the user expects to see the change now
    return result


@_admin
async def _replace_meter(call: ServiceCall) -> ServiceResponse:
    coordinator, meter_id = _resolve(call.hass, call.data[ATTR_DEVICE_ID])
    _require(coordinator, Capability.REPLACE_METER)
    meter = coordinator.meter(meter_id)
    old_reading = call.data.get("old_reading", meter.reading)
    if old_reading is None:
        raise _invalid("reading_required")
    result = await _run(
        coordinator,
        coordinator.client.async_replace_meter(
            meter,
            new_meter_no=call.data["new_meter_no"],
            new_meter_type=call.data["new_meter_type"],
            old_reading=old_reading,
            new_reading=call.data["new_reading"],
        ),
    )
    await coordinator.async_refresh()  # the user expects to see the change now
    return result


DEVICE: dict[Any, Any] = {vol.Required(ATTR_DEVICE_ID): cv.string}
READING = vol.All(_decimal, vol.Range(min=0))
TIERS: dict[Any, Any] = {
    **{vol.Optional(f"price_{i}"): READING for i in range(1, MAX_TIERS + 1)},
    **{vol.Optional(f"ladder_{i}"): READING for i in range(1, MAX_TIERS)},
}
SERVICES: dict[str, tuple[Handler, vol.Schema, SupportsResponse]] = {
    "recharge": (
        _recharge,
        vol.Schema({**DEVICE, vol.Required("amount"): _decimal, vol.Optional("reference"): vol.Match(REFERENCE)}),
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
                vol.Optional("price_code"): vol.All(cv.string, vol.Length(min=1, max=32)),
                vol.Optional("cycle_months"): vol.All(vol.Coerce(int), vol.Range(min=1, max=120)),
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
    "register_meter": (
        _register_meter,
        vol.Schema(
            {
                vol.Required(ATTR_CONFIG_ENTRY_ID): cv.string,
                vol.Required("user_no"): vol.All(cv.string, vol.Length(min=1, max=17)),
                vol.Required("meter_no"): vol.All(cv.string, vol.Length(min=1, max=32)),
                vol.Required("meter_type"): cv.string,
                vol.Required("price_code"): cv.string,
                vol.Optional("initial_reading", default=Decimal(0)): READING,
                vol.Optional("billing_mode", default="1"): vol.In(["1", "2", "3"]),
                vol.Optional("pay_mode", default="1"): vol.In(["1", "2"]),
                vol.Optional("user_name"): cv.string,
                vol.Optional("address"): cv.string,
                vol.Optional("phone"): cv.string,
                vol.Optional("customer_type"): cv.string,
            }
        ),
        SupportsResponse.OPTIONAL,
    ),
    "deregister_meter": (
        _deregister_meter,
        vol.Schema(
            {
                **DEVICE,
                vol.Optional("reading"): READING,
                vol.Required("reason"): vol.All(cv.string, vol.Length(max=100)),
            }
        ),
        SupportsResponse.OPTIONAL,
    ),
    "replace_meter": (
        _replace_meter,
        vol.Schema(
            {
                **DEVICE,
                vol.Required("new_meter_no"): vol.All(cv.string, vol.Length(min=1, max=32)),
                vol.Required("new_meter_type"): cv.string,
                vol.Optional("old_reading"): READING,
                vol.Optional("new_reading", default=Decimal(0)): READING,
            }
        ),
        SupportsResponse.OPTIONAL,
    ),
}


def async_setup_services(hass: HomeAssistant) -> None:
    """Register every service once, for all entries."""
    for name, (handler, schema, response) in SERVICES.items():
        hass.services.async_register(DOMAIN, name, handler, schema=schema, supports_response=response)
