"""IoT platform sign-in over real HTTP: control settings all or nothing, refused logins, dead tokens."""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from custom_components.meter_cloud.api import (
    AuthenticationError,
    Capability,
    CloudConnectionError,
    CloudTimeoutError,
    CommandError,
    CommandKind,
    ConfigurationError,
    IotMeterClient,
    MeterCloudError,
    MeterData,
)
from custom_components.meter_cloud.api.iotmeter.auth import TOKEN_REFUSAL, is_token_refusal
from simulator.iotmeter import LOGIN_FAILED, TOKEN_FAILED, TOKEN_REFUSALS, IotMeterSimulator

from .conftest import TZ
from .test_iotmeter import Serve, Wire, command, iot_config, make_client, make_sim, meter_nos, names, open_meter, ref

CONTROL = ("control_url", "login_name", "password")
REFUSALS = sorted(TOKEN_REFUSALS)


@pytest.fixture
def wire() -> Wire:
    """The recorder between client and simulator."""
    return Wire()


@pytest.fixture
def sim() -> IotMeterSimulator:
    """The default simulator."""
    return make_sim()


@pytest.fixture
async def server(sim: IotMeterSimulator, serve: Serve) -> TestServer:
    """The simulator on loopback (data and control API)."""
    return await serve(sim)


@pytest.fixture
def client(sim: IotMeterSimulator, server: TestServer, session: aiohttp.ClientSession) -> IotMeterClient:
    """A client with data and control credentials."""
    return make_client(sim, server, session)


def valve(sim: IotMeterSimulator) -> MeterData:
    """A meter whose valve is open, as the client knows it."""
    return MeterData(meter_id=open_meter(sim).comm_no, kind="meter")


# ---- control settings: all or nothing --------------------------------------------------------------


@pytest.mark.parametrize(
    "given",
    [("control_url",), ("login_name",), ("password",), ("control_url", "login_name"), ("login_name", "password")],
)
async def test_part_of_the_control_settings_is_refused(
    sim: IotMeterSimulator, server: TestServer, session: aiohttp.ClientSession, given: tuple[str, ...]
) -> None:
    """One or two of URL, login and password: a configuration error naming the missing ones, before any request."""
    full = iot_config(sim, server)
    config = iot_config(sim, server, control=False) | {key: full[key] for key in given}
    config |= {key: "  " for key in CONTROL if key not in given}  # blank is missing, too
    partial = IotMeterClient(session, config, tz=TZ)
    with pytest.raises(ConfigurationError) as err:
        await partial.async_validate()
    assert err.value.reason == "control_incomplete"
    assert err.value.fields == tuple(key for key in CONTROL if key not in given)
    assert sim.requests == []
    # An entry saved like this before the flow refused it reads, and says why it sends nothing.
    assert not partial.supports(Capability.VALVE)
    assert partial.unsupported_reason(Capability.VALVE, None) == "control_incomplete"


async def test_no_control_settings_is_a_read_only_entry(
    sim: IotMeterSimulator, server: TestServer, session: aiohttp.ClientSession
) -> None:
    """None of the three (or all blank): read-only, validated by the data call alone."""
    reader = IotMeterClient(session, iot_config(sim, server, control=False) | dict.fromkeys(CONTROL, ""), tz=TZ)
    await reader.async_validate()
    assert names(sim) == ["GetRealList2"]
    assert reader.unsupported_reason(Capability.VALVE, None) == "read_only_entry"


# ---- refused logins ---------------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["state_failed", "http401"])
async def test_refused_login_is_the_control_login(
    sim: IotMeterSimulator, server: TestServer, session: aiohttp.ClientSession, how: str
) -> None:
    """The platform's own words, as invalid_control_auth on the password; never mistaken for the data key."""
    sim.login_message = "登录失败：用户名或密码错误"
    if how == "http401":
        sim.fail_next("auth", endpoint="Login")
        client = make_client(sim, server, session)
    else:
        client = make_client(sim, server, session, password="654321")
    with pytest.raises(AuthenticationError) as err:
        await client.async_validate()
    assert (err.value.reason, err.value.fields, str(err.value)) == (
        "invalid_control_auth",
        ("password",),
        "登录失败：用户名或密码错误",
    )
    assert names(sim) == ["GetRealList2", "Login"]


async def test_refused_data_key_names_the_data_key(
    sim: IotMeterSimulator, server: TestServer, session: aiohttp.ClientSession
) -> None:
    """HTTP 401 on the data API: invalid_auth about data_api_key, with the platform's message."""
    client = make_client(sim, server, session, data_api_key="0" * 32)
    with pytest.raises(AuthenticationError) as err:
        await client.async_validate()
    assert (err.value.reason, err.value.fields, err.value.code, str(err.value)) == (
        "invalid_auth",
        ("data_api_key",),
        "401",
        "认证失败",
    )
    assert "Login" not in names(sim)


