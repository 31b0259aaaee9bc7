"""Receiver for vendor pushes: size limit → find entry → authenticate and parse (api) → apply."""

from __future__ import annotations

import hmac
import logging

from aiohttp import web
from homeassistant.core import HomeAssistant, callback
from homeassistant.helpers import issue_registry as ir
from homeassistant.helpers.http import HomeAssistantView
from homeassistant.helpers.network import NoURLAvailableError, get_url
from homeassistant.util import dt as dt_util

from .api import Capability, PushError
from .const import CONF_PUSH_ID, DOMAIN, MAX_PUSH_BYTES, PUSH_URL_PREFIX
from .coordinator import MeterCloudConfigEntry

_LOGGER = logging.getLogger(__name__)


@callback
def async_check_push_reachable(hass: HomeAssistant, entry: MeterCloudConfigEntry) -> None:
    """A repair issue while the vendor cannot reach us: pushes need an external URL."""
    issue_id = f"no_external_url_{entry.entry_id}"
    if not entry.runtime_data.client.supports(Capability.PUSH) or hass.config.external_url:
        ir.async_delete_issue(hass, DOMAIN, issue_id)
        return
    ir.async_create_issue(
        hass,
        DOMAIN,
        issue_id,
        is_fixable=False,
        severity=ir.IssueSeverity.WARNING,
        translation_key="no_external_url",
        translation_placeholders={"title": entry.title, "push_url": push_url(hass, entry.data[CONF_PUSH_ID])},
    )


def push_url(hass: HomeAssistant, push_id: str) -> str:
    """The base URL to give the vendor; it appends its own fixed paths."""
    try:
        base = get_url(hass, prefer_external=True, allow_cloud=False)
    except NoURLAvailableError:
        base = "http://<home-assistant-address>:8123"
    return f"{base}{PUSH_URL_PREFIX}/{push_id}/"


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
                return entry  # type: ignore[no-any-return]
        return None

    async def post(self, request: web.Request, push_id: str, path: str) -> web.Response:
        """Handle one push."""
        if request.content_length is not None and request.content_length > MAX_PUSH_BYTES:
            return web.json_response({"error": "payload too large"}, status=413)
        entry = self._entry(push_id)
        if entry is None:
            return web.json_response({"error": "not found"}, status=404)
        body = await request.content.read(MAX_PUSH_BYTES + 1)
        if len(body) > MAX_PUSH_BYTES:
            return web.json_response({"error": "payload too large"}, status=413)
        coordinator = entry.runtime_data
        try:
            push = coordinator.client.parse_push(path, request.headers, body, dt_util.utcnow())
        except PushError as err:
            _LOGGER.debug("Push to %s rejected: %s", path, err.reason)
            return _answer(err.response, err.status)
        replay = coordinator.is_replay(push.serial)
        if replay:
            _LOGGER.debug("Push %s seen before; acknowledging again", push.serial)
        coordinator.async_apply_push(push, replay=replay)
        return _answer(push.response)


def _answer(response: dict[str, object] | bytes, status: int = 200) -> web.Response:
    """The vendor's envelope: JSON, or bytes the backend already encoded (sealed)."""
    if isinstance(response, bytes):
        return web.Response(body=response, status=status, content_type="application/json")
    return web.json_response(response, status=status)
