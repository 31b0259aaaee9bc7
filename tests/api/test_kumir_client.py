"""KumirClient at HTTP level: settings, session edge cases, odd server answers, discovery and import."""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from custom_components.meter_cloud.api import (
    AuthenticationError,
    CloudConnectionError,
    CommandError,
    ConfigurationError,
    ImportRecord,
    KumirClient,
    MeterData,
    ResponseError,
)
from custom_components.meter_cloud.api.kumir.client import format_nodes, parse_nodes, parse_systems
from simulator.kumir import REFUSAL_SHAPES, KumirSimulator, _fmt

TZ = ZoneInfo("Europe/Moscow")
# An m234 and a heat meter.
pytestmark = pytest.mark.kumir_nodes([("Pol_276", "34781353", "m234"), ("Pol_278", "11112222", "tv7")])


DST_EXPORT = (
    '<?xml version="1.0" encoding="UTF-8"?><d><nodes><n code="Pol_1" num="1" dev="m234"><m234><hour><sys num="1">'
    + "".join(
        f"<r><nodata>false</nodata><dat>2026-10-25T{hour}:00:00</dat><EAi>{value}</EAi></r>"
        for hour, value in (("01", 10), ("02", 11), ("02", 12), ("03", 13))
    )
    + "</sys></hour></m234></n>"
    # A node nobody follows: never becomes a meter.
    + '<n code="Pol_9" num="9" dev="m234"><m234><hour><sys num="1"><r><nodata>false</nodata>'
    + "<dat>2026-10-25T03:00:00</dat><EAi>1</EAi></r></sys></hour></m234></n></nodes></d>"
)


def _config(base: str, **extra: Any) -> dict[str, Any]:
    return {"base_url": base, "login": "example", "login_password": "example", "systems": "1, 2"} | extra


def _client(session: aiohttp.ClientSession, server: TestServer, **extra: Any) -> KumirClient:
    return KumirClient(session, _config(str(server.make_url("")).rstrip("/"), **extra), tz=TZ)


def test_settings_are_checked() -> None:
    """Node lists, systems, archives, transport and time zone: clear errors before anything is sent."""
    nodes = parse_nodes("# comment\n\nPol_1 1 m234\nPol_2;2;tv7\n")
    assert format_nodes(nodes) == "Pol_1 1 m234\nPol_2 2 tv7"
    assert str(nodes[1]) == "Pol_2 · tv7 2"
    with pytest.raises(ConfigurationError) as err:
        parse_nodes("Pol_1 1")
    assert err.value.reason == "invalid_node_list"
    assert parse_systems("3, 1;2 1") == [1, 2, 3]
    assert parse_systems("0002, 999") == [2, 999]
    for bad in ("", "one", "1, 1000", "-1", "1" * 5000):
        with pytest.raises(ConfigurationError) as err:
            parse_systems(bad)
        assert err.value.reason == "invalid_systems"
    session: Any = None
    with pytest.raises(ConfigurationError) as err:
        KumirClient(session, _config("http://x", archives=["minute"]), tz=TZ)
    assert err.value.reason == "invalid_archives"
    with pytest.raises(ConfigurationError) as err:
        KumirClient(session, _config("http://x", transport="ftp"), tz=TZ)
    assert err.value.reason == "invalid_config"
    assert KumirClient.timezone_for({"time_zone": " "}) is None
    assert KumirClient.timezone_for({"time_zone": "Asia/Omsk"}) == "Asia/Omsk"
    with pytest.raises(ConfigurationError):
        KumirClient.timezone_for({"time_zone": "../etc/passwd"})
    assert KumirClient.unique_id(_config("https://V4.ntckumir.ru/")) == "kumir_v4.ntckumir.ru_example"
    client = KumirClient(session, _config("http://x", backfill_days=9999), tz=TZ)
    assert client.backfill == timedelta(days=366)


