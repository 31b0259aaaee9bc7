"""Config flow: backend picker, validation with a real call, reauth, reconfigure, options."""

from __future__ import annotations

import json
import re
from typing import Any
from unittest.mock import patch

import pytest
from homeassistant.config_entries import SOURCE_USER
from homeassistant.core import HomeAssistant
from homeassistant.data_entry_flow import FlowResultType
from pytest_homeassistant_custom_component.common import MockConfigEntry

from custom_components.meter_cloud.api import BACKENDS
from custom_components.meter_cloud.const import CONF_PUSH_ID, CONF_SCAN_INTERVAL, DOMAIN
from simulator.goldcard import GoldcardSimulator
from tests.conftest import cangnan_data, iot_data, kumir_data
from tests.test_packaging import COMPONENT

ACCOUNT_KEYS = ("base_url", "app_code", "app_secret", "company_code", "factor_no")


def account(entry_data: dict[str, Any], **changes: str) -> dict[str, Any]:
    """The account form's input."""
    return {key: changes.get(key, entry_data[key]) for key in ACCOUNT_KEYS}


async def start(hass: HomeAssistant) -> str:
    """Start the flow and pick Goldcard; return the flow id at the account step."""
    result = await hass.config_entries.flow.async_init(DOMAIN, context={"source": SOURCE_USER})
    assert result["type"] is FlowResultType.FORM
    assert result["step_id"] == "user"
    result = await hass.config_entries.flow.async_configure(result["flow_id"], {"backend": "goldcard"})
    assert result["type"] is FlowResultType.FORM
    assert result["step_id"] == "account_goldcard"
    return result["flow_id"]


async def test_create_entry(hass: HomeAssistant, entry_data: dict[str, Any], sim: GoldcardSimulator) -> None:
    """Valid settings create an entry after a real 1013 call, with a secret push id."""
    flow_id = await start(hass)
    with patch("custom_components.meter_cloud.async_setup_entry", return_value=True):
        result = await hass.config_entries.flow.async_configure(flow_id, account(entry_data))
    assert result["type"] is FlowResultType.CREATE_ENTRY
    assert result["title"] == f"Goldcard {sim.company_code}"
    data = result["data"]
    assert {k: data[k] for k in ACCOUNT_KEYS} == account(entry_data)
    assert data["backend"] == "goldcard"
    assert len(data[CONF_PUSH_ID]) >= 32
    assert result["description"] == "push"
    assert f"/api/meter_cloud/push/{data[CONF_PUSH_ID]}/" in result["description_placeholders"]["push_url"]
    assert result["result"].unique_id == f"goldcard_{sim.company_code}_{sim.app_code}".lower()
    assert [number for number, _ in sim.requests] == ["1013"]


async def test_backend_picker_lists_every_vendor(hass: HomeAssistant) -> None:
    """The picker lists every vendor system, each one set up-able."""
    result = await hass.config_entries.flow.async_init(DOMAIN, context={"source": SOURCE_USER})
    options = result["data_schema"].schema["backend"].config["options"]
    assert options == ["goldcard", "cangnan", "iotmeter", "kumir"]
    result = await hass.config_entries.flow.async_configure(result["flow_id"], {"backend": "kumir"})
    assert result["type"] is FlowResultType.FORM
    assert result["step_id"] == "account_kumir"


@pytest.mark.parametrize(
    ("change", "fault", "error"),
    [
        ({"app_secret": "wrong"}, None, "invalid_auth_goldcard"),
        ({"factor_no": "9999"}, None, "invalid_factor_code"),
        ({}, ("auth", "0103"), "invalid_auth_goldcard"),
        ({}, ("error", "0105"), "invalid_auth_goldcard"),
        ({}, ("http500", None), "cannot_connect"),
        ({}, ("error", "9995"), "cannot_connect"),
        ({}, ("malformed", None), "api_error"),
        ({}, ("error", "9999"), "api_error"),
    ],
)
async def test_errors_then_recover(
    hass: HomeAssistant,
    entry_data: dict[str, Any],
    sim: GoldcardSimulator,
    change: dict[str, str],
    fault: tuple[str, str | None] | None,
    error: str,
) -> None:
    """Each failure shows its error; fixing it creates the entry."""
    flow_id = await start(hass)
    if fault:
        sim.fail_next(fault[0], code=fault[1])
    result = await hass.config_entries.flow.async_configure(flow_id, account(entry_data, **change))
    assert result["type"] is FlowResultType.FORM
    assert result["errors"] == {"base": error}
    with patch("custom_components.meter_cloud.async_setup_entry", return_value=True):
        result = await hass.config_entries.flow.async_configure(flow_id, account(entry_data))
    assert result["type"] is FlowResultType.CREATE_ENTRY


async def test_unreachable(hass: HomeAssistant, entry_data: dict[str, Any], unused_tcp_port: int) -> None:
    """Nothing listening → cannot connect."""
    flow_id = await start(hass)
    result = await hass.config_entries.flow.async_configure(
        flow_id, account(entry_data, base_url=f"http://127.0.0.1:{unused_tcp_port}")
    )
    assert result["errors"] == {"base": "cannot_connect"}


