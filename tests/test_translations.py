"""hassfest's translation rules, replicated for en, ru and zh-Hans, and every text the config flow shows.

hassfest (Home Assistant core's script/hassfest/translations.py, not in the PyPI package) validates each string
(no URL, no HTML, no placeholder in single quotes, placeholders are identifiers, no leading or trailing spaces, no
combined references), the keys (translation keys and slugs) and the shape of each section. test_packaging.py
checks that the languages have the same keys and placeholders; this file does not repeat that.
"""

from __future__ import annotations

import ast
import re
import string
from collections.abc import Iterator
from typing import Any

import pytest
from homeassistant.helpers import config_validation as cv

from custom_components.meter_cloud.api import BACKENDS, Capability
from custom_components.meter_cloud.config_flow import (
    BACKEND_STEPS,
    MeterCloudConfigFlow,
    MeterCloudOptionsFlow,
    backend_step_id,
)
from tests.test_packaging import COMPONENT, LANGUAGES, leaves, load

# hassfest's patterns, as of Home Assistant 2025.10.
RE_URL = re.compile(
    r"(((ftp|ftps|scp|http|https|mqtt|mqtts|socket|socks5):\/\/|www\.)"
    r"[a-z0-9]+([\-\.]{1}[a-z0-9]+)*\.[a-z]{2,5}(:[0-9]{1,5})?(\/.*)?)",
    re.IGNORECASE,
)
RE_HTML = re.compile(r"<[a-z].*?>", re.IGNORECASE)
RE_PLACEHOLDER_IN_SINGLE_QUOTES = re.compile(r"'{\w+}'")
RE_COMBINED_REFERENCE = re.compile(r"(.+\[%)|(%\].+)")
RE_TRANSLATION_KEY = re.compile(r"^(?!.+[_-]{2})(?![_-])[a-z0-9-_]+(?<![_-])$")
# Stricter than hassfest, whose pattern misses an address by IP (http://120.55.14.102:80): any scheme or www.
RE_ANY_URL = re.compile(r"\w://|www\.", re.IGNORECASE)
# A link renders up to the next space: in Chinese text it would swallow the full-width punctuation after it.
RE_BARE_URL_PLACEHOLDER = re.compile(r"(?<!`){(\w*url\w*)}(?![`\s]|$)")

TRANSLATIONS = {language: load(COMPONENT / "translations" / f"{language}.json") for language in LANGUAGES}
FLOW_SECTION = {"flow_title", "step", "error", "abort", "progress", "create_entry", "initiate_flow"}
STEP_KEYS = {"title", "description", "data", "data_description", "menu_options", "menu_option_descriptions"}
STEP_KEYS |= {"submit", "sections"}
# Where hassfest refuses a placeholder: entity states, state attribute names and states, units.
NO_PLACEHOLDERS = re.compile(r"^entity\.\w+\.\w+\.(state\.|state_attributes\.|unit_of_measurement$)")


def strings() -> Iterator[tuple[str, str, str]]:
    """(language, dotted key, text) of every string."""
    for language, tree in TRANSLATIONS.items():
        for key, text in leaves(tree).items():
            yield language, key, text


def placeholders(text: str) -> set[str]:
    """The placeholders a string uses (string.Formatter, as hassfest parses them)."""
    return {field for _, field, _, _ in string.Formatter().parse(text) if field}


