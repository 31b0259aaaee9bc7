"""Fix flows of Meter Cloud's repair issues: a listed meter that keeps missing."""

from __future__ import annotations

from typing import Any

from homeassistant.components.repairs import RepairsFlow
from homeassistant.config_entries import ConfigEntryState
from homeassistant.core import HomeAssistant

from .const import DOMAIN
from .coordinator import MeterCloudCoordinator


class MissingMeterFlow(RepairsFlow):
    """Stop following a meter the cloud no longer answers for, or keep waiting another day.

    Steps return Any: the result type is RepairsFlowResult from 2025.x, a plain FlowResult in 2025.4.
    """

    def __init__(self, entry_id: str, meter_id: str) -> None:
        """Remember which entry and meter the issue is about."""
        self._entry_id = entry_id
        self._meter_id = meter_id

    def _coordinator(self) -> MeterCloudCoordinator | None:
        entry = self.hass.config_entries.async_get_entry(self._entry_id)
        if entry is None or entry.domain != DOMAIN or entry.state is not ConfigEntryState.LOADED:
            return None
        coordinator: MeterCloudCoordinator = entry.runtime_data
        return coordinator

    async def async_step_init(self, user_input: dict[str, Any] | None = None) -> Any:
        """Offer the two ways out."""
        coordinator = self._coordinator()
        if coordinator is None:
            return self.async_abort(reason="entry_not_loaded")
        return self.async_show_menu(
            step_id="init",
            menu_options=["stop_following", "keep_waiting"],
            description_placeholders={
                "meter": self._meter_id,
                "title": coordinator.config_entry.title,
                "since": coordinator.presence.missing_since_text(self._meter_id),
            },
        )

    async def async_step_stop_following(self, user_input: dict[str, Any] | None = None) -> Any:
        """Take the meter off the entry's list; the entry reloads without it (its device goes)."""
        coordinator = self._coordinator()
        if coordinator is None:
            return self.async_abort(reason="entry_not_loaded")
        client, entry = coordinator.client, coordinator.config_entry
        key = client.meter_list_key
        assert key is not None
        client.stop_following(self._meter_id)
        self.hass.config_entries.async_update_entry(entry, data={**entry.data, key: client.meter_list()})
        self.hass.config_entries.async_schedule_reload(entry.entry_id)
        return self.async_create_entry(data={})

    async def async_step_keep_waiting(self, user_input: dict[str, Any] | None = None) -> Any:
        """Keep the meter; ask again after another day without it."""
        coordinator = self._coordinator()
        if coordinator is None:
            return self.async_abort(reason="entry_not_loaded")
        coordinator.presence.keep_waiting(self._meter_id)
        return self.async_create_entry(data={})


async def async_create_fix_flow(
    hass: HomeAssistant, issue_id: str, data: dict[str, str | int | float | None] | None
) -> RepairsFlow:
    """The fix flow of an issue: a missing meter, or a tariff layout the data contradict."""
    assert data is not None
    if data.get("kind") == "tariff_layout":
        from .value_issues import TariffLayoutFlow  # noqa: PLC0415

        return TariffLayoutFlow(str(data["entry_id"]), str(data["meter_id"]))
    return MissingMeterFlow(str(data["entry_id"]), str(data["meter_id"]))
