"""Run a vendor simulator until Ctrl-C: python -m simulator goldcard|cangnan|iotmeter|kumir --meters 10."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from aiohttp import web

from .cangnan import API_ROOT, PUSH_PATHS, CangnanEnvelope, CangnanSimulator
from .common import SimulatorBase
from .goldcard import ENDPOINTS, GoldcardSimulator
from .iotmeter import PUSH_PATHS as IOT_PUSH_PATHS
from .iotmeter import IotMeterSimulator
from .kumir import ENDPOINTS as KUMIR_ENDPOINTS
from .kumir import KINDS as KUMIR_KINDS
from .kumir import KumirSimulator


def _gas_cloud(
    vendors: argparse._SubParsersAction[argparse.ArgumentParser],
    name: str,
    about: str,
    *,
    port: int,
    pushes: str,
    delay: str,
) -> argparse.ArgumentParser:
    """A sub-command with what the three gas clouds share: address, meters, pushes, ticking, commands, strictness."""
    cloud = vendors.add_parser(name, help=about)
    cloud.add_argument("--host", default="127.0.0.1")
    cloud.add_argument("--port", type=int, default=port)
    cloud.add_argument("--meters", type=int, default=10)
    cloud.add_argument("--push-url", help=pushes)
    cloud.add_argument("--tick-seconds", type=float, default=60.0, help="tick every N seconds; 0 turns it off")
    cloud.add_argument("--tick-minutes", type=float, default=15.0, help="simulated minutes of use per tick")
    cloud.add_argument("--command-delay", type=float, default=5.0, help=delay)
    cloud.add_argument("--seed", type=int, default=1)
    cloud.add_argument(
        "--lenient",
        action="store_true",
        help="forgive what a strict server refuses (repeated serials, recharge numbers that do not follow on)",
    )
    return cloud


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m simulator", description=__doc__)
    vendors = parser.add_subparsers(dest="vendor", required=True)
    goldcard = _gas_cloud(
        vendors,
        "goldcard",
        "Goldcard (金卡) DAS, endpoints 1001-1015, pushes 2001-2003",
        port=8901,
        pushes="where to send 2001/2002/2003 (our webhook base URL)",
        delay="seconds before a 1004 command acts",
    )
    goldcard.add_argument("--app-code", default="SIMAPP01")
    goldcard.add_argument("--app-secret", default="sim-secret")
    goldcard.add_argument("--company-code", default="10001058")
    goldcard.add_argument("--factor-no", default="0011")
    cangnan = _gas_cloud(
        vendors,
        "cangnan",
        "Cangnan (苍南) CNMCSP, /rest/Standard/..., pushes of chapter 6",
        port=8902,
        pushes="our webhook base URL: readings go to <url>/reading, alarms to <url>/alarm",
        delay="seconds before a recharge or valve acts",
    )
    cangnan.add_argument("--billing-mode", choices=("meter", "system"), default="meter")
    cangnan.add_argument("--app-token", default="SIMTOKEN01")
    cangnan.add_argument("--app-secret", default="sim-secret")
    cangnan.add_argument("--data-from", default="苍南仪表集团")
    cangnan.add_argument("--encryption-key", metavar="HEX", help="3DES key (32 or 48 hex digits): turns on 3DES + MAC")
    cangnan.add_argument("--encryption-mode", choices=("cbc", "ecb"), default="cbc")
    cangnan.add_argument("--encryption-padding", choices=("pkcs7", "zero"), default="pkcs7")
    cangnan.add_argument("--encryption-mac", choices=("x919", "hmac_sha256"), default="x919")
    cangnan.add_argument("--encryption-encoding", choices=("base64", "hex"), default="base64")
    cangnan.add_argument(
        "--state-column", metavar="NAME", help="ReadingData rows carry the meter state (0/1/-1/-2) in this column"
    )
    iot = _gas_cloud(
        vendors,
        "iotmeter",
        "IoT meter data platform: data API, iotmeterv1 control API, pushes",
        port=8903,
        pushes="our base URL: readings, alarms, events and command reports go under it",
        delay="seconds between a command's states",
    )
    iot.add_argument("--rtus", type=int, default=2)
    iot.add_argument("--token-ttl", type=float, default=3600.0, help="seconds a login token lives")
    iot.add_argument("--company-no", default="1001")
    iot.add_argument("--data-api-key", default="496d1bac094f11e79d9c0a0027000010")
    iot.add_argument("--login-name", default="admin")
    iot.add_argument("--password", default="123456")
    _add_kumir(vendors)
    return parser


def _add_kumir(vendors: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the kumir sub-command (apart, so _parser stays readable)."""
    kumir = vendors.add_parser("kumir", help="NTC KUMIR KUMIR-RESURS: login/session/logout, XML export and import")
    kumir.add_argument("--host", default="127.0.0.1")
    kumir.add_argument("--port", type=int, default=8904)
    kumir.add_argument("--nodes", type=int, default=6, help="nodes, cycling m234, ce303, tv7, ek270, pulsar, m230")
    kumir.add_argument("--login", default="example")
    kumir.add_argument("--password", default="example")
    kumir.add_argument("--time-zone", default="Europe/Moscow")
    kumir.add_argument("--session-ttl", type=float, default=1800.0, help="seconds a session lives")
    kumir.add_argument(
        "--collector-minutes",
        type=float,
        default=0.0,
        help="the total archive is what the collector read every N minutes; 0 (default): read at every export",
    )
    kumir.add_argument(
        "--collector-turns",
        type=int,
        default=1,
        help="with --collector-minutes, each reading reads 1/N of the nodes, in turn; 1 (default): all of them",
    )
    # The archives follow the clock; ticking only runs the simulated clock faster than the real one.
    kumir.add_argument("--tick-seconds", type=float, default=0.0, help="tick every N seconds; 0 (default) is off")
    kumir.add_argument("--tick-minutes", type=float, default=15.0, help="simulated minutes per tick")
    kumir.add_argument("--seed", type=int, default=1)


