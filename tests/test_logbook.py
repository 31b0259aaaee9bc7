"""Alarms, device events and command results in Home Assistant's logbook, as sentences in the server's language."""

from __future__ import annotations

import string
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from homeassistant.components.recorder import Recorder
from homeassistant.core import HomeAssistant
from homeassistant.exceptions import HomeAssistantError
from homeassistant.helpers import device_registry as dr
from homeassistant.helpers import entity_registry as er
from homeassistant.setup import async_setup_component
from homeassistant.util import dt as dt_util
from pytest_homeassistant_custom_component.common import MockConfigEntry
from pytest_homeassistant_custom_component.components.recorder.common import async_wait_recording_done

from custom_components.meter_cloud.api import CommandKind
from custom_components.meter_cloud.const import DOMAIN
from custom_components.meter_cloud.logbook import COMMAND_KEYS
from simulator.goldcard import GoldcardSimulator
from simulator.iotmeter import IotMeterSimulator

from .sequences import act, device
from .test_packaging import COMPONENT, LANGUAGES, load


@pytest.fixture(autouse=True)
def auto_enable_custom_integrations(recorder_mock: Recorder, enable_custom_integrations: None) -> None:
    """The recorder must start before Home Assistant (the logbook reads what it recorded)."""


@pytest.fixture
def language() -> str:
    """The server language (parametrised by tests that want another)."""
    return "en"


@pytest.fixture(autouse=True)
async def logbook_in_language(hass: HomeAssistant, language: str) -> None:
    """Home Assistant runs in `language` with the logbook from the start (before the entry and its HTTP client)."""
    hass.config.language = language
    # The frontend's files (hass_frontend) are not installed; the logbook only registers its panel with it.
    hass.config.components.add("frontend")
    assert await async_setup_component(hass, "websocket_api", {})
    assert await async_setup_component(hass, "logbook", {})


async def logbook(hass: HomeAssistant, ws_client: Any) -> list[tuple[str, str]]:
    """(name, message) of the integration's logbook entries, oldest first, through the websocket API."""
    await hass.async_block_till_done(wait_background_tasks=True)
    await async_wait_recording_done(hass)
    client = await ws_client(hass)
    start = dt_util.utcnow().replace(year=2000)
    await client.send_json_auto_id({"type": "logbook/get_events", "start_time": start.isoformat()})
    answer = await client.receive_json()
    assert answer["success"], answer
    return [(e["name"], e["message"]) for e in answer["result"] if e.get("domain") == DOMAIN]


async def name_meter(hass: HomeAssistant, entry: MockConfigEntry, backend: str, meter_id: str, name: str) -> str:
    """Give a meter's device the user's own name; its device id."""
    device_id = device(hass, entry, backend, meter_id)
    dr.async_get(hass).async_update_device(device_id, name_by_user=name)
    return device_id


@pytest.mark.parametrize(
    ("language", "expected"),
    [
        (
            "en",
            [
                "reported an alarm: gas leak (燃气泄漏)",
                "reported an alarm: magnetic interference (强磁干扰)",
                "valve close failed: 服务未启动",
                "valve close failed",
                "recharge of 50.00 confirmed",
            ],
        ),
        (
            "ru",
            [
                "сообщает о тревоге: утечка газа (燃气泄漏)",
                "сообщает о тревоге: магнитное воздействие (强磁干扰)",
                "закрытие клапана не выполнено: 服务未启动",
                "закрытие клапана не выполнено",
                "пополнение на 50.00 подтверждено",
            ],
        ),
    ],
)
async def test_goldcard_alarms_and_command_results_are_sentences(
    hass: HomeAssistant,
    hass_ws_client: Any,
    push_client: TestClient,
    sim: GoldcardSimulator,
    setup_entry: MockConfigEntry,
    expected: list[str],
) -> None:
    """Pushed alarms (2003), a valve close refused at once (1004) and one failed later (2002), and a recharge
    confirmed (2002) each read as a sentence, under the name the user gave the meter or else the device's name."""
    kitchen, other = list(sim.meters)[:2]
    kitchen_id = await name_meter(hass, setup_entry, "goldcard", kitchen, "Kitchen gas meter")
    assert (await sim.push_alarm(kitchen, alarm_type="02", priority="3", content="燃气泄漏"))[0] == 200
    assert (await sim.push_alarm(other, alarm_type="07", priority="2", content="强磁干扰"))[0] == 200
    valve = er.async_get(hass).async_get_entity_id("valve", DOMAIN, f"goldcard_{kitchen}_valve")
    sim.fail_next("error", endpoint="1004", code="9995")
    with pytest.raises(HomeAssistantError):
        await hass.services.async_call("valve", "close_valve", {"entity_id": valve}, blocking=True)
    sim.fail_commands = {kitchen}
    await hass.services.async_call("valve", "close_valve", {"entity_id": valve}, blocking=True)
    await sim.settle()
    sim.fail_commands = False
    await act(hass, "recharge", {"device_id": kitchen_id, "amount": 50, "reference": "LOGBOOK-1"})
    await sim.settle()
    other_device = dr.async_get(hass).async_get(device(hass, setup_entry, "goldcard", other))
    assert other_device is not None
    assert other_device.name == f"Goldcard {other}"
    names = ["Kitchen gas meter", other_device.name, *["Kitchen gas meter"] * 3]
    assert await logbook(hass, hass_ws_client) == list(zip(names, expected, strict=True))


