"""pycryptodome serves only Cangnan's optional 3DES + MAC envelope: without it, only entries that use it fail."""

from __future__ import annotations

import logging
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from unittest.mock import Mock

import pytest
from homeassistant.config_entries import SOURCE_USER, ConfigEntryState
from homeassistant.core import HomeAssistant
from pytest_homeassistant_custom_component.common import MockConfigEntry

from custom_components.meter_cloud.api import envelope
from custom_components.meter_cloud.const import DOMAIN
from simulator.cangnan import CangnanEnvelope, CangnanSimulator

from .conftest import cangnan_data

KEY = "0123456789ABCDEFFEDCBA9876543210"
REPO = Path(__file__).resolve().parent.parent
ACCOUNT_KEYS = ("base_url", "app_token", "app_secret", "data_from", "billing_side", "meters")


def _missing(monkeypatch: pytest.MonkeyPatch) -> None:
    """pycryptodome not installed: importing it raises ImportError."""
    for name in ("Crypto", "Crypto.Cipher", "Crypto.Cipher.DES", "Crypto.Cipher.DES3"):
        monkeypatch.setitem(sys.modules, name, None)


def _broken(monkeypatch: pytest.MonkeyPatch) -> None:
    """Installed but broken underneath, as seen when cffi was replaced under the running process."""
    failing = Mock(side_effect=Exception("Version mismatch: this is the 'cffi' package version 2.0.0"))
    monkeypatch.setattr(envelope, "importlib", SimpleNamespace(import_module=failing))


BREAKAGES: dict[str, Callable[[pytest.MonkeyPatch], None]] = {"missing": _missing, "broken": _broken}


def test_integration_imports_without_pycryptodome() -> None:
    """Every module of the integration imports with pycryptodome absent (a fresh interpreter, to be sure)."""
    code = (
        "import sys\n"
        "for name in ('Crypto', 'Crypto.Cipher'):\n"
        "    sys.modules[name] = None\n"
        "import pkgutil, importlib, custom_components.meter_cloud as pkg\n"
        "names = [m.name for m in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + '.')]\n"
        "for name in names:\n"
        "    importlib.import_module(name)\n"
        "print(len(names))\n"
    )
    done = subprocess.run(  # noqa: S603 - our own interpreter and code
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    assert int(done.stdout.strip()) > 20  # the walk really reached the modules


@pytest.mark.parametrize("breakage", list(BREAKAGES))
async def test_broken_crypto_fails_only_the_encrypted_entry(
    hass: HomeAssistant,
    breakage: str,
    monkeypatch: pytest.MonkeyPatch,
    config_entry: MockConfigEntry,
    cn_sim: CangnanSimulator,
    cn_server: Any,
    aiohttp_server: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The encrypted entry gets a translated error; Goldcard and a plain Cangnan entry load; fixing it recovers."""
    sealed_sim = CangnanSimulator(meters=2)
    sealed_sim.envelope = CangnanEnvelope.from_hex(KEY)
    sealed_server = await aiohttp_server(sealed_sim.app, host="127.0.0.1")
    sealed_data = cangnan_data(sealed_sim, sealed_server, encryption_key=KEY, push_id="sealed-push-id-0123456789")
    sealed = MockConfigEntry(domain=DOMAIN, title="sealed", data=sealed_data, unique_id="cangnan_sealed")
    sealed.add_to_hass(hass)
    plain = MockConfigEntry(
        domain=DOMAIN, title="plain", data=cangnan_data(cn_sim, cn_server), unique_id="cangnan_plain"
    )
    plain.add_to_hass(hass)
    BREAKAGES[breakage](monkeypatch)

    await hass.config_entries.async_setup(config_entry.entry_id)  # sets up every entry of the domain
    await hass.async_block_till_done()
    assert config_entry.state is ConfigEntryState.LOADED
    assert plain.state is ConfigEntryState.LOADED
    assert sealed.state is ConfigEntryState.SETUP_ERROR
    assert sealed.error_reason_translation_key == "crypto_unavailable"
    # Home Assistant itself logs every ConfigEntryError with its traceback; our own loggers log none.
    ours = [r for r in caplog.records if r.name.startswith("custom_components.meter_cloud")]
    assert not [r for r in ours if r.exc_info or r.levelno >= logging.WARNING]
    assert not sealed_sim.requests  # nothing went out unsealed

    # The config flow says the same for a new encrypted account, and a plain one is still accepted.
    result = await hass.config_entries.flow.async_init(DOMAIN, context={"source": SOURCE_USER})
    result = await hass.config_entries.flow.async_configure(result["flow_id"], {"backend": "cangnan"})
    form = {key: sealed_data[key] for key in ACCOUNT_KEYS} | {"app_token": "OTHERTOKEN", "encryption_key": KEY}
    result = await hass.config_entries.flow.async_configure(result["flow_id"], form)
    assert result["errors"] == {"base": "crypto_unavailable"}
    assert result["description_placeholders"]["error"]

    # The library repaired (reinstalled, restarted elsewhere): a reload is enough.
    monkeypatch.undo()
    assert await hass.config_entries.async_reload(sealed.entry_id)
    await hass.async_block_till_done()
    assert sealed.state is ConfigEntryState.LOADED
    assert set(sealed.runtime_data.data) == set(sealed_sim.meters)
    await sealed_sim.close()
