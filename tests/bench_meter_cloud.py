"""Benchmark (not a test: nothing here asserts a time). Run with scripts/bench.

For each backend and 10/100/1000 simulated meters: requests per poll cycle, CPU time per poll,
push-to-state latency.
The simulator runs in its own process so the CPU figures are Home Assistant's side only.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from homeassistant.core import Event, HomeAssistant, callback
from homeassistant.helpers import entity_registry as er
from pytest_homeassistant_custom_component.common import MockConfigEntry

from custom_components.meter_cloud.api import BACKENDS
from custom_components.meter_cloud.const import DOMAIN
from simulator.cangnan import CangnanSimulator
from simulator.goldcard import GoldcardSimulator
from simulator.iotmeter import IotMeterSimulator

ROOT = Path(__file__).parent.parent
SIZES = [int(n) for n in os.environ.get("BENCH_SIZES", "10,100,1000").split(",")]
BACKEND_NAMES = os.environ.get("BENCH_BACKENDS", "goldcard,cangnan,iotmeter").split(",")
POLLS = 5
PUSHES = 30
RESULTS: list[str] = []
# Measure what a real installation runs: the entities a new install enables.
pytestmark = pytest.mark.default_entities


def _decimal(text: str) -> Decimal | None:
    """A state as a Decimal; None for unknown/unavailable."""
    try:
        return Decimal(text)
    except ArithmeticError:
        return None


def free_port() -> int:
    """A free loopback port."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def wait_ready(url: str) -> None:
    """Wait until the simulator answers."""
    async with aiohttp.ClientSession() as session:
        for _ in range(200):
            try:
                async with session.get(f"{url}/_sim/state") as resp:
                    if resp.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.05)
    raise RuntimeError("simulator did not start")


@pytest.fixture(autouse=True)
def auto_enable_custom_integrations(enable_custom_integrations: None) -> None:
    """Load custom_components/."""


def _entry_data(backend: str, base: str, meters: int) -> tuple[dict[str, Any], Any, str, str]:
    """Entry data, a local twin of the simulator (same seed: same meters, used to sign pushes), push path."""
    if backend == "goldcard":
        gold = GoldcardSimulator(meters=meters)
        data = {
            "base_url": base,
            "app_code": gold.app_code,
            "app_secret": gold.app_secret,
            "company_code": gold.company_code,
            "factor_no": gold.factor_no,
        }
        return data, gold, "api/collect/meter/2001", "readNum"
    if backend == "iotmeter":
        iot = IotMeterSimulator(meters=meters, rtus=0, command_delay=3600)
        data = {
            "data_url": base,
            "company_no": iot.company_no,
            "data_api_key": iot.data_api_key,
            "control_url": base,
            "login_name": iot.login_name,
            "password": iot.password,
        }
        return data, iot, "api/Data/MeterData/Add", "std_sum"
    cang = CangnanSimulator(meters=meters, command_delay=3600)
    data = {
        "base_url": base,
        "app_token": cang.app_token,
        "app_secret": cang.app_secret,
        "data_from": cang.data_from,
        "billing_side": "meter",
        "meters": "\n".join(f"{m.user_id}:{m.meter_id}" for m in cang.meters.values()),
    }
    return data, cang, "reading", "Reading"


@pytest.mark.parametrize("backend", BACKEND_NAMES)
@pytest.mark.parametrize("meters", SIZES)
async def test_bench(
    hass: HomeAssistant, socket_enabled: None, hass_client_no_auth: Any, backend: str, meters: int
) -> None:
    """Measure one backend at one size and print the figures."""
    port = free_port()
    sim_proc = subprocess.Popen(  # noqa: ASYNC220, S603
        [
            sys.executable,
            "-m",
            "simulator",
            backend,
            "--port",
            str(port),
            "--meters",
            str(meters),
            "--tick-seconds",
            "0",
        ],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        await wait_ready(base)
        fields, local, push_path, reading_key = _entry_data(backend, base, meters)
        data = {"backend": backend, **fields, "push_id": "bench-push-id"}
        client_cls = BACKENDS[backend].client
        assert client_cls is not None
        entry = MockConfigEntry(domain=DOMAIN, data=data, unique_id=client_cls.unique_id(data))
        entry.add_to_hass(hass)
        started = time.perf_counter()
        assert await hass.config_entries.async_setup(entry.entry_id)
        await hass.async_block_till_done()
        setup_seconds = time.perf_counter() - started
        coordinator = entry.runtime_data
        first_requests = coordinator.requests_last_poll

        cpu, wall = [], []
        for _ in range(POLLS):
            c0, w0 = time.process_time(), time.perf_counter()
            await coordinator.async_refresh()
            await hass.async_block_till_done()
            cpu.append(time.process_time() - c0)
            wall.append(time.perf_counter() - w0)
        steady_requests = coordinator.requests_last_poll

        client = await hass_client_no_auth()
        latencies = []
        meter_nos = list(local.meters)
        for index in range(PUSHES):
            meter_no = meter_nos[index % len(meter_nos)]
            local.tick(15 * (index + 1))
            push_body = local.reading_body(meter_no)
            if backend == "iotmeter":  # the platform authenticates with its key headers, not a signature
                headers = {"company_no": local.company_no, "data_api_key": local.data_api_key}
                body = json.dumps(push_body).encode()
            else:
                headers, body = local.signed_push(push_path, push_body)
            wanted = str(Decimal(str(push_body[reading_key])))
            eid = er.async_get(hass).async_get_entity_id("sensor", DOMAIN, f"{backend}_{meter_no}_reading")
            assert eid is not None
            applied = asyncio.Event()

            @callback
            def on_change(event: Event, eid: str = eid, wanted: str = wanted, applied: asyncio.Event = applied) -> None:
                state = event.data["new_state"]
                if event.data["entity_id"] == eid and state is not None and _decimal(state.state) == Decimal(wanted):
                    applied.set()

            unsub = hass.bus.async_listen("state_changed", on_change)
            t0 = time.perf_counter()
            resp = await client.post(f"/api/meter_cloud/push/bench-push-id/{push_path}", data=body, headers=headers)
            assert resp.status == 200
            if _decimal(hass.states.get(eid).state) != Decimal(wanted):  # already equal when the meter used no gas
                await asyncio.wait_for(applied.wait(), 10)
            latencies.append(time.perf_counter() - t0)
            unsub()
        latencies.sort()
        RESULTS.append(
            f"| {backend} | {meters} | {first_requests} | {steady_requests} | {statistics.median(cpu) * 1000:.1f} | "
            f"{statistics.median(wall) * 1000:.1f} | {statistics.median(latencies) * 1000:.1f} | "
            f"{latencies[int(len(latencies) * 0.95) - 1] * 1000:.1f} | {setup_seconds:.1f} |"
        )
        await hass.config_entries.async_unload(entry.entry_id)
    finally:
        sim_proc.terminate()
        sim_proc.wait(10)
    if (meters, backend) == (SIZES[-1], BACKEND_NAMES[-1]):
        header = (
            "| backend | meters | requests, first poll | requests per poll | CPU ms per poll | wall ms per poll "
            "| push→state ms (median) | push→state ms (p95) | setup s |\n|---|---|---|---|---|---|---|---|---|"
        )
        sys.stdout.write("\n\n" + header + "\n" + "\n".join(RESULTS) + "\n")