async def test_session_lifecycle(kumir_sim: KumirSimulator, kumir_server: TestServer) -> None:
    """Renewal refused → new login; a session refused twice → AuthenticationError; close only with a session."""
    kumir = kumir_sim
    async with aiohttp.ClientSession() as session:
        client = _client(session, kumir_server)
        await client.async_close()  # no session yet: nothing is sent
        assert kumir.requests == []
        assert len(await client.async_get_meters()) == 2
        client.clock = lambda: 1e12  # long after the login: renew
        kumir.fail_next("session_gone", endpoint="session")
        await client.async_get_meters()
        names = [name for name, *_ in kumir.requests]
        assert names[-5:] == ["session", "login", "export", "export", "export"]
        client.clock = lambda: 3e12
        kumir.fail_next("http500", endpoint="session")
        with pytest.raises(CloudConnectionError):
            await client.async_get_meters()
        # Every export sent back to the start page, even right after a new login.
        kumir.fail_next("session_gone", count=2, endpoint="export")
        with pytest.raises(CommandError) as err:
            await client.async_get_meters()
        assert err.value.reason == "session_refused"  # not the password: no reauthentication
        await client.async_close()  # the server dropped the session: nothing to end
        assert kumir.requests[-1][0] == "export"
        await client.async_get_meters()
        await client.async_close()
        assert kumir.requests[-1] == ("logout", "none", {"session": True})
        # A failed goodbye raises nothing (unload and the config flow rely on it) and forgets the session.
        await client.async_get_meters()
        kumir.fail_next("http500", endpoint="logout")
        await client.async_close()
        assert kumir.requests[-1] == ("logout", "none", {"fault": "http500"})
        sent = len(kumir.requests)
        await client.async_close()
        assert len(kumir.requests) == sent  # the session was forgotten: nothing more is sent


async def test_history_series_and_discovery(kumir_sim: KumirSimulator, kumir_server: TestServer) -> None:
    """Hour and day records merged (hour wins); only cumulative parameters; all nodes when none are followed."""
    kumir = kumir_sim
    async with aiohttp.ClientSession() as session:
        client = _client(session, kumir_server, archives=["hour", "day"])
        assert [(n.code, n.serial, n.devtype) for n in await client.async_discover()] == [
            ("Pol_276", "34781353", "m234"),
            ("Pol_278", "11112222", "tv7"),
        ]
        meters = await client.async_get_meters()  # no node list: every node of the account
        assert set(meters) == {"Pol_276/34781353", "Pol_278/11112222"}
        assert meters["Pol_278/11112222"].model == "tv7"
        end = datetime.now(TZ)
        series = await client.async_history_series(list(meters.values()), end - timedelta(days=2), end)
        keys = {(s.meter_id, s.key) for s in series}
        assert ("Pol_276/34781353", "s1_EAi") in keys
        assert ("Pol_278/11112222", "s2_Q") in keys
        assert not [key for key in keys if key[1].endswith(("U_A", "T1", "P1"))]
        eai = next(s for s in series if s.key == "s1_EAi")
        assert eai.unit == "kWh"
        assert [p.time for p in eai.points] == sorted(p.time for p in eai.points)
        node = kumir.nodes["Pol_276"]
        assert len(eai.points) > 40
        for point in eai.points:
            assert point.value == Decimal(_fmt(kumir.counter_value(node, 1, "EAi", point.time)))
        # A meter the client never saw: its node comes from the meter's own fields.
        stranger = MeterData(meter_id="Pol_278/11112222", user_no="Pol_278", device_id="11112222", model="tv7")
        fresh = _client(session, kumir_server, archives=["day"])
        series = await fresh.async_history_series([stranger], end - timedelta(days=3), end)
        assert {s.key for s in series} >= {"s1_Q", "s2_V1"}


