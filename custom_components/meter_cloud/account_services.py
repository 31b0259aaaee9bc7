"""Account services: register, modify, suspend/resume, replace, deregister; readings import."""

from __future__ import annotations

import re
from collections.abc import Awaitable
from decimal import Decimal
from typing import Any

import voluptuous as vol
from homeassistant.core import ServiceCall, ServiceResponse, SupportsResponse
from homeassistant.helpers import config_validation as cv

from .account_state import INACTIVE_REASON
from .api import (
    Capability,
    CustomerInfo,
    ImportRecord,
    MeterCloudError,
    MeterRegistration,
    MeterReplacement,
    MeterStatus,
)
from .api.kumir import ARCHIVES
from .coordinator import MeterCloudCoordinator
from .service_helpers import (
    AMOUNT,
    ATTR_CONFIG_ENTRY_ID,
    ATTR_DEVICE_ID,
    DEVICE,
    PRICE_VERSION,
    TIERS,
    Handler,
    admin,
    as_decimal,
    invalid,
    loaded_coordinator,
    price_schedule,
    require,
    resolve,
    run,
)

CUSTOMER_FIELDS = ("user_name", "customer_type", "phone", "address", "room", "building")


async def _account_changed(coordinator: MeterCloudCoordinator) -> None:
    """Show the change now; a backend that follows a meter list stores the new list (and reloads)."""
    key = coordinator.client.meter_list_key
    entry = coordinator.config_entry
    if key is not None:
        new_list = coordinator.client.meter_list()
        if new_list != entry.data.get(key):
            coordinator.hass.config_entries.async_update_entry(entry, data={**entry.data, key: new_list})
            coordinator.hass.config_entries.async_schedule_reload(entry.entry_id)
            return
    await coordinator.async_refresh()


def _customer(data: dict[str, Any]) -> CustomerInfo:
    return CustomerInfo(**{name: data.get(name) for name in CUSTOMER_FIELDS})


@admin
async def _register_meter(call: ServiceCall) -> ServiceResponse:
    coordinator = loaded_coordinator(call.hass, call.data[ATTR_CONFIG_ENTRY_ID])
    require(coordinator, Capability.REGISTER_METER)
    data = dict(call.data)
    price = None
    if "price_1" in data:
        price = price_schedule(
            data,
            coordinator.client.max_price_tiers,
            code=data.get("price_code"),
            version=data.get("price_version"),
            effective_date=data.get("effective_date"),
        )
    registration = MeterRegistration(
        user_no=data["user_no"],
        meter_no=data["meter_no"],
        meter_type=data.get("meter_type"),
        price_code=data.get("price_code"),
        initial_reading=data["initial_reading"],
        billing_mode=data["billing_mode"],
        pay_mode=data["pay_mode"],
        customer=_customer(data),
        meter_id=data.get("meter_id"),
        meter_protocol=data.get("meter_protocol"),
        fire_date=data.get("fire_date"),
        opening_balance=data.get("opening_balance"),
        price=price,
        overdraft=data.get("overdraft"),
        comm_no=data.get("comm_no"),
        init_cycle=data.get("init_cycle"),
    )
    result = await run(coordinator, coordinator.client.async_register_meter(registration))
    coordinator.account_states.learn(str(result["meter_id"]), MeterStatus.OPENED)
    await _account_changed(coordinator)
    return result


@admin
async def _modify_customer(call: ServiceCall) -> ServiceResponse:
    coordinator, meter_id = resolve(call.hass, call.data[ATTR_DEVICE_ID])
    require(coordinator, Capability.MODIFY_CUSTOMER)
    meter = coordinator.meter(meter_id)
    customer = _customer(dict(call.data))
    return await _run_on(coordinator, meter_id, coordinator.client.async_modify_customer(meter, customer))


async def _run_on[T](coordinator: MeterCloudCoordinator, meter_id: str, call: Awaitable[T]) -> T:
    """An account operation on one meter; a refusal because its account is inactive is remembered."""
    try:
        return await call
    except MeterCloudError as err:
        if err.reason == INACTIVE_REASON:
            coordinator.account_states.refused(meter_id)
            coordinator.async_update_meter(meter_id)
        raise coordinator.error_for(err) from err


