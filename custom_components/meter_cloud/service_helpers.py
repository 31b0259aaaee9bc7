"""Pieces every service uses: targets, capability checks, admin checks, number parsing."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Coroutine
from decimal import Decimal, InvalidOperation
from functools import wraps
from itertools import pairwise
from typing import Any

import voluptuous as vol
from homeassistant.config_entries import ConfigEntryState
from homeassistant.core import HomeAssistant, ServiceCall, ServiceResponse
from homeassistant.exceptions import ServiceValidationError, Unauthorized
from homeassistant.helpers import config_validation as cv
from homeassistant.helpers import device_registry as dr

from .api import Capability, MeterCloudError, PriceSchedule
from .commands import TrackedCommand
from .compat import device_entry_ids
from .const import DOMAIN
from .coordinator import MeterCloudCoordinator

ATTR_DEVICE_ID = "device_id"
ATTR_CONFIG_ENTRY_ID = "config_entry_id"
MAX_TIERS = 5

type Handler = Callable[[ServiceCall], Coroutine[Any, Any, ServiceResponse]]


def as_decimal(value: Any) -> Decimal:
    """A Decimal from a selector's number without float noise (0.1 stays 0.1)."""
    try:
        number = Decimal(str(value).strip())
    except InvalidOperation as err:
        raise vol.Invalid(f"not a number: {value}") from err
    if not number.is_finite():
        raise vol.Invalid(f"not a number: {value}")
    return number


DEVICE: dict[Any, Any] = {vol.Required(ATTR_DEVICE_ID): cv.string}
AMOUNT = vol.All(as_decimal, vol.Range(min=0))
# A price's version (Cangnan Version VARCHAR(20), Goldcard 1007 priceVersion).
PRICE_VERSION = vol.All(cv.string, vol.Strip, vol.Length(min=1, max=20))
TIERS: dict[Any, Any] = {
    **{vol.Optional(f"price_{i}"): AMOUNT for i in range(1, MAX_TIERS + 1)},
    **{vol.Optional(f"ladder_{i}"): AMOUNT for i in range(1, MAX_TIERS)},
    vol.Optional("cycle_months"): vol.All(vol.Coerce(int), vol.Range(min=1, max=120)),
}


def invalid(key: str, **placeholders: str) -> ServiceValidationError:
    """A translated validation error."""
    return ServiceValidationError(translation_domain=DOMAIN, translation_key=key, translation_placeholders=placeholders)


def command_response(command: TrackedCommand) -> dict[str, Any]:
    """A tracked command as a service response."""
    return {k: str(v) if isinstance(v, Decimal) else v for k, v in command.as_dict().items()}


def loaded_coordinator(hass: HomeAssistant, entry_id: str) -> MeterCloudCoordinator:
    """The coordinator of a loaded entry of ours."""
    entry = hass.config_entries.async_get_entry(entry_id)
    if entry is None or entry.domain != DOMAIN:
        raise invalid("unknown_entry")
    if entry.state is not ConfigEntryState.LOADED:
        raise invalid("entry_not_loaded")
    coordinator: MeterCloudCoordinator = entry.runtime_data
    return coordinator


def resolve(hass: HomeAssistant, device_id: str) -> tuple[MeterCloudCoordinator, str]:
    """The coordinator and meter number behind a device."""
    device = dr.async_get(hass).async_get(device_id)
    if device is not None:
        for entry_id in device_entry_ids(device):
            entry = hass.config_entries.async_get_entry(entry_id)
            if entry is None or entry.domain != DOMAIN:
                continue
            coordinator = loaded_coordinator(hass, entry_id)
            prefix = f"{coordinator.client.backend}_"
            for domain, ident in device.identifiers:
                if domain == DOMAIN and ident.startswith(prefix):
                    return coordinator, ident.removeprefix(prefix)
    raise invalid("unknown_device", device_id=device_id)


def require(coordinator: MeterCloudCoordinator, capability: Capability, meter_id: str | None = None) -> None:
    """Refuse clearly, with the reason, when the backend (or this one device) cannot do it."""
    meter = (coordinator.data or {}).get(meter_id) if meter_id is not None else None
    client = coordinator.client
    if not client.supports(capability) or (meter is not None and not client.supports_for(capability, meter)):
        raise invalid(client.unsupported_reason(capability, meter))


def admin(handler: Handler) -> Handler:
    """Money and account actions: only administrators (automations run without a user)."""

    @wraps(handler)
    async def check(call: ServiceCall) -> ServiceResponse:
        if call.context.user_id:
            user = await call.hass.auth.async_get_user(call.context.user_id)
            if user is None or not user.is_admin:
                raise Unauthorized(context=call.context)
        return await handler(call)

    return check


async def run[T](coordinator: MeterCloudCoordinator, call: Awaitable[T]) -> T:
    """Await a client call, translating its errors."""
    try:
        return await call
    except MeterCloudError as err:
        raise coordinator.error_for(err) from err


def price_schedule(data: dict[str, Any], max_tiers: int, **extra: Any) -> PriceSchedule:
    """Tiers from price_1..5 / ladder_1..4, checked: contiguous, one limit fewer, increasing."""
    given = [f"price_{i}" in data for i in range(1, MAX_TIERS + 1)]
    prices = [data[f"price_{i}"] for i in range(1, MAX_TIERS + 1) if f"price_{i}" in data]
    ladders = [data[f"ladder_{i}"] for i in range(1, MAX_TIERS) if f"ladder_{i}" in data]
    if (
        not prices
        or given != sorted(given, reverse=True)
        or len(prices) > max_tiers
        or len(ladders) != len(prices) - 1
        or any(limit <= 0 for limit in ladders)
        or any(b <= a for a, b in pairwise(ladders))
    ):
        raise invalid("invalid_price_schedule", max_tiers=str(max_tiers))
    return PriceSchedule(
        prices=tuple(prices), ladder_limits=tuple(ladders), cycle_months=data.get("cycle_months"), **extra
    )
