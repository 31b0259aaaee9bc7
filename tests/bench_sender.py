"""The benchmark's vendor cloud for push throughput: sends prepared pushes to Home Assistant from its own process
(a cloud does not run in Home Assistant's), a few in flight, and prints what it saw as JSON.

python tests/bench_sender.py JOB.json — JOB: {"url", "in_flight", "pushes": [[headers, base64 body], ...]}.
"""

from __future__ import annotations

import asyncio
import base64
import json
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp


async def send(job: dict[str, Any]) -> dict[str, object]:
    """Send every push; elapsed seconds from the first POST to the last answer, latencies, refusals."""
    pending = iter([(headers, base64.b64decode(body)) for headers, body in job["pushes"]])
    latencies: list[float] = []
    refused = 0
    async with aiohttp.ClientSession() as session:

        async def sender() -> None:
            nonlocal refused
            for headers, body in pending:
                t0 = time.perf_counter()
                async with session.post(job["url"], data=body, headers=headers) as resp:
                    await resp.read()
                latencies.append(time.perf_counter() - t0)
                refused += resp.status != 200

        started = time.perf_counter()
        await asyncio.gather(*(sender() for _ in range(job["in_flight"])))
        elapsed = time.perf_counter() - started
    return {"elapsed": elapsed, "latencies": latencies, "refused": refused}


if __name__ == "__main__":
    sys.stdout.write(json.dumps(asyncio.run(send(json.loads(Path(sys.argv[1]).read_text())))))
