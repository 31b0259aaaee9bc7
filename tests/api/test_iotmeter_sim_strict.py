"""The IoT platform simulator as strict as spec 002 lets a real platform and meter be, over raw HTTP on loopback.

Only the simulator is under test here: its state, its raw HTTP answers and the pushes it sends. No client.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from simulator.common import LOST_ANSWER_MODES
from simulator.iotmeter import (
    CHARGE_OK,
    CHARGE_REFUSED,
    REASON_REFUSED,
    REASON_TIMES,
    REASON_TOTAL,
    IotMeterSimulator,
    SimDevice,
    q3,
)

from ..timing import LOST_ANSWER_HANG

REMOTE_CHARGE = "iotmeterv1.prepay.remotecharge"
CHARGE_STATE = "iotmeterv1.prepay.getchargestate"
VALVE_OFF = "iotmeterv1.common.setvalveoff"
REPORT = "/api/Conf/CtrlData/Report"
CHARGE_STATE_FIELDS = {
    "card_charge_times",
    "card_charge_value",
    "card_total_value",
    "remote_charge_times",
    "remote_charge_value",
    "remote_total_value",
}


def make_sim(**kwargs: Any) -> IotMeterSimulator:
    """Five meters and one RTU; commands wait for settle()."""
    simulator = IotMeterSimulator(**({"meters": 5, "rtus": 1, "command_delay": 3600, "seed": 7} | kwargs))
    simulator.hang_seconds = LOST_ANSWER_HANG
    return simulator


@dataclass
class Platform:
    """Raw HTTP against the simulator: the data API with the key, the control API with a token."""

    sim: IotMeterSimulator
    base: str
    http: aiohttp.ClientSession
    token: str = ""

    async def login(self) -> None:
        """Log in as the spec says: MD5 of the password in the query; keep the token."""
        pwd = hashlib.md5(self.sim.password.encode()).hexdigest()
        params = {"loginName": self.sim.login_name, "pwd": pwd}
        async with self.http.post(f"{self.base}/api/Conf/Account/Login", params=params) as resp:
            self.token = (await resp.json())["Data"]["token"]

    async def raw(self, path: str, body: Any = None, *, timeout: float = 10) -> tuple[int, str, str]:
        """POST to a control endpoint; the status, content type and text of the answer."""
        headers = {"token": self.token}
        data = None if body is None else json.dumps(body, ensure_ascii=False).encode()
        headers |= {} if data is None else {"Content-Type": "application/json"}
        client_timeout = aiohttp.ClientTimeout(total=timeout)
        async with self.http.post(f"{self.base}/{path}", data=data, headers=headers, timeout=client_timeout) as resp:
            return resp.status, resp.content_type, await resp.text()

    async def ctrl(self, name: str, body: Any = None) -> dict[str, Any]:
        """POST to api/Conf/CtrlData/{name}; the decoded envelope of a 200 answer."""
        status, _type, text = await self.raw(f"api/Conf/CtrlData/{name}", body)
        assert status == 200, text
        answer: dict[str, Any] = json.loads(text)
        return answer

    async def add(self, comm_no: str, ctrl_type: str, data: dict[str, Any], define_no: str = "") -> int:
        """Queue a command; its ctrl_id."""
        body: dict[str, Any] = {"processor_name": "iotmeterv1", "ctrl_define_no": define_no, "target_comm_no": comm_no}
        body |= {"target_devtype": 1, "ctrl_type": ctrl_type, "ctrl_data": json.dumps(data)}
        answer = await self.ctrl("Add", body)
        assert answer["State"] == "success", answer
        ctrl_id: int = answer["Data"]
        return ctrl_id

    async def model(self, ctrl_id: int) -> dict[str, Any]:
        """GetModel's entity."""
        answer = await self.ctrl(f"GetModel/{ctrl_id}")
        assert answer["State"] == "success", answer
        model: dict[str, Any] = answer["Data"]
        return model

    async def returned(self, ctrl_id: int) -> dict[str, Any]:
        """The task's return_data, decoded from its JSON string."""
        data: dict[str, Any] = json.loads((await self.model(ctrl_id))["return_data"])
        return data

    async def charge(self, comm_no: str, value: float, total: float, times: int) -> int:
        """Queue a remote charge with remote_charge_param; settle it; its ctrl_id."""
        ctrl_id = await self.add(
            comm_no, REMOTE_CHARGE, {"charge_value": value, "total_value": total, "charge_times": times}
        )
        await self.sim.settle()
        return ctrl_id


