"""Frozen history → long-term statistics for the Energy dashboard, apart from the coordinator."""

from __future__ import annotations

import logging
import re
from datetime import datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from homeassistant.core import HomeAssistant
from homeassistant.util import dt as dt_util
from homeassistant.util import slugify

from .api import Capability, HistoryPoint, HistorySeries, MeterClient, MeterCloudError, MeterData
from .compat import statistic_metadata, unit_class_of
from .const import DOMAIN

if TYPE_CHECKING:
    from .coordinator import MeterCloudCoordinator

_LOGGER = logging.getLogger(__name__)

# Each import re-reads the backend's lookback (30 days by default, as opower does), so late or
# corrected readings repair the sums. Meters already backfilled, by id, in the ledger's meta.
BACKFILLED = "history_backfilled"
_VALID_OBJECT_ID = re.compile(r"^(?!_)[a-z0-9_]+(?<!_)$")
# How far back to look for the last sum before the window.
BASELINE_SEARCH = timedelta(days=365)


def statistic_id(backend: str, meter_id: str, key: str = "volume") -> str:
    """External statistic id of one series of a meter (`volume`: the standard volume)."""
    object_id = f"{backend}_{meter_id}_{key}".lower()
    if not _VALID_OBJECT_ID.match(object_id):
        # Node codes and serials may hold any character; ids only take [a-z0-9_].
        object_id = slugify(object_id, separator="_")
    return f"{DOMAIN}:{object_id}"


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
    """Import every meter's recent history (a longer backfill for meters seen the first time).

    Returns the number of rows written.
    """
    client = coordinator.client
    if "recorder" not in hass.config.components or not client.supports(Capability.HISTORY):
        return 0
    end = dt_util.utcnow()
    meters = [m for m in (coordinator.data or {}).values() if _has_history(client, m)]
    done = set(coordinator.commands.meta.get(BACKFILLED, []))
    backfill = client.backfill or client.history_lookback
    groups = [
        ([m for m in meters if m.meter_id in done], client.history_lookback, False),
        ([m for m in meters if m.meter_id not in done], max(backfill, client.history_lookback), True),
    ]
    written = 0
    for group, window, first in groups:
        if not group:
            continue
        try:
            series = await client.async_history_series(group, end - window, end)
        except MeterCloudError as err:
            _LOGGER.debug("History not imported this time: %s", err)
            continue
        for one in series:
            written += await _write(hass, client, one)
        if first:
            done.update(m.meter_id for m in group)
    if done != set(coordinator.commands.meta.get(BACKFILLED, [])):
        coordinator.commands.meta[BACKFILLED] = sorted(done)
        coordinator.commands.save_meta()
    return written


def _has_history(client: MeterClient, meter: MeterData) -> bool:
    fields = client.fields_for(meter)
    return "reading" in fields or "values" in fields


async def _write(hass: HomeAssistant, client: MeterClient, series: HistorySeries) -> int:
    """Rows of one series, continuing the sum already stored before its first point."""
    from homeassistant.components.recorder.statistics import async_add_external_statistics  # noqa: PLC0415

    if not series.points:
        return 0
    stat_id = statistic_id(client.backend, series.meter_id, series.key)
    first_hour = dt_util.as_utc(series.points[0].time).replace(minute=0, second=0, microsecond=0) - timedelta(hours=1)
    state, total = await _baseline(hass, stat_id, first_hour)
    rows = build_rows(series.points, state, total)
    metadata = statistic_metadata(
        statistic_id=stat_id, name=series.name, unit=series.unit, unit_class=unit_class_of(series.unit)
    )
    async_add_external_statistics(hass, metadata, rows)  # type: ignore[arg-type]
    return len(rows)


def async_setup_history(hass: HomeAssistant, coordinator: MeterCloudCoordinator) -> None:
    """Import now (in the background) and every `history_interval` of the backend while the entry is loaded."""
    from homeassistant.helpers.event import async_track_time_interval  # noqa: PLC0415

    entry = coordinator.config_entry
    if not coordinator.client.supports(Capability.HISTORY):
        return

    async def run(_now: datetime | None = None) -> None:
        written = await async_import_history(hass, coordinator)
        _LOGGER.debug("Imported %s statistic rows for %s", written, entry.title)

    entry.async_create_background_task(hass, run(), f"{DOMAIN} history import {entry.entry_id}")
    entry.async_on_unload(async_track_time_interval(hass, run, coordinator.client.history_interval))
