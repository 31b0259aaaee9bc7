"""Home Assistant 2026's cap on the enabled entities of one entry: a repair issue when an entry reaches it.

Past the cap Home Assistant adds no more entities and only logs a warning that asks for a bug report; the user would
find meters without entities and no reason. The issue says why and what to do.
"""

from __future__ import annotations

from homeassistant.core import HomeAssistant, callback
from homeassistant.helpers import issue_registry as ir

from .compat import enabled_entity_cap, enabled_entity_count
from .const import DOMAIN
from .coordinator import MeterCloudCoordinator

ISSUE = "entity_cap"


def issue_id(entry_id: str) -> str:
    """The entry's issue."""
    return f"{ISSUE}_{entry_id}"


@callback
def async_check_entity_cap(hass: HomeAssistant, coordinator: MeterCloudCoordinator) -> None:
    """Raise the issue while the entry has as many enabled entities as Home Assistant adds; clear it once below."""
    cap = enabled_entity_cap()
    if cap is None:
        return
    entry = coordinator.config_entry
    count = enabled_entity_count(hass, entry.entry_id)
    if count < cap:
        ir.async_delete_issue(hass, DOMAIN, issue_id(entry.entry_id))
        return
    ir.async_create_issue(
        hass,
        DOMAIN,
        issue_id(entry.entry_id),
        is_fixable=False,
        severity=ir.IssueSeverity.WARNING,
        translation_key=ISSUE,
        translation_placeholders={
            "title": entry.title,
            "cap": str(cap),
            "count": str(count),
            "meters": str(len(coordinator.data or {})),
        },
    )


@callback
def async_setup_entity_cap(hass: HomeAssistant, coordinator: MeterCloudCoordinator) -> None:
    """Check now (the platforms have added their first entities) and after each poll that brought something new
    (a meter new to the account adds entities)."""
    coordinator.config_entry.async_on_unload(
        coordinator.async_add_listener(lambda: async_check_entity_cap(hass, coordinator))
    )
    async_check_entity_cap(hass, coordinator)
