"""Client errors → Home Assistant errors with translated messages."""

from __future__ import annotations

from homeassistant.exceptions import HomeAssistantError, ServiceValidationError

from .api import (
    AuthenticationError,
    CloudConnectionError,
    CloudTimeoutError,
    CommandError,
    InvalidRequestError,
    MeterCloudError,
    ResponseError,
    UnsupportedError,
)
from .const import DOMAIN

# Reasons that mean the user asked for something wrong, not that the cloud failed.
VALIDATION_REASONS = frozenset({"unknown_meter", "reference_conflict", "no_pending_command", "no_retryable_command"})
GENERIC_REASONS = frozenset({"command_failed", "cannot_connect", "timeout", "service_unavailable"})


def to_ha_error(err: MeterCloudError) -> HomeAssistantError:
    """The Home Assistant error a user should see for a client error."""
    placeholders = {"error": str(err), "code": err.code or ""}
    if isinstance(err, UnsupportedError):
        return ServiceValidationError(translation_domain=DOMAIN, translation_key="not_supported")
    if err.reason in VALIDATION_REASONS:
        return ServiceValidationError(
            translation_domain=DOMAIN, translation_key=err.reason, translation_placeholders=placeholders
        )
    if isinstance(err, InvalidRequestError):
        return ServiceValidationError(
            translation_domain=DOMAIN, translation_key=err.reason, translation_placeholders=placeholders
        )
    if isinstance(err, (CommandError, CloudConnectionError)) and err.reason not in GENERIC_REASONS:
        # A vendor code with a message of its own (the backends' error tables).
        key = err.reason
    elif isinstance(err, AuthenticationError):
        key = "invalid_auth"
    elif isinstance(err, CloudTimeoutError):
        key = "timeout"
    elif isinstance(err, CloudConnectionError):
        key = "cannot_connect"
    elif isinstance(err, CommandError):
        key = "command_failed"
    elif isinstance(err, ResponseError):
        key = "invalid_response"
    else:
        key = "unknown_error"
    return HomeAssistantError(translation_domain=DOMAIN, translation_key=key, translation_placeholders=placeholders)
