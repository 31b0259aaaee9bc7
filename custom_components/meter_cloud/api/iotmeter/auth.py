"""The control API's login (2.2.2): which settings it needs, and how a dead token is told apart."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from ..errors import AuthenticationError, CommandError, MeterCloudError
from ..parse import as_str

CONF_CONTROL_URL = "control_url"
CONF_LOGIN = "login_name"
CONF_PASSWORD = "password"  # noqa: S105
CONTROL_KEYS = (CONF_CONTROL_URL, CONF_LOGIN, CONF_PASSWORD)

# 2.2.2 tells how to get a token, not how the platform refuses one that died. Besides HTTP 401/403 we take its
# usual refusal (HTTP 200, State "failed") when the Message is about the caller's token, login or session:
# token/令牌/口令 (the spec's own word for the token), 登录/登陆 (both spellings the spec uses) and log in,
# 会话/session, 认证/身份验证/authentication, 未授权/unauthorized and ASP.NET's "Authorization has been denied".
# "过期", "失效", "无效", "expired" and "invalid" alone are not enough: a task, a price or ctrl_data can be
# expired or invalid too, and a command the platform refused must stay a refusal, never be sent twice.
TOKEN_REFUSAL = re.compile(
    r"token|令牌|口令|登录|登陆|\blog\s*-?\s*in|\blogged\s+in|\bsign\s*-?\s*in|会话|session|认证|身份验证"
    r"|authenticat|未授权|unauthori[sz]ed|authorization has been denied",
    re.IGNORECASE,
)


def missing_control_fields(config: Mapping[str, Any]) -> tuple[str, ...]:
    """The control settings still to fill in when some are given (none given: a read-only entry)."""
    given = [key for key in CONTROL_KEYS if as_str(config.get(key))]
    return tuple(key for key in CONTROL_KEYS if key not in given) if given else ()


def is_token_refusal(err: MeterCloudError) -> bool:
    """Whether the platform refused a control call's token, before doing anything with the call."""
    if isinstance(err, AuthenticationError):
        return True  # HTTP 401 or 403
    return type(err) is CommandError and bool(TOKEN_REFUSAL.search(str(err)))
