"""The repair issue for an entry that reaches Home Assistant 2026's cap on enabled entities per entry."""

from __future__ import annotations

from unittest.mock import patch

import pytest
from homeassistant.core import HomeAssistant
from homeassistant.helpers import entity_platform
from homeassistant.helpers import entity_registry as er
from homeassistant.helpers import issue_registry as ir
from pytest_homeassistant_custom_component.common import MockConfigEntry

from custom_components.meter_cloud.compat import enabled_entity_cap, enabled_entity_count
from custom_components.meter_cloud.const import DOMAIN
from custom_components.meter_cloud.entity_cap import async_check_entity_cap, issue_id
from simulator.goldcard import GoldcardSimulator

HAS_CAP = enabled_entity_cap() is not None


def _enabled(hass: HomeAssistant, entry: MockConfigEntry) -> int:
    return sum(e.disabled_by is None for e in er.async_entries_for_config_entry(er.async_get(hass), entry.entry_id))


@pytest.mark.default_entities
@pytest.mark.skipif(not HAS_CAP, reason="this Home Assistant has no cap on enabled entities per entry (2025.4)")
async def test_an_entry_at_the_cap_says_so_and_recovers(
    hass: HomeAssistant, config_entry: MockConfigEntry, sim: GoldcardSimulator
) -> None:
    """With a cap of 12 (the simulator's meters enable 8 each), Home Assistant adds 12 entities and no more: the
    entry raises the issue, naming its meters. Under the real cap again, a reload adds the rest and the issue goes."""
    with patch.object(entity_platform, "MAX_ENABLED_ENTITIES_PER_CONFIG_ENTRY", 12):
        assert await hass.config_entries.async_setup(config_entry.entry_id)
        await hass.async_block_till_done()
        assert _enabled(hass, config_entry) == enabled_entity_count(hass, config_entry.entry_id) == 12
        issue = ir.async_get(hass).async_get_issue(DOMAIN, issue_id(config_entry.entry_id))
        assert issue is not None
        assert issue.translation_key == "entity_cap"
        assert issue.severity is ir.IssueSeverity.WARNING
        assert issue.translation_placeholders == {
            "title": config_entry.title,
            "cap": "12",
            "count": "12",
            "meters": str(len(sim.meters)),
        }
    assert await hass.config_entries.async_reload(config_entry.entry_id)
    await hass.async_block_till_done()
    assert _enabled(hass, config_entry) == 8 * len(sim.meters)
    assert ir.async_get(hass).async_get_issue(DOMAIN, issue_id(config_entry.entry_id)) is None


@pytest.mark.default_entities
async def test_no_issue_below_the_cap_or_without_one(hass: HomeAssistant, setup_entry: MockConfigEntry) -> None:
    """An entry well below the cap has no issue; nor has any entry where Home Assistant sets no cap (2025.4)."""
    coordinator = setup_entry.runtime_data
    assert ir.async_get(hass).async_get_issue(DOMAIN, issue_id(setup_entry.entry_id)) is None
    with patch("custom_components.meter_cloud.entity_cap.enabled_entity_cap", return_value=None):
        async_check_entity_cap(hass, coordinator)
    assert ir.async_get(hass).async_get_issue(DOMAIN, issue_id(setup_entry.entry_id)) is None
    with patch("custom_components.meter_cloud.entity_cap.enabled_entity_cap", return_value=1):
        async_check_entity_cap(hass, coordinator)  # the check itself, on a Home Assistant with no cap as well
    assert ir.async_get(hass).async_get_issue(DOMAIN, issue_id(setup_entry.entry_id)) is not None
    assert await hass.config_entries.async_remove(setup_entry.entry_id)
    await hass.async_block_till_done()
    assert ir.async_get(hass).async_get_issue(DOMAIN, issue_id(setup_entry.entry_id)) is None
