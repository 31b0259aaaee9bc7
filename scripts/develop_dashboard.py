"""The "Meter Cloud" dashboard of scripts/develop: built from the entity registry, saved through Lovelace's websocket.

    python scripts/develop_dashboard.py URL USERNAME PASSWORD   create it (or update it in place) on a running
                                                                Home Assistant, and make it the default dashboard

One view per Meter Cloud entry (in scripts/develop: one per backend), each with a section of readings, balances,
valves (tiles with open/close buttons), alarms (event entities and state sensors) and a bar graph of daily use per
unit. Entities are picked by what the registry says of them (translation key, platform, entry), never by a guessed
entity id, and only those that have a state (so disabled ones stay off). Titles are English: a dashboard's own text
is not translated by Home Assistant; entity names are.
"""

from __future__ import annotations

import asyncio
import re
import sys
from collections.abc import Awaitable, Callable
from typing import Any

URL_PATH = "meter-cloud"
TITLE = "Meter Cloud"
ICON = "mdi:meter-gas"
DOMAIN = "meter_cloud"
DAYS_SHOWN = 14

# call(type, **fields) sends one websocket command and returns its result (raises on an error answer).
type Call = Callable[..., Awaitable[Any]]


class CommandError(Exception):
    """A websocket command answered with an error."""

    def __init__(self, code: str, message: str) -> None:
        """Keep Home Assistant's error code (unknown_command, not_found...)."""
        super().__init__(f"{code}: {message}")
        self.code = code


# A valve tile's open and close buttons: frontends of Home Assistant 2026 have them; 2025.4's has none for a valve (the
# feature shows "Unknown type encountered", and its toggle feature shows nothing), so there the tile goes without and
# its icon opens and closes the valve.
OPEN_CLOSE_SINCE = (2026, 1)


def valve_features(version: str) -> list[dict[str, str]]:
    """The tile features that open and close a valve on this Home Assistant version."""
    major, minor = (int(part) for part in re.findall(r"\d+", version)[:2])
    return [{"type": "valve-open-close"}] if (major, minor) >= OPEN_CLOSE_SINCE else []


# The classes of the counters the Energy dashboard takes: those get a daily-use graph.
ENERGY_CLASSES = frozenset({"energy", "gas", "water"})


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "entry"


class _Names:
    """How rows are named: a device by its meter number, an entity by its name without the device's."""

    def __init__(self, devices: list[dict[str, Any]], states: dict[str, dict[str, Any]]) -> None:
        """Index the devices and the states' friendly names."""
        self._devices = {device["id"]: device for device in devices}
        self._states = states

    def device(self, device_id: str | None) -> str:
        device = self._devices.get(device_id or "", {})
        return str(device.get("name_by_user") or device.get("serial_number") or device.get("name") or "")

    def own(self, row: dict[str, Any]) -> str:
        """The entity's own name, in Home Assistant's language (the friendly name less the device's name)."""
        friendly = str(self._states[row["entity_id"]].get("attributes", {}).get("friendly_name") or "")
        device = self._devices.get(row["device_id"] or "", {})
        prefix = str(device.get("name_by_user") or device.get("name") or "")
        return friendly.removeprefix(prefix).strip() if prefix and friendly.startswith(prefix) else friendly


def _one_per_device(rows: list[dict[str, Any]]) -> bool:
    devices = [row["device_id"] for row in rows]
    return None not in devices and len(set(devices)) == len(devices)


def _cards(
    kind: str, rows: list[dict[str, Any]], names: _Names, card: Callable[[str | None, list[dict[str, Any]]], Any]
) -> list[dict[str, Any]]:
    """Cards of one kind of row: rows named after their device when each device has one (the title says what);
    else a card per entity kind (translation key) when that gives one per device; else a card per device."""
    if _one_per_device(rows):
        return [card(None, [{"entity": row["entity_id"], "name": names.device(row["device_id"])} for row in rows])]
    by_key: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_key.setdefault(row["translation_key"] or "", []).append(row)
    if all(_one_per_device(group) for group in by_key.values()):
        return [
            card(names.own(group[0]), [{"entity": r["entity_id"], "name": names.device(r["device_id"])} for r in group])
            for group in by_key.values()
        ]
    by_device: dict[str | None, list[dict[str, Any]]] = {}
    for row in rows:
        by_device.setdefault(row["device_id"], []).append(row)
    return [
        card(names.device(device_id) or kind, [{"entity": r["entity_id"], "name": names.own(r)} for r in group])
        for device_id, group in by_device.items()
    ]


def _entities_card(title: str | None, rows: list[dict[str, Any]]) -> dict[str, Any]:
    return {"type": "entities", **({"title": title} if title else {}), "entities": rows}