async def _suspend(call: ServiceCall, suspend: bool) -> ServiceResponse:
    coordinator, meter_id = resolve(call.hass, call.data[ATTR_DEVICE_ID])
    require(coordinator, Capability.SUSPEND_METER)
    meter = coordinator.meter(meter_id)
    result = await _run_on(coordinator, meter_id, coordinator.client.async_suspend_meter(meter, suspend))
    coordinator.account_states.learn(meter_id, MeterStatus.SUSPENDED if suspend else MeterStatus.ACTIVE)
    await coordinator.async_refresh()
    return result


@admin
async def _suspend_meter(call: ServiceCall) -> ServiceResponse:
    return await _suspend(call, True)


@admin
async def _resume_meter(call: ServiceCall) -> ServiceResponse:
    return await _suspend(call, False)


@admin
async def _deregister_meter(call: ServiceCall) -> ServiceResponse:
    coordinator, meter_id = resolve(call.hass, call.data[ATTR_DEVICE_ID])
    require(coordinator, Capability.DEREGISTER_METER)
    meter = coordinator.meter(meter_id)
    reading = call.data.get("reading", meter.reading)
    if reading is None:
        raise invalid("reading_required")
    result = await _run_on(
        coordinator, meter_id, coordinator.client.async_deregister_meter(meter, reading, call.data.get("reason", ""))
    )
    coordinator.account_states.forget(meter_id)
    coordinator.presence.forget(meter_id)  # closed through Home Assistant: no need to wait for the evidence
    await _account_changed(coordinator)
    return result


@admin
async def _replace_meter(call: ServiceCall) -> ServiceResponse:
    coordinator, meter_id = resolve(call.hass, call.data[ATTR_DEVICE_ID])
    require(coordinator, Capability.REPLACE_METER)
    meter = coordinator.meter(meter_id)
    old_reading = call.data.get("old_reading", meter.reading)
    if old_reading is None:
        raise invalid("reading_required")
    replacement = MeterReplacement(
        new_meter_no=call.data["new_meter_no"],
        new_meter_type=call.data["new_meter_type"],
        old_reading=old_reading,
        new_reading=call.data["new_reading"],
        new_meter_id=call.data.get("new_meter_id"),
        new_meter_protocol=call.data.get("new_meter_protocol"),
        transfer_amount=call.data.get("transfer_amount"),
        new_comm_no=call.data.get("new_comm_no"),
    )
    result = await _run_on(coordinator, meter_id, coordinator.client.async_replace_meter(meter, replacement))
    coordinator.account_states.forget(meter_id)
    coordinator.account_states.learn(str(result["meter_id"]), MeterStatus.OPENED)
    coordinator.presence.forget(meter_id)
    await _account_changed(coordinator)
    return result


RECORD_KEYS = ("node", "serial", "device_type", "archive", "system", "timestamp", "values")
# What a `records` item may take from the call's own fields (so one node's readings need naming once).
SHARED_KEYS = ("node", "serial", "device_type", "archive", "system")
MAX_IMPORT_RECORDS = 5000


def _import_records(data: dict[str, Any]) -> list[ImportRecord]:
    """The records of an import call: the call's own record (when it has a time or values) and its `records`.

    A naive time is the account's local time (the zone its archives are read in); the client converts an
    aware one to that zone.
    """
    shared = {key: data[key] for key in SHARED_KEYS if key in data}
    own = "timestamp" in data or "values" in data or "records" not in data
    given: list[tuple[int | None, dict[str, Any]]] = [(None, data)] if own else []
    given += [(index, {**shared, **item}) for index, item in enumerate(data.get("records", []), 1)]
    records: list[ImportRecord] = []
    for index, item in given:
        missing = [key for key in RECORD_KEYS if key != "system" and not item.get(key)]
        if missing:
            where = "" if index is None else f"records[{index}]."
            raise invalid("missing_field", error=", ".join(where + key for key in missing))
        records.append(
            ImportRecord(
                node=item["node"],
                serial=item["serial"],
                device_type=item["device_type"],
                archive=item["archive"],
                system=item.get("system", 1),
                time=item["timestamp"],
                values=item["values"],
            )
        )
    return records


@admin
async def _import_readings(call: ServiceCall) -> ServiceResponse:
    coordinator = loaded_coordinator(call.hass, call.data[ATTR_CONFIG_ENTRY_ID])
    require(coordinator, Capability.IMPORT)
    records = _import_records(dict(call.data))
    # One import.php request for every record: the document groups them by node, archive and system.
    answer = await run(coordinator, coordinator.client.async_import(records))
    await coordinator.async_request_refresh()
    return dict(answer)


