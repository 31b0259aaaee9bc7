"""Vendor-neutral models shared by every Meter Cloud backend."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any


class ValveState(StrEnum):
    """Valve position as the cloud last reported it."""

    OPEN = "open"
    CLOSED = "closed"
    MOVING = "moving"
    FAULT = "fault"
    UNKNOWN = "unknown"


# A device's condition, most severe first (its sensor shows the first that holds; "other": words we do not know).
DEVICE_STATES = (
    "gas_leak",
    "tampering",
    "magnetic_interference",
    "valve_fault",
    "battery_cut",
    "battery_fault",
    "reed_switch_fault",
    "communication_fault",
    "door_open",
    "mains_lost",
    "fence_alarm",
    "vibration",
    "other",
    "normal",
)


class MeterStatus(StrEnum):
    """Account/lifecycle state of a meter."""

    OPENED = "opened"
    ACTIVE = "active"
    SUSPENDED = "suspended"
    INACTIVE = "inactive"
    CANCELLED = "cancelled"


class AlarmType(StrEnum):
    """Alarm kinds, common to all backends (each backend declares the ones it reports)."""

    COMMUNICATION_FAULT = "communication_fault"
    GAS_LEAK = "gas_leak"
    REED_SWITCH_FAULT = "reed_switch_fault"
    VALVE_LEAK = "valve_leak"
    VALVE_FAULT = "valve_fault"
    BATTERY_FAULT = "battery_fault"
    MAGNETIC_INTERFERENCE = "magnetic_interference"
    LOW_BALANCE = "low_balance"
    TAMPERING = "tampering"
    # An RTU's (pressure station's) own.
    DOOR_OPEN = "door_open"
    MAINS_LOST = "mains_lost"
    FENCE_ALARM = "fence_alarm"
    VIBRATION = "vibration"
    BATTERY_CUT = "battery_cut"
    # A vendor alarm or event none of the kinds describe (its code and text come with it).
    DEVICE_ALARM = "device_alarm"
    DEVICE_EVENT = "device_event"
    OTHER = "other"
    # Device events: what a device did (not an alarm).
    VALVE_OPENED = "valve_opened"
    VALVE_CLOSED = "valve_closed"
    RECHARGED = "recharged"
    PRICE_CHANGED = "price_changed"
    METER_REPLACED = "meter_replaced"


class AlarmPriority(StrEnum):
    """Priority of an alarm."""

    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"


class CommandKind(StrEnum):
    """What a tracked remote command does."""

    VALVE_OPEN = "valve_open"
    VALVE_CLOSE = "valve_close"
    RECHARGE = "recharge"
    BALANCE_CREDIT = "balance_credit"
    BALANCE_DEDUCT = "balance_deduct"
    SET_PRICE = "set_price"
    READ_PRICE = "read_price"
    SET_REMAINING = "set_remaining"
    CHARGE_STATE = "charge_state"
    OPEN_ACCOUNT = "open_account"
    SET_CUMULATIVE = "set_cumulative"
    RELEASE_FORCE = "release_force"


class CommandState(StrEnum):
    """Lifecycle of a remote command (the transitions are in lifecycle.py)."""

    # Waiting for something it needs before it can be sent (IoT: the meter's recharge counters).
    PREPARING = "preparing"
    # On disk, on its way to the cloud; the cloud's answer has not come yet.
    SENDING = "sending"
    # The cloud has it; its result has not come yet.
    PENDING = "pending"
    CONFIRMED = "confirmed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    # Sent, but the answer was lost or no result came in time: it may or may not have been carried out.
    UNKNOWN = "unknown"


class Capability(StrEnum):
    """What a backend can do beyond reading meters."""

    DETAILS = "details"
    VALVE = "valve"
    RECHARGE = "recharge"
    CANCEL_COMMAND = "cancel_command"
    SET_PRICE = "set_price"
    DAILY_USAGE = "daily_usage"
    # Money each meter used per day, as the cloud counted it (tiers included): see MeterClient.async_daily_spend.
    DAILY_SPEND = "daily_spend"
    REGISTER_METER = "register_meter"
    DEREGISTER_METER = "deregister_meter"
    REPLACE_METER = "replace_meter"
    ADJUST_BALANCE = "adjust_balance"
    SUSPEND_METER = "suspend_meter"
    MODIFY_CUSTOMER = "modify_customer"
    PUSH = "push"
    # A queue of remote commands whose states can be polled, retried and listed.
    COMMAND_QUEUE = "command_queue"
    READ_PRICE = "read_price"
    SET_REMAINING = "set_remaining"
    CHARGE_STATE = "charge_state"
    OPEN_ACCOUNT = "open_account"
    SET_CUMULATIVE = "set_cumulative"
    RELEASE_FORCE = "release_force"
    # Frozen history for long-term statistics; alarms/events that can be fetched after the fact.
    HISTORY = "history"
    # One device can be read alone (after a command, instead of the whole list).
    SINGLE_READ = "single_read"
    ALARM_HISTORY = "alarm_history"
    # Readings can be uploaded to the cloud (KUMIR-RESURS import).
    IMPORT = "import"
    # The account's meters can be listed before any is followed (offered in the config flow).
    DISCOVER = "discover"


@dataclass(frozen=True, slots=True)
class MeterData:
    """Everything known about one meter; None means the backend did not say."""

    meter_id: str
    user_no: str | None = None
    device_id: str | None = None
    model: str | None = None
    reading: Decimal | None = None
    reading_time: datetime | None = None
    balance: Decimal | None = None
    price: Decimal | None = None
    price_code: str | None = None
    total_gas: Decimal | None = None
    total_money: Decimal | None = None
    total_recharge: Decimal | None = None
    last_recharge_amount: Decimal | None = None
    last_recharge_time: datetime | None = None
    recharge_count: int | None = None
    battery_voltage: Decimal | None = None
    signal_strength: Decimal | None = None
    temperature: Decimal | None = None
    pressure: Decimal | None = None
    status: MeterStatus | None = None
    valve: ValveState | None = None
    kind: str | None = None  # "meter" or "rtu"
    work_volume: Decimal | None = None
    # A standard-conditions total reported beside the reading (Goldcard 2001 standardTotalValue): the same counter as
    # the reading on compensated meters, shown but never a second Energy source.
    std_volume: Decimal | None = None
    std_flow: Decimal | None = None
    work_flow: Decimal | None = None
    this_month: Decimal | None = None
    last_month: Decimal | None = None
    this_cycle: Decimal | None = None
    last_cycle: Decimal | None = None
    remain_volume: Decimal | None = None
    state_code: int | None = None
    state_message: str | None = None
    # The device's condition as one of DEVICE_STATES (the vendor's own words stay in state_message).
    device_state: str | None = None
    # Every condition the vendor's state names (several can hold at once), as DEVICE_STATES values.
    conditions: tuple[str, ...] | None = None
    rssi: int | None = None
    battery_level: int | None = None
    magnetic_attacks: int | None = None
    flags: Mapping[str, bool] | None = None
    # What the cloud keeps of the meter's account (Goldcard 1014): user_name, address, user_type, set_up_date,
    # base_reading; personal data, never recorded or in diagnostics.
    account: Mapping[str, str] | None = None
    # Parameters a backend reports by name (KUMIR archives): key → value, described by value_info().
    values: Mapping[str, Decimal] | None = None


@dataclass(frozen=True, slots=True)
class ValueInfo:
    """What one named value of a meter is: how to show it and whether it feeds statistics."""

    key: str
    param: str
    system: int
    translation_key: str
    unit: str | None
    device_class: str | None
    state_class: str | None
    enabled: bool = True
    # Imported into long-term statistics (cumulative and not repeated by another value).
    statistic: bool = False
    label: str = ""
    # For a sum tariff: the tariffs it adds up, as the user reads them ("1-4").
    parts: str = ""


@dataclass(frozen=True, slots=True)
class ImportRecord:
    """Readings to upload: one record of one archive of one system of a node's device."""

    node: str
    serial: str
    device_type: str
    archive: str
    system: int
    time: datetime
    values: Mapping[str, Decimal]