async def test_unexpected_error(hass: HomeAssistant, entry_data: dict[str, Any]) -> None:
    """A bug in validation shows 'unknown' and logs, without a crash."""
    flow_id = await start(hass)
    with patch(
        "custom_components.meter_cloud.api.goldcard.GoldcardClient.async_validate", side_effect=RuntimeError("boom")
    ):
        result = await hass.config_entries.flow.async_configure(flow_id, account(entry_data))
    assert result["errors"] == {"base": "unknown"}


async def test_already_configured(
    hass: HomeAssistant, config_entry: MockConfigEntry, entry_data: dict[str, Any]
) -> None:
    """The same account twice aborts."""
    flow_id = await start(hass)
    result = await hass.config_entries.flow.async_configure(flow_id, account(entry_data))
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "already_configured"


async def test_reauth(hass: HomeAssistant, setup_entry: MockConfigEntry, sim: GoldcardSimulator) -> None:
    """Reauth asks for the secret only, rejects a wrong one, stores a right one."""
    result = await setup_entry.start_reauth_flow(hass)
    assert result["step_id"] == "reauth_confirm_goldcard"
    assert list(result["data_schema"].schema) == ["app_secret"]
    result = await hass.config_entries.flow.async_configure(result["flow_id"], {"app_secret": "nope"})
    assert result["errors"] == {"base": "invalid_auth_goldcard"}
    sim.app_secret = "rotated-secret"
    result = await hass.config_entries.flow.async_configure(result["flow_id"], {"app_secret": "rotated-secret"})
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "reauth_successful"
    assert setup_entry.data["app_secret"] == "rotated-secret"


async def test_reconfigure(
    hass: HomeAssistant, setup_entry: MockConfigEntry, entry_data: dict[str, Any], sim_server: Any
) -> None:
    """Reconfigure validates, keeps the account, refuses another account."""
    result = await setup_entry.start_reconfigure_flow(hass)
    assert result["step_id"] == "reconfigure_goldcard"
    result = await hass.config_entries.flow.async_configure(
        result["flow_id"], account(entry_data, company_code="other")
    )
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "unique_id_mismatch"

    result = await setup_entry.start_reconfigure_flow(hass)
    result = await hass.config_entries.flow.async_configure(result["flow_id"], account(entry_data, factor_no="0000"))
    assert result["errors"] == {"base": "invalid_factor_code"}
    new_url = str(sim_server.make_url("/"))  # same server, other spelling (trailing slash)
    result = await hass.config_entries.flow.async_configure(result["flow_id"], account(entry_data, base_url=new_url))
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "reconfigure_successful"
    assert setup_entry.data["base_url"] == new_url


async def test_options(hass: HomeAssistant, setup_entry: MockConfigEntry) -> None:
    """Options set the intervals and show the push URL; the entry reloads with them."""
    result = await hass.config_entries.options.async_init(setup_entry.entry_id)
    assert result["type"] is FlowResultType.FORM
    assert result["step_id"] == "init"
    assert list(result["data_schema"].schema) == [
        CONF_SCAN_INTERVAL,
        "details_interval",
        "low_balance_amount",
        "low_balance_days",
    ]
    assert "/api/meter_cloud/push/" in result["description_placeholders"]["push_url"]
    result = await hass.config_entries.options.async_configure(
        result["flow_id"], {CONF_SCAN_INTERVAL: 30, "details_interval": 120}
    )
    assert result["type"] is FlowResultType.CREATE_ENTRY
    await hass.async_block_till_done()
    assert setup_entry.options == {CONF_SCAN_INTERVAL: 30, "details_interval": 120}
    assert setup_entry.runtime_data.update_interval.total_seconds() == 30 * 60


async def test_other_configuration_error(hass: HomeAssistant, entry_data: dict[str, Any]) -> None:
    """A configuration refusal without a dedicated key still shows a translated error with the cloud's text."""
    from custom_components.meter_cloud.api import ConfigurationError

    flow_id = await start(hass)
    with patch(
        "custom_components.meter_cloud.api.goldcard.GoldcardClient.async_validate",
        side_effect=ConfigurationError("company suspended"),
    ):
        result = await hass.config_entries.flow.async_configure(flow_id, account(entry_data))
    assert result["errors"] == {"base": "invalid_config"}
    assert result["description_placeholders"]["error"] == "company suspended"


# --- each backend's own texts ------------------------------------------------------------------------------

TRANSLATIONS = {
    language: json.loads((COMPONENT / "translations" / f"{language}.json").read_text(encoding="utf-8"))
    for language in ("en", "ru", "zh-Hans")
}
# The credential a refused login is tried with, and what the refusal must say (English).
REFUSALS = {
    "goldcard": ("app_secret", "refused the request signature"),
    "cangnan": ("app_secret", "refused the request signature"),
    "iotmeter": ("data_api_key", "company number or data API key"),
    "kumir": ("login_password", "refused the login or password"),
}


