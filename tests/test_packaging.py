"""What hassfest and HACS would check, replicated: manifest, hacs.json, translations, layering; scripts/setup."""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).parent.parent
COMPONENT = ROOT / "custom_components" / "meter_cloud"
LANGUAGES = ("en", "ru", "zh-Hans")


def load(path: Path) -> Any:
    """Read JSON."""
    return json.loads(path.read_text(encoding="utf-8"))


def leaves(tree: Any, prefix: str = "") -> dict[str, str]:
    """Flatten nested dicts to dotted keys."""
    if isinstance(tree, dict):
        out: dict[str, str] = {}
        for key, value in tree.items():
            out.update(leaves(value, f"{prefix}{key}."))
        return out
    return {prefix.rstrip("."): tree}


def test_manifest() -> None:
    """domain and name first, the rest sorted; every key HACS and hassfest want; nothing HA ships."""
    manifest = load(COMPONENT / "manifest.json")
    keys = list(manifest)
    assert keys[:2] == ["domain", "name"]
    assert keys[2:] == sorted(keys[2:])
    for key in ("version", "documentation", "issue_tracker", "codeowners", "iot_class"):
        assert manifest[key], key
    assert isinstance(manifest["requirements"], list)
    assert manifest["config_flow"] is True
    assert manifest["integration_type"] == "hub"
    assert re.fullmatch(r"\d+\.\d+\.\d+", manifest["version"])
    # Pinned exactly, except lxml: Home Assistant's scrape integration pins its own (5.3.0 in 2025.4,
    # 6.1.2 in 2026.10) and a different exact pin would make the two reinstall each other.
    assert all("==" in req for req in manifest["requirements"] if not req.startswith("lxml"))
    assert "lxml>=5.3.0" in manifest["requirements"]
    shipped = ("aiohttp", "voluptuous", "homeassistant")
    assert not [r for r in manifest["requirements"] if r.split("==")[0].lower() in shipped]
    assert "http" in manifest["dependencies"]


