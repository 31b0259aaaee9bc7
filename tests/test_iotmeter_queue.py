"""IoT platform command queue through Home Assistant: update, delete, detail, batch forms, schedules, chains,
timeouts, and alarms uploaded late (issue 14, item 4), against the strict simulator."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from freezegun.api import FrozenDateTimeFactory
from homeassistant.core import HomeAssistant
from homeassistant.exceptions import HomeAssistantError, ServiceValidationError
from homeassistant.util import dt as dt_util
from pytest_homeassistant_custom_component.common import MockConfigEntry, async_capture_events, async_fire_time_changed

from custom_components.meter_cloud.commands import TrackedCommand
from custom_components.meter_cloud.const import EVENT_ALARM
from simulator.iotmeter import IotMeterSimulator

from .test_iotmeter import call, dev, meters, refresh, sent, settle


def queued(sim: IotMeterSimulator, reference: str) -> dict[str, Any]:
    """The simulator's task with this ctrl_define_no."""
    return next(c for c in sim.commands.values() if c["ctrl_define_no"] == reference)


def ledger(entry: MockConfigEntry, reference: str) -> str:
    """The state Home Assistant's ledger has for a command."""
    command = entry.runtime_data.commands.get(reference)
    assert command is not None
    return str(command.state.value)


def later(**delta: float) -> str:
    """A schedule time in Home Assistant's zone, without offset (as the datetime selector sends it): `delta` of
    elapsed time from now (added in UTC, so a daylight-saving change in between does not move it). A wall time the
    clocks show twice (the hour a change back to winter time repeats) is given with its offset."""
    when = dt_util.as_local(dt_util.utcnow() + timedelta(**delta))
    wall = when.replace(tzinfo=None)
    if wall.replace(tzinfo=when.tzinfo, fold=0).utcoffset() != wall.replace(tzinfo=when.tzinfo, fold=1).utcoffset():
        return when.isoformat()
    return wall.strftime("%Y-%m-%d %H:%M:%S")


async def advance(hass: HomeAssistant, freezer: FrozenDateTimeFactory, entry: MockConfigEntry, **delta: float) -> None:
    """Move both clocks (the simulator reads the same one) and poll."""
    freezer.tick(timedelta(**delta))
    async_fire_time_changed(hass)
    await hass.async_block_till_done()
    await refresh(hass, entry)


async def test_update_waiting_command_runs_with_new_parameters(
    hass: HomeAssistant, iot_entry: MockConfigEntry, iot_sim: IotMeterSimulator
) -> None:
    """A scheduled set-remaining changed while it waits (amount and time) runs with the new amount, now."""
    meter = meters(iot_sim)[0]
    target = dev(hass, iot_entry, meter)
    await call(
        hass,
        "set_remaining_balance",
        {"device_id": target, "amount": 50, "reference": "UPD-1"} | {"schedule_time": later(hours=3)},
    )
    await settle(hass, iot_sim)
    assert queued(iot_sim, "UPD-1")["ctrl_state"] == 0  # its time has not come
    response = await call(
        hass, "update_command", {"device_id": target, "serial": "UPD-1", "amount": 80, "schedule_time": later()}
    )
    assert response["amount"] == "80"
    assert len(sent(iot_sim, "Update")) == 1
    assert json.loads(queued(iot_sim, "UPD-1")["ctrl_data"]) == {"remain_value": 80.0}
    await settle(hass, iot_sim)
    await refresh(hass, iot_entry)
    assert iot_sim.devices[meter].remain_money == Decimal(80)
    assert ledger(iot_entry, "UPD-1") == "confirmed"
    # Run and done: it can no longer be changed.
    with pytest.raises(ServiceValidationError) as err:
        await call(hass, "update_command", {"device_id": target, "serial": "UPD-1", "amount": 90})
    assert err.value.translation_key == "no_pending_command"


async def test_detail_and_delete(hass: HomeAssistant, iot_entry: MockConfigEntry, iot_sim: IotMeterSimulator) -> None:
    """GetDetial as the service response, then Delete: gone from the queue, cancelled in the ledger, never run."""
    meter = meters(iot_sim)[0]
    target = dev(hass, iot_entry, meter)
    await call(
        hass,
        "set_valve",
        {"device_id": target, "position": "close", "reference": "DEL-1"} | {"schedule_time": later(hours=1)},
    )
    ctrl_id = queued(iot_sim, "DEL-1")["ctrl_id"]
    detail = await call(hass, "get_command_detail", {"device_id": target, "serial": "DEL-1"})
    assert detail["ctrl_id"] == str(ctrl_id)
    assert detail["lines"][0] == f"事物流水号:{ctrl_id}"
    assert "任务类型:iotmeterv1.common.setvalveoff" in detail["lines"]
    assert "任务状态:0 (等待发送)" in detail["lines"]
    response = await call(hass, "delete_command", {"device_id": target})  # the newest pending one
    assert (response["serial"], response["state"]) == ("DEL-1", "cancelled")
    assert ctrl_id not in iot_sim.commands
    assert len(sent(iot_sim, "Delete")) == 1
    await settle(hass, iot_sim)
    assert iot_sim.devices[meter].flags["valve_open"]