def _values(value: Any) -> dict[str, Decimal]:
    """Parameter name → number; names must be XML names (EAi, U_A, ...)."""
    if not isinstance(value, dict):
        raise vol.Invalid("values must be a mapping of parameter name to number")
    found: dict[str, Decimal] = {}
    for name, number in value.items():
        if not isinstance(name, str) or not PARAM_NAME.match(name):
            raise vol.Invalid(f"{name!r} is not a parameter name")
        found[name] = as_decimal(number)
    return found


PARAM_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,63}$")
CUSTOMER: dict[Any, Any] = {vol.Optional(name): cv.string for name in CUSTOMER_FIELDS}
ID = vol.All(cv.string, vol.Length(min=1, max=50))
REASON = vol.All(cv.string, vol.Length(max=100))
# One record of import_readings; every field optional here, as a `records` item takes the call's own.
IMPORT_RECORD: dict[Any, Any] = {
    vol.Optional("node"): ID,
    vol.Optional("serial"): ID,
    vol.Optional("device_type"): vol.All(cv.string, vol.Match(PARAM_NAME)),
    vol.Optional("archive"): vol.In(ARCHIVES),
    vol.Optional("system"): vol.All(vol.Coerce(int), vol.Range(min=0, max=999)),
    vol.Optional("timestamp"): cv.datetime,
    vol.Optional("values"): _values,
}
ACCOUNT_SERVICES: dict[str, tuple[Handler, vol.Schema, SupportsResponse]] = {
    "register_meter": (
        _register_meter,
        vol.Schema(
            {
                vol.Required(ATTR_CONFIG_ENTRY_ID): cv.string,
                vol.Required("user_no"): ID,
                vol.Required("meter_no"): ID,
                vol.Optional("meter_id"): ID,
                vol.Optional("meter_type"): cv.string,
                vol.Optional("meter_protocol"): cv.string,
                vol.Optional("price_code"): vol.All(cv.string, vol.Length(min=1, max=25)),
                vol.Optional("price_version"): PRICE_VERSION,
                vol.Optional("effective_date"): cv.date,
                **{
                    key: value
                    for key, value in TIERS.items()
                    if str(key) not in ("price_4", "price_5", "ladder_3", "ladder_4")
                },
                vol.Optional("initial_reading", default=Decimal(0)): AMOUNT,
                vol.Optional("opening_balance"): AMOUNT,
                vol.Optional("overdraft"): AMOUNT,
                vol.Optional("comm_no"): ID,
                vol.Optional("init_cycle"): AMOUNT,
                vol.Optional("billing_mode", default="1"): vol.In(["1", "2", "3"]),
                vol.Optional("pay_mode", default="1"): vol.In(["1", "2"]),
                vol.Optional("fire_date"): cv.date,
                **CUSTOMER,
            }
        ),
        SupportsResponse.OPTIONAL,
    ),
    "import_readings": (
        _import_readings,
        vol.Schema(
            {
                vol.Required(ATTR_CONFIG_ENTRY_ID): cv.string,
                **IMPORT_RECORD,
                vol.Optional("records"): vol.All(
                    cv.ensure_list, vol.Length(min=1, max=MAX_IMPORT_RECORDS), [vol.Schema(IMPORT_RECORD)]
                ),
            }
        ),
        SupportsResponse.OPTIONAL,
    ),
    "modify_customer": (_modify_customer, vol.Schema({**DEVICE, **CUSTOMER}), SupportsResponse.OPTIONAL),
    "suspend_meter": (_suspend_meter, vol.Schema(DEVICE), SupportsResponse.OPTIONAL),
    "resume_meter": (_resume_meter, vol.Schema(DEVICE), SupportsResponse.OPTIONAL),
    "deregister_meter": (
        _deregister_meter,
        vol.Schema({**DEVICE, vol.Optional("reading"): AMOUNT, vol.Optional("reason"): REASON}),
        SupportsResponse.OPTIONAL,
    ),
    "replace_meter": (
        _replace_meter,
        vol.Schema(
            {
                **DEVICE,
                vol.Required("new_meter_no"): ID,
                vol.Required("new_meter_type"): cv.string,
                vol.Optional("new_meter_id"): ID,
                vol.Optional("new_meter_protocol"): cv.string,
                vol.Optional("old_reading"): AMOUNT,
                vol.Optional("new_reading", default=Decimal(0)): AMOUNT,
                vol.Optional("transfer_amount"): AMOUNT,
                vol.Optional("new_comm_no"): ID,
            }
        ),
        SupportsResponse.OPTIONAL,
    ),
}
