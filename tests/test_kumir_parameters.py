"""KUMIR-RESURS parameter table and tariff layouts, through Home Assistant against the simulator over HTTP.

Device types whose parameter names the integration does not know (a gas corrector reporting Vc/Vr/Tw, a pulse
counter reporting Imp) show suggested meanings or unknown; the user describes one through the options flow and,
after the reload, its sensor has the unit and classes and a backfilled statistic with the simulator's readings.
An m234 laid out like the 230 ART is detected (5 = losses, 6 = sum) and kept off the Energy dashboard; a declared
layout the data contradict raises a repair issue, which its fix flow settles.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from aiohttp.test_utils import TestServer
from homeassistant.components.recorder import Recorder, get_instance
from homeassistant.components.recorder.statistics import statistics_during_period
from homeassistant.config_entries import ConfigEntryState
from homeassistant.core import HomeAssistant
from homeassistant.data_entry_flow import FlowResultType
from homeassistant.helpers import entity_registry as er
from homeassistant.helpers import issue_registry as ir
from homeassistant.setup import async_setup_component
from homeassistant.util import dt as dt_util
from pytest_homeassistant_custom_component.common import MockConfigEntry, async_fire_time_changed
from pytest_homeassistant_custom_component.components.recorder.common import async_wait_recording_done

from custom_components.meter_cloud.api import KumirClient
from custom_components.meter_cloud.const import DOMAIN
from custom_components.meter_cloud.value_issues import issue_id
from simulator.kumir import KumirSimulator, _fmt

from .conftest import kumir_data

PLAIN, GAS, PULSES, ART = "Pol_276", "Pol_290", "Pol_291", "Pol_292"
NODES = [
    (PLAIN, "34781353", "m234"),
    (GAS, "51234567", "spg761"),
    (PULSES, "51234568", "imp4"),
    # The spec's own device type, laid out like the Mercury 230 ART: tariff 5 losses, 6 the sum of 1-4.
    (ART, "51234569", "m234", "m234_art"),
]
pytestmark = pytest.mark.kumir_nodes(NODES)
BACKFILL_DAYS = 3


@pytest.fixture(autouse=True)
def auto_enable_custom_integrations(recorder_mock: Recorder, enable_custom_integrations: None) -> None:
    """The recorder must start before Home Assistant: override the suite's autouse fixture to order them."""


def _meter(sim: KumirSimulator, code: str) -> str:
    return f"{code}/{sim.nodes[code].num}"


def _entity(hass: HomeAssistant, sim: KumirSimulator, code: str, key: str) -> str:
    found = er.async_get(hass).async_get_entity_id("sensor", DOMAIN, f"kumir_{_meter(sim, code)}_{key}")
    assert found is not None, (code, key)
    return found


def _attributes(hass: HomeAssistant, sim: KumirSimulator, code: str, key: str) -> dict[str, Any]:
    state = hass.states.get(_entity(hass, sim, code, key))
    assert state is not None, (code, key)
    return dict(state.attributes)


def _reading_time(hass: HomeAssistant, sim: KumirSimulator, code: str) -> datetime:
    """The instant of the node's newest record (its Last reading time sensor is off by default)."""
    meter = hass.config_entries.async_entries(DOMAIN)[0].runtime_data.data[_meter(sim, code)]
    assert meter.reading_time is not None
    return meter.reading_time


async def _settle(hass: HomeAssistant) -> None:
    """Reloads, background imports and the recorder's queue, all done."""
    await hass.async_block_till_done(wait_background_tasks=True)
    await async_wait_recording_done(hass)


async def _setup(hass: HomeAssistant, sim: KumirSimulator, server: TestServer) -> MockConfigEntry:
    data = kumir_data(sim, server, backfill_days=BACKFILL_DAYS)
    entry = MockConfigEntry(domain=DOMAIN, title="KUMIR test", data=data, unique_id=KumirClient.unique_id(data))
    entry.add_to_hass(hass)
    assert await hass.config_entries.async_setup(entry.entry_id)
    await _settle(hass)
    return entry


async def _rows(hass: HomeAssistant, stat_id: str) -> list[dict[str, Any]]:
    start = datetime.now(UTC) - timedelta(days=BACKFILL_DAYS + 2)
    found = await get_instance(hass).async_add_executor_job(
        statistics_during_period, hass, start, None, {stat_id}, "hour", None, {"state", "sum"}
    )
    return list(found.get(stat_id, []))


def _choices(result: Any, field: str) -> dict[str, str]:
    """value → label of a select field of a form."""
    for marker, selector in result["data_schema"].schema.items():
        if str(marker) == field:
            return {option["value"]: option["label"] for option in selector.config["options"]}
    raise AssertionError(field)