async def test_batch_forms_are_one_request(
    hass: HomeAssistant, iot_entry: MockConfigEntry, iot_sim: IotMeterSimulator
) -> None:
    """Update, cancel, retry and delete the commands of two meters: one UpdateMulti, CancelMulti, RetryMulti and
    DeleteMulti each, and the ledger follows every one."""
    first, second = meters(iot_sim)[:2]
    targets = [dev(hass, iot_entry, m) for m in (first, second)]
    for target, reference in zip(targets, ("B-1", "B-2"), strict=True):
        await call(
            hass,
            "set_valve",
            {"device_id": target, "position": "close", "reference": reference} | {"schedule_time": later(hours=2)},
        )
    answer = await call(hass, "batch_commands", {"device_id": targets, "operation": "update", "timeout": {"hours": 30}})
    assert {serial: item["ok"] for serial, item in answer["commands"].items()} == {"B-1": True, "B-2": True}
    assert len(sent(iot_sim, "UpdateMulti")) == 1
    for reference in ("B-1", "B-2"):
        task = queued(iot_sim, reference)
        span = dt_util.parse_datetime(task["ctrl_timeout"]) - dt_util.parse_datetime(task["ctrl_time"])  # type: ignore[operator]
        assert span == timedelta(hours=30)
        assert iot_entry.runtime_data.commands.get(reference).timeout == 30 * 3600
    answer = await call(hass, "batch_commands", {"device_id": targets, "operation": "cancel"})
    assert [item["state"] for item in answer["commands"].values()] == ["cancelled", "cancelled"]
    assert sent(iot_sim, "CancelMulti") == [[queued(iot_sim, "B-1")["ctrl_id"], queued(iot_sim, "B-2")["ctrl_id"]]]
    assert [queued(iot_sim, r)["ctrl_state"] for r in ("B-1", "B-2")] == [5, 5]
    answer = await call(hass, "batch_commands", {"device_id": targets, "operation": "retry", "serial": ["B-2"]})
    assert list(answer["commands"]) == ["B-2"]
    assert (queued(iot_sim, "B-2")["ctrl_state"], ledger(iot_entry, "B-2")) == (0, "pending")
    assert len(sent(iot_sim, "RetryMulti")) == 1
    ids = [queued(iot_sim, r)["ctrl_id"] for r in ("B-1", "B-2")]
    answer = await call(hass, "batch_commands", {"device_id": targets, "operation": "delete", "serial": ["B-2"]})
    assert answer["commands"]["B-2"] == {"meter_id": second, "ok": True, "message": None, "state": "cancelled"}
    assert sent(iot_sim, "DeleteMulti") == [[ids[1]]]
    assert ids[0] in iot_sim.commands
    assert ids[1] not in iot_sim.commands


async def test_scheduled_close_runs_at_its_time_across_a_reload(
    hass: HomeAssistant, iot_entry: MockConfigEntry, iot_sim: IotMeterSimulator, freezer: FrozenDateTimeFactory
) -> None:
    """A valve close scheduled 2 hours ahead waits (a restart in between changes nothing), then runs at its time."""
    freezer.move_to(dt_util.utcnow().replace(microsecond=0))
    meter = meters(iot_sim)[0]
    target = dev(hass, iot_entry, meter)
    response = await call(
        hass,
        "set_valve",
        {"device_id": target, "position": "close", "reference": "SCH-1"} | {"schedule_time": later(hours=2)},
    )
    assert response["state"] == "pending"
    task = queued(iot_sim, "SCH-1")
    assert dt_util.parse_datetime(task["ctrl_time"]).replace(tzinfo=iot_sim.tz) == (  # type: ignore[union-attr]
        dt_util.utcnow() + timedelta(hours=2)
    )
    await settle(hass, iot_sim)
    assert (task["ctrl_state"], iot_sim.devices[meter].flags["valve_open"]) == (0, True)
    assert await hass.config_entries.async_reload(iot_entry.entry_id)
    await hass.async_block_till_done()
    assert ledger(iot_entry, "SCH-1") == "pending"
    await advance(hass, freezer, iot_entry, hours=1, minutes=59)
    await settle(hass, iot_sim)
    assert task["ctrl_state"] == 0
    await advance(hass, freezer, iot_entry, minutes=1)
    await settle(hass, iot_sim)
    await refresh(hass, iot_entry)
    assert (task["ctrl_state"], iot_sim.devices[meter].flags["valve_open"]) == (3, False)
    assert ledger(iot_entry, "SCH-1") == "confirmed"
    assert len(sent(iot_sim, "Add")) == 1