@pytest.mark.parametrize(("mode", "error"), [("http500", CloudConnectionError), ("drop", CloudTimeoutError)])
async def test_login_errors_do_not_show_the_password_hash(
    sim: IotMeterSimulator, client: IotMeterClient, mode: str, error: type[MeterCloudError]
) -> None:
    """The login's query carries MD5(password), which logs in as well: errors name the path without it."""
    sim.fail_next(mode, endpoint="Login")
    with pytest.raises(MeterCloudError) as err:
        await client.async_validate()
    assert type(err.value) is error
    assert "Account/Login" in str(err.value)
    assert "pwd" not in str(err.value)
    assert hashlib.md5(sim.password.encode()).hexdigest() not in str(err.value)


# ---- dead tokens ------------------------------------------------------------------------------------


@pytest.mark.parametrize("refusal", REFUSALS)
async def test_expired_token_on_a_command(sim: IotMeterSimulator, client: IotMeterClient, refusal: str) -> None:
    """The platform forgot its tokens: one new Login, the refused call once more, the command queued once."""
    await client.async_validate()
    sim.token_refusal = refusal
    assert sim.expire_tokens() == 1
    receipt = await client.async_set_valve(valve(sim), False, "DEAD-1")
    assert names(sim) == ["GetRealList2", "Login", "GetList", "Login", "GetList", "Add"]
    assert command(sim, "DEAD-1")["ctrl_id"] == int(receipt.vendor_id or 0)
    assert len(sim.commands) == 1


@pytest.mark.parametrize("refusal", REFUSALS)
async def test_refused_add_is_sent_once_more(sim: IotMeterSimulator, client: IotMeterClient, refusal: str) -> None:
    """The token dies just before the Add: it is refused before anything is queued, so it is sent once more."""
    sim.token_refusal = refusal
    sim.fail_next("token", endpoint="Add")
    await client.async_set_valve(valve(sim), False, "ADD-1")
    assert names(sim) == ["Login", "GetList", "Add", "Login", "Add"]
    assert [c["ctrl_define_no"] for c in sim.commands.values()] == ["ADD-1"]


@pytest.mark.parametrize("refusal", REFUSALS)
async def test_expired_token_on_a_state_query(sim: IotMeterSimulator, client: IotMeterClient, refusal: str) -> None:
    """A poll's GetModel with a dead token: one new Login, the answer as if nothing happened."""
    receipt = await client.async_set_valve(valve(sim), False, "POLL-1")
    sim.token_refusal = refusal
    sim.expire_tokens()
    [result] = await client.async_command_states([ref("POLL-1", CommandKind.VALVE_CLOSE, receipt.vendor_id)])
    assert (result.serial, result.success) == ("POLL-1", None)
    assert names(sim)[-3:] == ["GetModel", "Login", "GetModel"]
    assert names(sim).count("Login") == 2


@pytest.mark.parametrize("refusal", REFUSALS)
async def test_fresh_token_refused_again_is_not_an_auth_error(
    sim: IotMeterSimulator, client: IotMeterClient, refusal: str
) -> None:
    """A token refused right after a new login: a clear error of its own (no reauth loop), nothing queued."""
    sim.token_refusal = refusal
    sim.fail_next("token", count=2, endpoint="Add")
    with pytest.raises(CloudConnectionError) as err:
        await client.async_set_valve(valve(sim), False, "TWICE-1")
    assert not isinstance(err.value, AuthenticationError)
    assert (err.value.reason, err.value.outcome_unknown, err.value.request_sent) == ("token_refused", False, True)
    assert TOKEN_FAILED in str(err.value)
    assert names(sim) == ["Login", "GetList", "Add", "Login", "Add"]
    assert sim.commands == {}
    # The refused token was dropped: the next call logs in again and goes through.
    await client.async_set_valve(valve(sim), False, "TWICE-1")
    assert names(sim)[5:] == ["Login", "GetList", "Add"]
    assert [c["ctrl_define_no"] for c in sim.commands.values()] == ["TWICE-1"]


