"""Gas valve of a meter: open/close through the cloud, pending until confirmed."""

from __future__ import annotations

from typing import Any, override

from homeassistant.components.valve import ValveDeviceClass, ValveEntity, ValveEntityFeature
from homeassistant.core import HomeAssistant
from homeassistant.helpers.entity_platform import AddConfigEntryEntitiesCallback

from .actions import VALVE_KINDS
from .api import Capability, CommandKind, ValveState
from .coordinator import MeterCloudConfigEntry, MeterCloudCoordinator
from .entity import MeterCloudEntity, add_meter_entities

PARALLEL_UPDATES = 1


async def async_setup_entry(
    hass: HomeAssistant, entry: MeterCloudConfigEntry, async_add_entities: AddConfigEntryEntitiesCallback
) -> None:
    """Add a valve per meter when the backend can move valves."""
    client = entry.runtime_data.client
    if client.supports(Capability.VALVE):

        def build(coordinator: MeterCloudCoordinator, meter_id: str) -> list[MeterValve]:
            has_valve = "valve" in client.fields_for(coordinator.data[meter_id])
            return [MeterValve(coordinator, meter_id)] if has_valve else []

        add_meter_entities(entry, async_add_entities, build)


class MeterValve(MeterCloudEntity, ValveEntity):
    """The meter's shut-off valve."""

    _attr_translation_key = "valve"
    _attr_device_class = ValveDeviceClass.GAS
    _attr_supported_features = ValveEntityFeature.OPEN | ValveEntityFeature.CLOSE
    _attr_reports_position = False

    def __init__(self, coordinator: MeterCloudCoordinator, meter_id: str) -> None:
        """Set up the valve."""
        super().__init__(coordinator, meter_id, "valve")

    @property
    @override
    def is_closed(self) -> bool | None:
        """Closed, open, or unknown (moving, fault, not reported)."""
        valve = self.meter.valve if self.meter else None
        if valve is ValveState.CLOSED:
            return True
        if valve is ValveState.OPEN:
            return False
        return None

    @property
    @override
    def extra_state_attributes(self) -> dict[str, Any] | None:
        """The last valve command: what, its state, the cloud's message and when, so a refusal is never silent."""
        command = self.coordinator.commands.latest(self.meter_id, VALVE_KINDS)
        if command is None:
            return None
        return {
            "last_command": command.kind.value,
            "last_command_state": command.state.value,
            "last_command_message": command.message,
            "last_command_time": command.updated.isoformat(),
            "last_command_serial": command.serial,
        }

    @property
    @override
    def is_opening(self) -> bool:
        """An open command is pending."""
        return self.coordinator.actions.pending_valve(self.meter_id) is CommandKind.VALVE_OPEN

    @property
    @override
    def is_closing(self) -> bool:
        """A close command is pending."""
        return self.coordinator.actions.pending_valve(self.meter_id) is CommandKind.VALVE_CLOSE

    @override
    async def async_open_valve(self, **kwargs: Any) -> None:
        """Ask the cloud to open the valve."""
        await self.coordinator.actions.async_set_valve(self.meter_id, True)

    @override
    async def async_close_valve(self, **kwargs: Any) -> None:
        """Ask the cloud to close the valve."""
        await self.coordinator.actions.async_set_valve(self.meter_id, False)