@dataclass
class Receiver:
    """Our side of the pushes: every request's path and raw body, answered with success (4.2.12's shape)."""

    received: list[tuple[str, bytes]] = field(default_factory=list)
    accept: bool = True  # False: answer 503 with State failed, as a busy application would

    async def handle(self, request: web.Request) -> web.Response:
        """Record, then accept (or refuse)."""
        body = await request.read()
        self.received.append((request.path, body))
        if not self.accept:
            return web.json_response({"Data": None, "State": "failed", "Message": "busy"}, status=503)
        items = json.loads(body) if request.path == REPORT else []
        data = [
            {"ctrl_id": i["ctrl_id"], "meter_comm_no": i["meter_comm_no"], "result": True, "message": ""} for i in items
        ]
        return web.json_response({"Data": data, "State": "success", "Message": ""})

    def reports(self) -> list[bytes]:
        """Raw bodies of the Report pushes, in order."""
        return [body for path, body in self.received if path == REPORT]


Start = Callable[..., Awaitable[Platform]]


@pytest.fixture
async def start(socket_enabled: None, aiohttp_server: Any, session: aiohttp.ClientSession) -> AsyncGenerator[Start]:
    """Serve a simulator (made with the given keywords) on 127.0.0.1 and log in; close it afterwards."""
    started: list[IotMeterSimulator] = []

    async def run(**kwargs: Any) -> Platform:
        sim = make_sim(**kwargs)
        started.append(sim)
        server: TestServer = await aiohttp_server(sim.app, host="127.0.0.1")
        platform = Platform(sim, str(server.make_url("")).rstrip("/"), session)
        await platform.login()
        return platform

    yield run
    for sim in started:
        await sim.close()


@pytest.fixture
async def receiver(socket_enabled: None, aiohttp_server: Any) -> tuple[Receiver, str]:
    """A push receiver on 127.0.0.1 and its URL."""
    recorder = Receiver()
    app = web.Application()
    app.router.add_post("/{path:.*}", recorder.handle)
    server: TestServer = await aiohttp_server(app, host="127.0.0.1")
    return recorder, str(server.make_url("/"))


def meters(sim: IotMeterSimulator) -> list[SimDevice]:
    """The simulated meters (not RTUs)."""
    return [dev for dev in sim.devices.values() if dev.device_type == 1]


def counters(dev: SimDevice) -> tuple[int, Decimal]:
    """remote_charge_times and remote_total_value."""
    return int(dev.charges["remote_charge_times"]), Decimal(str(dev.charges["remote_total_value"]))


def money(dev: SimDevice) -> tuple[Decimal, Decimal]:
    """remain_money and total_buy_value."""
    return dev.remain_money, dev.total_buy_value


def charge_events(sim: IotMeterSimulator, comm_no: str) -> int:
    """How many remote charges (event 103) the meter logged."""
    return sum(1 for e in sim.events if e["device_comm_no"] == comm_no and e["event_code"] == 103)


