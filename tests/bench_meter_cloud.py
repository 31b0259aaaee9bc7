"""Benchmark (not a test: nothing here asserts a time). Run with scripts/bench.

For each backend and 10/100/1000 simulated meters: requests per poll cycle, CPU time per poll,
push-to-state latency (KUMIR-RESURS never pushes: no latency for it).
The simulator runs in its own process so the CPU figures are Home Assistant's side only.
For KUMIR-RESURS also: parsing an export answer of 1000 node-days of hourly archive
(BENCH_KUMIR_PARSE=50x20,1000x1 nodes x days), lxml alone, lxml and reading every tag and text (the floor of any
reader of its tree) and the whole parse_export. Each changed poll's floor too: fetching and decoding its answers
alone, from a stand-in cloud in its own process that answers with the recorded bytes (tests/bench_replay.py).
"""

from __future__ import annotations

import asyncio
import base64
import cProfile
import gc
import json
import logging
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from unittest.mock import patch

import aiohttp
import orjson
import pytest
from homeassistant.core import Event, HomeAssistant, callback
from homeassistant.helpers import device_registry as dr
from homeassistant.helpers import entity_registry as er
from homeassistant.helpers.aiohttp_client import async_get_clientsession
from homeassistant.helpers.entity import Entity
from lxml import etree
from pytest_homeassistant_custom_component.common import MockConfigEntry, flush_store

from custom_components.meter_cloud.api import BACKENDS, http
from custom_components.meter_cloud.api import iotmeter as iotmeter_api
from custom_components.meter_cloud.api.kumir import archive, xmlsafe
from custom_components.meter_cloud.api.kumir import session as kumir_session
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
# "10% changed": polls after the simulator ticked every tenth meter (a different tenth each time).
CHANGED_POLLS = 3
# Push throughput: this many pushes, PUSH_IN_FLIGHT at a time, over loopback HTTP.
PUSH_LOAD = int(os.environ.get("BENCH_PUSH_LOAD", "3000"))
PUSH_IN_FLIGHT = 8
# Targets (issue 15): a poll's CPU against the raw parse of its answers, parse_export against lxml, pushes/s.
POLL_TARGET = 2.0
# The poll targets are set for an account of this many meters (issue 15); smaller ones are shown, not judged.
POLL_TARGET_METERS = 1000
PARSE_TARGET = 2.0
PUSH_TARGET = 1000.0
RESULTS: list[str] = []
COST_RESULTS: list[str] = []
PUSH_RESULTS: list[str] = []
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
# BENCH_PROFILE=DIR: cProfile of the loop thread over the steady polls and the push load, one file per phase.
PROFILE_DIR = os.environ.get("BENCH_PROFILE")
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


def _holds(ok: bool, meters: int | None = None) -> str:
    """Whether a target holds; "—" for a poll of another size than the one the poll targets are set for."""
    if meters is not None and meters != POLL_TARGET_METERS:
        return "—"
    return "yes" if ok else "**no**"


@contextmanager
def counted_writes() -> Iterator[list[float]]:
    """Every entity state write Home Assistant makes while inside, as the CPU seconds of the loop's thread it took."""
    original = Entity._async_write_ha_state
    spent: list[float] = []

    def counting(self: Entity) -> None:
        t0 = time.thread_time()
        original(self)
        spent.append(time.thread_time() - t0)

    with patch.object(Entity, "_async_write_ha_state", counting):
        yield spent


@contextmanager
def profiled(name: str) -> Iterator[None]:
    """With BENCH_PROFILE set, the loop thread's profile while inside, to BENCH_PROFILE/name.prof."""
    if not PROFILE_DIR:
        yield
        return
    profile = cProfile.Profile()
    profile.enable()
    try:
        yield
    finally:
        profile.disable()
        Path(PROFILE_DIR).mkdir(parents=True, exist_ok=True)
        profile.dump_stats(Path(PROFILE_DIR) / f"{name}.prof")


type Call = tuple[bytes, dict[str, str], bytes]


