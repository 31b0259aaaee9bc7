"""Records of the IoT meter data platform → common models (3.1.2, 3.2, 3.3)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from datetime import datetime, tzinfo
from decimal import Decimal
from typing import Any

from ..models import DEVICE_STATES, Alarm, AlarmPriority, AlarmType, HistoryPoint, MeterData, ValveState
from ..parse import as_datetime, as_decimal, as_int, as_str, lower_keys

DEVICE_METER = 1
DEVICE_RTU = 2
# 3 decimals: Decimal(18,3) in every table of the spec.
PLACES = 3

# ext_data booleans that become binary sensors; `power_level` (0/1/2) becomes "low_power".
METER_FLAGS = (
    "valve_open",
    "remote_valve_off",
    "apart_valve_off",
    "max_flow_valve_off",
    "min_flow_valve_off",
    "dead_valve_off",
    "magnetic_attack",
    "ext_power",
    "pulse_fault",
    "battery_cut",
    "force_valve_on",
)
RTU_FLAGS = ("rtu_door_open", "rtu_power", "rtu_fence_alarm", "rtu_vibrate_alarm")


def ext_data(raw: Any) -> dict[str, Any]:
    """ext_data is an object in the samples but typed JSON: accept a JSON string too."""
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except ValueError:
            return {}
    return lower_keys(raw) if isinstance(raw, dict) else {}


def _flags(ext: Mapping[str, Any], names: tuple[str, ...]) -> dict[str, bool]:
    return {name: ext[name] for name in names if isinstance(ext.get(name), bool)}


def meter_from_record(raw: Mapping[str, Any], tz: tzinfo) -> MeterData | None:
    """A real-time (or pushed) record as MeterData; None without a communication number."""
    row = lower_keys(raw)
    comm_no = as_str(row.get("meter_comm_no"))
    if comm_no is None:
        return None
    ext = ext_data(row.get("ext_data"))
    is_rtu = as_int(row.get("device_type")) == DEVICE_RTU
    flags = _flags(ext, RTU_FLAGS if is_rtu else METER_FLAGS)
    power_level = as_int(ext.get("power_level"))
    if power_level is not None and not is_rtu:
        flags["low_power"] = power_level > 0
    valve = None
    if isinstance(ext.get("valve_open"), bool) and not is_rtu:
        valve = ValveState.OPEN if ext["valve_open"] else ValveState.CLOSED
    state_message = as_str(row.get("meter_stat_emsg"))
    if is_rtu:
        state_message = as_str(ext.get("rtu_state_msg")) or state_message
    conditions = conditions_of(state_message)
    return MeterData(
        meter_id=comm_no,
        kind="rtu" if is_rtu else "meter",
        model=as_str(row.get("device_type_name")),
        reading=as_decimal(row.get("std_sum"), PLACES),
        work_volume=as_decimal(row.get("work_sum"), PLACES),
        reading_time=as_datetime(row.get("acquisition_time"), tz),
        std_flow=as_decimal(row.get("std_flow"), PLACES),
        work_flow=as_decimal(row.get("work_flow"), PLACES),
        temperature=as_decimal(row.get("temperature"), PLACES),
        pressure=as_decimal(row.get("pressure"), PLACES),
        magnetic_attacks=as_int(row.get("magatt_times")),
        this_month=as_decimal(row.get("this_month_sum"), PLACES),
        last_month=as_decimal(row.get("last_month_sum"), PLACES),
        this_cycle=as_decimal(row.get("this_cycle_sum"), PLACES),
        last_cycle=as_decimal(row.get("last_cycle_sum"), PLACES),
        balance=as_decimal(row.get("remain_money"), PLACES),
        remain_volume=as_decimal(row.get("remain_volume"), PLACES),
        price=as_decimal(row.get("curr_price"), PLACES),
        total_recharge=as_decimal(ext.get("total_buy_value"), PLACES),
        state_code=as_int(ext.get("rtu_state")) if is_rtu else as_int(row.get("meter_state")),
        state_message=state_message,
        device_state=(conditions or (None,))[0],
        conditions=conditions,
        rssi=as_int(row.get("rssi")),
        battery_voltage=as_decimal(row.get("battery_voltage"), PLACES),
        battery_level=as_int(row.get("battery_level")),
        valve=valve,
        flags=flags or None,
    )


def history_point(raw: Mapping[str, Any], tz: tzinfo) -> HistoryPoint | None:
    """A frozen record's standard cumulative volume at its freeze time."""
    row = lower_keys(raw)
    when = as_datetime(row.get("acquisition_time"), tz)
    value = as_decimal(row.get("std_sum"), PLACES)
    return HistoryPoint(when, value) if when is not None and value is not None else None


