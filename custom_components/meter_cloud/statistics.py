"""Archive history → the counter sensor's own long-term statistic: one Energy source per physical counter.

A counter whose cloud keeps an archive (IoT frozen readings, KUMIR-RESURS hour and day archives) has one sensor,
and one statistic: the sensor's own (statistic id = its entity id, its name, its unit). The recorder compiles that
statistic from the sensor's states every hour; this module writes the archive's hour-accurate readings into the
same statistic, so late archives fill in the hours the live states missed, and nothing is offered twice in the
Energy pickers (before 0.5 a second, external statistic `meter_cloud:…` carried the archive: it is merged into the
sensor's statistic and removed, see `_migrate`).

The recorder continues each sum from its own 5-minute series, which an import cannot touch. So every imported row
is anchored to that series' newest row (or, before the first compile, to the sensor's state with sum 0, where the
recorder will start), and sums are computed backwards from it: sum(hour) = sum(next) - max(0, state(next) -
state(hour)). Whatever the recorder writes next continues from that anchor, so the hours agree with each other and
with what comes after;
hours with a live (compiled) row between two archive readings keep their row, raised to the archive reading
before it when it lagged (a meter that reports its frozen reading later than the hour it closes).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from homeassistant.const import STATE_UNAVAILABLE, STATE_UNKNOWN
from homeassistant.core import HomeAssistant
from homeassistant.helpers import entity_registry as er
from homeassistant.util import dt as dt_util
from homeassistant.util import slugify

from .api import Capability, HistoryPoint, HistorySeries, MeterClient, MeterCloudError, MeterData
from .compat import statistic_metadata, unit_class_of
from .const import DOMAIN

if TYPE_CHECKING:
    from .coordinator import MeterCloudCoordinator

_LOGGER = logging.getLogger(__name__)

# Meters already backfilled, by id, in the ledger's meta; and the old external statistics already merged.
BACKFILLED = "history_backfilled"
# Per meter, the named values (KUMIR system x parameter) whose statistic was backfilled: a value that becomes a
# counter later (the user described it) gets its own backfill.
BACKFILLED_VALUES = "history_backfilled_values"
MERGED = "statistics_merged"
HOUR = timedelta(hours=1)
# Where "all of a statistic's rows" start: an old statistic is read whole before it is removed (reading only recent
# years would delete the rest with it).
EPOCH = datetime(1970, 1, 1, tzinfo=dt_util.UTC)
_VALID_OBJECT_ID_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789_"


def statistic_id(backend: str, meter_id: str, key: str = "volume") -> str:
    """The external statistic id versions before 0.5 used for a series (what `_migrate` merges and removes)."""
    object_id = f"{backend}_{meter_id}_{key}".lower()
    if object_id.startswith("_") or object_id.endswith("_") or set(object_id) - set(_VALID_OBJECT_ID_CHARS):
        # Node codes and serials may hold any character; ids only take [a-z0-9_].
        object_id = slugify(object_id, separator="_")
    return f"{DOMAIN}:{object_id}"


def anchored_rows(
    archive: Mapping[datetime, Decimal],
    existing: Mapping[datetime, Decimal],
    anchor: tuple[datetime, Decimal, Decimal],
) -> list[dict[str, Any]]:
    """Hourly rows (start, state, sum) for the hours before the anchor, consistent with it.

    `archive` and `existing` map an hour's start to the reading at its end (archive readings win); `anchor` is
    (start, state, sum) of the statistic's newest row, which is left as it is. A reading lower than the one before
    it (a replaced or reset meter) adds nothing; a live reading below the archive reading before it is raised to it.
    """
    anchor_start, anchor_state, anchor_sum = anchor
    hours = sorted(h for h in {*archive, *existing} if h < anchor_start)
    states: dict[datetime, Decimal] = {}
    floor: Decimal | None = None
    for hour in hours:
        if hour in archive:
            states[hour] = floor = archive[hour]
        else:
            states[hour] = existing[hour] if floor is None else max(existing[hour], floor)
    rows: list[dict[str, Any]] = []
    next_state, next_sum = anchor_state, anchor_sum
    for hour in reversed(hours):
        state = states[hour]
        next_sum -= max(Decimal(0), next_state - state)
        rows.append({"start": hour, "state": float(state), "sum": float(next_sum)})
        next_state = state
    rows.reverse()
    return rows


def build_rows(
    points: Iterable[HistoryPoint], baseline_state: Decimal | None, baseline_sum: Decimal
) -> list[dict[str, Any]]:
    """Hourly rows with a running sum continued forwards from a baseline (a series that is its own anchor).

    A reading at T closes the hour that ends at T. A reading lower than the one before it adds nothing; a gap
    puts its whole consumption on the next reading.
    """
    rows = []
    previous, total = baseline_state, baseline_sum
    for point in points:
        if previous is not None and point.value > previous:
            total += point.value - previous
        previous = point.value
        start = dt_util.as_utc(point.time).replace(minute=0, second=0, microsecond=0) - HOUR
        rows.append({"start": start, "state": float(point.value), "sum": float(total)})
    return rows


class _Statistic:
    """One counter sensor's own statistic, as the recorder keeps it."""

    def __init__(self, hass: HomeAssistant, entity_id: str, unit: str | None, series_unit: str | None) -> None:
        self.hass, self.entity_id, self.unit, self._series_unit = hass, entity_id, unit, series_unit
        # Whether the last anchor() was the sensor's state before the recorder's first compile.
        self.provisional = False

    def convert(self, value: Decimal) -> Decimal:
        """A reading in the series' unit, in the unit the statistic is kept in (the sensor's display unit)."""
        if self.unit == self._series_unit or self.unit is None or self._series_unit is None:
            return value
        from homeassistant.components.recorder.statistics import STATISTIC_UNIT_TO_UNIT_CONVERTER  # noqa: PLC0415

        converter = STATISTIC_UNIT_TO_UNIT_CONVERTER.get(self.unit)
        if converter is None or self._series_unit not in converter.VALID_UNITS:
            return value
        return Decimal(str(converter.convert(float(value), self._series_unit, self.unit)))

    async def rows(self, start: datetime = EPOCH) -> list[Mapping[str, Any]]:
        """The statistic's hourly rows from `start` (all of them without), oldest first."""
        from homeassistant.components.recorder import get_instance  # noqa: PLC0415
        from homeassistant.components.recorder.statistics import statistics_during_period  # noqa: PLC0415

        found = await get_instance(self.hass).async_add_executor_job(
            statistics_during_period, self.hass, start, None, {self.entity_id}, "hour", None, {"state", "sum"}
        )
        rows: list[Mapping[str, Any]] = list(found.get(self.entity_id) or [])
        return rows

    async def anchor(self) -> tuple[datetime, Decimal, Decimal] | None:
        """Where the recorder's sum stands: (hour, state, sum) that imported rows must lead up to; None if unknown.

        The recorder continues each sum from its newest 5-minute row: that row's state and sum, at the hour it is
        in (that hour and later are the recorder's to compile). Before the first compile, the recorder will start
        at sum 0 with the sensor's state: anchor there, at the current hour (`provisional` then says so).
        """
        from homeassistant.components.recorder import get_instance  # noqa: PLC0415
        from homeassistant.components.recorder.statistics import get_last_short_term_statistics  # noqa: PLC0415

        found = await get_instance(self.hass).async_add_executor_job(
            get_last_short_term_statistics, self.hass, 1, self.entity_id, True, {"state", "sum"}
        )
        rows = found.get(self.entity_id) or []
        self.provisional = not rows or rows[0].get("state") is None
        if not self.provisional:
            last = rows[0]
            start = datetime.fromtimestamp(float(last["start"]), dt_util.UTC).replace(minute=0, second=0)
            return start, Decimal(str(last["state"])), Decimal(str(last.get("sum") or 0))
        current = self.hass.states.get(self.entity_id)
        if current is None or current.state in (STATE_UNKNOWN, STATE_UNAVAILABLE):
            return None
        try:
            state = Decimal(current.state)
        except ArithmeticError:
            return None
        return dt_util.utcnow().replace(minute=0, second=0, microsecond=0), state, Decimal(0)

    def write(self, rows: list[dict[str, Any]]) -> None:
        """Rows into the sensor's own statistic (the recorder's metadata for it, unchanged)."""
        from homeassistant.components.recorder.statistics import async_import_statistics  # noqa: PLC0415

        metadata = statistic_metadata(
            statistic_id=self.entity_id, name=None, unit=self.unit, unit_class=unit_class_of(self.unit)
        )
        metadata["source"] = "recorder"
        async_import_statistics(self.hass, metadata, rows)  # type: ignore[arg-type]

    async def merge(self, archive: Mapping[datetime, Decimal], since: datetime) -> int:
        """Write archive readings of hours from `since`, anchored to the newest row; the rows written."""
        anchor = await self.anchor()
        if anchor is None or not archive:
            return 0
        # Before the recorder's first compile the anchor is where it will start (the sensor's state, sum 0, this
        # hour): an import in a later hour moves it, so every row an earlier import wrote is re-based on it too.
        existing = {
            datetime.fromtimestamp(float(row["start"]), dt_util.UTC): Decimal(str(row["state"]))
            for row in await self.rows(EPOCH if self.provisional else since - HOUR)
            if row.get("state") is not None
        }
        rows = anchored_rows(archive, existing, anchor)
        if rows:
            self.write(rows)
        return len(rows)


