"""Benchmark (not a test: nothing here asserts a time). Run with scripts/bench.

For each backend and 10/100/1000 simulated meters: requests per poll cycle, CPU time per poll,
push-to-state latency (KUMIR-RESURS never pushes: no latency for it).
The simulator runs in its own process so the CPU figures are Home Assistant's side only.
For KUMIR-RESURS also: parsing an export answer of 1000 node-days of hourly archive
(BENCH_KUMIR_PARSE=50x20,1000x1 nodes x days), lxml alone and the whole parse_export.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import socket
import statistics
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from homeassistant.core import Event, HomeAssistant, callback
from homeassistant.helpers import entity_registry as er
from lxml import etree
from pytest_homeassistant_custom_component.common import MockConfigEntry

from custom_components.meter_cloud.api import BACKENDS
from custom_components.meter_cloud.api.kumir import archive, xmlsafe
from custom_components.meter_cloud.api.kumir.client import MAX_EXPORT_BYTES, MAX_RECORDS_PER_EXPORT
from custom_components.meter_cloud.const import DOMAIN
from simulator.cangnan import CangnanSimulator
from simulator.goldcard import GoldcardSimulator
from simulator.iotmeter import IotMeterSimulator
from simulator.kumir import DEFAULT_TZ, KIND_ORDER, KINDS, XML_HEAD, ExportQuery, KumirSimulator

ROOT = Path(__file__).parent.parent
SIZES = [int(n) for n in os.environ.get("BENCH_SIZES", "10,100,1000").split(",")]
BACKEND_NAMES = os.environ.get("BENCH_BACKENDS", "goldcard,cangnan,iotmeter,kumir").split(",")
POLLS = 5
PUSHES = 30
RESULTS: list[str] = []
# Backends whose cloud never calls Home Assistant: polls only, no push latency.
NO_PUSH = {"kumir"}
# KUMIR-RESURS export answers to parse: NODESxDAYS of hourly archive, every system of each node.
KUMIR_PARSE = [
    tuple(int(part) for part in shape.split("x"))
    for shape in os.environ.get("BENCH_KUMIR_PARSE", "50x20,1000x1").split(",")
    if shape and "kumir" in BACKEND_NAMES
]
PARSE_RUNS = int(os.environ.get("BENCH_PARSE_RUNS", "7"))
PARSE_RESULTS: list[str] = []
POLL_NOTES: list[str] = []
PARSE_NOTES: list[str] = []
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


def _sim_command(backend: str, port: int, meters: int) -> list[str]:
    """The simulator's command line: `meters` meters (KUMIR: nodes, cycling through its device types), no ticking."""
    count = "--nodes" if backend == "kumir" else "--meters"
    return [sys.executable, "-m", "simulator", backend, "--port", str(port), count, str(meters), "--tick-seconds", "0"]