def _suggested(result: Any) -> dict[str, Any]:
    """What a form pre-fills: suggested values and defaults."""
    found: dict[str, Any] = {}
    for marker in result["data_schema"].schema:
        if (marker.description or {}).get("suggested_value") is not None:
            found[str(marker)] = marker.description["suggested_value"]
        elif callable(marker.default):
            found[str(marker)] = marker.default()
    return found


async def _menu(hass: HomeAssistant, entry: MockConfigEntry, step: str) -> Any:
    result = await hass.config_entries.options.async_init(entry.entry_id)
    assert result["type"] is FlowResultType.MENU
    return await hass.config_entries.options.async_configure(result["flow_id"], {"next_step_id": step})


async def _save(hass: HomeAssistant, result: Any) -> None:
    """Save from the menu; the entry reloads (and once more when sensors were enabled)."""
    assert result["type"] is FlowResultType.MENU
    assert "save" in result["menu_options"]
    result = await hass.config_entries.options.async_configure(result["flow_id"], {"next_step_id": "save"})
    assert result["type"] is FlowResultType.CREATE_ENTRY
    await _settle(hass)
    # Enabling an entity reloads its entry after Home Assistant's 30 s delay.
    async_fire_time_changed(hass, dt_util.utcnow() + timedelta(seconds=31))
    await _settle(hass)


@pytest.mark.default_entities
async def test_unknown_parameters_suggested_then_described(
    hass: HomeAssistant, kumir_sim: KumirSimulator, kumir_server: TestServer
) -> None:
    """Suggested where the name has a pattern, unknown otherwise; a described counter gets its unit, classes and a
    backfilled statistic of the simulator's exact readings; a counter kept off the dashboard gets none."""
    sim = kumir_sim
    entry = await _setup(hass, sim, kumir_server)
    registry = er.async_get(hass)
    for key in ("s1_Vc", "s1_Vr", "s1_Tw"):
        unknown = registry.async_get(_entity(hass, sim, GAS, key))
        assert unknown is not None
        assert unknown.disabled_by is er.RegistryEntryDisabler.INTEGRATION
        assert unknown.unit_of_measurement is None
        assert unknown.original_device_class is None

    result = await _menu(hass, entry, "parameters")
    assert result["step_id"] == "parameters"
    labels = _choices(result, "parameter")
    assert labels["spg761/Vc"] == "spg761 · Vc: m³, volume, counter, Energy dashboard (suggested)"
    assert labels["spg761/Vr"] == "spg761 · Vr: m³, volume, counter, Energy dashboard (suggested)"
    assert labels["imp4/Imp"] == "imp4 · Imp: —, —, counter, Energy dashboard (suggested)"
    # Tw: a temperature or a time? The name does not say, so nothing is suggested.
    assert labels["spg761/Tw"] == "spg761 · Tw: — (unknown)"
    assert labels["imp4/Flags"] == "imp4 · Flags: — (unknown)"
    assert labels["spg761/P"] == "spg761 · P: kPa, pressure, instantaneous (usual name)"
    assert labels["m234/EAi"] == "m234 · EAi: kWh, energy, counter, Energy dashboard (vendor's document)"
    assert labels["m234/U_A"] == "m234 · U_A: V, voltage, instantaneous (vendor's document)"

    result = await hass.config_entries.options.async_configure(result["flow_id"], {"parameter": "spg761/Vc"})
    assert result["step_id"] == "parameter"
    assert _suggested(result) == {
        "unit": "m³",
        "device_class": "volume",
        "kind": "cumulative",
        "energy": True,
        "reset": False,
    }
    wrong = {"unit": "kWh", "device_class": "gas", "kind": "cumulative", "energy": True, "reset": False}
    result = await hass.config_entries.options.async_configure(result["flow_id"], wrong)
    assert result["errors"] == {"base": "unit_not_for_class"}
    wrong = {"unit": "m³", "device_class": "gas", "kind": "instantaneous", "energy": False, "reset": False}
    result = await hass.config_entries.options.async_configure(result["flow_id"], wrong)
    assert result["errors"] == {"base": "kind_not_for_class"}
    gas = {"unit": "m³", "device_class": "gas", "kind": "cumulative", "energy": True, "reset": False}
    result = await hass.config_entries.options.async_configure(result["flow_id"], gas)
    assert result["type"] is FlowResultType.MENU
    assert result["menu_options"] == ["parameters", "tariff_layout", "save"]
    # Operating hours: a counter, but nothing for the Energy dashboard.
    result = await hass.config_entries.options.async_configure(result["flow_id"], {"next_step_id": "parameters"})
    assert _choices(result, "parameter")["spg761/Vc"] == "spg761 · Vc: m³, gas, counter, Energy dashboard (yours)"
    result = await hass.config_entries.options.async_configure(result["flow_id"], {"parameter": "spg761/Tw"})
    hours = {"unit": "h", "device_class": "duration", "kind": "cumulative", "energy": False, "reset": False}
    result = await hass.config_entries.options.async_configure(result["flow_id"], hours)
    assert entry.options == {}  # nothing stored before Save
    await _save(hass, result)

    assert entry.state is ConfigEntryState.LOADED
    assert entry.options["parameters"] == {
        "spg761": {
            "Vc": {"unit": "m³", "device_class": "gas", "kind": "cumulative", "energy": True},
            "Tw": {"unit": "h", "device_class": "duration", "kind": "cumulative", "energy": False},
        }
    }
    node = sim.nodes[GAS]
    when = _reading_time(hass, sim, GAS)
    for system in (1, 2):
        attributes = _attributes(hass, sim, GAS, f"s{system}_Vc")
        assert attributes["unit_of_measurement"] == "m³"
        assert attributes["device_class"] == "gas"
        assert attributes["state_class"] == "total_increasing"
        state = hass.states.get(_entity(hass, sim, GAS, f"s{system}_Vc"))
        assert state is not None
        assert Decimal(state.state) == Decimal(_fmt(sim.counter_value(node, system, "Vc", when)))
    tw = _attributes(hass, sim, GAS, "s1_Tw")
    assert (tw["unit_of_measurement"], tw["device_class"], tw.get("state_class")) == ("h", "duration", None)
    # Vr stays what it was: a suggestion is never applied by itself.
    vr = registry.async_get(_entity(hass, sim, GAS, "s1_Vr"))
    assert vr is not None
    assert vr.disabled_by is er.RegistryEntryDisabler.INTEGRATION

    rows = await _rows(hass, _entity(hass, sim, GAS, "s1_Vc"))
    assert len(rows) >= BACKFILL_DAYS * 24 - 6
    oldest = datetime.fromtimestamp(rows[0]["start"], UTC)
    # Older than the two days an hourly import re-reads: the new counter got its own backfill.
    assert oldest < dt_util.utcnow() - timedelta(days=BACKFILL_DAYS) + timedelta(hours=3)
    for row in rows:
        end = datetime.fromtimestamp(row["start"], UTC) + timedelta(hours=1)
        assert Decimal(str(row["state"])) == Decimal(_fmt(sim.counter_value(node, 1, "Vc", end))), row
    assert not await _rows(hass, _entity(hass, sim, GAS, "s1_Tw"))

    # Later polls keep the meaning and follow the simulator.
    sim.advance(3600)
    await entry.runtime_data.async_refresh()
    await _settle(hass)
    when = _reading_time(hass, sim, GAS)
    state = hass.states.get(_entity(hass, sim, GAS, "s1_Vc"))
    assert state is not None
    assert Decimal(state.state) == Decimal(_fmt(sim.counter_value(node, 1, "Vc", when)))
    assert state.attributes["state_class"] == "total_increasing"


