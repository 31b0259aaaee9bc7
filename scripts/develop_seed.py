"""Helpers of scripts/develop: seed config/ for a ready-to-use Home Assistant, list missing packages, wait for HTTP.

    python scripts/develop_seed.py seed config               prints "BACKEND PUSH_ID", a line per simulator entry
    python scripts/develop_seed.py requirements config SITE  prints packages Home Assistant will need but lacks
    python scripts/develop_seed.py wait URL PID SECONDS [--progress NAME]
                                                             waits until URL answers (any HTTP status); with
                                                             --progress, a line every 30 s that NAME is not up yet
    python scripts/develop_seed.py dashboard URL             creates the "Meter Cloud" dashboard on the running
                                                             Home Assistant (or updates it in place), as the
                                                             default one (scripts/develop_dashboard.py)

Everything is created only when absent, each simulator entry on its own: a second run keeps the user, the entries
and their push ids, and adds an entry a config/ seeded by an older version of this script lacks (Cangnan's, the IoT
meter platform's, KUMIR-RESURS's).
Storage files are written in the format both pinned Home Assistant versions read (2025.4 and 2026.10:
core.config_entries 1.5, onboarding 4); a newer Home Assistant migrates them forward itself.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import os
import secrets
import sys
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
DEV_USERNAME = "dev"
DEV_PASSWORD = "dev"  # a throw-away local development login
# The simulators scripts/develop starts, with their command-line defaults (simulator/__main__.py).
GOLDCARD_ACCOUNT = {
    "base_url": "http://127.0.0.1:8901",
    "app_code": "SIMAPP01",
    "app_secret": "sim-secret",
    "company_code": "10001058",
    "factor_no": "0011",
}
CANGNAN_ACCOUNT = {
    "base_url": "http://127.0.0.1:8902",
    "app_token": "SIMTOKEN01",
    "app_secret": "sim-secret",
    "data_from": "苍南仪表集团",
    "billing_side": "meter",  # the simulator's --billing-mode meter: the meter keeps the money
}
CANGNAN_METERS = 10  # scripts/develop starts the Cangnan simulator with --meters 10
# One simulator serves both the data API and the control API, so the two URLs are the same.
IOTMETER_ACCOUNT = {
    "data_url": "http://127.0.0.1:8903",
    "company_no": "1001",
    "data_api_key": "496d1bac094f11e79d9c0a0027000010",
    "control_url": "http://127.0.0.1:8903",
    "login_name": "admin",
    "password": "123456",
}
# KUMIR-RESURS never pushes (the push id is there only because every entry has one); the entry polls the archives.
KUMIR_ACCOUNT = {
    "base_url": "http://127.0.0.1:8904",
    "login": "example",
    "login_password": "example",
    "systems": "1, 2, 3, 4, 5, 6",
    "archives": ["hour", "day", "total"],
    "transport": "raw",
    "time_zone": "Europe/Moscow",  # the simulator's --time-zone: its archives' `dat` are Moscow wall time
    "backfill_days": 30,  # the config flow's default: a month of hourly statistics on first start
}
KUMIR_NODES = 6  # scripts/develop starts the KUMIR simulator with --nodes 6 (one node per device type)
# Storage versions written; both pinned Home Assistant versions use exactly these.
CONFIG_ENTRIES_VERSION = (1, 5)
ONBOARDING_VERSION = (4, 1)
ONBOARDING_STEPS = ["user", "core_config", "analytics", "integration"]

CONFIGURATION_YAML = """\
# Home Assistant for developing Meter Cloud; scripts/develop runs it with `hass -c config`.
#
# Lean on purpose: no `default_config:`, which adds cloud, bluetooth, zeroconf, ssdp, dhcp, usb, go2rtc,
# stream, alerts and more, about 20 more packages, and wants the network. What is here needs only the
# frontend package (plus, in Home Assistant 2026, those of the base platforms it always sets up), which
# scripts/develop installs into .develop/ once; after that everything runs offline.
# No `http:` block: the server listens on port 8123 of every interface by default, and Home Assistant
# 2026 moves YAML http settings into storage once, then raises a repair issue for the leftover block.
homeassistant:
  name: Meter Cloud (development)
  unit_system: metric
  currency: CNY
  country: CN
  time_zone: Asia/Shanghai
  latitude: 30.2741
  longitude: 120.1551
  elevation: 10
  internal_url: http://127.0.0.1:8123

frontend:
config:
history:
logbook:
energy:
automation: !include automations.yaml
script: !include scripts.yaml

