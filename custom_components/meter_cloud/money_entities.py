"""Entities of money foresight: daily spend, days of credit left, credit runs out, Gas cost and Low balance."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any, override

import voluptuous as vol
from homeassistant.components.binary_sensor import BinarySensorEntity, BinarySensorEntityDescription
from homeassistant.components.sensor import (
    SensorDeviceClass,
    SensorEntity,
    SensorEntityDescription,
    SensorStateClass,
)
from homeassistant.config_entries import ConfigEntry
from homeassistant.const import UnitOfTime
from homeassistant.helpers.dispatcher import async_dispatcher_connect
from homeassistant.helpers.selector import NumberSelector, NumberSelectorConfig, NumberSelectorMode

from .api import Capability, MeterClient
from .const import CONF_LOW_BALANCE_AMOUNT, CONF_LOW_BALANCE_DAYS
from .coordinator import MeterCloudCoordinator
from .costs import COST_KEY
from .entity import MeterCloudEntity
from .foresight import AVERAGES, Forecast, foresight_signal

CURRENCY = "{currency}"


@dataclass(frozen=True, kw_only=True)
class ForesightDescription(SensorEntityDescription):
    """A foresight sensor: which part of the forecast it shows."""

    value_fn: Callable[[Forecast], Decimal | datetime | None]


# Created disabled: Home Assistant 2026 enables at most 10,000 entities per entry, and the everyday ones of a
# 1000-meter account already take about ten per meter. Low balance works without them.
FORESIGHT: tuple[ForesightDescription, ...] = (
    ForesightDescription(
        key="daily_spend_7d",
        translation_key="daily_spend_7d",
        native_unit_of_measurement=f"{CURRENCY}/{UnitOfTime.DAYS}",
        state_class=SensorStateClass.MEASUREMENT,
        suggested_display_precision=2,
        entity_registry_enabled_default=False,
        value_fn=lambda f: f.spend_7d,
    ),
    ForesightDescription(
        key="daily_spend_30d",
        translation_key="daily_spend_30d",
        native_unit_of_measurement=f"{CURRENCY}/{UnitOfTime.DAYS}",
        state_class=SensorStateClass.MEASUREMENT,
        suggested_display_precision=2,
        entity_registry_enabled_default=False,
        value_fn=lambda f: f.spend_30d,
    ),
    ForesightDescription(
        key="days_left",
        translation_key="days_left",
        device_class=SensorDeviceClass.DURATION,
        native_unit_of_measurement=UnitOfTime.DAYS,
        state_class=SensorStateClass.MEASUREMENT,
        suggested_display_precision=1,
        entity_registry_enabled_default=False,
        value_fn=lambda f: f.days_left,
    ),
    ForesightDescription(
        key="credit_runs_out",
        translation_key="credit_runs_out",
        device_class=SensorDeviceClass.TIMESTAMP,
        entity_registry_enabled_default=False,
        value_fn=lambda f: f.runs_out,
    ),
)
# The cloud's cumulative bill, its statistic filled in day by day from the daily money (costs.py): the Energy
# dashboard's "entity tracking the total costs" of the gas source.
GAS_COST = SensorEntityDescription(
    key=COST_KEY,
    translation_key=COST_KEY,
    device_class=SensorDeviceClass.MONETARY,
    native_unit_of_measurement=CURRENCY,
    state_class=SensorStateClass.TOTAL,
    suggested_display_precision=2,
)
LOW_BALANCE = BinarySensorEntityDescription(key="low_balance", translation_key="low_balance")


def _money_meter(coordinator: MeterCloudCoordinator, meter_id: str) -> bool:
    return "balance" in coordinator.client.fields_for(coordinator.data[meter_id])


def foresight_sensors(coordinator: MeterCloudCoordinator, meter_id: str) -> list[SensorEntity]:
    """The foresight sensors of a meter that holds money, and Gas cost where the cloud bills by the day."""
    if not _money_meter(coordinator, meter_id):
        return []
    entities: list[SensorEntity] = [ForesightSensor(coordinator, meter_id, d) for d in FORESIGHT]
    client = coordinator.client
    if client.supports(Capability.DAILY_SPEND) and "total_money" in client.fields_for(coordinator.data[meter_id]):
        entities.append(GasCostSensor(coordinator, meter_id))
    return entities


def thresholds(options: Mapping[str, Any]) -> tuple[Decimal | None, Decimal | None]:
    """The entry's low-balance thresholds: money (in the meter's currency) and days; None where not set."""
    values: list[Decimal | None] = []
    for key in (CONF_LOW_BALANCE_AMOUNT, CONF_LOW_BALANCE_DAYS):
        raw = options.get(key)
        try:
            values.append(None if raw in (None, "") else Decimal(str(raw)))
        except InvalidOperation:
            values.append(None)
    return values[0], values[1]


THRESHOLD_KEYS = (CONF_LOW_BALANCE_AMOUNT, CONF_LOW_BALANCE_DAYS)


def money_client(entry: ConfigEntry[Any]) -> MeterClient | None:
    """The loaded entry's client when its meters hold money (the thresholds mean nothing otherwise)."""
    coordinator = getattr(entry, "runtime_data", None)
    client = getattr(coordinator, "client", None)
    return client if isinstance(client, MeterClient) and "balance" in client.fields else None


