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
    CloudConnectionError,
    CommandError,
    ConfigurationError,
    ImportRecord,
    KumirClient,
    MeterData,
    ResponseError,
)
from custom_components.meter_cloud.api.kumir.client import format_nodes, parse_nodes, parse_systems
from simulator.kumir import KumirSimulator, _fmt

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
    for bad in ("", "one", "1, 1000", "-1"):
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
        await client.async_validate()
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
