"""Receiver for vendor pushes: size limit → find entry → authenticate and parse (api) → apply."""

from __future__ import annotations

import hmac
import logging
from collections.abc import Callable

from aiohttp import web
from homeassistant.core import HomeAssistant
from homeassistant.helpers.http import HomeAssistantView
from homeassistant.util import dt as dt_util

from .api import BACKENDS, PushError
from .const import CONF_PUSH_ID, DOMAIN, MAX_PUSH_BYTES, PUSH_URL_PREFIX
from .coordinator import MeterCloudConfigEntry

_LOGGER = logging.getLogger(__name__)


class MeterCloudPushView(HomeAssistantView):
    """Accepts pushes on /api/meter_cloud/push/<secret id>/<vendor path>."""

    url = PUSH_URL_PREFIX + "/{push_id}/{path:.*}"
    name = "api:meter_cloud:push"
    # Vendors cannot log in to Home Assistant: the unguessable id plus the vendor's signature authenticate.
    requires_auth = False

    def __init__(self, hass: HomeAssistant) -> None:
        """Keep hass to look up entries."""
        self.hass = hass

    def _entry(self, push_id: str) -> MeterCloudConfigEntry | None:
        for entry in self.hass.config_entries.async_loaded_entries(DOMAIN):
            if hmac.compare_digest(str(entry.data.get(CONF_PUSH_ID, "")), push_id):
                return entry
        return None

    async def post(self, request: web.Request, push_id: str, path: str) -> web.Response:
        """Handle one push; every refusal is in the vendor's own envelope."""
        entry = self._entry(push_id)
        refuse = entry.runtime_data.client.push_refusal if entry is not None else _refusal_for(path)
        if request.content_length is not None and request.content_length > MAX_PUSH_BYTES:
            return _answer(refuse("payload too large"), 413)
        if entry is None:
            return _answer(refuse("not found"), 404)
        body = await request.content.read(MAX_PUSH_BYTES + 1)
        if len(body) > MAX_PUSH_BYTES:
            return _answer(refuse("payload too large"), 413)
        coordinator = entry.runtime_data
        try:
            push = coordinator.client.parse_push(path, request.headers, body, dt_util.utcnow())
        except PushError as err:
            _LOGGER.debug("Push to %s rejected: %s", path, err.reason)
            return _answer(err.response, err.status)
        coordinator.health.accepted()
        replay = coordinator.is_replay(push.serial)
        if replay:
            _LOGGER.debug("Push %s seen before; acknowledging again", push.serial)
        coordinator.async_apply_push(push, replay=replay)
        return _answer(push.response)


def _refusal_for(path: str) -> Callable[[str], dict[str, object] | bytes]:
    """Without an entry, the refusal of the vendor whose push path this is (plain JSON when none is)."""
    for backend in BACKENDS.values():
        if path.strip("/") in backend.client.push_paths:
            return backend.client.refusal_envelope
    return lambda message: {"error": message}


def _answer(response: dict[str, object] | bytes, status: int = 200) -> web.Response:
    """The vendor's envelope: JSON, or bytes the backend already encoded (sealed)."""
    if isinstance(response, bytes):
        return web.Response(body=response, status=status, content_type="application/json")
    return web.json_response(response, status=status)
