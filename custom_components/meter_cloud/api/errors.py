"""Errors raised by the Meter Cloud client layer."""

from __future__ import annotations

from collections.abc import Collection


class MeterCloudError(Exception):
    """Base of every error the client layer raises.

    `reason` is a stable, machine-readable key that the Home Assistant side turns into a
    translated message; `code` is the vendor's own error code when there is one; `fields` are the
    account settings it is about (ones to fill in, a credential the cloud refused), when it knows.
    """

    reason = "unknown"
    fields: tuple[str, ...] = ()
    # Whether a request that failed may have been carried out (an answer was lost).
    outcome_unknown = False
    # False when the request never left (connection refused): it is safe to forget.
    request_sent = True

    def __init__(
        self,
        message: str = "",
        *,
        code: str | None = None,
        reason: str | None = None,
        outcome_unknown: bool | None = None,
        request_sent: bool | None = None,
        fields: Collection[str] = (),
    ) -> None:
        super().__init__(message or self.reason)
        if fields:
            self.fields = tuple(fields)
        self.code = code
        if reason is not None:
            self.reason = reason
        if outcome_unknown is not None:
            self.outcome_unknown = outcome_unknown
        if request_sent is not None:
            self.request_sent = request_sent


class CloudConnectionError(MeterCloudError):
    """The cloud could not be reached, timed out or answered with a server error."""

    reason = "cannot_connect"


class CloudTimeoutError(CloudConnectionError):
    """The request was sent but no answer came: its outcome is unknown."""

    reason = "timeout"
    outcome_unknown = True


class AuthenticationError(MeterCloudError):
    """The credentials were refused."""

    reason = "invalid_auth"


class ConfigurationError(MeterCloudError):
    """The account settings are wrong in a way the user must fix (e.g. a factor code)."""

    reason = "invalid_config"


class ResponseError(MeterCloudError):
    """The cloud answered with something that cannot be understood (so a command's fate is unknown)."""

    reason = "invalid_response"
    outcome_unknown = True


class CommandError(MeterCloudError):
    """The cloud understood the request and refused it."""

    reason = "command_failed"


class DuplicateSerialError(CommandError):
    """The cloud already has a command with this serial / trade number and did nothing now.

    Whether that means "received before" or "used by another system" only the command ledger knows.
    `vendor_id` is the cloud's id of the command it has, when it says.
    """

    reason = "duplicate_serial"

    def __init__(self, message: str = "", *, code: str | None = None, vendor_id: str | None = None) -> None:
        super().__init__(message, code=code)
        self.vendor_id = vendor_id


class InvalidRequestError(MeterCloudError):
    """The request is wrong before it is sent (a missing or malformed field); nothing went out."""

    reason = "invalid_request"
    request_sent = False


class UnsupportedError(MeterCloudError):
    """The backend cannot do what was asked."""

    reason = "not_supported"


class PushError(MeterCloudError):
    """A push from the cloud was rejected; `status` is the HTTP status to answer with."""

    reason = "push_rejected"

    def __init__(self, message: str, *, status: int, response: dict[str, object] | bytes, reason: str) -> None:
        super().__init__(message, reason=reason)
        self.status = status
        self.response = response
