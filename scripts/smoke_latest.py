"""Helpers of scripts/smoke-latest: the newest Home Assistant, four simulators, everything through the REST API.

    python scripts/smoke_latest.py ports N                    N free TCP ports on 127.0.0.1 (never 8123, 8901-8904)
    python scripts/smoke_latest.py files CONFIG HA_PORT DIR   scripts/develop's configuration.yaml, on HA_PORT,
                                                              with the integration in DIR
    python scripts/smoke_latest.py requirements CONFIG        packages Home Assistant will need but lacks
    python scripts/smoke_latest.py auth CONFIG                the dev / dev owner, onboarding done (no entries)
    python scripts/smoke_latest.py exercise HA_URL RESULTS BACKEND=PORT...
                                                              config flow per backend, checks, options,
                                                              reconfigure, a valve per money backend, a wait
    python scripts/smoke_latest.py report CONFIG RESULTS ...  reads home-assistant.log; exit 1 on a problem

All but `ports` and `files` run in the smoke environment's Python (they import Home Assistant, or the simulators).
The pieces scripts/develop has (configuration.yaml, the owner, onboarding, the simulator accounts, the
requirements) come from scripts/develop_seed.py.
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import socket
import sys
import sysconfig
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import develop_seed  # a sibling script, not a package

DOMAIN = "meter_cloud"
# The simulators' ports in develop_seed's accounts (scripts/develop's), by backend.
DEVELOP_PORTS = {"goldcard": 8901, "cangnan": 8902, "iotmeter": 8903, "kumir": 8904}
RESERVED_PORTS = {8123, *DEVELOP_PORTS.values()}
# Backends whose simulator pushes (KUMIR-RESURS never does) and which have valves.
PUSH_BACKENDS = ("goldcard", "cangnan", "iotmeter")
NEW_SCAN_INTERVAL = 1  # minutes: the options flow's change (the default is 10)
LOADED_TIMEOUT = 120.0
# 2026-11-05 10:00:00.123+00:00 WARNING (MainThread) [logger] message (older releases: no offset)
LOG_LINE = re.compile(
    r"^\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}:\d{2}(?:[.,]\d+)?(?:Z|[+-]\d{2}:?\d{2})? (DEBUG|INFO|WARNING|ERROR|CRITICAL) "
)
BAD_LEVELS = {"WARNING", "ERROR", "CRITICAL"}
# Warnings every custom integration gets, whatever it does: not counted.
HARMLESS = (re.compile(rf"\[homeassistant\.loader\] We found a custom integration {DOMAIN} which has not been tested"),)
MAX_ENTRY_LINES = 60  # of one flagged log entry (its traceback), when printed


def say(message: str) -> None:
    """Progress goes to stderr."""
    print(f"smoke: {message}", file=sys.stderr)


# --- ports, files, requirements, auth -----------------------------------------------------------------------------


def free_ports(count: int) -> list[int]:
    """`count` distinct ports the kernel hands out as free (all held open together, then released)."""
    sockets: list[socket.socket] = []
    ports: list[int] = []
    try:
        while len(ports) < count:
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
            port = sock.getsockname()[1]
            if port not in RESERVED_PORTS:
                ports.append(port)
    finally:
        for sock in sockets:
            sock.close()
    return ports


def write_files(config: Path, ha_port: int, integration: Path) -> None:
    """scripts/develop's lean configuration.yaml and integration link, with the internal URL on `ha_port`.

    The port itself comes from SETUP_PORT in Home Assistant's environment: an `http:` block in YAML would be moved
    into storage and leave a repair issue behind. The link to `integration` is absolute (develop's relative one works
    only for a configuration inside the repository); develop_seed notes it when it is not this repository's.
    """
    link = config / "custom_components" / DOMAIN
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(integration.resolve())
    develop_seed.seed_files(config)
    yaml_path = config / "configuration.yaml"
    text = yaml_path.read_text(encoding="utf-8")
    old = "internal_url: http://127.0.0.1:8123"
    if old not in text:
        raise SystemExit(f"smoke: {yaml_path} has no {old!r} to move to port {ha_port}")
    text = text.replace(old, f"internal_url: http://127.0.0.1:{ha_port}")
    if f"custom_components.{DOMAIN}:" not in text:
        raise SystemExit(f"smoke: {yaml_path} sets no log level for custom_components.{DOMAIN}")
    yaml_path.write_text(text, encoding="utf-8")


def requirements(config: Path) -> list[str]:
    """develop_seed's list for `config`, plus unmet dependencies of anything in this environment."""
    site = Path(sysconfig.get_paths()["purelib"])
    return list(develop_seed.missing_requirements(config, site, after_dependencies=True))


