"""The one lifecycle of every remote command (valve, money, price, queued reads), whatever the backend.

Backends only translate their vendor's answers into the events below; what an event means for a command is
decided here, once, from the command's state and whether this entry sent its serial before. The command
ledger (commands.py) persists the states; no Home Assistant import is needed here.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from .api import CommandState

S = CommandState


class Event(StrEnum):
    """What happened to a command, in the backend-neutral words of the lifecycle."""

    # Waiting for something before it can go (IoT: the meter's recharge counters are being read).
    PREPARE = "prepare"
    # On disk, about to go on the wire: the first attempt, or a resend of the same serial.
    SEND = "send"
    ACCEPTED = "accepted"
    # A definite refusal: the cloud understood the request and will not carry it out.
    REFUSED = "refused"
    # The cloud already has this serial / trade number (mapped to one of the two below by `decide`).
    DUPLICATE = "duplicate"
    DUPLICATE_OURS = "duplicate_ours"
    DUPLICATE_FOREIGN = "duplicate_foreign"
    # Sent, but the answer was lost (timeout, 5xx, a garbled body, a dropped connection): outcome unknown.
    LOST = "lost"
    # Never left (connection refused before the request went out).
    NOT_SENT = "not_sent"
    RESULT_OK = "result_ok"
    RESULT_FAILED = "result_failed"
    CANCELLED = "cancelled"
    # No result within the time the cloud had for it.
    EXPIRED = "expired"
    # Put back in the cloud's queue (IoT Retry).
    RETRIED = "retried"


# The record is forgotten: the command never left, nothing can come of it.
FORGET = "forget"

TRANSITIONS: dict[CommandState | None, dict[Event, CommandState | str]] = {
    None: {Event.PREPARE: S.PREPARING, Event.SEND: S.SENDING},
    S.PREPARING: {
        Event.SEND: S.SENDING,
        Event.REFUSED: S.FAILED,
        Event.CANCELLED: S.CANCELLED,
        # Nothing of it was ever sent: no result can come.
        Event.EXPIRED: S.FAILED,
    },
    S.SENDING: {
        Event.ACCEPTED: S.PENDING,
        Event.REFUSED: S.FAILED,
        Event.DUPLICATE_OURS: S.PENDING,
        Event.DUPLICATE_FOREIGN: S.FAILED,
        Event.LOST: S.UNKNOWN,
        Event.NOT_SENT: FORGET,
        # A result push can overtake the answer to the request itself.
        Event.RESULT_OK: S.CONFIRMED,
        Event.RESULT_FAILED: S.FAILED,
    },
    S.PENDING: {
        Event.ACCEPTED: S.PENDING,
        Event.RESULT_OK: S.CONFIRMED,
        Event.RESULT_FAILED: S.FAILED,
        Event.CANCELLED: S.CANCELLED,
        Event.EXPIRED: S.UNKNOWN,
    },
    S.UNKNOWN: {
        Event.SEND: S.SENDING,
        Event.ACCEPTED: S.PENDING,
        Event.RESULT_OK: S.CONFIRMED,
        Event.RESULT_FAILED: S.FAILED,
        Event.CANCELLED: S.CANCELLED,
        Event.RETRIED: S.PENDING,
    },
    # A success reported after a failure or a cancellation is the truth: the money or the valve moved.
    S.FAILED: {Event.RESULT_OK: S.CONFIRMED, Event.RETRIED: S.PENDING},
    S.CANCELLED: {Event.RESULT_OK: S.CONFIRMED, Event.RETRIED: S.PENDING},
    S.CONFIRMED: {},
}

# States a user or an automation is told about when a command enters them (a bus event, a log line).
ANNOUNCED = frozenset({S.CONFIRMED, S.FAILED, S.CANCELLED, S.UNKNOWN})
# States whose command is still on its way: counted when the next recharge's sequence number is chosen.
IN_FLIGHT = frozenset({S.PREPARING, S.SENDING, S.PENDING, S.UNKNOWN})
# Commands in these states can be sent again with the same serial when the user asks (same reference).
RESENDABLE = frozenset({S.UNKNOWN})


@dataclass(frozen=True, slots=True)
class Step:
    """The outcome of one event: the new state (or FORGET) and whether it overrides an earlier verdict."""

    state: CommandState | str
    overrides: bool = False


def decide(event: Event, *, attempts: int) -> Event:
    """Resolve the events whose meaning depends on whether this entry sent the serial before.

    `attempts` counts this entry's sends of the serial, the current one included.
    """
    if event is Event.DUPLICATE:
        return Event.DUPLICATE_OURS if attempts > 1 else Event.DUPLICATE_FOREIGN
    if event is Event.NOT_SENT and attempts > 1:
        # This attempt never left, but an earlier one did: its fate is still unknown.
        return Event.LOST
    return event


def step(state: CommandState | None, event: Event) -> Step | None:
    """The transition for `event` in `state`, or None when the event changes nothing there."""
    target = TRANSITIONS.get(state, {}).get(event)
    if target is None:
        return None
    return Step(target, overrides=state in (S.FAILED, S.CANCELLED) and target is S.CONFIRMED)