def _entry_data(backend: str, base: str, meters: int) -> tuple[dict[str, Any], Any, str, str]:
    """Entry data, a local twin of the simulator (same seed: same meters, used to sign pushes), push path."""
    if backend == "kumir":
        kumir = KumirSimulator(nodes=meters)
        data = {
            "base_url": base,
            "login": kumir.login,
            "login_password": kumir.password,
            "nodes": "\n".join(f"{node.code} {node.num} {node.dev}" for node in kumir.nodes.values()),
            "systems": "1, 2, 3, 4, 5, 6",
            "archives": ["hour", "day", "total"],
            "transport": "raw",
            "time_zone": str(kumir.tz),
            "backfill_days": 3,
        }
        return data, kumir, "", ""
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
        _sim_command(backend, port, meters),
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

        if backend == "kumir":
            registry = er.async_get(hass)
            entities = er.async_entries_for_config_entry(registry, entry.entry_id)
            enabled = sum(e.disabled_by is None for e in entities)
            POLL_NOTES.append(f"kumir, {meters} nodes: {enabled} of {len(entities)} entities enabled")
        client = await hass_client_no_auth()
        latencies = []
        meter_nos = list(local.meters)
        for index in range(0 if backend in NO_PUSH else PUSHES):
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
        if latencies:
            push = f"{statistics.median(latencies) * 1000:.1f} | {latencies[int(len(latencies) * 0.95) - 1] * 1000:.1f}"
        else:
            push = "— | —"  # never pushes
        RESULTS.append(
            f"| {backend} | {meters} | {first_requests} | {steady_requests} | {statistics.median(cpu) * 1000:.1f} | "
            f"{statistics.median(wall) * 1000:.1f} | {push} | {setup_seconds:.1f} |"
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
        notes = "".join(f"\n{note}" for note in POLL_NOTES)
        sys.stdout.write("\n\n" + header + "\n" + "\n".join(RESULTS) + "\n" + notes + "\n")


def kumir_export(nodes: int, days: int) -> tuple[bytes, int, int]:
    """An export answer of the simulator: `days` days of hourly archive of `nodes` nodes, every system of each.

    The nodes cycle through the simulator's device types (KIND_ORDER: electricity meters with their tariffs, a
    heat meter, a gas corrector, a pulse counter). Returns the document, its records and how many of those are
    nodata (the simulator's collector misses every 37th hour).
    """
    sim = KumirSimulator(nodes=nodes)
    end = sim._now().replace(minute=0, second=0) - timedelta(hours=1)
    begin = end - timedelta(days=days) + timedelta(hours=1)
    document = sim.export_document(ExportQuery(begin, end, ["hour"], [], list(sim.nodes.values())))
    data = (XML_HEAD + ET.tostring(document, encoding="unicode")).encode()
    records = sum(1 for _ in document.iter("r"))
    nodata = sum(1 for r in document.iter("r") if r.findtext("nodata") == "true")
    return data, records, nodata


def _timed(work: Callable[[], Any]) -> tuple[list[float], list[float], Any]:
    """Wall and CPU seconds of PARSE_RUNS runs of `work` (after a collection, so no run pays for the one before)."""
    wall, cpu, result = [], [], None
    for _ in range(PARSE_RUNS):
        result = None
        gc.collect()
        c0, w0 = time.process_time(), time.perf_counter()
        result = work()
        cpu.append(time.process_time() - c0)
        wall.append(time.perf_counter() - w0)
    return wall, cpu, result


@pytest.mark.skipif(not KUMIR_PARSE, reason="kumir not in BENCH_BACKENDS")
@pytest.mark.parametrize(("nodes", "days"), KUMIR_PARSE or [(0, 0)], ids=str)
async def test_bench_kumir_parse(nodes: int, days: int) -> None:
    """Parse one big KUMIR-RESURS export answer: lxml alone, the locked-down parse, and parse_export."""
    data, records, nodata = kumir_export(nodes, days)
    tz = DEFAULT_TZ  # the simulator's zone, in which its `dat` are written
    limit = max(len(data), MAX_EXPORT_BYTES)
    stages: list[tuple[str, Callable[[], Any]]] = [
        ("lxml etree.fromstring", lambda: etree.fromstring(data, parser=xmlsafe.make_parser())),
        ("xmlsafe.parse", lambda: xmlsafe.parse(data, max_bytes=limit)),
        ("archive.parse_export", lambda: archive.parse_export(data, tz, max_bytes=limit)),
    ]
    rows = 0
    for stage, work in stages:
        wall, cpu, result = _timed(work)
        if stage == "archive.parse_export":
            rows = len(result)
        del result
        PARSE_RESULTS.append(
            f"| {nodes}×{days} d | {len(data) / 1e6:.1f} | {records} | {stage} | {min(wall) * 1000:.0f} | "
            f"{statistics.median(wall) * 1000:.0f} | {min(cpu) * 1000:.0f} | {statistics.median(cpu) * 1000:.0f} | "
            f"{statistics.median(wall) / records * 1e6:.1f} |"
        )
    fits = "within" if len(data) <= MAX_EXPORT_BYTES else "OVER"
    PARSE_NOTES.append(
        f"kumir export {nodes} nodes × {days} day{'s' * (days != 1)} (hour archive, all systems): "
        f"{len(data) / 1e6:.1f} MB, {records} records ({nodata} nodata) → {rows} rows; {fits} the client's "
        f"{MAX_EXPORT_BYTES // 2**20} MiB bound; the client cuts exports to ≤ {MAX_RECORDS_PER_EXPORT} records"
    )
    if (nodes, days) == KUMIR_PARSE[-1]:
        header = (
            "| export (nodes × days of hours) | MB | records | stage | wall ms best | wall ms median | CPU ms best "
            "| CPU ms median | µs per record |\n|---|---|---|---|---|---|---|---|---|"
        )
        notes = "".join(f"\n{note}" for note in PARSE_NOTES)
        kinds = ", ".join(f"{kind} ({len(KINDS[kind].systems)} systems)" for kind in KIND_ORDER)
        sys.stdout.write(f"\n\nKUMIR-RESURS export parsing, best/median of {PARSE_RUNS} runs; nodes cycle {kinds}:\n")
        sys.stdout.write(header + "\n" + "\n".join(PARSE_RESULTS) + "\n" + notes + "\n")