async def _serve(sim: SimulatorBase, app: web.Application, args: argparse.Namespace, lines: list[str]) -> None:
    """Serve `app` until SIGTERM or Ctrl-C, printing `lines` (the settings to enter in Home Assistant) first."""
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        await web.TCPSite(runner, args.host, args.port).start()
        sys.stdout.write("\n".join(lines) + "\n")
        sys.stdout.flush()
        if args.tick_seconds > 0:
            await sim.start_ticking(args.tick_seconds, minutes=args.tick_minutes)
        stop = asyncio.Event()
        # SIGTERM (from a dev script or a service manager) stops as cleanly as Ctrl-C.
        with contextlib.suppress(NotImplementedError):
            asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        await stop.wait()
    finally:
        await sim.close()
        await runner.cleanup()


async def _run_goldcard(args: argparse.Namespace) -> None:
    sim = GoldcardSimulator(
        strict=not args.lenient,
        app_code=args.app_code,
        app_secret=args.app_secret,
        company_code=args.company_code,
        factor_no=args.factor_no,
        meters=args.meters,
        command_delay=args.command_delay,
        push_url=args.push_url,
        seed=args.seed,
    )
    base = f"http://{args.host}:{args.port}"
    lines = [
        f"Goldcard DAS simulator on {base}  (Ctrl-C stops it)",
        f"  base_url      {base}",
        f"  app_code      {sim.app_code}",
        f"  app_secret    {sim.app_secret}",
        f"  company_code  {sim.company_code}",
        f"  factor_no     {sim.factor_no}",
        f"  time zone     {sim.tz}",
        f"  meters        {', '.join(sim.meters)}",
        f"  push URL      {sim.push_url or '(none: POST /_sim/push_url to set one)'}",
        f"  endpoints     {', '.join(ENDPOINTS)}; control: GET {base}/_sim/state",
    ]
    await _serve(sim, sim.app, args, lines)