@dataclass(frozen=True, slots=True)
class HistorySeries:
    """Cumulative readings of one value of one meter, for long-term statistics."""

    meter_id: str
    key: str
    name: str
    unit: str | None
    points: list[HistoryPoint]
    # The key of the sensor that shows this counter live (its statistic receives the series); None: `key`.
    sensor_key: str | None = None


@dataclass(frozen=True, slots=True)
class Alarm:
    """An alarm the cloud reported for a meter."""

    meter_id: str
    type: AlarmType
    priority: AlarmPriority
    message: str
    code: str
    time: datetime | None = None
    # A stable identity, so an alarm fetched after the fact and the same alarm pushed count once.
    key: str | None = None
    # A device event (a valve moved, a recharge taken), not an alarm: it goes to its own event entity.
    event: bool = False


@dataclass(frozen=True, slots=True)
class CommandResult:
    """What the cloud says of a command: final (success true/false) or still under way (None)."""

    meter_id: str
    serial: str
    success: bool | None
    kind: str | None = None
    vendor_id: str | None = None
    message: str | None = None
    data: Mapping[str, Any] | None = None
    cancelled: bool = False
    # The vendor's code for a failure (an IoT task state, 0xbb).
    code: str | None = None
    # The meter refused a recharge's sequence numbers (IoT 0xbb): what we believe of its counters is wrong.
    counters_refused: bool = False


