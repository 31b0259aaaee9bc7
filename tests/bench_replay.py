"""The benchmark's stand-in cloud for the fetch floor: answers each POST with a recorded answer, from its own process.

python tests/bench_replay.py JOB.json PORT — JOB: {"answers": [base64 body, ...]}; the request's X-Replay header
says which answer (its index). Prints "ready" once it listens. The bytes are those a changed poll received, so
fetching and decoding them through Home Assistant's HTTP client is what any poll of those answers costs at least.
"""

from __future__ import annotations

import base64
import json
import sys
from pathlib import Path

from aiohttp import web


def app(answers: list[bytes]) -> web.Application:
    """An application that answers POST / with answers[X-Replay]."""

    async def answer(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(body=answers[int(request.headers["X-Replay"])], content_type="application/json")

    application = web.Application()
    application.router.add_post("/", answer)
    return application


if __name__ == "__main__":
    job = json.loads(Path(sys.argv[1]).read_text())
    web.run_app(
        app([base64.b64decode(body) for body in job["answers"]]),
        host="127.0.0.1",
        port=int(sys.argv[2]),
        print=lambda *_: print("ready", flush=True),  # noqa: T201
        access_log=None,
    )