async def _run_cangnan(args: argparse.Namespace) -> None:
    envelope = None
    if args.encryption_key:
        settings = {"mode": args.encryption_mode, "padding": args.encryption_padding}
        settings |= {"mac": args.encryption_mac, "encoding": args.encryption_encoding}
        try:
            envelope = CangnanEnvelope.from_hex(args.encryption_key, **settings)
        except ValueError as err:
            raise SystemExit(f"--encryption-key: {err}") from None
    sim = CangnanSimulator(
        strict=not args.lenient,
        app_token=args.app_token,
        app_secret=args.app_secret,
        data_from=args.data_from,
        meters=args.meters,
        billing_mode=args.billing_mode,
        command_delay=args.command_delay,
        push_url=args.push_url,
        seed=args.seed,
        envelope=envelope,
    )
    sim.state_column = args.state_column
    base = f"http://{args.host}:{args.port}"
    if envelope is None:
        encryption = "off"
    else:
        encryption = f"3DES + MAC, key {envelope.key.hex().upper()}"
        encryption += f", {envelope.mode}, {envelope.padding}, MAC {envelope.mac}, {envelope.encoding}"
    push = f"{sim.push_url.rstrip('/')}/{{{','.join(PUSH_PATHS.values())}}}" if sim.push_url else None
    lines = [
        f"Cangnan CNMCSP simulator on {base}  (Ctrl-C stops it)",
        f"  base_url      {base}    (endpoints under {base}/{API_ROOT}/)",
        f"  app_token     {sim.app_token}",
        f"  app_secret    {sim.app_secret}",
        f"  data_from     {sim.data_from}",
        f"  billing mode  {sim.billing_mode}",
        f"  encryption    {encryption}",
        f"  time zone     {sim.tz}",
        f"  push URL      {push or '(none: POST /_sim/push_url to set one)'}",
        f"  control       GET {base}/_sim/state",
        "  meters (UserID:MeterID, one per line):",
        *(f"{meter.user_id}:{meter.meter_id}" for meter in sim.meters.values()),
    ]
    await _serve(sim, sim.app, args, lines)


async def _run_iotmeter(args: argparse.Namespace) -> None:
    sim = IotMeterSimulator(
        strict=not args.lenient,
        company_no=args.company_no,
        data_api_key=args.data_api_key,
        login_name=args.login_name,
        password=args.password,
        meters=args.meters,
        rtus=args.rtus,
        token_ttl=args.token_ttl,
        command_delay=args.command_delay,
        push_url=args.push_url,
        seed=args.seed,
    )
    base = f"http://{args.host}:{args.port}"
    push = ", ".join(IOT_PUSH_PATHS.values())
    # One app serves both APIs; a real deployment has two base URLs (the spec's test server: ports 2102 and 2101).
    lines = [
        f"IoT meter platform simulator on {base}  (Ctrl-C stops it)",
        f"  data URL      {base}",
        f"  company_no    {sim.company_no}",
        f"  data_api_key  {sim.data_api_key}",
        f"  control URL   {base}",
        f"  login name    {sim.login_name}",
        f"  password      {sim.password}",
        f"  time zone     {sim.tz}",
        f"  push URL      {sim.push_url or '(none: POST /_sim/push_url to set one)'}",
        f"  pushes        {push} (under the push URL)",
        f"  control       GET {base}/_sim/state",
        "  meters:",
        *(f"{no}" for no, dev in sim.devices.items() if dev.device_type == 1),
        "  RTUs:",
        *(f"{no}" for no, dev in sim.devices.items() if dev.device_type == 2),
    ]
    await _serve(sim, sim.app, args, lines)


async def _run_kumir(args: argparse.Namespace) -> None:
    try:
        tz = ZoneInfo(args.time_zone)
    except (ZoneInfoNotFoundError, ValueError):
        raise SystemExit(f"--time-zone: unknown time zone {args.time_zone!r}") from None
    sim = KumirSimulator(
        login=args.login,
        password=args.password,
        tz=tz,
        session_ttl=args.session_ttl,
        nodes=args.nodes,
        seed=args.seed,
    )
    sim.collector_minutes = args.collector_minutes
    sim.collector_turns = args.collector_turns
    base = f"http://{args.host}:{args.port}"
    lines = [
        f"KUMIR-RESURS simulator on {base}  (Ctrl-C stops it)",
        f"  base_url      {base}",
        f"  login         {sim.login}",
        f"  password      {sim.password}",
        f"  time zone     {sim.tz}",
        f"  session       {sim.session_ttl:g} s (renew with POST {base}/session.php)",
        f"  endpoints     {', '.join(KUMIR_ENDPOINTS.values())}",
        f"  control       GET {base}/_sim/state",
        "  nodes (code  serial  device type  systems):",
        *(
            f"{node.code}  {node.num}  {node.dev}  {KUMIR_KINDS[node.kind or node.dev].describe()}  "
            f"[{KUMIR_KINDS[node.kind or node.dev].title}]"
            for node in sim.nodes.values()
        ),
    ]
    await _serve(sim, sim.app, args, lines)


def main(argv: list[str] | None = None) -> None:
    """Parse the command line and run the chosen simulator."""
    args = _parser().parse_args(argv)
    runners = {"goldcard": _run_goldcard, "cangnan": _run_cangnan, "iotmeter": _run_iotmeter, "kumir": _run_kumir}
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(runners[args.vendor](args))


if __name__ == "__main__":
    main()
