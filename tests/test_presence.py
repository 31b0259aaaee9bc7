"""Meters that come and go: devices kept on weak evidence, a repair issue for a listed meter gone a day, pushes and
alarms for meters an entry does not show, every push refusal in the vendor's envelope."""

from __future__ import annotations

import json
import logging
import time
from datetime import timedelta
from types import SimpleNamespace
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from freezegun.api import FrozenDateTimeFactory
from homeassistant.config_entries import ConfigEntryState
from homeassistant.core import HomeAssistant
from homeassistant.data_entry_flow import FlowResultType
from homeassistant.helpers import device_registry as dr
from homeassistant.helpers import issue_registry as ir
from homeassistant.setup import async_setup_component
from pytest_homeassistant_custom_component.common import MockConfigEntry, async_capture_events

from custom_components.meter_cloud import coordinator as coordinator_module
from custom_components.meter_cloud.compat import device_by_identifier
from custom_components.meter_cloud.const import DOMAIN, EVENT_ALARM, MAX_PUSH_BYTES
from custom_components.meter_cloud.presence import issue_id
from simulator.cangnan import CangnanSimulator
from simulator.goldcard import GoldcardSimulator

from .conftest import CN_PUSH_ID, IOT_PUSH_ID, PUSH_ID
from .sequences import entity, state


async def poll(hass: HomeAssistant, entry: MockConfigEntry) -> None:
    """One poll now."""
    await entry.runtime_data.async_refresh()
    await hass.async_block_till_done()


def reads(sim: CangnanSimulator) -> int:
    """How many ReadCurrentData requests the platform had."""
    return [name for name, _ in sim.requests].count("ReadCurrentData")


async def test_listed_meter_refused_for_a_poll_keeps_its_device(
    hass: HomeAssistant, cn_entry: MockConfigEntry, cn_sim: CangnanSimulator, caplog: pytest.LogCaptureFixture
) -> None:
    """80002013 for a pair still on the list, for one poll: unavailable, device and its name kept, nothing above
    debug in the log; it reads again next poll."""
    caplog.set_level(logging.DEBUG)
    meter = next(iter(cn_sim.meters.values()))
    device = device_by_identifier(hass, (DOMAIN, f"cangnan_{meter.meter_id}"), cn_entry.entry_id)
    dr.async_get(hass).async_update_device(device.id, name_by_user="Boiler room")
    cn_sim.refuse_pair(meter.meter_id, polls=1)
    await poll(hass, cn_entry)
    reading = entity(hass, "cangnan", meter.meter_id, "reading")
    assert state(hass, reading) == "unavailable"
    assert dr.async_get(hass).async_get(device.id).name_by_user == "Boiler room"
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING and r.name.startswith("custom_components")]
    await poll(hass, cn_entry)
    assert state(hass, reading) == str(meter.reading) or float(state(hass, reading)) == float(meter.reading)
    assert dr.async_get(hass).async_get(device.id).name_by_user == "Boiler room"


async def test_listed_meter_missing_a_day_asks_the_user(
    hass: HomeAssistant, freezer: FrozenDateTimeFactory, cn_entry: MockConfigEntry, cn_sim: CangnanSimulator
) -> None:
    """Missing for a day: a fixable repair issue names it. 'Keep waiting' asks again a day later; 'Stop following'
    takes it off the list, and the entry comes back without its device."""
    assert await async_setup_component(hass, "repairs", {})
    meter = next(iter(cn_sim.meters.values()))
    cn_sim.refuse_pair(meter.meter_id, polls=10_000)
    key = issue_id(cn_entry.entry_id, meter.meter_id)
    await poll(hass, cn_entry)
    freezer.tick(timedelta(hours=23))
    await poll(hass, cn_entry)
    assert ir.async_get(hass).async_get_issue(DOMAIN, key) is None
    freezer.tick(timedelta(hours=2))
    await poll(hass, cn_entry)
    raised = ir.async_get(hass).async_get_issue(DOMAIN, key)
    assert raised is not None
    assert raised.is_fixable
    assert raised.translation_placeholders["meter"] == meter.meter_id

    from homeassistant.components.repairs import repairs_flow_manager

    manager = repairs_flow_manager(hass)
    assert manager is not None
    result = await manager.async_init(DOMAIN, data={"issue_id": key})
    assert result["type"] is FlowResultType.MENU
    placeholders = result["description_placeholders"]
    assert (placeholders["meter"], placeholders["title"]) == (meter.meter_id, cn_entry.title)
    assert placeholders["since"] == raised.translation_placeholders["since"] != ""
    result = await manager.async_configure(result["flow_id"], {"next_step_id": "keep_waiting"})
    assert result["type"] is FlowResultType.CREATE_ENTRY
    assert ir.async_get(hass).async_get_issue(DOMAIN, key) is None
    await poll(hass, cn_entry)
    assert ir.async_get(hass).async_get_issue(DOMAIN, key) is None
    freezer.tick(timedelta(days=1, minutes=1))
    await poll(hass, cn_entry)
    assert ir.async_get(hass).async_get_issue(DOMAIN, key) is not None

    result = await manager.async_init(DOMAIN, data={"issue_id": key})
    result = await manager.async_configure(result["flow_id"], {"next_step_id": "stop_following"})
    assert result["type"] is FlowResultType.CREATE_ENTRY
    await hass.async_block_till_done()
    assert cn_entry.state is ConfigEntryState.LOADED
    assert meter.meter_id not in cn_entry.data["meters"]
    assert len(cn_entry.data["meters"].splitlines()) == len(cn_sim.meters) - 1
    assert device_by_identifier(hass, (DOMAIN, f"cangnan_{meter.meter_id}"), cn_entry.entry_id) is None
    assert ir.async_get(hass).async_get_issue(DOMAIN, key) is None


