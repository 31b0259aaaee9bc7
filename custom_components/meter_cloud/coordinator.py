"""Polls the vendor cloud and applies its pushes; one coordinator per config entry."""

from __future__ import annotations

import asyncio
import logging
import operator
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields, replace
from datetime import datetime, timedelta
from functools import partial
from typing import Any, override

from homeassistant.config_entries import ConfigEntry
from homeassistant.core import CALLBACK_TYPE, HomeAssistant, callback
from homeassistant.exceptions import ConfigEntryAuthFailed, ConfigEntryError, HomeAssistantError
from homeassistant.helpers.aiohttp_client import async_get_clientsession
from homeassistant.helpers.dispatcher import async_dispatcher_send
from homeassistant.helpers.update_coordinator import DataUpdateCoordinator, UpdateFailed
from homeassistant.util import dt as dt_util

from .account_state import AccountStates
from .actions import MeterActions
from .api import (
    BACKENDS,
    Alarm,
    AuthenticationError,
    Capability,
    CommandError,
    CommandKind,
    CommandState,
    ConfigurationError,
    MeterClient,
    MeterCloudError,
    MeterData,
    MeterStatus,
    PushResult,
)
from .commands import Change, CommandTracker, TrackedCommand
from .compat import device_by_identifier
from .const import (
    CONF_BACKEND,
    CONF_DETAILS_INTERVAL,
    CONF_SCAN_INTERVAL,
    DEFAULT_DETAILS_INTERVAL,
    DEFAULT_SCAN_INTERVAL,
    DETAILS_CONCURRENCY,
    DOMAIN,
    EVENT_ALARM,
    EVENT_COMMAND_RESULT,
    EVENT_DEVICE_EVENT,
    PUSH_SERIAL_MEMORY,
)
from .errors import to_ha_error
from .foresight import Foresight
from .health import PushHealth
from .presence import Presence

_LOGGER = logging.getLogger(__name__)
# Alarm catch-up re-reads a little before where it stopped: records can arrive late; keys de-duplicate.
ALARM_OVERLAP = timedelta(minutes=10)
# Alarms kept per meter whose device does not exist yet.
ORPHAN_ALARMS_KEPT = 20
# Commands whose failure is worth a warning in the log (a valve that did not move, money that did not arrive).
WATCHED_KINDS = frozenset(
    {
        CommandKind.VALVE_OPEN,
        CommandKind.VALVE_CLOSE,
        CommandKind.RECHARGE,
        CommandKind.BALANCE_CREDIT,
        CommandKind.BALANCE_DEDUCT,
    }
)

type MeterCloudConfigEntry = ConfigEntry[MeterCloudCoordinator]


async def async_build_client(hass: HomeAssistant, data: Mapping[str, Any]) -> MeterClient:
    """The client of an account's settings, in the vendor's zone (or Home Assistant's when it has none).

    Raises ConfigurationError for settings the client cannot use.
    """
    client_cls = BACKENDS[data[CONF_BACKEND]].client
    name = client_cls.timezone_for(data) or hass.config.time_zone
    tz = await dt_util.async_get_time_zone(name) or dt_util.UTC
    return client_cls(async_get_clientsession(hass), data, tz=tz)


# MeterData's fields, once (merge runs for every changed meter of a poll and every push).
_METER_FIELDS = tuple(f.name for f in fields(MeterData))


def merge(base: MeterData | None, fresh: MeterData) -> MeterData:
    """Overlay the fields `fresh` knows on `base`."""
    if base is None:
        return fresh
    return MeterData(
        **{name: getattr(base, name) if (value := getattr(fresh, name)) is None else value for name in _METER_FIELDS}
    )


def meter_signal(entry_id: str, meter_id: str) -> str:
    """Dispatcher signal for a change to one meter."""
    return f"{DOMAIN}_{entry_id}_{meter_id}_update"


def alarm_signal(entry_id: str, meter_id: str) -> str:
    """Dispatcher signal for a meter's alarms."""
    return f"{DOMAIN}_{entry_id}_{meter_id}_alarm"


