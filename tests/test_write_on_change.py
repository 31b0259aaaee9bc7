"""A poll writes entity state only for meters whose values (or availability) changed: counted per poll."""

from __future__ import annotations

from collections import Counter
from collections.abc import Generator
from datetime import datetime
from decimal import Decimal
from typing import Any
from unittest.mock import patch

import pytest
from freezegun.api import FrozenDateTimeFactory
from homeassistant.core import HomeAssistant
from homeassistant.helpers import entity_registry as er
from homeassistant.helpers.entity import Entity
from pytest_homeassistant_custom_component.common import MockConfigEntry

from custom_components.meter_cloud.api import MeterStatus
from custom_components.meter_cloud.api.kumir import archive as archive_module
from custom_components.meter_cloud.coordinator import MeterCloudCoordinator, async_build_client
from custom_components.meter_cloud.entity import MeterCloudEntity
from simulator.cangnan import CangnanSimulator
from simulator.goldcard import GoldcardSimulator
from simulator.iotmeter import IotMeterSimulator
from simulator.kumir import KINDS, KumirSimulator, _fmt
from simulator.kumir import Counter as SimCounter

from .conftest import PUSH_ID

PARSE_EXPORT = "custom_components.meter_cloud.api.kumir.client.parse_export_answer"
READ_NODE = "custom_components.meter_cloud.api.kumir.archive._read_node"


@pytest.fixture
def writes() -> Generator[Counter[str]]:
    """How often each entity's state was written (Home Assistant's own write, under every path)."""
    counted: Counter[str] = Counter()
    original = Entity._async_write_ha_state

    def counting(self: Entity) -> None:
        counted[self.entity_id] += 1
        original(self)

    with patch.object(Entity, "_async_write_ha_state", counting):
        yield counted


def of_meter(hass: HomeAssistant, entry: MockConfigEntry, meter_id: str) -> set[str]:
    """The enabled entities of one meter."""
    registry = er.async_get(hass)
    return {
        e.entity_id
        for e in er.async_entries_for_config_entry(registry, entry.entry_id)
        if e.unique_id.startswith(f"{entry.data['backend']}_{meter_id}_") and e.disabled_by is None
    }


async def poll(hass: HomeAssistant, entry: MockConfigEntry, writes: Counter[str]) -> Counter[str]:
    """One poll; the writes it caused."""
    writes.clear()
    await entry.runtime_data.async_refresh()
    await hass.async_block_till_done()
    return Counter(writes)


async def test_goldcard_steady_changed_failed_recovered(
    hass: HomeAssistant, sim: GoldcardSimulator, setup_entry: MockConfigEntry, writes: Counter[str]
) -> None:
    """Nothing new: no writes. One meter changed: its entities only. The cloud fails: all (unavailable).
    It recovers: all again; then nothing."""
    ours = {e.entity_id for e in er.async_entries_for_config_entry(er.async_get(hass), setup_entry.entry_id)}
    enabled = {eid for eid in ours if hass.states.get(eid) is not None}
    assert len(enabled) > 20
    await poll(hass, setup_entry, writes)  # the first one after set-up also computes money foresight
    assert await poll(hass, setup_entry, writes) == Counter()
    meter_no, meter = next(iter(sim.meters.items()))
    meter.balance -= Decimal("3.25")
    written = await poll(hass, setup_entry, writes)
    assert written
    assert set(written) <= of_meter(hass, setup_entry, meter_no)
    assert Decimal(hass.states.get(f"sensor.goldcard_{meter_no}_balance").state) == meter.balance
    sim.fail_next("http500")
    written = await poll(hass, setup_entry, writes)
    assert set(written) == enabled
    assert hass.states.get(f"sensor.goldcard_{meter_no}_balance").state == "unavailable"
    assert set(await poll(hass, setup_entry, writes)) == enabled
    assert hass.states.get(f"sensor.goldcard_{meter_no}_balance").state != "unavailable"
    assert await poll(hass, setup_entry, writes) == Counter()