@contextmanager
def captured_calls() -> Iterator[list[Call]]:
    """Every POST the clients make while inside (api/http.py's post_raw, however imported): its body (b"" for a
    form), its headers and the answer's body."""
    original = http.post_raw
    calls: list[Call] = []

    async def capturing(session: aiohttp.ClientSession, url: str, body: Any, **kwargs: Any) -> http.RawAnswer:
        answer = await original(session, url, body, **kwargs)
        calls.append((body if isinstance(body, bytes) else b"", dict(kwargs.get("headers") or {}), answer.body))
        return answer

    with ExitStack() as stack:
        for module in (http, iotmeter_api, kumir_session):
            stack.enter_context(patch.object(module, "post_raw", capturing))
        yield calls


def _decode(body: bytes) -> Any:
    """An answer decoded as the clients decode it: JSON with api/http.py's decode_json, XML with the safe parser."""
    if body.lstrip()[:1] == b"<":
        return xmlsafe.parse(body, max_bytes=MAX_EXPORT_BYTES)
    return http.decode_json(body)


async def fetch_floor_cpu(hass: HomeAssistant, calls: list[Call]) -> float:
    """CPU seconds (median of 7) of fetching and decoding the very answers of a poll, nothing else: the same
    requests through Home Assistant's HTTP client (api/http.py's post_raw) to a stand-in cloud in its own process
    that answers each with its recorded bytes (tests/bench_replay.py), one after another, and each answer decoded.
    What any poll that has to read those answers costs at least."""
    port = free_port()
    job_file = Path(tempfile.mkdtemp()) / "answers.json"
    job_file.write_text(json.dumps({"answers": [base64.b64encode(answer).decode() for *_, answer in calls]}))
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(ROOT / "tests" / "bench_replay.py"),
        str(job_file),
        str(port),
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        await asyncio.wait_for(proc.stdout.readline(), 30)
        session = async_get_clientsession(hass)
        url = f"http://127.0.0.1:{port}/"

        async def fetch_all() -> None:
            for index, (body, headers, _) in enumerate(calls):
                answer = await http.post_raw(
                    session, url, body, headers={**headers, "X-Replay": str(index)}, max_bytes=MAX_EXPORT_BYTES
                )
                _decode(answer.body)

        await fetch_all()  # a first round opens the connection
        spent = []
        for _ in range(PARSE_RUNS):
            gc.collect()
            c0 = time.process_time()
            await fetch_all()
            spent.append(time.process_time() - c0)
        return statistics.median(spent)
    finally:
        proc.terminate()
        await proc.wait()


def raw_parse_cpu(bodies: list[bytes], loads: Callable[[bytes], Any] = json.loads) -> float:
    """CPU seconds (median of 7) of the bare parse of a poll's answers: Python's json.loads (or `loads`), or lxml
    for XML."""

    def parse_all() -> None:
        for body in bodies:
            if body.lstrip()[:1] == b"<":
                etree.fromstring(body, parser=xmlsafe.make_parser())
            else:
                loads(body)

    return statistics.median(_timed(parse_all)[1])


async def timed_poll(hass: HomeAssistant, coordinator: Any) -> tuple[float, float]:
    """One poll (and everything it set off): CPU and wall seconds."""
    c0, w0 = time.process_time(), time.perf_counter()
    await coordinator.async_refresh()
    await hass.async_block_till_done()
    return time.process_time() - c0, time.perf_counter() - w0


async def tick_some(base: str, meter_nos: list[str] | None) -> None:
    """Let 15 minutes of use pass on these meters only (None: on every one), in the simulator's process."""
    body: dict[str, Any] = {"minutes": 15} if meter_nos is None else {"minutes": 15, "meters": meter_nos}
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{base}/_sim/tick", json=body) as resp:
            assert resp.status == 200, await resp.text()


