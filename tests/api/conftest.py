"""Fixtures for HTTP-level tests of the API clients against the simulators on loopback."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from custom_components.meter_cloud.api import GoldcardClient, PushError, PushResult
from simulator.goldcard import GoldcardSimulator

from ..timing import LOST_ANSWER_HANG

TZ = ZoneInfo("Asia/Shanghai")


@pytest.fixture
def auto_enable_custom_integrations() -> None:
    """Override the suite-wide autouse fixture: the API layer needs no Home Assistant instance."""


@pytest.fixture
async def sim(socket_enabled: None) -> AsyncGenerator[GoldcardSimulator]:
    """Four meters (every valve state and a tiered price among them); commands wait for settle()."""
    simulator = GoldcardSimulator(meters=4, command_delay=3600, seed=7)
    simulator.hang_seconds = LOST_ANSWER_HANG
    yield simulator
    await simulator.close()


@pytest.fixture
async def sim_server(sim: GoldcardSimulator, aiohttp_server: Any) -> TestServer:
    """The simulator served on 127.0.0.1."""
    server: TestServer = await aiohttp_server(sim.app, host="127.0.0.1")
    return server


@pytest.fixture
async def session() -> AsyncGenerator[aiohttp.ClientSession]:
    """A plain aiohttp session, as Home Assistant would share one."""
    async with aiohttp.ClientSession() as client_session:
        yield client_session


def client_config(sim: GoldcardSimulator, server: TestServer, **overrides: str) -> dict[str, str]:
    """The config-flow fields that point a client at the simulator."""
    config = {
        "base_url": str(server.make_url("")),
        "app_code": sim.app_code,
        "app_secret": sim.app_secret,
        "company_code": sim.company_code,
        "factor_no": sim.factor_no,
    }
    return config | overrides


@pytest.fixture
def client(sim: GoldcardSimulator, sim_server: TestServer, session: aiohttp.ClientSession) -> GoldcardClient:
    """A Goldcard client configured for the simulator, with a short timeout so hangs are quick."""
    goldcard = GoldcardClient(session, client_config(sim, sim_server), tz=TZ)
    goldcard.request_timeout = 5
    return goldcard


@pytest.fixture
async def cis(sim: GoldcardSimulator, client: GoldcardClient, aiohttp_server: Any) -> list[PushResult]:
    """Our side of the pushes: a loopback server answering with client.parse_push; returns what it accepted."""
    accepted: list[PushResult] = []

    async def receive(request: web.Request) -> web.Response:
        try:
            result = client.parse_push(request.path, request.headers, await request.read(), datetime.now(TZ))
        except PushError as err:
            return web.json_response(err.response, status=err.status)
        accepted.append(result)
        return web.json_response(result.response)

    app = web.Application()
    app.router.add_post("/{path:.*}", receive)
    server: TestServer = await aiohttp_server(app, host="127.0.0.1")
    sim.push_url = str(server.make_url(""))
    return accepted


@pytest.fixture
async def serve(socket_enabled: None, aiohttp_server: Any, wire: Any) -> AsyncGenerator[Any]:
    """Serve simulators on 127.0.0.1 behind the module's `wire` recorder; close them afterwards."""
    started: list[Any] = []

    async def start(simulator: Any) -> TestServer:
        app = simulator.make_app()
        app.middlewares.append(wire.middleware())
        started.append(simulator)
        server: TestServer = await aiohttp_server(app, host="127.0.0.1")
        return server

    yield start
    for simulator in started:
        await simulator.close()