async def test_chained_command_waits_for_its_upper_one(
    hass: HomeAssistant, iot_entry: MockConfigEntry, iot_sim: IotMeterSimulator, freezer: FrozenDateTimeFactory
) -> None:
    """An open chained after a scheduled close runs only once the close succeeded; after a failed one it never runs."""
    freezer.move_to(dt_util.utcnow().replace(microsecond=0))
    first, second = meters(iot_sim)[:2]
    target = dev(hass, iot_entry, first)
    await call(
        hass,
        "set_valve",
        {"device_id": target, "position": "close", "reference": "UP-1"} | {"schedule_time": later(hours=1)},
    )
    await call(hass, "release_valve_force", {"device_id": target, "reference": "CH-1", "after": "UP-1"})
    assert queued(iot_sim, "CH-1")["upper_ctrl_id"] == queued(iot_sim, "UP-1")["ctrl_id"]
    await settle(hass, iot_sim)
    assert [queued(iot_sim, r)["ctrl_state"] for r in ("UP-1", "CH-1")] == [0, 0]
    await advance(hass, freezer, iot_entry, hours=1)
    await settle(hass, iot_sim)
    await refresh(hass, iot_entry)
    assert [queued(iot_sim, r)["ctrl_state"] for r in ("UP-1", "CH-1")] == [3, 3]
    assert [ledger(iot_entry, r) for r in ("UP-1", "CH-1")] == ["confirmed", "confirmed"]

    # The upper one fails on the second meter: the chained one is not run.
    iot_sim.fail_commands = {second}
    target = dev(hass, iot_entry, second)
    await call(hass, "set_valve", {"device_id": target, "position": "close", "reference": "UP-2"})
    await call(
        hass,
        "set_cumulative_volume",
        {"device_id": target, "standard_volume": 5, "reference": "CH-2"} | {"after": "UP-2"},
    )
    before = iot_sim.devices[second].std_sum
    await settle(hass, iot_sim)
    await refresh(hass, iot_entry)
    assert [queued(iot_sim, r)["ctrl_state"] for r in ("UP-2", "CH-2")] == [4, 99]
    assert [ledger(iot_entry, r) for r in ("UP-2", "CH-2")] == ["failed", "failed"]
    assert iot_sim.devices[second].std_sum == before


async def test_own_timeout_keeps_a_command_pending_past_a_day(
    hass: HomeAssistant, iot_entry: MockConfigEntry, iot_sim: IotMeterSimulator, freezer: FrozenDateTimeFactory
) -> None:
    """A close with a 2-day timeout is still pending after 25 hours; past its own timeout, with no word from the
    cloud, it is unknown. A command without one keeps the 24-hour expiry, as the platform's default timeout."""
    freezer.move_to(dt_util.utcnow().replace(microsecond=0))
    first, second = meters(iot_sim)[:2]
    await call(
        hass,
        "set_valve",
        {"device_id": dev(hass, iot_entry, first), "position": "close"}
        | {"reference": "TO-2D", "timeout": {"days": 2}},
    )
    await call(
        hass, "set_valve", {"device_id": dev(hass, iot_entry, second), "position": "close", "reference": "TO-1D"}
    )
    task = queued(iot_sim, "TO-2D")
    span = dt_util.parse_datetime(task["ctrl_timeout"]) - dt_util.parse_datetime(task["ctrl_time"])  # type: ignore[operator]
    assert span == timedelta(days=2)
    await advance(hass, freezer, iot_entry, hours=25)
    # Still under way at the platform (its own timer may have moved it to "sent"), pending here.
    assert (ledger(iot_entry, "TO-2D"), task["ctrl_state"] in (0, 1, 2)) == ("pending", True)
    assert (ledger(iot_entry, "TO-1D"), queued(iot_sim, "TO-1D")["ctrl_state"]) == ("failed", 6)
    iot_sim.fail_next("http500", 20, "GetModel")  # from now on the cloud says nothing about it
    await advance(hass, freezer, iot_entry, hours=23, minutes=11)
    assert ledger(iot_entry, "TO-2D") == "unknown"


