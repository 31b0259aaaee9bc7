"""Push health on evidence: a repair issue only when pushes really are not arriving.

- `no_external_url`: the backend pushes, Home Assistant has no external URL, and no authenticated push has come
  for NO_PUSH_FOR since the entry was set up (pushes over the LAN or a tunnel count: then nothing is wrong).
- `pushes_stopped`: the entry was receiving pushes, none has come for NO_PUSH_FOR, while polls show readings newer
  than the last push (the vendor stopped pushing, or no longer reaches the push URL).
An accepted push clears both.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from homeassistant.core import callback
from homeassistant.helpers import issue_registry as ir
from homeassistant.helpers.event import async_track_time_interval
from homeassistant.helpers.network import NoURLAvailableError, get_url
from homeassistant.util import dt as dt_util

from .api import Capability
from .const import CONF_PUSH_ID, DOMAIN, PUSH_URL_PREFIX

if TYPE_CHECKING:
    from homeassistant.core import HomeAssistant

    from .coordinator import MeterCloudCoordinator

NO_PUSH_FOR = timedelta(hours=24)
CHECK_EVERY = timedelta(hours=1)
# The time of the last push is written at most this often (pushes can come many a second).
SAVE_EVERY = timedelta(minutes=5)
META_KEY = "last_push"
ISSUES = ("no_external_url", "pushes_stopped")


def push_path(push_id: str) -> str:
    """The entry's push path; the vendor appends its own fixed paths to it."""
    return f"{PUSH_URL_PREFIX}/{push_id}/"


def push_url(hass: HomeAssistant, push_id: str) -> str:
    """The base URL to give the vendor (Home Assistant's own address when it has no external one)."""
    try:
        base = get_url(hass, prefer_external=True, allow_cloud=False)
    except NoURLAvailableError:
        base = "http://<home-assistant-address>:8123"
    return f"{base}{push_path(push_id)}"


class PushHealth:
    """Whether one entry's pushes arrive."""

    def __init__(self, coordinator: MeterCloudCoordinator) -> None:
        """Start the 24 hours of grace now (a restart starts them again)."""
        self._coordinator = coordinator
        self._started = dt_util.utcnow()
        self._saved: datetime | None = None

    @property
    def _hass(self) -> HomeAssistant:
        return self._coordinator.hass

    def _issue_id(self, key: str) -> str:
        return f"{key}_{self._coordinator.config_entry.entry_id}"

    @property
    def last_push(self) -> datetime | None:
        """When the last authenticated push arrived."""
        text = self._coordinator.commands.meta.get(META_KEY)
        return datetime.fromisoformat(text) if text else None

    @callback
    def async_start(self) -> None:
        """Check now and every hour while the entry is loaded."""
        entry = self._coordinator.config_entry
        entry.async_on_unload(async_track_time_interval(self._hass, self.async_check, CHECK_EVERY))
        self.async_check()

    @callback
    def accepted(self) -> None:
        """An authenticated push arrived: pushes work."""
        now = dt_util.utcnow()
        meta = self._coordinator.commands.meta
        meta[META_KEY] = now.isoformat()
        if self._saved is None or now - self._saved >= SAVE_EVERY:
            self._saved = now
            self._coordinator.commands.save_meta()
        for key in ISSUES:
            ir.async_delete_issue(self._hass, DOMAIN, self._issue_id(key))

    @callback
    def async_check(self, _now: datetime | None = None) -> None:
        """Raise or clear the issues on what has (not) arrived."""
        if not self._coordinator.client.supports(Capability.PUSH):
            self._set(None)
            return
        now, last = dt_util.utcnow(), self.last_push
        if last is None:
            silent = now - self._started >= NO_PUSH_FOR
            self._set("no_external_url" if silent and not self._hass.config.external_url else None)
            return
        newest = max(
            (m.reading_time for m in (self._coordinator.data or {}).values() if m.reading_time is not None),
            default=None,
        )
        stopped = now - last >= NO_PUSH_FOR and newest is not None and newest > last
        self._set("pushes_stopped" if stopped else None)

    def _set(self, key: str | None) -> None:
        """Show issue `key` (None: no issue) and no other."""
        entry = self._coordinator.config_entry
        for other in ISSUES:
            if other != key:
                ir.async_delete_issue(self._hass, DOMAIN, self._issue_id(other))
        if key is None:
            return
        push_id = entry.data[CONF_PUSH_ID]
        external = self._hass.config.external_url
        ir.async_create_issue(
            self._hass,
            DOMAIN,
            self._issue_id(key),
            is_fixable=False,
            severity=ir.IssueSeverity.WARNING,
            translation_key=key,
            translation_placeholders={
                "title": entry.title,
                # Only a URL the vendor can use: the external one, or where it goes once there is one.
                "push_url": f"{external.rstrip('/')}{push_path(push_id)}"
                if external
                else f"https://<your-external-address>{push_path(push_id)}",
                "last_push": ""
                if self.last_push is None
                else dt_util.as_local(self.last_push).strftime("%Y-%m-%d %H:%M"),
            },
        )