# ---- the seeded history ---------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [1, 7, 42])
def test_every_meter_starts_with_recharge_history(seed: int) -> None:
    """Card and remote charges by other systems, their totals adding up to what was bought."""
    sim = IotMeterSimulator(meters=12, rtus=1, seed=seed)
    for dev in meters(sim):
        c = dev.charges
        assert set(c) == CHARGE_STATE_FIELDS
        assert c["card_charge_times"] >= 1
        assert c["card_total_value"] > 0
        assert c["remote_charge_times"] >= 1
        assert c["remote_total_value"] > 0
        assert 0 < c["remote_charge_value"] <= c["remote_total_value"]
        bought = q3(Decimal(str(c["card_total_value"])) + Decimal(str(c["remote_total_value"])))
        assert bought == q3(dev.total_buy_value)
        assert dev.remain_money <= dev.total_buy_value


def test_strict_switches_the_charge_check() -> None:
    """strict turns the charge sequence check on, as its own attribute; strict=False leaves it off."""
    lenient = make_sim(strict=False)
    assert (lenient.strict, lenient.check_charge_sequence) == (False, False)
    strict = make_sim(strict=True)
    assert (strict.strict, strict.check_charge_sequence) == (True, True)
    assert {"strict": True, "check_charge_sequence": True}.items() <= strict.state()["settings"].items()


# ---- remote charges ---------------------------------------------------------------------------------


async def test_strict_charge_sequence(start: Start) -> None:
    """The next count and the new remote total are taken once; the same stale counters again are refused."""
    platform = await start(strict=True)
    sim, dev = platform.sim, meters(platform.sim)[0]
    (n, total), (remain, bought) = counters(dev), money(dev)
    events = charge_events(sim, dev.comm_no)
    # The total as a float sum: 3 decimals are what counts, float noise is not a refusal.
    first = await platform.charge(dev.comm_no, 50.1, float(total) + 50.1, n + 1)
    model = await platform.model(first)
    assert (model["ctrl_state"], model["ctrl_state_msg"]) == (3, "任务成功")
    assert json.loads(model["return_data"]) == {
        "success": CHARGE_OK,
        "reason": 0,
        "calc_type": dev.flags["calc_type"],
        "remain": float(q3(remain + Decimal("50.1"))),
    }
    assert money(dev) == (remain + Decimal("50.1"), bought + Decimal("50.1"))
    assert counters(dev) == (n + 1, total + Decimal("50.1"))
    assert dev.charges["remote_charge_value"] == 50.1
    assert charge_events(sim, dev.comm_no) == events + 1

    again = await platform.charge(dev.comm_no, 50.1, float(total) + 50.1, n + 1)
    model = await platform.model(again)
    assert model["ctrl_state"] == 3  # the platform delivered it; the meter said no
    assert json.loads(model["return_data"]) == {
        "success": CHARGE_REFUSED,
        "reason": REASON_TIMES,
        "calc_type": dev.flags["calc_type"],
        "remain": float(q3(remain + Decimal("50.1"))),
    }
    assert money(dev) == (remain + Decimal("50.1"), bought + Decimal("50.1"))
    assert counters(dev) == (n + 1, total + Decimal("50.1"))
    assert charge_events(sim, dev.comm_no) == events + 1


async def test_strict_charge_total_must_match(start: Start) -> None:
    """The right count with a total off by a thousandth, or with the card charges counted in, is refused."""
    platform = await start(strict=True)
    dev = meters(platform.sim)[1]
    (n, total), before = counters(dev), money(dev)
    for wrong in (total + Decimal("10.001"), dev.total_buy_value + 10):
        ctrl_id = await platform.charge(dev.comm_no, 10, float(wrong), n + 1)
        data = await platform.returned(ctrl_id)
        assert (data["success"], data["reason"], data["remain"]) == (CHARGE_REFUSED, REASON_TOTAL, float(q3(before[0])))
    assert (counters(dev), money(dev)) == ((n, total), before)
    ctrl_id = await platform.charge(dev.comm_no, 10, float(total + 10), n + 1)
    assert (await platform.returned(ctrl_id))["success"] == CHARGE_OK
    assert counters(dev) == (n + 1, total + 10)