async def test_alarm_uploaded_late_is_caught_up_once(
    hass: HomeAssistant, iot_entry: MockConfigEntry, iot_sim: IotMeterSimulator, freezer: FrozenDateTimeFactory
) -> None:
    """An alarm that happened 5 hours before the platform received it fires at the next hourly late-upload scan
    (the polls between read only the new window), and only once."""
    freezer.move_to(dt_util.utcnow().replace(microsecond=0))
    meter = meters(iot_sim)[0]
    events = async_capture_events(hass, EVENT_ALARM)
    await refresh(hass, iot_entry)
    await advance(hass, freezer, iot_entry, minutes=30)
    happened = dt_util.now() - timedelta(hours=5)
    entry = iot_sim.add_alarm(meter, 2, "阀门故障", when=happened)
    assert entry["alarm_time"] != entry["receive_time"]
    await advance(hass, freezer, iot_entry, minutes=5)
    await advance(hass, freezer, iot_entry, minutes=5)
    assert events == []  # narrow polls: its alarm time is before their window
    await advance(hass, freezer, iot_entry, minutes=30)  # an hour after the first scan: the wide one
    await advance(hass, freezer, iot_entry, minutes=30)
    assert [(e.data["meter_id"], e.data["code"]) for e in events] == [(meter, "2")]
    assert dt_util.parse_datetime(events[0].data["time"]) == happened


def test_ledger_keeps_schedule_and_timeout_and_loads_old_records() -> None:
    """A command's schedule and timeout survive storage and set its expiry; a record stored before them keeps 24 h."""
    created = dt_util.parse_datetime("2026-12-01T08:00:00+00:00")
    assert created is not None
    old = {
        "serial": "OLD-1",
        "meter_id": "86000000000001",
        "kind": "valve_close",
        "state": "pending",
        "created": created.isoformat(),
        "updated": created.isoformat(),
    }
    loaded = TrackedCommand.from_dict(old)
    assert (loaded.scheduled, loaded.timeout, loaded.expires()) == (None, None, created + timedelta(hours=24))
    scheduled = replace(loaded, scheduled=created + timedelta(hours=3), timeout=2 * 86400)
    again = TrackedCommand.from_dict(json.loads(json.dumps(scheduled.as_dict())))
    assert again == scheduled
    assert again.expires() == created + timedelta(hours=3, days=2, minutes=10)


async def test_refusals_are_translated_and_per_command(
    hass: HomeAssistant, iot_entry: MockConfigEntry, iot_sim: IotMeterSimulator
) -> None:
    """A command the platform already sent cannot be changed; a chain needs a known upper command; in a batch the
    platform's refusal of one command stays with that command while the other is done."""
    first, second = meters(iot_sim)[:2]
    targets = [dev(hass, iot_entry, m) for m in (first, second)]
    with pytest.raises(HomeAssistantError) as err:
        await call(hass, "set_valve", {"device_id": targets[0], "position": "open", "after": "NO-SUCH-1"})
    assert err.value.translation_key == "unknown_upper_command"
    assert sent(iot_sim, "Add") == []
    for target, reference in zip(targets, ("R-1", "R-2"), strict=True):
        await call(hass, "set_valve", {"device_id": target, "position": "close", "reference": reference})
    await iot_sim.step()  # both are "sent" (1) now: still pending here, no longer waiting there
    with pytest.raises(HomeAssistantError) as err:
        await call(hass, "update_command", {"device_id": targets[0], "timeout": {"hours": 5}})
    assert err.value.translation_key == "command_not_waiting"
    assert sent(iot_sim, "Update") == []
    await iot_sim.step()  # answered (2): no longer cancellable at the platform
    queued(iot_sim, "R-1")["ctrl_state"] = 1  # R-1 still cancellable
    answer = await call(hass, "batch_commands", {"device_id": targets, "operation": "cancel"})
    assert answer["commands"] == {
        "R-1": {"meter_id": first, "ok": True, "message": None, "state": "cancelled"},
        "R-2": {"meter_id": second, "ok": False, "message": "任务状态不允许取消", "state": "pending"},
    }
    assert len(sent(iot_sim, "CancelMulti")) == 1


async def test_a_queue_with_a_ctrl_id_that_is_no_integer_is_still_listed(
    hass: HomeAssistant, iot_entry: MockConfigEntry, iot_sim: IotMeterSimulator
) -> None:
    """The document's ctrl_id is an integer; a platform that lists one spelled otherwise gets its queue listed
    (numbers newest first, the odd one last) instead of an error."""
    meter = meters(iot_sim)[0]
    target = dev(hass, iot_entry, meter)
    for reference in ("ODD-1", "ODD-2"):
        await call(
            hass,
            "set_valve",
            {"device_id": target, "position": "close", "reference": reference} | {"schedule_time": later(hours=1)},
        )
    odd = queued(iot_sim, "ODD-1")
    odd["ctrl_id"] = "A-" + str(odd["ctrl_id"])
    listed = await call(hass, "list_commands", {"device_id": target})
    assert [(item["reference"], item["ctrl_id"]) for item in listed["commands"]] == [
        ("ODD-2", str(queued(iot_sim, "ODD-2")["ctrl_id"])),
        ("ODD-1", odd["ctrl_id"]),
    ]
