"""Shared HTTP helper: one place for timeouts, status codes and body decoding."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson

from .errors import AuthenticationError, CloudConnectionError, CloudTimeoutError, MeterCloudError, ResponseError

_LOGGER = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 30.0
MAX_RESPONSE_BYTES = 8 * 1024 * 1024

# An integer orjson could not hold exactly (_orjson_exact): every digit made "0", everything else " ", then a
# substring search (a regular expression takes longer than the parse).
_DIGITS_ONLY = bytes(0x30 if 0x30 <= c <= 0x39 else 0x20 for c in range(256))
_LONG_DIGITS = b"0" * 19
# What may stand between a value's start (":", ",", "[") and a number's digits.
_NUMBER_LEAD = frozenset(b" \t\r\n-")
_VALUE_START = frozenset(b":,[")
# HTTP status → error class, for statuses that are not 2xx.
STATUS_ERRORS: dict[int, type[MeterCloudError]] = {
    401: AuthenticationError,
    403: AuthenticationError,
    408: CloudTimeoutError,
    429: CloudConnectionError,
}


def json_body(payload: Mapping[str, Any]) -> bytes:
    """`payload` as a compact UTF-8 JSON request body."""
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()


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
    answer = await post_raw(session, url, body, headers=headers, timeout=timeout)
    check_status(url, answer.status)
    return answer.body


@dataclass(frozen=True, slots=True)
class RawAnswer:
    """An HTTP answer as it came (redirects are not followed): status, headers, cookies, body."""

    status: int
    headers: Mapping[str, str]
    cookies: Mapping[str, str]
    body: bytes


async def post_raw(
    session: aiohttp.ClientSession,
    url: str,
    body: Any,
    *,
    headers: Mapping[str, str] | None = None,
    cookies: Mapping[str, str] | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    max_bytes: int | None = None,
) -> RawAnswer:
    """POST `body` (bytes, a form or multipart data) and return the answer whatever its status.

    `cookies` go with this request only (they override the session's jar, which other accounts share).
    """
    max_bytes = MAX_RESPONSE_BYTES if max_bytes is None else max_bytes
    try:
        async with session.post(
            url,
            data=body,
            headers=dict(headers or {}),
            cookies=dict(cookies) if cookies else None,
            timeout=aiohttp.ClientTimeout(total=timeout),
            allow_redirects=False,
        ) as resp:
            raw = await _read_bounded(resp.content, max_bytes)
            answer = RawAnswer(
                status=resp.status,
                headers={key: value for key, value in resp.headers.items()},
                cookies={name: morsel.value for name, morsel in resp.cookies.items()},
                body=raw,
            )
    except aiohttp.ClientConnectorError as err:
        raise CloudConnectionError(f"cannot reach {url}: {err}", request_sent=False) from err
    except TimeoutError as err:
        raise CloudTimeoutError(f"no answer from {url} within {timeout:g} s") from err
    except (aiohttp.ClientError, asyncio.IncompleteReadError) as err:
        raise CloudTimeoutError(f"connection to {url} broke: {err}") from err
    if len(raw) > max_bytes:
        raise ResponseError(f"answer from {url} is larger than {max_bytes} bytes", reason="response_too_large")
    return answer


def check_status(url: str, status: int) -> None:
    """Raise the error an HTTP status that is not 2xx stands for."""
    if status >= 500:
        raise CloudConnectionError(f"{url} answered HTTP {status}", code=str(status), outcome_unknown=True)
    if status in STATUS_ERRORS:
        raise STATUS_ERRORS[status](f"{url} answered HTTP {status}", code=str(status))
    if not 200 <= status < 300:
        raise ResponseError(f"{url} answered HTTP {status}", code=str(status))


async def _read_bounded(stream: aiohttp.StreamReader, limit: int) -> bytes:
    """The whole body, or limit+1 bytes when it is larger (read(n) alone returns one chunk)."""
    chunks: list[bytes] = []
    size = 0
    while size <= limit and (chunk := await stream.read(limit + 1 - size)):
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def _orjson_exact(raw: bytes) -> bool:
    """No bare number of 19 digits or more in the body (digit runs inside strings, like hex ids, are fine)."""
    digits = raw.translate(_DIGITS_ONLY)
    at = digits.find(_LONG_DIGITS)
    while at != -1:
        before = at - 1
        while before >= 0 and raw[before] in _NUMBER_LEAD:
            before -= 1
        if before < 0 or raw[before] in _VALUE_START:
            return False
        end = digits.find(b" ", at)
        at = -1 if end == -1 else digits.find(_LONG_DIGITS, end)
    return True


def decode_json(raw: bytes) -> Any:
    """Decode a JSON body or raise ResponseError.

    orjson (Home Assistant's own, 2-3x faster) first; what it refuses and Python's json accepts (NaN, lone
    surrogates) is read by Python's json, so no answer is refused that was read before. A body with a run of 19
    digits or more goes to Python's json alone: orjson turns an integer beyond 64 bits into an inexact float.
    """
    if _orjson_exact(raw):
        try:
            return orjson.loads(raw.removeprefix(b"\xef\xbb\xbf"))
        except orjson.JSONDecodeError:
            pass
    try:
        return json.loads(raw.decode("utf-8-sig"))
    except (UnicodeDecodeError, ValueError) as err:
        raise ResponseError(f"answer is not valid JSON: {err}") from err