def seed_auth(config: Path) -> None:
    """The owner dev / dev and onboarding done; no config entries (the config flow adds them)."""
    develop_seed.seed_user(config)
    develop_seed.seed_onboarding(config / ".storage")


# --- the REST API -----------------------------------------------------------------------------------------------


class ApiError(Exception):
    """An unexpected HTTP answer."""


class Api:
    """Home Assistant's REST API with a bearer token."""

    def __init__(self, base: str) -> None:
        """Not logged in yet."""
        self.base = base.rstrip("/")
        self.token: str | None = None

    def request(self, method: str, path: str, body: Any = None, *, form: dict[str, str] | None = None) -> Any:
        """One request; the JSON answer (text when it is not JSON). A non-2xx answer raises ApiError."""
        headers = {"Content-Type": "application/json"}
        data = None if body is None else json.dumps(body).encode()
        if form is not None:
            headers["Content-Type"] = "application/x-www-form-urlencoded"
            data = urllib.parse.urlencode(form).encode()
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        request = urllib.request.Request(self.base + path, data=data, headers=headers, method=method)
        try:
            with urllib.request.urlopen(request, timeout=90) as response:
                text = response.read().decode()
        except urllib.error.HTTPError as err:
            raise ApiError(f"{method} {path}: HTTP {err.code}: {err.read().decode(errors='replace')[:500]}") from err
        try:
            return json.loads(text)
        except ValueError:
            return text

    def login(self, username: str, password: str) -> None:
        """The login flow of the frontend, then the token endpoint."""
        client_id = self.base + "/"
        flow = self.request(
            "POST",
            "/auth/login_flow",
            {"client_id": client_id, "handler": ["homeassistant", None], "redirect_uri": client_id},
        )
        done = self.request(
            "POST",
            f"/auth/login_flow/{flow['flow_id']}",
            {"client_id": client_id, "username": username, "password": password},
        )
        if done.get("type") != "create_entry":
            raise ApiError(f"login as {username!r} failed: {done}")
        tokens = self.request(
            "POST",
            "/auth/token",
            form={"grant_type": "authorization_code", "code": done["result"], "client_id": client_id},
        )
        self.token = tokens["access_token"]

    def entries(self) -> dict[str, dict[str, Any]]:
        """The domain's config entries by id."""
        found = self.request("GET", f"/api/config/config_entries/entry?domain={DOMAIN}")
        return {entry["entry_id"]: entry for entry in found}

    def entities_by_entry(self) -> dict[str, list[str]]:
        """The domain's registered entities by config entry id (a template: the registries are websocket-only)."""
        template = (
            f"[{{% for e in integration_entities('{DOMAIN}') %}}"
            "{{ [e, config_entry_id(e)] | tojson }}{{ ',' if not loop.last }}{% endfor %}]"
        )
        rendered = self.request("POST", "/api/template", {"template": template})
        by_entry: dict[str, list[str]] = {}
        for entity_id, entry_id in json.loads(rendered) if isinstance(rendered, str) else rendered:
            by_entry.setdefault(entry_id, []).append(entity_id)
        return by_entry

    def states(self) -> dict[str, str]:
        """Every entity's state."""
        return {state["entity_id"]: state["state"] for state in self.request("GET", "/api/states")}


