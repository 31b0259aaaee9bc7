"""Recharge sequence numbers: what a prepaid meter expects next, counting every system's recharges.

Goldcard (1004 paramNo 05 `rechargeCount`) and the IoT platform (`remote_charge_param.charge_times` and
`total_value`) refuse a recharge whose numbers do not follow on from the meter's own. The meter's numbers
come from the cloud (Goldcard 1014 at once; IoT only through a queued `getchargestate`), and this entry's
recharges still on their way are counted on top, so two recharges between polls get n+1 and n+2.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from .api import ChargeCounters, MeterData
from .commands import TrackedCommand

META_KEY = "charge_counters"


@dataclass(frozen=True, slots=True)
class Next:
    """The numbers a new recharge carries."""

    counter: int
    total: Decimal | None


def next_after(known: ChargeCounters, in_flight: Iterable[TrackedCommand], amount: Decimal) -> Next:
    """The recharge after the meter's own count and every recharge of ours still on its way."""
    times, total = known.times, known.total
    for command in in_flight:
        if command.counter is not None and command.counter > times:
            times, total = command.counter, command.total
    return Next(times + 1, None if total is None else total + amount)


class CounterBook:
    """What this entry learned of each meter's counters, kept in the ledger's meta (survives restarts)."""

    def __init__(self, meta: dict[str, Any]) -> None:
        """Bind to the ledger's meta."""
        self._meta = meta

    def _book(self) -> dict[str, dict[str, Any]]:
        book: dict[str, dict[str, Any]] = self._meta.setdefault(META_KEY, {})
        return book

    def learn(self, meter: MeterData, counters: ChargeCounters) -> None:
        """The meter's counters as the cloud reported them now (a charge-state read)."""
        self._book()[meter.meter_id] = {
            "times": counters.times,
            "total": None if counters.total is None else str(counters.total),
            # The meter's cumulative purchases at this moment: more later means someone else recharged it.
            "bought": None if meter.total_recharge is None else str(meter.total_recharge),
        }

    def advance(self, meter_id: str, command: TrackedCommand) -> None:
        """One of our recharges was confirmed: the meter's counters moved to the ones it carried."""
        entry = self._book().get(meter_id)
        if entry is None or command.counter is None or command.counter <= entry["times"]:
            return
        bought = entry.get("bought")
        entry |= {
            "times": command.counter,
            "total": None if command.total is None else str(command.total),
            "bought": None if bought is None or command.amount is None else str(Decimal(bought) + command.amount),
        }

    def forget(self, meter_id: str) -> None:
        """The meter refused numbers we believed (or another system recharged it): read them again."""
        self._book().pop(meter_id, None)

    def known(self, meter: MeterData) -> ChargeCounters | None:
        """What we know, unless the meter's purchases grew beyond what we know of (another system's recharge)."""
        entry = self._book().get(meter.meter_id)
        if entry is None:
            return None
        bought = entry.get("bought")
        if bought is not None and meter.total_recharge is not None and meter.total_recharge > Decimal(bought):
            self.forget(meter.meter_id)
            return None
        total = entry.get("total")
        return ChargeCounters(times=int(entry["times"]), total=None if total is None else Decimal(total))
