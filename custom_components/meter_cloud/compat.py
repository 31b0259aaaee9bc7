"""The one place where supported Home Assistant versions (2025.4 → 2026.x) differ for us."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from homeassistant import config_entries
from homeassistant.core import HomeAssistant
from homeassistant.helpers import device_registry as dr
from homeassistant.helpers import entity_platform
from homeassistant.helpers import entity_registry as er

# 2025.8 added OptionsFlowWithReload (the options flow reloads the entry itself) and from 2026.12 an
# entry with an update listener breaks `async_update_reload_and_abort`. 2025.4 has neither: there the
# entry reloads through an update listener that acts only on changed options (see reload_on_options).
HAS_OPTIONS_FLOW_WITH_RELOAD = hasattr(config_entries, "OptionsFlowWithReload")
if TYPE_CHECKING:

    class ReloadingOptionsFlow(config_entries.OptionsFlow):
        """OptionsFlowWithReload where it exists, else the plain OptionsFlow."""

else:
    ReloadingOptionsFlow = getattr(config_entries, "OptionsFlowWithReload", config_entries.OptionsFlow)


def reload_on_options(entry: config_entries.ConfigEntry) -> None:
    """Make a changed option reload the entry, exactly once, on versions without OptionsFlowWithReload.

    Data changes (reconfigure, reauth, a new meter list) reload through `async_update_reload_and_abort`
    or `async_schedule_reload`, so the listener ignores them.
    """
    if HAS_OPTIONS_FLOW_WITH_RELOAD:
        return
    options = dict(entry.options)

    async def _options_changed(hass: HomeAssistant, updated: config_entries.ConfigEntry) -> None:
        if dict(updated.options) != options:
            hass.config_entries.async_schedule_reload(updated.entry_id)

    entry.async_on_unload(entry.add_update_listener(_options_changed))


def device_by_identifier(
    hass: HomeAssistant, identifier: tuple[str, str], config_entry_id: str
) -> dr.DeviceEntry | None:
    """The entry's device with this identifier.

    2026 deprecates `async_get_device` (identifiers are unique only per entry since then) in
    favour of `async_get_device_by_identifier`, which 2025.4 lacks.
    """
    registry = dr.async_get(hass)
    by_identifier = getattr(registry, "async_get_device_by_identifier", None)
    if by_identifier is not None:
        device: dr.DeviceEntry | None = by_identifier(identifier, config_entry_id)
        return device
    device = registry.async_get_device(identifiers={identifier})
    return device if device is not None and config_entry_id in device_entry_ids(device) else None


def device_entry_ids(device: Any) -> set[str]:
    """Config entries a device belongs to (2026: exactly one, `config_entry_id`)."""
    single = getattr(device, "config_entry_id", None)
    if single is not None:
        return {single}
    return set(device.config_entries)


def detach_device(hass: HomeAssistant, device: dr.DeviceEntry, config_entry_id: str) -> None:
    """Take a device away from an entry (removing it when no other entry holds it)."""
    registry = dr.async_get(hass)
    if getattr(device, "config_entry_id", None) is not None:
        registry.async_remove_device(device.id)
    else:
        registry.async_update_device(device.id, remove_config_entry_id=config_entry_id)


def statistic_metadata(
    *, statistic_id: str, name: str | None, unit: str | None, unit_class: str | None
) -> dict[str, Any]:
    """Statistic metadata with a sum (source: the id's prefix); `unit_class` exists only from 2025.11.

    Passing it to 2025.4 breaks the insert; leaving it out on 2026 only warns.
    """
    from homeassistant.components.recorder.models import StatisticMeanType, StatisticMetaData  # noqa: PLC0415

    metadata: dict[str, Any] = {
        "source": statistic_id.split(":", 1)[0],
        "statistic_id": statistic_id,
        "name": name,
        "unit_of_measurement": unit,
        "has_sum": True,
        "has_mean": False,
        "mean_type": StatisticMeanType.NONE,
    }
    if "unit_class" in StatisticMetaData.__annotations__:
        metadata["unit_class"] = unit_class
    return metadata


def sensor_device_class(name: str | None) -> Any:
    """The SensorDeviceClass called `name`, or None where this version lacks it.

    `reactive_energy` (kvarh) is missing from 2025.4; there the sensor simply has no device class.
    """
    from homeassistant.components.sensor import SensorDeviceClass  # noqa: PLC0415

    if name is None:
        return None
    try:
        return SensorDeviceClass(name)
    except ValueError:
        return None


def unit_class_of(unit: str | None) -> str | None:
    """The statistics unit class of a unit (None when the recorder converts no such unit)."""
    from homeassistant.components.recorder.statistics import STATISTIC_UNIT_TO_UNIT_CONVERTER  # noqa: PLC0415

    converter = STATISTIC_UNIT_TO_UNIT_CONVERTER.get(unit)
    return None if converter is None else str(converter.UNIT_CLASS)


def enabled_entity_cap() -> int | None:
    """The most enabled entities Home Assistant adds for one config entry (2026: 10,000; past it an entity is not
    added at all); None where there is no cap (2025.4)."""
    cap = getattr(entity_platform, "MAX_ENABLED_ENTITIES_PER_CONFIG_ENTRY", None)
    return cap if isinstance(cap, int) else None


def enabled_entity_count(hass: HomeAssistant, config_entry_id: str) -> int:
    """How many enabled entities a config entry has (2026 keeps the count; else counted)."""
    registry = er.async_get(hass)
    kept = getattr(registry.entities, "get_enabled_count_for_config_entry_id", None)
    if kept is not None:
        return int(kept(config_entry_id))
    return sum(entry.disabled_by is None for entry in er.async_entries_for_config_entry(registry, config_entry_id))