def threshold_fields(options: Mapping[str, Any], client: MeterClient) -> dict[vol.Marker, Any]:
    """Options-form fields of the two thresholds, both optional, showing the values in force."""
    step = float(Decimal(1).scaleb(-client.money_places))
    money = NumberSelectorConfig(
        min=0, max=1_000_000, step=step, mode=NumberSelectorMode.BOX, unit_of_measurement=client.currency
    )
    days = NumberSelectorConfig(min=1, max=365, step=1, mode=NumberSelectorMode.BOX, unit_of_measurement="d")
    return {
        vol.Optional(key, description={"suggested_value": options.get(key)}): NumberSelector(config)
        for key, config in ((CONF_LOW_BALANCE_AMOUNT, money), (CONF_LOW_BALANCE_DAYS, days))
    }


def threshold_option(key: str, value: Any, client: MeterClient | None) -> str | int:
    """A threshold as stored: money as an exact decimal string in the currency's precision, days as a count."""
    if key == CONF_LOW_BALANCE_DAYS:
        return int(value)
    places = client.money_places if client is not None else 2
    # The number selector hands over a float: its text is the amount the user typed (0.1 stays 0.1).
    return str(Decimal(str(value)).quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP))


def low_balance_sensors(coordinator: MeterCloudCoordinator, meter_id: str) -> list[BinarySensorEntity]:
    """Low balance for a meter that holds money, once the entry has a threshold."""
    if not _money_meter(coordinator, meter_id) or thresholds(coordinator.config_entry.options) == (None, None):
        return []
    return [LowBalanceSensor(coordinator, meter_id)]


class _ForesightEntity(MeterCloudEntity):
    """Follows the entry's foresight refreshes besides the meter's own updates."""

    @override
    async def async_added_to_hass(self) -> None:
        """Also write the state when the outlooks were refreshed."""
        await super().async_added_to_hass()
        signal = foresight_signal(self.coordinator.config_entry.entry_id)
        self.async_on_remove(async_dispatcher_connect(self.hass, signal, self.async_write_ha_state))


class ForesightSensor(_ForesightEntity, SensorEntity):
    """Daily spend, days of credit left or the time the credit runs out."""

    entity_description: ForesightDescription

    def __init__(self, coordinator: MeterCloudCoordinator, meter_id: str, description: ForesightDescription) -> None:
        """Money units take the backend's currency."""
        super().__init__(coordinator, meter_id, description.key)
        self.entity_description = description
        unit = description.native_unit_of_measurement
        self._attr_native_unit_of_measurement = unit.replace(CURRENCY, coordinator.client.currency) if unit else None

    @property
    @override
    def native_value(self) -> Decimal | datetime | None:
        """Unknown until enough is known (never a made-up 0)."""
        return self.entity_description.value_fn(self.coordinator.foresight.forecast(self.meter_id))

    @property
    @override
    def extra_state_attributes(self) -> dict[str, Any] | None:
        """Where the daily money came from and how many days of the window were known."""
        outlook = self.coordinator.foresight.outlook(self.meter_id)
        if outlook is None:
            return None
        window = AVERAGES[1] if self.entity_description.key == "daily_spend_30d" else AVERAGES[0]
        return {"source": outlook.source, "days_with_data": outlook.known_days(window)}


class GasCostSensor(MeterCloudEntity, SensorEntity):
    """The cloud's cumulative bill for gas (tiers included)."""

    entity_description = GAS_COST

    def __init__(self, coordinator: MeterCloudCoordinator, meter_id: str) -> None:
        """Its unit is the backend's currency."""
        super().__init__(coordinator, meter_id, COST_KEY)
        self._attr_native_unit_of_measurement = coordinator.client.currency

    @property
    @override
    def native_value(self) -> Decimal | None:
        """The cumulative money used, as the cloud last reported it."""
        meter = self.meter
        return meter.total_money if meter else None


class LowBalanceSensor(_ForesightEntity, BinarySensorEntity):
    """On when the balance is at or below the money threshold, or lasts no more than the days threshold."""

    entity_description = LOW_BALANCE

    def __init__(self, coordinator: MeterCloudCoordinator, meter_id: str) -> None:
        """Thresholds come from the entry's options (a change reloads the entry)."""
        super().__init__(coordinator, meter_id, LOW_BALANCE.key)
        self._money, self._days = thresholds(coordinator.config_entry.options)

    def _checks(self) -> list[bool]:
        """The verdict of each threshold that can be judged now."""
        meter = self.meter
        checks = []
        if self._money is not None and meter is not None and meter.balance is not None:
            checks.append(meter.balance <= self._money)
        if self._days is not None:
            days_left = self.coordinator.foresight.forecast(self.meter_id).days_left
            if days_left is not None:
                checks.append(days_left <= self._days)
        return checks

    @property
    @override
    def is_on(self) -> bool | None:
        """On if any threshold is reached; unknown when none can be judged (no balance, no spend history)."""
        checks = self._checks()
        return any(checks) if checks else None

    @property
    @override
    def extra_state_attributes(self) -> dict[str, Any]:
        """The thresholds in force."""
        return {
            "threshold_amount": None if self._money is None else str(self._money),
            "threshold_days": None if self._days is None else str(self._days),
        }
