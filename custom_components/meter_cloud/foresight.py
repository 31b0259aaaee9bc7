"""Money foresight for prepaid meters: what a meter spends a day, how many days its credit lasts, when it runs out.

Spend per day comes from the cloud where it counts money per day (Capability.DAILY_SPEND: the vendor's own bill,
every tier of a day together), else from the balance Home Assistant recorded (the Balance sensor's hourly long-term
statistics: falls only, a rise is a recharge). A day nobody can tell is left out, never taken for zero. It is
refreshed every REFRESH (a few times a day, not at every poll) and kept on disk, so a restart asks the cloud nothing
until the next refresh is due. The same daily money feeds the Gas cost sensor's statistic (see costs.py).
"""

from __future__ import annotations

import asyncio
import logging
from bisect import bisect_left
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, tzinfo
from decimal import ROUND_DOWN, ROUND_HALF_UP, Decimal
from itertools import pairwise
from typing import TYPE_CHECKING, Any

from homeassistant.core import HomeAssistant, callback
from homeassistant.helpers import entity_registry as er
from homeassistant.helpers.dispatcher import async_dispatcher_send
from homeassistant.helpers.event import async_track_time_interval
from homeassistant.helpers.storage import Store
from homeassistant.util import dt as dt_util

from .api import Capability, DailySpend, MeterCloudError, MeterData
from .const import DOMAIN

if TYPE_CHECKING:
    from .coordinator import MeterCloudCoordinator

_LOGGER = logging.getLogger(__name__)

# Daily money changes slowly and a backend without a batch call pays one request per meter: 4 refreshes a day.
REFRESH = timedelta(hours=6)
CHECK_EVERY = timedelta(minutes=30)
# The longest average; the window asked of the cloud also holds today (for the cost statistic).
WINDOW_DAYS = 30
AVERAGES = (7, 30)
CONCURRENCY = 4
STORAGE_VERSION = 1
SOURCE_CLOUD = "cloud"
SOURCE_RECORDED = "recorded"
HOUR = timedelta(hours=1)
DAY_PLACES = Decimal("0.1")


def foresight_signal(entry_id: str) -> str:
    """Dispatcher signal: the entry's outlooks were refreshed."""
    return f"{DOMAIN}_{entry_id}_foresight"


def midnight(day: date, tz: tzinfo) -> datetime:
    """The start of a day of the vendor's calendar, in UTC."""
    return dt_util.as_utc(datetime.combine(day, time(), tz))


@dataclass(frozen=True, slots=True)
class Outlook:
    """One meter's complete days with a known spend, where they came from, and the day they were computed on."""

    source: str
    today: date
    spend: Mapping[date, Decimal]

    def average(self, days: int) -> Decimal | None:
        """Mean spend of the known days among the `days` complete days before `today`; None when none is known."""
        known = [
            amount
            for back in range(1, days + 1)
            if (amount := self.spend.get(self.today - timedelta(days=back))) is not None
        ]
        return sum(known, Decimal(0)) / len(known) if known else None

    def known_days(self, days: int) -> int:
        """How many of the `days` complete days before `today` have a known spend."""
        return sum(1 for back in range(1, days + 1) if self.today - timedelta(days=back) in self.spend)

    def as_dict(self) -> dict[str, Any]:
        """The stored form."""
        days = {day.isoformat(): str(amount) for day, amount in sorted(self.spend.items())}
        return {"source": self.source, "today": self.today.isoformat(), "spend": days}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Outlook:
        """Back from the stored form."""
        spend = {date.fromisoformat(day): Decimal(amount) for day, amount in data["spend"].items()}
        return cls(str(data["source"]), date.fromisoformat(data["today"]), spend)


@dataclass(frozen=True, slots=True)
class Forecast:
    """What the sensors show for one meter now."""

    spend_7d: Decimal | None
    spend_30d: Decimal | None
    days_left: Decimal | None
    runs_out: datetime | None


