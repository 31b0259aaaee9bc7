"""The KUMIR-RESURS session of chapter 4 and the document exchange of chapter 5, for the client.

Login: login.php answers 302 with a session cookie (Location interface.php), or 302 to failed.php for
wrong credentials - the only answer that means the password is wrong (AuthenticationError, so
reauthentication). A session lives 30 minutes; we renew it through session.php well before that.

A session the server has forgotten shows in three ways, all handled alike (one new login, the request
sent again): a 302 back to index.php (what a browser sees), and HTTP 401 or 403 on export, import or
session.php. Those requests carry nothing but the cookie, so a 401/403 there says the cookie is no
good, never the password. Refused again right after a fresh login, it is the account's rights:
`session_refused` (or `kumir_refused` with the server's own words), never a reauthentication loop.

The cookie goes with each request explicitly, never through the shared session's cookie jar: two
accounts on one server would otherwise swap sessions. Credentials go only into the login form, never
into logs or error messages.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any, override

import aiohttp

from ..base import MeterClient
from ..errors import AuthenticationError, CommandError, ConfigurationError, MeterCloudError, ResponseError
from ..http import RawAnswer, check_status, post_raw
from .refusal import Refusal, find_refusal

_LOGGER = logging.getLogger(__name__)

CONF_BASE_URL = "base_url"
CONF_LOGIN = "login"
CONF_PASSWORD = "login_password"  # noqa: S105 - a config key, not a secret
DEFAULT_BASE_URL = "https://v4.ntckumir.ru"
TRANSPORTS = ("raw", "form", "multipart")

COOKIE_NAMES = ("SESSID", "session_id")
# Where the server sends a request whose session it does not know (4.3's index.php; the start page).
SESSION_GONE_PAGES = frozenset({"index.php", "failed.php", ""})
# Statuses that, on a request carrying only the cookie, mean the session is gone.
SESSION_GONE_STATUSES = frozenset({401, 403})
# A session lives 30 minutes after login or renewal; renew when this much of it is gone.
SESSION_TTL = 30 * 60.0
RENEW_AFTER = 20 * 60.0
MAX_EXPORT_BYTES = 32 * 1024 * 1024


def refused(refusal: Refusal, status: int) -> CommandError:
    """The error for a refusal the server explained: its message, its code (else the HTTP status)."""
    return CommandError(refusal.message or "refused", code=refusal.code or f"HTTP {status}", reason="kumir_refused")


class KumirSessionClient(MeterClient):
    """The session and document exchange part of the KUMIR-RESURS client (see the module notes)."""

    transport: str

    def __init__(self, session: aiohttp.ClientSession, config: Mapping[str, Any], **kwargs: Any) -> None:
        """No request yet: the first exchange logs in."""
        super().__init__(session, config, **kwargs)
        self._base = str(self._config.get(CONF_BASE_URL) or DEFAULT_BASE_URL).rstrip("/")
        self.max_export_bytes = MAX_EXPORT_BYTES
        self.clock: Callable[[], float] = time.monotonic
        self._session_id: tuple[str, str] | None = None  # (cookie name, value)
        self._session_since = 0.0
        self._lock = asyncio.Lock()

    def _url(self, path: str) -> str:
        return f"{self._base}/{path}"

    def _cookies(self) -> dict[str, str]:
        return dict([self._session_id]) if self._session_id else {}

    async def _post(self, path: str, body: Any, headers: Mapping[str, str] | None = None) -> RawAnswer:
        self.request_count += 1
        return await post_raw(
            self._session,
            self._url(path),
            body,
            headers=headers,
            cookies=self._cookies(),
            timeout=self.request_timeout,
            max_bytes=self.max_export_bytes,
        )

    @staticmethod
    def _redirect(answer: RawAnswer) -> str | None:
        """The page a 302 leads to (its last path segment), None when not redirected."""
        if answer.status not in (301, 302, 303, 307):
            return None
        location = answer.headers.get("Location", "")
        return location.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1].lower()

    @staticmethod
    def _refusal(answer: RawAnswer) -> Refusal | None:
        return find_refusal(answer.body, answer.status, answer.headers.get("Content-Type", ""))

    async def _login(self) -> None:
        self._session_id = None
        form = aiohttp.FormData({"login": str(self._config[CONF_LOGIN]), "password": str(self._config[CONF_PASSWORD])})
        answer = await self._post("login.php", form)
        page = self._redirect(answer)
        if page == "failed.php":
            raise AuthenticationError("KUMIR-RESURS refused the login or password")
        if page is None:
            refusal = self._refusal(answer)
            if refusal is not None:
                raise refused(refusal, answer.status)
            if answer.status in SESSION_GONE_STATUSES:
                # Not failed.php: a proxy or the server's own rules, not a wrong password (no reauth).
                raise CommandError(
                    f"login.php answered HTTP {answer.status}", code=f"HTTP {answer.status}", reason="kumir_refused"
                )
            check_status(self._url("login.php"), answer.status)
            raise ResponseError(f"login answered HTTP {answer.status} instead of a redirect")
        for name in COOKIE_NAMES:
            if answer.cookies.get(name):
                self._session_id = (name, answer.cookies[name])
                break
        else:
            raise ResponseError("login gave no session cookie", reason="no_session")
        self._session_since = self.clock()
        _LOGGER.debug("Logged in to %s", self._base)

    async def _ensure_session(self) -> None:
        """A live session: log in, or renew one that is getting old."""
        async with self._lock:
            if self._session_id is None:
                await self._login()
                return
            if self.clock() - self._session_since < RENEW_AFTER:
                return
            answer = await self._post("session.php", b"")
            if answer.status == 200:
                self._session_since = self.clock()
                return
            if self._redirect(answer) is None and answer.status not in SESSION_GONE_STATUSES:
                check_status(self._url("session.php"), answer.status)
            # Renewal refused: the session is gone, start a new one.
            _LOGGER.debug("KUMIR-RESURS renewal refused (HTTP %s); logging in again", answer.status)
            await self._login()

    async def _exchange(self, path: str, document: bytes, field: str) -> bytes:
        """Send a document (export or import) on a live session; log in again once if it is gone."""
        for attempt in (1, 2):
            await self._ensure_session()
            answer = await self._post(path, *self._body(document, field))
            page = self._redirect(answer)
            if page is None and answer.status not in SESSION_GONE_STATUSES:
                return self._checked(path, answer)
            if page is not None and page not in SESSION_GONE_PAGES:
                # Not the login flow's pages: a moved server (http → https) is a setting to fix.
                raise ConfigurationError(
                    f"{path} redirected to {answer.headers.get('Location', '')!r}", reason="unexpected_redirect"
                )
            # Sent back to the start page, or 401/403 on a cookie-only request: the session is gone.
            _LOGGER.debug("KUMIR-RESURS session gone (%s); logging in again", page or answer.status)
            async with self._lock:
                self._session_id = None
            if attempt == 2:
                # A brand-new session refused too: not the password (login worked); the account's rights.
                refusal = self._refusal(answer) if page is None else None
                if refusal is not None:
                    raise refused(refusal, answer.status)
                raise CommandError(
                    f"{path} refused a fresh session ({page or f'HTTP {answer.status}'})",
                    code=None if page else f"HTTP {answer.status}",
                    reason="session_refused",
                )
        raise AssertionError("unreachable")  # pragma: no cover

    def _body(self, document: bytes, field: str) -> tuple[Any, Mapping[str, str] | None]:
        transport = self.transport
        if transport == "form" and field == "xml_file_import":
            transport = "raw"  # import has no form-field variant (table 5.2 is multipart)
        if transport == "form":
            return aiohttp.FormData({"xml": document.decode()}), None
        if transport == "multipart":
            form = aiohttp.FormData()
            form.add_field(field, document, filename=f"{field}.xml", content_type="application/xml")
            return form, None
        return document, {"Content-Type": "application/xml; charset=utf-8"}

    def _checked(self, path: str, answer: RawAnswer) -> bytes:
        """The body of a 2xx answer; a refusal the server explains, at any status, is a CommandError with its words."""
        refusal = self._refusal(answer)
        if refusal is not None:
            raise refused(refusal, answer.status)
        check_status(self._url(path), answer.status)
        return answer.body

    @override
    async def async_close(self) -> None:
        """End the session (the spec asks for it, though it is not obligatory); a failed goodbye changes nothing."""
        async with self._lock:
            if self._session_id is None:
                return
            try:
                await self._post("logout.php", b"")
            except MeterCloudError as err:
                _LOGGER.debug("Could not end the session with %s: %s", self._base, err)
            finally:
                self._session_id = None