def sim_post(url: str, body: dict[str, Any]) -> Any:
    """A simulator's /_sim/ control endpoint."""
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read().decode())


def accounts(ports: dict[str, int]) -> dict[str, dict[str, Any]]:
    """develop_seed's simulator accounts, their URLs moved from scripts/develop's ports to `ports`."""
    moved = {DEVELOP_PORTS[backend]: port for backend, port in ports.items()}
    result = {}
    for backend, account in develop_seed.simulator_accounts().items():
        fixed = dict(account)
        for key, value in account.items():
            if isinstance(value, str) and value.startswith("http://"):
                url = urllib.parse.urlsplit(value)
                if url.hostname == "127.0.0.1" and url.port in moved:
                    fixed[key] = url._replace(netloc=f"127.0.0.1:{moved[url.port]}").geturl()
        result[backend] = fixed
    return result


def _form_fields(result: dict[str, Any]) -> set[str]:
    return {field["name"] for field in result.get("data_schema") or []}


def _expect(result: dict[str, Any], **want: str) -> None:
    """Raise ApiError unless the flow result has these values."""
    if any(result.get(key) != value for key, value in want.items()):
        expected = ", ".join(f"{key} {value!r}" for key, value in want.items())
        raise ApiError(f"expected {expected}, got {result}")


def _polling_form(api: Api, path: str, flow: dict[str, Any]) -> dict[str, Any]:
    """The polling form of an options flow; a menu (KUMIR-RESURS: Polling, Parameters, Tariff layout) leads to it."""
    if flow.get("type") != "menu":
        return flow
    if "polling" not in (flow.get("menu_options") or []):
        raise ApiError(f"options menu has no polling: {flow}")
    result: dict[str, Any] = api.request("POST", f"{path}/{flow['flow_id']}", {"next_step_id": "polling"})
    return result


