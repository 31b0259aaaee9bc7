"""The command lifecycle table and the recharge numbering, on their own (no cloud needed to state the rules)."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from custom_components.meter_cloud.api import ChargeCounters, CommandKind, CommandState, MeterData
from custom_components.meter_cloud.charges import CounterBook, next_after
from custom_components.meter_cloud.commands import TrackedCommand
from custom_components.meter_cloud.lifecycle import ANNOUNCED, FORGET, TRANSITIONS, Event, decide, step

S = CommandState
NOW = datetime(2026, 12, 5, tzinfo=UTC)


@pytest.mark.parametrize(
    ("state", "event", "target"),
    [
        (None, Event.SEND, S.SENDING),
        (None, Event.PREPARE, S.PREPARING),
        (S.PREPARING, Event.SEND, S.SENDING),
        (S.PREPARING, Event.EXPIRED, S.FAILED),  # nothing was ever sent
        (S.SENDING, Event.ACCEPTED, S.PENDING),
        (S.SENDING, Event.REFUSED, S.FAILED),
        (S.SENDING, Event.DUPLICATE_OURS, S.PENDING),
        (S.SENDING, Event.DUPLICATE_FOREIGN, S.FAILED),
        (S.SENDING, Event.LOST, S.UNKNOWN),
        (S.SENDING, Event.NOT_SENT, FORGET),
        (S.SENDING, Event.RESULT_OK, S.CONFIRMED),  # a result push overtaking the answer
        (S.PENDING, Event.RESULT_OK, S.CONFIRMED),
        (S.PENDING, Event.RESULT_FAILED, S.FAILED),
        (S.PENDING, Event.CANCELLED, S.CANCELLED),
        (S.PENDING, Event.EXPIRED, S.UNKNOWN),
        (S.UNKNOWN, Event.SEND, S.SENDING),  # a resend with the same serial
        (S.UNKNOWN, Event.ACCEPTED, S.PENDING),  # found in the cloud's queue
        (S.UNKNOWN, Event.RESULT_OK, S.CONFIRMED),
        (S.FAILED, Event.RESULT_OK, S.CONFIRMED),
        (S.FAILED, Event.RETRIED, S.PENDING),
        (S.CANCELLED, Event.RESULT_OK, S.CONFIRMED),
    ],
)
def test_transitions(state: CommandState | None, event: Event, target: CommandState | str) -> None:
    """Each rule of the table."""
    result = step(state, event)
    assert result is not None
    assert result.state == target
    assert result.overrides is (state in (S.FAILED, S.CANCELLED) and target is S.CONFIRMED)


@pytest.mark.parametrize(
    ("state", "event"),
    [
        (S.CONFIRMED, Event.RESULT_FAILED),  # a late failure never undoes money that arrived
        (S.CONFIRMED, Event.SEND),
        (S.FAILED, Event.RESULT_FAILED),  # a re-sent report
        (S.FAILED, Event.SEND),  # a refused reference is answered from the ledger, not resent
        (S.PENDING, Event.SEND),  # never a second send while the cloud has it
        (S.CANCELLED, Event.RESULT_FAILED),
        (S.UNKNOWN, Event.EXPIRED),
    ],
)
def test_nothing_happens(state: CommandState, event: Event) -> None:
    """Events that change nothing in a state."""
    assert step(state, event) is None


def test_every_state_has_a_row() -> None:
    """The table covers every state, and only settled or unknown states are announced."""
    assert set(TRANSITIONS) == {None, *CommandState}
    assert frozenset({S.CONFIRMED, S.FAILED, S.CANCELLED, S.UNKNOWN}) == ANNOUNCED


def test_duplicate_and_not_sent_depend_on_earlier_attempts() -> None:
    """'The cloud has this serial' means ours only if we sent it before; a resend that never left keeps it unknown."""
    assert decide(Event.DUPLICATE, attempts=1) is Event.DUPLICATE_FOREIGN
    assert decide(Event.DUPLICATE, attempts=2) is Event.DUPLICATE_OURS
    assert decide(Event.NOT_SENT, attempts=1) is Event.NOT_SENT
    assert decide(Event.NOT_SENT, attempts=3) is Event.LOST
    assert decide(Event.RESULT_OK, attempts=1) is Event.RESULT_OK


def _recharge(serial: str, state: CommandState, counter: int | None, total: str | None) -> TrackedCommand:
    return TrackedCommand(
        serial,
        "M1",
        CommandKind.RECHARGE,
        state,
        NOW,
        NOW,
        amount=Decimal(10),
        counter=counter,
        total=None if total is None else Decimal(total),
    )


def test_next_recharge_counts_the_ones_on_their_way() -> None:
    """n+1 on its own; after our in-flight n+1 and n+2, n+3; a count the meter already passed is ignored."""
    known = ChargeCounters(times=4, total=Decimal("300.000"))
    assert next_after(known, [], Decimal(10)) == next_after(known, [_recharge("a", S.PENDING, 2, "200")], Decimal(10))
    first = next_after(known, [], Decimal(10))
    assert (first.counter, first.total) == (5, Decimal("310.000"))
    flying = [_recharge("a", S.PENDING, 5, "310"), _recharge("b", S.UNKNOWN, 6, "330")]
    third = next_after(known, flying, Decimal("7.5"))
    assert (third.counter, third.total) == (7, Decimal("337.5"))
    # Goldcard sends no total.
    assert next_after(ChargeCounters(times=2), [], Decimal(10)).total is None


def test_counter_book_learns_advances_and_notices_other_systems() -> None:
    """Learned counters move with our confirmed recharges; purchases beyond them mean another system recharged."""
    meta: dict[str, object] = {}
    book = CounterBook(meta)
    meter = MeterData(meter_id="M1", total_recharge=Decimal(500))
    assert book.known(meter) is None
    book.learn(meter, ChargeCounters(times=3, total=Decimal(200)))
    assert book.known(meter) == ChargeCounters(times=3, total=Decimal(200))
    book.advance("M1", _recharge("a", S.CONFIRMED, 4, "210"))
    assert book.known(MeterData(meter_id="M1", total_recharge=Decimal(510))) == ChargeCounters(4, Decimal(210))
    book.advance("M1", _recharge("old", S.CONFIRMED, 2, "150"))  # an older one changes nothing
    assert book.known(MeterData(meter_id="M1", total_recharge=Decimal(505))) == ChargeCounters(4, Decimal(210))
    # 20 more bought than we know of: someone else recharged; read the counters again.
    assert book.known(MeterData(meter_id="M1", total_recharge=Decimal(530))) is None
    assert book.known(meter) is None
    book.learn(meter, ChargeCounters(times=9, total=Decimal(1)))
    book.forget("M1")
    assert book.known(meter) is None
