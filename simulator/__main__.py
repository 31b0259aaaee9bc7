"""Run a vendor simulator until Ctrl-C: python -m simulator goldcard --port 8901 --meters 10."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys

from aiohttp import web

from .goldcard import ENDPOINTS, GoldcardSimulator


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m simulator", description=__doc__)
    vendors = parser.add_subparsers(dest="vendor", required=True)
    goldcard = vendors.add_parser("goldcard", help="Goldcard (金卡) DAS, endpoints 1001-1015, pushes 2001-2003")
    goldcard.add_argument("--host", default="127.0.0.1")
    goldcard.add_argument("--port", type=int, default=8901)
    goldcard.add_argument("--meters", type=int, default=10)
    goldcard.add_argument("--push-url", help="where to send 2001/2002/2003 (our webhook base URL)")
    goldcard.add_argument("--tick-seconds", type=float, default=60.0, help="tick every N seconds; 0 turns it off")
    goldcard.add_argument("--tick-minutes", type=float, default=15.0, help="simulated minutes of use per tick")
    goldcard.add_argument("--command-delay", type=float, default=5.0, help="seconds before a 1004 command acts")
    goldcard.add_argument("--seed", type=int, default=1)
    goldcard.add_argument("--app-code", default="SIMAPP01")
    goldcard.add_argument("--app-secret", default="sim-secret")
    goldcard.add_argument("--company-code", default="10001058")
    goldcard.add_argument("--factor-no", default="0011")
    return parser


async def _run_goldcard(args: argparse.Namespace) -> None:
    sim = GoldcardSimulator(
        app_code=args.app_code,
        app_secret=args.app_secret,
        company_code=args.company_code,
        factor_no=args.factor_no,
        meters=args.meters,
        command_delay=args.command_delay,
        push_url=args.push_url,
        seed=args.seed,
    )
    runner = web.AppRunner(sim.app)
    await runner.setup()
    try:
        await web.TCPSite(runner, args.host, args.port).start()
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


def main(argv: list[str] | None = None) -> None:
    """Parse the command line and run the chosen simulator."""
    args = _parser().parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_run_goldcard(args))


if __name__ == "__main__":
    main()
