"""Fixtures: the Goldcard simulator on loopback and a configured entry against it."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from homeassistant.core import HomeAssistant
from pytest_homeassistant_custom_component.common import MockConfigEntry

from custom_components.meter_cloud.api import GoldcardClient
from custom_components.meter_cloud.const import DOMAIN
from simulator.goldcard import GoldcardSimulator

PUSH_ID = "test-push-id-0123456789abcdef"


@pytest.fixture(autouse=True)
def auto_enable_custom_integrations(enable_custom_integrations: None) -> None:
    """Load custom_components/ in every test."""


@pytest.fixture
async def sim(socket_enabled: None) -> AsyncGenerator[GoldcardSimulator]:
    """A Goldcard simulator; commands finish only when a test calls settle()."""
    simulator = GoldcardSimulator(meters=3, command_delay=3600)
    yield simulator
    await simulator.close()


@pytest.fixture
async def sim_server(sim: GoldcardSimulator, aiohttp_server: Any) -> TestServer:
    """The simulator served on 127.0.0.1."""
    server: TestServer = await aiohttp_server(sim.app, host="127.0.0.1")
    return server


@pytest.fixture
def entry_data(sim: GoldcardSimulator, sim_server: TestServer) -> dict[str, Any]:
    """Config entry data pointing at the simulator."""
    return {
        "backend": "goldcard",
        "base_url": str(sim_server.make_url("")).rstrip("/"),
        "app_code": sim.app_code,
        "app_secret": sim.app_secret,
        "company_code": sim.company_code,
        "factor_no": sim.factor_no,
        "push_id": PUSH_ID,
    }


@pytest.fixture
def config_entry(hass: HomeAssistant, entry_data: dict[str, Any]) -> MockConfigEntry:
    """The entry, added to hass but not set up."""
    entry = MockConfigEntry(
        domain=DOMAIN,
        title="Goldcard test",
        data=entry_data,
        unique_id=GoldcardClient.unique_id(entry_data),
    )
    entry.add_to_hass(hass)
    return entry


@pytest.fixture
async def setup_entry(hass: HomeAssistant, config_entry: MockConfigEntry) -> MockConfigEntry:
    """The entry, set up against the simulator."""
    assert await hass.config_entries.async_setup(config_entry.entry_id)
    await hass.async_block_till_done()
    return config_entry


@pytest.fixture
async def push_client(
    hass: HomeAssistant, setup_entry: MockConfigEntry, hass_client_no_auth: Any, sim: GoldcardSimulator
) -> TestClient:
    """A client on Home Assistant's HTTP app; the simulator pushes to it over loopback too."""
    client: TestClient = await hass_client_no_auth()
    sim.push_url = str(client.make_url(f"/api/meter_cloud/push/{PUSH_ID}")).rstrip("/")
    return client