async def test_refuse_charges_comes_first(start: Start) -> None:
    """A meter set to refuse says reason 3 even to the right counters; nothing moves."""
    platform = await start(strict=True)
    dev = meters(platform.sim)[0]
    platform.sim.refuse_charges = {dev.comm_no}
    (n, total), before = counters(dev), money(dev)
    data = await platform.returned(await platform.charge(dev.comm_no, 5, float(total + 5), n + 1))
    assert (data["success"], data["reason"]) == (CHARGE_REFUSED, REASON_REFUSED)
    assert (counters(dev), money(dev)) == ((n, total), before)


async def test_external_recharge_moves_the_sequence(start: Start) -> None:
    """Another system's charge counts: our stale n+1 is refused, n+2 with the new total is taken."""
    platform = await start(strict=True)
    sim, dev = platform.sim, meters(platform.sim)[2]
    (n, total), (remain, bought) = counters(dev), money(dev)
    state = sim.external_recharge(dev.comm_no, Decimal(30))
    assert (state["remote_charge_times"], state["remote_charge_value"], state["remote_total_value"]) == (
        n + 1,
        30.0,
        float(total + 30),
    )
    assert money(dev) == (remain + 30, bought + 30)
    stale = await platform.returned(await platform.charge(dev.comm_no, 20, float(total + 20), n + 1))
    assert (stale["success"], stale["reason"]) == (CHARGE_REFUSED, REASON_TIMES)
    assert money(dev) == (remain + 30, bought + 30)
    fresh = await platform.returned(await platform.charge(dev.comm_no, 20, float(total + 50), n + 2))
    assert (fresh["success"], fresh["remain"]) == (CHARGE_OK, float(q3(remain + 50)))
    assert counters(dev) == (n + 2, total + 50)
    assert money(dev) == (remain + 50, bought + 50)


async def test_external_recharge_over_sim_route(start: Start) -> None:
    """POST /_sim/external_recharge does the same; unknown meters, RTUs and bad amounts are refused."""
    platform = await start(strict=True)
    dev = meters(platform.sim)[0]
    rtu = next(d for d in platform.sim.devices.values() if d.device_type == 2)
    (n, total), (remain, _bought) = counters(dev), money(dev)
    status, _type, text = await platform.raw("_sim/external_recharge", {"comm_no": dev.comm_no, "amount": "12.5"})
    assert status == 200, text
    answer = json.loads(text)
    assert answer["remote_charge_state"]["remote_charge_times"] == n + 1
    assert answer["remote_charge_state"]["remote_total_value"] == float(total + Decimal("12.5"))
    assert answer["remain_money"] == float(q3(remain + Decimal("12.5")))
    assert counters(dev) == (n + 1, total + Decimal("12.5"))
    for body, wanted in (
        ({"comm_no": "nope", "amount": 1}, 404),
        ({"comm_no": rtu.comm_no, "amount": 1}, 404),
        ({"comm_no": dev.comm_no, "amount": 0}, 400),
        ({"comm_no": dev.comm_no, "amount": -3}, 400),
        ({"comm_no": dev.comm_no, "amount": "abc"}, 400),
        ({"comm_no": dev.comm_no}, 400),
    ):
        assert (await platform.raw("_sim/external_recharge", body))[0] == wanted, body
    assert counters(dev) == (n + 1, total + Decimal("12.5"))
    with pytest.raises(ValueError, match="unknown meter"):
        platform.sim.external_recharge(rtu.comm_no, Decimal(1))


async def test_getchargestate_returns_the_counters(start: Start) -> None:
    """remote_charge_state with all six fields, as the meter holds them after charges of every kind."""
    platform = await start(strict=True)
    dev = meters(platform.sim)[3]
    platform.sim.external_recharge(dev.comm_no, Decimal("7.25"))
    n, total = counters(dev)
    await platform.charge(dev.comm_no, 3, float(total + 3), n + 1)
    ctrl_id = await platform.add(dev.comm_no, CHARGE_STATE, {})
    await platform.sim.settle()
    data = await platform.returned(ctrl_id)
    assert set(data) == CHARGE_STATE_FIELDS
    assert data == dev.charges
    assert (data["remote_charge_times"], data["remote_charge_value"], data["remote_total_value"]) == (
        n + 1,
        3.0,
        float(total + 3),
    )
    assert data["card_charge_times"] >= 1


