"""Polls the vendor cloud and applies its pushes; one coordinator per config entry."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from dataclasses import fields, replace
from datetime import timedelta
from decimal import Decimal
from typing import Any

from homeassistant.config_entries import ConfigEntry
from homeassistant.core import HomeAssistant, callback
from homeassistant.exceptions import ConfigEntryAuthFailed, ConfigEntryError
from homeassistant.helpers import device_registry as dr
from homeassistant.helpers.dispatcher import async_dispatcher_send
from homeassistant.helpers.update_coordinator import DataUpdateCoordinator, UpdateFailed
from homeassistant.util import dt as dt_util

from .api import (
    Alarm,
    AuthenticationError,
    Capability,
    CommandError,
    CommandKind,
    CommandResult,
    CommandState,
    ConfigurationError,
    MeterClient,
    MeterCloudError,
    MeterData,
    PushResult,
    ValveState,
)
from .commands import CommandTracker, TrackedCommand
from .compat import detach_device, device_by_identifier
from .const import (
    CONF_DETAILS_INTERVAL,
    CONF_SCAN_INTERVAL,
    DEFAULT_DETAILS_INTERVAL,
    DEFAULT_SCAN_INTERVAL,
    DETAILS_CONCURRENCY,
    DOMAIN,
    EVENT_ALARM,
    PUSH_SERIAL_MEMORY,
)
from .errors import to_ha_error

_LOGGER = logging.getLogger(__name__)

type MeterCloudConfigEntry = ConfigEntry[MeterCloudCoordinator]

VALVE_KINDS = (CommandKind.VALVE_OPEN, CommandKind.VALVE_CLOSE)


def merge(base: MeterData | None, fresh: MeterData) -> MeterData:
    """Overlay the fields `fresh` knows on `base`."""
    if base is None:
        return fresh
    changes = {f.name: value for f in fields(fresh) if (value := getattr(fresh, f.name)) is not None}
    return replace(base, **changes)


def meter_signal(entry_id: str, meter_id: str) -> str:
    """Dispatcher signal for a change to one meter."""
    return f"{DOMAIN}_{entry_id}_{meter_id}_update"


def alarm_signal(entry_id: str, meter_id: str) -> str:
    """Dispatcher signal for a meter's alarms."""
    return f"{DOMAIN}_{entry_id}_{meter_id}_alarm"


