"""Base entity: one device per meter."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import override

from homeassistant.core import callback
from homeassistant.helpers.device_registry import DeviceInfo
from homeassistant.helpers.dispatcher import async_dispatcher_connect
from homeassistant.helpers.entity import Entity
from homeassistant.helpers.entity_platform import AddConfigEntryEntitiesCallback
from homeassistant.helpers.update_coordinator import CoordinatorEntity

from .api import MeterData
from .const import DOMAIN
from .coordinator import MeterCloudConfigEntry, MeterCloudCoordinator, MeterContext, meter_signal


class MeterCloudEntity(CoordinatorEntity[MeterCloudCoordinator]):
    """An entity of one meter."""

    _attr_has_entity_name = True
    _written_meter: MeterData | None = None
    _written_available: bool | None = None

    def __init__(self, coordinator: MeterCloudCoordinator, meter_id: str, key: str) -> None:
        """Bind to a meter; ids come from the vendor's meter number, never the entry."""
        # A poll wakes this entity only when its meter's data (or the poll's success) changed (coordinator).
        super().__init__(coordinator, MeterContext(meter_id))
        self.meter_id = meter_id
        device_key = coordinator.device_key(meter_id)
        self._attr_unique_id = f"{device_key}_{key}"
        meter = coordinator.data.get(meter_id) if coordinator.data else None
        self._attr_device_info = DeviceInfo(
            identifiers={(DOMAIN, device_key)},
            manufacturer=coordinator.client.manufacturer,
            model=meter.model if meter else None,
            serial_number=meter_id,
            name=f"{coordinator.client.manufacturer} {meter_id}",
        )

    @override
    async def async_added_to_hass(self) -> None:
        """Also follow changes to this meter alone (pushes, commands)."""
        await super().async_added_to_hass()
        signal = meter_signal(self.coordinator.config_entry.entry_id, self.meter_id)
        self.async_on_remove(async_dispatcher_connect(self.hass, signal, self._write_meter_state))
        # Home Assistant writes the state once the entity is added: for this data.
        self._written_meter = self.meter
        self._written_available = self.available

    @callback
    @override
    def _handle_coordinator_update(self) -> None:
        """Write only when this meter's data or availability changed since the last write.

        A poll that brings nothing new for a meter keeps its MeterData object (coordinator), so this is an identity
        check: 1000 unchanged meters cost no state writes. Commands, pushes and account changes write through the
        meter's own signal (async_update_meter), as does the coordinator for a command that expired during a poll.
        """
        if self.meter is self._written_meter and self.available is self._written_available:
            return
        self._write_meter_state()

    @callback
    def _write_meter_state(self) -> None:
        """Write, remembering for which data; not when this entity would show the same as it last wrote (a push
        that moved the reading need not rewrite the price)."""
        meter, written, available = self.meter, self._written_meter, self.available
        if (
            meter is not None
            and written is not None
            and available is self._written_available
            and (meter is written or self._shows_same(written, meter))
            and self._same_without_meter()
        ):
            self._written_meter = meter
            return
        self._written_meter = meter
        self._written_available = available
        self.async_write_ha_state()

    def _shows_same(self, old: MeterData, new: MeterData) -> bool:
        """Whether this entity shows the same for `new` as for `old`; an entity that does not say writes always."""
        return False

    def _same_without_meter(self) -> bool:
        """Whether nothing this entity shows besides its meter's data (commands, say) can have changed; False for
        entities that show more than their meter's data: a signal always writes them."""
        return False

    @property
    def meter(self) -> MeterData | None:
        """The meter's latest data."""
        return self.coordinator.data.get(self.meter_id) if self.coordinator.data else None

    @property
    @override
    def available(self) -> bool:
        """Unavailable when the cloud failed or no longer lists the meter."""
        return super().available and self.meter is not None


def add_meter_entities(
    entry: MeterCloudConfigEntry,
    async_add_entities: AddConfigEntryEntitiesCallback,
    build: Callable[[MeterCloudCoordinator, str], Iterable[Entity]],
) -> None:
    """Add a platform's entities for every meter now, and for meters that appear later."""
    coordinator = entry.runtime_data
    add_entities_as_they_appear(
        entry,
        async_add_entities,
        lambda: set(coordinator.data or {}),
        lambda meter_id: build(coordinator, meter_id),
    )


def add_entities_as_they_appear[T: (str, tuple[str, str])](
    entry: MeterCloudConfigEntry,
    async_add_entities: AddConfigEntryEntitiesCallback,
    current: Callable[[], set[T]],
    build: Callable[[T], Iterable[Entity]],
) -> None:
    """Add entities for every key `current()` gives now, and after each poll for keys new since the last one."""
    known: set[T] = set()

    @callback
    def add_new() -> None:
        now = current()
        known.intersection_update(now)  # a key that vanished and came back is added anew
        new = sorted(now - known)
        if new:
            known.update(new)
            async_add_entities([entity for key in new for entity in build(key)])

    add_new()
    entry.async_on_unload(entry.runtime_data.async_add_listener(add_new))