async def test_m234_laid_out_like_the_230_is_detected(
    hass: HomeAssistant, kumir_sim: KumirSimulator, kumir_server: TestServer
) -> None:
    """Tariff 6 equals 1+2+3+4 in every record: a sum; 5 stands apart: losses. Neither is on the Energy dashboard;
    the plain m234 beside it keeps all its tariffs; nothing was declared, so nothing is reported."""
    assert await async_setup_component(hass, "repairs", {})
    sim = kumir_sim
    entry = await _setup(hass, sim, kumir_server)
    for system in (1, 2, 3, 4):
        assert _attributes(hass, sim, ART, f"s{system}_EAi")["state_class"] == "total_increasing"
        assert _attributes(hass, sim, PLAIN, f"s{system}_EAi")["state_class"] == "total_increasing"
    total, losses = _attributes(hass, sim, ART, "s6_EAi"), _attributes(hass, sim, ART, "s5_EAi")
    assert total.get("state_class") is None
    assert losses.get("state_class") is None
    assert "(sum of 1-4)" in total["friendly_name"]
    assert "(technical losses)" in losses["friendly_name"]
    node, when = sim.nodes[ART], _reading_time(hass, sim, ART)
    state = hass.states.get(_entity(hass, sim, ART, "s6_EAi"))
    assert state is not None
    assert Decimal(state.state) == Decimal(_fmt(sim.counter_value(node, 6, "EAi", when)))

    assert await _rows(hass, _entity(hass, sim, ART, "s1_EAi"))
    assert not await _rows(hass, _entity(hass, sim, ART, "s6_EAi"))
    assert not await _rows(hass, _entity(hass, sim, ART, "s5_EAi"))
    assert not [i for (d, i) in ir.async_get(hass).issues if d == DOMAIN and i.startswith("tariff_layout")]

    result = await _menu(hass, entry, "tariff_layout")
    labels = _choices(result, "device_type")
    assert labels["m234"] == (
        f"m234 · 1, 2, 3, 4, 5, 6 · Detect from the data · {_meter(sim, PLAIN)}: Σ —, ∆ —; "
        f"{_meter(sim, ART)}: Σ 6 (1, 2, 3, 4), ∆ 5"
    )
    # Unknown parameters are not compared: nothing is judged until the user says which are counters.
    assert labels["imp4"] == "imp4 · 1, 2, 3, 4 · Detect from the data"
    assert labels["spg761"] == "spg761 · 1, 2 · Detect from the data"