def push_requests(backend: str, local: Any, push_path: str, count: int) -> list[tuple[dict[str, str], bytes]]:
    """`count` reading pushes (headers, body), every meter in turn, each round after 15 minutes of use."""
    prepared: list[tuple[dict[str, str], bytes]] = []
    while len(prepared) < count:
        local.tick(15)
        if hasattr(local, "advance"):  # IoT: a reading of the same second would be taken for a re-send
            local.advance(1)
        for meter_no in list(local.meters)[: count - len(prepared)]:
            push_body = local.reading_body(meter_no)
            if backend == "iotmeter":
                headers = {"company_no": local.company_no, "data_api_key": local.data_api_key}
                prepared.append((headers, json.dumps(push_body).encode()))
            else:
                headers, body = local.signed_push(push_path, push_body)
                prepared.append((dict(headers), body))
    return prepared


async def push_throughput(
    hass: HomeAssistant, client: Any, url: str, prepared: list[tuple[dict[str, str], bytes]]
) -> tuple[float, float, list[float], int]:
    """Send the pushes PUSH_IN_FLIGHT at a time from a separate process (tests/bench_sender.py, as a vendor's
    cloud would): pushes/s (first POST to the last answer), Home Assistant's CPU s per push (its process only; the
    handler writes the entities before it answers), latencies, refusals."""
    job = {
        "url": str(client.make_url(url)),
        "in_flight": PUSH_IN_FLIGHT,
        "pushes": [[headers, base64.b64encode(body).decode()] for headers, body in prepared],
    }
    job_file = Path(tempfile.mkdtemp()) / "pushes.json"
    job_file.write_text(json.dumps(job))
    cpu = time.process_time()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(ROOT / "tests" / "bench_sender.py"), str(job_file), stdout=asyncio.subprocess.PIPE
    )
    out, _ = await proc.communicate()
    await hass.async_block_till_done()
    spent = time.process_time() - cpu
    seen = json.loads(out)
    rate = len(prepared) / seen["elapsed"]
    return rate, spent / len(prepared), sorted(seen["latencies"]), seen["refused"]


def _p95(sorted_values: list[float]) -> float:
    return sorted_values[max(0, int(len(sorted_values) * 0.95) - 1)]


@pytest.fixture(autouse=True)
async def enable_event_loop_debug() -> None:
    """Measure the loop a real installation runs: without asyncio's debug mode, which the test plugin turns on."""
    asyncio.get_running_loop().set_debug(False)


@pytest.fixture(autouse=True)
def quiet_access_log() -> Iterator[None]:
    """Home Assistant's start-up sets aiohttp's access log to WARNING (bootstrap): a push is not logged there."""
    access = logging.getLogger("aiohttp.access")
    level = access.level
    access.setLevel(logging.WARNING)
    yield
    access.setLevel(level)


@pytest.fixture(autouse=True)
def auto_enable_custom_integrations(enable_custom_integrations: None) -> None:
    """Load custom_components/."""


