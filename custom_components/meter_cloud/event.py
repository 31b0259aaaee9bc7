"""Meter alarms as event entities."""

from __future__ import annotations

from typing import override

from homeassistant.components.event import EventEntity
from homeassistant.core import HomeAssistant, callback
from homeassistant.helpers.dispatcher import async_dispatcher_connect
from homeassistant.helpers.entity_platform import AddConfigEntryEntitiesCallback

from .api import Alarm, Capability
from .coordinator import MeterCloudConfigEntry, MeterCloudCoordinator, alarm_signal
from .entity import MeterCloudEntity, add_meter_entities

PARALLEL_UPDATES = 0


async def async_setup_entry(
    hass: HomeAssistant, entry: MeterCloudConfigEntry, async_add_entities: AddConfigEntryEntitiesCallback
) -> None:
    """Add an alarm event entity per meter when the backend reports alarms."""
    client = entry.runtime_data.client
    if not client.supports(Capability.PUSH):
        return

    def build(coordinator: MeterCloudCoordinator, meter_id: str) -> list[EventEntity]:
        entities: list[EventEntity] = []
        if client.alarm_types:
            entities.append(MeterAlarm(coordinator, meter_id))
        if client.event_types:
            entities.append(MeterDeviceEvents(coordinator, meter_id))
        return entities

    add_meter_entities(entry, async_add_entities, build)


class MeterAlarm(MeterCloudEntity, EventEntity):
    """Alarms the cloud reports for a meter (gas leak, tampering, faults)."""

    _attr_translation_key = "alarm"
    # Device events go to their own entity (MeterDeviceEvents).
    _events = False

    def __init__(self, coordinator: MeterCloudCoordinator, meter_id: str) -> None:
        """Set up with the backend's kinds as event types."""
        super().__init__(coordinator, meter_id, self._attr_translation_key)
        kinds = coordinator.client.event_types if self._events else coordinator.client.alarm_types
        self._attr_event_types = [kind.value for kind in kinds]

    @override
    async def async_added_to_hass(self) -> None:
        """Listen for this meter's alarms (or events)."""
        await super().async_added_to_hass()
        signal = alarm_signal(self.coordinator.config_entry.entry_id, self.meter_id)
        self.async_on_remove(async_dispatcher_connect(self.hass, signal, self._handle_alarm))
        # Alarms that came before this meter had a device (a meter new to the account) are fired now.
        if not self._events:
            for alarm in self.coordinator.take_orphan_alarms(self.meter_id):
                self.coordinator.apply_alarm(alarm)

    @callback
    def _handle_alarm(self, alarm: Alarm) -> None:
        if alarm.event is not self._events:
            return
        self._trigger_event(
            alarm.type.value,
            {"priority": alarm.priority.value, "code": alarm.code, "message": alarm.message},
        )
        self.async_write_ha_state()


class MeterDeviceEvents(MeterAlarm):
    """What a device did (valve opened, recharge taken, price changed): events, not alarms."""

    _attr_translation_key = "device_events"
    # Created disabled: with it an IoT meter has 10 everyday entities, and Home Assistant 2026 enables at most 10,000
    # per entry, so a 1000-meter account would lose the last meters' entities. Device triggers, automations on
    # meter_cloud_device_event and the logbook work without it.
    _attr_entity_registry_enabled_default = False
    _events = True
