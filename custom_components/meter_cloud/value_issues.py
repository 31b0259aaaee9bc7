"""Repair issues when a declared tariff layout and the meter's own data disagree, and their fix flow.

The client judges each poll's records (api/kumir/tariffs.py); a declaration the data contradict is never settled
in silence: a repair issue names the meter, what was declared and what the data showed, and offers to take what
the data showed or to keep the declaration regardless. Until then both are kept off the Energy dashboard.
"""

from __future__ import annotations

from typing import Any

from homeassistant.components.repairs import RepairsFlow
from homeassistant.config_entries import ConfigEntryState
from homeassistant.core import HomeAssistant, callback
from homeassistant.helpers import issue_registry as ir

from .api.values import Layout, ValueProblem, with_layout
from .compat import HAS_OPTIONS_FLOW_WITH_RELOAD
from .const import DOMAIN
from .coordinator import MeterCloudConfigEntry, MeterCloudCoordinator

ISSUE = "tariff_layout"
NONE = "—"


def issue_id(entry_id: str, meter_id: str) -> str:
    """The repair issue of one meter whose data contradict its declared layout."""
    return f"{ISSUE}_{entry_id}_{meter_id}"


def _number(value: int | None) -> str:
    return NONE if value is None else str(value)


def _placeholders(entry: MeterCloudConfigEntry, problem: ValueProblem) -> dict[str, str]:
    found, declared = problem.found, problem.declared
    parts = found.sums.get(found.sum, ()) if found.sum is not None else ()
    return {
        "title": entry.title,
        "meter": problem.meter_id,
        "device_type": problem.device_type,
        "declared_sum": _number(declared.sum),
        "declared_losses": _number(declared.losses),
        "detected_sum": _number(found.sum),
        "detected_parts": ", ".join(map(str, parts)) or NONE,
        "detected_losses": _number(found.loss),
    }


@callback
def async_sync_issues(hass: HomeAssistant, coordinator: MeterCloudCoordinator) -> None:
    """One issue per meter whose data contradict the declaration; issues of meters that now agree go."""
    entry = coordinator.config_entry
    current = {issue_id(entry.entry_id, p.meter_id): p for p in coordinator.client.value_problems()}
    prefix = issue_id(entry.entry_id, "")
    registry = ir.async_get(hass)
    for domain, known in list(registry.issues):
        if domain == DOMAIN and known.startswith(prefix) and known not in current:
            ir.async_delete_issue(hass, DOMAIN, known)
    for key, problem in current.items():
        ir.async_create_issue(
            hass,
            DOMAIN,
            key,
            is_fixable=True,
            severity=ir.IssueSeverity.WARNING,
            translation_key=ISSUE,
            translation_placeholders=_placeholders(entry, problem),
            data={"kind": ISSUE, "entry_id": entry.entry_id, "meter_id": problem.meter_id},
        )


def async_setup_value_issues(hass: HomeAssistant, coordinator: MeterCloudCoordinator) -> None:
    """Check after every poll (backends whose values the user can describe)."""
    if not coordinator.client.value_options:
        return
    coordinator.config_entry.async_on_unload(
        coordinator.async_add_listener(lambda: async_sync_issues(hass, coordinator))
    )
    async_sync_issues(hass, coordinator)


class TariffLayoutFlow(RepairsFlow):
    """Take the layout the data showed, or keep the declaration whatever the data say.

    Steps return Any: the result type is RepairsFlowResult from 2025.x, a plain FlowResult in 2025.4.
    """

    def __init__(self, entry_id: str, meter_id: str) -> None:
        """Remember which entry and meter the issue is about."""
        self._entry_id = entry_id
        self._meter_id = meter_id

    def _problem(self) -> tuple[MeterCloudConfigEntry, ValueProblem] | None:
        entry = self.hass.config_entries.async_get_entry(self._entry_id)
        if entry is None or entry.domain != DOMAIN or entry.state is not ConfigEntryState.LOADED:
            return None
        coordinator: MeterCloudCoordinator = entry.runtime_data
        problem = next((p for p in coordinator.client.value_problems() if p.meter_id == self._meter_id), None)
        return (entry, problem) if problem is not None else None

    async def async_step_init(self, user_input: dict[str, Any] | None = None) -> Any:
        """Offer the two ways out."""
        found = self._problem()
        if found is None:
            return self.async_abort(reason="entry_not_loaded")
        entry, problem = found
        return self.async_show_menu(
            step_id="init",
            menu_options=["use_detected", "keep_declared"],
            description_placeholders=_placeholders(entry, problem),
        )

    async def async_step_use_detected(self, user_input: dict[str, Any] | None = None) -> Any:
        """Declare what the data showed for the device type (checked against the data from now on)."""
        return self._store(lambda problem: Layout("declared", problem.found.sum, problem.found.loss))

    async def async_step_keep_declared(self, user_input: dict[str, Any] | None = None) -> Any:
        """Keep the declaration, no longer checked against the data."""
        return self._store(lambda problem: Layout("fixed", problem.declared.sum, problem.declared.losses))

    def _store(self, layout_of: Any) -> Any:
        found = self._problem()
        if found is None:
            return self.async_abort(reason="entry_not_loaded")
        entry, problem = found
        options = with_layout(entry.options, problem.device_type, layout_of(problem))
        self.hass.config_entries.async_update_entry(entry, options=options)
        if HAS_OPTIONS_FLOW_WITH_RELOAD:
            # 2025.4 reloads on changed options through its update listener (compat.reload_on_options).
            self.hass.config_entries.async_schedule_reload(entry.entry_id)
        ir.async_delete_issue(self.hass, DOMAIN, issue_id(entry.entry_id, problem.meter_id))
        return self.async_create_entry(data={})