def _sim_command(backend: str, port: int, meters: int) -> list[str]:
    """The simulator's command line: `meters` meters (KUMIR: nodes, cycling through its device types), no ticking."""
    command = [sys.executable, "-m", "simulator", backend, "--port", str(port), "--tick-seconds", "0"]
    if backend == "kumir":
        # Its collector reads a tenth of the nodes every 15 minutes, each tenth in turn, so a steady poll can exist
        # (the total archive moves only at a reading) and 15 minutes on changes a tenth of the nodes, as the others'
        # changed polls do; with --collector-minutes 0 every export reads every meter anew.
        return [*command, "--nodes", str(meters), "--collector-minutes", "15", "--collector-turns", "10"]
    return [*command, "--meters", str(meters)]


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

        await timed_poll(hass, coordinator)  # the first poll after set-up also computes money foresight
        # One-off work the first polls start in the background (history import, money foresight's first refresh;
        # both then run every 6 hours) is not a steady poll: let it finish before timing.
        await hass.async_block_till_done(wait_background_tasks=True)
        await timed_poll(hass, coordinator)
        await hass.async_block_till_done(wait_background_tasks=True)
        # Set-up's registry saves (delayed 10 s in Home Assistant) are not a poll's cost either: write them now.
        await flush_store(er.async_get(hass)._store)
        await flush_store(dr.async_get(hass)._store)
        cpu, wall, steady_writes = [], [], []
        with counted_writes() as spent, profiled(f"{backend}-{meters}-steady"):
            for _ in range(POLLS):
                spent.clear()
                poll_cpu, poll_wall = await timed_poll(hass, coordinator)
                cpu.append(poll_cpu)
                wall.append(poll_wall)
                steady_writes.append(len(spent))
        steady_requests = coordinator.requests_last_poll
        with captured_calls() as steady_calls:
            await coordinator.async_refresh()
            await hass.async_block_till_done()
        bodies = [answer for *_, answer in steady_calls]
        parse_cpu = raw_parse_cpu(bodies)
        # The clients read JSON with orjson (api/http.py): the same ratio against orjson's own parse, for candour.
        orjson_cpu = raw_parse_cpu(bodies, orjson.loads)
        steady_cpu = statistics.median(cpu)
        ratio = steady_cpu / parse_cpu
        cost = (
            f"| {backend} | {meters} | {sum(map(len, bodies)) / 1e3:.0f} | {parse_cpu * 1000:.2f} "
            f"| {steady_cpu * 1000:.1f} | {max(steady_writes)} | {ratio:.1f}× | ≤ {POLL_TARGET:g}× "
            f"| {_holds(ratio <= POLL_TARGET, meters)} | {orjson_cpu * 1000:.2f} | {steady_cpu / orjson_cpu:.1f}× |"
        )
        changed_cpu, written, writes_cpu = [], [], []
        local_ids = list(local.meters)
        # A tenth of the meters changes before each changed poll: for KUMIR-RESURS 15 minutes on its clock, the
        # collector's next reading, of the next tenth of the nodes (a new hour by the real clock would change all).
        changing = local_ids[::10]
        with counted_writes() as spent, profiled(f"{backend}-{meters}-changed"):
            for turn in range(CHANGED_POLLS):
                await tick_some(base, None if backend == "kumir" else local_ids[turn::10])
                spent.clear()
                with captured_calls() as calls:
                    changed_cpu.append((await timed_poll(hass, coordinator))[0])
                written.append(len(spent))
                writes_cpu.append(sum(spent))
        c_cpu, w_cpu = statistics.median(changed_cpu), statistics.median(writes_cpu)
        bound = POLL_TARGET * parse_cpu + w_cpu
        beyond = (c_cpu - w_cpu) / parse_cpu
        # The floor of the last changed poll: fetching and decoding its answers alone. What the bound leaves beside
        # it is all a changed meter may cost before its writes (reading its row, combining it, its entities).
        floor = await fetch_floor_cpu(hass, calls)
        left = (POLL_TARGET * parse_cpu - floor) / len(changing) * 1e6
        cost += (
            f" {len(changing)} | {c_cpu * 1000:.1f} "
            f"| {statistics.median(written):.0f} | {w_cpu * 1000:.1f} "
            f"| {bound * 1000:.1f} | {beyond:.1f}× | {_holds(c_cpu <= bound, meters)} "
            f"| {len(calls)} | {floor * 1000:.1f} | {floor / parse_cpu:.1f}× | {left:.0f} |"
        )
        COST_RESULTS.append(cost)

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
            push = f"{statistics.median(latencies) * 1000:.1f} | {_p95(latencies) * 1000:.1f}"
            prepared = push_requests(backend, local, push_path, PUSH_LOAD)
            url = f"/api/meter_cloud/push/bench-push-id/{push_path}"
            with profiled(f"{backend}-{meters}-push"):
                rate, per_push, loaded, refused = await push_throughput(hass, client, url, prepared)
            PUSH_RESULTS.append(
                f"| {backend} | {meters} | {len(prepared)} ({refused} refused) | {rate:.0f} | ≥ {PUSH_TARGET:g} "
                f"| {rate / PUSH_TARGET:.2f}× | {_holds(rate >= PUSH_TARGET)} | {per_push * 1000:.2f} "
                f"| {statistics.median(loaded) * 1000:.1f} | {_p95(loaded) * 1000:.1f} |"
            )
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
        cost_header = (
            "| backend | meters | answer KB | raw parse CPU ms | steady poll CPU ms | writes | ratio | target | holds "
            "| orjson parse CPU ms | ratio to it "
            "| changed meters | changed poll CPU ms | writes | writes CPU ms | bound: 2× parse + writes, ms "
            "| (CPU − writes) / parse | holds | requests | fetch + decode floor CPU ms | floor / parse "
            "| left per changed meter, µs |\n|" + "---|" * 22
        )
        sys.stdout.write(
            "\nPoll cost against the raw parse of its answers (Python's json.loads / lxml of the bytes the simulator "
            "sent for that poll; the clients parse JSON with orjson, whose own parse is shown beside; writes = entity "
            "state writes, their CPU measured around each write; floor = fetching and decoding the last changed poll's "
            "answers alone, the same requests to a stand-in cloud in its own process that answers with the recorded "
            "bytes; left = (2× parse − floor) / changed meters, what the bound leaves a changed meter before its "
            "writes):\n" + cost_header + "\n" + "\n".join(COST_RESULTS) + "\n"
        )
        if PUSH_RESULTS:
            push_header = (
                "| backend | meters | pushes | pushes/s | target | ratio | holds | CPU ms per push "
                f"| POST→200 ms median ({PUSH_IN_FLIGHT} in flight) | p95 |\n|" + "---|" * 10
            )
            sys.stdout.write(
                "\nPush throughput over loopback HTTP (Home Assistant's HTTP test server; the sender in its own "
                "process, CPU per push Home Assistant's alone):\n" + push_header + "\n" + "\n".join(PUSH_RESULTS) + "\n"
            )


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