async def test_lost_answer_reads_outcome_unknown_with_the_reason(
    hass: HomeAssistant,
    hass_ws_client: Any,
    push_client: TestClient,
    sim: GoldcardSimulator,
    setup_entry: MockConfigEntry,
) -> None:
    """A recharge whose answer was lost: "… outcome unknown" followed by the integration's own message."""
    meter_no = next(iter(sim.meters))
    target = await name_meter(hass, setup_entry, "goldcard", meter_no, "Boiler room")
    results: list[dict[str, Any]] = []
    hass.bus.async_listen("meter_cloud_command_result", lambda event: results.append(dict(event.data)))
    sim.fail_next("lost_502", endpoint="1004")
    with pytest.raises(Exception):  # noqa: B017, PT011 - the action itself reports the lost answer
        await act(hass, "recharge", {"device_id": target, "amount": "7.5", "reference": "LOGBOOK-2"})
    await hass.async_block_till_done()
    assert [(r["state"], r["amount"]) for r in results] == [("unknown", "7.50")]
    assert results[0]["message"]
    assert await logbook(hass, hass_ws_client) == [
        ("Boiler room", f"recharge of 7.50 outcome unknown: {results[0]['message']}")
    ]


@pytest.mark.parametrize("language", ["zh-Hans"])
async def test_iot_device_event_and_alarm_in_chinese(
    hass: HomeAssistant,
    hass_ws_client: Any,
    iot_push: TestClient,
    iot_sim: IotMeterSimulator,
    iot_entry: MockConfigEntry,
) -> None:
    """The IoT platform's pushed event (关阀) and alarm (燃气泄漏), in a Chinese server's logbook."""
    meter = next(d for d in iot_sim.devices.values() if d.device_type == 1)
    await name_meter(hass, iot_entry, "iotmeter", meter.comm_no, "厨房燃气表")
    assert (await iot_sim.push_event(meter.comm_no, 102))[0] == 200
    assert (await iot_sim.push_alarm(meter.comm_no, 4))[0] == 200
    assert await logbook(hass, hass_ws_client) == [
        ("厨房燃气表", "报告事件：阀门已关闭（关阀）"),
        ("厨房燃气表", "报告告警：燃气泄漏（燃气泄漏）"),
    ]


@pytest.mark.parametrize("language", LANGUAGES)
def test_every_sentence_and_command_is_translated(language: str) -> None:
    """Every command kind has its noun and every sentence its text, with the placeholders the logbook fills in."""
    common = load(COMPONENT / "translations" / f"{language}.json")["common"]
    for kind in CommandKind:
        assert common[f"command_{kind.value}"], kind
    wanted = {
        "logbook_alarm": {"kind"},
        "logbook_device_event": {"kind"},
        "logbook_detail": {"sentence", "detail"},
        "logbook_amount": {"command", "amount"},
        "logbook_command_state": {"command", "state"},
        "logbook_reason": {"sentence", "reason"},
    } | {key: {"command"} for key in COMMAND_KEYS.values()}
    for key, fields in wanted.items():
        assert {name for _, name, _, _ in string.Formatter().parse(common[key]) if name} == fields, key
