"""The command queue of the IoT meter platform (chapter 4): types, payloads, states, results."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime, tzinfo
from decimal import Decimal
from typing import Any

from ..errors import InvalidRequestError
from ..models import CommandKind, CommandResult, PriceSchedule
from ..parse import as_datetime, as_int, as_str, lower_keys

PROCESSOR = "iotmeterv1"
TARGET_METER = 1
CTRL_TYPES = {
    CommandKind.VALVE_OPEN: "iotmeterv1.common.setvalveon",
    CommandKind.VALVE_CLOSE: "iotmeterv1.common.setvalveoff",
    CommandKind.SET_CUMULATIVE: "iotmeterv1.common.setcumulant",
    CommandKind.RELEASE_FORCE: "iotmeterv1.common.releaseforce",
    CommandKind.SET_PRICE: "iotmeterv1.prepay.setprice",
    CommandKind.READ_PRICE: "iotmeterv1.prepay.getprice",
    CommandKind.SET_REMAINING: "iotmeterv1.prepay.setremain",
    CommandKind.RECHARGE: "iotmeterv1.prepay.remotecharge",
    CommandKind.CHARGE_STATE: "iotmeterv1.prepay.getchargestate",
    CommandKind.OPEN_ACCOUNT: "iotmeterv1.prepay.openaccount",
}
KINDS = {ctrl_type: kind for kind, ctrl_type in CTRL_TYPES.items()}
# 4.1 task states.
WAITING, SENT, ANSWERED, SUCCESS, FAILED, CANCELLED, TIMED_OUT, SEND_FAILED, OTHER = 0, 1, 2, 3, 4, 5, 6, 7, 99
UNDER_WAY = frozenset({WAITING, SENT, ANSWERED})
# remote_charge_return.success: 0xaa charged, 0xbb refused.
CHARGE_OK, CHARGE_REFUSED = 0xAA, 0xBB
# open_account_return.success: 0 opened, 1 refused.
OPEN_REFUSED = 1
TIME_FORMAT = "%Y-%m-%dT%H:%M:%S"
MAX_TIERS = 5


def ladder(schedule: PriceSchedule, tz: tzinfo, now: datetime) -> dict[str, Any]:
    """ladder_price (4.5.3): up to 5 prices and 4 ladders, the cycle start and its months."""
    if len(schedule.prices) > MAX_TIERS:
        raise InvalidRequestError("more than 5 tiers", reason="invalid_price_schedule")
    data: dict[str, Any] = {}
    for index in range(1, MAX_TIERS + 1):
        price = schedule.prices[index - 1] if index <= len(schedule.prices) else Decimal(0)
        data[f"price{index}"] = float(price)
        if index < MAX_TIERS:
            limit = schedule.ladder_limits[index - 1] if index <= len(schedule.ladder_limits) else Decimal(0)
            data[f"ladder{index}"] = float(limit)
    start = schedule.effective_date or now.astimezone(tz).date()
    data["cycle_start"] = f"{start.isoformat()}T00:00:00"
    data["cycle_month"] = schedule.cycle_months or (12 if schedule.tiered else 1)
    return data


def open_account_data(params: Mapping[str, Any], schedule: PriceSchedule, tz: tzinfo, now: datetime) -> dict[str, Any]:
    """open_account_param: the opening charge plus the ladder (ladders as unsigned ints)."""
    if any(limit != limit.to_integral_value() for limit in schedule.ladder_limits):
        raise InvalidRequestError("ladder limits must be whole m³", reason="ladder_not_integer")
    price = ladder(schedule, tz, now)
    data: dict[str, Any] = {
        "charge_value": float(params.get("amount", 0)),
        "total_value": float(params.get("total", params.get("amount", 0))),
    }
    for index in range(1, MAX_TIERS + 1):
        data[f"price{index}"] = price[f"price{index}"]
        if index < MAX_TIERS:
            data[f"ladder{index}"] = int(price[f"ladder{index}"])
    data["cycle_start_time"] = price["cycle_start"]
    data["cycle_month"] = price["cycle_month"]
    return data


def ctrl_record(
    kind: CommandKind,
    comm_no: str,
    data: Mapping[str, Any],
    *,
    reference: str,
    now: datetime,
    timeout: datetime,
    upper: str | None = None,
) -> dict[str, Any]:
    """A CtrlData/Add body; ctrl_data is a JSON string inside the JSON, as 4.2.1 shows.

    `now` is the task's time (ctrl_time): a later one schedules it; `upper` chains it to that task (upper_ctrl_id).
    """
    chained = {"upper_ctrl_id": int(upper)} if upper else {}
    return {
        **chained,
        "processor_name": PROCESSOR,
        "ctrl_define_no": reference,
        "target_comm_no": comm_no,
        "target_devtype": TARGET_METER,
        "ctrl_time": now.strftime(TIME_FORMAT),
        "ctrl_timeout": timeout.strftime(TIME_FORMAT),
        "ctrl_type": CTRL_TYPES[kind],
        "ctrl_data": json.dumps(dict(data), ensure_ascii=False),
    }


def _json(value: Any) -> dict[str, Any]:
    if isinstance(value, dict):
        return value
    if isinstance(value, str) and value.strip():
        try:
            decoded = json.loads(value)
        except ValueError:
            return {}
        return decoded if isinstance(decoded, dict) else {}
    return {}


def result_of(raw: Mapping[str, Any]) -> CommandResult | None:
    """A ctrl record (GetModel/GetList) or a Report item as a CommandResult."""
    row = lower_keys(raw)
    ctrl_id = as_str(row.get("ctrl_id"))
    state = as_int(row.get("ctrl_state"))
    if ctrl_id is None or state is None:
        return None
    kind = KINDS.get(as_str(row.get("ctrl_type")) or "")
    data = _json(row.get("return_data"))
    note = as_str(row.get("ctrl_feedback_msg")) or as_str(row.get("ctrl_state_msg"))
    message = f"{state} {note}" if note else str(state)
    success: bool | None
    code: str | None = None
    if state in UNDER_WAY:
        success = None
    elif state == SUCCESS:
        success = True
        # A remote charge the platform delivered can still be refused by the meter (0xbb).
        if kind is CommandKind.RECHARGE and as_int(data.get("success")) == CHARGE_REFUSED:
            success, code = False, "0xbb"
            message = f"meter refused the charge (0xbb, reason {data.get('reason')})"
        elif kind is CommandKind.OPEN_ACCOUNT and as_int(data.get("success")) == OPEN_REFUSED:
            success, code = False, "open_refused"
            message = f"meter refused to open the account (reason {data.get('reason')}: {data.get('reason_msg')})"
    else:
        success, code = False, str(state)
    return CommandResult(
        meter_id=as_str(row.get("meter_comm_no")) or as_str(row.get("target_comm_no")) or "",
        serial=as_str(row.get("ctrl_define_no")) or "",
        success=success,
        kind=kind.value if kind else None,
        vendor_id=ctrl_id,
        message=message,
        data=data or None,
        cancelled=state == CANCELLED,
        code=code,
        counters_refused=code == "0xbb",
    )


def parse_expiration(value: Any, tz: tzinfo) -> datetime | None:
    """`2017-05-17T11:17:31.6895023+08:00` (2.2.2's login sample): fractions and offsets as_datetime reads."""
    return as_datetime(value, tz)
