"""KUMIR-RESURS through Home Assistant against the simulator over HTTP on 127.0.0.1."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from aiohttp.test_utils import TestServer
from homeassistant.config_entries import SOURCE_RECONFIGURE, SOURCE_USER, ConfigEntryState
from homeassistant.core import HomeAssistant
from homeassistant.exceptions import HomeAssistantError, ServiceValidationError
from homeassistant.helpers import device_registry as dr
from homeassistant.helpers import entity_registry as er
from homeassistant.util import dt as dt_util
from pytest_homeassistant_custom_component.common import MockConfigEntry, async_fire_time_changed

from custom_components.meter_cloud.api import KumirClient
from custom_components.meter_cloud.api.kumir.session import RENEW_AFTER
from custom_components.meter_cloud.compat import device_by_identifier
from custom_components.meter_cloud.const import DOMAIN
from simulator.kumir import REFUSAL_SHAPES, KumirSimulator, _fmt

from .conftest import KUMIR_TZ, kumir_data
from .timing import RELAXED_TIMEOUT

M234, CE303, TV7, EK270, PULSAR, M230 = "Pol_276", "Pol_277", "Pol_278", "Pol_279", "Pol_280", "Pol_281"


def _uid(sim: KumirSimulator, code: str, key: str) -> str:
    return f"kumir_{code}/{sim.nodes[code].num}_{key}"


def _entity(hass: HomeAssistant, sim: KumirSimulator, code: str, key: str) -> str:
    entity_id = er.async_get(hass).async_get_entity_id("sensor", DOMAIN, _uid(sim, code, key))
    assert entity_id is not None, key
    return entity_id


def _state(hass: HomeAssistant, sim: KumirSimulator, code: str, key: str) -> Any:
    state = hass.states.get(_entity(hass, sim, code, key))
    assert state is not None
    return state


def _reading_time(hass: HomeAssistant, sim: KumirSimulator, code: str) -> datetime:
    """The instant of the node's newest record (the total archive's `now`)."""
    state = _state(hass, sim, code, "reading_time")
    return datetime.fromisoformat(state.state)


def _tracebacks(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    """Warnings and errors that carry a traceback (Home Assistant's own debug "Full error" does not count)."""
    return [r for r in caplog.records if r.exc_info and r.levelno >= logging.WARNING]


def _device(hass: HomeAssistant, entry: MockConfigEntry, sim: KumirSimulator, code: str) -> dr.DeviceEntry:
    device = device_by_identifier(hass, (DOMAIN, f"kumir_{code}/{sim.nodes[code].num}"), entry.entry_id)
    assert device is not None
    return device


def _requests(sim: KumirSimulator, name: str) -> list[dict[str, Any]]:
    return [info for endpoint, _transport, info in sim.requests if endpoint == name]


async def _refresh(hass: HomeAssistant, entry: MockConfigEntry) -> None:
    await entry.runtime_data.async_refresh()
    await hass.async_block_till_done()


async def test_values_units_and_classes(
    hass: HomeAssistant, kumir_entry: MockConfigEntry, kumir_sim: KumirSimulator
) -> None:
    """Each device type's parameters become sensors with the simulator's exact numbers and the right units."""
    sim = kumir_sim
    for code in (M234, CE303, TV7, EK270, PULSAR, M230):
        when = _reading_time(hass, sim, code)
        node = sim.nodes[code]
        counter = {M234: "EAi", CE303: "EAi", TV7: "Q", EK270: "Vs", PULSAR: "C", M230: "EAi"}[code]
        expected = Decimal(_fmt(sim.counter_value(node, 2, counter, when)))
        assert Decimal(_state(hass, sim, code, f"s2_{counter}").state) == expected, code

    expectations = {
        (M234, "s1_EAi"): ("kWh", "energy", "total_increasing"),
        (M234, "s1_ERi"): ("kvarh", None, "total_increasing"),
        (M234, "s1_U_A"): ("V", "voltage", "measurement"),
        (M234, "s1_I_B"): ("A", "current", "measurement"),
        (M234, "s1_F0"): ("Hz", "frequency", "measurement"),
        (M234, "s1_COS_S"): (None, "power_factor", "measurement"),
        (TV7, "s1_Q"): ("Gcal", "energy", "total_increasing"),
        (TV7, "s1_M1"): ("t", None, "total_increasing"),
        (TV7, "s1_V1"): ("m³", "volume", "total_increasing"),
        (TV7, "s2_T1"): ("°C", "temperature", "measurement"),
        (TV7, "s1_P1"): ("MPa", None, "measurement"),
        (TV7, "s1_Tnar"): ("h", "duration", "total_increasing"),
        (EK270, "s1_Vs"): ("m³", "gas", "total_increasing"),
        (EK270, "s1_Vw"): ("m³", "volume", "total_increasing"),
        (EK270, "s1_P"): ("kPa", "pressure", "measurement"),
        (EK270, "s1_T"): ("°C", "temperature", "measurement"),
        (PULSAR, "s4_C"): (None, None, "total_increasing"),
        # Sums and losses stay off the Energy dashboard: no state class, no long-term statistics.
        (M230, "s6_EAi"): ("kWh", "energy", None),
        (M230, "s5_EAi"): ("kWh", "energy", None),
        (M230, "s4_EAi"): ("kWh", "energy", "total_increasing"),
        (M234, "s4_EAi"): ("kWh", "energy", "total_increasing"),
        (CE303, "s1_EAi"): ("kWh", "energy", None),
        (CE303, "s2_EAi"): ("kWh", "energy", "total_increasing"),
    }
    for (code, key), (unit, device_class, state_class) in expectations.items():
        attributes = _state(hass, sim, code, key).attributes
        assert attributes.get("unit_of_measurement") == unit, (code, key)
        if key != "s1_ERi":  # reactive_energy exists from 2025.x on: checked below
            assert attributes.get("device_class") == device_class, (code, key)
        assert attributes.get("state_class") == state_class, (code, key)
    from homeassistant.components.sensor import SensorDeviceClass

    reactive = getattr(SensorDeviceClass, "REACTIVE_ENERGY", None)
    assert _state(hass, sim, M234, "s1_ERi").attributes.get("device_class") == (reactive and reactive.value)
    # Names carry the scheme and its number first, where a picker does not cut them; sums and losses say so.
    name = _state(hass, sim, M234, "s3_EAi").attributes["friendly_name"]
    assert name == f"KUMIR-RESURS {M234}/{sim.nodes[M234].num} Tariff 3: active energy import"
    assert "Heat system 2: heat energy" in _state(hass, sim, TV7, "s2_Q").attributes["friendly_name"]
    assert (
        "Tariff 6 (sum of 1-4): active energy import" in _state(hass, sim, M230, "s6_EAi").attributes["friendly_name"]
    )
    assert "Tariff 5 (technical losses): active" in _state(hass, sim, M230, "s5_EAi").attributes["friendly_name"]
    assert "Tariff 1 (sum of 2-5): active" in _state(hass, sim, CE303, "s1_EAi").attributes["friendly_name"]
    assert _device(hass, kumir_entry, sim, M234).model == "m234"


@pytest.mark.default_entities
async def test_enabled_by_default(hass: HomeAssistant, kumir_entry: MockConfigEntry, kumir_sim: KumirSimulator) -> None:
    """Counters everywhere; meter-wide electrical values only in the lowest tariff; undocumented ones off."""
    registry = er.async_get(hass)

    def enabled(code: str, key: str) -> bool:
        entry = registry.async_get(_entity(hass, kumir_sim, code, key))
        assert entry is not None
        return entry.disabled_by is None

    assert enabled(M234, "s1_EAi")
    assert enabled(M234, "s4_EAi")
    assert enabled(M234, "s1_U_A")
    assert not enabled(M234, "s2_U_A")
    assert not enabled(M234, "s1_RF7")
    assert enabled(TV7, "s2_T1")  # a heat system's temperature is its own
    total = len(er.async_entries_for_config_entry(registry, kumir_entry.entry_id))
    on = sum(e.disabled_by is None for e in er.async_entries_for_config_entry(registry, kumir_entry.entry_id))
    assert on < total


async def test_unknown_elements_never_break_a_poll(
    hass: HomeAssistant, kumir_entry: MockConfigEntry, kumir_sim: KumirSimulator
) -> None:
    """A newer server's unknown device, archive, parameter, attribute: parsed around; unknown params are generic."""
    kumir_sim.fail_next("unknown_elements", count=3)
    await _refresh(hass, kumir_entry)
    assert kumir_entry.runtime_data.last_update_success
    state = _state(hass, kumir_sim, M234, "s1_RF9")
    assert Decimal(state.state) == Decimal("1.5")
    assert state.attributes["friendly_name"].endswith("System 1: RF9")
    entry = er.async_get(hass).async_get(state.entity_id)
    assert entry is not None
    assert entry.disabled_by is None  # the suite enables everything; the default is checked below
    assert not kumir_entry.runtime_data.client.value_info(
        kumir_entry.runtime_data.data[f"{M234}/{kumir_sim.nodes[M234].num}"], "s1_RF9"
    ).enabled


async def test_session_renewal_and_expiry_mid_poll(
    hass: HomeAssistant, kumir_entry: MockConfigEntry, kumir_sim: KumirSimulator
) -> None:
    """Renewed through session.php before 30 minutes; a session the server dropped means one new login."""
    client = kumir_entry.runtime_data.client
    assert isinstance(client, KumirClient)
    assert len(_requests(kumir_sim, "login")) == 1
    base = client.clock()
    client.clock = lambda: base + RENEW_AFTER + 1
    await _refresh(hass, kumir_entry)
    assert _requests(kumir_sim, "session") == [{"session": True}]
    assert len(_requests(kumir_sim, "login")) == 1

    # The server's clock runs past the session's 30 minutes: the next export is sent back to index.php.
    kumir_sim.advance(31 * 60)
    before = len(kumir_sim.requests)
    await _refresh(hass, kumir_entry)
    assert kumir_entry.runtime_data.last_update_success
    assert [name for name, *_ in kumir_sim.requests[before:]][:3] == ["export", "login", "export"]
    assert len(_requests(kumir_sim, "login")) == 2

    # The server forgets the session mid-poll (after the first archive): same recovery.
    kumir_sim.fail_next("session_gone", endpoint="export")
    await _refresh(hass, kumir_entry)
    assert kumir_entry.runtime_data.last_update_success
    assert len(_requests(kumir_sim, "login")) == 3


async def test_wrong_password_mid_life_starts_reauth(
    hass: HomeAssistant, kumir_entry: MockConfigEntry, kumir_sim: KumirSimulator, caplog: pytest.LogCaptureFixture
) -> None:
    """failed.php on a new login = the credentials changed: reauthentication, entities unavailable, no traceback."""
    kumir_sim.password = "changed-on-the-server"
    kumir_sim.advance(31 * 60)
    await _refresh(hass, kumir_entry)
    assert not kumir_entry.runtime_data.last_update_success
    assert _state(hass, kumir_sim, M234, "s1_EAi").state == "unavailable"
    flows = hass.config_entries.flow.async_progress()
    assert any(flow["context"]["source"] == "reauth" for flow in flows)
    assert not _tracebacks(caplog)

    flow = next(flow for flow in flows if flow["context"]["source"] == "reauth")
    result = await hass.config_entries.flow.async_configure(flow["flow_id"], {"login_password": "still-wrong"})
    assert result["errors"] == {"base": "invalid_auth_kumir"}
    result = await hass.config_entries.flow.async_configure(flow["flow_id"], {"login_password": kumir_sim.password})
    assert result["reason"] == "reauth_successful"
    await hass.async_block_till_done()
    assert kumir_entry.state is ConfigEntryState.LOADED


async def test_reauth_proves_the_password_only(
    hass: HomeAssistant, kumir_entry: MockConfigEntry, kumir_sim: KumirSimulator
) -> None:
    """Reauthentication asks for the password and checks the login, not the node list: an account that stopped
    listing a followed node still takes its new password (the node is a matter for Reconfigure)."""
    kumir_sim.remove_node(M234)
    kumir_sim.password = "changed-on-the-server"
    kumir_sim.advance(31 * 60)
    await _refresh(hass, kumir_entry)
    [flow] = _reauth_flows(hass)
    result = await hass.config_entries.flow.async_configure(flow["flow_id"], {"login_password": kumir_sim.password})
    assert result["reason"] == "reauth_successful"
    await hass.async_block_till_done()
    assert kumir_entry.state is ConfigEntryState.LOADED


@pytest.mark.parametrize("mode", ["entity_bomb", "external_entity", "malformed", "huge", "http500", "timeout"])
async def test_hostile_or_broken_answers_change_nothing(
    hass: HomeAssistant,
    kumir_entry: MockConfigEntry,
    kumir_sim: KumirSimulator,
    caplog: pytest.LogCaptureFixture,
    mode: str,
) -> None:
    """Entity expansion, external entities, broken or oversized XML: the poll fails cleanly and recovers."""
    coordinator = kumir_entry.runtime_data
    coordinator.client.max_export_bytes = 2 * 1024 * 1024
    # Generous on purpose: a poll of the real exports must never time out on a busy machine; only the hang does.
    coordinator.client.request_timeout = 3.0
    kumir_sim.hang_seconds = 6
    kumir_sim.huge_bytes = 3 * 1024 * 1024
    before = dict(coordinator.data)
    kumir_sim.fail_next(mode, endpoint="export")
    await _refresh(hass, kumir_entry)
    assert not coordinator.last_update_success
    assert coordinator.data == before  # nothing from the refused answer reached the meters
    assert _state(hass, kumir_sim, M234, "s1_EAi").state == "unavailable"
    assert not _tracebacks(caplog)
    assert "Pol_evil" not in str(coordinator.data)
    coordinator.client.request_timeout = RELAXED_TIMEOUT  # only the hang may time out
    await _refresh(hass, kumir_entry)
    assert coordinator.last_update_success
    assert _state(hass, kumir_sim, M234, "s1_EAi").state != "unavailable"


async def test_late_rows_keep_the_last_values(
    hass: HomeAssistant, kumir_entry: MockConfigEntry, kumir_sim: KumirSimulator
) -> None:
    """Hours arriving late: nodata rows are skipped, never zeros; the node keeps its newest known values."""
    await hass.config_entries.async_unload(kumir_entry.entry_id)
    kumir_sim.late(5)
    data = {**kumir_entry.data, "archives": ["hour"]}
    hass.config_entries.async_update_entry(kumir_entry, data=data)
    await hass.config_entries.async_setup(kumir_entry.entry_id)
    await hass.async_block_till_done()
    # Nothing in the last 3 hours: no values yet, and no made-up ones.
    meter = kumir_entry.runtime_data.data[f"{M234}/{kumir_sim.nodes[M234].num}"]
    assert meter.values == {}
    kumir_sim.release_late()
    await _refresh(hass, kumir_entry)
    when = _reading_time(hass, kumir_sim, M234)
    assert when.minute == 0  # an hour archive record
    expected = Decimal(_fmt(kumir_sim.counter_value(kumir_sim.nodes[M234], 1, "EAi", when)))
    assert Decimal(_state(hass, kumir_sim, M234, "s1_EAi").state) == expected
    kumir_sim.late(5)
    await _refresh(hass, kumir_entry)
    assert Decimal(_state(hass, kumir_sim, M234, "s1_EAi").state) == expected


@pytest.mark.parametrize("transport", ["raw", "form", "multipart"])
async def test_transports(
    hass: HomeAssistant, kumir_sim: KumirSimulator, kumir_server: TestServer, transport: str
) -> None:
    """Every export transport of the spec; import uses raw for the form setting (it has no form variant)."""
    data = kumir_data(kumir_sim, kumir_server, transport=transport)
    entry = MockConfigEntry(domain=DOMAIN, data=data, unique_id=KumirClient.unique_id(data))
    entry.add_to_hass(hass)
    assert await hass.config_entries.async_setup(entry.entry_id)
    await hass.async_block_till_done()
    assert {t for name, t, _ in kumir_sim.requests if name == "export"} == {transport}
    answer = await hass.services.async_call(
        DOMAIN,
        "import_readings",
        {
            "config_entry_id": entry.entry_id,
            "node": "Pol_900",
            "serial": "90000001",
            "device_type": "m234",
            "archive": "day",
            "system": 1,
            "timestamp": "2026-11-01T00:00:00",
            "values": {"EAi": 8870.448, "ERi": "305.094"},
        },
        blocking=True,
        return_response=True,
    )
    assert answer == {"status": "ok", "imported": "1"}
    assert {t for name, t, _ in kumir_sim.requests if name == "import"} == {"raw" if transport == "form" else transport}
    stored = kumir_sim.nodes["Pol_900"].imported
    assert stored == {("day", 1, "2026-11-01T00:00:00"): {"EAi": "8870.448", "ERi": "305.094"}}


async def test_import_errors(hass: HomeAssistant, kumir_entry: MockConfigEntry, kumir_sim: KumirSimulator) -> None:
    """The server's refusal comes back translated; a hostile answer is refused; bad input never leaves."""
    call = {
        "config_entry_id": kumir_entry.entry_id,
        "node": M234,
        "serial": "11111111",  # not the node's device: the server refuses
        "device_type": "m234",
        "archive": "hour",
        "timestamp": "2026-11-01T10:00:00+03:00",
        "values": {"EAi": 1},
    }
    with pytest.raises(HomeAssistantError) as err:
        await hass.services.async_call(DOMAIN, "import_readings", call, blocking=True, return_response=True)
    assert err.value.translation_key == "kumir_refused"
    assert "does not match" in str(err.value.translation_placeholders)
    kumir_sim.fail_next("entity_bomb", endpoint="import")
    with pytest.raises(HomeAssistantError) as err:
        await hass.services.async_call(
            DOMAIN,
            "import_readings",
            {**call, "serial": kumir_sim.nodes[M234].num},
            blocking=True,
            return_response=True,
        )
    assert err.value.translation_key == "invalid_response"
    sent = len(kumir_sim.requests)
    with pytest.raises(ServiceValidationError):
        await hass.services.async_call(
            DOMAIN, "import_readings", {**call, "values": {}}, blocking=True, return_response=True
        )
    assert len(kumir_sim.requests) == sent


async def test_valve_recharge_price_not_supported(
    hass: HomeAssistant, kumir_entry: MockConfigEntry, kumir_sim: KumirSimulator
) -> None:
    """Services that do not apply to KUMIR-RESURS say why, and no valve entity exists."""
    device = _device(hass, kumir_entry, kumir_sim, M234)
    for service, extra in (("recharge", {"amount": 10}), ("set_price", {"price_1": 1})):
        with pytest.raises(ServiceValidationError) as err:
            await hass.services.async_call(
                DOMAIN, service, {"device_id": device.id, **extra}, blocking=True, return_response=True
            )
        assert err.value.translation_key == "no_prepaid_balance"
    assert not [
        e for e in er.async_entries_for_config_entry(er.async_get(hass), kumir_entry.entry_id) if e.domain == "valve"
    ]


async def test_unload_logs_out_and_credentials_stay_out_of_logs(
    hass: HomeAssistant, kumir_sim: KumirSimulator, kumir_server: TestServer, caplog: pytest.LogCaptureFixture
) -> None:
    """logout.php on unload; the password never appears in the log, even at debug level."""
    caplog.set_level(logging.DEBUG)
    kumir_sim.password = "Very-Secret-Pa55"
    data = kumir_data(kumir_sim, kumir_server)
    entry = MockConfigEntry(domain=DOMAIN, data=data, unique_id=KumirClient.unique_id(data))
    entry.add_to_hass(hass)
    assert await hass.config_entries.async_setup(entry.entry_id)
    await hass.async_block_till_done()
    assert await hass.config_entries.async_unload(entry.entry_id)
    assert _requests(kumir_sim, "logout") == [{"session": True}]
    assert "Very-Secret-Pa55" not in caplog.text
    assert kumir_sim.sessions == {}


async def test_config_flow_discovers_nodes(
    hass: HomeAssistant, kumir_sim: KumirSimulator, kumir_server: TestServer
) -> None:
    """Real login; empty node list → the account's nodes are offered; the choice is stored."""
    data = kumir_data(kumir_sim, kumir_server)
    result = await hass.config_entries.flow.async_init(DOMAIN, context={"source": SOURCE_USER})
    result = await hass.config_entries.flow.async_configure(result["flow_id"], {"backend": "kumir"})
    account = {key: data[key] for key in ("base_url", "login", "login_password", "systems", "archives", "transport")}
    account |= {"backfill_days": 7}
    result = await hass.config_entries.flow.async_configure(result["flow_id"], {**account, "login_password": "wrong"})
    assert result["errors"] == {"base": "invalid_auth_kumir"}
    result = await hass.config_entries.flow.async_configure(result["flow_id"], {**account, "time_zone": "Mars/Base"})
    assert result["errors"] == {"base": "invalid_time_zone"}
    result = await hass.config_entries.flow.async_configure(result["flow_id"], {**account, "nodes": "Pol_276 34781353"})
    assert result["errors"] == {"base": "invalid_node_list"}
    result = await hass.config_entries.flow.async_configure(result["flow_id"], account)
    assert result["step_id"] == "meters"
    offered = result["data_schema"].schema["nodes"].config["options"]
    assert [option["value"] for option in offered] == [f"{n.code}/{n.num}" for n in kumir_sim.nodes.values()]
    result = await hass.config_entries.flow.async_configure(result["flow_id"], {"nodes": []})
    assert result["errors"] == {"nodes": "no_meters_chosen"}
    chosen = [f"{M234}/{kumir_sim.nodes[M234].num}", f"{TV7}/{kumir_sim.nodes[TV7].num}"]
    result = await hass.config_entries.flow.async_configure(result["flow_id"], {"nodes": chosen})
    assert result["title"] == "KUMIR-RESURS example"
    # KUMIR-RESURS never pushes: the created message shows no push URL.
    assert result["description"] is None
    assert not result["description_placeholders"]
    assert result["data"]["nodes"] == f"{M234} {kumir_sim.nodes[M234].num} m234\n{TV7} {kumir_sim.nodes[TV7].num} tv7"
    assert result["data"]["backfill_days"] == 7
    # Validation sessions are closed again.
    assert len(_requests(kumir_sim, "logout")) >= 1
    await hass.async_block_till_done()


async def test_config_flow_without_discoverable_nodes(
    hass: HomeAssistant, socket_enabled: None, aiohttp_server: Any
) -> None:
    """An account that lists nothing on its own: the user enters the nodes (checked, as named ones are answered)."""
    sim = KumirSimulator(nodes=[("Pol_500", "50000001", "m234"), ("Pol_501", "50000002", "tv7")], lists_nodes=False)
    server = await aiohttp_server(sim.app, host="127.0.0.1")
    data = kumir_data(sim, server)
    result = await hass.config_entries.flow.async_init(DOMAIN, context={"source": SOURCE_USER})
    result = await hass.config_entries.flow.async_configure(result["flow_id"], {"backend": "kumir"})
    account = {key: data[key] for key in ("base_url", "login", "login_password", "systems", "archives", "transport")}
    result = await hass.config_entries.flow.async_configure(result["flow_id"], account)
    assert result["errors"] == {"base": "no_meters_found"}
    result = await hass.config_entries.flow.async_configure(
        result["flow_id"], {**account, "nodes": "Pol_500; 50000001; m234\nPol_501,50000002,tv7"}
    )
    assert result["data"]["nodes"] == "Pol_500; 50000001; m234\nPol_501,50000002,tv7"
    await sim.close()


async def test_reconfigure_changes_nodes(
    hass: HomeAssistant, kumir_entry: MockConfigEntry, kumir_sim: KumirSimulator
) -> None:
    """The node list stays editable: following one node less removes nothing else."""
    result = await kumir_entry.start_reconfigure_flow(hass)
    nodes = "\n".join(f"{n.code} {n.num} {n.dev}" for n in list(kumir_sim.nodes.values())[:2])
    user_input = {
        key: kumir_entry.data[key]
        for key in ("base_url", "login", "login_password", "systems", "archives", "transport", "time_zone")
    }
    result = await hass.config_entries.flow.async_configure(
        result["flow_id"], {**user_input, "nodes": nodes, "backfill_days": 3}
    )
    assert result["reason"] == "reconfigure_successful"
    await hass.async_block_till_done()
    assert kumir_entry.data["nodes"] == nodes
    assert set(kumir_entry.runtime_data.data) == {f"{n.code}/{n.num}" for n in list(kumir_sim.nodes.values())[:2]}


async def test_time_zone_of_the_archives(
    hass: HomeAssistant, kumir_sim: KumirSimulator, kumir_server: TestServer
) -> None:
    """`dat` carries no offset: read in the configured zone, else Home Assistant's."""
    await hass.config.async_set_time_zone(KUMIR_TZ)
    data = kumir_data(kumir_sim, kumir_server, time_zone="", archives=["total"])
    entry = MockConfigEntry(domain=DOMAIN, data=data, unique_id=KumirClient.unique_id(data))
    entry.add_to_hass(hass)
    assert await hass.config_entries.async_setup(entry.entry_id)
    await hass.async_block_till_done()
    when = _reading_time(hass, kumir_sim, M234)
    assert abs(when - dt_util.utcnow()) < timedelta(minutes=1)
    await hass.config_entries.async_unload(entry.entry_id)
    hass.config_entries.async_update_entry(entry, data={**data, "time_zone": "Asia/Vladivostok"})
    assert await hass.config_entries.async_setup(entry.entry_id)
    await hass.async_block_till_done()
    # Moscow wall time read as Vladivostok wall time: seven hours earlier as an instant.
    shifted = _reading_time(hass, kumir_sim, M234)
    assert timedelta(hours=6, minutes=59) < dt_util.utcnow() - shifted < timedelta(hours=7, minutes=1)


async def test_diagnostics_hide_credentials(
    hass: HomeAssistant, kumir_entry: MockConfigEntry, kumir_sim: KumirSimulator
) -> None:
    """Login, password and the node list stay out of diagnostics; the values are there."""
    from custom_components.meter_cloud.diagnostics import async_get_config_entry_diagnostics

    diagnostics = await async_get_config_entry_diagnostics(hass, kumir_entry)
    text = str(diagnostics)
    assert kumir_sim.password not in text.replace("password", "")
    assert kumir_entry.data["nodes"] not in text
    assert diagnostics["entry"]["data"]["login_password"] == "**REDACTED**"
    assert "s1_EAi" in text


async def test_options_without_push_url_or_details(hass: HomeAssistant, kumir_entry: MockConfigEntry) -> None:
    """The options form of a backend that never pushes and has no details: the poll interval only, no push URL.

    KUMIR-RESURS options open on a menu (polling, parameters, tariff layout); polling is the form of the others.
    """
    result = await hass.config_entries.options.async_init(kumir_entry.entry_id)
    assert result["type"] == "menu"
    assert result["menu_options"] == ["polling", "parameters", "tariff_layout"]
    result = await hass.config_entries.options.async_configure(result["flow_id"], {"next_step_id": "polling"})
    assert result["step_id"] == "polling"
    assert list(result["data_schema"].schema) == ["scan_interval"]
    assert not result["description_placeholders"]
    result = await hass.config_entries.options.async_configure(result["flow_id"], {"scan_interval": 20})
    await hass.async_block_till_done()
    assert kumir_entry.options == {"scan_interval": 20}
    assert kumir_entry.runtime_data.update_interval.total_seconds() == 20 * 60


def _reauth_flows(hass: HomeAssistant) -> list[Any]:
    return [flow for flow in hass.config_entries.flow.async_progress() if flow["context"]["source"] == "reauth"]


def _eai_expected(sim: KumirSimulator, hass: HomeAssistant, code: str) -> Decimal:
    return Decimal(_fmt(sim.counter_value(sim.nodes[code], 1, "EAi", _reading_time(hass, sim, code))))


@pytest.mark.parametrize("status", [401, 403])
async def test_401_and_403_are_a_lost_session_not_a_wrong_password(
    hass: HomeAssistant,
    kumir_entry: MockConfigEntry,
    kumir_sim: KumirSimulator,
    caplog: pytest.LogCaptureFixture,
    status: int,
) -> None:
    """Export or session.php answering 401/403: a new login, values right; refused twice: one failed poll, no reauth."""
    mode = f"http{status}"
    coordinator = kumir_entry.runtime_data
    client = coordinator.client
    assert isinstance(client, KumirClient)
    kumir_sim.fail_next(mode, endpoint="export")
    await _refresh(hass, kumir_entry)
    assert coordinator.last_update_success
    assert len(_requests(kumir_sim, "login")) == 2
    assert Decimal(_state(hass, kumir_sim, M234, "s1_EAi").state) == _eai_expected(kumir_sim, hass, M234)

    base = client.clock()
    client.clock = lambda: base + RENEW_AFTER + 1
    kumir_sim.fail_next(mode, endpoint="session")
    await _refresh(hass, kumir_entry)
    assert coordinator.last_update_success
    assert len(_requests(kumir_sim, "login")) == 3

    # Refused again right after a fresh login: this poll fails; no reauthentication is started.
    kumir_sim.fail_next(mode, count=2, endpoint="export")
    await _refresh(hass, kumir_entry)
    assert not coordinator.last_update_success
    assert _state(hass, kumir_sim, M234, "s1_EAi").state == "unavailable"
    assert not _reauth_flows(hass)
    assert kumir_entry.state is ConfigEntryState.LOADED
    assert not _tracebacks(caplog)

    # Polling goes on by itself and recovers.
    sent = len(kumir_sim.requests)
    async_fire_time_changed(hass, dt_util.utcnow() + coordinator.update_interval + timedelta(seconds=1))
    await hass.async_block_till_done(wait_background_tasks=True)
    assert len(kumir_sim.requests) > sent
    assert coordinator.last_update_success
    assert Decimal(_state(hass, kumir_sim, M234, "s1_EAi").state) == _eai_expected(kumir_sim, hass, M234)
    assert not _reauth_flows(hass)


async def test_a_node_removed_from_the_account_is_not_shown_as_current(
    hass: HomeAssistant, kumir_entry: MockConfigEntry, kumir_sim: KumirSimulator
) -> None:
    """The account stops listing a node: its sensors are unavailable after the poll; back when it returns."""
    coordinator = kumir_entry.runtime_data
    tv7_meter = f"{TV7}/{kumir_sim.nodes[TV7].num}"
    heat = _entity(hass, kumir_sim, TV7, "s1_Q")
    assert hass.states.get(heat).state != "unavailable"
    kumir_sim.remove_node(TV7)
    await _refresh(hass, kumir_entry)
    assert coordinator.last_update_success
    assert tv7_meter not in coordinator.data
    assert hass.states.get(heat).state == "unavailable"
    assert Decimal(_state(hass, kumir_sim, M234, "s1_EAi").state) == _eai_expected(kumir_sim, hass, M234)

    kumir_sim.restore_node(TV7)
    await _refresh(hass, kumir_entry)
    when = _reading_time(hass, kumir_sim, TV7)
    expected = Decimal(_fmt(kumir_sim.counter_value(kumir_sim.nodes[TV7], 1, "Q", when)))
    assert Decimal(_state(hass, kumir_sim, TV7, "s1_Q").state) == expected


async def test_import_several_records_in_one_request_with_aware_times(
    hass: HomeAssistant, kumir_entry: MockConfigEntry, kumir_sim: KumirSimulator
) -> None:
    """`records` beside the call's own record, one import.php; an aware UTC time is written in the entry's zone."""
    utc = datetime(2026, 11, 1, 7, tzinfo=UTC)  # 10:00 in the entry's zone (Moscow)
    call: dict[str, Any] = {
        "config_entry_id": kumir_entry.entry_id,
        "node": "Pol_900",
        "serial": "90000001",
        "device_type": "m234",
        "archive": "hour",
        "timestamp": utc.isoformat(),  # as now().isoformat() gives it in an automation
        "values": {"EAi": 100.5},
        "records": [
            {"system": 2, "timestamp": "2026-11-01T07:00:00+00:00", "values": {"EAi": 50.25}},
            {"archive": "day", "timestamp": "2026-11-01T00:00:00", "values": {"EAi": 99}},  # naive: the entry's zone
            {
                "node": "Pol_901",
                "serial": "90000002",
                "device_type": "tv7",
                "timestamp": "2026-11-01 08:00:00+10:00",
                "values": {"Q": "1.5"},
            },
        ],
    }
    sent = len(_requests(kumir_sim, "import"))
    answer = await hass.services.async_call(DOMAIN, "import_readings", call, blocking=True, return_response=True)
    assert answer == {"status": "ok", "imported": "4"}
    assert len(_requests(kumir_sim, "import")) == sent + 1
    assert kumir_sim.nodes["Pol_900"].imported == {
        ("hour", 1, "2026-11-01T10:00:00"): {"EAi": "100.5"},
        ("hour", 2, "2026-11-01T10:00:00"): {"EAi": "50.25"},
        ("day", 1, "2026-11-01T00:00:00"): {"EAi": "99"},
    }
    assert kumir_sim.nodes["Pol_901"].imported == {("hour", 1, "2026-11-01T01:00:00"): {"Q": "1.5"}}

    # Our own round trip agrees: the export reads the record back at the instant it was given.
    from custom_components.meter_cloud.api import MeterData

    meter = MeterData(meter_id="Pol_900/90000001", user_no="Pol_900", device_id="90000001", model="m234")
    client = kumir_entry.runtime_data.client
    series = await client.async_history_series([meter], utc - timedelta(hours=1), utc + timedelta(hours=1))
    points = {s.key: [(p.time, p.value) for p in s.points] for s in series}
    assert points["s2_EAi"] == [(utc, Decimal("50.25"))]
    assert (utc, Decimal("100.5")) in points["s1_EAi"]

    # Records alone, taking node, serial, type and archive from the call; a record missing its values is named.
    only = {key: call[key] for key in ("config_entry_id", "node", "serial", "device_type", "archive")}
    answer = await hass.services.async_call(
        DOMAIN,
        "import_readings",
        {**only, "records": [{"timestamp": "2026-11-02T00:00:00", "values": {"EAi": 101}}]},
        blocking=True,
        return_response=True,
    )
    assert answer == {"status": "ok", "imported": "1"}
    sent = len(kumir_sim.requests)
    with pytest.raises(ServiceValidationError) as err:
        await hass.services.async_call(
            DOMAIN,
            "import_readings",
            {**only, "records": [{"timestamp": "2026-11-02T00:00:00", "values": {"EAi": 1}}, {"system": 2}]},
            blocking=True,
            return_response=True,
        )
    assert err.value.translation_key == "missing_field"
    assert err.value.translation_placeholders == {"error": "records[2].timestamp, records[2].values"}
    assert len(kumir_sim.requests) == sent


@pytest.mark.parametrize("shape", REFUSAL_SHAPES)
async def test_refusals_show_the_servers_words(
    hass: HomeAssistant,
    kumir_entry: MockConfigEntry,
    kumir_sim: KumirSimulator,
    caplog: pytest.LogCaptureFixture,
    shape: str,
) -> None:
    """An import refused in any shape: kumir_refused with the server's code and message; an export: a failed poll."""
    message = "Нет прав на запись в архив узла"
    kumir_sim.refuse(shape, status=400, code="E-17", message=message, endpoint="import")
    call = {
        "config_entry_id": kumir_entry.entry_id,
        "node": M234,
        "serial": kumir_sim.nodes[M234].num,
        "device_type": "m234",
        "archive": "hour",
        "timestamp": "2026-11-01T10:00:00",
        "values": {"EAi": 1},
    }
    with pytest.raises(HomeAssistantError) as err:
        await hass.services.async_call(DOMAIN, "import_readings", call, blocking=True, return_response=True)
    assert err.value.translation_key == "kumir_refused"
    code = "HTTP 400" if shape == "legacy" else "E-17"
    assert err.value.translation_placeholders == {"error": message, "code": code}

    coordinator = kumir_entry.runtime_data
    kumir_sim.refuse(shape, status=500, code="E-18", message="Период недоступен")
    await _refresh(hass, kumir_entry)
    assert not coordinator.last_update_success
    assert "Период недоступен" in str(coordinator.last_exception)
    assert not _reauth_flows(hass)
    assert not _tracebacks(caplog)
    await _refresh(hass, kumir_entry)
    assert coordinator.last_update_success


async def test_config_flow_checks_the_followed_nodes(
    hass: HomeAssistant, kumir_sim: KumirSimulator, kumir_server: TestServer
) -> None:
    """A mistyped code and a right code with a wrong serial are named; fixed, the entry is created; reconfigure too."""
    data = kumir_data(kumir_sim, kumir_server)
    m234, tv7 = kumir_sim.nodes[M234], kumir_sim.nodes[TV7]
    result = await hass.config_entries.flow.async_init(DOMAIN, context={"source": SOURCE_USER})
    result = await hass.config_entries.flow.async_configure(result["flow_id"], {"backend": "kumir"})
    account = {key: data[key] for key in ("base_url", "login", "login_password", "systems", "archives", "transport")}
    wrong = f"Pol_2766 {m234.num} m234\n{TV7} 12345678 tv7"
    result = await hass.config_entries.flow.async_configure(result["flow_id"], {**account, "nodes": wrong})
    assert result["errors"] == {"base": "unknown_nodes"}
    assert result["description_placeholders"]["error"] == (
        f"Pol_2766 {m234.num} m234 → {M234} {m234.num} m234, {TV7} 12345678 tv7 → {TV7} {tv7.num} tv7"
    )
    right = f"{M234} {m234.num} m234\n{TV7} {tv7.num} tv7"
    result = await hass.config_entries.flow.async_configure(result["flow_id"], {**account, "nodes": right})
    assert result["type"] == "create_entry"
    assert result["data"]["nodes"] == right
    await hass.async_block_till_done()
    entry = result["result"]
    assert set(entry.runtime_data.data) == {f"{M234}/{m234.num}", f"{TV7}/{tv7.num}"}

    result = await hass.config_entries.flow.async_init(
        DOMAIN, context={"source": SOURCE_RECONFIGURE, "entry_id": entry.entry_id}
    )
    user_input = {**account, "backfill_days": 3, "nodes": f"{right}\nPol_999 99999999 pulsar"}
    result = await hass.config_entries.flow.async_configure(result["flow_id"], user_input)
    assert result["errors"] == {"base": "unknown_nodes"}
    assert result["description_placeholders"]["error"] == "Pol_999 99999999 pulsar"
    result = await hass.config_entries.flow.async_configure(result["flow_id"], {**user_input, "nodes": right})
    assert result["reason"] == "reconfigure_successful"
    await hass.async_block_till_done()