def test_hacs() -> None:
    """hacs.json has only the keys HACS's schema allows."""
    hacs = load(ROOT / "hacs.json")
    assert set(hacs) <= {
        "name",
        "homeassistant",
        "country",
        "render_readme",
        "content_in_root",
        "zip_release",
        "filename",
        "hide_default_branch",
        "persistent_directory",
        "hacs",
    }
    assert hacs["homeassistant"] == "2025.4.0"
    assert (COMPONENT / "brand" / "icon.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_translations_complete_and_equal() -> None:
    """Every language has exactly the English keys and the same placeholders."""
    english = leaves(load(COMPONENT / "translations" / "en.json"))
    for language in LANGUAGES[1:]:
        other = leaves(load(COMPONENT / "translations" / f"{language}.json"))
        assert set(other) == set(english), language
        for key, text in english.items():
            assert set(re.findall(r"{\w+}", other[key])) == set(re.findall(r"{\w+}", text)), (language, key)


def test_services_translated() -> None:
    """Every service and field in services.yaml has a name and description."""
    services = yaml.safe_load((COMPONENT / "services.yaml").read_text())
    english = load(COMPONENT / "translations" / "en.json")["services"]
    icons = load(COMPONENT / "icons.json")["services"]
    assert set(services) == set(english) == set(icons)
    for name, spec in services.items():
        assert english[name]["name"]
        assert english[name]["description"]
        assert set(spec.get("fields", {})) == set(english[name]["fields"]), name


def test_code_keys_are_translated() -> None:
    """translation_key values used in code exist in en.json (exceptions, entities, config errors)."""
    english = load(COMPONENT / "translations" / "en.json")
    source = "\n".join(p.read_text() for p in COMPONENT.glob("*.py"))
    for key in set(re.findall(r'translation_key="(\w+)"', source)) - {"backend"}:
        assert (
            key in english["exceptions"]
            or key in english.get("issues", {})
            or key in english["selector"]
            or any(key in english["entity"][p] for p in english["entity"])
        ), key
    for key in re.findall(r'_invalid\("(\w+)"', source):
        assert key in english["exceptions"], key
    for key in re.findall(r'CommandError\([^)]*reason="(\w+)"', source):
        assert key in english["exceptions"], key
    for key in ("unknown_meter", "reference_conflict", "no_pending_command", "invalid_factor_code"):
        assert key in english["exceptions"]
    # A refused login has one key per backend (invalid_auth_<backend>): tests/test_translations.py.
    assert {"invalid_factor_code", "cannot_connect", "unknown", "api_error"} <= set(english["config"]["error"])


def test_api_has_no_homeassistant_import() -> None:
    """The client layer stays free of Home Assistant."""
    for path in (COMPONENT / "api").glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            assert not [n for n in names if n.startswith("homeassistant")], path


def test_no_vendor_names_in_platforms() -> None:
    """Platforms, services and the coordinator do not branch on a vendor."""
    for name in ("sensor.py", "valve.py", "event.py", "entity.py", "coordinator.py", "services.py"):
        assert "goldcard" not in (COMPONENT / name).read_text().lower(), name


def test_quality_scale_lists_every_rule() -> None:
    """quality_scale.yaml records each rule as done, todo or exempt (with a reason)."""
    rules = yaml.safe_load((COMPONENT / "quality_scale.yaml").read_text())["rules"]
    assert len(rules) == 54
    for name, value in rules.items():
        status = value if isinstance(value, str) else value["status"]
        assert status in {"done", "todo", "exempt"}, name
        if status == "exempt":
            assert value["comment"], name


MDI = re.compile(r"mdi:[a-z0-9]+(?:-[a-z0-9]+)*")


def test_icons() -> None:
    """icons.json in hassfest's shape; an entity without an entry has a device class that brings its icons.

    State icons name only states the entity can take: an enum's options, the valve's four, on/off.
    """
    from homeassistant.components.sensor import SensorDeviceClass
    from homeassistant.components.valve import ValveState

    from custom_components.meter_cloud.api.kumir.client import UNKNOWN_TRANSLATION
    from custom_components.meter_cloud.api.kumir.params import PARAMS
    from custom_components.meter_cloud.binary_sensor import FLAGS
    from custom_components.meter_cloud.money_entities import FORESIGHT, GAS_COST, LOW_BALANCE
    from custom_components.meter_cloud.sensor import RECHARGE_STATUS, SENSORS
    from custom_components.meter_cloud.valve import MeterValve

    icons = load(COMPONENT / "icons.json")
    assert set(icons) == {"entity", "services"}
    english = load(COMPONENT / "translations" / "en.json")["entity"]
    assert set(icons["entity"]) <= set(english)
    sensors = [*SENSORS, RECHARGE_STATUS, *FORESIGHT, GAS_COST]
    flags = {**FLAGS, LOW_BALANCE.key: LOW_BALANCE.device_class}
    # KUMIR-RESURS values: kumir_<parameter>, or kumir_<parameter>_<what it is> for a named tariff.
    kumir = {f"kumir_{name.lower()}": info.device_class for name, info in PARAMS.items()}
    kumir.update({key: kumir.get(key.rsplit("_", 1)[0]) for key in english["sensor"] if key not in kumir})
    device_classes: dict[str, dict[str, Any]] = {
        "sensor": {**kumir, **{d.key: d.device_class for d in sensors}, UNKNOWN_TRANSLATION: None},
        "binary_sensor": flags,
        "valve": {"valve": MeterValve._attr_device_class},
        "event": {"alarm": None},
    }
    states: dict[str, dict[str, set[str]]] = {
        "sensor": {d.key: set(d.options or ()) for d in sensors},
        "binary_sensor": {key: {"on", "off"} for key in flags},
        "valve": {"valve": {state.value for state in ValveState}},
        "event": {"alarm": set()},
    }
    for platform, keys in english.items():
        entries = icons["entity"].get(platform, {})
        assert set(entries) <= set(keys), platform
        for key in keys:
            # An enum's device class has no icons of its own; the others' do (and change with the state).
            device_class = device_classes[platform].get(key)
            assert key in entries or device_class not in (None, SensorDeviceClass.ENUM), (platform, key)
        for key, entry in entries.items():
            assert set(entry) <= {"default", "state"}, (platform, key)
            assert MDI.fullmatch(entry["default"]), (platform, key)
            assert set(entry.get("state", {})) <= states[platform].get(key, set()), (platform, key)
            assert all(MDI.fullmatch(icon) for icon in entry.get("state", {}).values()), (platform, key)
    assert all(MDI.fullmatch(entry["service"]) for entry in icons["services"].values())


def test_quality_scale_claims_hold() -> None:
    """The claims of quality_scale.yaml that code can check: action count, requirements, mypy's exceptions."""
    from custom_components.meter_cloud.services import SERVICES

    rules = yaml.safe_load((COMPONENT / "quality_scale.yaml").read_text())["rules"]
    assert f"All {len(SERVICES)} actions" in rules["action-setup"]["comment"]
    transparency = rules["dependency-transparency"]
    assert transparency["status"] == "done"
    for requirement in load(COMPONENT / "manifest.json")["requirements"]:
        assert re.split(r"[<>=~!]", requirement)[0] in transparency["comment"], requirement
    mypy = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["mypy"]
    assert mypy["strict"] is True
    assert not {"ignore_missing_imports", "ignore_errors"} & set(mypy)
    for override in mypy["overrides"]:
        # Nothing strict is switched off; an error code switched off is named in strict-typing's comment.
        assert not [key for key, value in override.items() if value is False or key.startswith("ignore_")]
        for module in override["module"] if "disable_error_code" in override else ():
            assert f"{module.rsplit('.', 1)[-1]}.py" in rules["strict-typing"]["comment"], module


def _setup(venv: Path, python: str) -> subprocess.CompletedProcess[str]:
    """Run scripts/setup with that VENV and PYTHON (nothing else of the caller's environment chooses)."""
    env = {key: value for key, value in os.environ.items() if key not in {"VENV", "PYTHON"}}
    return subprocess.run(  # noqa: S603 - our own script, our own interpreter
        [shutil.which("bash") or "bash", str(ROOT / "scripts" / "setup")],
        env={**env, "VENV": str(venv), "PYTHON": python},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _fake_venv(venv: Path, python: str) -> None:
    """A directory that looks like a virtual environment whose bin/python is `python` (a script or a link)."""
    (venv / "bin").mkdir(parents=True)
    (venv / "pyvenv.cfg").write_text("version = fake\n", encoding="utf-8")
    (venv / "bin" / "python").symlink_to(python)


def test_setup_never_deletes_another_pythons_environment(tmp_path: Path) -> None:
    """An environment made with another Python is left alone, with a message saying what to do."""
    other = "3.13.0" if sys.version_info[1] == 14 else "3.14.10"
    fake_python = tmp_path / "python-other"
    fake_python.write_text(f"#!/bin/sh\necho {other}\n", encoding="utf-8")
    fake_python.chmod(0o755)
    venv = tmp_path / "env"
    _fake_venv(venv, str(fake_python))
    (venv / "precious").write_text("kept", encoding="utf-8")
    done = _setup(venv, sys.executable)
    assert done.returncode == 1
    assert done.stdout == ""
    assert f"{venv} was made with Python {other}" in done.stderr
    assert "left alone" in done.stderr
    assert f"rm -rf {venv}" in done.stderr
    assert (venv / "precious").read_text(encoding="utf-8") == "kept"


def test_setup_up_to_date_names_environment(tmp_path: Path) -> None:
    """An installed environment of this Python: one stderr line naming it and its Python, its directory on stdout."""
    flavour = "latest" if sys.version_info[1] == 14 else "minimum"
    venv = tmp_path / "env"
    _fake_venv(venv, sys.executable)
    shutil.copy(ROOT / f"requirements-{flavour}.txt", venv / f".installed-{flavour}")
    done = _setup(venv, sys.executable)
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"{venv}\n"
    assert done.stderr.count("\n") == 1
    assert done.stderr.startswith(f"scripts/setup: {venv} ({flavour} pins")
    assert f"Python {sys.version.split()[0]}" in done.stderr
    assert done.stderr.rstrip().endswith("up to date")


def test_setup_refuses_what_it_cannot_run(tmp_path: Path) -> None:
    """A PYTHON that is no program, or not 3.13/3.14, is refused by name; nothing is created."""
    venv = tmp_path / "env"
    done = _setup(venv, str(tmp_path / "no-such-python"))
    assert done.returncode == 1
    assert "no such program" in done.stderr
    old = tmp_path / "python-old"
    # Answers the version question only; any other check (is it 3.13 or 3.14?) fails, as a real 3.12 would.
    old.write_text('#!/bin/sh\ncase "$2" in *platform*) echo 3.12.1 ;; *) exit 1 ;; esac\n', encoding="utf-8")
    old.chmod(0o755)
    done = _setup(venv, str(old))
    assert done.returncode == 1
    assert "is Python 3.12.1; need 3.13" in done.stderr
    assert not venv.exists()