async def test_lenient_takes_any_counters(start: Start) -> None:
    """strict=False (and strict with the check switched off): count 0 is the next, any total is taken, and what
    was bought grows by the charge (a total_value that disagrees does not rewrite it)."""
    for strict in (False, True):
        platform = await start(strict=strict)
        assert platform.sim.check_charge_sequence is strict
        platform.sim.check_charge_sequence = False
        dev = meters(platform.sim)[0]
        (n, total), (remain, bought) = counters(dev), money(dev)
        one = await platform.returned(await platform.charge(dev.comm_no, 10, 999.5, 0))
        assert one["success"] == CHARGE_OK
        assert counters(dev) == (n + 1, total + 10)
        assert money(dev) == (remain + 10, bought + 10)
        two = await platform.returned(await platform.charge(dev.comm_no, 10, 999.5, 0))  # the same again
        assert (two["success"], two["remain"]) == (CHARGE_OK, float(q3(remain + 20)))
        three = await platform.returned(await platform.charge(dev.comm_no, 1, 5, 77))
        assert three["success"] == CHARGE_OK
        assert counters(dev) == (77, total + 21)


# ---- retries and their reports ------------------------------------------------------------------------


async def test_retry_reports_every_attempt(start: Start, receiver: tuple[Receiver, str]) -> None:
    """A meter that fails twice: two Reports for one ctrl_id, alike; the third attempt succeeds."""
    recorder, url = receiver
    platform = await start(strict=True, push_url=url)
    sim, dev = platform.sim, meters(platform.sim)[0]
    sim.fail_commands = {dev.comm_no}
    ctrl_id = await platform.add(dev.comm_no, VALVE_OFF, {}, "RETRY-1")
    created = (await platform.model(ctrl_id))["ctrl_time"]
    await sim.settle()
    assert (await platform.model(ctrl_id))["ctrl_state"] == 4
    assert (await platform.ctrl(f"Retry/{ctrl_id}")) == {"Data": ctrl_id, "State": "success", "Message": ""}
    model = await platform.model(ctrl_id)
    assert (model["ctrl_state"], model["ctrl_time"], model["return_data"]) == (0, created, "{}")
    await sim.settle()
    first, second = (json.loads(body) for body in recorder.reports())
    assert [item["ctrl_id"] for item in first + second] == [ctrl_id, ctrl_id]
    assert first[0]["ctrl_state"] == second[0]["ctrl_state"] == 4
    assert first[0]["ctrl_feedback_msg"] == second[0]["ctrl_feedback_msg"] == "表计执行失败"
    assert first[0]["ctrl_time"] == second[0]["ctrl_time"] == created.replace("T", " ")
    assert sim.state()["attempts"][ctrl_id] == 2
    sim.fail_commands = False
    await platform.ctrl(f"Retry/{ctrl_id}")
    await sim.settle()
    assert len(recorder.reports()) == 3
    assert json.loads(recorder.reports()[-1])[0]["ctrl_state"] == 3
    assert sim.attempts[ctrl_id] == 3
    assert dev.flags["valve_open"] is False
    refused = await platform.ctrl(f"Retry/{ctrl_id}")  # a success is not retried
    assert (refused["State"], refused["Data"]) == ("failed", 0)
    assert sim.attempts[ctrl_id] == 3