@dataclass(frozen=True, slots=True)
class MeterContext:
    """The listener context of a meter's entities: woken by a poll only when that meter changed."""

    meter_id: str


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
            # A poll that changed nothing (same meter objects, same success) wakes no listener at all.
            always_update=False,
        )
        self.client = client
        # Entities' listeners by meter (MeterContext), behind one listener of the coordinator's own (_wake_meters);
        # what the last wake-up saw: the meters and whether the poll succeeded.
        self._meter_listeners: dict[str, dict[object, CALLBACK_TYPE]] = {}
        self._meters_unsub: CALLBACK_TYPE | None = None
        self._woken: dict[str, MeterData] = {}
        self._woken_success: bool | None = None
        self.commands = CommandTracker(hass, entry.entry_id)
        self.commands.listener = self._announce
        self.actions = MeterActions(self, self.commands)
        self.account_states = AccountStates(
            self.commands.meta,
            partial(self.commands.save_meta, feeds_meters=True),
            self._account_state_changed,
            enabled=client.learns_account_state,
        )
        self.presence = Presence(self)
        self.health = PushHealth(self)
        self.foresight = Foresight(hass, self)
        # Alarms of meters whose device does not exist yet, handed to the meter's event entity when it appears.
        self._orphan_alarms: dict[str, list[Alarm]] = {}
        # When a push last asked for a discovery poll (monotonic; None: never — a machine that booted a minute ago
        # has a monotonic clock of about 60, so no number stands for "long ago").
        self._discovery_requested: float | None = None
        self._details: dict[str, MeterData] = {}
        self._details_due: dict[str, float] = {}
        # The earliest of those: before it, no meter's details are due (_refresh_details).
        self._details_next = 0.0
        self._details_every = 60 * entry.options.get(CONF_DETAILS_INTERVAL, DEFAULT_DETAILS_INTERVAL)
        self._seen_serials: OrderedDict[str, None] = OrderedDict()
        self.requests_last_poll = 0
        # The last poll's inputs, client meters and combined result (_combined_all); details refreshed count up.
        self._last_combined: tuple[tuple[int, int], dict[str, MeterData], dict[str, MeterData]] | None = None
        self._details_revision = 0
        # Per meter: what its last combined data was made of, and that data (_combined).
        self._combined_memo: dict[
            str, tuple[MeterData, MeterData | None, MeterStatus | None, tuple[Any, ...] | None, MeterData]
        ] = {}

    @callback
    @override
    def async_add_listener(self, update_callback: CALLBACK_TYPE, context: Any = None) -> Callable[[], None]:
        """A meter's entity (MeterContext) joins its meter's listeners; anything else listens to every update."""
        if not isinstance(context, MeterContext):
            return super().async_add_listener(update_callback, context)
        listeners = self._meter_listeners.setdefault(context.meter_id, {})
        token = object()
        listeners[token] = update_callback
        if self._meters_unsub is None:
            self._meters_unsub = super().async_add_listener(self._wake_meters)
            # Entities write their first state from the data of now.
            self._woken, self._woken_success = dict(self.data or {}), self.last_update_success

        @callback
        def remove() -> None:
            listeners.pop(token, None)
            if not listeners and self._meter_listeners.get(context.meter_id) is listeners:
                del self._meter_listeners[context.meter_id]
            if not self._meter_listeners and self._meters_unsub is not None:
                self._meters_unsub()
                self._meters_unsub = None

        return remove

    @callback
    def _wake_meters(self) -> None:
        """Wake the entities of meters whose data changed since the last wake-up (all of them when the poll's
        success changed): a poll that changed 100 of 1000 meters calls 100 meters' entities, not every entity."""
        data = self.data or {}
        everyone = self.last_update_success is not self._woken_success
        woken = self._woken
        self._woken, self._woken_success = dict(data), self.last_update_success
        for meter_id, listeners in list(self._meter_listeners.items()):
            if everyone or data.get(meter_id) is not woken.get(meter_id):
                for update_callback in list(listeners.values()):
                    try:
                        update_callback()
                    except Exception:
                        _LOGGER.exception("Unexpected error updating the entities of meter %s", meter_id)

    @override
    async def _async_setup(self) -> None:
        """Load the command ledger before the first poll."""
        await self.commands.async_load()
        self.client.attach_store(self.commands.meta.setdefault("client", {}), self.commands.save_meta)

    @override
    async def _async_update_data(self) -> dict[str, MeterData]:
        """One batch request for all meters, then details for those that are due."""
        sent_before = self.client.request_count
        try:
            meters = await self.client.async_get_meters()
            if self.client.supports(Capability.DETAILS):
                await self._refresh_details(meters)
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
        data = self._combined_all(meters)
        try:
            await self._catch_up()
        except AuthenticationError as err:
            # The queue asks with a fresh login when the token died; a refused login means new credentials.
            raise ConfigEntryAuthFailed(translation_domain=DOMAIN, translation_key="invalid_auth") from err
        self.requests_last_poll = self.client.request_count - sent_before
        self.actions.settle_all(data)
        expired = self.commands.expire(dt_util.utcnow())
        # An unchanged meter keeps its very object: its entities see that and write nothing (entity.py).
        previous = self.data or {}
        for meter_id, meter in data.items():
            if (old := previous.get(meter_id)) is not None and old is not meter and old == meter:
                data[meter_id] = old
        for meter_id in expired:
            if meter_id in data and data[meter_id] is previous.get(meter_id):
                # Only its commands changed (expired): its entities would not see it in a listener update.
                self.async_update_meter(meter_id)
        self.presence.after_poll(data)
        for meter_id in set(self._orphan_alarms) - set(data):
            _LOGGER.debug("Alarms for meter %s dropped: the account does not list it", meter_id)
            del self._orphan_alarms[meter_id]
        return data

    async def _catch_up(self) -> None:
        """Command states and missed alarms, for backends that can be asked; never fails the poll."""
        try:
            if self.client.supports(Capability.COMMAND_QUEUE):
                await self.actions.async_poll_queue()
            if self.client.supports(Capability.ALARM_HISTORY):
                await self._catch_up_alarms()
        except AuthenticationError:
            raise
        except MeterCloudError as err:
            _LOGGER.debug("Catch-up of commands or alarms skipped this poll: %s", err)

    async def _catch_up_alarms(self) -> None:
        """Alarms and events recorded while we were not listening (restart, push outage)."""
        now = dt_util.utcnow()
        since_text = self.commands.meta.get("alarms_since")
        if since_text is None:
            # First run: history before Home Assistant knew the meters is not replayed into automations.
            self.commands.meta["alarms_since"] = now.isoformat()
            self.commands.save_meta()
            return
        since = datetime.fromisoformat(since_text) - ALARM_OVERLAP
        for alarm in await self.client.async_alarms_since(since):
            self.async_handle_alarm(alarm)
        self.commands.meta["alarms_since"] = now.isoformat()
        self.commands.save_meta()

    async def _refresh_details(self, meters: dict[str, MeterData]) -> None:
        """Fetch details of meters whose details are due, a few at a time."""
        now = time.monotonic()
        if now < self._details_next and meters.keys() <= self._details_due.keys():
            return  # none due (a steady poll of 1000 meters looks at none of them)
        due = [meter for meter_id, meter in meters.items() if self._details_due.get(meter_id, 0) <= now]
        if not due:
            self._details_next = min(self._details_due.values(), default=0.0)
            return
        semaphore = asyncio.Semaphore(DETAILS_CONCURRENCY)

        async def fetch(meter: MeterData) -> None:
            async with semaphore:
                try:
                    self._details[meter.meter_id] = await self.client.async_get_details(meter)
                    self._details_revision += 1
                except AuthenticationError:
                    raise
                except MeterCloudError as err:
                    # Keep the last details; the batch reading still updates the meter.
                    _LOGGER.debug("Details of meter %s not refreshed: %s", meter.meter_id, err)
                    return
                self._details_due[meter.meter_id] = now + self._details_every

        await asyncio.gather(*(fetch(meter) for meter in due))
        self._details_next = min(self._details_due.values(), default=0.0)

    def _combined_all(self, meters: dict[str, MeterData]) -> dict[str, MeterData]:
        """Every polled meter combined (_combined). While neither the ledger (commands, account states) nor any
        details changed since the last poll, a meter the client handed back as the very same object is the last
        poll's result outright (all of them at once when every one is): a poll that changed 100 of 1000 meters
        combines those 100."""
        last = self._last_combined
        revisions = (self.commands.revision, self._details_revision)
        last_fresh: dict[str, MeterData] = {}
        last_data: dict[str, MeterData] = {}
        if last is not None and last[0] == revisions:
            last_fresh, last_data = last[1], last[2]
            if meters.keys() == last_fresh.keys() and all(map(operator.is_, meters.values(), last_fresh.values())):
                return dict(last_data)
        valve_commands: dict[str, TrackedCommand] | None = None
        data: dict[str, MeterData] = {}
        for meter_id, meter in meters.items():
            if last_fresh.get(meter_id) is meter:
                data[meter_id] = last_data[meter_id]
                continue
            if valve_commands is None:
                valve_commands = self.actions.latest_valve_commands()
            data[meter_id] = self._combined(meter, valve_commands)
        # Taken after combining: learning a platform's account state there saves the ledger.
        self._last_combined = ((self.commands.revision, self._details_revision), meters, dict(data))
        return data

    def _combined(self, fresh: MeterData, valve_commands: dict[str, TrackedCommand]) -> MeterData:
        """A polled meter with its details, account state and confirmed valve moves: the last poll's very object
        when none of these changed (the client hands back the same object for an unchanged row)."""
        meter_id = fresh.meter_id
        command = valve_commands.get(meter_id)
        details = self._details.get(meter_id)
        status = self.account_states.known(meter_id)
        moved = None if command is None else (command.serial, command.state, command.updated)
        memo = self._combined_memo.get(meter_id)
        # Spelled out rather than a loop over a tuple: this runs for every meter of every poll.
        if memo is not None:
            was_fresh, was_details, was_status, was_moved, combined = memo
            if (
                (was_fresh is fresh or was_fresh == fresh)
                and (was_details is details or was_details == details)
                and was_status is status
                and was_moved == moved
            ):
                return combined
        meter = self.actions.reconcile(merge(details, self._fresh(fresh)), valve_commands)
        self._combined_memo[meter_id] = (fresh, details, status, moved, meter)
        return meter

    def _fresh(self, meter: MeterData) -> MeterData:
        """What the cloud just said of a meter, with the account state the entry knows if the cloud said none."""
        return self.account_states.apply(meter)

    def _account_state_changed(self, meter_id: str) -> None:
        """The entry learned a meter's account state (an operation, a refusal): show it now."""
        if (meter := (self.data or {}).get(meter_id)) is not None:
            self.set_meter(replace(meter, status=self.account_states.known(meter_id)))

    def refresh_meter_soon(self, meter_id: str) -> None:
        """Read one device again after a command took effect (backends that can read one alone)."""
        if self.client.supports(Capability.SINGLE_READ):
            self.config_entry.async_create_background_task(
                self.hass, self._refresh_meter(meter_id), f"{DOMAIN} refresh {meter_id}"
            )

    async def _refresh_meter(self, meter_id: str) -> None:
        try:
            fresh = await self.client.async_get_meter(meter_id)
        except MeterCloudError as err:
            _LOGGER.debug("Could not read %s after its command: %s", meter_id, err)
            return
        current = (self.data or {}).get(meter_id)
        if fresh is not None and current is not None:
            meter = self.actions.reconcile(merge(current, self._fresh(fresh)))
            self.actions.settle_from(meter)
            self.set_meter(meter)

    def refresh_details_soon(self, meter_id: str) -> None:
        """Make the next poll fetch this meter's details (after a recharge, say)."""
        self._details_due.pop(meter_id, None)
        self._details_next = 0.0

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
    def async_apply_push(self, push: PushResult, *, replay: bool = False) -> None:
        """Apply an authenticated push; a replayed one's reading and alarm are not applied twice.

        Command results are always applied: the lifecycle ignores a repeat of a settled result, and a
        retried command's new result may be word for word its first one (IoT Report).
        """
        if push.reading is not None and not replay:
            self._apply_reading(push.reading)
        for result in (push.command, *push.commands):
            if result is not None:
                self.actions.apply_result(result)
        if push.alarm is not None and not replay:
            self.async_handle_alarm(push.alarm)

    @callback
    def _announce(self, change: Change) -> None:
        """A command reached a state users hear of: a bus event for automations, a log line when it went wrong."""
        command = change.command
        device = device_by_identifier(
            self.hass, (DOMAIN, self.device_key(command.meter_id)), self.config_entry.entry_id
        )
        self.hass.bus.async_fire(
            EVENT_COMMAND_RESULT,
            {
                "config_entry_id": self.config_entry.entry_id,
                "device_id": device.id if device else None,
                "meter_id": command.meter_id,
                "command": command.kind.value,
                "state": command.state.value,
                "previous_state": change.previous.value if change.previous else None,
                "reference": command.reference,
                "serial": command.serial,
                "amount": None if command.amount is None else str(command.amount),
                "code": command.code,
                "reason": command.reason,
                "message": command.message,
            },
        )
        what = command.kind.value.replace("_", " ")
        if change.overrides:
            _LOGGER.warning(
                "%s %s of meter %s was %s, but the cloud now reports it carried out: confirmed (%s)",
                what,
                command.reference or command.serial,
                command.meter_id,
                change.previous,
                command.message,
            )
        elif command.state in (CommandState.FAILED, CommandState.UNKNOWN) and command.kind in WATCHED_KINDS:
            _LOGGER.warning(
                "%s %s of meter %s %s: %s",
                what.capitalize(),
                command.reference or command.serial,
                command.meter_id,
                "failed" if command.state is CommandState.FAILED else "has an unknown outcome",
                command.message or command.code or "no reason given",
            )

    def _apply_reading(self, reading: MeterData) -> None:
        current = (self.data or {}).get(reading.meter_id)
        if current is None:
            if not self._may_be_ours(reading.meter_id):
                return
            if self.client.followed() is not None:
                # A listed meter the last poll missed: the push is evidence it is back.
                self.set_meter(self.actions.reconcile(self._fresh(reading)))
                return
            self._discover_soon(reading.meter_id)
            return
        if current.reading_time and reading.reading_time and reading.reading_time < current.reading_time:
            return  # an older reading re-sent late must not roll the meter back
        meter = self.actions.reconcile(merge(current, self._fresh(reading)))
        self.actions.settle_from(meter)
        self.set_meter(meter)

    def set_meter(self, meter: MeterData) -> None:
        """Replace one meter's data and tell its entities."""
        # In place, without resetting the poll timer (frequent pushes must not starve polling), and
        # only this meter's entities are told: a push for one meter costs the same for 10 or 1000.
        self.data = {**(self.data or {}), meter.meter_id: meter}
        if self._woken_success is not None:
            self._woken[meter.meter_id] = meter  # its entities are written now, as a wake-up would
        self.async_update_meter(meter.meter_id)

    @callback
    def async_update_meter(self, meter_id: str) -> None:
        """Tell one meter's entities that its data or commands changed."""
        async_dispatcher_send(self.hass, meter_signal(self.config_entry.entry_id, meter_id))

    @callback
    def async_handle_alarm(self, alarm: Alarm) -> None:
        """Fire an alarm once, however often it is pushed or fetched."""
        if alarm.key is not None and self.is_replay(f"alarm:{alarm.key}"):
            return
        self.apply_alarm(alarm)

    def _may_be_ours(self, meter_id: str) -> bool:
        """Whether a push about a meter this entry does not show may concern it (a listed or a new meter)."""
        followed = self.client.followed()
        if followed is not None and meter_id not in followed:
            # Chapter 6 pushes every meter of the company; a list-following entry cannot discover by polling.
            _LOGGER.debug("Push for meter %s, which this entry does not follow: acknowledged and dropped", meter_id)
            return False
        return True

    def _discover_soon(self, meter_id: str) -> None:
        """Poll to discover a new meter, at most once per scan interval however many pushes ask."""
        now = time.monotonic()
        interval = (self.update_interval or timedelta(minutes=DEFAULT_SCAN_INTERVAL)).total_seconds()
        if self._discovery_requested is not None and now - self._discovery_requested < interval:
            return
        self._discovery_requested = now
        _LOGGER.debug("Push for unknown meter %s; polling to discover it", meter_id)
        self.config_entry.async_create_background_task(self.hass, self.async_refresh(), f"{DOMAIN} discover")

    def take_orphan_alarms(self, meter_id: str) -> list[Alarm]:
        """Alarms that came before the meter's device existed (for its alarm entity, once added)."""
        return self._orphan_alarms.pop(meter_id, [])

    def apply_alarm(self, alarm: Alarm) -> None:
        """Fire an alarm (already de-duplicated) on the meter's entity and the bus, once its device exists."""
        device = device_by_identifier(self.hass, (DOMAIN, self.device_key(alarm.meter_id)), self.config_entry.entry_id)
        if device is None:
            # An automation must never get an alarm it cannot act on (a valve.close_valve on no device).
            if self._may_be_ours(alarm.meter_id):
                held = self._orphan_alarms.setdefault(alarm.meter_id, [])
                held[:] = [*held, alarm][-ORPHAN_ALARMS_KEPT:]
                self._discover_soon(alarm.meter_id)
            return
        async_dispatcher_send(self.hass, alarm_signal(self.config_entry.entry_id, alarm.meter_id), alarm)
        self.hass.bus.async_fire(
            EVENT_DEVICE_EVENT if alarm.event else EVENT_ALARM,
            {
                "config_entry_id": self.config_entry.entry_id,
                "device_id": device.id,
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

    def error_for(self, err: MeterCloudError) -> HomeAssistantError:
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
            "presence": self.presence.diagnostics(),
            "account_states": self.account_states.diagnostics(),
            "last_push": self.commands.meta.get("last_push"),
        }