async def test_pushes_for_meters_a_list_does_not_follow(
    hass: HomeAssistant, cn_push: TestClient, cn_entry: MockConfigEntry, cn_sim: CangnanSimulator
) -> None:
    """Chapter 6 pushes every meter of the company: one the entry does not follow is acknowledged and dropped,
    with no poll (a poll could not discover it); its alarms fire nothing."""
    follows = next(iter(cn_sim.meters.values()))
    others = [m for m in cn_sim.meters.values() if m is not follows]
    data = {**cn_entry.data, "meters": f"{follows.user_id}:{follows.meter_id}"}
    hass.config_entries.async_update_entry(cn_entry, data=data)
    assert await hass.config_entries.async_reload(cn_entry.entry_id)
    await hass.async_block_till_done()
    before = reads(cn_sim)
    alarms = async_capture_events(hass, EVENT_ALARM)
    for meter in others * 3:
        cn_sim.tick(15)
        status, answer = await cn_sim.push_reading(meter.meter_id)
        assert (status, answer["ReturnCode"]) == (200, "0")
        status, _ = await cn_sim.push_alarm(meter.meter_id, alarm_type="02", message="leak")
        assert status == 200
    await hass.async_block_till_done(wait_background_tasks=True)
    assert reads(cn_sim) == before
    assert alarms == []


@pytest.mark.parametrize("booted_seconds_ago", [None, 60.0])
async def test_unknown_meter_pushes_cost_one_poll_and_alarms_wait_for_the_device(
    hass: HomeAssistant,
    config_entry: MockConfigEntry,
    sim: GoldcardSimulator,
    hass_client_no_auth: Any,
    monkeypatch: pytest.MonkeyPatch,
    booted_seconds_ago: float | None,
) -> None:
    """A meter new to the account pushes readings and an alarm before any poll listed it: one extra poll (not one
    per push) discovers it; the alarm fires once, after its device exists, carrying that device. Also on a machine
    that booted a minute ago, whose monotonic clock reads about 60 (it once read as "a discovery a minute ago")."""
    if booted_seconds_ago is not None:
        offset = time.monotonic() - booted_seconds_ago
        monkeypatch.setattr(coordinator_module, "time", SimpleNamespace(monotonic=lambda: time.monotonic() - offset))
    newcomer_no, newcomer = list(sim.meters.items())[-1]
    del sim.meters[newcomer_no]
    assert await hass.config_entries.async_setup(config_entry.entry_id)
    await hass.async_block_till_done()
    client: TestClient = await hass_client_no_auth()
    sim.push_url = str(client.make_url(f"/api/meter_cloud/push/{PUSH_ID}")).rstrip("/")
    sim.meters[newcomer_no] = newcomer
    polls = [n for n, _ in sim.requests].count("1013")
    alarms = async_capture_events(hass, EVENT_ALARM)
    assert (await sim.push_alarm(newcomer_no, alarm_type="02", priority="3", content="燃气泄漏"))[0] == 200
    for _ in range(5):
        sim.tick(15)
        assert (await sim.push_reading(newcomer_no))[0] == 200
    await hass.async_block_till_done(wait_background_tasks=True)
    assert [n for n, _ in sim.requests].count("1013") == polls + 1
    device = device_by_identifier(hass, (DOMAIN, f"goldcard_{newcomer_no}"), config_entry.entry_id)
    assert device is not None
    [alarm] = alarms
    assert (alarm.data["device_id"], alarm.data["type"]) == (device.id, "gas_leak")
    # An alarm for a meter the account never lists fires nothing, ever.
    stranger = sim.alarm_body(newcomer_no) | {"meterNo": "999999999999"}
    headers, body = sim.signed_push("api/collect/meter/2003", stranger)
    resp = await client.post(f"/api/meter_cloud/push/{PUSH_ID}/api/collect/meter/2003", data=body, headers=headers)
    assert resp.status == 200
    await hass.async_block_till_done(wait_background_tasks=True)
    await poll(hass, config_entry)
    assert len(alarms) == 1


