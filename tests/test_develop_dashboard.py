"""scripts/develop's "Meter Cloud" dashboard: built from four set-up entries, saved through Lovelace's websocket API."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from homeassistant.components.frontend import storage as frontend_storage
from homeassistant.const import __version__ as HA_VERSION
from homeassistant.core import HomeAssistant
from homeassistant.helpers import entity_registry as er
from homeassistant.setup import async_setup_component
from pytest_homeassistant_custom_component.common import MockConfigEntry

from custom_components.meter_cloud.const import DOMAIN


def _load_script() -> ModuleType:
    path = Path(__file__).resolve().parent.parent / "scripts" / "develop_dashboard.py"
    spec = importlib.util.spec_from_file_location("develop_dashboard", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


dashboard = _load_script()
# Open and close buttons where the frontend has them (2026); 2025.4's has no valve feature: the tile's icon does it.
VALVE_FEATURES = [{"type": "valve-open-close"}] if tuple(map(int, HA_VERSION.split(".")[:2])) >= (2026, 1) else None


@pytest.fixture
async def call(hass: HomeAssistant, hass_ws_client: Any) -> Any:
    """Websocket commands as the admin user, as scripts/develop sends them (the frontend package is not needed)."""
    assert await async_setup_component(hass, "config", {})
    assert await async_setup_component(hass, "lovelace", {})
    await frontend_storage.async_setup_frontend_storage(hass)
    client = await hass_ws_client(hass)

    async def send(command: str, **fields: Any) -> Any:
        await client.send_json_auto_id({"type": command, **fields})
        answer = await client.receive_json()
        if not answer["success"]:
            raise dashboard.CommandError(answer["error"]["code"], answer["error"]["message"])
        return answer["result"]

    return send


@pytest.fixture
def entries(
    setup_entry: MockConfigEntry, cn_entry: MockConfigEntry, iot_entry: MockConfigEntry, kumir_entry: MockConfigEntry
) -> list[MockConfigEntry]:
    """An entry of every backend, set up against its simulator."""
    return [setup_entry, cn_entry, iot_entry, kumir_entry]


def _referenced(node: Any) -> Iterator[str]:
    """Every entity id a card config names (`entity`, and `entities` as ids or rows)."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "entity" and isinstance(value, str):
                yield value
            elif key == "entities" and isinstance(value, list):
                for item in value:
                    yield item if isinstance(item, str) else item["entity"]
            else:
                yield from _referenced(value)
    elif isinstance(node, list):
        for item in node:
            yield from _referenced(item)


def _cards(view: dict[str, Any], heading: str) -> list[dict[str, Any]]:
    """The cards of the view's section under that heading (none when it has no such section)."""
    for section in view["sections"]:
        first, *cards = section["cards"]
        if first == {"type": "heading", "heading": heading, "icon": first.get("icon")}:
            return cards
    return []


def _enabled(hass: HomeAssistant, entry: MockConfigEntry, domain: str, key: str | None = None) -> set[str]:
    registry = er.async_get(hass)
    return {
        row.entity_id
        for row in er.async_entries_for_config_entry(registry, entry.entry_id)
        if row.domain == domain and row.disabled_by is None and (key is None or row.translation_key == key)
    }


@pytest.mark.default_entities
async def test_dashboard_views_per_backend(hass: HomeAssistant, entries: list[MockConfigEntry], call: Any) -> None:
    """A view per backend; every entity it names exists, is Meter Cloud's, enabled and of that view's entry."""
    assert await dashboard.install_dashboard(call) == "created"
    config = await call("lovelace/config", url_path=dashboard.URL_PATH)
    registry = er.async_get(hass)

    backend_of = {entry.entry_id: entry.data["backend"] for entry in entries}
    view_backends = []
    for view in config["views"]:
        referenced = set(_referenced(view))
        assert referenced, view["title"]
        rows = [registry.async_get(entity_id) for entity_id in referenced]
        assert all(row is not None and row.platform == DOMAIN and row.disabled_by is None for row in rows)
        assert all(hass.states.get(entity_id) is not None for entity_id in referenced)
        owners = {row.config_entry_id for row in rows if row is not None}
        assert len(owners) == 1, view["title"]
        view_backends.append(backend_of[owners.pop()])
    assert sorted(view_backends) == ["cangnan", "goldcard", "iotmeter", "kumir"]

    # Some entities are disabled by default; none of them is on the dashboard.
    disabled = {row.entity_id for row in registry.entities.values() if row.platform == DOMAIN and row.disabled_by}
    assert disabled
    assert not disabled & set(_referenced(config))


