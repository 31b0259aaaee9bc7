"""Fixtures: the Goldcard simulator on loopback and a configured entry against it."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Generator
from datetime import datetime, timedelta
from typing import Any
from unittest.mock import PropertyMock, patch

import pytest
from aiohttp.test_utils import TestClient, TestServer
from freezegun.api import FrozenDateTimeFactory
from homeassistant.core import HomeAssistant
from pytest_homeassistant_custom_component.common import MockConfigEntry

from custom_components.meter_cloud.api import CangnanClient, GoldcardClient, IotMeterClient, KumirClient
from custom_components.meter_cloud.const import DOMAIN
from simulator.cangnan import CangnanSimulator
from simulator.goldcard import DEFAULT_TZ as SHANGHAI
from simulator.goldcard import GoldcardSimulator
from simulator.iotmeter import IotMeterSimulator
from simulator.kumir import KumirSimulator

PUSH_ID = "test-push-id-0123456789abcdef"
CN_PUSH_ID = "cangnan-push-id-0123456789abcdef"
IOT_PUSH_ID = "iotmeter-push-id-0123456789abcdef"


@pytest.fixture(autouse=True)
def auto_enable_custom_integrations(enable_custom_integrations: None) -> None:
    """Load custom_components/ in every test."""


@pytest.fixture
def vendor_morning(freezer: FrozenDateTimeFactory) -> FrozenDateTimeFactory:
    """The clock moved forward to the Chinese vendors' next 10:10 (02:10 UTC, Moscow's 05:10) and frozen there: a
    test's hour of waiting then crosses no vendor's midnight and no hour, whatever time CI runs it at."""
    now = datetime.now(SHANGHAI)
    morning = now.replace(hour=10, minute=10, second=0, microsecond=0)
    freezer.move_to(morning if morning > now else morning + timedelta(days=1))
    return freezer


@pytest.fixture(autouse=True)
def all_entities_enabled(request: pytest.FixtureRequest) -> Generator[None]:
    """Enable the entities that are off by default, so tests see every value (not for `default_entities`)."""
    if request.node.get_closest_marker("default_entities"):
        yield
        return
    with patch(
        "homeassistant.helpers.entity.Entity.entity_registry_enabled_default",
        new_callable=PropertyMock,
        return_value=True,
    ):
        yield


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


@pytest.fixture
async def cn_sim(socket_enabled: None) -> AsyncGenerator[CangnanSimulator]:
    """A Cangnan simulator (meter-side billing); commands finish only when a test calls settle()."""
    simulator = CangnanSimulator(meters=3, command_delay=3600)
    yield simulator
    await simulator.close()


@pytest.fixture
async def cn_server(cn_sim: CangnanSimulator, aiohttp_server: Any) -> TestServer:
    """The Cangnan simulator served on 127.0.0.1."""
    server: TestServer = await aiohttp_server(cn_sim.app, host="127.0.0.1")
    return server


def cangnan_data(sim: CangnanSimulator, server: TestServer, **extra: str) -> dict[str, Any]:
    """Entry data for a Cangnan account on the simulator, following all its meters."""
    return {
        "backend": "cangnan",
        "base_url": str(server.make_url("")).rstrip("/"),
        "app_token": sim.app_token,
        "app_secret": sim.app_secret,
        "data_from": sim.data_from,
        "billing_side": sim.billing_mode,
        "meters": "\n".join(f"{m.user_id}:{m.meter_id}" for m in sim.meters.values()),
        "push_id": CN_PUSH_ID,
        **extra,
    }


@pytest.fixture
async def cn_entry(hass: HomeAssistant, cn_sim: CangnanSimulator, cn_server: TestServer) -> MockConfigEntry:
    """A Cangnan entry, set up against the simulator."""
    data = cangnan_data(cn_sim, cn_server)
    entry = MockConfigEntry(domain=DOMAIN, title="Cangnan test", data=data, unique_id=CangnanClient.unique_id(data))
    entry.add_to_hass(hass)
    assert await hass.config_entries.async_setup(entry.entry_id)
    await hass.async_block_till_done()
    return entry


@pytest.fixture
async def cn_push(
    hass: HomeAssistant, cn_entry: MockConfigEntry, hass_client_no_auth: Any, cn_sim: CangnanSimulator
) -> TestClient:
    """Home Assistant's HTTP app as the simulator's push target."""
    client: TestClient = await hass_client_no_auth()
    cn_sim.push_url = str(client.make_url(f"/api/meter_cloud/push/{CN_PUSH_ID}")).rstrip("/")
    return client


@pytest.fixture
async def iot_sim(socket_enabled: None) -> AsyncGenerator[IotMeterSimulator]:
    """An IoT platform simulator: 3 meters and an RTU; commands move only when a test says so."""
    simulator = IotMeterSimulator(meters=3, rtus=1, command_delay=3600)
    yield simulator
    await simulator.close()


@pytest.fixture
async def iot_server(iot_sim: IotMeterSimulator, aiohttp_server: Any) -> TestServer:
    """The IoT simulator served on 127.0.0.1 (data and control API on one server)."""
    server: TestServer = await aiohttp_server(iot_sim.app, host="127.0.0.1")
    return server


def iot_data(sim: IotMeterSimulator, server: TestServer, *, control: bool = True) -> dict[str, Any]:
    """Entry data for the IoT platform simulator."""
    base = str(server.make_url("")).rstrip("/")
    data: dict[str, Any] = {
        "backend": "iotmeter",
        "data_url": base,
        "company_no": sim.company_no,
        "data_api_key": sim.data_api_key,
        "push_id": IOT_PUSH_ID,
    }
    if control:
        data |= {"control_url": base, "login_name": sim.login_name, "password": sim.password}
    return data


@pytest.fixture
async def iot_entry(hass: HomeAssistant, iot_sim: IotMeterSimulator, iot_server: TestServer) -> MockConfigEntry:
    """An IoT platform entry with control credentials, set up against the simulator."""
    data = iot_data(iot_sim, iot_server)
    entry = MockConfigEntry(domain=DOMAIN, title="IoT test", data=data, unique_id=IotMeterClient.unique_id(data))
    entry.add_to_hass(hass)
    assert await hass.config_entries.async_setup(entry.entry_id)
    await hass.async_block_till_done()
    return entry


@pytest.fixture
async def iot_push(
    hass: HomeAssistant, iot_entry: MockConfigEntry, hass_client_no_auth: Any, iot_sim: IotMeterSimulator
) -> TestClient:
    """Home Assistant's HTTP app as the IoT simulator's push target."""
    client: TestClient = await hass_client_no_auth()
    iot_sim.push_url = str(client.make_url(f"/api/meter_cloud/push/{IOT_PUSH_ID}")).rstrip("/")
    return client


KUMIR_PUSH_ID = "kumir-push-id-not-used-by-the-vendor"
KUMIR_TZ = "Europe/Moscow"


@pytest.fixture
async def kumir_sim(socket_enabled: None, request: pytest.FixtureRequest) -> AsyncGenerator[KumirSimulator]:
    """A KUMIR-RESURS simulator: six default nodes (m234, ce303, tv7, ek270, pulsar, m230) or a kumir_nodes mark's."""
    marker = request.node.get_closest_marker("kumir_nodes")
    simulator = KumirSimulator(nodes=marker.args[0]) if marker else KumirSimulator()
    yield simulator
    await simulator.close()


