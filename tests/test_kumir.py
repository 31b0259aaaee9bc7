"""KUMIR-RESURS through Home Assistant against the simulator over HTTP on 127.0.0.1."""

from __future__ import annotations

from typing import Any

from homeassistant.core import HomeAssistant
from homeassistant.helpers import entity_registry as er
from pytest_homeassistant_custom_component.common import MockConfigEntry

from simulator.kumir import KumirSimulator


async def test_smoke(hass: HomeAssistant, kumir_entry: MockConfigEntry, kumir_sim: KumirSimulator) -> None:
    registry = er.async_get(hass)
    entities = er.async_entries_for_config_entry(registry, kumir_entry.entry_id)
    print(len(entities))
    for e in entities[:60]:
        state = hass.states.get(e.entity_id)
        print(e.entity_id, e.unique_id, state.state if state else None, state.attributes if state else None)
    print(kumir_sim.requests)
