"""Commands to meters: each goes through the one lifecycle (lifecycle.py), sent once, tracked until settled.

Backends translate their vendor's answers into lifecycle events: a receipt is ACCEPTED, a refusal REFUSED,
"this serial exists" DUPLICATE, a lost answer LOST, a result push or a queue state RESULT_OK/RESULT_FAILED.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import replace
from datetime import datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from homeassistant.exceptions import HomeAssistantError
from homeassistant.util import dt as dt_util

from .account_state import INACTIVE_REASON
from .api import (
    CommandError,
    CommandKind,
    CommandReceipt,
    CommandRef,
    CommandResult,
    CommandState,
    DuplicateSerialError,
    MeterClient,
    MeterCloudError,
    MeterData,
    ValveState,
)
from .charges import CounterBook, next_after
from .commands import Change, CommandTracker, TrackedCommand
from .const import DOMAIN
from .errors import to_ha_error
from .lifecycle import IN_FLIGHT, RESENDABLE, Event

if TYPE_CHECKING:
    from .coordinator import MeterCloudCoordinator

_LOGGER = logging.getLogger(__name__)

# How often a service waiting for a command's result asks the cloud.
POLL_WAIT = 2.0
VALVE_KINDS = (CommandKind.VALVE_OPEN, CommandKind.VALVE_CLOSE)
MONEY_KINDS = (CommandKind.RECHARGE, CommandKind.BALANCE_CREDIT, CommandKind.BALANCE_DEDUCT)
# How long a confirmed valve move outweighs readings that carry no time of their own.
UNDATED_READING_TRUST = timedelta(hours=1)
VALVE_TARGET = {CommandKind.VALVE_OPEN: ValveState.OPEN, CommandKind.VALVE_CLOSE: ValveState.CLOSED}
# Where a recharge's total can confirm it: the cloud has it, or its answer was lost.
SETTLED_BY_TOTAL = frozenset({CommandState.PENDING, CommandState.UNKNOWN})


def _translated(key: str, command: TrackedCommand, err: MeterCloudError | None = None) -> HomeAssistantError:
    placeholders = {"reference": command.reference or command.serial, "error": "" if err is None else str(err)}
    return HomeAssistantError(translation_domain=DOMAIN, translation_key=key, translation_placeholders=placeholders)


class MeterActions:
    """Valve, money and queued commands of one entry."""

    def __init__(self, coordinator: MeterCloudCoordinator, tracker: CommandTracker) -> None:
        """Bind to the entry's coordinator and ledger."""
        self._coordinator = coordinator
        self.tracker = tracker
        self.counters = CounterBook(tracker.meta)

    @property
    def _client(self) -> MeterClient:
        return self._coordinator.client

    # --- readings settle commands ------------------------------------------------------------------

    def settle_all(self, meters: Mapping[str, MeterData]) -> None:
        """Let a poll's readings settle commands: only meters that have commands, the ledger read once."""
        for meter_id, commands in self.tracker.by_meter().items():
            if (meter := meters.get(meter_id)) is not None:
                self.settle_from(meter, commands)

    def settle_from(self, meter: MeterData, commands: list[TrackedCommand] | None = None) -> bool:
        """Let a fresh reading settle commands of its meter (`commands`: its commands in the ledger's order, when
        the caller has them); True if one changed."""
        changed = False
        command = self.tracker.pending(meter.meter_id, VALVE_KINDS, commands)
        if command is not None:
            if meter.valve is VALVE_TARGET[command.kind]:
                changed = bool(self.tracker.apply(command.serial, Event.RESULT_OK, "the meter reports it"))
            elif meter.valve is ValveState.FAULT:
                changed = bool(self.tracker.apply(command.serial, Event.RESULT_FAILED, "the valve reports a fault"))
        if meter.total_recharge is None:
            return changed
        # Without a result push, the cumulative recharge total rising by the amount confirms a recharge;
        # oldest first, each one's amount on top of what the earlier ones already explained.
        expected: Decimal | None = None
        for recharge in self.tracker.of_meter(meter.meter_id, (CommandKind.RECHARGE,), SETTLED_BY_TOTAL, commands):
            if recharge.baseline is None or recharge.amount is None:
                continue
            start = recharge.baseline if expected is None else max(expected, recharge.baseline)
            if meter.total_recharge >= start + recharge.amount:
                expected = start + recharge.amount
                text = "the cumulative recharge total rose by its amount"
                changed = bool(self.tracker.apply(recharge.serial, Event.RESULT_OK, text)) or changed
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

    # --- results --------------------------------------------------------------------------------

    def _find(self, result: CommandResult) -> TrackedCommand | None:
        found = self.tracker.get(result.serial) if result.serial else None
        if found is None and result.vendor_id:
            found = self.tracker.by_vendor_id(result.vendor_id)
        return found

    def apply_result(self, result: CommandResult) -> None:
        """What the cloud says of a command (a result push or a queue query); repeats change nothing."""
        known = self._find(result)
        if known is None:
            return
        if result.success is None and not result.cancelled:
            # Still under way; a command whose answer was lost is thereby known to be in the cloud's hands.
            if known.state in (CommandState.UNKNOWN, CommandState.SENDING):
                self.tracker.apply(known.serial, Event.ACCEPTED, vendor_id=result.vendor_id)
                self._coordinator.async_update_meter(known.meter_id)
            return
        event = Event.CANCELLED if result.cancelled else Event.RESULT_OK if result.success else Event.RESULT_FAILED
        data = dict(result.data) if result.data else None
        change = self.tracker.apply(
            known.serial, event, result.message, code=result.code, result=data, vendor_id=result.vendor_id
        )
        if change is None:
            return
        self._after_result(change, result)

    def _after_result(self, change: Change, result: CommandResult) -> None:
        command = change.command
        meter = (self._coordinator.data or {}).get(command.meter_id)
        if command.kind in MONEY_KINDS:
            self._coordinator.refresh_details_soon(command.meter_id)
        if command.kind is CommandKind.RECHARGE:
            if command.state is CommandState.CONFIRMED:
                self.counters.advance(command.meter_id, command)
            elif command.state is CommandState.FAILED and result.counters_refused:
                # The meter refused the numbers we sent: they are not what it counts; read them again.
                self.counters.forget(command.meter_id)
        if command.kind is CommandKind.CHARGE_STATE:
            self._charge_state_done(command, result, meter)
        if command.kind in VALVE_KINDS and command.state is CommandState.CONFIRMED and meter is not None:
            # Shown at once; the re-read below then brings what the meter itself reports.
            self._coordinator.set_meter(replace(meter, valve=VALVE_TARGET[command.kind]))
        else:
            self._coordinator.async_update_meter(command.meter_id)
        if command.state is CommandState.CONFIRMED:
            # Balance and valve must agree with the confirmation now, not at the next poll.
            self._coordinator.refresh_meter_soon(command.meter_id)

    def pending_valve(self, meter_id: str) -> CommandKind | None:
        """The valve move under way for a meter (sent or accepted, not settled), if any."""
        moving = self.tracker.of_meter(meter_id, VALVE_KINDS, frozenset({CommandState.SENDING, CommandState.PENDING}))
        return moving[-1].kind if moving else None

    # --- sending --------------------------------------------------------------------------------

    async def async_set_valve(self, meter_id: str, open_valve: bool) -> TrackedCommand:
        """Send a valve command and track it until it is confirmed."""
        meter = self._coordinator.meter(meter_id)
        kind = CommandKind.VALVE_OPEN if open_valve else CommandKind.VALVE_CLOSE
        record = self._record(self._client.new_serial(), meter_id, kind)

        async def send(command: TrackedCommand) -> CommandReceipt:
            return await self._client.async_set_valve(meter, open_valve, command.serial)

        return await self._send(record, send)

    async def async_money(self, meter_id: str, kind: CommandKind, amount: Decimal, reference: str) -> TrackedCommand:
        """Send a recharge or balance adjustment at most once per reference; never re-send blindly."""
        meter = self._coordinator.meter(meter_id)
        serial = self._client.recharge_serial(reference)
        known = self.tracker.get(serial)
        if known is not None and (known.meter_id != meter_id or known.amount != amount or known.kind is not kind):
            raise to_ha_error(CommandError(reference, reason="reference_conflict"))
        if known is not None and known.state not in RESENDABLE:
            return known  # already on its way or settled: answer with what became of it
        record = known or self._record(
            serial,
            meter_id,
            kind,
            reference=reference,
            amount=amount,
            baseline=meter.total_recharge if kind is CommandKind.RECHARGE else None,
        )
        if known is None and kind is CommandKind.RECHARGE and self._client.uses_charge_counters:
            prepared = await self._count(meter, record)
            if prepared is None:
                return self._prepare_recharge(meter, record)
            record = prepared
        return await self._send(record, self._money_sender(meter))

    def _money_sender(self, meter: MeterData) -> Callable[[TrackedCommand], Awaitable[CommandReceipt]]:
        async def send(command: TrackedCommand) -> CommandReceipt:
            assert command.amount is not None
            assert command.reference is not None
            # A resend repeats the first attempt exactly: same serial, time and counters.
            when = command.created
            if command.kind is CommandKind.RECHARGE:
                return await self._client.async_recharge(
                    meter,
                    command.amount,
                    command.reference,
                    serial=command.serial,
                    when=when,
                    counter=command.counter,
                    total=command.total,
                )
            return await self._client.async_adjust_balance(
                meter,
                command.amount,
                command.reference,
                credit=command.kind is CommandKind.BALANCE_CREDIT,
                serial=command.serial,
                when=when,
            )

        return send

    async def _count(self, meter: MeterData, record: TrackedCommand) -> TrackedCommand | None:
        """The recharge with the numbers the meter expects, or None when they must be read from it first."""
        in_flight = self.tracker.of_meter(meter.meter_id, (CommandKind.RECHARGE,), IN_FLIGHT)
        unresolved = next((c for c in in_flight if c.state is CommandState.UNKNOWN), None)
        if unresolved is not None:
            # Its number may or may not be taken: settle it (resend it, same reference) before a new one.
            raise _translated("recharge_unresolved", unresolved)
        if any(c.state is CommandState.PREPARING for c in in_flight):
            return None  # queue behind the recharges already waiting for the counters
        try:
            counters = await self._client.async_charge_counters(meter)
        except MeterCloudError as err:
            raise self._coordinator.error_for(err) from err
        if counters is None:
            counters = self.counters.known(meter)
        if counters is None:
            return None
        assert record.amount is not None
        numbers = next_after(counters, in_flight, record.amount)
        return replace(record, counter=numbers.counter, total=numbers.total)

    def _prepare_recharge(self, meter: MeterData, record: TrackedCommand) -> TrackedCommand:
        """Park the recharge until a charge-state read tells the meter's counters (sent once it does)."""
        reading = next(
            iter(
                self.tracker.of_meter(meter.meter_id, (CommandKind.CHARGE_STATE,), IN_FLIGHT - {CommandState.UNKNOWN})
            ),
            None,
        )
        serial = reading.serial if reading is not None else f"{record.reference}-cs"[:50]
        change = self.tracker.start(replace(record, waits_for=serial), Event.PREPARE)
        if reading is None:
            self._coordinator.config_entry.async_create_background_task(
                self._coordinator.hass, self._read_counters(meter, serial), f"{DOMAIN} charge state {meter.meter_id}"
            )
        self._coordinator.async_update_meter(meter.meter_id)
        return change.command

    async def _read_counters(self, meter: MeterData, serial: str) -> None:
        """Queue the charge-state read the parked recharges wait for; its failure fails them (nothing was sent)."""
        record = self._record(serial, meter.meter_id, CommandKind.CHARGE_STATE, reference=serial)

        async def send(command: TrackedCommand) -> CommandReceipt:
            return await self._client.async_command(meter, command.kind, {}, serial=command.serial)

        # A read is safe to send again with its serial (the queue is searched for it first): one more try.
        for _ in range(2):
            try:
                await self._send(self.tracker.get(serial) or record, send)
            except HomeAssistantError as err:
                command = self.tracker.get(serial)
                if command is not None and command.state is CommandState.UNKNOWN:
                    continue
                self._release_prepared(meter.meter_id, serial, failure=str(err))
            return
        _LOGGER.warning("Reading the recharge counters of %s: no answer; its recharges wait", meter.meter_id)

    def _charge_state_done(self, command: TrackedCommand, result: CommandResult, meter: MeterData | None) -> None:
        counters = self._client.charge_counters_of(result) if command.state is CommandState.CONFIRMED else None
        if counters is not None and meter is not None:
            self.counters.learn(meter, counters)
            self._release_prepared(command.meter_id, command.serial)
        else:
            self._release_prepared(command.meter_id, command.serial, failure=command.message or command.state)

    def _release_prepared(self, meter_id: str, serial: str, *, failure: str | None = None) -> None:
        """Send the recharges parked behind charge-state read `serial`, or fail them (nothing of theirs was sent)."""
        waiting = [
            c
            for c in self.tracker.of_meter(meter_id, (CommandKind.RECHARGE,), frozenset({CommandState.PREPARING}))
            if c.waits_for == serial
        ]
        if not waiting:
            return
        if failure is not None:
            for command in waiting:
                self.tracker.apply(
                    command.serial, Event.REFUSED, f"the meter's recharge counters could not be read: {failure}"
                )
            self._coordinator.async_update_meter(meter_id)
            return
        self._coordinator.config_entry.async_create_background_task(
            self._coordinator.hass, self._send_prepared(meter_id, waiting), f"{DOMAIN} recharge {meter_id}"
        )

    async def _send_prepared(self, meter_id: str, waiting: list[TrackedCommand]) -> None:
        """Send parked recharges oldest first, each numbered after the ones before it."""
        for parked in waiting:
            meter = (self._coordinator.data or {}).get(meter_id)
            counters = self.counters.known(meter) if meter is not None else None
            if meter is None or counters is None:
                self.tracker.apply(parked.serial, Event.REFUSED, "the meter's recharge counters are not known")
                continue
            in_flight = [
                c
                for c in self.tracker.of_meter(meter_id, (CommandKind.RECHARGE,), IN_FLIGHT)
                if c.serial != parked.serial
            ]
            assert parked.amount is not None
            numbers = next_after(counters, in_flight, parked.amount)
            record = self.tracker.update(replace(parked, counter=numbers.counter, total=numbers.total, waits_for=None))
            try:
                await self._send(record, self._money_sender(meter))
            except HomeAssistantError as err:
                _LOGGER.warning("Recharge %s of meter %s could not be sent: %s", parked.reference, meter_id, err)

    async def async_queue(
        self,
        meter_id: str,
        kind: CommandKind,
        params: dict[str, Any],
        reference: str | None = None,
        *,
        schedule: datetime | None = None,
        timeout: timedelta | None = None,
        after: str | None = None,
    ) -> TrackedCommand:
        """Queue another command (read price, set remaining, open account, ...) and track it.

        `schedule` lets the cloud run it no earlier, `timeout` gives it that long from then (the ledger follows),
        `after` (a serial) makes it wait for that command's success.
        """
        meter = self._coordinator.meter(meter_id)
        serial = reference or f"HA{uuid.uuid4().hex[:20]}"
        known = self.tracker.get(serial)
        if known is not None and (known.meter_id != meter_id or known.kind is not kind):
            raise to_ha_error(CommandError(serial, reason="reference_conflict"))
        if known is not None and known.state not in RESENDABLE:
            return known
        options: dict[str, Any] = {"schedule": schedule, "timeout": timeout}
        if after is not None:
            upper = self.tracker.get(after)
            if upper is None or not upper.vendor_id:
                raise to_ha_error(CommandError(after, reason="unknown_upper_command"))
            options["upper"] = upper.vendor_id
        seconds = int(timeout.total_seconds()) if timeout else None
        record = known or self._record(
            serial, meter_id, kind, reference=serial, amount=params.get("amount"), scheduled=schedule, timeout=seconds
        )

        async def send(command: TrackedCommand) -> CommandReceipt:
            return await self._client.async_command(meter, kind, {**params, **options}, serial=command.serial)

        return await self._send(record, send)

    @staticmethod
    def _record(serial: str, meter_id: str, kind: CommandKind, **fields: Any) -> TrackedCommand:
        now = dt_util.utcnow()
        return TrackedCommand(serial, meter_id, kind, CommandState.SENDING, now, now, **fields)

    async def _send(
        self, record: TrackedCommand, send: Callable[[TrackedCommand], Awaitable[CommandReceipt]]
    ) -> TrackedCommand:
        """One attempt through the lifecycle: on disk before the wire, every answer an event."""
        command = self.tracker.start(record, Event.SEND).command
        await self.tracker.async_flush()
        try:
            receipt = await send(command)
        except DuplicateSerialError as err:
            # Ours (sent before, answer lost) → the cloud has it: pending. Never sent by us → someone else's.
            foreign = command.attempts <= 1
            change = self.tracker.apply(
                command.serial,
                Event.DUPLICATE,
                str(err),
                code=err.code,
                reason="reference_in_use" if foreign else None,
                vendor_id=err.vendor_id,
            )
            if foreign:
                await self.tracker.async_flush()
                self._coordinator.async_update_meter(command.meter_id)
                raise _translated("reference_in_use", command, err) from err
            assert change is not None
        except MeterCloudError as err:
            if not err.request_sent:
                self.tracker.apply(command.serial, Event.NOT_SENT, str(err))
            elif err.outcome_unknown:
                self.tracker.apply(command.serial, Event.LOST, str(err), code=err.code)
            else:
                self.tracker.apply(command.serial, Event.REFUSED, str(err), code=err.code, reason=err.reason)
                if err.reason == INACTIVE_REASON:
                    self._coordinator.account_states.refused(command.meter_id)
            await self.tracker.async_flush()
            self._coordinator.async_update_meter(command.meter_id)
            raise self._error(command, err) from err
        else:
            self.tracker.apply(command.serial, Event.ACCEPTED, vendor_id=receipt.vendor_id)
            self._coordinator.account_states.accepted(command.meter_id)
        await self.tracker.async_flush()
        self._coordinator.async_update_meter(command.meter_id)
        return self.tracker.get(command.serial) or command

    def _error(self, command: TrackedCommand, err: MeterCloudError) -> HomeAssistantError:
        """What the user is told; every lost answer says the same: it may have been carried out."""
        if err.request_sent and err.outcome_unknown:
            key = "money_outcome_unknown" if command.kind in MONEY_KINDS else "command_outcome_unknown"
            return _translated(key, command, err)
        return self._coordinator.error_for(err)

    # --- the cloud's queue -------------------------------------------------------------------------

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
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        current = command
        while current.state is CommandState.PENDING and loop.time() < deadline:
            await asyncio.sleep(min(POLL_WAIT, max(0.0, deadline - loop.time())))
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
        retryable = (CommandState.FAILED, CommandState.CANCELLED, CommandState.UNKNOWN)
        if command is None or command.meter_id != meter_id or command.state not in retryable or not command.vendor_id:
            raise to_ha_error(CommandError(serial, reason="no_retryable_command"))
        try:
            await self._client.async_retry_command(meter, self._ref(command))
        except MeterCloudError as err:
            raise self._coordinator.error_for(err) from err
        change = self.tracker.apply(serial, Event.RETRIED, "retried", attempts=command.attempts + 1)
        self._coordinator.async_update_meter(meter_id)
        return change.command if change else command

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
        change = self.tracker.apply(command.serial, Event.CANCELLED, "cancelled by Home Assistant")
        self._coordinator.async_update_meter(meter_id)
        return change.command if change else command