async def test_odd_login_answers(socket_enabled: None, aiohttp_server: Any) -> None:
    """A login page instead of a redirect, a redirect without a cookie, an export refused with a reason."""
    mode = {"login": "page"}

    async def login(_request: web.Request) -> web.Response:
        if mode["login"] == "page":
            return web.Response(text="<html>login</html>", content_type="text/html")
        if mode["login"] == "500":
            return web.Response(status=500)
        response = web.Response(status=302, headers={"Location": "/interface.php"})
        if mode["login"] == "cookie":
            response.set_cookie("session_id", "abc")
        return response

    async def export(_request: web.Request) -> web.Response:
        if mode.get("export") == "moved":
            return web.Response(status=301, headers={"Location": "https://elsewhere.example/export.php"})
        if mode.get("export") == "dst":
            return web.Response(body=DST_EXPORT.encode(), content_type="application/xml")
        body = "<result><status>error</status><message>bad period</message></result>"
        return web.Response(status=400, text=body, content_type="application/xml")

    async def imported(_request: web.Request) -> web.Response:
        return web.Response(text=mode.get("import", ""), content_type="text/plain")

    app = web.Application()
    app.router.add_post("/login.php", login)
    app.router.add_post("/modules/xml_import_export/export.php", export)
    app.router.add_post("/modules/xml_import_export/import.php", imported)
    server = await aiohttp_server(app, host="127.0.0.1")
    async with aiohttp.ClientSession() as session:
        client = _client(session, server, nodes="Pol_1 1 m234")
        with pytest.raises(ResponseError):
            await client.async_validate()
        mode["login"] = "500"
        with pytest.raises(CloudConnectionError):
            await client.async_validate()
        mode["login"] = "nocookie"
        with pytest.raises(ResponseError) as err:
            await client.async_validate()
        assert err.value.reason == "no_session"
        mode["login"] = "cookie"  # the text's own name for the cookie is accepted too
        with pytest.raises(CommandError) as err:
            await client.async_validate()  # logged in; the node check's export is refused in the server's words
        assert (err.value.reason, str(err.value), err.value.code) == ("kumir_refused", "bad period", "HTTP 400")
        with pytest.raises(CommandError) as err:
            await client.async_get_meters()
        assert (err.value.reason, str(err.value)) == ("kumir_refused", "bad period")
        record = ImportRecord("Pol_1", "1", "m234", "day", 1, datetime(2026, 11, 1), {"EAi": Decimal("1.5")})
        assert await client.async_import([record]) == {}  # an empty 200: nothing to report
        mode["import"] = "OK"
        assert await client.async_import([record]) == {}
        mode["import"] = "<result><status>error</status><message>no</message></result>"
        with pytest.raises(CommandError):
            await client.async_import([record])
        mode["import"] = "<result><status>"
        with pytest.raises(ResponseError):
            await client.async_import([record])
        mode["export"] = "moved"
        with pytest.raises(ConfigurationError) as err:
            await client.async_get_meters()
        assert err.value.reason == "unexpected_redirect"

        # Europe/Berlin falls back on 2026-10-25: 02:00 comes twice; both hours are kept, in order.
        mode["export"] = "dst"
        berlin = KumirClient(session, {**client._config, "archives": ["hour"]}, tz=ZoneInfo("Europe/Berlin"))
        meters = await berlin.async_get_meters()
        assert set(meters) == {"Pol_1/1"}  # Pol_9 is in the answer but not followed
        meter = meters["Pol_1/1"]
        assert meter.values == {"s1_EAi": Decimal("13")}
        end = datetime(2026, 10, 25, 5, tzinfo=ZoneInfo("Europe/Berlin"))
        series = await berlin.async_history_series([meter], end - timedelta(hours=6), end)
        points = series[0].points
        assert [p.value for p in points] == [Decimal(10), Decimal(11), Decimal(12), Decimal(13)]
        assert [p.time.astimezone(ZoneInfo("UTC")).hour for p in points] == [23, 0, 1, 2]


def _names(sim: KumirSimulator, since: int) -> list[str]:
    return [name for name, *_ in sim.requests[since:]]


M234_ID, TV7_ID = "Pol_276/34781353", "Pol_278/11112222"
TWO_NODES = "Pol_276 34781353 m234\nPol_278 11112222 tv7"