def _section(title: str, icon: str, cards: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {"type": "grid", **extra, "cards": [{"type": "heading", "heading": title, "icon": icon}, *cards]}


def _attribute(states: dict[str, dict[str, Any]], row: dict[str, Any], name: str) -> Any:
    return states[row["entity_id"]].get("attributes", {}).get(name)


def _counters(sensors: list[dict[str, Any]], states: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Each device's meter reading; a device without one (KUMIR-RESURS) gives every total-increasing sensor."""
    with_reading = {row["device_id"] for row in sensors if row["translation_key"] == "reading"}
    return [
        row
        for row in sensors
        if row["translation_key"] == "reading"
        or (row["device_id"] not in with_reading and _attribute(states, row, "state_class") == "total_increasing")
    ]


def _daily_use(rows: list[dict[str, Any]], states: dict[str, dict[str, Any]], names: _Names) -> list[dict[str, Any]]:
    """Bar graphs of each day's use of the energy counters: one per unit (and per device, if it has several)."""
    energy = [row for row in rows if _attribute(states, row, "device_class") in ENERGY_CLASSES]
    graphs: list[dict[str, Any]] = []
    by_unit: dict[str, list[dict[str, Any]]] = {}
    for row in energy:
        by_unit.setdefault(str(_attribute(states, row, "unit_of_measurement") or ""), []).append(row)
    for unit, group in by_unit.items():

        def graph(title: str | None, series: list[dict[str, Any]], unit: str = unit) -> dict[str, Any]:
            return {
                "type": "statistics-graph",
                "title": f"{title} ({unit})" if title else f"Daily use ({unit})",
                "entities": series,
                "chart_type": "bar",
                "period": "day",
                "stat_types": ["change"],
                "days_to_show": DAYS_SHOWN,
                "grid_options": {"columns": "full"},
            }

        graphs += _cards("Daily use", group, names, graph)
    return graphs


def _entry_view(
    entry: dict[str, Any],
    rows: list[dict[str, Any]],
    states: dict[str, dict[str, Any]],
    names: _Names,
    features: list[dict[str, str]],
) -> dict[str, Any]:
    """The view of one entry: a section per kind of entity it has."""
    rows = sorted(rows, key=lambda row: (names.device(row["device_id"]), row["unique_id"]))
    sensors = [row for row in rows if row["entity_id"].startswith("sensor.")]
    counters = _counters(sensors, states)
    balances = [row for row in sensors if row["translation_key"] == "balance"]
    valves = [row for row in rows if row["entity_id"].startswith("valve.")]
    alarms = [row for row in rows if row["entity_id"].startswith("event.")] + [
        row for row in sensors if row["translation_key"] in {"status", "state_message"}
    ]
    sections = []
    if counters:
        sections.append(_section("Readings", "mdi:counter", _cards("Readings", counters, names, _entities_card)))
    if graphs := _daily_use(counters, states, names):
        sections.append(_section("Daily use", "mdi:chart-bar", graphs, column_span=2))
    if balances:
        sections.append(_section("Balances", "mdi:cash", _cards("Balances", balances, names, _entities_card)))
    if valves:
        tiles = [
            {
                "type": "tile",
                "entity": row["entity_id"],
                "name": names.device(row["device_id"]) or names.own(row),
                **({"features": features} if features else {}),
            }
            for row in valves
        ]
        sections.append(_section("Valves", "mdi:valve", tiles))
    if alarms:
        sections.append(_section("Alarms", "mdi:alarm-light", _cards("Alarms", alarms, names, _entities_card)))
    return {
        "type": "sections",
        "title": entry["title"],
        "path": _slug(entry["title"]),
        "max_columns": 3,
        "sections": sections,
    }


def build_dashboard(
    entries: list[dict[str, Any]],
    entities: list[dict[str, Any]],
    states: list[dict[str, Any]],
    devices: list[dict[str, Any]],
    version: str,
) -> dict[str, Any]:
    """The dashboard's config from what the websocket API lists: entries, registry entities, states, devices."""
    state_of = {state["entity_id"]: state for state in states}
    names = _Names(devices, state_of)
    ours = [
        row
        for row in entities
        if row["platform"] == DOMAIN
        and row["disabled_by"] is None
        and row["hidden_by"] is None
        and row["entity_id"] in state_of
    ]
    views = []
    for entry in sorted(entries, key=lambda entry: entry["title"]):
        if entry["domain"] != DOMAIN:
            continue
        rows = [row for row in ours if row["config_entry_id"] == entry["entry_id"]]
        if rows:
            views.append(_entry_view(entry, rows, state_of, names, valve_features(version)))
    return {"title": TITLE, "views": views}


async def install_dashboard(call: Call) -> str:
    """Create the dashboard, or update the one there is, and save its config; 'created' or 'updated'."""
    entries = await call("config_entries/get", domain=DOMAIN)
    entities = await call("config/entity_registry/list")
    states = await call("get_states")
    devices = await call("config/device_registry/list")
    version = (await call("get_config"))["version"]
    config = build_dashboard(entries, entities, states, devices, version)
    existing = next((d for d in await call("lovelace/dashboards/list") if d["url_path"] == URL_PATH), None)
    fields = {"title": TITLE, "icon": ICON, "show_in_sidebar": True, "require_admin": False}
    if existing is None:
        await call("lovelace/dashboards/create", url_path=URL_PATH, **fields)
        outcome = "created"
    else:
        await call("lovelace/dashboards/update", dashboard_id=existing["id"], **fields)
        outcome = "updated"
    await call("lovelace/config/save", url_path=URL_PATH, config=config)
    return outcome


async def make_default(call: Call) -> list[str]:
    """Make the dashboard the one Home Assistant opens on; say where (none on a version without the setting).

    Home Assistant 2026 reads a system-wide default (frontend system data `core`) and a per-user one (user data
    `core`); the system one is set unless it already names another dashboard, the user's always. 2025.4's frontend
    keeps the default in the browser only: there, the banner's URL leads to the dashboard instead.
    """
    done = []
    try:
        system = (await call("frontend/get_system_data", key="core"))["value"] or {}
    except CommandError as err:
        if err.code != "unknown_command":
            raise
    else:
        if system.get("default_panel") in {None, URL_PATH}:
            await call("frontend/set_system_data", key="core", value={**system, "default_panel": URL_PATH})
            done.append("system")
        user = (await call("frontend/get_user_data", key="core"))["value"] or {}
        await call("frontend/set_user_data", key="core", value={**user, "default_panel": URL_PATH})
        done.append("user")
    return done


async def _access_token(session: Any, url: str, username: str, password: str) -> str:
    """Log in as the frontend does: a login flow, then the code for a token."""
    client_id = f"{url}/"
    async with session.post(
        f"{url}/auth/login_flow",
        json={"client_id": client_id, "handler": ["homeassistant", None], "redirect_uri": client_id},
    ) as response:
        flow = await response.json()
    async with session.post(
        f"{url}/auth/login_flow/{flow['flow_id']}",
        json={"client_id": client_id, "username": username, "password": password},
    ) as response:
        result = await response.json()
    if result.get("type") != "create_entry":
        raise RuntimeError(f"login as {username!r} refused: {result.get('errors')}")
    async with session.post(
        f"{url}/auth/token",
        data={"grant_type": "authorization_code", "code": result["result"], "client_id": client_id},
    ) as response:
        return str((await response.json())["access_token"])


async def wait_for_entries(call: Call, seconds: float = 180) -> None:
    """Until no Meter Cloud entry is still being set up (their entities are registered by then)."""
    deadline = asyncio.get_running_loop().time() + seconds
    while asyncio.get_running_loop().time() < deadline:
        entries = await call("config_entries/get", domain=DOMAIN)
        if not any(entry["state"] in {"not_loaded", "setup_in_progress"} for entry in entries):
            return
        await asyncio.sleep(2)


async def run(url: str, username: str, password: str) -> None:
    """Log in, then create or update the dashboard over the websocket API."""
    import aiohttp  # noqa: PLC0415 (Home Assistant's environment has it; the module is imported by tests too)

    async with aiohttp.ClientSession() as session:
        token = await _access_token(session, url, username, password)
        async with session.ws_connect(f"{url}/api/websocket") as ws:
            await ws.receive_json()  # auth_required
            await ws.send_json({"type": "auth", "access_token": token})
            if (answer := await ws.receive_json())["type"] != "auth_ok":
                raise RuntimeError(f"websocket login refused: {answer}")
            ids = iter(range(1, 1_000_000))

            async def call(command: str, **fields: Any) -> Any:
                message_id = next(ids)
                await ws.send_json({"id": message_id, "type": command, **fields})
                while (answer := await ws.receive_json())["id"] != message_id:
                    pass
                if not answer["success"]:
                    raise CommandError(answer["error"]["code"], answer["error"]["message"])
                return answer["result"]

            await wait_for_entries(call)
            outcome = await install_dashboard(call)
            default = await make_default(call)
    where = f"; the default dashboard ({' and '.join(default)})" if default else ""
    print(f"develop: {outcome} the dashboard {TITLE!r} at {url}/{URL_PATH}{where}", file=sys.stderr)


if __name__ == "__main__":
    asyncio.run(run(*sys.argv[1:4]))
