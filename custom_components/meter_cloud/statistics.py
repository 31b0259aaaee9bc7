"""Frozen history → long-term statistics for the Energy dashboard, apart from the coordinator."""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from homeassistant.const import UnitOfVolume
from homeassistant.core import HomeAssistant
from homeassistant.util import dt as dt_util

from .api import Capability, HistoryPoint, MeterCloudError, MeterData
from .compat import statistic_metadata
from .const import DOMAIN

if TYPE_CHECKING:
    from .coordinator import MeterCloudCoordinator

_LOGGER = logging.getLogger(__name__)

# Each import re-reads this window, so late or corrected readings repair the sums (opower does 30 days).
LOOKBACK = timedelta(days=30)
# How far back to look for the last sum before the window.
BASELINE_SEARCH = timedelta(days=365)
HISTORY_CONCURRENCY = 4
# Frozen data is daily: importing four times a day catches late arrivals soon enough.
HISTORY_INTERVAL = timedelta(hours=6)


def statistic_id(backend: str, meter_id: str) -> str:
    """External statistic id of a meter's standard volume."""
    return f"{DOMAIN}:{backend}_{meter_id}_volume".lower()


def build_rows(
    points: list[HistoryPoint], baseline_state: Decimal | None, baseline_sum: Decimal
) -> list[dict[str, Any]]:
    """Hourly rows with a running sum continued from the baseline.

    A frozen reading at T closes the hour that ends at T, so consumption lands on the day it
    happened. A reading lower than the one before (meter replaced or counter reset) adds nothing
    rather than a huge negative bar; a gap puts its whole consumption on the next reading.
    """
    rows = []
    previous, total = baseline_state, baseline_sum
    for point in points:
        if previous is not None and point.value > previous:
            total += point.value - previous
        previous = point.value
        start = dt_util.as_utc(point.time).replace(minute=0, second=0, microsecond=0) - timedelta(hours=1)
        rows.append({"start": start, "state": float(point.value), "sum": float(total)})
    return rows


async def _baseline(hass: HomeAssistant, stat_id: str, before: datetime) -> tuple[Decimal | None, Decimal]:
    """State and sum of the last row before `before`, or nothing and zero."""
    from homeassistant.components.recorder import get_instance  # noqa: PLC0415
    from homeassistant.components.recorder.statistics import statistics_during_period  # noqa: PLC0415

    found = await get_instance(hass).async_add_executor_job(
        statistics_during_period, hass, before - BASELINE_SEARCH, before, {stat_id}, "hour", None, {"state", "sum"}
    )
    rows = found.get(stat_id) or []
    if not rows:
        return None, Decimal(0)
    last = rows[-1]
    state = last.get("state")
    return (None if state is None else Decimal(str(state))), Decimal(str(last.get("sum") or 0))


async def async_import_history(hass: HomeAssistant, coordinator: MeterCloudCoordinator) -> int:
    """Import the lookback window of every meter; return the number of rows written."""
    client = coordinator.client
    if "recorder" not in hass.config.components or not client.supports(Capability.HISTORY):
        return 0
    from homeassistant.components.recorder.statistics import async_add_external_statistics  # noqa: PLC0415

    end = dt_util.utcnow()
    start = end - LOOKBACK
    semaphore = asyncio.Semaphore(HISTORY_CONCURRENCY)
    written = 0

    async def one(meter: MeterData) -> None:
        nonlocal written
        async with semaphore:
            try:
                points = await client.async_history(meter, start, end)
            except MeterCloudError as err:
                _LOGGER.debug("History of %s not imported this time: %s", meter.meter_id, err)
                return
        if not points:
            return
        stat_id = statistic_id(client.backend, meter.meter_id)
        first_hour = dt_util.as_utc(points[0].time).replace(minute=0, second=0, microsecond=0) - timedelta(hours=1)
        state, total = await _baseline(hass, stat_id, first_hour)
        rows = build_rows(points, state, total)
        metadata = statistic_metadata(
            statistic_id=stat_id,
            name=f"{client.manufacturer} {meter.meter_id} standard volume",
            unit=UnitOfVolume.CUBIC_METERS,
            unit_class="volume",
        )
        async_add_external_statistics(hass, metadata, rows)  # type: ignore[arg-type]
        written += len(rows)

    meters = [m for m in (coordinator.data or {}).values() if "reading" in client.fields_for(m)]
    await asyncio.gather(*(one(meter) for meter in meters))
    return written


def async_setup_history(hass: HomeAssistant, coordinator: MeterCloudCoordinator) -> None:
    """Import now (in the background) and every HISTORY_INTERVAL while the entry is loaded."""
    from homeassistant.helpers.event import async_track_time_interval  # noqa: PLC0415

    entry = coordinator.config_entry
    if not coordinator.client.supports(Capability.HISTORY):
        return

    async def run(_now: datetime | None = None) -> None:
        written = await async_import_history(hass, coordinator)
        _LOGGER.debug("Imported %s statistic rows for %s", written, entry.title)

    entry.async_create_background_task(hass, run(), f"{DOMAIN} history import {entry.entry_id}")
    entry.async_on_unload(async_track_time_interval(hass, run, HISTORY_INTERVAL))
