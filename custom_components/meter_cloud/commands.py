"""The command ledger: every remote command and what became of it, persisted so money is never sent twice.

States change only through lifecycle events (lifecycle.py); the ledger applies them and tells a listener
about every command that enters a state users are told about.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from homeassistant.core import HomeAssistant
from homeassistant.helpers.storage import Store
from homeassistant.util import dt as dt_util

from .api import CommandKind, CommandState
from .const import COMMAND_EXPIRY, DOMAIN
from .lifecycle import ANNOUNCED, FORGET, Event, decide, step

_LOGGER = logging.getLogger(__name__)

STORAGE_VERSION = 1
# Final records kept per entry, newest first, for the service responses and diagnostics.
KEEP_FINAL = 200
FINAL = frozenset({CommandState.CONFIRMED, CommandState.FAILED, CommandState.CANCELLED})
_DECIMALS = ("amount", "baseline", "total")
# A command with its own timeout is given up this long after it, so the cloud's own "timed out" comes first.
EXPIRY_GRACE = timedelta(minutes=10)


@dataclass(frozen=True, slots=True)
class TrackedCommand:
    """One command we sent and what became of it."""

    serial: str
    meter_id: str
    kind: CommandKind
    state: CommandState
    created: datetime
    updated: datetime
    reference: str | None = None
    amount: Decimal | None = None
    message: str | None = None
    # For a recharge: the meter's cumulative recharge when it was first sent (a poll can confirm it).
    baseline: Decimal | None = None
    # The cloud's own id of the command (a queue id), and what the command returned.
    vendor_id: str | None = None
    result: dict[str, Any] | None = None
    # How often this entry sent the serial; a resend reuses serial and payload.
    attempts: int = 1
    # The vendor's code of the last refusal or failure, and our translation key for it when it has one.
    code: str | None = None
    reason: str | None = None
    # A recharge's sequence number as the meter counts them (Goldcard rechargeCount, IoT charge_times) and
    # the cumulative total sent with it (IoT total_value): chosen once, resent unchanged.
    counter: int | None = None
    total: Decimal | None = None
    # A command waiting (PREPARING) for another one to finish first: that one's serial.
    waits_for: str | None = None
    # When the cloud may run it (a scheduled command), and how long it has from then (seconds): the ledger gives
    # up on it only after its own timeout. Commands stored before these existed use COMMAND_EXPIRY.
    scheduled: datetime | None = None
    timeout: int | None = None

    def expires(self) -> datetime:
        """When a command still without a result becomes unknown."""
        start = max(self.updated, self.scheduled) if self.scheduled else self.updated
        if self.timeout is None:
            return start + COMMAND_EXPIRY
        return start + timedelta(seconds=self.timeout) + EXPIRY_GRACE

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly form, for storage and service responses."""
        data = asdict(self)
        data["kind"] = self.kind.value
        data["state"] = self.state.value
        data["created"] = self.created.isoformat()
        data["updated"] = self.updated.isoformat()
        data["scheduled"] = self.scheduled.isoformat() if self.scheduled else None
        for key in _DECIMALS:
            data[key] = None if data[key] is None else str(data[key])
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrackedCommand:
        """Inverse of as_dict (records written before a field existed get its default)."""
        known = {name: data[name] for name in cls.__dataclass_fields__ if name in data}
        known["kind"] = CommandKind(data["kind"])
        known["state"] = CommandState(data["state"])
        known["created"] = datetime.fromisoformat(data["created"])
        known["updated"] = datetime.fromisoformat(data["updated"])
        if known.get("scheduled"):
            known["scheduled"] = datetime.fromisoformat(known["scheduled"])
        for key in _DECIMALS:
            known[key] = None if known.get(key) is None else Decimal(known[key])
        return cls(**known)


@dataclass(frozen=True, slots=True)
class Change:
    """A command's move: the record after it, the state before, and how it moved."""

    command: TrackedCommand
    previous: CommandState | None
    # A success that replaced an earlier failed or cancelled verdict.
    overrides: bool = False
    # The record was dropped: the command never left.
    forgotten: bool = False