@pytest.mark.parametrize("status", [401, 403])
async def test_401_and_403_mean_the_session_is_gone(
    kumir_sim: KumirSimulator, kumir_server: TestServer, status: int
) -> None:
    """On export, import or session.php: one new login and the request again; refused again → no reauthentication."""
    kumir, mode = kumir_sim, f"http{status}"
    record = ImportRecord("Pol_900", "90000001", "m234", "day", 1, datetime(2026, 11, 1), {"EAi": Decimal("1.5")})
    async with aiohttp.ClientSession() as session:
        client = _client(session, kumir_server, nodes=TWO_NODES)
        await client.async_get_meters()

        kumir.fail_next(mode, endpoint="export")
        sent = len(kumir.requests)
        meters = await client.async_get_meters()
        assert _names(kumir, sent) == ["export", "login", "export", "export", "export"]
        meter = meters[M234_ID]
        assert meter.reading_time is not None
        expected = kumir.counter_value(kumir.nodes["Pol_276"], 1, "EAi", meter.reading_time)
        assert meter.values["s1_EAi"] == Decimal(_fmt(expected))

        kumir.fail_next(mode, endpoint="import")
        sent = len(kumir.requests)
        assert await client.async_import([record]) == {"status": "ok", "imported": "1"}
        assert _names(kumir, sent) == ["import", "login", "import"]

        client.clock = lambda: 1e12  # long after the login: renew, and session.php says the session is gone
        kumir.fail_next(mode, endpoint="session")
        sent = len(kumir.requests)
        await client.async_get_meters()
        assert _names(kumir, sent) == ["session", "login", "export", "export", "export"]

        # Refused again right after a fresh login: the account's rights, not the password.
        kumir.fail_next(mode, count=2, endpoint="export")
        with pytest.raises(CommandError) as err:
            await client.async_get_meters()
        assert (err.value.reason, err.value.code) == ("session_refused", f"HTTP {status}")
        # The same with the server's own words: those are shown.
        kumir.refuse("error", status=status, code="E-41", message="Нет доступа к модулю", count=2)
        with pytest.raises(CommandError) as err:
            await client.async_get_meters()
        assert (err.value.reason, err.value.code, str(err.value)) == ("kumir_refused", "E-41", "Нет доступа к модулю")
        # login.php answering the status is no wrong password either; only failed.php is.
        kumir.fail_next(mode, endpoint="login")
        with pytest.raises(CommandError) as err:
            await client.async_get_meters()
        assert (err.value.reason, err.value.code) == ("kumir_refused", f"HTTP {status}")
        kumir.password = "changed"
        with pytest.raises(AuthenticationError):
            await client.async_get_meters()


async def test_a_node_the_account_stops_listing_is_not_reported(
    kumir_sim: KumirSimulator, kumir_server: TestServer
) -> None:
    """Absent from the answers: no meter (so no stale values); named with late (nodata) rows: last values kept."""
    kumir = kumir_sim
    async with aiohttp.ClientSession() as session:
        client = _client(session, kumir_server, nodes=TWO_NODES)
        first = await client.async_get_meters()
        assert set(first) == {M234_ID, TV7_ID}
        kumir.remove_node("Pol_278")
        meters = await client.async_get_meters()
        assert set(meters) == {M234_ID}
        assert meters[M234_ID].values  # the other node goes on as before
        kumir.restore_node("Pol_278")
        back = (await client.async_get_meters())[TV7_ID]
        assert back.reading_time is not None
        expected = kumir.counter_value(kumir.nodes["Pol_278"], 1, "Q", back.reading_time)
        assert back.values["s1_Q"] == Decimal(_fmt(expected))

        # Following every node of the account: the same.
        everyone = _client(session, kumir_server)
        assert set(await everyone.async_get_meters()) == {M234_ID, TV7_ID}
        kumir.remove_node("Pol_276")
        assert set(await everyone.async_get_meters()) == {TV7_ID}
        kumir.restore_node("Pol_276")
        assert list(await everyone.async_get_meters()) == [M234_ID, TV7_ID]

        # A collector running late is another matter: the node is in the answer, its rows are nodata.
        hourly = _client(session, kumir_server, nodes=TWO_NODES, archives=["hour"])
        before = await hourly.async_get_meters()
        assert before[TV7_ID].values
        kumir.late(5)
        late = await hourly.async_get_meters()
        assert set(late) == {M234_ID, TV7_ID}
        assert late[TV7_ID].values == before[TV7_ID].values