def _submit_form(api: Api, path: str, flow: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    """Submit `values` (only the form's own fields) to a flow's form step; the next result."""
    if flow.get("type") != "form":
        raise ApiError(f"expected a form, got {flow}")
    fields = _form_fields(flow)
    dropped = sorted(set(values) - fields)
    if dropped:
        say(f"note: step {flow.get('step_id')!r} has no field {', '.join(dropped)}; left out")
    result: dict[str, Any] = api.request(
        "POST", f"{path}/{flow['flow_id']}", {k: values[k] for k in fields & set(values)}
    )
    if result.get("type") == "form" and result.get("errors"):
        placeholders = result.get("description_placeholders") or {}
        raise ApiError(f"step {result.get('step_id')!r} answered errors {result['errors']} {placeholders}")
    return result


# --- the exercise ---------------------------------------------------------------------------------------------


class Exercise:
    """Everything done through the REST API, with what happened recorded for the report."""

    def __init__(self, api: Api, ports: dict[str, int]) -> None:
        """Nothing done yet."""
        self.api = api
        self.ports = ports
        self.accounts = accounts(ports)
        self.results: dict[str, Any] = {"entries": {}, "failures": [], "valves": [], "steps": []}

    def fail(self, message: str) -> None:
        """Record a failure and go on where that makes sense."""
        say(f"FAIL: {message}")
        self.results["failures"].append(message)

    def step(self, message: str) -> None:
        """Record a step done."""
        say(message)
        self.results["steps"].append(message)

    def create_entries(self) -> None:
        """The user config flow for every backend; each must end in create_entry."""
        path = "/api/config/config_entries/flow"
        for backend, account in self.accounts.items():
            record: dict[str, Any] = {"backend": backend, "created": False}
            try:
                flow = self.api.request("POST", path, {"handler": DOMAIN, "show_advanced_options": False})
                flow = _submit_form(self.api, path, flow, {"backend": backend})
                _expect(flow, step_id=f"account_{backend}")
                fields = {key: value for key, value in account.items() if key != "backend"}
                done = _submit_form(self.api, path, flow, fields)
                _expect(done, type="create_entry")
            except ApiError as err:
                self.fail(f"{backend}: config flow: {err}")
                self.results["entries"][backend] = record
                continue
            entry = done["result"]
            record |= {"created": True, "entry_id": entry["entry_id"], "title": entry["title"]}
            record["push_url"] = (done.get("description_placeholders") or {}).get("push_url")
            self.results["entries"][backend] = record
            self.step(f"{backend}: config flow created {entry['title']!r} ({entry['entry_id']})")

    def created(self) -> dict[str, dict[str, Any]]:
        """The entries the config flow created, by backend."""
        return {backend: record for backend, record in self.results["entries"].items() if record.get("created")}

    def wait_loaded(self, what: str, *, settle: float = 0.0) -> bool:
        """Wait until every created entry is `loaded` (after `settle` seconds, for a reload to begin)."""
        time.sleep(settle)
        want = {record["entry_id"]: backend for backend, record in self.created().items()}
        deadline = time.monotonic() + LOADED_TIMEOUT
        states: dict[str, Any] = {}
        while time.monotonic() < deadline:
            entries = self.api.entries()
            states = {entry_id: entries.get(entry_id, {}) for entry_id in want}
            if all(entry.get("state") == "loaded" for entry in states.values()):
                for backend in want.values():
                    self.results["entries"][backend].setdefault("loaded_after", []).append(what)
                self.step(f"{what}: all {len(want)} entries loaded")
                return True
            time.sleep(1)
        for entry_id, entry in states.items():
            if entry.get("state") != "loaded":
                self.fail(
                    f"{want[entry_id]}: {what}: entry is {entry.get('state')!r}"
                    f" ({entry.get('reason') or 'no reason given'}) after {LOADED_TIMEOUT:.0f} s"
                )
        return False

    def check_entities(self, what: str) -> None:
        """Every created entry has entities with a state, at least one a sensor."""
        by_entry = self.api.entities_by_entry()
        states = self.api.states()
        for backend, record in self.created().items():
            registered = by_entry.get(record["entry_id"], [])
            live = [entity_id for entity_id in registered if entity_id in states]
            sensors = [entity_id for entity_id in live if entity_id.startswith("sensor.")]
            unavailable = [entity_id for entity_id in live if states[entity_id] == "unavailable"]
            record[what] = {
                "registered": len(registered),
                "with_state": len(live),
                "sensors": len(sensors),
                "unavailable": len(unavailable),
                "by_platform": _count_platforms(live),
            }
            if not sensors:
                self.fail(f"{backend}: {what}: no sensor entity in /api/states ({len(registered)} registered)")
        self.step(f"{what}: entities checked")

    def point_pushes(self) -> None:
        """Tell each pushing simulator its entry's push URL (shown by the config flow's last step)."""
        for backend in PUSH_BACKENDS:
            record = self.created().get(backend)
            if record is None or not record.get("push_url"):
                continue
            url = f"http://127.0.0.1:{self.ports[backend]}/_sim/push_url"
            answer = sim_post(url, {"url": record["push_url"]})
            self.step(f"{backend}: simulator pushes to {answer.get('push_url')}")

    def close_valves(self) -> None:
        """valve.close_valve on an open valve of each money backend."""
        by_entry = self.api.entities_by_entry()
        states = self.api.states()
        for backend in PUSH_BACKENDS:
            record = self.created().get(backend)
            if record is None:
                continue
            valves = [e for e in by_entry.get(record["entry_id"], []) if e.startswith("valve.") and e in states]
            valve = next((e for e in valves if states[e] == "open"), None)
            if valve is None:
                say(f"note: {backend}: no open valve among {len(valves)}; no valve closed")
                continue
            try:
                self.api.request("POST", "/api/services/valve/close_valve", {"entity_id": valve})
            except ApiError as err:
                self.fail(f"{backend}: valve.close_valve on {valve}: {err}")
                continue
            self.results["valves"].append(valve)
            self.step(f"{backend}: valve.close_valve {valve}: accepted (now {self.api.states().get(valve)!r})")

    def change_options(self) -> None:
        """The options flow of every entry: scan_interval to NEW_SCAN_INTERVAL minutes."""
        path = "/api/config/config_entries/options/flow"
        for backend, record in self.created().items():
            try:
                flow = self.api.request("POST", path, {"handler": record["entry_id"]})
                flow = _polling_form(self.api, path, flow)
                done = _submit_form(self.api, path, flow, {"scan_interval": NEW_SCAN_INTERVAL})
                _expect(done, type="create_entry")
            except ApiError as err:
                self.fail(f"{backend}: options flow: {err}")
                continue
            record["options"] = done.get("data") or {"scan_interval": NEW_SCAN_INTERVAL}
            self.step(f"{backend}: options flow: scan_interval {NEW_SCAN_INTERVAL} min")

    def reconfigure(self) -> None:
        """The reconfigure flow of every entry, with the same settings; each must abort reconfigure_successful."""
        path = "/api/config/config_entries/flow"
        for backend, record in self.created().items():
            start = {"handler": DOMAIN, "show_advanced_options": False, "entry_id": record["entry_id"]}
            try:
                flow = self.api.request("POST", path, start)
                _expect(flow, step_id=f"reconfigure_{backend}")
                account = {key: value for key, value in self.accounts[backend].items() if key != "backend"}
                done = _submit_form(self.api, path, flow, account)
                _expect(done, type="abort", reason="reconfigure_successful")
            except ApiError as err:
                self.fail(f"{backend}: reconfigure flow: {err}")
                continue
            record["reconfigured"] = True
            self.step(f"{backend}: reconfigure flow: reconfigure_successful")

    def settle(self, seconds: float) -> None:
        """Let polls, pushes and the valve commands run; then the valves' states, and no more pushes.

        The simulators stop pushing before Home Assistant stops, so that their pushes do not fail meanwhile.
        """
        self.step(f"letting it run {seconds:.0f} s (polls, pushes, valve commands)")
        time.sleep(seconds)
        states = self.api.states()
        self.results["valve_states"] = {valve: states.get(valve) for valve in self.results["valves"]}
        for backend in PUSH_BACKENDS:
            if backend in self.created():
                sim_post(f"http://127.0.0.1:{self.ports[backend]}/_sim/push_url", {"url": None})
        self.step(f"valves after {seconds:.0f} s: {self.results['valve_states']}")

    def run(self, wait: float) -> None:
        """All of it, in order; a step that cannot go on (nothing created, nothing loaded) stops the rest."""
        self.results["ha_version"] = self.api.request("GET", "/api/config")["version"]
        self.create_entries()
        if not self.created() or not self.wait_loaded("after the config flow"):
            return
        self.check_entities("entities")
        self.point_pushes()
        self.close_valves()
        self.change_options()
        if not self.wait_loaded("after the options flow", settle=3):
            return
        self.reconfigure()
        if not self.wait_loaded("after the reconfigure flow", settle=3):
            return
        self.check_entities("entities_after_reload")
        self.settle(wait)


def _count_platforms(entity_ids: list[str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for entity_id in entity_ids:
        platform_name = entity_id.split(".", 1)[0]
        counts[platform_name] = counts.get(platform_name, 0) + 1
    return counts


def exercise(ha_url: str, results_path: Path, ports: dict[str, int], wait: float) -> int:
    """Log in, run the Exercise, write its results; 0 when nothing failed."""
    api = Api(ha_url)
    run = Exercise(api, ports)
    try:
        api.login(develop_seed.DEV_USERNAME, develop_seed.DEV_PASSWORD)
        run.run(wait)
    except Exception as err:  # whatever stops it is a failure to report, not a crash
        run.fail(f"stopped: {type(err).__name__}: {err}")
    finally:
        results_path.write_text(json.dumps(run.results, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return 1 if run.results["failures"] else 0


# --- the report -------------------------------------------------------------------------------------------------


def log_entries(log: Path) -> list[tuple[str, list[str]]]:
    """home-assistant.log as (level, lines) entries: a line with a level and what follows it (tracebacks)."""
    entries: list[tuple[str, list[str]]] = []
    for line in log.read_text(encoding="utf-8", errors="replace").splitlines():
        match = LOG_LINE.match(line)
        if match:
            entries.append((match.group(1), [line]))
        elif entries:
            entries[-1][1].append(line)
        else:
            entries.append(("", [line]))
    return entries


def flagged(entries: list[tuple[str, list[str]]]) -> tuple[list[list[str]], list[list[str]]]:
    """(entries naming meter_cloud at WARNING or above, or with a traceback naming it; other WARNING+ entries)."""
    ours: list[list[str]] = []
    others: list[list[str]] = []
    for level, lines in entries:
        text = "\n".join(lines)
        traceback = "Traceback" in text and DOMAIN in text[text.index("Traceback") :]
        if any(pattern.search(lines[0]) for pattern in HARMLESS):
            continue
        if (level in BAD_LEVELS and DOMAIN in text) or traceback:
            ours.append(lines)
        elif level in BAD_LEVELS:
            others.append(lines)
    return ours, others


def console_only(console: Path, log: Path) -> list[list[str]]:
    """Console output that home-assistant.log lacks (e.g. "Exception ignored in ..."), when it names meter_cloud."""
    logged = {lines[0]: lines for _, lines in (log_entries(log) if log.exists() else [])}
    found = []
    for _, lines in log_entries(console):
        extra = lines[len(logged[lines[0]]) :] if lines[0] in logged else lines
        if any(DOMAIN in line for line in extra):
            found.append(extra)
    return found


def _print_entry(lines: list[str]) -> None:
    for line in lines[:MAX_ENTRY_LINES]:
        print(f"  {line}")
    if len(lines) > MAX_ENTRY_LINES:
        print(f"  ... ({len(lines) - MAX_ENTRY_LINES} more lines)")


def _entry_summary(backend: str, record: dict[str, Any]) -> str:
    counts = record.get("entities_after_reload") or record.get("entities") or {}
    platforms = ", ".join(f"{n} {name}" for name, n in sorted(counts.get("by_platform", {}).items()))
    return f"{record.get('title', backend)}: {counts.get('with_state', 0)} entities ({platforms or 'none'})"


def _valve_summary(results: dict[str, Any]) -> str:
    states = results.get("valve_states") or dict.fromkeys(results.get("valves", []))
    return ", ".join(f"{valve} {state or '?'}" for valve, state in states.items()) or "none"


def report(config: Path, results_path: Path, args: argparse.Namespace) -> int:
    """Print the problems, or a one-paragraph summary; 0 when clean."""
    results: dict[str, Any] = {"entries": {}, "failures": [], "valves": []}
    if results_path.exists():
        results = json.loads(results_path.read_text(encoding="utf-8"))
    log = config / "home-assistant.log"
    entries = log_entries(log) if log.exists() else []
    ours, others = flagged(entries)
    # What reached only the console (stderr of Python itself, e.g. "Exception ignored in ..."): also counted.
    console = config / "hass.out"
    if console.exists():
        ours += console_only(console, log)
    failures = list(results.get("failures", []))
    if not log.exists():
        failures.append(f"no {log}")
    if args.exercise_status and not failures:
        failures.append(f"the exercise exited {args.exercise_status}")
    if args.hass_status:
        failures.append("Home Assistant did not stop within its time after SIGTERM")
    if others:
        print(f"Other WARNING/ERROR entries in home-assistant.log ({len(others)}, not counted):")
        for lines in others:
            _print_entry(lines)
        print()
    records = results.get("entries", {})
    created = [backend for backend, record in records.items() if record.get("created")]
    loaded = [backend for backend in created if records[backend].get("loaded_after")]
    if not created and not failures:
        failures.append(f"no config entry was created (results: {results_path})")
    python = platform.python_version()
    version = results.get("ha_version") or args.ha_version
    if ours or failures:
        timing = f"{args.install_seconds} s setup, {args.run_seconds} s run"
        print(f"FAIL: Home Assistant {version}, Python {python}, {timing}")
        for failure in failures:
            print(f"  {failure}")
        if ours:
            print(f"home-assistant.log: {len(ours)} entries at WARNING or above (or a traceback) naming {DOMAIN}:")
            for lines in ours:
                _print_entry(lines)
        print(f"Entries created: {', '.join(created) or 'none'}; loaded: {', '.join(loaded) or 'none'}.")
        return 1
    steps = [
        f"Home Assistant {version} on Python {python}: {len(created)} entries created through the config flow"
        f" and loaded ({'; '.join(_entry_summary(b, records[b]) for b in created)}).",
        f"Options flow (scan_interval {NEW_SCAN_INTERVAL} min) and reconfigure flow done on each, all loaded again;"
        f" valve.close_valve then: {_valve_summary(results)}.",
        f"home-assistant.log clean: no WARNING, ERROR or traceback naming {DOMAIN}"
        f" ({args.install_seconds} s setup, {args.run_seconds} s run).",
    ]
    print(" ".join(steps))
    return 0


# --- command line -------------------------------------------------------------------------------------------------


def _backend_ports(pairs: list[str]) -> dict[str, int]:
    ports = {}
    for pair in pairs:
        backend, _, port = pair.partition("=")
        if backend not in DEVELOP_PORTS or not port.isdigit():
            raise SystemExit(f"smoke: expected BACKEND=PORT with BACKEND one of {', '.join(DEVELOP_PORTS)}: {pair!r}")
        ports[backend] = int(port)
    return ports


def main() -> None:
    """Command line."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("ports").add_argument("count", type=int)
    files = commands.add_parser("files")
    files.add_argument("config", type=Path)
    files.add_argument("ha_port", type=int)
    files.add_argument("integration", type=Path)
    commands.add_parser("requirements").add_argument("config", type=Path)
    commands.add_parser("auth").add_argument("config", type=Path)
    run = commands.add_parser("exercise")
    run.add_argument("ha_url")
    run.add_argument("results", type=Path)
    run.add_argument("ports", nargs="+", metavar="BACKEND=PORT")
    run.add_argument("--wait", type=float, default=20.0, help="seconds to let it run at the end")
    rep = commands.add_parser("report")
    rep.add_argument("config", type=Path)
    rep.add_argument("results", type=Path)
    rep.add_argument("--ha-version", default="?")
    rep.add_argument("--exercise-status", type=int, default=0)
    rep.add_argument("--hass-status", type=int, default=0)
    rep.add_argument("--install-seconds", type=int, default=0)
    rep.add_argument("--run-seconds", type=int, default=0)
    args = parser.parse_args()
    if args.command == "ports":
        print(*free_ports(args.count))
    elif args.command == "files":
        write_files(args.config, args.ha_port, args.integration)
    elif args.command == "requirements":
        print("\n".join(requirements(args.config)))
    elif args.command == "auth":
        seed_auth(args.config)
    elif args.command == "exercise":
        sys.exit(exercise(args.ha_url, args.results, _backend_ports(args.ports), args.wait))
    else:
        sys.exit(report(args.config, args.results, args))


if __name__ == "__main__":
    main()