@dataclass(frozen=True, slots=True)
class ChargeCounters:
    """How a prepaid meter counts the recharges it has had: number and cumulative total (all systems')."""

    times: int
    total: Decimal | None = None


@dataclass(frozen=True, slots=True)
class CommandReceipt:
    """What the cloud said when it accepted a command; the result comes later."""

    serial: str
    meter_id: str
    accepted_at: datetime | None = None
    vendor_id: str | None = None


@dataclass(frozen=True, slots=True)
class PriceSchedule:
    """A flat (one price) or tiered price; `ladder_limits[i]` ends tier i+1 (m³ per cycle)."""

    prices: tuple[Decimal, ...]
    ladder_limits: tuple[Decimal, ...] = ()
    code: str | None = None
    version: str | None = None
    cycle_months: int | None = None
    effective_date: date | None = None
    adjust: bool = False
    reset_cycle: bool = False

    @property
    def tiered(self) -> bool:
        """Whether this is a tiered price."""
        return len(self.prices) > 1


@dataclass(frozen=True, slots=True)
class HistoryPoint:
    """A frozen (end-of-period) cumulative reading."""

    time: datetime
    value: Decimal


@dataclass(frozen=True, slots=True)
class DailyUsage:
    """Gas used on one day."""

    day: date
    meter_id: str
    volume: Decimal
    amount: Decimal
    price: Decimal


@dataclass(frozen=True, slots=True)
class DailySpend:
    """Money a meter used on one day of the vendor's calendar, every tier of the day together."""

    day: date
    amount: Decimal


@dataclass(frozen=True, slots=True)
class CustomerInfo:
    """Customer details a backend keeps with a meter account; None leaves a field as it is."""

    user_name: str | None = None
    customer_type: str | None = None
    phone: str | None = None
    address: str | None = None
    room: str | None = None
    building: str | None = None


@dataclass(frozen=True, slots=True)
class MeterRegistration:
    """Fields to open an account for a meter (each backend uses the ones its API has)."""

    user_no: str
    meter_no: str
    meter_type: str | None = None
    price_code: str | None = None
    initial_reading: Decimal = Decimal("0")
    billing_mode: str = "1"
    pay_mode: str = "1"
    customer: CustomerInfo = field(default_factory=CustomerInfo)
    overdraft: Decimal | None = None
    meter_id: str | None = None
    meter_protocol: str | None = None
    fire_date: date | None = None
    opening_balance: Decimal | None = None
    price: PriceSchedule | None = None
    # Goldcard 1001: the meter's communication number, and the cycle volume a replacing meter starts its tiers at.
    comm_no: str | None = None
    init_cycle: Decimal | None = None


@dataclass(frozen=True, slots=True)
class MeterReplacement:
    """A meter swapped for a new one on the same account."""

    new_meter_no: str
    new_meter_type: str
    old_reading: Decimal
    new_reading: Decimal = Decimal("0")
    new_meter_id: str | None = None
    new_meter_protocol: str | None = None
    transfer_amount: Decimal | None = None
    new_comm_no: str | None = None


@dataclass(frozen=True, slots=True)
class CommandRef:
    """A command sent earlier, as a backend needs it to cancel it."""

    serial: str
    kind: CommandKind
    amount: Decimal | None = None
    vendor_id: str | None = None
    meter_id: str | None = None


@dataclass(frozen=True, slots=True)
class PushResult:
    """A parsed, authenticated push: what to apply and what to answer."""

    serial: str
    # The answer to send: a JSON object, or bytes already encoded (e.g. sealed) by the backend.
    response: dict[str, Any] | bytes
    reading: MeterData | None = None
    alarm: Alarm | None = None
    command: CommandResult | None = None
    commands: tuple[CommandResult, ...] = ()


@dataclass(frozen=True, slots=True)
class ConfigField:
    """One field a backend needs in the config flow."""

    key: str
    kind: str = "text"  # text | url | password | multiline | select | multiselect | number
    required: bool = True
    default: Any = None
    credential: bool = False
    identity: bool = False
    options: tuple[str, ...] = ()
    maximum: int | None = None