class MeterCloudCoordinator(DataUpdateCoordinator[dict[str, MeterData]]):
    """Latest data of every meter of one account."""

    config_entry: MeterCloudConfigEntry
    data: dict[str, MeterData]

    def __init__(self, hass: HomeAssistant, entry: MeterCloudConfigEntry, client: MeterClient) -> None:
        """Set up polling at the entry's interval."""
        super().__init__(
            hass,
            _LOGGER,
            config_entry=entry,
            name=f"{DOMAIN} {entry.title}",
            update_interval=timedelta(minutes=entry.options.get(CONF_SCAN_INTERVAL, DEFAULT_SCAN_INTERVAL)),
        )
        self.client = client
        self.commands = CommandTracker(hass, entry.entry_id)
        self._details: dict[str, MeterData] = {}
        self._details_due: dict[str, float] = {}
        self._details_every = 60 * entry.options.get(CONF_DETAILS_INTERVAL, DEFAULT_DETAILS_INTERVAL)
        self._seen_serials: OrderedDict[str, None] = OrderedDict()
        self.requests_last_poll = 0

    async def _async_setup(self) -> None:
        """Load the command ledger before the first poll."""
        await self.commands.async_load()

    async def _async_update_data(self) -> dict[str, MeterData]:
        """One batch request for all meters, then details for those that are due."""
        try:
            meters = await self.client.async_get_meters()
            requests = 1
            if self.client.supports(Capability.DETAILS):
                requests += await self._refresh_details(meters)
        except AuthenticationError as err:
            raise ConfigEntryAuthFailed(translation_domain=DOMAIN, translation_key="invalid_auth") from err
        except ConfigurationError as err:
            raise ConfigEntryError(
                translation_domain=DOMAIN, translation_key=err.reason, translation_placeholders={"error": str(err)}
            ) from err
        except MeterCloudError as err:
            raise UpdateFailed(
                translation_domain=DOMAIN, translation_key="update_failed", translation_placeholders={"error": str(err)}
            ) from err
        self.requests_last_poll = requests
        data = {meter_id: merge(self._details.get(meter_id), meter) for meter_id, meter in meters.items()}
        self._settle_valves_from(data)
        self.commands.expire(dt_util.utcnow())
        self._remove_vanished(data)
        return data

    async def _refresh_details(self, meters: dict[str, MeterData]) -> int:
        """Fetch details of meters whose details are due, a few at a time; return the request count."""
        now = time.monotonic()
        due = [meter for meter_id, meter in meters.items() if self._details_due.get(meter_id, 0) <= now]
        if not due:
            return 0
        semaphore = asyncio.Semaphore(DETAILS_CONCURRENCY)

        async def fetch(meter: MeterData) -> None:
            async with semaphore:
                try:
                    self._details[meter.meter_id] = await self.client.async_get_details(meter)
                except AuthenticationError:
                    raise
                except MeterCloudError as err:
                    # Keep the last details; the batch reading still updates the meter.
                    _LOGGER.debug("Details of meter %s not refreshed: %s", meter.meter_id, err)
                    return
                self._details_due[meter.meter_id] = now + self._details_every

        await asyncio.gather(*(fetch(meter) for meter in due))
        return len(due)

    def refresh_details_soon(self, meter_id: str) -> None:
        """Make the next poll fetch this meter's details (after a recharge, say)."""
        self._details_due.pop(meter_id, None)

    @callback
    def _remove_vanished(self, data: dict[str, MeterData]) -> None:
        """Detach devices of meters the cloud no longer lists."""
        if not data:
            # An account never loses every meter at once: an empty list is a cloud glitch, and
            # removing devices would throw away the user's entity settings.
            return
        registry = dr.async_get(self.hass)
        known = {f"{self.client.backend}_{meter_id}" for meter_id in data}
        for device in dr.async_entries_for_config_entry(registry, self.config_entry.entry_id):
            ids = {ident for domain, ident in device.identifiers if domain == DOMAIN}
            if ids and not ids & known:
                detach_device(self.hass, device, self.config_entry.entry_id)

    def meter(self, meter_id: str) -> MeterData:
        """A known meter or a translated error."""
        meter = (self.data or {}).get(meter_id)
        if meter is None:
            raise to_ha_error(CommandError(meter_id, reason="unknown_meter"))
        return meter

    # --- pushes -------------------------------------------------------------------------

    def is_replay(self, serial: str) -> bool:
        """Whether this push serial was applied already; remembers it otherwise."""
        if serial in self._seen_serials:
            self._seen_serials.move_to_end(serial)
            return True
        self._seen_serials[serial] = None
        while len(self._seen_serials) > PUSH_SERIAL_MEMORY:
            self._seen_serials.popitem(last=False)
        return False

    @callback
    def async_apply_push(self, push: PushResult) -> None:
        """Apply an authenticated, de-duplicated push."""
        if push.reading is not None:
            self._apply_reading(push.reading)
        if push.command is not None:
            self._apply_command_result(push.command)
        if push.alarm is not None:
            self._apply_alarm(push.alarm)

    def _apply_reading(self, reading: MeterData) -> None:
        current = (self.data or {}).get(reading.meter_id)
        if current is None:
            _LOGGER.debug("Reading pushed for unknown meter %s; polling to discover it", reading.meter_id)
            self.hass.async_create_task(self.async_request_refresh())
            return
        if current.reading_time and reading.reading_time and reading.reading_time < current.reading_time:
            return  # an older reading re-sent late must not roll the meter back
        self._set_meter(merge(current, reading))

    def _set_meter(self, meter: MeterData) -> None:
        # In place, without resetting the poll timer (frequent pushes must not starve polling), and
        # only this meter's entities are told: a push for one meter costs the same for 10 or 1000.
        self.data = {**(self.data or {}), meter.meter_id: meter}
        self.async_update_meter(meter.meter_id)

    @callback
    def async_update_meter(self, meter_id: str) -> None:
        """Tell one meter's entities that its data or commands changed."""
        async_dispatcher_send(self.hass, meter_signal(self.config_entry.entry_id, meter_id))

    def _apply_command_result(self, result: CommandResult) -> None:
        state = CommandState.CONFIRMED if result.success else CommandState.FAILED
        command = self.commands.set_state(result.serial, state)
        if command is None:
            return
        meter = (self.data or {}).get(command.meter_id)
        if command.kind in VALVE_KINDS and result.success and meter is not None:
            target = ValveState.OPEN if command.kind is CommandKind.VALVE_OPEN else ValveState.CLOSED
            self._set_meter(replace(meter, valve=target))
            return
        if command.kind is CommandKind.RECHARGE:
            self.refresh_details_soon(command.meter_id)
        self.async_update_meter(command.meter_id)

    def _apply_alarm(self, alarm: Alarm) -> None:
        device = device_by_identifier(self.hass, (DOMAIN, self.device_key(alarm.meter_id)), self.config_entry.entry_id)
        async_dispatcher_send(self.hass, alarm_signal(self.config_entry.entry_id, alarm.meter_id), alarm)
        self.hass.bus.async_fire(
            EVENT_ALARM,
            {
                "config_entry_id": self.config_entry.entry_id,
                "device_id": device.id if device else None,
                "meter_id": alarm.meter_id,
                "type": alarm.type.value,
                "priority": alarm.priority.value,
                "code": alarm.code,
                "message": alarm.message,
                "time": alarm.time.isoformat() if alarm.time else None,
            },
        )

    def device_key(self, meter_id: str) -> str:
        """The device identifier of a meter (stable, from the vendor's meter number)."""
        return f"{self.client.backend}_{meter_id}"

    # --- commands -----------------------------------------------------------------------

    def _settle_valves_from(self, data: dict[str, MeterData]) -> None:
        """A poll showing the valve where a pending command wanted it confirms that command."""
        for meter_id, meter in data.items():
            command = self.commands.pending(meter_id, VALVE_KINDS)
            if command is None:
                continue
            target = ValveState.OPEN if command.kind is CommandKind.VALVE_OPEN else ValveState.CLOSED
            if meter.valve is target:
                self.commands.set_state(command.serial, CommandState.CONFIRMED)

    def pending_valve(self, meter_id: str) -> CommandKind | None:
        """The valve move under way for a meter, if any."""
        command = self.commands.pending(meter_id, VALVE_KINDS)
        return command.kind if command else None

    async def async_set_valve(self, meter_id: str, open_valve: bool) -> TrackedCommand:
        """Send a valve command and track it until the cloud confirms."""
        meter = self.meter(meter_id)
        serial = self.client.new_serial()
        kind = CommandKind.VALVE_OPEN if open_valve else CommandKind.VALVE_CLOSE
        try:
            await self.client.async_set_valve(meter, open_valve, serial)
        except MeterCloudError as err:
            raise self.error_for(err) from err
        now = dt_util.utcnow()
        command = self.commands.put(TrackedCommand(serial, meter_id, kind, CommandState.PENDING, now, now))
        self.async_update_meter(meter_id)
        return command

    async def async_recharge(self, meter_id: str, amount: Decimal, reference: str) -> TrackedCommand:
        """Send a recharge at most once per reference; a lost answer is never re-sent blindly."""
        meter = self.meter(meter_id)
        serial = self.client.recharge_serial(reference)
        known = self.commands.get(serial)
        if known is not None:
            if known.meter_id != meter_id or known.amount != amount:
                raise to_ha_error(CommandError(reference, reason="reference_conflict"))
            if known.state is not CommandState.UNKNOWN:
                return known  # already sent: answer with what became of it
        now = dt_util.utcnow()
        # On disk before it is on the wire: a crash mid-request leaves an 'unknown' record, not a blank.
        self.commands.put(
            TrackedCommand(serial, meter_id, CommandKind.RECHARGE, CommandState.UNKNOWN, now, now, reference, amount)
        )
        await self.commands.async_flush()
        try:
            await self.client.async_recharge(meter, amount, reference, serial=serial, when=now)
        except MeterCloudError as err:
            if not err.request_sent:
                self.commands.drop(serial)
            elif not err.outcome_unknown:
                self.commands.set_state(serial, CommandState.FAILED, str(err))
            # Otherwise it stays 'unknown': calling again with the same reference re-sends the same serial.
            raise self.error_for(err) from err
        command = self.commands.set_state(serial, CommandState.PENDING)
        await self.commands.async_flush()
        self.async_update_meter(meter_id)
        return command or self.commands.get(serial)  # type: ignore[return-value]

    async def async_cancel(self, meter_id: str, serial: str | None) -> TrackedCommand:
        """Cancel a pending command (the newest of the meter when no serial is given)."""
        meter = self.meter(meter_id)
        command = self.commands.get(serial) if serial else self.commands.pending(meter_id, tuple(CommandKind))
        if command is None or command.meter_id != meter_id or command.state is not CommandState.PENDING:
            raise to_ha_error(CommandError(serial or "", reason="no_pending_command"))
        try:
            await self.client.async_cancel_command(meter, command.serial)
        except MeterCloudError as err:
            raise self.error_for(err) from err
        cancelled = self.commands.set_state(command.serial, CommandState.CANCELLED)
        self.async_update_meter(meter_id)
        return cancelled or command

    def error_for(self, err: MeterCloudError) -> Exception:
        """Translate a client error; refused credentials also start reauthentication."""
        if isinstance(err, AuthenticationError):
            self.config_entry.async_start_reauth(self.hass)
        return to_ha_error(err)

    def diagnostics(self) -> dict[str, Any]:
        """Runtime state for diagnostics."""
        return {
            "requests_last_poll": self.requests_last_poll,
            "details_cached": len(self._details),
            "push_serials_remembered": len(self._seen_serials),
            "commands": [c.as_dict() for c in self.commands.all()],
        }