def _every_text(root: etree._Element) -> int:
    """Read every element's tag and text and nothing else: the least any reader of lxml's tree does to see every
    value (parse_export's floor)."""
    seen = 0
    for element in root.iter():
        if element.tag and element.text:
            seen += 1
    return seen


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
        ("xmlsafe.parse + each tag and text", lambda: _every_text(xmlsafe.parse(data, max_bytes=limit))),
        ("archive.parse_export", lambda: archive.parse_export(data, tz, max_bytes=limit)),
    ]
    rows = 0
    lxml_cpu = 0.0
    for stage, work in stages:
        wall, cpu, result = _timed(work)
        if stage == "archive.parse_export":
            rows = len(result)
        del result
        lxml_cpu = lxml_cpu or statistics.median(cpu)
        ratio = statistics.median(cpu) / lxml_cpu
        target = (
            f"≤ {PARSE_TARGET:g}× | {_holds(ratio <= PARSE_TARGET)}" if stage == "archive.parse_export" else "— | —"
        )
        PARSE_RESULTS.append(
            f"| {nodes}×{days} d | {len(data) / 1e6:.1f} | {records} | {stage} | {min(wall) * 1000:.0f} | "
            f"{statistics.median(wall) * 1000:.0f} | {min(cpu) * 1000:.0f} | {statistics.median(cpu) * 1000:.0f} | "
            f"{statistics.median(wall) / records * 1e6:.1f} | {ratio:.1f}× | {target} |"
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
            "| CPU ms median | µs per record | CPU × lxml | target | holds |\n|" + "---|" * 12
        )
        notes = "".join(f"\n{note}" for note in PARSE_NOTES)
        kinds = ", ".join(f"{kind} ({len(KINDS[kind].systems)} systems)" for kind in KIND_ORDER)
        sys.stdout.write(f"\n\nKUMIR-RESURS export parsing, best/median of {PARSE_RUNS} runs; nodes cycle {kinds}:\n")
        sys.stdout.write(header + "\n" + "\n".join(PARSE_RESULTS) + "\n" + notes + "\n")