@pytest.fixture
async def kumir_server(kumir_sim: KumirSimulator, aiohttp_server: Any) -> TestServer:
    """The KUMIR-RESURS simulator served on 127.0.0.1."""
    server: TestServer = await aiohttp_server(kumir_sim.app, host="127.0.0.1")
    return server


def kumir_data(sim: KumirSimulator, server: TestServer, **extra: Any) -> dict[str, Any]:
    """Entry data for the KUMIR-RESURS simulator, following every node it has."""
    data: dict[str, Any] = {
        "backend": "kumir",
        "base_url": str(server.make_url("")).rstrip("/"),
        "login": sim.login,
        "login_password": sim.password,
        "nodes": "\n".join(f"{node.code} {node.num} {node.dev}" for node in sim.nodes.values()),
        "systems": "1, 2, 3, 4, 5, 6",
        "archives": ["hour", "day", "total"],
        "transport": "raw",
        "time_zone": KUMIR_TZ,
        "backfill_days": 3,
        "push_id": KUMIR_PUSH_ID,
    }
    return data | extra


@pytest.fixture
def kumir_entry_data(kumir_sim: KumirSimulator, kumir_server: TestServer) -> dict[str, Any]:
    """Entry data of the default KUMIR-RESURS entry (tests may change it before setup)."""
    return kumir_data(kumir_sim, kumir_server)


@pytest.fixture
async def kumir_entry(hass: HomeAssistant, kumir_entry_data: dict[str, Any]) -> MockConfigEntry:
    """A KUMIR-RESURS entry set up against the simulator."""
    entry = MockConfigEntry(
        domain=DOMAIN, title="KUMIR test", data=kumir_entry_data, unique_id=KumirClient.unique_id(kumir_entry_data)
    )
    entry.add_to_hass(hass)
    assert await hass.config_entries.async_setup(entry.entry_id)
    await hass.async_block_till_done()
    return entry
