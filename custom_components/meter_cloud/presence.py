"""Which meters an entry still has, judged on evidence rather than on one poll.

A meter missing from a successful answer goes unavailable at once (its entities read the coordinator's data,
which no longer holds it); its device, with the user's names, areas and cards, is kept until the evidence is
clear:
- backends that follow a list the user keeps (Cangnan pairs, KUMIR nodes) never drop a listed meter's device:
  after it has been missing or refused for a day, a repair issue names it (fix: stop following it, or wait);
- backends that list the whole account (Goldcard 1013, the IoT platform) detach a device after its meter was
  absent from ABSENT_POLLS successful polls in a row, or at once when Home Assistant itself removed the meter
  (the deregister and replace actions).
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from homeassistant.helpers import device_registry as dr
from homeassistant.helpers import issue_registry as ir
from homeassistant.util import dt as dt_util

from .api import MeterData
from .compat import detach_device
from .const import DOMAIN

if TYPE_CHECKING:
    from .coordinator import MeterCloudCoordinator

_LOGGER = logging.getLogger(__name__)

# Whole-account backends: successful polls in a row without a meter before its device goes.
ABSENT_POLLS = 3
# Listed meters: how long a meter may be missing before a repair issue asks the user.
MISSING_FOR = timedelta(days=1)
META_KEY = "missing_since"


def issue_id(entry_id: str, meter_id: str) -> str:
    """The repair issue of a listed meter that keeps missing."""
    return f"meter_missing_{entry_id}_{meter_id}"


class Presence:
    """Missing meters of one entry: how long, how many polls, and what to do about it."""

    def __init__(self, coordinator: MeterCloudCoordinator) -> None:
        """Bind to the entry's coordinator (its ledger keeps when a listed meter went missing)."""
        self._coordinator = coordinator
        self._absent_polls: dict[str, int] = {}
        # The meters and the followed list of the last poll that left nothing to weigh: the same again is news to
        # no one, and skips reading the device registry (a steady poll of 1000 meters).
        self._settled: tuple[frozenset[str], frozenset[str] | None] | None = None

    @property
    def _since(self) -> dict[str, str]:
        since: dict[str, str] = self._coordinator.commands.meta.setdefault(META_KEY, {})
        return since

    def _devices(self) -> dict[str, dr.DeviceEntry]:
        """The entry's devices by meter id."""
        coordinator = self._coordinator
        prefix = f"{coordinator.client.backend}_"
        registry = dr.async_get(coordinator.hass)
        devices = {}
        for device in dr.async_entries_for_config_entry(registry, coordinator.config_entry.entry_id):
            for domain, ident in device.identifiers:
                if domain == DOMAIN and ident.startswith(prefix):
                    devices[ident.removeprefix(prefix)] = device
        return devices

    def after_poll(self, data: dict[str, MeterData]) -> None:
        """Weigh one successful poll's evidence."""
        followed = self._coordinator.client.followed()
        if self._settled is not None and self._settled[1] == followed and self._settled[0] == data.keys():
            return
        self._settled = None
        if followed is None:
            self._whole_account(data)
        else:
            self._listed(data, followed)
        if data and not self._absent_polls and not self._since and (followed is None or followed <= data.keys()):
            self._settled = (frozenset(data), followed)

    def _whole_account(self, data: dict[str, MeterData]) -> None:
        if not data:
            # An account never loses every meter at once: an empty list is a cloud glitch.
            return
        for meter_id, device in self._devices().items():
            if meter_id in data:
                self._absent_polls.pop(meter_id, None)
                continue
            polls = self._absent_polls[meter_id] = self._absent_polls.get(meter_id, 0) + 1
            if polls >= ABSENT_POLLS:
                _LOGGER.info("Meter %s was absent from %s polls in a row: its device is removed", meter_id, polls)
                self._detach(meter_id, device)

    def _listed(self, data: dict[str, MeterData], followed: frozenset[str]) -> None:
        now = dt_util.utcnow()
        since = self._since
        for meter_id, device in self._devices().items():
            if meter_id not in followed:
                # No longer on the user's list (reconfigure, or a meter closed through Home Assistant).
                self._detach(meter_id, device)
        for meter_id in followed:
            if meter_id in data:
                if since.pop(meter_id, None) is not None:
                    self._coordinator.commands.save_meta()
                    ir.async_delete_issue(self._coordinator.hass, DOMAIN, issue_id(self._entry_id, meter_id))
                continue
            if meter_id not in since:
                _LOGGER.debug("Listed meter %s is missing from this poll; its entities are unavailable", meter_id)
                since[meter_id] = now.isoformat()
                self._coordinator.commands.save_meta()
            missing = datetime.fromisoformat(since[meter_id])
            if now - missing >= MISSING_FOR:
                self._raise(meter_id)
        for meter_id in set(since) - followed:
            del since[meter_id]
            ir.async_delete_issue(self._coordinator.hass, DOMAIN, issue_id(self._entry_id, meter_id))

    @property
    def _entry_id(self) -> str:
        return self._coordinator.config_entry.entry_id

    def missing_since_text(self, meter_id: str) -> str:
        """When a listed meter went missing, in local time (empty when it is not missing)."""
        since = self._since.get(meter_id)
        return dt_util.as_local(datetime.fromisoformat(since)).strftime("%Y-%m-%d %H:%M") if since else ""

    def _raise(self, meter_id: str) -> None:
        """Ask the user about a listed meter that has been missing for a day."""
        entry = self._coordinator.config_entry
        ir.async_create_issue(
            self._coordinator.hass,
            DOMAIN,
            issue_id(entry.entry_id, meter_id),
            is_fixable=True,
            severity=ir.IssueSeverity.WARNING,
            translation_key="meter_missing",
            translation_placeholders={
                "title": entry.title,
                "meter": meter_id,
                "since": self.missing_since_text(meter_id),
            },
            data={"entry_id": entry.entry_id, "meter_id": meter_id},
        )

    def keep_waiting(self, meter_id: str) -> None:
        """The user waits for the meter: ask again after another day of absence."""
        self._settled = None
        self._since[meter_id] = dt_util.utcnow().isoformat()
        self._coordinator.commands.save_meta()
        ir.async_delete_issue(self._coordinator.hass, DOMAIN, issue_id(self._entry_id, meter_id))

    def forget(self, meter_id: str) -> None:
        """Home Assistant itself removed the meter (deregister, replace): its device goes now."""
        self._settled = None
        device = self._devices().get(meter_id)
        if device is not None:
            self._detach(meter_id, device)

    def _detach(self, meter_id: str, device: dr.DeviceEntry) -> None:
        self._absent_polls.pop(meter_id, None)
        if self._since.pop(meter_id, None) is not None:
            self._coordinator.commands.save_meta()
        ir.async_delete_issue(self._coordinator.hass, DOMAIN, issue_id(self._entry_id, meter_id))
        detach_device(self._coordinator.hass, device, self._entry_id)

    def diagnostics(self) -> dict[str, Any]:
        """What is missing, for diagnostics."""
        return {"absent_polls": dict(self._absent_polls), "missing_since": dict(self._since)}