async def test_retry_after_timeout_and_cancel(start: Start, receiver: tuple[Receiver, str]) -> None:
    """Timed out and cancelled tasks go back to waiting and run again; each end is reported."""
    recorder, url = receiver
    platform = await start(push_url=url)
    sim, (one, two) = platform.sim, meters(platform.sim)[:2]
    sim.timeout_commands = {one.comm_no}
    timed_out = await platform.add(one.comm_no, VALVE_OFF, {})
    cancelled = await platform.add(two.comm_no, VALVE_OFF, {})
    assert (await platform.ctrl(f"Cancel/{cancelled}"))["State"] == "success"
    await sim.settle()
    assert [(await platform.model(i))["ctrl_state"] for i in (timed_out, cancelled)] == [6, 5]
    sim.timeout_commands = False
    answer = await platform.ctrl("RetryMulti", [timed_out, cancelled])
    assert [item["result"] for item in answer["Data"]] == [True, True]
    await sim.settle()
    assert [(await platform.model(i))["ctrl_state"] for i in (timed_out, cancelled)] == [3, 3]
    ends = [(item["ctrl_id"], item["ctrl_state"]) for body in recorder.reports() for item in json.loads(body)]
    assert sorted(ends) == sorted([(cancelled, 5), (timed_out, 6), (timed_out, 3), (cancelled, 3)])
    assert (sim.attempts[timed_out], sim.attempts[cancelled]) == (2, 2)
    assert (one.flags["valve_open"], two.flags["valve_open"]) == (False, False)


async def test_resend_report_is_byte_identical(start: Start, receiver: tuple[Receiver, str]) -> None:
    """resend_report posts the task's last Report again, byte for byte; /_sim/resend_report does too."""
    recorder, url = receiver
    platform = await start(strict=True, push_url=url)
    sim, dev = platform.sim, meters(platform.sim)[0]
    n, total = counters(dev)
    ctrl_id = await platform.charge(dev.comm_no, 8, float(total + 8), n + 1)
    other = await platform.charge(dev.comm_no, 8, float(total + 8), n + 1)  # refused: a later report
    [body, later] = recorder.reports()
    before = money(dev)
    status, answer = await sim.resend_report(ctrl_id)
    assert (status, answer["State"]) == (200, "success")
    assert recorder.reports()[-1] == body
    status, _type, text = await platform.raw("_sim/resend_report", {"ctrl_id": other})
    assert (status, json.loads(text)["status"]) == (200, 200)
    assert recorder.reports()[-1] == later
    assert recorder.reports() == [body, later, body, later]
    assert money(dev) == before  # re-sends move nothing
    assert counters(dev) == (n + 1, total + 8)
    with pytest.raises(ValueError, match="no Report"):
        await sim.resend_report(9999)
    assert (await platform.raw("_sim/resend_report", {"ctrl_id": 9999}))[0] == 404


async def test_resend_pending_after_a_failed_push(start: Start, receiver: tuple[Receiver, str]) -> None:
    """A Report our side did not take is sent again by resend_pending, identical; a taken one is not."""
    recorder, url = receiver
    platform = await start(push_url=url)
    sim, dev = platform.sim, meters(platform.sim)[0]
    recorder.accept = False
    ctrl_id = await platform.add(dev.comm_no, VALVE_OFF, {})
    await sim.settle()
    [push] = [p for p in sim.outbox if p.path.endswith("CtrlData/Report")]
    assert (push.delivered, push.attempts) == (False, 1)
    recorder.accept = True
    answers = await sim.resend_pending()  # the valve event's push was refused too
    assert [(status, answer["State"]) for status, answer in answers] == [(200, "success")] * 2
    first, again = recorder.reports()
    assert first == again
    assert json.loads(again)[0]["ctrl_id"] == ctrl_id
    assert await sim.resend_pending() == []
    assert len(recorder.reports()) == 2