async def test_refused_login_after_a_dead_token_is_an_auth_error(
    sim: IotMeterSimulator, client: IotMeterClient
) -> None:
    """Only the login itself refused means the credentials are wrong: then AuthenticationError (reauth)."""
    await client.async_list_commands(valve(sim))
    sim.password = "changed"
    sim.expire_tokens()
    with pytest.raises(AuthenticationError) as err:
        await client.async_list_commands(valve(sim))
    assert (err.value.reason, str(err.value)) == ("invalid_control_auth", LOGIN_FAILED)
    assert names(sim) == ["Login", "GetList", "GetList", "Login"]


async def test_concurrent_calls_with_a_dead_token_log_in_once(sim: IotMeterSimulator, client: IotMeterClient) -> None:
    """Calls refused together share one new login (none drops the token another has just fetched)."""
    meter = MeterData(meter_id=meter_nos(sim)[0])
    await client.async_list_commands(meter)
    sim.token_refusal = "http200"
    sim.expire_tokens()
    await asyncio.gather(*(client.async_list_commands(meter) for _ in range(4)))
    assert names(sim).count("Login") == 2
    assert names(sim).count("GetList") == 1 + 4 + 4


@pytest.mark.parametrize(
    "message",
    [
        TOKEN_FAILED,
        "Token已过期",
        "令牌无效",
        "口令已失效，请重新获取",
        "未登录",
        "登录已过期，请重新登录",
        "登陆超时",
        "会话已过期",
        "认证失败",
        "身份验证失败",
        "未授权",
        "Invalid token",
        "token expired",
        "Not logged in",
        "Please log in again",
        "Unauthorized",
        "Authorization has been denied for this request.",
    ],
)
async def test_token_refusal_wordings(sim: IotMeterSimulator, client: IotMeterClient, message: str) -> None:
    """HTTP 200 + State failed whose Message is about the token or the login: a new login, the call repeated."""
    await client.async_list_commands(valve(sim))
    sim.token_refusal, sim.token_message = "http200", message
    sim.expire_tokens()
    await client.async_list_commands(valve(sim))
    assert names(sim) == ["Login", "GetList", "GetList", "Login", "GetList"]


@pytest.mark.parametrize(
    "message",
    [
        "找不到要修改的数据",
        "ctrl_data 格式错误",
        "不支持的任务类型",
        "任务已过期",
        "价格无效",
        "参数格式错误",
        "expired",
        "invalid",
    ],
)
async def test_other_refusals_stay_command_errors(sim: IotMeterSimulator, client: IotMeterClient, message: str) -> None:
    """A failed command that is not about the token is a refusal: no new login, never sent twice."""
    sim.fail_next("error", endpoint="Add", code=message)
    with pytest.raises(CommandError) as err:
        await client.async_set_valve(valve(sim), False, "NO-1")
    assert str(err.value) == message
    assert names(sim) == ["Login", "GetList", "Add"]
    assert sim.commands == {}


def test_token_refusal_pattern() -> None:
    """The pattern and the rule: 401/403 always, a State failed only with a token word, nothing else."""
    assert is_token_refusal(AuthenticationError("HTTP 403", code="403"))
    assert is_token_refusal(CommandError("token无效或已过期", code="failed"))
    assert not is_token_refusal(CommandError("找不到要删除的数据", code="failed"))
    assert not is_token_refusal(CloudConnectionError("token"))  # a 5xx is not a refusal, whatever it says
    assert not TOKEN_REFUSAL.search("catalog input")  # "log in" only as words
    assert not TOKEN_REFUSAL.search("用户身份证号格式错误")  # an ID card number in an account, not our identity


def test_simulator_refuses_unknown_token_refusal() -> None:
    """The simulator's switch takes only the modes it knows."""
    with pytest.raises(ValueError, match="token_refusal"):
        IotMeterSimulator(meters=1, rtus=0, token_refusal="http418")


async def test_sim_route_expires_tokens(sim: IotMeterSimulator, server: TestServer, client: IotMeterClient) -> None:
    """POST /_sim/expire_tokens kills the tokens and sets how they are refused and what a refused login says."""
    await client.async_validate()
    async with aiohttp.ClientSession() as http:
        body: dict[str, Any] = {"refusal": "http200", "message": "登录已过期", "login_message": "密码错误"}
        async with http.post(server.make_url("/_sim/expire_tokens"), json=body) as resp:
            assert await resp.json() == {"ok": True, "expired": 1, "refusal": "http200"}
        async with http.post(server.make_url("/_sim/expire_tokens"), json={"refusal": "nope"}) as resp:
            assert resp.status == 400
    settings = sim.state()["settings"]
    assert (settings["token_refusal"], settings["token_message"], settings["login_message"]) == (
        "http200",
        "登录已过期",
        "密码错误",
    )
    assert settings["tokens_alive"] == 0