def _hours(series: HistorySeries, statistic: _Statistic) -> dict[datetime, Decimal]:
    """The archive's readings by the hour they close, in the statistic's unit.

    A reading at 00:00 closes 23:00-24:00; one at 23:59:59 (a day's last reading) closes the same hour.
    """
    return {_closed_hour(dt_util.as_utc(p.time)): statistic.convert(p.value) for p in series.points}


def _closed_hour(when: datetime) -> datetime:
    """The start of the hour a reading at `when` closes (the hour it falls in, or the one before on the hour)."""
    start = when.replace(minute=0, second=0, microsecond=0)
    return start - HOUR if start == when else start


def _sensor(hass: HomeAssistant, coordinator: MeterCloudCoordinator, series: HistorySeries) -> _Statistic | None:
    """The series' counter sensor, when it exists, is enabled and keeps long-term statistics."""
    unique_id = f"{coordinator.device_key(series.meter_id)}_{series.sensor_key or series.key}"
    entity_id = er.async_get(hass).async_get_entity_id("sensor", DOMAIN, unique_id)
    if entity_id is None:
        return None
    entry = er.async_get(hass).async_get(entity_id)
    if entry is None or entry.disabled:
        return None
    state = hass.states.get(entity_id)
    unit = state.attributes.get("unit_of_measurement") if state is not None else series.unit
    return _Statistic(hass, entity_id, unit, series.unit)