def forecast(outlook: Outlook | None, meter: MeterData | None, places: int) -> Forecast:
    """Averages from the outlook; days left and the run-out time from the meter's balance now.

    Days left is the balance over the 7-day average (0 once the balance is gone): unknown without a balance, without
    an average or with no spend at all (credit that is not used never runs out). Counted from the balance's reading
    time, so the run-out time stays put between polls when nothing was used.
    """
    money = Decimal(1).scaleb(-places)
    average = outlook.average(AVERAGES[0]) if outlook else None
    longer = outlook.average(AVERAGES[1]) if outlook else None
    balance = meter.balance if meter else None
    days_left: Decimal | None = None
    runs_out: datetime | None = None
    if balance is not None and balance <= 0:
        days_left = Decimal(0)
    elif balance is not None and average:
        days_left = (balance / average).quantize(DAY_PLACES, rounding=ROUND_DOWN)
    if days_left is not None:
        since = meter.reading_time if meter and meter.reading_time else dt_util.utcnow()
        runs_out = (since + timedelta(days=float(days_left))).replace(second=0, microsecond=0)
    return Forecast(
        spend_7d=None if average is None else average.quantize(money, rounding=ROUND_HALF_UP),
        spend_30d=None if longer is None else longer.quantize(money, rounding=ROUND_HALF_UP),
        days_left=days_left,
        runs_out=runs_out,
    )


def recorded_spend(rows: Sequence[Mapping[str, Any]], tz: tzinfo, first: date, last: date) -> dict[date, Decimal]:
    """Daily spend from a balance's hourly statistic rows (start, state): the sum of its falls within each day.

    A day counts only when the balance is known at both its ends (a row in the hour before its start and one in its
    last hour); a rise is a recharge and adds nothing (the fall within a recharge's own hour is lost with it).
    """
    points = sorted(
        (datetime.fromtimestamp(float(row["start"]), dt_util.UTC), Decimal(str(row["state"])))
        for row in rows
        if row.get("state") is not None
    )
    starts = [start for start, _ in points]

    def closing(boundary: datetime) -> int | None:
        """Index of the row whose hour ends at `boundary` (or the last one within the hour before it)."""
        index = bisect_left(starts, boundary) - 1
        return index if index >= 0 and starts[index] >= boundary - HOUR else None

    spend: dict[date, Decimal] = {}
    day = first
    while day <= last:
        following = day + timedelta(days=1)
        opening, close = closing(midnight(day, tz)), closing(midnight(following, tz))
        if opening is not None and close is not None:
            chain = [state for _, state in points[opening : close + 1]]
            spend[day] = sum((max(Decimal(0), a - b) for a, b in pairwise(chain)), Decimal(0))
        day = following
    return spend


async def async_remove_stored(hass: HomeAssistant, entry_id: str) -> None:
    """Delete an entry's stored outlooks (the entry is removed)."""
    await Store[dict[str, Any]](hass, STORAGE_VERSION, _store_key(entry_id)).async_remove()


def _store_key(entry_id: str) -> str:
    return f"{DOMAIN}.foresight.{entry_id}"


