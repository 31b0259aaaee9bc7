"""Remote commands in flight: valve moves and recharges, persisted so money is never sent twice."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from datetime import datetime
from decimal import Decimal
from typing import Any

from homeassistant.core import HomeAssistant
from homeassistant.helpers.storage import Store
from homeassistant.util import dt as dt_util

from .api import CommandKind, CommandState
from .const import COMMAND_EXPIRY, DOMAIN

STORAGE_VERSION = 1
# Final records kept per entry, newest first, for the service responses and diagnostics.
KEEP_FINAL = 200


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
    # For a recharge: the meter's cumulative recharge when it was sent (a poll can confirm it).
    baseline: Decimal | None = None
    # The cloud's own id of the command (a queue id), and what the command returned.
    vendor_id: str | None = None
    result: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly form, for storage and service responses."""
        data = asdict(self)
        data["kind"] = self.kind.value
        data["state"] = self.state.value
        data["created"] = self.created.isoformat()
        data["updated"] = self.updated.isoformat()
        data["amount"] = None if self.amount is None else str(self.amount)
        data["baseline"] = None if self.baseline is None else str(self.baseline)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrackedCommand:
        """Inverse of as_dict."""
        return cls(
            serial=data["serial"],
            meter_id=data["meter_id"],
            kind=CommandKind(data["kind"]),
            state=CommandState(data["state"]),
            created=datetime.fromisoformat(data["created"]),
            updated=datetime.fromisoformat(data["updated"]),
            reference=data.get("reference"),
            amount=None if data.get("amount") is None else Decimal(data["amount"]),
            message=data.get("message"),
            baseline=None if data.get("baseline") is None else Decimal(data["baseline"]),
            vendor_id=data.get("vendor_id"),
            result=data.get("result"),
        )


class CommandTracker:
    """Commands of one config entry, by serial number."""

    def __init__(self, hass: HomeAssistant, entry_id: str) -> None:
        """Bind to the entry's store."""
        self._store: Store[dict[str, Any]] = Store(hass, STORAGE_VERSION, f"{DOMAIN}.{entry_id}.commands")
        self._commands: dict[str, TrackedCommand] = {}
        # Other small state of the entry that must survive restarts (e.g. where alarm catch-up stopped).
        self.meta: dict[str, Any] = {}

    async def async_load(self) -> None:
        """Read what was persisted."""
        stored = await self._store.async_load() or {}
        self.meta = dict(stored.get("meta", {}))
        for item in stored.get("commands", []):
            command = TrackedCommand.from_dict(item)
            self._commands[command.serial] = command

    async def async_remove(self) -> None:
        """Forget everything (the entry is being removed)."""
        await self._store.async_remove()

    def _save(self) -> None:
        final = [c for c in self._commands.values() if c.state is not CommandState.PENDING]
        final.sort(key=lambda c: c.updated, reverse=True)
        for stale in final[KEEP_FINAL:]:
            del self._commands[stale.serial]
        self._store.async_delay_save(self._data, 1)

    async def async_flush(self) -> None:
        """Write now: a recharge must be on disk before it goes on the wire."""
        await self._store.async_save(self._data())

    def _data(self) -> dict[str, Any]:
        return {"commands": [c.as_dict() for c in self._commands.values()], "meta": self.meta}

    def save_meta(self) -> None:
        """Persist `meta` soon."""
        self._save()

    def get(self, serial: str) -> TrackedCommand | None:
        """The command with this serial."""
        return self._commands.get(serial)

    def all(self) -> list[TrackedCommand]:
        """Every command, newest first."""
        return sorted(self._commands.values(), key=lambda c: c.created, reverse=True)

    def put(self, command: TrackedCommand) -> TrackedCommand:
        """Add or replace a command."""
        self._commands[command.serial] = command
        self._save()
        return command

    def drop(self, serial: str) -> None:
        """Forget a command that never left."""
        if self._commands.pop(serial, None) is not None:
            self._save()

    def by_vendor_id(self, vendor_id: str) -> TrackedCommand | None:
        """The command the cloud knows by this id."""
        return next((c for c in self._commands.values() if c.vendor_id == vendor_id), None)

    def set_state(
        self,
        serial: str,
        state: CommandState,
        message: str | None = None,
        *,
        result: dict[str, Any] | None = None,
        reopen: bool = False,
    ) -> TrackedCommand | None:
        """Move a command to `state`; a final state is left only when the command is retried (`reopen`)."""
        command = self._commands.get(serial)
        final = (CommandState.CONFIRMED, CommandState.FAILED, CommandState.CANCELLED)
        if command is None or (command.state in final and not reopen):
            return None
        updated = replace(
            command,
            state=state,
            updated=dt_util.utcnow(),
            message=message or command.message,
            result=result if result is not None else command.result,
        )
        return self.put(updated)

    def pending(self, meter_id: str, kinds: tuple[CommandKind, ...]) -> TrackedCommand | None:
        """The newest pending command of these kinds for a meter."""
        for command in self.all():
            if command.meter_id == meter_id and command.kind in kinds and command.state is CommandState.PENDING:
                return command
        return None

    def latest(self, meter_id: str, kind: CommandKind) -> TrackedCommand | None:
        """The newest command of a kind for a meter."""
        return next((c for c in self.all() if c.meter_id == meter_id and c.kind is kind), None)

    def expire(self, now: datetime) -> bool:
        """Pending commands with no result after COMMAND_EXPIRY become unknown."""
        changed = False
        for command in list(self._commands.values()):
            if command.state is CommandState.PENDING and now - command.created > COMMAND_EXPIRY:
                self.set_state(command.serial, CommandState.UNKNOWN, "no result from the cloud")
                changed = True
        return changed