async def test_validate_names_nodes_the_server_does_not_return(
    kumir_sim: KumirSimulator, kumir_server: TestServer
) -> None:
    """One total-archive export after the login; a mistyped code, a wrong serial or type is named with the truth."""
    kumir = kumir_sim
    async with aiohttp.ClientSession() as session:
        sent = len(kumir.requests)
        await _client(session, kumir_server, nodes=TWO_NODES).async_validate()
        assert _names(kumir, sent) == ["login", "export"]
        assert kumir.requests[-1][2]["archives"] == ["total"]
        sent = len(kumir.requests)
        await _client(session, kumir_server).async_validate()  # no node listed: discovery follows, no check
        assert _names(kumir, sent) == ["login"]
        wrong = "\n".join(
            (
                "Pol_276 34781353 m234",  # right
                "Pol_27 11112222 tv7",  # mistyped code: the serial is Pol_278's
                "Pol_278 99999999 tv7",  # right code, wrong serial: would have added a second device
                "Pol_999 12345678 m234",  # nothing like it
                "Pol_276 34781353 m230",  # right node, wrong device type
            )
        )
        with pytest.raises(ConfigurationError) as err:
            await _client(session, kumir_server, nodes=wrong).async_validate()
        assert err.value.reason == "unknown_nodes"
        assert str(err.value).split(", ") == [
            "Pol_27 11112222 tv7 → Pol_278 11112222 tv7",
            "Pol_278 99999999 tv7 → Pol_278 11112222 tv7",
            "Pol_999 12345678 m234",
            "Pol_276 34781353 m230 → Pol_276 34781353 m234",
        ]


@pytest.mark.parametrize("status", [200, 400, 403, 500])
@pytest.mark.parametrize("shape", REFUSAL_SHAPES)
async def test_refusals_in_every_shape(
    kumir_sim: KumirSimulator, kumir_server: TestServer, shape: str, status: int
) -> None:
    """Export and import refused in any shape, at any status: the server's message and code, never a traceback."""
    kumir = kumir_sim
    record = ImportRecord("Pol_900", "90000001", "m234", "day", 1, datetime(2026, 11, 1), {"EAi": Decimal("1.5")})
    # A 403 first reads as a lost session: one new login, then the refusal stands.
    count = 2 if status == 403 else 1
    async with aiohttp.ClientSession() as session:
        client = _client(session, kumir_server, nodes=TWO_NODES)
        for endpoint in ("export", "import"):
            kumir.refuse(shape, status=status, code="E-17", message="Период недоступен", count=count, endpoint=endpoint)
            request = client.async_get_meters() if endpoint == "export" else client.async_import([record])
            with pytest.raises(CommandError) as err:
                await request
            assert err.value.reason == "kumir_refused", endpoint
            assert str(err.value) == "Период недоступен"
            assert err.value.code == (f"HTTP {status}" if shape == "legacy" else "E-17")
        assert kumir.faults.faults == []
        assert set(await client.async_get_meters()) == {M234_ID, TV7_ID}


