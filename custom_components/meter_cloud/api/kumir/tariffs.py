"""Sum and losses systems (tariffs) of a device: detected from its records, declared per device type, resolved.

The spec's glossary says a CE303's tariff 1 is the sum of all tariffs and a Mercury 230 ART's tariff 6 the sum of
1-4 with tariff 5 the technical losses; those are the declared defaults. Any other device (the spec's own m234
may be laid out like the 230) is judged by its data: a system whose every record equals the sum of other systems
(within what the export's decimals can round away) is a sum system; a system beside a detected sum that is not
among its parts is taken for losses, as on the 230. A declaration the data contradict is reported (a repair
issue), and meanwhile whatever either of them calls a sum or losses stays off the Energy dashboard.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from itertools import combinations

from ..values import Layout, LayoutFinding
from .params import LOSSES_SYSTEMS, SUM_SYSTEMS

# A sum adds up at least two systems: one system "equal to" another is a copy, not a sum.
MIN_PARTS = 2
# Records that must back a sum (with its value and two of its parts non-zero) before it is believed.
MIN_SUPPORT = 2
# Above this many systems the subsets to try grow too fast; such devices are not judged.
MAX_SYSTEMS = 8
# (archive, instant) pairs remembered per meter so overlapping poll windows are judged once.
SEEN_RECORDS = 256

type Record = Mapping[int, Mapping[str, Decimal]]


def glossary_layout(devtype: str) -> Layout | None:
    """The layout the spec's glossary gives a device type (CE303, Mercury 230 ART), if any."""
    key = devtype.lower()
    sums = SUM_SYSTEMS.get(key, {})
    losses = LOSSES_SYSTEMS.get(key, frozenset())
    if not sums and not losses:
        return None
    return Layout("declared", min(sums) if sums else None, min(losses) if losses else None)


def _tolerance(values: Iterable[Decimal], parts: int) -> Decimal:
    """What rounding can account for: each part and the sum are off by at most half their last digit."""
    exponent = min(int(value.as_tuple().exponent) for value in values)
    return Decimal(parts + 1) / 2 * Decimal(1).scaleb(min(exponent, 0))


@dataclass(slots=True)
class _Candidate:
    support: int = 0


class SumDetector:
    """One meter's evidence: candidate (sum, parts) pairs that every judged record has agreed with so far."""

    def __init__(self) -> None:
        """No evidence yet."""
        self._alive: dict[tuple[int, tuple[int, ...]], _Candidate] = {}
        self._killed: set[tuple[int, tuple[int, ...]]] = set()
        self._seen: deque[tuple[str, datetime]] = deque(maxlen=SEEN_RECORDS)
        self._nonzero: set[int] = set()
        self.judged = 0

    def feed(self, archive: str, when: datetime, record: Record, counters: Iterable[str]) -> None:
        """Judge one record (all systems of one time of one archive) over the counter parameters."""
        if (archive, when) in self._seen:
            return
        self._seen.append((archive, when))
        names = frozenset(counters)
        values = {system: {p: v for p, v in params.items() if p in names} for system, params in record.items()}
        values = {system: params for system, params in values.items() if params}
        self._nonzero.update(system for system, params in values.items() if any(params.values()))
        systems = sorted(values)
        if not MIN_PARTS < len(systems) <= MAX_SYSTEMS:
            return
        judged = False
        for total in systems:
            others = [system for system in systems if system != total]
            for size in range(MIN_PARTS, len(others) + 1):
                for parts in combinations(others, size):
                    verdict = self._judge(values, total, parts)
                    if verdict is None:
                        continue
                    judged = judged or any(values[total].values())
                    key = (total, parts)
                    if key in self._killed:
                        continue
                    if not verdict[0]:
                        self._killed.add(key)
                        self._alive.pop(key, None)
                        continue
                    candidate = self._alive.setdefault(key, _Candidate())
                    if verdict[1]:
                        candidate.support += 1
        self.judged += judged

    @staticmethod
    def _judge(
        values: Mapping[int, Mapping[str, Decimal]], total: int, parts: tuple[int, ...]
    ) -> tuple[bool, bool] | None:
        """(agrees, backs it) over the parameters `total` and every part report; None when none is comparable."""
        compared = False
        backed = False
        for param, value in values[total].items():
            addends = [values[part].get(param) for part in parts]
            if any(addend is None for addend in addends):
                continue
            present = [addend for addend in addends if addend is not None]
            compared = True
            if abs(value - sum(present, Decimal(0))) > _tolerance([value, *present], len(parts)):
                return False, False
            backed = backed or (value != 0 and sum(1 for addend in present if addend != 0) >= MIN_PARTS)
        return (True, backed) if compared else None

    def finding(self, meter_id: str) -> LayoutFinding | None:
        """What the records showed, once at least MIN_SUPPORT of them were judged; None before."""
        if self.judged < MIN_SUPPORT:
            return None
        best: dict[int, tuple[int, ...]] = {}
        for (total, parts), candidate in self._alive.items():
            if candidate.support < MIN_SUPPORT:
                continue
            known = best.get(total)
            # The most parts: a system that stays at zero adds nothing but belongs to the sum all the same.
            if known is None or (len(parts), [-p for p in parts]) > (len(known), [-p for p in known]):
                best[total] = parts
        # A system that is a part of another sum is a tariff, not a second sum (nested sums are not a layout).
        sums = {total: parts for total, parts in best.items() if not any(total in p for p in best.values())}
        inside = {part for parts in sums.values() for part in parts} | set(sums)
        losses = frozenset(self._nonzero - inside) if sums else frozenset()
        return LayoutFinding(meter_id, sums, losses)


@dataclass(frozen=True, slots=True)
class Resolved:
    """The layout in force for one meter: sum systems with their parts, losses systems, and a disagreement."""

    sums: Mapping[int, tuple[int, ...]]
    losses: frozenset[int]
    disagrees: bool = False


def resolve(layout: Layout, found: LayoutFinding | None, reported: Iterable[int]) -> Resolved:
    """Declaration and finding together, over the systems the meter reports."""
    systems = set(reported)
    detected_sums = dict(found.sums) if found is not None else {}
    detected_losses = found.losses if found is not None else frozenset()
    if layout.mode == "detect":
        return Resolved(detected_sums, detected_losses)
    declared_sum = layout.sum if layout.sum in systems else None
    declared_loss = layout.losses if layout.losses in systems else None
    declared_losses = frozenset({declared_loss}) if declared_loss is not None else frozenset()

    def parts_of(total: int) -> tuple[int, ...]:
        if total in detected_sums:
            return detected_sums[total]
        return tuple(sorted(systems - {total} - declared_losses))

    declared = {declared_sum: parts_of(declared_sum)} if declared_sum is not None else {}
    if layout.mode == "fixed" or found is None or agrees(layout, found, systems):
        return Resolved(declared, declared_losses)
    # Whatever either calls a sum or losses stays off the Energy dashboard until the user decides.
    return Resolved({**declared, **detected_sums}, declared_losses | detected_losses, disagrees=True)


def agrees(layout: Layout, found: LayoutFinding, systems: Iterable[int]) -> bool:
    """Whether a declaration says what the data showed (over the systems the meter reports)."""
    reported = set(systems)
    declared_sum = layout.sum if layout.sum in reported else None
    declared_loss = layout.losses if layout.losses in reported else None
    if declared_sum != found.sum:
        return False
    # Losses are known only beside a sum: without one, the data cannot tell losses from a tariff.
    return declared_sum is None or declared_loss == found.loss
