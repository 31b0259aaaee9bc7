"""Push health on evidence: repair issues only when pushes really do not arrive, cleared by the next push."""

from __future__ import annotations

from datetime import timedelta

from aiohttp.test_utils import TestClient
from freezegun.api import FrozenDateTimeFactory
from homeassistant.core import HomeAssistant
from homeassistant.helpers import issue_registry as ir
from pytest_homeassistant_custom_component.common import MockConfigEntry, async_fire_time_changed

from custom_components.meter_cloud.const import DOMAIN
from custom_components.meter_cloud.presence import issue_id as presence_issue
from simulator.goldcard import GoldcardSimulator


def issue(hass: HomeAssistant, key: str, entry: MockConfigEntry) -> ir.IssueEntry | None:
    """One of the entry's push issues, if raised."""
    return ir.async_get(hass).async_get_issue(DOMAIN, f"{key}_{entry.entry_id}")


async def later(hass: HomeAssistant, freezer: FrozenDateTimeFactory, hours: float) -> None:
    """Let time pass (the hourly check and the polls run)."""
    freezer.tick(timedelta(hours=hours))
    async_fire_time_changed(hass)
    await hass.async_block_till_done(wait_background_tasks=True)


async def test_no_external_url_only_after_a_silent_day(
    hass: HomeAssistant, freezer: FrozenDateTimeFactory, setup_entry: MockConfigEntry
) -> None:
    """No issue at start; after 24 h without any push (and no external URL) one appears, showing where the push
    URL will be rather than an internal address; an external URL clears it at the next check."""
    assert issue(hass, "no_external_url", setup_entry) is None
    await later(hass, freezer, 23)
    assert issue(hass, "no_external_url", setup_entry) is None
    await later(hass, freezer, 2)
    raised = issue(hass, "no_external_url", setup_entry)
    assert raised is not None
    url = raised.translation_placeholders["push_url"]
    assert url == f"https://<your-external-address>/api/meter_cloud/push/{setup_entry.data['push_id']}/"
    assert "127.0.0.1" not in url
    await hass.config.async_update(external_url="https://example.duckdns.org")
    await later(hass, freezer, 1)
    assert issue(hass, "no_external_url", setup_entry) is None


async def test_pushes_over_the_lan_raise_nothing(
    hass: HomeAssistant,
    freezer: FrozenDateTimeFactory,
    push_client: TestClient,
    sim: GoldcardSimulator,
    setup_entry: MockConfigEntry,
) -> None:
    """Pushes arrive although Home Assistant has no external URL (LAN, tunnel): no issue, ever."""
    meter_no = next(iter(sim.meters))
    for _ in range(3):
        await later(hass, freezer, 10)
        sim.tick(60)
        status, _ = await sim.push_reading(meter_no)
        assert status == 200
    await later(hass, freezer, 20)
    assert issue(hass, "no_external_url", setup_entry) is None
    assert issue(hass, "pushes_stopped", setup_entry) is None


async def test_pushes_stopped_while_polls_show_newer_readings(
    hass: HomeAssistant,
    freezer: FrozenDateTimeFactory,
    push_client: TestClient,
    sim: GoldcardSimulator,
    setup_entry: MockConfigEntry,
) -> None:
    """Pushes came, then none for a day while the meters kept reading: 'pushes stopped' with the push URL; the
    next push clears it. A day without pushes and without newer readings is just a quiet day."""
    meter_no = next(iter(sim.meters))
    sim.tick(60)
    assert (await sim.push_reading(meter_no))[0] == 200
    await later(hass, freezer, 25)  # a quiet day: the meters read nothing new
    assert issue(hass, "pushes_stopped", setup_entry) is None
    sim.tick(60)  # the meter reads on; the vendor pushes nothing
    await setup_entry.runtime_data.async_refresh()
    await later(hass, freezer, 1)
    raised = issue(hass, "pushes_stopped", setup_entry)
    assert raised is not None
    assert raised.translation_placeholders["last_push"]
    assert f"/api/meter_cloud/push/{setup_entry.data['push_id']}/" in raised.translation_placeholders["push_url"]
    assert issue(hass, "no_external_url", setup_entry) is None
    assert (await sim.push_reading(meter_no))[0] == 200
    await hass.async_block_till_done()
    assert issue(hass, "pushes_stopped", setup_entry) is None


async def test_a_backend_that_never_pushes_has_no_push_issue(
    hass: HomeAssistant, freezer: FrozenDateTimeFactory, kumir_entry: MockConfigEntry
) -> None:
    """KUMIR-RESURS never pushes: two silent days raise nothing."""
    await later(hass, freezer, 50)
    assert issue(hass, "no_external_url", kumir_entry) is None
    assert issue(hass, "pushes_stopped", kumir_entry) is None


async def test_a_removed_entry_takes_its_issues_along(
    hass: HomeAssistant, freezer: FrozenDateTimeFactory, setup_entry: MockConfigEntry, sim: GoldcardSimulator
) -> None:
    """Deleting the entry leaves no repair issue behind (Repairs would otherwise show it for good)."""
    await later(hass, freezer, 25)
    assert issue(hass, "no_external_url", setup_entry) is not None
    # A meter's issue names the entry and the meter (presence, tariff layouts): it goes as well.
    missing = presence_issue(setup_entry.entry_id, next(iter(sim.meters)))
    ir.async_create_issue(
        hass, DOMAIN, missing, is_fixable=True, severity=ir.IssueSeverity.WARNING, translation_key="meter_missing"
    )
    ir.async_create_issue(  # one of another entry stays
        hass,
        DOMAIN,
        "no_external_url_another",
        is_fixable=False,
        severity=ir.IssueSeverity.WARNING,
        translation_key="no_external_url",
    )
    assert await hass.config_entries.async_remove(setup_entry.entry_id)
    await hass.async_block_till_done()
    left = [issue_id for domain, issue_id in ir.async_get(hass).issues if domain == DOMAIN]
    assert left == ["no_external_url_another"]