async def test_import_converts_aware_times_and_sends_many_records_at_once(
    kumir_sim: KumirSimulator, kumir_server: TestServer
) -> None:
    """An aware time lands in the account's zone (exports read it back as the same instant); one request for all."""
    kumir = kumir_sim
    utc = datetime(2026, 11, 1, 7, tzinfo=ZoneInfo("UTC"))  # 10:00 in Moscow
    records = [
        ImportRecord("Pol_900", "90000001", "m234", "hour", 1, utc, {"EAi": Decimal("100.5")}),
        ImportRecord("Pol_900", "90000001", "m234", "hour", 2, utc, {"EAi": Decimal("50.25")}),
        ImportRecord("Pol_900", "90000001", "m234", "day", 1, datetime(2026, 11, 1), {"EAi": Decimal("99")}),
        ImportRecord(
            "Pol_901",
            "90000002",
            "tv7",
            "hour",
            1,
            datetime(2026, 11, 1, 8, tzinfo=ZoneInfo("Asia/Vladivostok")),
            {"Q": Decimal("1.5")},
        ),
    ]
    async with aiohttp.ClientSession() as session:
        client = _client(session, kumir_server)
        sent = len(kumir.requests)
        assert await client.async_import(records) == {"status": "ok", "imported": "4"}
        assert _names(kumir, sent) == ["login", "import"]
        assert kumir.nodes["Pol_900"].imported == {
            ("hour", 1, "2026-11-01T10:00:00"): {"EAi": "100.5"},
            ("hour", 2, "2026-11-01T10:00:00"): {"EAi": "50.25"},
            ("day", 1, "2026-11-01T00:00:00"): {"EAi": "99"},
        }
        # 08:00 in Vladivostok (+10) is 01:00 in Moscow (+3).
        assert kumir.nodes["Pol_901"].imported == {("hour", 1, "2026-11-01T01:00:00"): {"Q": "1.5"}}
        meter = MeterData(meter_id="Pol_900/90000001", user_no="Pol_900", device_id="90000001", model="m234")
        series = await client.async_history_series([meter], utc - timedelta(hours=1), utc + timedelta(hours=1))
        points = {s.key: [(p.time, p.value) for p in s.points] for s in series}
        assert (utc, Decimal("100.5")) in points["s1_EAi"]
        assert points["s2_EAi"] == [(utc, Decimal("50.25"))]


async def test_simulator_control_routes(kumir_sim: KumirSimulator, kumir_server: TestServer) -> None:
    """/_sim/remove_node, /_sim/restore_node and /_sim/refuse, as scripts/develop and a human use them."""
    base = str(kumir_server.make_url("")).rstrip("/")
    async with aiohttp.ClientSession() as session:

        async def post(route: str, body: dict[str, Any]) -> tuple[int, Any]:
            async with session.post(f"{base}/_sim/{route}", json=body) as resp:
                return resp.status, await resp.json()

        assert await post("remove_node", {"node": "Pol_278"}) == (200, {"ok": True, "removed": ["Pol_278"]})
        assert (await post("remove_node", {"node": "Pol_278"}))[0] == 400
        client = _client(session, kumir_server)
        assert set(await client.async_get_meters()) == {M234_ID}
        assert await post("restore_node", {"node": "Pol_278"}) == (200, {"ok": True, "removed": []})
        assert (await post("restore_node", {"node": "Pol_278"}))[0] == 400
        assert list(kumir_sim.nodes) == ["Pol_276", "Pol_278"]

        assert (await post("refuse", {"shape": "square"}))[0] == 400
        assert (await post("refuse", {"shape": "error", "endpoint": "login"}))[0] == 400
        status, _ = await post("refuse", {"shape": "text", "status": 500, "code": "9", "message": "down"})
        assert status == 200
        async with session.get(f"{base}/_sim/state") as resp:
            state = await resp.json()
        assert state["faults"][0] | {"count": 1} == {
            "mode": "refuse",
            "count": 1,
            "endpoint": "export",
            "code": "9",
            "shape": "text",
            "status": 500,
            "message": "down",
        }
        with pytest.raises(CommandError) as err:
            await client.async_get_meters()
        assert (err.value.code, str(err.value)) == ("9", "down")


def test_followed_nodes_by_code_or_serial_and_after_one_is_dropped() -> None:
    """A row is followed when its node's code or serial is listed (none listed: every node); dropping a node from
    the list (the repair's "stop following") stops following it at once."""
    session: Any = None
    client = KumirClient(session, _config("http://x", nodes="Pol_1 111 m234\nPol_2 222 tv7"), tz=TZ)
    assert [client._follows(*node) for node in (("Pol_1", "999"), ("Pol_9", "222"), ("Pol_9", "999"))] == [
        True,
        True,
        False,
    ]
    client.stop_following("Pol_1/111")
    assert (client._follows("Pol_1", "111"), client._follows("Pol_2", "222")) == (False, True)
    assert KumirClient(session, _config("http://x"), tz=TZ)._follows("Pol_9", "999")
