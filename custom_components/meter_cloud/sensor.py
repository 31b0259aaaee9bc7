"""Meter sensors: readings, money, diagnostics."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, override

from homeassistant.components.sensor import (
    SensorDeviceClass,
    SensorEntity,
    SensorEntityDescription,
    SensorStateClass,
)
from homeassistant.const import (
    PERCENTAGE,
    SIGNAL_STRENGTH_DECIBELS_MILLIWATT,
    EntityCategory,
    UnitOfElectricPotential,
    UnitOfPressure,
    UnitOfTemperature,
    UnitOfVolume,
    UnitOfVolumeFlowRate,
)
from homeassistant.core import HomeAssistant
from homeassistant.helpers.entity_platform import AddConfigEntryEntitiesCallback

from .api import DEVICE_STATES, Capability, CommandKind, CommandState, MeterData, MeterStatus
from .compat import sensor_device_class
from .coordinator import MeterCloudConfigEntry, MeterCloudCoordinator
from .entity import MeterCloudEntity, add_entities_as_they_appear, add_meter_entities
from .money_entities import foresight_sensors

PARALLEL_UPDATES = 0

CURRENCY = "{currency}"


@dataclass(frozen=True, kw_only=True)
class MeterSensorDescription(SensorEntityDescription):
    """A meter sensor: which data field feeds it."""

    value_fn: Callable[[MeterData], Decimal | datetime | str | int | None]
    field: str
    # State attributes from the meter's data (e.g. the vendor's own words beside a translated state).
    attrs_fn: Callable[[MeterData], dict[str, Any] | None] | None = None


def _value(field: str) -> Callable[[MeterData], Any]:
    return lambda meter: getattr(meter, field)


# Home Assistant 2026 enables at most 10,000 entities per config entry: a 1000-meter account keeps
# about ten per meter. The everyday ones stay enabled; the rest are there to switch on.
ENABLED_BY_DEFAULT = frozenset({"reading", "balance", "price", "status", "state_message"})


def _describe(key: str, **kwargs: Any) -> MeterSensorDescription:
    field = kwargs.pop("field", key)
    kwargs.setdefault("entity_registry_enabled_default", key in ENABLED_BY_DEFAULT)
    return MeterSensorDescription(key=key, translation_key=key, field=field, value_fn=_value(field), **kwargs)


SENSORS: tuple[MeterSensorDescription, ...] = (
    _describe(
        "reading",
        device_class=SensorDeviceClass.GAS,
        native_unit_of_measurement=UnitOfVolume.CUBIC_METERS,
        state_class=SensorStateClass.TOTAL_INCREASING,
        suggested_display_precision=4,
    ),
    _describe(
        "balance",
        device_class=SensorDeviceClass.MONETARY,
        native_unit_of_measurement=CURRENCY,
        state_class=SensorStateClass.TOTAL,
        suggested_display_precision=2,
    ),
    _describe(
        "price",
        native_unit_of_measurement=f"{CURRENCY}/{UnitOfVolume.CUBIC_METERS}",
        state_class=SensorStateClass.MEASUREMENT,
        suggested_display_precision=4,
    ),
    _describe(
        "total_gas",
        device_class=SensorDeviceClass.GAS,
        native_unit_of_measurement=UnitOfVolume.CUBIC_METERS,
        state_class=SensorStateClass.TOTAL_INCREASING,
        suggested_display_precision=4,
    ),
    _describe(
        "total_money",
        device_class=SensorDeviceClass.MONETARY,
        native_unit_of_measurement=CURRENCY,
        state_class=SensorStateClass.TOTAL,
        suggested_display_precision=2,
    ),
    _describe(
        "total_recharge",
        device_class=SensorDeviceClass.MONETARY,
        native_unit_of_measurement=CURRENCY,
        state_class=SensorStateClass.TOTAL,
        suggested_display_precision=2,
    ),
    _describe(
        "last_recharge_amount",
        device_class=SensorDeviceClass.MONETARY,
        native_unit_of_measurement=CURRENCY,
        suggested_display_precision=2,
    ),
    _describe("last_recharge_time", device_class=SensorDeviceClass.TIMESTAMP),
    _describe("reading_time", device_class=SensorDeviceClass.TIMESTAMP),
    _describe(
        "temperature",
        device_class=SensorDeviceClass.TEMPERATURE,
        native_unit_of_measurement=UnitOfTemperature.CELSIUS,
        state_class=SensorStateClass.MEASUREMENT,
    ),
    _describe(
        "pressure",
        device_class=SensorDeviceClass.PRESSURE,
        native_unit_of_measurement=UnitOfPressure.KPA,
        state_class=SensorStateClass.MEASUREMENT,
    ),
    _describe(
        "battery_voltage",
        device_class=SensorDeviceClass.VOLTAGE,
        native_unit_of_measurement=UnitOfElectricPotential.VOLT,
        state_class=SensorStateClass.MEASUREMENT,
        entity_category=EntityCategory.DIAGNOSTIC,
        suggested_display_precision=2,
    ),
    _describe(
        "signal_strength",
        native_unit_of_measurement=PERCENTAGE,
        state_class=SensorStateClass.MEASUREMENT,
        entity_category=EntityCategory.DIAGNOSTIC,
    ),
    _describe(
        "work_volume",
        device_class=SensorDeviceClass.GAS,
        native_unit_of_measurement=UnitOfVolume.CUBIC_METERS,
        state_class=SensorStateClass.TOTAL_INCREASING,
        suggested_display_precision=3,
    ),
    _describe(
        "std_volume",
        device_class=SensorDeviceClass.GAS,
        native_unit_of_measurement=UnitOfVolume.CUBIC_METERS,
        suggested_display_precision=3,
    ),
    _describe(
        "std_flow",
        device_class=SensorDeviceClass.VOLUME_FLOW_RATE,
        native_unit_of_measurement=UnitOfVolumeFlowRate.CUBIC_METERS_PER_HOUR,
        state_class=SensorStateClass.MEASUREMENT,
        suggested_display_precision=3,
    ),
    _describe(
        "work_flow",
        device_class=SensorDeviceClass.VOLUME_FLOW_RATE,
        native_unit_of_measurement=UnitOfVolumeFlowRate.CUBIC_METERS_PER_HOUR,
        state_class=SensorStateClass.MEASUREMENT,
        suggested_display_precision=3,
    ),
    # Meter-kept period sums restart each month/cycle: total_increasing takes the drop as a new period.
    *(
        _describe(
            key,
            device_class=SensorDeviceClass.GAS,
            native_unit_of_measurement=UnitOfVolume.CUBIC_METERS,
            state_class=SensorStateClass.TOTAL_INCREASING if key.startswith("this") else None,
            suggested_display_precision=3,
        )
        for key in ("this_month", "last_month", "this_cycle", "last_cycle")
    ),
    _describe(
        "remain_volume",
        device_class=SensorDeviceClass.GAS,
        native_unit_of_measurement=UnitOfVolume.CUBIC_METERS,
        state_class=SensorStateClass.TOTAL,
        suggested_display_precision=3,
    ),
    # The device's condition in the user's language; the vendor's words ("正常", "阀门故障,低电") as an attribute.
    MeterSensorDescription(
        key="state_message",
        translation_key="state_message",
        field="state_message",
        device_class=SensorDeviceClass.ENUM,
        options=list(DEVICE_STATES),
        value_fn=lambda meter: meter.device_state,
        attrs_fn=lambda meter: {"conditions": list(meter.conditions or ()), "vendor_text": meter.state_message},
        entity_category=EntityCategory.DIAGNOSTIC,
    ),
    _describe("state_code", entity_category=EntityCategory.DIAGNOSTIC),
    _describe(
        "rssi",
        device_class=SensorDeviceClass.SIGNAL_STRENGTH,
        native_unit_of_measurement=SIGNAL_STRENGTH_DECIBELS_MILLIWATT,
        state_class=SensorStateClass.MEASUREMENT,
        entity_category=EntityCategory.DIAGNOSTIC,
    ),
    _describe(
        "battery_level",
        device_class=SensorDeviceClass.BATTERY,
        native_unit_of_measurement=PERCENTAGE,
        state_class=SensorStateClass.MEASUREMENT,
        entity_category=EntityCategory.DIAGNOSTIC,
    ),
    _describe("magnetic_attacks", state_class=SensorStateClass.TOTAL_INCREASING),
    MeterSensorDescription(
        key="status",
        translation_key="status",
        field="status",
        device_class=SensorDeviceClass.ENUM,
        options=[status.value for status in MeterStatus],
        value_fn=lambda meter: meter.status.value if meter.status else None,
        # The account the cloud keeps for the meter (name, address, type, set-up date, base reading).
        attrs_fn=lambda meter: dict(meter.account) if meter.account else None,
    ),
)

RECHARGE_STATUS = SensorEntityDescription(
    key="recharge_status",
    translation_key="recharge_status",
    device_class=SensorDeviceClass.ENUM,
    options=[state.value for state in CommandState],
)


def _unit(description: SensorEntityDescription, currency: str) -> str | None:
    unit = description.native_unit_of_measurement
    return unit.replace(CURRENCY, currency) if unit else None


async def async_setup_entry(
    hass: HomeAssistant, entry: MeterCloudConfigEntry, async_add_entities: AddConfigEntryEntitiesCallback
) -> None:
    """Add sensors for every meter now and for meters that appear later."""
    client = entry.runtime_data.client

    def build(coordinator: MeterCloudCoordinator, meter_id: str) -> list[SensorEntity]:
        fields = client.fields_for(coordinator.data[meter_id])
        entities: list[SensorEntity] = [MeterSensor(coordinator, meter_id, d) for d in SENSORS if d.field in fields]
        if client.supports(Capability.RECHARGE) and "balance" in fields:
            entities.append(RechargeStatusSensor(coordinator, meter_id))
        entities.extend(foresight_sensors(coordinator, meter_id))
        return entities

    add_meter_entities(entry, async_add_entities, build)
    if "values" in client.fields:
        _add_value_sensors(entry, async_add_entities)


def _add_value_sensors(entry: MeterCloudConfigEntry, async_add_entities: AddConfigEntryEntitiesCallback) -> None:
    """One sensor per named value (KUMIR: system x parameter), also for values that appear later."""
    coordinator = entry.runtime_data
    add_entities_as_they_appear(
        entry,
        async_add_entities,
        lambda: {(meter.meter_id, key) for meter in (coordinator.data or {}).values() for key in meter.values or {}},
        lambda value: [ValueSensor(coordinator, *value)],
    )


class MeterSensor(MeterCloudEntity, SensorEntity):
    """A value of a meter."""

    entity_description: MeterSensorDescription
    # Personal account data is shown, never written to the recorder's history.
    _unrecorded_attributes = frozenset({"user_name", "address", "user_type", "set_up_date", "base_reading"})

    def __init__(self, coordinator: MeterCloudCoordinator, meter_id: str, description: MeterSensorDescription) -> None:
        """Set up the sensor; money units take the backend's currency."""
        super().__init__(coordinator, meter_id, description.key)
        self.entity_description = description
        self._attr_native_unit_of_measurement = _unit(description, coordinator.client.currency)

    @property
    @override
    def native_value(self) -> Decimal | datetime | str | int | None:
        """The value, or None (unknown) when the cloud did not report it: never a made-up 0."""
        meter = self.meter
        return self.entity_description.value_fn(meter) if meter else None

    @property
    @override
    def extra_state_attributes(self) -> dict[str, Any] | None:
        """What the description adds beside the value."""
        meter, attrs = self.meter, self.entity_description.attrs_fn
        return attrs(meter) if meter is not None and attrs is not None else None

    @override
    def _shows_same(self, old: MeterData, new: MeterData) -> bool:
        """Value and attributes are functions of the meter's data alone."""
        description = self.entity_description
        attrs = description.attrs_fn
        return description.value_fn(old) == description.value_fn(new) and (attrs is None or attrs(old) == attrs(new))

    @override
    def _same_without_meter(self) -> bool:
        return True


