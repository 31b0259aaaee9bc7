"""Alarms, device events and command results in the logbook, as sentences in the server's language."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

from homeassistant.components.logbook import LOGBOOK_ENTRY_MESSAGE, LOGBOOK_ENTRY_NAME
from homeassistant.core import Event, HomeAssistant, callback
from homeassistant.helpers import device_registry as dr
from homeassistant.helpers.translation import async_get_cached_translations

from .const import DOMAIN, EVENT_ALARM, EVENT_COMMAND_RESULT, EVENT_DEVICE_EVENT

type DescribeEvent = Callable[[str, str, Callable[[Event], dict[str, str]]], None]

# The kinds' names are the event entities' own translations (their event types).
KIND_KEYS = {
    EVENT_ALARM: "entity.event.alarm.state_attributes.event_type.state",
    EVENT_DEVICE_EVENT: "entity.event.device_events.state_attributes.event_type.state",
}
SENTENCE_KEYS = {EVENT_ALARM: "logbook_alarm", EVENT_DEVICE_EVENT: "logbook_device_event"}
# A command result's sentence by state; any other state takes logbook_command_state.
COMMAND_KEYS = {
    "confirmed": "logbook_command_confirmed",
    "failed": "logbook_command_failed",
    "cancelled": "logbook_command_cancelled",
    "unknown": "logbook_command_unknown",
}


@callback
def async_describe_events(hass: HomeAssistant, async_describe_event: DescribeEvent) -> None:
    """Describe the integration's bus events for the logbook."""

    @callback
    def describe(event: Event) -> dict[str, str]:
        texts = _Texts(hass)
        data, event_type = event.data, str(event.event_type)
        if event_type == EVENT_COMMAND_RESULT:
            message = _command_sentence(texts, data)
        else:
            kind = texts.get(f"{KIND_KEYS[event_type]}.{data.get('type')}") or str(data.get("type"))
            message = texts.format(SENTENCE_KEYS[event_type], kind=_in_sentence(kind))
            if data.get("message"):
                message = texts.format("logbook_detail", sentence=message, detail=str(data["message"]))
        return {LOGBOOK_ENTRY_NAME: _device_name(hass, data), LOGBOOK_ENTRY_MESSAGE: message}

    for event_type in (EVENT_ALARM, EVENT_DEVICE_EVENT, EVENT_COMMAND_RESULT):
        async_describe_event(DOMAIN, event_type, describe)


def _command_sentence(texts: _Texts, data: Mapping[str, Any]) -> str:
    """E.g. "recharge of 50.00 confirmed", "valve close failed: meter offline"."""
    kind, state = str(data.get("command")), str(data.get("state"))
    command = texts.get(f"common.command_{kind}") or kind.replace("_", " ")
    if (amount := _money(data.get("amount"))) is not None:
        command = texts.format("logbook_amount", command=command, amount=amount)
    if state in COMMAND_KEYS:
        sentence = texts.format(COMMAND_KEYS[state], command=command)
    else:
        sentence = texts.format("logbook_command_state", command=command, state=state)
    if state != "confirmed" and (why := data.get("message") or data.get("reason") or data.get("code")):
        sentence = texts.format("logbook_reason", sentence=sentence, reason=str(why))
    return sentence


def _money(amount: Any) -> str | None:
    """An amount with its two decimals (the event carries Decimal's text, e.g. "50" or "12.5")."""
    if amount is None:
        return None
    try:
        return f"{Decimal(str(amount)):.2f}"
    except InvalidOperation:
        return str(amount)


def _in_sentence(name: str) -> str:
    """A kind's name as a word inside a sentence ("Gas leak" → "gas leak"; an acronym stays as it is)."""
    if len(name) > 1 and name[1].isupper():
        return name
    return name[:1].lower() + name[1:]


def _device_name(hass: HomeAssistant, data: Mapping[str, Any]) -> str:
    """The meter's device name as the user sees it (their own name first), else its meter number."""
    device = dr.async_get(hass).async_get(str(data.get("device_id")))
    return (device and (device.name_by_user or device.name)) or str(data.get("meter_id"))


class _Texts:
    """The integration's cached translations in the server's language (English fills any gap)."""

    def __init__(self, hass: HomeAssistant) -> None:
        """Read the cache: Home Assistant loads it when the integration is set up or the language changes."""
        self._strings: dict[str, str] = {}
        for category in ("entity", "common"):
            for language in ("en", hass.config.language):
                self._strings |= async_get_cached_translations(hass, language, category, DOMAIN)

    def get(self, key: str) -> str | None:
        """A string by its key below component.meter_cloud."""
        return self._strings.get(f"component.{DOMAIN}.{key}")

    def format(self, key: str, **placeholders: str) -> str:
        """A common.<key> sentence with its placeholders filled in."""
        template = self.get(f"common.{key}")
        if template is None:
            return " ".join(placeholders.values())
        return template.format(**placeholders)
