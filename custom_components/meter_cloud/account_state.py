"""A meter's account state where the cloud never reports it: what Home Assistant did to it, or was told.

Cangnan's platform has a meter state (chapter 8: 0 opened, 1 in use, -1 suspended, -2 cancelled) but no call
that returns it. What the entry learns is kept in the command ledger's meta, so it survives restarts:
- its own account operations: register (opened), suspend, resume (in use), replace (the new meter opened);
- an opened meter that reports a reading taken after it was opened is in use (the platform's own rule:
  gas flowed);
- a refusal "this user is cancelled, suspended or dormant" (80002023): suspended if that is what we know,
  otherwise inactive (the platform does not say which of the three);
- a command the platform accepted: the meter is not cancelled, suspended or dormant, so in use (or still
  opened).
A state the cloud does report (a row's reserved state column) always wins and is remembered.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import datetime
from typing import Any

from homeassistant.util import dt as dt_util

from .api import MeterData, MeterStatus

META_KEY = "account_state"
INACTIVE_REASON = "account_inactive"
SOURCE_OURS, SOURCE_PLATFORM = "home_assistant", "platform"
# States a refusal for an inactive account keeps (it names them among its three).
REFUSED_KEEPS = frozenset({MeterStatus.SUSPENDED, MeterStatus.CANCELLED})


class AccountStates:
    """Per meter: the last account state known and since when, bound to the ledger's meta."""

    def __init__(
        self,
        meta: dict[str, Any],
        save: Callable[[], None],
        changed: Callable[[str], None],
        *,
        enabled: bool,
    ) -> None:
        """Bind to the ledger's meta; `changed(meter_id)` shows news; `enabled` where polls lack the state."""
        self._meta = meta
        self._save = save
        self._changed = changed
        self.enabled = enabled

    def _book(self) -> dict[str, dict[str, str]]:
        book: dict[str, dict[str, str]] = self._meta.setdefault(META_KEY, {})
        return book

    def known(self, meter_id: str) -> MeterStatus | None:
        """The state the entry knows of, if any."""
        entry = self._book().get(meter_id)
        return None if entry is None else MeterStatus(entry["status"])

    def learn(self, meter_id: str, status: MeterStatus) -> None:
        """The meter is in `status` now (our own operation, a refusal): shown at once."""
        if self.enabled and self._record(meter_id, status, SOURCE_OURS):
            self._changed(meter_id)

    def _record(self, meter_id: str, status: MeterStatus, source: str) -> bool:
        entry = self._book().get(meter_id)
        if entry is not None and entry["status"] == status.value and entry["source"] == source:
            return False
        self._book()[meter_id] = {"status": status.value, "since": dt_util.utcnow().isoformat(), "source": source}
        self._save()
        return True

    def forget(self, meter_id: str) -> None:
        """The meter left the entry (deregistered, replaced)."""
        if self._book().pop(meter_id, None) is not None:
            self._save()

    def refused(self, meter_id: str) -> None:
        """The platform refused an operation because the account is cancelled, suspended or dormant."""
        if self.known(meter_id) not in REFUSED_KEEPS:
            self.learn(meter_id, MeterStatus.INACTIVE)

    def accepted(self, meter_id: str) -> None:
        """The platform carried out a command for the meter: its account is usable."""
        if self.known(meter_id) is not MeterStatus.OPENED:
            self.learn(meter_id, MeterStatus.ACTIVE)

    def apply(self, meter: MeterData) -> MeterData:
        """The meter with its account state: the cloud's when it gives one, else what the entry learned."""
        if not self.enabled:
            return meter
        if meter.status is not None:
            self._record(meter.meter_id, meter.status, SOURCE_PLATFORM)
            return meter
        entry = self._book().get(meter.meter_id)
        if entry is None:
            return meter
        status = MeterStatus(entry["status"])
        if status is MeterStatus.OPENED and _after(meter.reading_time, entry["since"]):
            status = MeterStatus.ACTIVE
            self._record(meter.meter_id, status, SOURCE_OURS)
        return replace(meter, status=status)

    def diagnostics(self) -> dict[str, Any]:
        """What is known, for diagnostics."""
        return dict(self._book())


def _after(when: datetime | None, since: str) -> bool:
    return when is not None and when > datetime.fromisoformat(since)
