"""Meter Cloud client layer: vendor clouds behind one interface. No Home Assistant imports here."""

from __future__ import annotations

from dataclasses import dataclass

from .base import MeterClient
from .cangnan import CangnanClient
from .errors import (
    AuthenticationError,
    CloudConnectionError,
    CloudTimeoutError,
    CommandError,
    ConfigurationError,
    DuplicateSerialError,
    InvalidRequestError,
    MeterCloudError,
    PushError,
    ResponseError,
    UnsupportedError,
)
from .goldcard import GoldcardClient
from .iotmeter import IotMeterClient
from .kumir.client import KumirClient
from .models import (
    DEVICE_STATES,
    Alarm,
    AlarmPriority,
    AlarmType,
    Capability,
    ChargeCounters,
    CommandKind,
    CommandReceipt,
    CommandRef,
    CommandResult,
    CommandState,
    ConfigField,
    CustomerInfo,
    DailySpend,
    DailyUsage,
    HistoryPoint,
    HistorySeries,
    ImportRecord,
    MeterData,
    MeterRegistration,
    MeterReplacement,
    MeterStatus,
    PriceSchedule,
    PushResult,
    ValueInfo,
    ValveState,
)


@dataclass(frozen=True, slots=True)
class Backend:
    """A vendor system the config flow can offer."""

    key: str
    client: type[MeterClient]


# Every vendor in scope.
BACKENDS: dict[str, Backend] = {
    "goldcard": Backend("goldcard", GoldcardClient),
    "cangnan": Backend("cangnan", CangnanClient),
    "iotmeter": Backend("iotmeter", IotMeterClient),
    "kumir": Backend("kumir", KumirClient),
}

__all__ = [
    "BACKENDS",
    "DEVICE_STATES",
    "Alarm",
    "AlarmPriority",
    "AlarmType",
    "AuthenticationError",
    "Backend",
    "CangnanClient",
    "Capability",
    "ChargeCounters",
    "CloudConnectionError",
    "CloudTimeoutError",
    "CommandError",
    "CommandKind",
    "CommandReceipt",
    "CommandRef",
    "CommandResult",
    "CommandState",
    "ConfigField",
    "ConfigurationError",
    "CustomerInfo",
    "DailySpend",
    "DailyUsage",
    "DuplicateSerialError",
    "GoldcardClient",
    "HistoryPoint",
    "HistorySeries",
    "ImportRecord",
    "InvalidRequestError",
    "IotMeterClient",
    "KumirClient",
    "MeterClient",
    "MeterCloudError",
    "MeterData",
    "MeterRegistration",
    "MeterReplacement",
    "MeterStatus",
    "PriceSchedule",
    "PushError",
    "PushResult",
    "ResponseError",
    "UnsupportedError",
    "ValueInfo",
    "ValveState",
]