def money_point(raw: Mapping[str, Any], tz: tzinfo) -> tuple[datetime, Decimal, Decimal | None] | None:
    """A frozen record's balance and cumulative recharge (None when it lacks them) at its freeze time."""
    row = lower_keys(raw)
    when = as_datetime(row.get("acquisition_time"), tz)
    remain = as_decimal(row.get("remain_money"), PLACES)
    if when is None or remain is None:
        return None
    return when, remain, as_decimal(ext_data(row.get("ext_data")).get("total_buy_value"), PLACES)


def spend_between(before: tuple[Decimal, Decimal | None], after: tuple[Decimal, Decimal | None]) -> Decimal | None:
    """Money the meter deducted between two frozen records: the balance's fall plus what was recharged meanwhile.

    None when it cannot be told: a balance that rose with no cumulative recharge to explain it, or less than nothing
    (a balance set by hand, a refund).
    """
    (remain, bought), (remain_after, bought_after) = before, after
    if bought is not None and bought_after is not None:
        spent = remain - remain_after + (bought_after - bought)
    else:
        spent = remain - remain_after
    return spent if spent >= 0 else None


def record_key(kind: str, device: str, when: Any, code: Any) -> str:
    """Identity of an alarm/event/reading across pushes, re-sends and after-the-fact queries."""
    return hashlib.sha256(f"{kind}|{device}|{when}|{code}".encode()).hexdigest()[:32]


# The spec has no code table for alarms, events or meter_state: the vendor's own words tell what happened. Checked in
# order (市电 "mains" before 电 "power"; 阀门故障 before 阀); the first that matches decides.
ALARM_WORDS: tuple[tuple[str, AlarmType], ...] = (
    ("泄漏", AlarmType.GAS_LEAK),
    ("漏气", AlarmType.GAS_LEAK),
    ("拆", AlarmType.TAMPERING),
    ("磁", AlarmType.MAGNETIC_INTERFERENCE),
    ("阀门故障", AlarmType.VALVE_FAULT),
    ("阀故障", AlarmType.VALVE_FAULT),
    ("市电", AlarmType.MAINS_LOST),
    ("电池断电", AlarmType.BATTERY_CUT),
    ("断电", AlarmType.BATTERY_CUT),
    ("低电", AlarmType.BATTERY_FAULT),
    ("欠压", AlarmType.BATTERY_FAULT),
    ("电池", AlarmType.BATTERY_FAULT),
    ("干簧", AlarmType.REED_SWITCH_FAULT),
    ("通讯", AlarmType.COMMUNICATION_FAULT),
    ("通信", AlarmType.COMMUNICATION_FAULT),
    ("门", AlarmType.DOOR_OPEN),
    ("围栏", AlarmType.FENCE_ALARM),
    ("振动", AlarmType.VIBRATION),
)
EVENT_WORDS: tuple[tuple[str, AlarmType], ...] = (
    ("开阀", AlarmType.VALVE_OPENED),
    ("关阀", AlarmType.VALVE_CLOSED),
    ("充值", AlarmType.RECHARGED),
    ("价", AlarmType.PRICE_CHANGED),
    ("换表", AlarmType.METER_REPLACED),
)
NORMAL_WORDS = ("正常", "normal", "ok")


def kind_of(text: str, words: tuple[tuple[str, AlarmType], ...], default: AlarmType) -> AlarmType:
    """The kind a vendor's words name (the first rule that matches), or `default`."""
    return next((kind for word, kind in words if word in text), default)


def conditions_of(text: str | None) -> tuple[str, ...] | None:
    """The conditions a state text names ("阀门故障,低电" → valve fault and battery fault), most severe first."""
    if text is None:
        return None
    parts = [part.strip() for part in text.replace("，", ",").replace(";", ",").replace("、", ",").split(",")]
    found = set()
    for part in filter(None, parts):
        if part.lower() in NORMAL_WORDS:
            continue
        found.add(kind_of(part, ALARM_WORDS, AlarmType.OTHER).value)
    return tuple(state for state in DEVICE_STATES if state in found) or ("normal",)


def alarm_from_record(raw: Mapping[str, Any], tz: tzinfo, *, event: bool) -> Alarm | None:
    """An alarm (3.2) or device event (3.3) record as an Alarm, its kind read from its words."""
    row = lower_keys(raw)
    prefix = "event" if event else "alarm"
    device = as_str(row.get("device_comm_no"))
    if device is None:
        return None
    when = as_str(row.get(f"{prefix}_time"))
    code = as_str(row.get(f"{prefix}_code")) or ""
    message = as_str(row.get(f"{prefix}_content")) or ""
    if event:
        kind = kind_of(message, EVENT_WORDS, AlarmType.DEVICE_EVENT)
    else:
        kind = kind_of(message, ALARM_WORDS, AlarmType.DEVICE_ALARM)
    return Alarm(
        meter_id=device,
        type=kind,
        priority=AlarmPriority.LOW if event else AlarmPriority.HIGH,
        message=message,
        code=code,
        time=as_datetime(when, tz),
        key=record_key(prefix, device, when, code),
        event=event,
    )