def flow_steps(section: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every step of a flow section, including repair flows'."""
    yield from section.get("step", {}).values()


@pytest.mark.parametrize("language", LANGUAGES)
def test_no_url_in_any_string(language: str) -> None:
    """hassfest: "the string should not contain URLs, please use description placeholders instead"."""
    for key, text in leaves(TRANSLATIONS[language]).items():
        assert not RE_URL.search(text), (language, key)
        assert not RE_ANY_URL.search(text), (language, key)


def test_string_rules() -> None:
    """No HTML, no '{placeholder}', identifiers only, no leading or trailing spaces, no references (custom
    integrations' translations are used as they are: a [%key:...%] would show literally)."""
    for language, key, text in strings():
        where = (language, key)
        assert isinstance(text, str), where
        assert not RE_HTML.search(text), where
        assert not RE_PLACEHOLDER_IN_SINGLE_QUOTES.search(text), where
        assert all(name.isidentifier() for name in placeholders(text)), where
        assert text == text.strip(), where
        assert "[%key:" not in text, where
        assert not RE_COMBINED_REFERENCE.search(text), where
        if NO_PLACEHOLDERS.match(key):
            assert not placeholders(text), where


def test_url_placeholders_stand_apart() -> None:
    """An address given by placeholder sits in a code span or before a space, never against the next word."""
    for language, key, text in strings():
        assert not RE_BARE_URL_PLACEHOLDER.search(text), (language, key)


@pytest.mark.parametrize("language", LANGUAGES)
def test_keys(language: str) -> None:
    """Translation keys where hassfest wants them ([a-z0-9-_], no edge or double separators), slugs elsewhere."""
    tree = TRANSLATIONS[language]
    for name, selector in tree["selector"].items():
        assert cv.slug(name) == name
        for key in selector.get("options", {}):
            assert RE_TRANSLATION_KEY.match(key), (name, key)
    for platform, entities in tree["entity"].items():
        assert cv.slug(platform) == platform
        for key, entity in entities.items():
            assert RE_TRANSLATION_KEY.match(key), (platform, key)
            assert set(entity) <= {"name", "state", "state_attributes", "unit_of_measurement"}, (platform, key)
            for state in entity.get("state", {}):
                assert RE_TRANSLATION_KEY.match(state), (platform, key, state)
            for attribute, spec in entity.get("state_attributes", {}).items():
                assert RE_TRANSLATION_KEY.match(attribute), (platform, key, attribute)
                assert all(RE_TRANSLATION_KEY.match(state) for state in spec.get("state", {})), attribute
    for key, exception in tree["exceptions"].items():
        assert cv.slug(key) == key
        assert set(exception) <= {"message"}, key
    for name, service in tree["services"].items():
        assert RE_TRANSLATION_KEY.match(name), name
        assert {"name", "description"} <= set(service) <= {"name", "description", "fields", "sections"}, name
        for field, spec in service.get("fields", {}).items():
            assert RE_TRANSLATION_KEY.match(field), (name, field)
            assert {"name", "description"} <= set(spec) <= {"name", "description", "example"}, (name, field)


@pytest.mark.parametrize("language", LANGUAGES)
def test_flow_sections_shape(language: str) -> None:
    """config and options: only the keys hassfest knows; a data_description only for a field in data."""
    tree = TRANSLATIONS[language]
    assert set(tree) <= {
        "title", "config", "config_subentries", "options", "selector", "device_automation", "system_health",
        "config_panel", "application_credentials", "issues", "entity_component", "device", "entity",
        "exceptions", "services", "conditions", "triggers", "conversation", "common", "preview_features",
    }  # fmt: skip
    for name in ("config", "options"):
        assert set(tree[name]) <= FLOW_SECTION, name
        for step in flow_steps(tree[name]):
            assert set(step) <= STEP_KEYS, (name, step)
            assert set(step.get("data_description", {})) <= set(step.get("data", {})), (name, step)


ISSUES = sorted(TRANSLATIONS["en"]["issues"])
# hassfest allows a fixable issue only its fix_flow's texts (a "description" beside it is refused, and the
# repair dialog never shows it).


@pytest.mark.parametrize("issue", ISSUES)
def test_issue_shape(issue: str) -> None:
    """An issue has a title and either a description or a fix_flow (a flow section), in every language."""
    for language in LANGUAGES:
        spec = TRANSLATIONS[language]["issues"][issue]
        assert "title" in spec, language
        assert set(spec) <= {"title", "description", "fix_flow"}, language
        assert ("description" in spec) != ("fix_flow" in spec), language
        if "fix_flow" in spec:
            assert set(spec["fix_flow"]) <= FLOW_SECTION, language
            for step in flow_steps(spec["fix_flow"]):
                assert set(step) <= STEP_KEYS, language


# --- what the config flow shows ---------------------------------------------------------------------------


def _api_reasons(*error_classes: str) -> set[str]:
    """Reasons the api layer gives these error classes: raise X(..., reason="r") and (X, "r") table rows."""
    found: set[str] = set()
    for path in (COMPONENT / "api").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in error_classes:
                found |= {
                    kw.value.value
                    for kw in node.keywords
                    if kw.arg == "reason" and isinstance(kw.value, ast.Constant) and isinstance(kw.value.value, str)
                }
            elif isinstance(node, ast.Tuple) and len(node.elts) == 2:
                cls, reason = node.elts
                if isinstance(cls, ast.Name) and cls.id in error_classes and isinstance(reason, ast.Constant):
                    found.add(str(reason.value))
    return found


def config_errors() -> set[str]:
    """Every config.error key the flow can show (config_flow._form_errors and the steps)."""
    shown = {"cannot_connect", "invalid_config", "api_error", "unknown", "no_meters_found", "no_meters_chosen"}
    shown |= _api_reasons("ConfigurationError")
    shown |= _api_reasons("AuthenticationError") - {"invalid_auth"}
    shown |= {f"invalid_auth_{backend}" for backend in BACKENDS}
    return shown


def test_api_reasons_are_found() -> None:
    """The source scan sees the reasons it must (so the checks below cannot pass on an empty set)."""
    assert {"invalid_factor_code", "invalid_meter_list", "unknown_nodes", "control_incomplete"} <= _api_reasons(
        "ConfigurationError"
    )
    assert "invalid_control_auth" in _api_reasons("AuthenticationError")


@pytest.mark.parametrize("language", LANGUAGES)
def test_config_errors_exactly_those_shown(language: str) -> None:
    """Every error the flow can show is translated, and no translated error is left that none shows; an error
    uses no placeholder but {error}, the one every form passes."""
    errors = TRANSLATIONS[language]["config"]["error"]
    assert set(errors) == config_errors()
    for key, text in errors.items():
        assert placeholders(text) <= {"error"}, key


@pytest.mark.parametrize("language", LANGUAGES)
def test_every_shown_step_translated(language: str) -> None:
    """Each backend's account, reconfigure and reauth forms have a title, a description and a label and help for
    exactly their own fields; every translated step is one the flows have."""
    steps = TRANSLATIONS[language]["config"]["step"]
    for backend, spec in BACKENDS.items():
        fields = {field.key for field in spec.client.config_fields}
        credentials = {f.key for f in spec.client.config_fields if f.credential and not f.identity}
        for step in BACKEND_STEPS:
            texts = steps[backend_step_id(step, backend)]
            asked = credentials if step == "reauth_confirm" else fields
            assert texts["title"], (backend, step)
            assert texts["description"], (backend, step)
            assert set(texts["data"]) == set(texts["data_description"]) == asked, (backend, step)
        for field in spec.client.config_fields:
            if field.kind in ("select", "multiselect"):
                assert set(field.options) <= set(TRANSLATIONS[language]["selector"][field.key]["options"]), field.key
        if Capability.DISCOVER in spec.client.capabilities:
            assert spec.client.meter_list_key in steps["meters"]["data_description"], backend
    assert set(TRANSLATIONS[language]["selector"]["backend"]["options"]) == set(BACKENDS)
    for step in steps:
        assert hasattr(MeterCloudConfigFlow, f"async_step_{step}"), step
    for step in TRANSLATIONS[language]["options"]["step"]:
        assert hasattr(MeterCloudOptionsFlow, f"async_step_{step}"), step
    abort = TRANSLATIONS[language]["config"]["abort"]
    assert {"already_configured", "reauth_successful", "reconfigure_successful", "unique_id_mismatch"} <= set(abort)
    assert {"default", "push"} <= set(TRANSLATIONS[language]["config"]["create_entry"])


def test_backend_steps_only_with_their_own_placeholders() -> None:
    """A backend's forms use only the placeholders its client declares (plus {error}, and {title} in reauth)."""
    for backend, spec in BACKENDS.items():
        given = {*spec.client.form_placeholders, "error", "title"}
        for language in LANGUAGES:
            for step in BACKEND_STEPS:
                texts = TRANSLATIONS[language]["config"]["step"][backend_step_id(step, backend)]
                for key, text in leaves(texts).items():
                    assert placeholders(text) <= given, (language, backend, step, key)
