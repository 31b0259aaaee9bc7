"""Commands to meters: send once, track until the cloud or a reading settles them."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from homeassistant.util import dt as dt_util

from .api import (
    CommandError,
    CommandKind,
    CommandReceipt,
    CommandRef,
    CommandResult,
    CommandState,
    MeterClient,
    MeterCloudError,
    MeterData,
    ValveState,
)
from .commands import CommandTracker, TrackedCommand
from .errors import to_ha_error

if TYPE_CHECKING:
    from .coordinator import MeterCloudCoordinator

# How often a service waiting for a command's result asks the cloud.
POLL_WAIT = 2.0
VALVE_KINDS = (CommandKind.VALVE_OPEN, CommandKind.VALVE_CLOSE)
MONEY_KINDS = (CommandKind.RECHARGE, CommandKind.BALANCE_CREDIT, CommandKind.BALANCE_DEDUCT)
# How long a confirmed valve move outweighs readings that carry no time of their own.
UNDATED_READING_TRUST = timedelta(hours=1)
VALVE_TARGET = {CommandKind.VALVE_OPEN: ValveState.OPEN, CommandKind.VALVE_CLOSE: ValveState.CLOSED}


class MeterActions:
    """Valve and money commands of one entry."""

    def __init__(self, coordinator: MeterCloudCoordinator, tracker: CommandTracker) -> None:
        """Bind to the entry's coordinator and ledger."""
        self._coordinator = coordinator
        self.tracker = tracker

    @property
    def _client(self) -> MeterClient:
        return self._coordinator.client

    def settle_from(self, meter: MeterData) -> bool:
        """Let a fresh reading settle pending commands of its meter; True if one changed."""
        changed = False
        command = self.tracker.pending(meter.meter_id, VALVE_KINDS)
        if command is not None:
            if meter.valve is VALVE_TARGET[command.kind]:
                changed = bool(self.tracker.set_state(command.serial, CommandState.CONFIRMED))
            elif meter.valve is ValveState.FAULT:
                changed = bool(self.tracker.set_state(command.serial, CommandState.FAILED, "valve reports a fault"))
        recharge = self.tracker.pending(meter.meter_id, (CommandKind.RECHARGE,))
        # Without a result push, the cumulative recharge total rising by the amount confirms it.
        if (
            recharge is not None
            and recharge.baseline is not None
            and recharge.amount is not None
            and meter.total_recharge is not None
            and meter.total_recharge >= recharge.baseline + recharge.amount
        ):
            changed = bool(self.tracker.set_state(recharge.serial, CommandState.CONFIRMED)) or changed
        return changed

    def latest_valve_commands(self) -> dict[str, TrackedCommand]:
        """The newest valve command of each meter that had one."""
        latest: dict[str, TrackedCommand] = {}
        for command in self.tracker.all():
            if command.kind in VALVE_KINDS:
                latest.setdefault(command.meter_id, command)
        return latest

    def reconcile(self, meter: MeterData, latest: dict[str, TrackedCommand] | None = None) -> MeterData:
        """A reading older than a confirmed valve move does not undo it (a cloud's table may lag its result)."""
        command = (self.latest_valve_commands() if latest is None else latest).get(meter.meter_id)
        if command is None or command.state is not CommandState.CONFIRMED:
            return meter
        target = VALVE_TARGET[command.kind]
        if meter.valve in (target, None):
            return meter
        if meter.reading_time is not None:
            stale = meter.reading_time <= command.updated
        else:  # no time to compare: believe the confirmation only for a while
            stale = dt_util.utcnow() - command.updated < UNDATED_READING_TRUST
        return replace(meter, valve=target) if stale else meter

    def _find(self, result: CommandResult) -> TrackedCommand | None:
        found = self.tracker.get(result.serial) if result.serial else None
        if found is None and result.vendor_id:
            found = self.tracker.by_vendor_id(result.vendor_id)
        return found

    def apply_result(self, result: CommandResult) -> None:
        """What the cloud says of a command (a result push or a queue query)."""
        known = self._find(result)
        if known is None or (result.success is None and not result.cancelled):
            return
        if result.cancelled:
            state = CommandState.CANCELLED
        else:
            state = CommandState.CONFIRMED if result.success else CommandState.FAILED
        data = dict(result.data) if result.data else None
        command = self.tracker.set_state(known.serial, state, result.message, result=data)
        if command is None:
            return
        meter = (self._coordinator.data or {}).get(command.meter_id)
        if command.kind in MONEY_KINDS:
            self._coordinator.refresh_details_soon(command.meter_id)
        if command.kind in VALVE_KINDS and result.success and meter is not None:
            # Shown at once; the re-read below then brings what the meter itself reports.
            self._coordinator.set_meter(replace(meter, valve=VALVE_TARGET[command.kind]))
        else:
            self._coordinator.async_update_meter(command.meter_id)
        if state is CommandState.CONFIRMED:
            # Balance and valve must agree with the confirmation now, not at the next poll.
            self._coordinator.refresh_meter_soon(command.meter_id)

    def pending_valve(self, meter_id: str) -> CommandKind | None:
        """The valve move under way for a meter, if any."""
        command = self.tracker.pending(meter_id, VALVE_KINDS)
        return command.kind if command else None

    async def async_set_valve(self, meter_id: str, open_valve: bool) -> TrackedCommand:
        """Send a valve command and track it until it is confirmed."""
        meter = self._coordinator.meter(meter_id)
        serial = self._client.new_serial()
        kind = CommandKind.VALVE_OPEN if open_valve else CommandKind.VALVE_CLOSE
        try:
            receipt = await self._client.async_set_valve(meter, open_valve, serial)
        except MeterCloudError as err:
            raise self._coordinator.error_for(err) from err
        now = dt_util.utcnow()
        command = self.tracker.put(
            TrackedCommand(serial, meter_id, kind, CommandState.PENDING, now, now, vendor_id=receipt.vendor_id)
        )
        self._coordinator.async_update_meter(meter_id)
        return command

    async def async_money(self, meter_id: str, kind: CommandKind, amount: Decimal, reference: str) -> TrackedCommand:
        """Send a recharge or balance adjustment at most once per reference; never re-send blindly."""
        meter = self._coordinator.meter(meter_id)
        serial = self._client.recharge_serial(reference)
        known = self.tracker.get(serial)
        if known is not None and (known.meter_id != meter_id or known.amount != amount or known.kind is not kind):
            raise to_ha_error(CommandError(reference, reason="reference_conflict"))
        baseline = meter.total_recharge if kind is CommandKind.RECHARGE else None

        async def send(now: datetime) -> CommandReceipt:
            if kind is CommandKind.RECHARGE:
                return await self._client.async_recharge(meter, amount, reference, serial=serial, when=now)
            credit = kind is CommandKind.BALANCE_CREDIT
            return await self._client.async_adjust_balance(
                meter, amount, reference, credit=credit, serial=serial, when=now
            )

        return await self._send_tracked(
            meter_id, kind, serial, send, reference=reference, amount=amount, baseline=baseline
        )

    async def async_queue(
        self, meter_id: str, kind: CommandKind, params: dict[str, Any], reference: str | None = None
    ) -> TrackedCommand:
        """Queue another command (read price, set remaining, open account, ...) and track it."""
        meter = self._coordinator.meter(meter_id)
        serial = reference or f"HA{uuid.uuid4().hex[:20]}"
        known = self.tracker.get(serial)
        if known is not None and (known.meter_id != meter_id or known.kind is not kind):
            raise to_ha_error(CommandError(serial, reason="reference_conflict"))

        async def send(_now: datetime) -> CommandReceipt:
            return await self._client.async_command(meter, kind, params, serial=serial)

        return await self._send_tracked(meter_id, kind, serial, send, reference=serial, amount=params.get("amount"))

    async def _send_tracked(
        self,
        meter_id: str,
        kind: CommandKind,
        serial: str,
        send: Callable[[datetime], Awaitable[CommandReceipt]],
        *,
        reference: str,
        amount: Decimal | None,
        baseline: Decimal | None = None,
    ) -> TrackedCommand:
        """The ledger around one command: on disk before the wire, never re-sent once its fate is known."""
        known = self.tracker.get(serial)
        if known is not None and known.state is not CommandState.UNKNOWN:
            return known  # already sent: answer with what became of it
        now = dt_util.utcnow()
        # A crash mid-request leaves an 'unknown' record, not a blank.
        self.tracker.put(
            TrackedCommand(serial, meter_id, kind, CommandState.UNKNOWN, now, now, reference, amount, None, baseline)
        )
        await self.tracker.async_flush()
        try:
            receipt = await send(now)
        except MeterCloudError as err:
            if not err.request_sent:
                self.tracker.drop(serial)
            elif not err.outcome_unknown:
                self.tracker.set_state(serial, CommandState.FAILED, str(err))
            # Otherwise it stays 'unknown': calling again with the same reference re-sends the same serial.
            raise self._coordinator.error_for(err) from err
        sent = self.tracker.get(serial)
        assert sent is not None
        command = self.tracker.put(replace(sent, state=CommandState.PENDING, vendor_id=receipt.vendor_id))
        await self.tracker.async_flush()
        self._coordinator.async_update_meter(meter_id)
        return command

    def _ref(self, command: TrackedCommand) -> CommandRef:
        return CommandRef(command.serial, command.kind, command.amount, command.vendor_id, command.meter_id)

    async def async_poll_queue(self) -> None:
        """Ask the cloud about commands still under way (backends with a command queue)."""
        pending = [c for c in self.tracker.all() if c.state is CommandState.PENDING and c.vendor_id]
        if not pending:
            return
        for result in await self._client.async_command_states([self._ref(c) for c in pending]):
            self.apply_result(result)

    async def async_wait(self, command: TrackedCommand, seconds: float) -> TrackedCommand:
        """Wait up to `seconds` for a queued command's result (for services that return it)."""
        deadline = asyncio.get_running_loop().time() + seconds
        current = command
        while current.state is CommandState.PENDING and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(min(POLL_WAIT, max(0.0, deadline - asyncio.get_running_loop().time())))
            try:
                for result in await self._client.async_command_states([self._ref(current)]):
                    self.apply_result(result)
            except MeterCloudError as err:
                raise self._coordinator.error_for(err) from err
            current = self.tracker.get(command.serial) or current
        return current

    async def async_retry(self, meter_id: str, serial: str) -> TrackedCommand:
        """Put a failed, cancelled or timed-out command back in the cloud's queue."""
        meter = self._coordinator.meter(meter_id)
        command = self.tracker.get(serial)
        if command is None or command.meter_id != meter_id or command.state is CommandState.PENDING:
            raise to_ha_error(CommandError(serial, reason="no_retryable_command"))
        try:
            await self._client.async_retry_command(meter, self._ref(command))
        except MeterCloudError as err:
            raise self._coordinator.error_for(err) from err
        retried = self.tracker.set_state(serial, CommandState.PENDING, "retried", reopen=True)
        self._coordinator.async_update_meter(meter_id)
        return retried or command

    async def async_cancel(self, meter_id: str, serial: str | None) -> TrackedCommand:
        """Cancel a pending command (the newest of the meter when no serial is given)."""
        meter = self._coordinator.meter(meter_id)
        command = self.tracker.get(serial) if serial else self.tracker.pending(meter_id, tuple(CommandKind))
        if command is None or command.meter_id != meter_id or command.state is not CommandState.PENDING:
            raise to_ha_error(CommandError(serial or "", reason="no_pending_command"))
        try:
            await self._client.async_cancel_command(meter, self._ref(command))
        except MeterCloudError as err:
            raise self._coordinator.error_for(err) from err
        cancelled = self.tracker.set_state(command.serial, CommandState.CANCELLED)
        self._coordinator.async_update_meter(meter_id)
        return cancelled or command