type Listener = Callable[[Change], None]


class CommandTracker:
    """Commands of one config entry, by serial number."""

    def __init__(self, hass: HomeAssistant, entry_id: str) -> None:
        """Bind to the entry's store."""
        self._store: Store[dict[str, Any]] = Store(hass, STORAGE_VERSION, f"{DOMAIN}.{entry_id}.commands")
        self._commands: dict[str, TrackedCommand] = {}
        # Other small state of the entry that must survive restarts (e.g. where alarm catch-up stopped).
        self.meta: dict[str, Any] = {}
        # Told of every command that enters a state users hear about (confirmed, failed, cancelled, unknown).
        self.listener: Listener | None = None
        # Goes up with every change of a command, or of meta that meters' data are made from (account states; not
        # bookkeeping such as where alarm catch-up stopped): a poll whose inputs include this number and are otherwise
        # the same as the last poll's may reuse its result.
        self.revision = 0

    async def async_load(self) -> None:
        """Read what was persisted; a command Home Assistant stopped in the middle of sending is unknown."""
        stored = await self._store.async_load() or {}
        # In place: the books kept in meta (counters, account states) hold this very dict.
        self.meta.clear()
        self.meta.update(stored.get("meta", {}))
        for item in stored.get("commands", []):
            command = TrackedCommand.from_dict(item)
            if command.state is CommandState.SENDING:
                command = replace(command, state=CommandState.UNKNOWN, message="stopped before the cloud answered")
            self._commands[command.serial] = command

    async def async_remove(self) -> None:
        """Forget everything (the entry is being removed)."""
        await self._store.async_remove()

    def _save(self, *, revised: bool = True) -> None:
        if revised:
            self.revision += 1
        final = [c for c in self._commands.values() if c.state in FINAL]
        final.sort(key=lambda c: c.updated, reverse=True)
        for stale in final[KEEP_FINAL:]:
            del self._commands[stale.serial]
        self._store.async_delay_save(self._data, 1)

    async def async_flush(self) -> None:
        """Write now: a money command must be on disk before it goes on the wire."""
        await self._store.async_save(self._data())

    def _data(self) -> dict[str, Any]:
        return {"commands": [c.as_dict() for c in self._commands.values()], "meta": self.meta}

    def save_meta(self, *, feeds_meters: bool = False) -> None:
        """Persist `meta` soon; `feeds_meters` when what changed is part of meters' data (see revision)."""
        self._save(revised=feeds_meters)

    def get(self, serial: str) -> TrackedCommand | None:
        """The command with this serial."""
        return self._commands.get(serial)

    def all(self) -> list[TrackedCommand]:
        """Every command, newest first."""
        return sorted(self._commands.values(), key=lambda c: c.created, reverse=True)

    def by_meter(self) -> dict[str, list[TrackedCommand]]:
        """Each meter's commands in the ledger's order: one pass over the ledger for a whole poll."""
        grouped: dict[str, list[TrackedCommand]] = {}
        for command in self._commands.values():
            grouped.setdefault(command.meter_id, []).append(command)
        return grouped

    def update(self, command: TrackedCommand) -> TrackedCommand:
        """Store fields of a command that are not its state (a queue id, its counters)."""
        assert self._commands.get(command.serial, command).state is command.state
        self._commands[command.serial] = command
        self._save()
        return command

    def by_vendor_id(self, vendor_id: str) -> TrackedCommand | None:
        """The command the cloud knows by this id."""
        return next((c for c in self._commands.values() if c.vendor_id == vendor_id), None)

    def start(self, command: TrackedCommand, event: Event) -> Change:
        """A new command (SEND or PREPARE), or a resend (SEND) of one whose fate is unknown."""
        known = self._commands.get(command.serial)
        if known is None:
            target = step(None, event)
            assert target is not None
            new = replace(command, state=CommandState(target.state), attempts=1 if event is Event.SEND else 0)
            self._commands[new.serial] = new
            self._save()
            return Change(new, None)
        change = self.apply(known.serial, event, attempts=known.attempts + (event is Event.SEND))
        assert change is not None, f"{event} is not allowed in {known.state}"
        return change

    def apply(
        self,
        serial: str,
        event: Event,
        message: str | None = None,
        *,
        code: str | None = None,
        reason: str | None = None,
        result: dict[str, Any] | None = None,
        vendor_id: str | None = None,
        attempts: int | None = None,
    ) -> Change | None:
        """Apply a lifecycle event to a command; None when it changes nothing (unknown serial, no transition)."""
        command = self._commands.get(serial)
        if command is None:
            return None
        tries = command.attempts if attempts is None else attempts
        event = decide(event, attempts=tries)
        target = step(command.state, event)
        if target is None:
            _LOGGER.debug("Command %s: %s changes nothing in state %s", serial, event, command.state)
            return None
        previous = command.state
        if target.state == FORGET:
            del self._commands[serial]
            self._save()
            return Change(command, previous, forgotten=True)
        updated = replace(
            command,
            state=CommandState(target.state),
            updated=dt_util.utcnow(),
            attempts=tries,
            message=message or command.message,
            code=code or command.code,
            reason=reason if reason is not None else command.reason,
            result=result if result is not None else command.result,
            vendor_id=vendor_id or command.vendor_id,
        )
        self._commands[serial] = updated
        self._save()
        change = Change(updated, previous, target.overrides)
        announce = updated.state in ANNOUNCED and (updated.state is not previous or target.overrides)
        if announce and self.listener is not None:
            self.listener(change)
        return change

    def _mine(self, meter_id: str, commands: list[TrackedCommand] | None) -> list[TrackedCommand]:
        """A meter's commands in the ledger's order: `commands` when the caller has them (by_meter()), else read."""
        return [c for c in self._commands.values() if c.meter_id == meter_id] if commands is None else commands

    def pending(
        self, meter_id: str, kinds: tuple[CommandKind, ...], commands: list[TrackedCommand] | None = None
    ) -> TrackedCommand | None:
        """The newest command of these kinds for a meter that the cloud has and has not finished (`commands`: see
        _mine)."""
        newest_first = sorted(self._mine(meter_id, commands), key=lambda c: c.created, reverse=True)
        return next((c for c in newest_first if c.kind in kinds and c.state is CommandState.PENDING), None)

    def of_meter(
        self,
        meter_id: str,
        kinds: tuple[CommandKind, ...],
        states: frozenset[CommandState],
        commands: list[TrackedCommand] | None = None,
    ) -> list[TrackedCommand]:
        """A meter's commands of these kinds in these states, oldest first (`commands`: see _mine)."""
        found = [c for c in self._mine(meter_id, commands) if c.kind in kinds and c.state in states]
        return sorted(found, key=lambda c: c.created)

    def latest(self, meter_id: str, kinds: CommandKind | tuple[CommandKind, ...]) -> TrackedCommand | None:
        """The newest command of a kind (or kinds) for a meter."""
        wanted = kinds if isinstance(kinds, tuple) else (kinds,)
        return next((c for c in self.all() if c.meter_id == meter_id and c.kind in wanted), None)

    def expire(self, now: datetime) -> set[str]:
        """Commands with no result by their expiry: pending ones become unknown, preparing ones failed.

        Returns the meters whose commands changed (their entities must be written even if their data did not).
        """
        changed: set[str] = set()
        for command in list(self._commands.values()):
            if now > command.expires():
                waiting = command.state is CommandState.PREPARING
                if command.state is CommandState.PENDING or waiting:
                    text = "nothing was sent: its preparation did not finish" if waiting else "no result from the cloud"
                    if self.apply(command.serial, Event.EXPIRED, text):
                        changed.add(command.meter_id)
        return changed