async def _migrate(
    hass: HomeAssistant, coordinator: MeterCloudCoordinator, series: HistorySeries, sensor: _Statistic
) -> None:
    """Once per counter: merge the old external statistic into the sensor's, point the Energy dashboard at the
    sensor, and remove the old statistic, so its history stays and nothing is offered twice."""
    from homeassistant.components.recorder import get_instance  # noqa: PLC0415

    merged: list[str] = coordinator.commands.meta.setdefault(MERGED, [])
    old = statistic_id(coordinator.client.backend, series.meter_id, series.key)
    if old in merged:
        return
    rows = await _Statistic(hass, old, None, None).rows()  # all of them
    archive = {
        datetime.fromtimestamp(float(row["start"]), dt_util.UTC): sensor.convert(Decimal(str(row["state"])))
        for row in rows
        if row.get("state") is not None
    }
    if archive and await sensor.merge(archive, min(archive)) == 0 and await sensor.anchor() is None:
        return  # the sensor has no state yet: merge at the next import
    await _repoint_energy(hass, {old: sensor.entity_id})
    if rows:
        get_instance(hass).async_clear_statistics([old])
        _LOGGER.info("Merged %s rows of %s into %s and removed it", len(rows), old, sensor.entity_id)
    merged.append(old)
    coordinator.commands.save_meta()


async def _repoint_energy(hass: HomeAssistant, replacements: Mapping[str, str]) -> None:
    """Energy dashboard settings that name an old statistic name the sensor's instead."""
    if "energy" not in hass.config.components:
        return
    from homeassistant.components.energy.data import async_get_manager  # noqa: PLC0415

    manager = await async_get_manager(hass)
    if manager.data is None:
        return

    def swap(value: Any) -> Any:
        if isinstance(value, str):
            return replacements.get(value, value)
        if isinstance(value, list):
            return [swap(item) for item in value]
        if isinstance(value, dict):
            return {key: swap(item) for key, item in value.items()}
        return value

    current = dict(manager.data)
    updated = swap(current)
    if updated != current:
        await manager.async_update(updated)
        _LOGGER.info("Energy dashboard: %s now use the sensors' own statistics", ", ".join(replacements))


async def async_import_history(hass: HomeAssistant, coordinator: MeterCloudCoordinator) -> int:
    """Write every counter's recent archive into its sensor's statistic (a backfill for meters seen first).

    Returns the number of rows written.
    """
    client = coordinator.client
    if "recorder" not in hass.config.components or not client.supports(Capability.HISTORY):
        return 0
    end = dt_util.utcnow()
    meters = [m for m in (coordinator.data or {}).values() if _has_history(client, m)]
    done = set(coordinator.commands.meta.get(BACKFILLED, []))
    values_done: dict[str, list[str]] = coordinator.commands.meta.setdefault(BACKFILLED_VALUES, {})
    counters = {m.meter_id: _counters(client, m) for m in meters}
    for meter_id in done - set(values_done):
        # Backfilled before values were tracked: its counters of today were part of it.
        values_done[meter_id] = sorted(counters.get(meter_id, ()))
    fresh = {
        m.meter_id for m in meters if m.meter_id not in done or counters[m.meter_id] - set(values_done[m.meter_id])
    }
    lookback = client.lookback()
    backfill = client.backfill or lookback
    groups = [
        ([m for m in meters if m.meter_id not in fresh], lookback, False),
        ([m for m in meters if m.meter_id in fresh], max(backfill, lookback), True),
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
            sensor = _sensor(hass, coordinator, one)
            if sensor is None:
                continue
            await _migrate(hass, coordinator, one, sensor)
            written += await sensor.merge(_hours(one, sensor), end - window)
        if first:
            done.update(m.meter_id for m in group)
            values_done.update({m.meter_id: sorted(counters[m.meter_id]) for m in group})
    if done != set(coordinator.commands.meta.get(BACKFILLED, [])) or fresh:
        coordinator.commands.meta[BACKFILLED] = sorted(done)
        coordinator.commands.save_meta()
    return written


def _counters(client: MeterClient, meter: MeterData) -> set[str]:
    """The named values of a meter that feed statistics now."""
    return {key for key in meter.values or {} if client.value_info(meter, key).statistic}


def _has_history(client: MeterClient, meter: MeterData) -> bool:
    fields = client.fields_for(meter)
    return "reading" in fields or "values" in fields


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