# ---- lost answers -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["lost_502", "lost_garbled", "drop", "timeout"])
async def test_lost_answer_on_add_still_queues(start: Start, mode: str) -> None:
    """The work is done, only the answer is lost: the command is in GetList by its ctrl_define_no."""
    assert mode in LOST_ANSWER_MODES
    platform = await start(strict=True)
    dev = meters(platform.sim)[0]
    platform.sim.fail_next(mode, endpoint="Add")
    body: dict[str, Any] = {
        "processor_name": "iotmeterv1",
        "ctrl_define_no": f"LOST-{mode}",
        "target_comm_no": dev.comm_no,
    }
    body |= {"target_devtype": 1, "ctrl_type": VALVE_OFF, "ctrl_data": "{}"}
    if mode in ("drop", "timeout"):
        with pytest.raises((aiohttp.ClientError, TimeoutError)):
            await platform.raw("api/Conf/CtrlData/Add", body, timeout=1.0)
    else:
        status, content_type, text = await platform.raw("api/Conf/CtrlData/Add", body)
        if mode == "lost_502":
            assert (status, content_type) == (502, "text/html")
            assert "502" in text
        else:
            assert status == 200
            with pytest.raises(json.JSONDecodeError):
                json.loads(text)
    listed = await platform.ctrl("GetList?startrow=0&rowcount=10", {"ctrl_define_no": f"LOST-{mode}"})
    assert [row["target_comm_no"] for row in listed["Data"]] == [dev.comm_no]
    assert [c["ctrl_define_no"] for c in platform.sim.commands.values()] == [f"LOST-{mode}"]


@pytest.mark.parametrize("mode", ["lost_502", "lost_garbled"])
async def test_lost_answers_on_other_endpoints(start: Start, mode: str) -> None:
    """Login issues its token, Retry requeues, the data API answers late: every endpoint does the work first."""
    platform = await start()
    sim, dev = platform.sim, meters(platform.sim)[0]
    tokens = len(sim._tokens)  # how many logins the platform granted
    sim.fail_next(mode, endpoint="Login")
    pwd = hashlib.md5(sim.password.encode()).hexdigest()
    status, _type, _text = await platform.raw(f"api/Conf/Account/Login?loginName={sim.login_name}&pwd={pwd}")
    assert status == (502 if mode == "lost_502" else 200)
    assert len(sim._tokens) == tokens + 1
    sim.fail_commands = True
    ctrl_id = await platform.add(dev.comm_no, VALVE_OFF, {})
    await sim.settle()
    sim.fail_commands = False
    sim.fail_next(mode, endpoint="Retry")
    status, _type, text = await platform.raw(f"api/Conf/CtrlData/Retry/{ctrl_id}")
    assert status == (502 if mode == "lost_502" else 200)
    with pytest.raises(json.JSONDecodeError):
        json.loads(text)
    assert (await platform.model(ctrl_id))["ctrl_state"] == 0
    assert sim.attempts[ctrl_id] == 2
    sim.fail_next(mode, endpoint="GetRealModel")
    headers = {"company_no": sim.company_no, "data_api_key": sim.data_api_key}
    url = f"{platform.base}/api/Data/MeterData/GetRealModel/{dev.comm_no}"
    async with platform.http.post(url, headers=headers) as resp:
        assert resp.status == (502 if mode == "lost_502" else 200)
        with pytest.raises(json.JSONDecodeError):
            json.loads(await resp.text())
    assert sim.requests[-1][0] == "GetRealModel"


async def test_errors_before_the_work_queue_nothing(start: Start) -> None:
    """http500 and malformed strike before the work: nothing is queued."""
    platform = await start(strict=True)
    dev = meters(platform.sim)[0]
    for mode in ("http500", "malformed"):
        platform.sim.fail_next(mode, endpoint="Add")
        body: dict[str, Any] = {"processor_name": "iotmeterv1", "ctrl_define_no": mode, "target_comm_no": dev.comm_no}
        body |= {"target_devtype": 1, "ctrl_type": VALVE_OFF, "ctrl_data": "{}"}
        await platform.raw("api/Conf/CtrlData/Add", body)
    assert platform.sim.commands == {}