logger:
  default: info
  logs:
    custom_components.meter_cloud: debug
    # Home Assistant 2026 always sets up camera and ffmpeg; without the libturbojpeg library and the
    # ffmpeg program they log an error at start-up. Nothing here uses them.
    haffmpeg: critical
    homeassistant.components.camera.img_util: critical
"""


def log(message: str) -> None:
    """Progress goes to stderr; stdout carries only the answer."""
    print(f"develop: {message}", file=sys.stderr)


def _write_json(path: Path, data: Any, *, private: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    if private:
        path.chmod(0o600)


def _storage(key: str, version: tuple[int, int], data: Any) -> dict[str, Any]:
    """A file in the format of homeassistant.helpers.storage.Store."""
    return {"version": version[0], "minor_version": version[1], "key": key, "data": data}


def seed_files(config: Path) -> None:
    """configuration.yaml, the files it includes and the link to the integration."""
    config.mkdir(parents=True, exist_ok=True)
    yaml_path = config / "configuration.yaml"
    if not yaml_path.exists():
        yaml_path.write_text(CONFIGURATION_YAML, encoding="utf-8")
        log(f"wrote {yaml_path}")
    for name in ("automations.yaml", "scripts.yaml"):
        if not (config / name).exists():
            (config / name).write_text("[]\n" if name == "automations.yaml" else "{}\n", encoding="utf-8")
    link = config / "custom_components" / "meter_cloud"
    if not link.exists() and not link.is_symlink():
        link.parent.mkdir(parents=True, exist_ok=True)
        # Relative for a configuration at the top of the repository (config/, config-min/), else absolute.
        target = Path("..", "..", "custom_components", "meter_cloud")
        if config.resolve().parent != REPO.resolve():
            target = REPO / "custom_components" / "meter_cloud"
        link.symlink_to(target)
        log(f"linked {link} -> {target}")
    elif link.resolve() != (REPO / "custom_components" / "meter_cloud").resolve():
        log(f"warning: {link} does not point at this repository's integration")


def seed_onboarding(storage: Path) -> None:
    """Mark every onboarding step done, so the UI opens straight to the login page."""
    path = storage / "onboarding"
    if not path.exists():
        _write_json(path, _storage("onboarding", ONBOARDING_VERSION, {"done": ONBOARDING_STEPS}), private=True)
        log("marked onboarding done")


async def _create_owner(config: Path) -> None:
    """What onboarding does: an owner in the admin group, with username/password credentials."""
    auth = importlib.import_module("homeassistant.auth")
    auth_const = importlib.import_module("homeassistant.auth.const")
    config_entries = importlib.import_module("homeassistant.config_entries")
    core = importlib.import_module("homeassistant.core")
    dr = importlib.import_module("homeassistant.helpers.device_registry")

    hass = core.HomeAssistant(str(config))
    # As `hass --script auth` does: the auth store reads the device registry, which waits for config entries.
    hass.config_entries = config_entries.ConfigEntries(hass, {})
    await hass.config_entries.async_initialize()
    if hasattr(dr, "async_setup"):  # Home Assistant 2026
        dr.async_setup(hass)
    await dr.async_load(hass)
    hass.auth = await auth.auth_manager_from_config(hass, [{"type": "homeassistant"}], [])
    provider = hass.auth.auth_providers[0]
    await provider.async_initialize()
    if any(user["username"] == DEV_USERNAME for user in provider.data.users):
        return
    await provider.async_add_auth(DEV_USERNAME, DEV_PASSWORD)
    credentials = await provider.async_get_or_create_credentials({"username": DEV_USERNAME})
    user = await hass.auth.async_create_user("Developer", group_ids=[auth_const.GROUP_ID_ADMIN])
    await hass.auth.async_link_user(user, credentials)
    log(f"created user {DEV_USERNAME!r} (owner: {user.is_owner}, administrator: {user.is_admin})")
    # The auth store saves with a delay; the final write of a (forced) stop flushes it.
    await hass.async_stop(force=True)


def seed_user(config: Path) -> None:
    """Create the development login once."""
    auth_file = config / ".storage" / "auth_provider.homeassistant"
    if auth_file.exists() and DEV_USERNAME in {
        user.get("username") for user in json.loads(auth_file.read_text(encoding="utf-8"))["data"]["users"]
    }:
        return
    asyncio.run(_create_owner(config))


def _client(backend: str) -> Any:
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    return importlib.import_module("custom_components.meter_cloud.api").BACKENDS[backend].client


def _cangnan_meters() -> str:
    """The simulator's meters as the entry lists them: `UserID:MeterID`, one per line.

    Asked of the simulator itself (its meters are deterministic: KYNYN1448NN:0123456789NN), so the two cannot drift.
    """
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    simulator = importlib.import_module("simulator.cangnan").CangnanSimulator(meters=CANGNAN_METERS)
    return "\n".join(f"{meter.user_id}:{meter.meter_id}" for meter in simulator.meters.values())


def _kumir_nodes() -> str:
    """The simulator's nodes as the entry lists them: `code serial devtype`, one per line.

    Asked of the simulator itself (node codes Pol_276, Pol_277, ...; serials drawn from its seed, 1 by default, the
    first being the spec's 34781353), so the two cannot drift.
    """
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    simulator = importlib.import_module("simulator.kumir").KumirSimulator(nodes=KUMIR_NODES)
    return "\n".join(f"{node.code} {node.num} {node.dev}" for node in simulator.nodes.values())


def simulator_accounts() -> dict[str, dict[str, Any]]:
    """Entry data (without the push id) of each simulator, by backend."""
    return {
        "goldcard": {"backend": "goldcard", **GOLDCARD_ACCOUNT},
        "cangnan": {"backend": "cangnan", **CANGNAN_ACCOUNT, "meters": _cangnan_meters()},
        "iotmeter": {"backend": "iotmeter", **IOTMETER_ACCOUNT},
        "kumir": {"backend": "kumir", **KUMIR_ACCOUNT, "nodes": _kumir_nodes()},
    }


def _new_entry(backend: str, account: dict[str, Any]) -> dict[str, Any]:
    """A config entry as Home Assistant stores it (core.config_entries 1.5), with a fresh push id."""
    client = _client(backend)
    now = datetime.now(UTC).isoformat()
    return {
        "created_at": now,
        "data": {**account, "push_id": secrets.token_urlsafe(24)},
        "discovery_keys": {},
        "disabled_by": None,
        "domain": "meter_cloud",
        "entry_id": importlib.import_module("homeassistant.util.ulid").ulid_now(),
        "minor_version": 1,
        "modified_at": now,
        "options": {},
        "pref_disable_new_entities": False,
        "pref_disable_polling": False,
        "source": "user",
        "subentries": [],
        "title": f"{client.title(account)} (simulator)",
        "unique_id": client.unique_id(account),
        "version": 1,
    }


def seed_entries(storage: Path) -> dict[str, str]:
    """An entry per simulator, each added only when absent; return their push ids by backend.

    An entry is found by its unique id (what the config flow would refuse to add twice), so one added by hand under
    Settings → Devices & services counts too. A storage file of another version than the one written here gets no
    new entry (a warning instead); the entries it has still count.
    """
    path = storage / "core.config_entries"
    stored = json.loads(path.read_text(encoding="utf-8")) if path.exists() else None
    if stored is None:
        stored = _storage("core.config_entries", CONFIG_ENTRIES_VERSION, {"entries": []})
    version = (stored["version"], stored.get("minor_version", 1))
    entries = stored["data"]["entries"]
    push_ids: dict[str, str] = {}
    added = []
    for backend, account in simulator_accounts().items():
        unique_id = _client(backend).unique_id(account)
        found = next((e for e in entries if e["domain"] == "meter_cloud" and e.get("unique_id") == unique_id), None)
        if found is not None:
            push_ids[backend] = str(found["data"]["push_id"])
            continue
        if version != CONFIG_ENTRIES_VERSION:
            log(
                f"warning: {path} is version {version[0]}.{version[1]} and has no {backend} simulator entry; add one"
                " under Settings → Devices & services, or remove config/.storage"
            )
            continue
        entry = _new_entry(backend, account)
        entries.append(entry)
        added.append(entry["title"])
        push_ids[backend] = entry["data"]["push_id"]
    if added:
        _write_json(path, stored)
        for title in added:
            log(f"added config entry {title!r}")
    return push_ids


def seed(config: Path) -> dict[str, str]:
    """Everything, in an order Home Assistant is happy with; return the entries' push ids by backend."""
    seed_files(config)
    storage = config / ".storage"
    seed_user(config)
    seed_onboarding(storage)
    return seed_entries(storage)


def _ha_package() -> Path:
    return Path(importlib.import_module("homeassistant").__file__ or "").parent


def _configured_domains(config: Path) -> set[str]:
    """Top-level keys of configuration.yaml (all simple domain keys here)."""
    yaml_path = config / "configuration.yaml"
    text = yaml_path.read_text(encoding="utf-8") if yaml_path.exists() else CONFIGURATION_YAML
    return {line.split(":", 1)[0].split()[0] for line in text.splitlines() if line[:1].isalpha() and ":" in line}


def missing_requirements(config: Path, site: Path, *, after_dependencies: bool = False) -> list[str]:
    """Requirements of the integrations Home Assistant will set up that are not installed.

    That is what configuration.yaml names, the integration's dependencies and what Home Assistant always sets up
    (bootstrap's DEFAULT_INTEGRATIONS: in 2026 every base entity platform, camera and conversation included),
    with their dependencies. The test pins leave these out; Home Assistant would pip-install them at start-up.
    Also the unmet dependencies of what is already in `site` (installed there without dependencies, so that
    nothing the test environment has is installed twice).
    With `after_dependencies`, those count as dependencies too: an integration may import their code even when
    they are not set up (analytics imports hassio's, which needs aiohasupervisor). The test pins have them.
    """
    bootstrap = importlib.import_module("homeassistant.bootstrap")
    requirement_cls = importlib.import_module("packaging.requirements").Requirement
    metadata = importlib.import_module("importlib.metadata")
    components = _ha_package() / "components"
    todo = _configured_domains(config) | {"meter_cloud"} | bootstrap.CORE_INTEGRATIONS | bootstrap.DEFAULT_INTEGRATIONS
    seen: set[str] = set()
    requirements: set[str] = set()
    while todo:
        domain = todo.pop()
        seen.add(domain)
        manifest_path = components / domain / "manifest.json"
        if domain == "meter_cloud":
            manifest_path = REPO / "custom_components" / domain / "manifest.json"
        if not manifest_path.exists():
            continue
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        todo |= set(manifest.get("dependencies", [])) - seen
        if after_dependencies:
            todo |= set(manifest.get("after_dependencies", [])) - seen
        requirements.update(manifest.get("requirements", []))
    for dist in metadata.distributions(path=[str(site)]):
        for text in dist.requires or ():
            requirement = requirement_cls(text)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                requirements.add(f"{requirement.name}{requirement.specifier}")
    missing = []
    for text in sorted(requirements):
        requirement = requirement_cls(text)
        try:
            installed = metadata.version(requirement.name)
        except metadata.PackageNotFoundError:
            missing.append(text)
            continue
        if not requirement.specifier.contains(installed, prereleases=True):
            # Same-named package at another version: keep the pinned test environment's.
            log(f"note: {requirement.name} {installed} is installed; Home Assistant pins {text}")
    return missing


PROGRESS_EVERY = 30.0  # seconds between `wait --progress` lines


def wait(url: str, pid: int, seconds: float, progress: str | None = None) -> bool:
    """Poll until `url` answers with any HTTP status, `pid` exits, or time runs out.

    With `progress` (a name), say every PROGRESS_EVERY seconds that it is still not answering.
    """
    started = time.monotonic()
    deadline = started + seconds
    next_progress = started + PROGRESS_EVERY
    while time.monotonic() < deadline:
        if progress and time.monotonic() >= next_progress:
            log(f"{progress} is still starting ({time.monotonic() - started:.0f} s of at most {seconds:.0f} s)")
            next_progress += PROGRESS_EVERY
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        try:
            with urllib.request.urlopen(url, timeout=2):
                return True
        except urllib.error.HTTPError:
            return True  # 401 and friends: the server is up
        except (urllib.error.URLError, OSError):
            time.sleep(0.5)
    return False


def main() -> None:
    """Command line."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("seed").add_argument("config", type=Path)
    requirements = commands.add_parser("requirements")
    requirements.add_argument("config", type=Path)
    requirements.add_argument("site", type=Path)
    waiting = commands.add_parser("wait")
    waiting.add_argument("url")
    waiting.add_argument("pid", type=int)
    waiting.add_argument("seconds", type=float)
    waiting.add_argument("--progress", metavar="NAME", help="say every 30 s that NAME is still starting")
    commands.add_parser("dashboard").add_argument("url")
    args = parser.parse_args()
    if args.command == "seed":
        for backend, push_id in seed(args.config.resolve()).items():
            print(backend, push_id)
    elif args.command == "requirements":
        print("\n".join(missing_requirements(args.config, args.site)))
    elif args.command == "dashboard":
        develop_dashboard = importlib.import_module("develop_dashboard")  # beside this script
        try:
            asyncio.run(develop_dashboard.run(args.url, DEV_USERNAME, DEV_PASSWORD))
        except Exception as err:  # scripts/develop goes on without the dashboard
            log(f"could not create the dashboard: {err!r}")
            sys.exit(1)
    else:
        sys.exit(0 if wait(args.url, args.pid, args.seconds, args.progress) else 1)


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:  # Ctrl-C in scripts/develop: it stops everything; no traceback here
        sys.exit(130)