async def test_iot_changed_meters_only(
    hass: HomeAssistant, iot_sim: IotMeterSimulator, iot_entry: MockConfigEntry, writes: Counter[str]
) -> None:
    """The IoT platform: a steady poll writes nothing; after one meter reports, only that meter's entities."""
    await poll(hass, iot_entry, writes)  # the first one after set-up also computes money foresight
    assert await poll(hass, iot_entry, writes) == Counter()
    meter: Any = next(d for d in iot_sim.devices.values() if d.device_type == 1)
    meter.remain_money -= Decimal("1.5")
    written = await poll(hass, iot_entry, writes)
    assert written
    assert set(written) <= of_meter(hass, iot_entry, meter.comm_no)
    assert all(eid.split(".")[0] in ("sensor", "binary_sensor", "valve", "event") for eid in written)


async def _two_reads(entry: MockConfigEntry, change: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """The client's meters read twice through HTTP, `change()` run between the reads."""
    client = entry.runtime_data.client
    first = await client.async_get_meters()
    change()
    return first, await client.async_get_meters()


def _assert_only_changed_rebuilt(first: dict[str, Any], second: dict[str, Any], changed: str) -> None:
    assert first.keys() == second.keys()
    assert len(first) > 1
    for meter_id, meter in second.items():
        if meter_id == changed:
            assert meter is not first[meter_id]
        else:  # an unchanged row hands back the very object: nothing parsed again, identity seen by entities
            assert meter is first[meter_id], meter_id


async def test_goldcard_unchanged_rows_are_the_same_objects(
    hass: HomeAssistant, sim: GoldcardSimulator, setup_entry: MockConfigEntry
) -> None:
    """Goldcard 1013: only the meter whose row changed is built again."""
    meter_no, meter = next(iter(sim.meters.items()))

    def change() -> None:
        meter.balance -= Decimal("1.50")

    first, second = await _two_reads(setup_entry, change)
    _assert_only_changed_rebuilt(first, second, meter_no)
    assert second[meter_no].balance == meter.balance


async def test_iot_unchanged_rows_are_the_same_objects(
    hass: HomeAssistant, iot_sim: IotMeterSimulator, iot_entry: MockConfigEntry
) -> None:
    """IoT GetRealList2 (rows keyed by meter_comm_no): only the meter whose row changed is built again."""
    comm_no, device = next((k, d) for k, d in iot_sim.devices.items() if not k.startswith("99"))

    def change() -> None:
        device.remain_money -= Decimal("1.50")

    first, second = await _two_reads(iot_entry, change)
    _assert_only_changed_rebuilt(first, second, comm_no)
    assert second[comm_no].balance == device.remain_money


async def test_cangnan_unchanged_rows_are_the_same_objects(
    hass: HomeAssistant, cn_sim: CangnanSimulator, cn_entry: MockConfigEntry
) -> None:
    """Cangnan ReadCurrentData: only the meter whose row changed is built again."""
    meter_id, meter = next(iter(cn_sim.meters.items()))

    def change() -> None:
        meter.remain_money -= Decimal("1.50")

    first, second = await _two_reads(cn_entry, change)
    _assert_only_changed_rebuilt(first, second, meter_id)
    assert second[meter_id].balance == meter.remain_money


@pytest.fixture
def woken() -> Generator[Counter[str]]:
    """How often each entity was woken by a coordinator update (patched before the entry is set up)."""
    counted: Counter[str] = Counter()
    original = MeterCloudEntity._handle_coordinator_update

    def counting(self: MeterCloudEntity) -> None:
        counted[self.entity_id] += 1
        original(self)

    with patch.object(MeterCloudEntity, "_handle_coordinator_update", counting):
        yield counted


async def test_a_poll_wakes_only_the_changed_meters_entities(
    hass: HomeAssistant,
    woken: Counter[str],
    sim: GoldcardSimulator,
    setup_entry: MockConfigEntry,
    writes: Counter[str],
) -> None:
    """One meter changed: only its entities are woken (not every entity of the account); a failed poll wakes all
    (they go unavailable), the recovery all again, then a steady poll none."""
    registry = er.async_get(hass)
    enabled = {
        e.entity_id
        for e in er.async_entries_for_config_entry(registry, setup_entry.entry_id)
        if hass.states.get(e.entity_id) is not None
    }
    await poll(hass, setup_entry, writes)
    woken.clear()
    assert await poll(hass, setup_entry, writes) == Counter()
    assert woken == Counter()
    meter_no, meter = next(iter(sim.meters.items()))
    meter.balance -= Decimal("2.00")
    await poll(hass, setup_entry, writes)
    assert set(woken) == of_meter(hass, setup_entry, meter_no)
    assert Decimal(hass.states.get(f"sensor.goldcard_{meter_no}_balance").state) == meter.balance
    woken.clear()
    sim.fail_next("http500")
    await poll(hass, setup_entry, writes)
    assert set(woken) == enabled
    woken.clear()
    await poll(hass, setup_entry, writes)
    assert set(woken) == enabled
    assert hass.states.get(f"sensor.goldcard_{meter_no}_balance").state != "unavailable"
    woken.clear()
    await poll(hass, setup_entry, writes)
    assert woken == Counter()


async def test_a_push_writes_only_what_it_changed(
    hass: HomeAssistant, sim: GoldcardSimulator, push_client: Any, writes: Counter[str]
) -> None:
    """A reading push that moved the reading (and what follows it) writes those sensors, not the ones whose value
    it left as it was (the price); the same push again writes nothing."""
    meter_no = next(iter(sim.meters))
    price = f"sensor.goldcard_{meter_no}_current_price"
    reading = f"sensor.goldcard_{meter_no}_meter_reading"
    assert hass.states.get(price) is not None
    sim.tick(120)
    headers, data = sim.signed_push("api/collect/meter/2001", sim.reading_body(meter_no))
    writes.clear()
    resp = await push_client.post(f"/api/meter_cloud/push/{PUSH_ID}/api/collect/meter/2001", data=data, headers=headers)
    assert resp.status == 200
    await hass.async_block_till_done()
    assert Decimal(hass.states.get(reading).state) == sim.meters[meter_no].reading
    assert writes[reading] == 1
    assert price not in writes
    assert set(writes) <= of_meter(hass, setup_entry_of(hass), meter_no)
    writes.clear()
    resp = await push_client.post(f"/api/meter_cloud/push/{PUSH_ID}/api/collect/meter/2001", data=data, headers=headers)
    assert resp.status == 200
    await hass.async_block_till_done()
    assert writes == Counter()


def setup_entry_of(hass: HomeAssistant) -> MockConfigEntry:
    """The one Meter Cloud entry of the test."""
    (entry,) = hass.config_entries.async_entries("meter_cloud")
    return entry  # type: ignore[return-value]


async def _not_parsed_again(hass: HomeAssistant, entry: MockConfigEntry, target: str, tick: Any) -> None:
    """A poll answer with the very bytes of the last one (Goldcard: but for the echo of our serial) is not parsed
    again; one that differs is."""
    await hass.async_block_till_done(wait_background_tasks=True)
    client = entry.runtime_data.client
    first = await client.async_get_meters()
    with patch(target, side_effect=AssertionError("parsed again")):
        second = await client.async_get_meters()
    assert second == first
    assert all(second[meter_id] is meter for meter_id, meter in first.items())
    tick(30)
    with patch(target, side_effect=AssertionError("parsed again")), pytest.raises(AssertionError, match="parsed"):
        await client.async_get_meters()


async def test_goldcard_answer_like_the_last_is_not_parsed_again(
    hass: HomeAssistant, sim: GoldcardSimulator, setup_entry: MockConfigEntry
) -> None:
    """1013 for the whole company, the same but for our serial: not parsed again."""
    await _not_parsed_again(hass, setup_entry, "custom_components.meter_cloud.api.goldcard.decode_json", sim.tick)


async def test_iot_answer_like_the_last_is_not_parsed_again(
    hass: HomeAssistant, iot_sim: IotMeterSimulator, iot_entry: MockConfigEntry
) -> None:
    """GetRealList2 pages with the same bytes: not parsed again."""
    await _not_parsed_again(hass, iot_entry, "custom_components.meter_cloud.api.iotmeter._envelope", iot_sim.tick)


async def test_cangnan_answer_like_the_last_is_not_parsed_again(
    hass: HomeAssistant, cn_sim: CangnanSimulator, cn_entry: MockConfigEntry
) -> None:
    """ReadCurrentData batches with the same bytes: not parsed again."""
    await _not_parsed_again(
        hass, cn_entry, "custom_components.meter_cloud.api.cangnan.CangnanClient._decode", cn_sim.tick
    )


async def test_kumir_steady_poll_parses_and_writes_nothing(
    freezer: FrozenDateTimeFactory,
    hass: HomeAssistant,
    kumir_sim: KumirSimulator,
    kumir_entry: MockConfigEntry,
    writes: Counter[str],
) -> None:
    """KUMIR-RESURS: exports with the very bytes of the last ones (the collector has not read the meters since) are
    not parsed and write nothing; after the collector's next reading they are, with the simulator's numbers. The
    clock stands still (a busy machine must not carry two polls across an hour or a reading); only the simulator's
    moves, when told."""
    kumir_sim.collector_minutes = 15
    code = next(iter(kumir_sim.nodes))
    node = kumir_sim.nodes[code]
    await poll(hass, kumir_entry, writes)  # new bytes (an older total, which rolls nothing back): parsed
    with patch(PARSE_EXPORT, side_effect=AssertionError("parsed again")):
        assert await poll(hass, kumir_entry, writes) == Counter()
        assert await poll(hass, kumir_entry, writes) == Counter()
    kumir_sim.advance(15 * 60)
    with patch(PARSE_EXPORT, side_effect=AssertionError("parsed again")), pytest.raises(AssertionError):
        await kumir_entry.runtime_data.client.async_get_meters()
    changed = await poll(hass, kumir_entry, writes)
    registry = er.async_get(hass)
    reading = registry.async_get_entity_id("sensor", "meter_cloud", f"kumir_{code}/{node.num}_s1_EAi")
    reading_time = registry.async_get_entity_id("sensor", "meter_cloud", f"kumir_{code}/{node.num}_reading_time")
    assert reading is not None
    assert reading_time is not None
    assert {reading, reading_time} <= set(changed)
    when = datetime.fromisoformat(hass.states.get(reading_time).state)
    assert when == kumir_sim._collected(kumir_sim._now(), node)  # the collector's new reading (the total archive)
    expected = Decimal(_fmt(kumir_sim.counter_value(node, 1, "EAi", when)))
    assert Decimal(hass.states.get(reading).state) == expected


async def test_kumir_poll_writes_only_the_nodes_the_collector_read(
    freezer: FrozenDateTimeFactory,
    hass: HomeAssistant,
    kumir_sim: KumirSimulator,
    kumir_entry: MockConfigEntry,
    writes: Counter[str],
) -> None:
    """A collector that reads the six nodes in three turns: after each reading the poll writes the entities of the
    two nodes it read, with the simulator's numbers (every counter the node reports on its first system), and
    nothing of the other four. The clock stands still as above; only the simulator's moves."""
    kumir_sim.collector_minutes, kumir_sim.collector_turns = 15, 3
    registry = er.async_get(hass)
    await poll(hass, kumir_entry, writes)
    assert await poll(hass, kumir_entry, writes) == Counter()
    seen: set[str] = set()
    for _ in range(3):
        read = _next_reading(kumir_sim)
        assert len(read) == 2
        assert not read & seen  # each node in its turn
        seen |= read
        written = await poll(hass, kumir_entry, writes)
        owners = {_node_code(registry, eid) for eid in written}
        assert owners == read
        for code in read:
            node = kumir_sim.nodes[code]
            when = kumir_sim._collected(kumir_sim._now(), node)
            prefix = f"kumir_{code}/{node.num}"
            reading_time = registry.async_get_entity_id("sensor", "meter_cloud", f"{prefix}_reading_time")
            assert reading_time is not None
            assert reading_time in written
            assert datetime.fromisoformat(hass.states.get(reading_time).state) == when
            kind = KINDS[node.kind or node.dev]
            sys = kind.systems[0]
            counters = [name for name, spec in kind.params.items() if isinstance(spec, SimCounter)]
            shown = 0
            for param in counters:
                eid = registry.async_get_entity_id("sensor", "meter_cloud", f"{prefix}_s{sys}_{param}")
                if eid is None or hass.states.get(eid) is None:
                    continue  # not an entity, or disabled by default
                expected = Decimal(_fmt(kumir_sim.counter_value(node, sys, param, when)))
                assert Decimal(hass.states.get(eid).state) == expected
                shown += 1
            assert shown  # at least one counter of every node read is an enabled entity
    assert seen == set(kumir_sim.nodes)


def _next_reading(sim: KumirSimulator) -> set[str]:
    """Move the simulator's clock to its collector's next reading (15 minutes on); the codes of the nodes it read."""
    before = {code: sim._collected(sim._now(), node) for code, node in sim.nodes.items()}
    sim.advance(15 * 60)
    now = sim._now()
    return {code for code, node in sim.nodes.items() if sim._collected(now, node) != before[code]}


def _node_code(registry: er.EntityRegistry, entity_id: str) -> str:
    """The KUMIR-RESURS node code of an entity (unique ids are kumir_<code>/<serial>_<key>)."""
    entry = registry.async_get(entity_id)
    assert entry is not None
    return entry.unique_id.removeprefix("kumir_").split("/", 1)[0]


async def test_bookkeeping_does_not_undo_the_reuse_of_a_steady_poll(
    hass: HomeAssistant, iot_sim: IotMeterSimulator, iot_entry: MockConfigEntry, writes: Counter[str]
) -> None:
    """The IoT platform's alarm catch-up saves where it stopped at every poll: bookkeeping, not meters' data, so a
    steady poll still hands over the last poll's combined meters without combining any meter again."""
    coordinator = iot_entry.runtime_data
    await poll(hass, iot_entry, writes)
    revision = coordinator.commands.revision
    with patch.object(
        MeterCloudCoordinator, "_combined", autospec=True, side_effect=MeterCloudCoordinator._combined
    ) as combined:
        assert await poll(hass, iot_entry, writes) == Counter()
        assert await poll(hass, iot_entry, writes) == Counter()
    assert combined.call_count == 0
    assert coordinator.commands.meta["alarms_since"]  # saved by those polls
    assert coordinator.commands.revision == revision


async def test_an_account_state_learnt_between_polls_is_combined_into_the_next(
    hass: HomeAssistant, cn_sim: CangnanSimulator, cn_entry: MockConfigEntry, writes: Counter[str]
) -> None:
    """Cangnan polls carry no account state; one the entry learns (an operation refused) is part of the meters'
    data: shown at once, and the next poll, otherwise steady, combines that meter again and keeps showing it."""
    coordinator = cn_entry.runtime_data
    await poll(hass, cn_entry, writes)
    assert await poll(hass, cn_entry, writes) == Counter()
    meter_id = next(iter(cn_sim.meters))
    revision = coordinator.commands.revision
    coordinator.account_states.refused(meter_id)
    assert coordinator.commands.revision > revision
    assert coordinator.data[meter_id].status is MeterStatus.INACTIVE
    await hass.async_block_till_done()
    with patch.object(
        MeterCloudCoordinator, "_combined", autospec=True, side_effect=MeterCloudCoordinator._combined
    ) as combined:
        await poll(hass, cn_entry, writes)
    assert combined.call_count == len(coordinator.data)
    assert coordinator.data[meter_id].status is MeterStatus.INACTIVE


async def test_kumir_reads_only_the_nodes_whose_part_of_the_answer_changed(
    freezer: FrozenDateTimeFactory, hass: HomeAssistant, kumir_sim: KumirSimulator, kumir_entry: MockConfigEntry
) -> None:
    """After the collector read two of six nodes, the changed total-archive answer is parsed but only those two
    nodes' parts are read; the other meters are the very objects of the last poll, and every meter equals what a
    client that reads every part of every answer reads through the same polls."""
    client = kumir_entry.runtime_data.client
    everything = await async_build_client(hass, kumir_entry.data)
    everything.use_options(kumir_entry.options)

    async def read_everything() -> dict[str, Any]:
        everything._node_rows.clear()  # type: ignore[attr-defined]
        return await everything.async_get_meters()

    await read_everything()  # as the entry's set-up poll did, at the same frozen moment
    kumir_sim.collector_minutes, kumir_sim.collector_turns = 15, 3
    await client.async_get_meters()
    before = await client.async_get_meters()
    assert await read_everything() == before
    read = _next_reading(kumir_sim)
    assert len(read) == 2
    with patch(READ_NODE, side_effect=archive_module._read_node) as read_node:
        after = await client.async_get_meters()
    assert sorted(key[0] for (_, _, key), _ in read_node.call_args_list) == sorted(read)
    for meter_id, meter in after.items():
        if meter_id.split("/")[0] in read:
            assert meter is not before[meter_id]
        else:
            assert meter is before[meter_id], meter_id
    assert await read_everything() == after
