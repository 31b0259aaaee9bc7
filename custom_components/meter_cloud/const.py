"""Constants of the Meter Cloud integration."""

from __future__ import annotations

from datetime import timedelta
from typing import Final

DOMAIN: Final = "meter_cloud"

CONF_BACKEND: Final = "backend"
CONF_PUSH_ID: Final = "push_id"
CONF_SCAN_INTERVAL: Final = "scan_interval"
CONF_DETAILS_INTERVAL: Final = "details_interval"
# Low balance thresholds (options, both optional): money in the meter's currency, and days of credit left.
CONF_LOW_BALANCE_AMOUNT: Final = "low_balance_amount"
CONF_LOW_BALANCE_DAYS: Final = "low_balance_days"

# Vendor clouds throttle and meters report a few times a day: poll gently by default.
DEFAULT_SCAN_INTERVAL: Final = 10  # minutes
DEFAULT_DETAILS_INTERVAL: Final = 60  # minutes
MIN_SCAN_INTERVAL: Final = 1
# At most this many per-meter detail requests in flight at once.
DETAILS_CONCURRENCY: Final = 4
# NB-IoT meters wake up rarely: a valve command may take hours before its result comes.
COMMAND_EXPIRY: Final = timedelta(hours=24)

PUSH_URL_PREFIX: Final = "/api/meter_cloud/push"
MAX_PUSH_BYTES: Final = 64 * 1024
# Serial numbers remembered per entry to drop replayed pushes.
PUSH_SERIAL_MEMORY: Final = 4096

EVENT_ALARM: Final = "meter_cloud_alarm"
# A device event (valve opened, recharge taken): the same fields as an alarm.
EVENT_DEVICE_EVENT: Final = "meter_cloud_device_event"
# Fired when a remote command is confirmed, fails, is cancelled or ends with an unknown outcome.
EVENT_COMMAND_RESULT: Final = "meter_cloud_command_result"
