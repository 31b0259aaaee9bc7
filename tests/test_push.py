"""Pushes: authenticated, replay-safe, bounded; readings, command results and alarms applied."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from homeassistant.core import Event, HomeAssistant
from homeassistant.util import dt as dt_util
from pytest_homeassistant_custom_component.common import MockConfigEntry, async_capture_events

from custom_components.meter_cloud.const import EVENT_ALARM
from simulator.goldcard import GoldcardSimulator

from .conftest import PUSH_ID
from .test_sensor import entity_id, state_decimal

READING = "api/collect/meter/2001"
ALARM = "api/collect/meter/2003"


async def post(client: TestClient, path: str, headers: dict[str, str], body: bytes, push_id: str = PUSH_ID) -> Any:
    """POST a push to Home Assistant; return (status, JSON)."""
    resp = await client.post(f"/api/meter_cloud/push/{push_id}/{path}", data=body, headers=headers)
    return resp.status, await resp.json()


async def test_reading_push_updates_at_once(
    hass: HomeAssistant, push_client: TestClient, sim: GoldcardSimulator
) -> None:
    """The simulator pushes 2001 over HTTP; the answer follows the spec and sensors change at once."""
    meter_no, meter = next(iter(sim.meters.items()))
    sim.tick(120)
    status, answer = await sim.push_reading(meter_no)
    await hass.async_block_till_done()
    assert status == 200
    assert answer["echoCode"] == "0000"
    assert answer["meterNo"] == meter_no
    assert answer["valvecontrol"] == "2"
    assert len(answer["rdateTime"]) == 14
    assert state_decimal(hass, entity_id(hass, meter_no, "reading")) == meter.reading
    assert state_decimal(hass, entity_id(hass, meter_no, "balance")) == meter.balance


@pytest.mark.parametrize(
    ("tamper", "status", "code"),
    [
        ("signature", 401, "0101"),
        ("stale", 401, "0101"),
        ("app_code", 401, "0101"),
        ("json", 400, "9999"),
        ("path", 404, "9999"),
    ],
)
async def test_rejected_push_changes_nothing(
    hass: HomeAssistant, push_client: TestClient, sim: GoldcardSimulator, tamper: str, status: int, code: str
) -> None:
    """Forged, stale, malformed and misrouted pushes get an error answer and change nothing."""
    meter_no = next(iter(sim.meters))
    eid = entity_id(hass, meter_no, "reading")
    before = hass.states.get(eid).state
    sim.tick(120)
    body = sim.reading_body(meter_no)
    now = dt_util.now() - timedelta(minutes=6) if tamper == "stale" else None
    headers, data = sim.signed_push(READING, body, now=now)
    path = READING
    if tamper == "signature":
        headers["AccessToken"] = "0" * 32
    elif tamper == "app_code":
        sim.app_code, real = "OTHER", sim.app_code
        headers, data = sim.signed_push(READING, body)
        sim.app_code = real
    elif tamper == "json":
        data = b"{not json"
    elif tamper == "path":
        path = "api/collect/meter/2999"
    got_status, answer = await post(push_client, path, headers, data)
    await hass.async_block_till_done()
    assert (got_status, answer["echoCode"]) == (status, code)
    assert hass.states.get(eid).state == before


async def test_replay_applied_once(
    hass: HomeAssistant, push_client: TestClient, sim: GoldcardSimulator, setup_entry: MockConfigEntry
) -> None:
    """A repeated serialNo is answered OK and applied once."""
    meter_no = next(iter(sim.meters))
    events = async_capture_events(hass, EVENT_ALARM)
    headers, data = sim.signed_push(ALARM, sim.alarm_body(meter_no, serial="a" * 32))
    for _ in range(3):
        status, answer = await post(push_client, ALARM, headers, data)
        assert (status, answer["echoCode"]) == (200, "0000")
    await hass.async_block_till_done()
    assert len(events) == 1


async def test_older_reading_does_not_roll_back(
    hass: HomeAssistant, push_client: TestClient, sim: GoldcardSimulator
) -> None:
    """A late re-send of an older reading leaves the newer one in place."""
    meter_no, meter = next(iter(sim.meters.items()))
    old = sim.reading_body(meter_no)
    sim.tick(600)
    sim.meters[meter_no].read_time += timedelta(hours=1)
    await sim.push_reading(meter_no)
    headers, data = sim.signed_push(READING, old)
    status, _ = await post(push_client, READING, headers, data)
    await hass.async_block_till_done()
    assert status == 200
    assert state_decimal(hass, entity_id(hass, meter_no, "reading")) == meter.reading


async def test_unknown_meter_and_entry(
    hass: HomeAssistant, push_client: TestClient, sim: GoldcardSimulator, setup_entry: MockConfigEntry
) -> None:
    """A reading for a meter we do not know is acknowledged and triggers discovery; a wrong push id is 404."""
    body = sim.reading_body(next(iter(sim.meters)))
    body["meterNo"] = "999999999999"
    headers, data = sim.signed_push(READING, body)
    before = len(sim.requests)
    status, answer = await post(push_client, READING, headers, data)
    await hass.async_block_till_done()
    assert (status, answer["echoCode"]) == (200, "0000")
    assert [n for n, _ in sim.requests[before:]][:1] == ["1013"]
    assert hass.states.get("sensor.goldcard_999999999999_meter_reading") is None
    status, _ = await post(push_client, READING, headers, data, push_id="wrong-id")
    assert status == 404


async def test_size_bound(hass: HomeAssistant, push_client: TestClient, sim: GoldcardSimulator) -> None:
    """Bodies over 64 KiB are refused before parsing."""
    body = sim.reading_body(next(iter(sim.meters)))
    body["padding"] = "x" * (70 * 1024)
    headers, data = sim.signed_push(READING, body)
    resp = await push_client.post(f"/api/meter_cloud/push/{PUSH_ID}/{READING}", data=data, headers=headers)
    assert resp.status == 413


async def test_alarm_fires_event_entity_and_bus(
    hass: HomeAssistant, push_client: TestClient, sim: GoldcardSimulator, setup_entry: MockConfigEntry
) -> None:
    """2003 fires the event entity and meter_cloud_alarm with the device id."""
    meter_no = next(iter(sim.meters))
    events: list[Event] = async_capture_events(hass, EVENT_ALARM)
    status, answer = await sim.push_alarm(meter_no, alarm_type="02", priority="3", content="燃气泄漏")
    await hass.async_block_till_done()
    assert (status, answer["echoCode"]) == (200, "0000")
    state = hass.states.get(entity_id(hass, meter_no, "alarm", "event"))
    assert state.attributes["event_type"] == "gas_leak"
    assert state.attributes["priority"] == "high"
    assert state.attributes["message"] == "燃气泄漏"
    assert len(events) == 1
    data = events[0].data
    assert data["type"] == "gas_leak"
    assert data["meter_id"] == meter_no
    assert data["device_id"] is not None
    assert data["config_entry_id"] == setup_entry.entry_id
    status, _ = await sim.push_alarm(meter_no, alarm_type="07", priority="2", content="强磁")
    await hass.async_block_till_done()
    state = hass.states.get(entity_id(hass, meter_no, "alarm", "event"))
    assert (state.attributes["event_type"], state.attributes["priority"]) == ("magnetic_interference", "medium")
    status, _ = await sim.push_alarm(meter_no, alarm_type="42", priority="1", content="?")
    await hass.async_block_till_done()
    assert hass.states.get(entity_id(hass, meter_no, "alarm", "event")).attributes["event_type"] == "other"


async def test_push_never_logs_tracebacks(
    hass: HomeAssistant, push_client: TestClient, sim: GoldcardSimulator, caplog: pytest.LogCaptureFixture
) -> None:
    """Expected faults are answered, not logged as errors."""
    headers, _ = sim.signed_push(READING, {})
    for body in (b"[]", b'{"serialNo": "x"}', json.dumps({"meterNo": "1"}).encode(), b"\xff\xfe"):
        status, answer = await post(push_client, READING, headers, body)
        assert status == 400
        assert answer["echoCode"] == "9999"
    assert "Traceback" not in caplog.text
    assert not [r for r in caplog.records if r.levelname in ("ERROR", "CRITICAL")]
