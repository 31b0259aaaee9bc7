"""Run the tests as if started at another time: `TIMESHIFT=2026-12-05T15:45:00 scripts/test -p tests.timeshift`.

The clock (UTC) starts at TIMESHIFT and ticks on from there. CI runs at whatever time it is started, and a test that
waits an hour or a day can cross the vendors' midnight (Asia/Shanghai, Europe/Moscow), Home Assistant's (the tests'
US/Pacific), UTC's, a month's end or a daylight-saving change: this runs the suite at such a time on purpose.
With TIMESHIFT_EACH=1 every test starts at TIMESHIFT (set it a second before an hour, say, to have every test
straddle that hour).
"""

from __future__ import annotations

import datetime
import os
from typing import Any

import freezegun
import pytest
from aiohttp import web_log

_shift: Any = None
_EACH = pytest.StashKey[Any]()


def pytest_configure(config: pytest.Config) -> None:
    """Start the shifted clock when TIMESHIFT is set."""
    global _shift  # noqa: PLW0603
    target = os.environ.get("TIMESHIFT")
    if not target:
        return
    # freezegun's localtime() has no tm_gmtoff, which aiohttp's access log reads: give that log UTC.
    web_log.AccessLogger._get_local_time = classmethod(  # type: ignore[method-assign]
        lambda cls: datetime.datetime.now(datetime.UTC)
    )
    _shift = freezegun.freeze_time(target, tick=True)
    _shift.start()


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """With TIMESHIFT_EACH, this test starts at TIMESHIFT (before its fixtures are set up)."""
    target = os.environ.get("TIMESHIFT")
    if target and os.environ.get("TIMESHIFT_EACH"):
        each = freezegun.freeze_time(target, tick=True)
        each.start()
        item.stash[_EACH] = each


@pytest.hookimpl(trylast=True)
def pytest_runtest_teardown(item: pytest.Item) -> None:
    """Back to the run's clock after the test's fixtures are torn down."""
    if (each := item.stash.get(_EACH, None)) is not None:
        each.stop()


def pytest_unconfigure(config: pytest.Config) -> None:
    """Stop it."""
    if _shift is not None:
        _shift.stop()