async def test_declared_layout_against_the_data_is_a_repair_issue(
    hass: HomeAssistant, kumir_sim: KumirSimulator, kumir_server: TestServer
) -> None:
    """Declaring m234 tariff 1 a sum (as on a CE303): both m234s' data say otherwise, so each gets a repair issue
    and meanwhile every tariff either calls special stays off the dashboard; "use what the data show" declares
    6 = sum, 5 = losses, after which no issue is left, also after further polls."""
    assert await async_setup_component(hass, "repairs", {})
    sim = kumir_sim
    entry = await _setup(hass, sim, kumir_server)
    result = await _menu(hass, entry, "tariff_layout")
    result = await hass.config_entries.options.async_configure(result["flow_id"], {"device_type": "m234"})
    assert result["step_id"] == "tariff_layout_edit"
    assert _suggested(result) == {"mode": "detect", "sum": "none", "losses": "none"}
    same = {"mode": "declared", "sum": "5", "losses": "5"}
    result = await hass.config_entries.options.async_configure(result["flow_id"], same)
    assert result["errors"] == {"base": "sum_is_losses"}
    declared = {"mode": "declared", "sum": "1", "losses": "none"}
    result = await hass.config_entries.options.async_configure(result["flow_id"], declared)
    await _save(hass, result)
    assert entry.options["tariff_layout"] == {"m234": {"mode": "declared", "sum": 1, "losses": None}}

    issues = ir.async_get(hass)
    art_issue = issues.async_get_issue(DOMAIN, issue_id(entry.entry_id, _meter(sim, ART)))
    plain_issue = issues.async_get_issue(DOMAIN, issue_id(entry.entry_id, _meter(sim, PLAIN)))
    assert art_issue is not None
    assert plain_issue is not None
    assert art_issue.is_fixable
    placeholders = art_issue.translation_placeholders or {}
    assert {k: placeholders[k] for k in ("declared_sum", "detected_sum", "detected_parts", "detected_losses")} == {
        "declared_sum": "1",
        "detected_sum": "6",
        "detected_parts": "1, 2, 3, 4",
        "detected_losses": "5",
    }
    assert (plain_issue.translation_placeholders or {})["detected_sum"] == "—"
    for system in (1, 5, 6):
        assert _attributes(hass, sim, ART, f"s{system}_EAi").get("state_class") is None, system
    assert _attributes(hass, sim, PLAIN, "s1_EAi").get("state_class") is None
    assert _attributes(hass, sim, ART, "s2_EAi")["state_class"] == "total_increasing"

    from homeassistant.components.repairs import repairs_flow_manager

    manager = repairs_flow_manager(hass)
    assert manager is not None
    result = await manager.async_init(DOMAIN, data={"issue_id": issue_id(entry.entry_id, _meter(sim, ART))})
    assert result["type"] is FlowResultType.MENU
    assert result["menu_options"] == ["use_detected", "keep_declared"]
    result = await manager.async_configure(result["flow_id"], {"next_step_id": "use_detected"})
    assert result["type"] is FlowResultType.CREATE_ENTRY
    await _settle(hass)
    assert entry.state is ConfigEntryState.LOADED
    assert entry.options["tariff_layout"] == {"m234": {"mode": "declared", "sum": 6, "losses": 5}}
    for _ in range(2):
        assert not [i for (d, i) in ir.async_get(hass).issues if d == DOMAIN and i.startswith("tariff_layout")]
        for system in (1, 2, 3, 4):
            assert _attributes(hass, sim, ART, f"s{system}_EAi")["state_class"] == "total_increasing"
            assert _attributes(hass, sim, PLAIN, f"s{system}_EAi")["state_class"] == "total_increasing"
        assert _attributes(hass, sim, ART, "s6_EAi").get("state_class") is None
        assert _attributes(hass, sim, ART, "s5_EAi").get("state_class") is None
        sim.advance(3600)
        await entry.runtime_data.async_refresh()
        await _settle(hass)
