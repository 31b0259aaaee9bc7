"""Managing commands already in a cloud's queue: change, delete, describe, and the batch forms."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from .api import CommandError, CommandRef, CommandState, MeterCloudError, MeterData
from .commands import TrackedCommand
from .errors import to_ha_error
from .lifecycle import Event

if TYPE_CHECKING:
    from .coordinator import MeterCloudCoordinator

# What each operation may act on in the ledger, and the event it is afterwards.
ELIGIBLE = {
    "cancel": frozenset({CommandState.PENDING}),
    "delete": frozenset({CommandState.PENDING}),
    "update": frozenset({CommandState.PENDING}),
    "retry": frozenset({CommandState.FAILED, CommandState.CANCELLED, CommandState.UNKNOWN}),
}
AFTER = {"cancel": Event.CANCELLED, "delete": Event.CANCELLED, "retry": Event.RETRIED}
NOT_FOUND_REASON = {"retry": "no_retryable_command"}


def _ref(command: TrackedCommand) -> CommandRef:
    return CommandRef(command.serial, command.kind, command.amount, command.vendor_id, command.meter_id)


def _pick(coordinator: MeterCloudCoordinator, meter_id: str, serial: str | None, operation: str) -> TrackedCommand:
    """The command named by serial, else the meter's newest one the operation applies to."""
    states = ELIGIBLE.get(operation)
    if serial:
        command = coordinator.commands.get(serial)
    else:
        mine = [
            c for c in coordinator.commands.all() if c.meter_id == meter_id and (states is None or c.state in states)
        ]
        command = mine[0] if mine else None
    if (
        command is None
        or command.meter_id != meter_id
        or not command.vendor_id
        or (states is not None and command.state not in states)
    ):
        raise to_ha_error(CommandError(serial or "", reason=NOT_FOUND_REASON.get(operation, "no_pending_command")))
    return command


def changes_of(schedule: datetime | None, timeout: timedelta | None, params: dict[str, Any]) -> dict[str, Any]:
    """The changes an update carries, in the client's words."""
    changes: dict[str, Any] = {key: value for key, value in params.items() if value is not None}
    if schedule is not None:
        changes["schedule"] = schedule
    if timeout is not None:
        changes["timeout"] = timeout
    return changes


def _updated(command: TrackedCommand, changes: dict[str, Any]) -> TrackedCommand:
    """The ledger's copy after an update: its schedule, timeout (so its expiry) and amount."""
    timeout = changes.get("timeout")
    amount = changes.get("amount")
    return replace(
        command,
        scheduled=changes.get("schedule", command.scheduled),
        timeout=int(timeout.total_seconds()) if timeout else command.timeout,
        amount=Decimal(str(amount)) if amount is not None else command.amount,
    )


async def async_update(
    coordinator: MeterCloudCoordinator, meter_id: str, serial: str | None, changes: dict[str, Any]
) -> tuple[TrackedCommand, dict[str, Any]]:
    """Change a command still waiting in the queue; the ledger keeps its schedule, timeout and amount."""
    command = _pick(coordinator, meter_id, serial, "update")
    try:
        record = await coordinator.client.async_update_command(coordinator.meter(meter_id), _ref(command), changes)
    except MeterCloudError as err:
        raise coordinator.error_for(err) from err
    return coordinator.commands.update(_updated(command, changes)), record


async def async_delete(coordinator: MeterCloudCoordinator, meter_id: str, serial: str | None) -> TrackedCommand:
    """Delete a command from the queue; one still under way will not run (cancelled)."""
    command = _pick(coordinator, meter_id, serial, "delete")
    try:
        await coordinator.client.async_delete_command(coordinator.meter(meter_id), _ref(command))
    except MeterCloudError as err:
        raise coordinator.error_for(err) from err
    change = coordinator.commands.apply(command.serial, Event.CANCELLED, "deleted from the queue by Home Assistant")
    coordinator.async_update_meter(meter_id)
    return change.command if change else command


async def async_detail(
    coordinator: MeterCloudCoordinator, meter_id: str, serial: str | None
) -> tuple[TrackedCommand, str]:
    """The cloud's description of a command (the newest of the meter without serial)."""
    command = _pick(coordinator, meter_id, serial, "detail")
    try:
        text = await coordinator.client.async_command_detail(coordinator.meter(meter_id), _ref(command))
    except MeterCloudError as err:
        raise coordinator.error_for(err) from err
    return command, text


async def async_batch(
    coordinator: MeterCloudCoordinator,
    operation: str,
    targets: list[tuple[str, str | None]],
    changes: dict[str, Any],
) -> dict[str, dict[str, Any]]:
    """One request for several commands (meter, serial or newest); per serial: its state afterwards or the refusal."""
    chosen: list[TrackedCommand] = []
    for meter_id, serial in targets:
        command = _pick(coordinator, meter_id, serial, operation)
        if command not in chosen:
            chosen.append(command)
    items: list[tuple[MeterData, CommandRef]] = [(coordinator.meter(c.meter_id), _ref(c)) for c in chosen]
    try:
        outcome = await coordinator.client.async_commands_batch(operation, items, changes)
    except MeterCloudError as err:
        raise coordinator.error_for(err) from err
    answer: dict[str, dict[str, Any]] = {}
    for command in chosen:
        refusal = outcome.get(command.serial, "no answer")
        current = command
        if refusal is None:
            if operation == "update":
                current = coordinator.commands.update(_updated(command, changes))
            else:
                text = {"cancel": "cancelled", "delete": "deleted from the queue", "retry": "retried"}[operation]
                attempts = command.attempts + 1 if operation == "retry" else None
                change = coordinator.commands.apply(command.serial, AFTER[operation], text, attempts=attempts)
                current = change.command if change else command
            coordinator.async_update_meter(command.meter_id)
        answer[command.serial] = {
            "meter_id": command.meter_id,
            "ok": refusal is None,
            "message": refusal,
            "state": current.state.value,
        }
    return answer