@pytest.fixture(params=list(BACKENDS))
def backend_data(request: pytest.FixtureRequest) -> dict[str, Any]:
    """Entry data of each backend's account on its simulator (the test runs once per backend)."""
    backend = request.param
    if backend == "goldcard":
        data: dict[str, Any] = request.getfixturevalue("entry_data")
        return data
    if backend == "cangnan":
        return cangnan_data(request.getfixturevalue("cn_sim"), request.getfixturevalue("cn_server"))
    if backend == "iotmeter":
        return iot_data(request.getfixturevalue("iot_sim"), request.getfixturevalue("iot_server"))
    return kumir_data(request.getfixturevalue("kumir_sim"), request.getfixturevalue("kumir_server"))


def form_input(result: Any, data: dict[str, Any], **changes: Any) -> dict[str, Any]:
    """The entry's values of the fields the form asks for, with `changes`."""
    return {key: changes.get(key, data[key]) for key in map(str, result["data_schema"].schema) if key in data}


def rendered(step: str, placeholders: dict[str, str]) -> dict[str, str]:
    """Every language's texts of `step` (title, description, labels, help) as the frontend fills them in."""
    texts = {}
    for language, tree in TRANSLATIONS.items():
        spec = tree["config"]["step"][step]
        parts = [spec["title"], spec["description"], *spec["data"].values(), *spec["data_description"].values()]
        texts[language] = "\n".join(part.format(**placeholders) for part in parts)
    return texts


def assert_speaks_for(backend: str, result: Any) -> None:
    """The form is `backend`'s own: every field described, its addresses filled in, none of another backend's."""
    texts = rendered(result["step_id"], result["description_placeholders"])
    fields = {str(key) for key in result["data_schema"].schema}
    for language, tree in TRANSLATIONS.items():
        spec = tree["config"]["step"][result["step_id"]]
        assert fields <= set(spec["data_description"]), language
        for value in BACKENDS[backend].client.form_placeholders.values():
            assert value in texts[language] or result["step_id"].startswith("reauth"), (language, value)
        for other, other_spec in BACKENDS.items():
            if other != backend:
                for value in other_spec.client.form_placeholders.values():
                    assert value not in texts[language], (language, other, value)


async def test_account_form_speaks_for_its_backend(hass: HomeAssistant, backend_data: dict[str, Any]) -> None:
    """Each backend's account form has its own step id, help for each of its fields and its own example addresses
    (given as placeholders); a refused login says what the backend refuses, under the backend's own error key."""
    data, backend = backend_data, backend_data["backend"]
    result = await hass.config_entries.flow.async_init(DOMAIN, context={"source": SOURCE_USER})
    result = await hass.config_entries.flow.async_configure(result["flow_id"], {"backend": backend})
    assert result["step_id"] == f"account_{backend}"
    assert result["description_placeholders"] == {**BACKENDS[backend].client.form_placeholders, "error": ""}
    assert_speaks_for(backend, result)

    credential, words = REFUSALS[backend]
    result = await hass.config_entries.flow.async_configure(
        result["flow_id"], form_input(result, data, **{credential: "refused-" + str(data[credential])})
    )
    assert result["step_id"] == f"account_{backend}"
    assert result["errors"] == {"base": f"invalid_auth_{backend}"}
    assert words in TRANSLATIONS["en"]["config"]["error"][f"invalid_auth_{backend}"]
    assert_speaks_for(backend, result)


def test_kumir_refusal_is_not_about_a_token() -> None:
    """The old shared text blamed a token check; KUMIR-RESURS has none, in no language."""
    for language, tree in TRANSLATIONS.items():
        text = tree["config"]["error"]["invalid_auth_kumir"]
        assert not {"token", "токен", "令牌"} & set(re.findall(r"\w+", text.lower())), language
        assert "KUMIR" in text or "КУМИР" in text, language


async def test_reconfigure_and_reauth_speak_for_their_backend(
    hass: HomeAssistant, backend_data: dict[str, Any]
) -> None:
    """Reconfigure and reauthentication show the backend's own forms; a refused credential its own wording."""
    data, backend = backend_data, backend_data["backend"]
    entry = MockConfigEntry(
        domain=DOMAIN, title=f"{backend} test", data=data, unique_id=BACKENDS[backend].client.unique_id(data)
    )
    entry.add_to_hass(hass)

    result = await entry.start_reconfigure_flow(hass)
    assert result["step_id"] == f"reconfigure_{backend}"
    assert_speaks_for(backend, result)
    credential, _ = REFUSALS[backend]
    result = await hass.config_entries.flow.async_configure(
        result["flow_id"], form_input(result, data, **{credential: "refused"})
    )
    assert result["step_id"] == f"reconfigure_{backend}"
    assert result["errors"] == {"base": f"invalid_auth_{backend}"}
    hass.config_entries.flow.async_abort(result["flow_id"])

    result = await entry.start_reauth_flow(hass)
    assert result["step_id"] == f"reauth_confirm_{backend}"
    assert result["description_placeholders"]["title"] == entry.title
    assert_speaks_for(backend, result)
    result = await hass.config_entries.flow.async_configure(result["flow_id"], {credential: "refused"})
    assert result["step_id"] == f"reauth_confirm_{backend}"
    assert result["errors"] == {"base": f"invalid_auth_{backend}"}
