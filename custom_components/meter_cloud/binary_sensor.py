"""Meter and RTU status flags as binary sensors."""

from __future__ import annotations

from typing import override

from homeassistant.components.binary_sensor import (
    BinarySensorDeviceClass,
    BinarySensorEntity,
    BinarySensorEntityDescription,
)
from homeassistant.const import EntityCategory
from homeassistant.core import HomeAssistant
from homeassistant.helpers.entity_platform import AddConfigEntryEntitiesCallback

from .api import MeterData
from .coordinator import MeterCloudConfigEntry, MeterCloudCoordinator
from .entity import MeterCloudEntity, add_meter_entities
from .money_entities import low_balance_sensors

PARALLEL_UPDATES = 0

_PROBLEM = BinarySensorDeviceClass.PROBLEM
# Flag → device class. Valve-off reasons are problems: the meter shut itself for that reason.
FLAGS: dict[str, BinarySensorDeviceClass | None] = {
    "valve_open": BinarySensorDeviceClass.OPENING,
    "low_power": BinarySensorDeviceClass.BATTERY,
    "remote_valve_off": None,
    "apart_valve_off": BinarySensorDeviceClass.TAMPER,
    "max_flow_valve_off": _PROBLEM,
    "min_flow_valve_off": _PROBLEM,
    "dead_valve_off": _PROBLEM,
    "magnetic_attack": BinarySensorDeviceClass.TAMPER,
    "ext_power": BinarySensorDeviceClass.POWER,
    "pulse_fault": _PROBLEM,
    "battery_cut": _PROBLEM,
    "force_valve_on": _PROBLEM,
    "rtu_door_open": BinarySensorDeviceClass.DOOR,
    "rtu_power": BinarySensorDeviceClass.POWER,
    "rtu_fence_alarm": BinarySensorDeviceClass.SAFETY,
    "rtu_vibrate_alarm": BinarySensorDeviceClass.VIBRATION,
}
# Tampering and a failing battery matter to everyone; the valve-off reasons are for diagnosis (and
# Home Assistant 2026 enables at most 10,000 entities per entry). An RTU's few flags are all on.
ENABLED_BY_DEFAULT = frozenset(
    {"low_power", "magnetic_attack", "rtu_door_open", "rtu_power", "rtu_fence_alarm", "rtu_vibrate_alarm"}
)
DESCRIPTIONS = {
    key: BinarySensorEntityDescription(
        key=key,
        translation_key=key,
        device_class=device_class,
        entity_category=None if key in ENABLED_BY_DEFAULT else EntityCategory.DIAGNOSTIC,
        entity_registry_enabled_default=key in ENABLED_BY_DEFAULT,
    )
    for key, device_class in FLAGS.items()
}


async def async_setup_entry(
    hass: HomeAssistant, entry: MeterCloudConfigEntry, async_add_entities: AddConfigEntryEntitiesCallback
) -> None:
    """A binary sensor for each flag a device reports."""

    def build(coordinator: MeterCloudCoordinator, meter_id: str) -> list[BinarySensorEntity]:
        meter = coordinator.data[meter_id]
        entities = low_balance_sensors(coordinator, meter_id)
        if "flags" not in coordinator.client.fields_for(meter) or not meter.flags:
            return entities
        flags = [MeterFlag(coordinator, meter_id, DESCRIPTIONS[key]) for key in meter.flags if key in DESCRIPTIONS]
        return [*entities, *flags]

    add_meter_entities(entry, async_add_entities, build)


class MeterFlag(MeterCloudEntity, BinarySensorEntity):
    """One status flag."""

    def __init__(
        self, coordinator: MeterCloudCoordinator, meter_id: str, description: BinarySensorEntityDescription
    ) -> None:
        """Set up the flag."""
        super().__init__(coordinator, meter_id, description.key)
        self.entity_description = description

    @property
    @override
    def is_on(self) -> bool | None:
        """The flag, or unknown when the latest record lacks it."""
        return self._flag(self.meter)

    def _flag(self, meter: MeterData | None) -> bool | None:
        flags = meter.flags if meter else None
        return flags.get(self.entity_description.key) if flags else None

    @override
    def _shows_same(self, old: MeterData, new: MeterData) -> bool:
        return self._flag(old) == self._flag(new)

    @override
    def _same_without_meter(self) -> bool:
        return True
