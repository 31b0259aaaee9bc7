"""Meter Cloud: utility meters that live in vendor clouds."""

from __future__ import annotations

from homeassistant.const import Platform
from homeassistant.core import HomeAssistant
from homeassistant.exceptions import ConfigEntryError
from homeassistant.helpers import config_validation as cv
from homeassistant.helpers import device_registry as dr
from homeassistant.helpers import issue_registry as ir
from homeassistant.helpers.typing import ConfigType

from .api import ConfigurationError
from .compat import reload_on_options
from .const import DOMAIN
from .coordinator import MeterCloudConfigEntry, MeterCloudCoordinator, async_build_client
from .entity_cap import async_setup_entity_cap
from .push import MeterCloudPushView
from .services import async_setup_services
from .statistics import async_setup_history
from .value_issues import async_setup_value_issues

PLATFORMS = [Platform.BINARY_SENSOR, Platform.EVENT, Platform.SENSOR, Platform.VALVE]
CONFIG_SCHEMA = cv.config_entry_only_config_schema(DOMAIN)


async def async_setup(hass: HomeAssistant, config: ConfigType) -> bool:
    """Register the push receiver and the services once."""
    hass.http.register_view(MeterCloudPushView(hass))
    async_setup_services(hass)
    return True


async def async_setup_entry(hass: HomeAssistant, entry: MeterCloudConfigEntry) -> bool:
    """Connect to the entry's cloud and poll it."""
    try:
        client = await async_build_client(hass, entry.data)
        client.use_options(entry.options)
    except ConfigurationError as err:
        raise ConfigEntryError(
            translation_domain=DOMAIN, translation_key=err.reason, translation_placeholders={"error": str(err)}
        ) from err
    coordinator = MeterCloudCoordinator(hass, entry, client)
    await coordinator.async_config_entry_first_refresh()
    entry.runtime_data = coordinator
    await hass.config_entries.async_forward_entry_setups(entry, PLATFORMS)
    async_setup_entity_cap(hass, coordinator)
    async_setup_history(hass, coordinator)
    async_setup_value_issues(hass, coordinator)
    coordinator.health.async_start()
    await coordinator.foresight.async_start()
    reload_on_options(entry)
    return True


async def async_unload_entry(hass: HomeAssistant, entry: MeterCloudConfigEntry) -> bool:
    """Unload platforms; the command ledger is written to disk first."""
    coordinator = entry.runtime_data
    await coordinator.commands.async_flush()
    unloaded = await hass.config_entries.async_unload_platforms(entry, PLATFORMS)
    if unloaded:
        await coordinator.client.async_close()
    return unloaded


async def async_remove_entry(hass: HomeAssistant, entry: MeterCloudConfigEntry) -> None:
    """Delete the entry's command ledger, stored spending and repair issues."""
    from .commands import CommandTracker  # noqa: PLC0415
    from .foresight import async_remove_stored  # noqa: PLC0415

    await CommandTracker(hass, entry.entry_id).async_remove()
    await async_remove_stored(hass, entry.entry_id)
    _delete_issues(hass, entry.entry_id)


def _delete_issues(hass: HomeAssistant, entry_id: str) -> None:
    """The entry's repair issues (pushes, the entity cap, missing meters, tariff layouts): each id names the entry."""
    registry = ir.async_get(hass)
    for domain, issue_id in list(registry.issues):
        if domain == DOMAIN and (issue_id.endswith(f"_{entry_id}") or f"_{entry_id}_" in issue_id):
            ir.async_delete_issue(hass, DOMAIN, issue_id)


async def async_remove_config_entry_device(
    hass: HomeAssistant, entry: MeterCloudConfigEntry, device: dr.DeviceEntry
) -> bool:
    """A meter's device may be removed once the cloud no longer lists it."""
    coordinator = entry.runtime_data
    keys = {coordinator.device_key(meter_id) for meter_id in coordinator.data or {}}
    return not any(domain == DOMAIN and ident in keys for domain, ident in device.identifiers)