class ValueSensor(MeterCloudEntity, SensorEntity):
    """One named value of a meter, described by its backend (unit, classes, statistics)."""

    def __init__(self, coordinator: MeterCloudCoordinator, meter_id: str, key: str) -> None:
        """Describe the value once, when it first appears."""
        super().__init__(coordinator, meter_id, key)
        self._key = key
        info = coordinator.client.value_info(coordinator.data[meter_id], key)
        self.entity_description = SensorEntityDescription(
            key=key,
            translation_key=info.translation_key,
            device_class=sensor_device_class(info.device_class),
            native_unit_of_measurement=info.unit,
            state_class=SensorStateClass(info.state_class) if info.state_class else None,
            entity_registry_enabled_default=info.enabled,
        )
        self._attr_translation_placeholders = {"system": str(info.system), "name": info.param, "parts": info.parts}

    @property
    @override
    def native_value(self) -> Decimal | None:
        """The newest value the cloud has; unknown when it stopped reporting it."""
        meter = self.meter
        return (meter.values or {}).get(self._key) if meter else None


class RechargeStatusSensor(MeterCloudEntity, SensorEntity):
    """What became of the meter's latest recharge."""

    entity_description = RECHARGE_STATUS

    def __init__(self, coordinator: MeterCloudCoordinator, meter_id: str) -> None:
        """Set up the sensor."""
        super().__init__(coordinator, meter_id, RECHARGE_STATUS.key)

    @property
    @override
    def native_value(self) -> str | None:
        """State of the latest recharge."""
        command = self.coordinator.commands.latest(self.meter_id, CommandKind.RECHARGE)
        return command.state.value if command else None

    @property
    @override
    def extra_state_attributes(self) -> dict[str, Any] | None:
        """Reference, amount, serial, the cloud's message and code, and when the latest recharge last moved."""
        command = self.coordinator.commands.latest(self.meter_id, CommandKind.RECHARGE)
        if command is None:
            return None
        return {
            "reference": command.reference,
            "amount": str(command.amount),
            "serial": command.serial,
            "message": command.message,
            "code": command.code,
            "time": command.updated.isoformat(),
            "counter": command.counter,
        }