async def refusals(hass_client_no_auth: Any, push_id: str, path: str) -> list[tuple[int, dict[str, Any]]]:
    """An oversized push (413) and one to an unknown push id (404): their statuses and answers."""
    client: TestClient = await hass_client_no_auth()
    answers = []
    big = b"{" + b" " * (MAX_PUSH_BYTES + 10) + b"}"
    for url, body in (
        (f"/api/meter_cloud/push/{push_id}/{path}", big),
        (f"/api/meter_cloud/push/no-such-id/{path}", b"{}"),
    ):
        resp = await client.post(url, data=body)
        answers.append((resp.status, json.loads(await resp.read())))
    return answers


async def test_goldcard_refusals_in_its_envelope(hass_client_no_auth: Any, setup_entry: MockConfigEntry) -> None:
    """Too large and not found, as the DAS words a refusal: echoCode 9999 and echoMsg."""
    answers = await refusals(hass_client_no_auth, PUSH_ID, "api/collect/meter/2001")
    assert [(status, answer["echoCode"]) for status, answer in answers] == [(413, "9999"), (404, "9999")]


async def test_cangnan_refusals_in_its_envelope(hass_client_no_auth: Any, cn_entry: MockConfigEntry) -> None:
    """Too large and not found, as CNMCSP words a refusal: ReturnCode and ReturnMessage."""
    answers = await refusals(hass_client_no_auth, CN_PUSH_ID, "reading")
    assert [(status, answer["ReturnCode"]) for status, answer in answers] == [(413, "80002001"), (404, "80002001")]
    assert answers[0][1]["ReturnMessage"] == "payload too large"


async def test_iot_refusals_in_its_envelope(hass_client_no_auth: Any, iot_entry: MockConfigEntry) -> None:
    """Too large and not found, in the platform's envelope: State failed with a Message."""
    answers = await refusals(hass_client_no_auth, IOT_PUSH_ID, "api/Data/MeterData/Add")
    assert [(status, answer["State"], answer["Data"]) for status, answer in answers] == [
        (413, "failed", None),
        (404, "failed", None),
    ]


async def test_kumir_node_gone_from_the_account(
    hass: HomeAssistant, freezer: FrozenDateTimeFactory, kumir_entry: MockConfigEntry, kumir_sim: Any
) -> None:
    """A listed node the account stops listing: unavailable at once, its device kept over many polls, a repair issue
    after a day; back in the account, its values are current again and the issue goes."""
    node = next(iter(kumir_sim.nodes.values()))
    meter_id = f"{node.code}/{node.num}"
    device = device_by_identifier(hass, (DOMAIN, f"kumir_{meter_id}"), kumir_entry.entry_id)
    assert device is not None
    kumir_sim.remove_node(node.code)
    for _ in range(4):
        await poll(hass, kumir_entry)
    sensors = [
        s.entity_id
        for s in hass.states.async_all("sensor")
        if s.entity_id.startswith(f"sensor.kumir_resurs_{node.code.lower()}")
    ]
    assert sensors
    assert {hass.states.get(e).state for e in sensors} == {"unavailable"}
    assert device_by_identifier(hass, (DOMAIN, f"kumir_{meter_id}"), kumir_entry.entry_id) is not None
    freezer.tick(timedelta(days=1, minutes=5))
    await poll(hass, kumir_entry)
    key = issue_id(kumir_entry.entry_id, meter_id)
    assert ir.async_get(hass).async_get_issue(DOMAIN, key) is not None
    kumir_sim.restore_node(node.code)
    await poll(hass, kumir_entry)
    assert ir.async_get(hass).async_get_issue(DOMAIN, key) is None
    assert "unavailable" not in {hass.states.get(e).state for e in sensors}
