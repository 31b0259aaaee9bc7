"""The vendor's daily bill → the Gas cost sensor's own long-term statistic (the Energy dashboard's "total costs").

The Gas cost sensor shows the cloud's cumulative money used; the recorder compiles its statistic from those states
as they come, which puts a day's money on the hour the poll saw it. The cloud's money per day (Goldcard 1015
`useAmount`, the records of one day's tiers added up) puts it on its own day: each day's closing hour gets the
cumulative money at the day's end, counted backwards from where the recorder's sum stands now (statistics.py's
anchor), so a day that arrives late is filled in without counting anything twice. Every import rewrites the whole
window: the daily records of it come in one request per meter anyway, and a day reported late (or corrected) then moves
no money away from the days around it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import date, datetime, timedelta, tzinfo
from decimal import Decimal
from typing import TYPE_CHECKING

from homeassistant.core import HomeAssistant
from homeassistant.helpers import entity_registry as er

from .api import DailySpend
from .const import DOMAIN
from .foresight import HOUR, WINDOW_DAYS, midnight
from .statistics import _Statistic

if TYPE_CHECKING:
    from .coordinator import MeterCloudCoordinator

_LOGGER = logging.getLogger(__name__)

COST_KEY = "gas_cost"
# Meters whose cost statistic was backfilled once, in the ledger's meta.
COST_BACKFILLED = "cost_backfilled"


def cost_archive(
    spends: Mapping[date, Decimal], today: date, state_now: Decimal, first: date, tz: tzinfo
) -> dict[datetime, Decimal]:
    """Cumulative money at the end of each day from `first` to yesterday, by the hour that closes the day.

    Counted backwards from `state_now` (the cumulative money now): the end of a day is it minus every later day's
    money, today's so far included. A day without a record adds nothing.
    """
    archive: dict[datetime, Decimal] = {}
    level, day = state_now, today
    while day > first:
        level -= spends.get(day, Decimal(0))
        day -= timedelta(days=1)
        archive[midnight(day + timedelta(days=1), tz) - HOUR] = level
    return archive


def cost_sensor(hass: HomeAssistant, coordinator: MeterCloudCoordinator, meter_id: str) -> str | None:
    """The meter's Gas cost sensor, when it exists and is enabled."""
    registry = er.async_get(hass)
    unique_id = f"{coordinator.device_key(meter_id)}_{COST_KEY}"
    entity_id = registry.async_get_entity_id("sensor", DOMAIN, unique_id)
    entry = registry.async_get(entity_id) if entity_id else None
    return entity_id if entry is not None and not entry.disabled else None


async def async_import_costs(
    hass: HomeAssistant, coordinator: MeterCloudCoordinator, fetched: Mapping[str, list[DailySpend]], today: date
) -> int:
    """Write each meter's daily money into its Gas cost statistic; the rows written."""
    if "recorder" not in hass.config.components:
        return 0
    meta = coordinator.commands.meta
    done = set(meta.get(COST_BACKFILLED, []))
    currency, tz = coordinator.client.currency, coordinator.client.tz
    written = 0
    for meter_id, spends in fetched.items():
        if (entity_id := cost_sensor(hass, coordinator, meter_id)) is None:
            continue
        statistic = _Statistic(hass, entity_id, currency, currency)
        anchor = await statistic.anchor()
        if anchor is None:
            continue  # no cumulative money yet to count back from
        first = today - timedelta(days=WINDOW_DAYS + 1)
        archive = cost_archive({s.day: s.amount for s in spends}, today, anchor[1], first, tz)
        written += await statistic.merge(archive, min(archive))
        done.add(meter_id)
    if done != set(meta.get(COST_BACKFILLED, [])):
        meta[COST_BACKFILLED] = sorted(done)
        coordinator.commands.save_meta()
    _LOGGER.debug("Wrote %s cost statistic rows for %s", written, coordinator.config_entry.title)
    return written