class Foresight:
    """The entry's outlooks, refreshed a few times a day and kept across restarts."""

    def __init__(self, hass: HomeAssistant, coordinator: MeterCloudCoordinator) -> None:
        """Nothing is read until async_start."""
        self.hass, self.coordinator = hass, coordinator
        entry_id = coordinator.config_entry.entry_id
        self._store: Store[dict[str, Any]] = Store(hass, STORAGE_VERSION, _store_key(entry_id))
        self.outlooks: dict[str, Outlook] = {}
        self.refreshed: datetime | None = None
        self._lock = asyncio.Lock()

    def outlook(self, meter_id: str) -> Outlook | None:
        """A meter's outlook, if one was computed."""
        return self.outlooks.get(meter_id)

    def forecast(self, meter_id: str) -> Forecast:
        """What a meter's foresight sensors show now."""
        meter = (self.coordinator.data or {}).get(meter_id)
        return forecast(self.outlooks.get(meter_id), meter, self.coordinator.client.money_places)

    def meters(self) -> list[MeterData]:
        """The meters that hold money."""
        client = self.coordinator.client
        return [m for m in (self.coordinator.data or {}).values() if "balance" in client.fields_for(m)]

    async def async_start(self) -> None:
        """Load the stored outlooks; refresh now when they are due, then check every CHECK_EVERY."""
        entry = self.coordinator.config_entry
        stored = await self._store.async_load()
        if stored:
            self.refreshed = datetime.fromisoformat(stored["refreshed"])
            self.outlooks = {meter_id: Outlook.from_dict(data) for meter_id, data in stored["meters"].items()}
            self.async_announce()  # the entities were added before the outlooks were read

        async def check(_now: datetime | None = None) -> None:
            if self.due():
                await self.async_refresh()

        entry.async_create_background_task(self.hass, check(), f"{DOMAIN} foresight {entry.entry_id}")
        entry.async_on_unload(async_track_time_interval(self.hass, check, CHECK_EVERY))

    def due(self) -> bool:
        """Whether the last refresh is older than REFRESH (or there was none)."""
        return self.refreshed is None or dt_util.utcnow() - self.refreshed >= REFRESH

    async def async_refresh(self) -> None:
        """Compute every money meter's outlook, feed the cost statistics, store and show the result."""
        from .costs import async_import_costs  # noqa: PLC0415

        async with self._lock:
            client = self.coordinator.client
            today = dt_util.now(client.tz).date()
            meters = self.meters()
            if client.supports(Capability.DAILY_SPEND):
                fetched = await self._from_cloud(meters, today)
                outlooks = {
                    meter_id: Outlook(SOURCE_CLOUD, today, {s.day: s.amount for s in spends if s.day < today})
                    for meter_id, spends in fetched.items()
                }
                await async_import_costs(self.hass, self.coordinator, fetched, today)
            else:
                outlooks = await self._from_recorder(meters, today)
            known = {m.meter_id for m in meters}
            self.outlooks = {k: v for k, v in {**self.outlooks, **outlooks}.items() if k in known}
            self.refreshed = dt_util.utcnow()
            await self._store.async_save(
                {
                    "refreshed": self.refreshed.isoformat(),
                    "meters": {meter_id: o.as_dict() for meter_id, o in self.outlooks.items()},
                }
            )
        self.async_announce()

    @callback
    def async_announce(self) -> None:
        """Tell the foresight entities to show what they know now."""
        async_dispatcher_send(self.hass, foresight_signal(self.coordinator.config_entry.entry_id))

    async def _from_cloud(self, meters: list[MeterData], today: date) -> dict[str, list[DailySpend]]:
        """Each meter's daily money of the window and today, a few requests at a time; a failure keeps the old."""
        client, semaphore = self.coordinator.client, asyncio.Semaphore(CONCURRENCY)
        start = today - timedelta(days=WINDOW_DAYS)
        fetched: dict[str, list[DailySpend]] = {}

        async def one(meter: MeterData) -> None:
            async with semaphore:
                try:
                    fetched[meter.meter_id] = await client.async_daily_spend(meter, start, today)
                except MeterCloudError as err:
                    _LOGGER.debug("Daily spend of %s not read this time: %s", meter.meter_id, err)

        await asyncio.gather(*(one(meter) for meter in meters))
        return fetched

    async def _from_recorder(self, meters: list[MeterData], today: date) -> dict[str, Outlook]:
        """Each meter's daily spend from its Balance sensor's hourly statistic, in one query for all of them."""
        if "recorder" not in self.hass.config.components:
            return {}
        from homeassistant.components.recorder import get_instance  # noqa: PLC0415
        from homeassistant.components.recorder.statistics import statistics_during_period  # noqa: PLC0415

        registry, coordinator = er.async_get(self.hass), self.coordinator
        sensors: dict[str, str] = {}
        for meter in meters:
            unique_id = f"{coordinator.device_key(meter.meter_id)}_balance"
            if (entity_id := registry.async_get_entity_id("sensor", DOMAIN, unique_id)) is not None:
                sensors[entity_id] = meter.meter_id
        if not sensors:
            return {}
        tz, first = coordinator.client.tz, today - timedelta(days=WINDOW_DAYS)
        found = await get_instance(self.hass).async_add_executor_job(
            statistics_during_period,
            self.hass,
            midnight(first, tz) - HOUR,
            midnight(today, tz),
            set(sensors),
            "hour",
            None,
            {"state"},
        )
        return {
            meter_id: Outlook(SOURCE_RECORDED, today, recorded_spend(found.get(entity_id, []), tz, first, today))
            for entity_id, meter_id in sensors.items()
        }
