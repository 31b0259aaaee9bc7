"""Shared HTTP helper: one place for timeouts, status codes and body decoding."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Mapping
from typing import Any

import aiohttp

from .errors import AuthenticationError, CloudConnectionError, CloudTimeoutError, MeterCloudError, ResponseError

_LOGGER = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 30.0
MAX_RESPONSE_BYTES = 8 * 1024 * 1024

# HTTP status → error class, for statuses that are not 2xx.
STATUS_ERRORS: dict[int, type[MeterCloudError]] = {
    401: AuthenticationError,
    403: AuthenticationError,
    408: CloudTimeoutError,
    429: CloudConnectionError,
}


async def post_json(
    session: aiohttp.ClientSession,
    url: str,
    payload: Mapping[str, Any],
    *,
    headers: Mapping[str, str],
    timeout: float = DEFAULT_TIMEOUT,
) -> Any:
    """POST `payload` as JSON and return the decoded JSON answer."""
    body = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()
    return decode_json(await post_bytes(session, url, body, headers=headers, timeout=timeout))


async def post_bytes(
    session: aiohttp.ClientSession,
    url: str,
    body: bytes,
    *,
    headers: Mapping[str, str],
    timeout: float = DEFAULT_TIMEOUT,
) -> bytes:
    """POST `body` and return the answer's bytes when the status is 2xx.

    A refused connection means the request never left (safe to retry); a timeout or a
    dropped connection after sending means its outcome is unknown (CloudTimeoutError).
    """
    try:
        async with session.post(
            url,
            data=body,
            headers=dict(headers),
            timeout=aiohttp.ClientTimeout(total=timeout),
            allow_redirects=False,
        ) as resp:
            raw = await _read_bounded(resp.content, MAX_RESPONSE_BYTES)
            status = resp.status
    except aiohttp.ClientConnectorError as err:
        raise CloudConnectionError(f"cannot reach {url}: {err}", request_sent=False) from err
    except TimeoutError as err:
        raise CloudTimeoutError(f"no answer from {url} within {timeout:g} s") from err
    except (aiohttp.ClientError, asyncio.IncompleteReadError) as err:
        raise CloudTimeoutError(f"connection to {url} broke: {err}") from err
    if len(raw) > MAX_RESPONSE_BYTES:
        raise ResponseError(f"answer from {url} is larger than {MAX_RESPONSE_BYTES} bytes")
    if status >= 500:
        raise CloudConnectionError(f"{url} answered HTTP {status}", code=str(status), outcome_unknown=True)
    if status in STATUS_ERRORS:
        raise STATUS_ERRORS[status](f"{url} answered HTTP {status}", code=str(status))
    if not 200 <= status < 300:
        raise ResponseError(f"{url} answered HTTP {status}", code=str(status))
    return raw


async def _read_bounded(stream: aiohttp.StreamReader, limit: int) -> bytes:
    """The whole body, or limit+1 bytes when it is larger (read(n) alone returns one chunk)."""
    chunks: list[bytes] = []
    size = 0
    while size <= limit and (chunk := await stream.read(limit + 1 - size)):
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def decode_json(raw: bytes) -> Any:
    """Decode a JSON body or raise ResponseError."""
    try:
        return json.loads(raw.decode("utf-8-sig"))
    except (UnicodeDecodeError, ValueError) as err:
        raise ResponseError(f"answer is not valid JSON: {err}") from err