@pytest.mark.default_entities
async def test_dashboard_sections(hass: HomeAssistant, entries: list[MockConfigEntry], call: Any) -> None:
    """Readings, daily use, balances, valves and alarms of each entry, as far as the backend has them."""
    await dashboard.install_dashboard(call)
    config = await call("lovelace/config", url_path=dashboard.URL_PATH)
    views = {view["title"]: view for view in config["views"]}
    assert set(views) == {entry.title for entry in entries}

    for entry in entries:
        view = views[entry.title]
        assert view["type"] == "sections"
        readings = set(_referenced(_cards(view, "Readings")))
        graphs = _cards(view, "Daily use")
        assert graphs, entry.title
        for graph in graphs:
            assert graph["type"] == "statistics-graph"
            assert (graph["chart_type"], graph["period"], graph["stat_types"]) == ("bar", "day", ["change"])
        in_graphs = set(_referenced(graphs))
        for entity_id in in_graphs:
            attributes = hass.states.get(entity_id).attributes  # type: ignore[union-attr]
            assert attributes["state_class"] == "total_increasing", entity_id
            assert attributes["device_class"] in {"energy", "gas", "water"}, entity_id
        assert in_graphs <= readings
        tiles = _cards(view, "Valves")
        assert all(tile["type"] == "tile" and tile.get("features") == VALVE_FEATURES for tile in tiles)
        assert {tile["entity"] for tile in tiles} == _enabled(hass, entry, "valve")
        assert set(_referenced(_cards(view, "Balances"))) == _enabled(hass, entry, "sensor", "balance")
        alarms = set(_referenced(_cards(view, "Alarms")))
        assert _enabled(hass, entry, "event") <= alarms
        if entry.data["backend"] == "kumir":
            # No reading sensor: the counters are the total-increasing sensors; no money, valve or alarm.
            assert not tiles
            assert not alarms
            assert not _cards(view, "Balances")
            counters = {
                state.entity_id
                for state in hass.states.async_all("sensor")
                if state.entity_id in _enabled(hass, entry, "sensor")
                and state.attributes.get("state_class") == "total_increasing"
            }
            assert readings == counters
            assert in_graphs == {
                entity_id
                for entity_id in counters
                if hass.states.get(entity_id).attributes.get("device_class") in {"energy", "gas", "water"}  # type: ignore[union-attr]
            }
        else:
            meter_readings = _enabled(hass, entry, "sensor", "reading")
            assert meter_readings
            assert readings == meter_readings
            assert in_graphs == meter_readings
            assert tiles
            assert alarms


@pytest.mark.default_entities
async def test_dashboard_updated_in_place(hass: HomeAssistant, entries: list[MockConfigEntry], call: Any) -> None:
    """A second run updates the one dashboard; it is in the sidebar, and the default where Home Assistant keeps one."""
    assert await dashboard.install_dashboard(call) == "created"
    first = await call("lovelace/config", url_path=dashboard.URL_PATH)
    await call("lovelace/config/save", url_path=dashboard.URL_PATH, config={"views": []})
    assert await dashboard.install_dashboard(call) == "updated"
    assert await call("lovelace/config", url_path=dashboard.URL_PATH) == first
    ours = [d for d in await call("lovelace/dashboards/list") if d["url_path"] == dashboard.URL_PATH]
    assert len(ours) == 1
    assert (ours[0]["title"], ours[0]["icon"], ours[0]["show_in_sidebar"], ours[0]["mode"]) == (
        dashboard.TITLE,
        dashboard.ICON,
        True,
        "storage",
    )

    done = await dashboard.make_default(call)
    user = (await call("frontend/get_user_data", key="core"))["value"]
    if hasattr(frontend_storage, "async_system_store"):  # Home Assistant 2026
        assert done == ["system", "user"]
        assert (await call("frontend/get_system_data", key="core"))["value"]["default_panel"] == dashboard.URL_PATH
        assert user["default_panel"] == dashboard.URL_PATH
    else:  # 2025.4: the default is the browser's
        assert done == []
        assert user is None


@pytest.mark.parametrize(
    ("version", "feature"),
    [
        ("2025.4.4", []),
        ("2025.12.0", []),
        ("2026.1.0", [{"type": "valve-open-close"}]),
        ("2026.10.4", [{"type": "valve-open-close"}]),
    ],
)
def test_valve_features(version: str, feature: list[dict[str, str]]) -> None:
    """The valve tiles' buttons follow the version."""
    assert dashboard.valve_features(version) == feature


@pytest.mark.default_entities
async def test_default_left_alone_when_another(hass: HomeAssistant, entries: list[MockConfigEntry], call: Any) -> None:
    """A system-wide default someone chose is kept (2026; 2025.4 has no such setting)."""
    if not hasattr(frontend_storage, "async_system_store"):
        pytest.skip("Home Assistant 2025.4 has no system-wide default dashboard")
    await call("frontend/set_system_data", key="core", value={"default_panel": "energy"})
    assert await dashboard.make_default(call) == ["user"]
    assert (await call("frontend/get_system_data", key="core"))["value"] == {"default_panel": "energy"}
