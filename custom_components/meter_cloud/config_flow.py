"""Config flow: pick the vendor backend, enter its account, validate with a real call."""

from __future__ import annotations

import itertools
import logging
import secrets
from collections.abc import Awaitable, Callable, Collection, Mapping
from typing import Any, override

import voluptuous as vol
from homeassistant.config_entries import ConfigFlow, ConfigFlowResult
from homeassistant.core import callback
from homeassistant.helpers.selector import (
    NumberSelector,
    NumberSelectorConfig,
    NumberSelectorMode,
    SelectOptionDict,
    SelectSelector,
    SelectSelectorConfig,
    SelectSelectorMode,
    TextSelector,
    TextSelectorConfig,
    TextSelectorType,
)

from .api import (
    BACKENDS,
    AuthenticationError,
    Capability,
    CloudConnectionError,
    ConfigField,
    ConfigurationError,
    InvalidRequestError,
    MeterClient,
    MeterCloudError,
    ResponseError,
)
from .const import (
    CONF_BACKEND,
    CONF_DETAILS_INTERVAL,
    CONF_PUSH_ID,
    CONF_SCAN_INTERVAL,
    DEFAULT_DETAILS_INTERVAL,
    DEFAULT_SCAN_INTERVAL,
    DOMAIN,
    MIN_SCAN_INTERVAL,
)
from .coordinator import MeterCloudConfigEntry, async_build_client
from .health import push_url
from .money_entities import THRESHOLD_KEYS, money_client, threshold_fields, threshold_option
from .value_options import ValueOptionsFlow

_LOGGER = logging.getLogger(__name__)

SELECTORS = {
    "text": TextSelector(),
    "url": TextSelector(TextSelectorConfig(type=TextSelectorType.URL)),
    "password": TextSelector(TextSelectorConfig(type=TextSelectorType.PASSWORD)),
    "multiline": TextSelector(TextSelectorConfig(multiline=True)),
}
# Home Assistant translates a form by its step id alone: these steps show each backend's own texts under
# "<step>_<backend>" (see the aliases below the flow class).
BACKEND_STEPS = ("account", "reconfigure", "reauth_confirm")


def backend_step_id(step: str, backend: str) -> str:
    """The id under which `backend`'s form of `step` is shown and translated."""
    return f"{step}_{backend}"


def auth_error(backend: str, err: AuthenticationError) -> str:
    """A refused login in the backend's own words: config.error is looked up per flow, so one key per backend."""
    return f"{err.reason}_{backend}" if err.reason == AuthenticationError.reason else err.reason


def _selector(field: ConfigField) -> Any:
    if field.kind in ("select", "multiselect"):
        multiple = field.kind == "multiselect"
        return SelectSelector(
            SelectSelectorConfig(
                options=list(field.options),
                translation_key=field.key,
                multiple=multiple,
                mode=SelectSelectorMode.LIST if multiple else SelectSelectorMode.DROPDOWN,
            )
        )
    if field.kind == "number":
        return vol.All(
            NumberSelector(
                NumberSelectorConfig(min=0, max=field.maximum or 10_000, step=1, mode=NumberSelectorMode.BOX)
            ),
            vol.Coerce(int),
        )
    return SELECTORS[field.kind]


def _schema(fields: tuple[ConfigField, ...], defaults: Mapping[str, Any]) -> vol.Schema:
    schema: dict[vol.Marker, Any] = {}
    for field in fields:
        default = defaults.get(field.key, field.default)
        if not field.required:
            # An optional field is suggested, not defaulted: clearing it must clear it.
            schema[vol.Optional(field.key, description={"suggested_value": default})] = _selector(field)
            continue
        key = vol.Required(field.key) if default is None else vol.Required(field.key, default=default)
        schema[key] = _selector(field)
    return vol.Schema(schema)


def _entry_data(backend: str, base: Mapping[str, Any], user_input: Mapping[str, Any]) -> dict[str, Any]:
    """The account fields exactly as entered, over the entry's other data (backend, push id)."""
    keys = {field.key for field in _client_cls(backend).config_fields}
    return {**{k: v for k, v in base.items() if k not in keys}, **user_input}


def _client_cls(backend: str) -> type[MeterClient]:
    return BACKENDS[backend].client


def _refused(backend: str, err: Exception | None) -> set[str]:
    """The credentials the cloud refused: those the error names, or every one when it names none."""
    credentials = {f.key for f in _client_cls(backend).config_fields if f.credential and not f.identity}
    named = credentials.intersection(err.fields) if isinstance(err, AuthenticationError) else set()
    return named or credentials


def _form_errors(err: Exception | None, form: Collection[str], backend: str) -> tuple[dict[str, str], dict[str, str]]:
    """The form's (errors, placeholders) for a validation error; a setting it names gets the error beside it."""
    if err is None:
        return {}, {}
    if isinstance(err, AuthenticationError):
        return {"base": auth_error(backend, err)}, {"error": str(err)}
    if isinstance(err, CloudConnectionError):
        return {"base": "cannot_connect"}, {}
    if isinstance(err, ConfigurationError):
        beside = dict.fromkeys((key for key in err.fields if key in form), err.reason)
        return beside or {"base": err.reason}, {"error": str(err)}
    if isinstance(err, InvalidRequestError):
        return {"base": "invalid_config"}, {"error": str(err)}
    if isinstance(err, (ResponseError, MeterCloudError)):
        return {"base": "api_error"}, {"error": str(err)}
    return {"base": "unknown"}, {}


class MeterCloudConfigFlow(ConfigFlow, domain=DOMAIN):
    """Set up a vendor account."""

    VERSION = 1
    MINOR_VERSION = 1

    def __init__(self) -> None:
        """Start with no backend chosen."""
        self._backend: str | None = None
        self._data: dict[str, Any] | None = None
        self._discovered: list[Any] = []
        self._reauth_keys: set[str] = set()
        self._refusal = ""

    @staticmethod
    @callback
    @override
    def async_get_options_flow(config_entry: MeterCloudConfigEntry) -> MeterCloudOptionsFlow:
        """Polling options and the push URL."""
        return MeterCloudOptionsFlow()

    async def _check(
        self,
        data: Mapping[str, Any],
        then: Callable[[MeterClient], Awaitable[None]] | None = None,
        *,
        credentials_only: bool = False,
    ) -> Exception | None:
        """One real call with these settings (and `then`, on the same session); the error it raised, if any."""
        try:
            client = await async_build_client(self.hass, data)
            try:
                await client.async_validate(credentials_only=credentials_only)
                if then is not None:
                    await then(client)
            finally:
                await client.async_close()
        except MeterCloudError as err:
            return err
        except Exception as err:
            _LOGGER.exception("Unexpected error validating the account")
            return err
        return None

    async def _validate(
        self,
        data: dict[str, Any],
        then: Callable[[MeterClient], Awaitable[None]] | None = None,
        *,
        form: Collection[str] = (),
    ) -> tuple[dict[str, str], dict[str, str]]:
        """Check the settings; return (errors, placeholders) for the form with the fields `form`."""
        return _form_errors(await self._check(data, then), form, data[CONF_BACKEND])

    @override
    async def async_step_user(self, user_input: dict[str, Any] | None = None) -> ConfigFlowResult:
        """Pick the vendor backend."""
        errors: dict[str, str] = {}
        if user_input is not None:
            backend = user_input[CONF_BACKEND]
            self._backend = backend
            return await self.async_step_account()
        return self.async_show_form(
            step_id="user",
            data_schema=vol.Schema(
                {
                    vol.Required(CONF_BACKEND): SelectSelector(
                        SelectSelectorConfig(
                            options=list(BACKENDS), translation_key="backend", mode=SelectSelectorMode.LIST
                        )
                    )
                }
            ),
            errors=errors,
        )

    async def async_step_account(self, user_input: dict[str, Any] | None = None) -> ConfigFlowResult:
        """Enter the account of the chosen backend."""
        assert self._backend is not None
        client_cls = _client_cls(self._backend)
        errors: dict[str, str] = {}
        placeholders: dict[str, str] = {**client_cls.form_placeholders, "error": ""}
        if user_input is not None:
            data = {CONF_BACKEND: self._backend, **user_input}
            await self.async_set_unique_id(client_cls.unique_id(data))
            self._abort_if_unique_id_configured()
            list_key = client_cls.meter_list_key
            discover = list_key is not None and not str(data.get(list_key) or "").strip()
            self._discovered = []
            form = [field.key for field in client_cls.config_fields]
            errors, found = await self._validate(data, self._discover if discover else None, form=form)
            placeholders.update(found)
            if not errors and discover:
                if not self._discovered:
                    errors = {"base": "no_meters_found"}
                else:
                    self._data = data
                    return await self.async_step_meters()
            if not errors:
                return self._create(data)
        return self.async_show_form(
            step_id=backend_step_id("account", self._backend),
            data_schema=_schema(client_cls.config_fields, user_input or {}),
            errors=errors,
            description_placeholders=placeholders,
        )

    async def _discover(self, client: MeterClient) -> None:
        """The account's meters, when the backend can list them before any is followed."""
        if client.supports(Capability.DISCOVER):
            self._discovered = await client.async_discover()

    def _create(self, data: dict[str, Any]) -> ConfigFlowResult:
        assert self._backend is not None
        client_cls = _client_cls(self._backend)
        # Every entry gets a push id (a backend may learn to push later); only pushing backends show it.
        data[CONF_PUSH_ID] = secrets.token_urlsafe(24)
        if not client_cls.push_paths:
            return self.async_create_entry(title=client_cls.title(data), data=data)
        return self.async_create_entry(
            title=client_cls.title(data),
            data=data,
            description="push",
            description_placeholders={"push_url": push_url(self.hass, data[CONF_PUSH_ID])},
        )

    async def async_step_meters(self, user_input: dict[str, Any] | None = None) -> ConfigFlowResult:
        """Pick which of the meters the account listed to follow."""
        assert self._backend is not None
        assert self._data is not None
        client_cls = _client_cls(self._backend)
        list_key = client_cls.meter_list_key
        assert list_key is not None
        by_id = {meter.meter_id: meter for meter in self._discovered}
        errors: dict[str, str] = {}
        if user_input is not None:
            chosen = [by_id[meter_id] for meter_id in user_input[list_key] if meter_id in by_id]
            if chosen:
                return self._create({**self._data, list_key: client_cls.format_meter_list(chosen)})
            errors[list_key] = "no_meters_chosen"
        options = [SelectOptionDict(value=meter_id, label=str(meter)) for meter_id, meter in by_id.items()]
        return self.async_show_form(
            step_id="meters",
            data_schema=vol.Schema(
                {
                    vol.Required(list_key, default=list(by_id)): SelectSelector(
                        SelectSelectorConfig(options=options, multiple=True, mode=SelectSelectorMode.LIST)
                    )
                }
            ),
            errors=errors,
            description_placeholders={"count": str(len(by_id))},
        )

    async def async_step_reauth(self, entry_data: Mapping[str, Any]) -> ConfigFlowResult:
        """The cloud refused the stored credentials: one call finds out which, so only those are asked for."""
        err = await self._check(entry_data, credentials_only=True)
        self._reauth_keys = _refused(entry_data[CONF_BACKEND], err)
        self._refusal = str(err) if isinstance(err, AuthenticationError) else ""
        return await self.async_step_reauth_confirm()

    async def async_step_reauth_confirm(self, user_input: dict[str, Any] | None = None) -> ConfigFlowResult:
        """Ask for new credentials only."""
        entry = self._get_reauth_entry()
        backend = entry.data[CONF_BACKEND]
        client_cls = _client_cls(backend)
        errors: dict[str, str] = {}
        placeholders = {**client_cls.form_placeholders, "error": self._refusal, "title": entry.title}
        if user_input is not None:
            data = {**entry.data, **user_input}
            err = await self._check(data, credentials_only=True)
            if err is None:
                return self.async_update_reload_and_abort(entry, data=data)
            if isinstance(err, AuthenticationError):
                self._reauth_keys |= _refused(backend, err)
            errors, found = _form_errors(err, self._reauth_keys, backend)
            placeholders.update(found)
        fields = tuple(f for f in client_cls.config_fields if f.key in self._reauth_keys)
        return self.async_show_form(
            step_id=backend_step_id("reauth_confirm", backend),
            data_schema=_schema(fields, {}),
            errors=errors,
            description_placeholders=placeholders,
        )

    async def async_step_reconfigure(self, user_input: dict[str, Any] | None = None) -> ConfigFlowResult:
        """Change any setting of the account; it must stay the same account."""
        entry = self._get_reconfigure_entry()
        backend = entry.data[CONF_BACKEND]
        client_cls = _client_cls(backend)
        errors: dict[str, str] = {}
        placeholders = {**client_cls.form_placeholders, "error": ""}
        if user_input is not None:
            data = _entry_data(backend, entry.data, user_input)
            await self.async_set_unique_id(client_cls.unique_id(data))
            self._abort_if_unique_id_mismatch()
            errors, found = await self._validate(data, form=[field.key for field in client_cls.config_fields])
            placeholders.update(found)
            if not errors:
                return self.async_update_reload_and_abort(entry, data=data)
        return self.async_show_form(
            step_id=backend_step_id("reconfigure", backend),
            data_schema=_schema(client_cls.config_fields, user_input or entry.data),
            errors=errors,
            description_placeholders=placeholders,
        )


# Home Assistant answers a form of step id X with async_step_X: every backend's step id is the generic step.
for _step, _backend in itertools.product(BACKEND_STEPS, BACKENDS):
    setattr(
        MeterCloudConfigFlow,
        f"async_step_{backend_step_id(_step, _backend)}",
        getattr(MeterCloudConfigFlow, f"async_step_{_step}"),
    )


class MeterCloudOptionsFlow(ValueOptionsFlow):
    """Polling intervals (a saved change reloads the entry once); shows the push URL to backends that push."""

    async def async_step_init(self, user_input: dict[str, Any] | None = None) -> ConfigFlowResult:
        """One form: `init` with the push URL, `polling` for a backend that never pushes."""
        client_cls = _client_cls(self.config_entry.data[CONF_BACKEND])
        if client_cls.value_options:
            return await self.async_step_settings()
        if not client_cls.push_paths:
            return await self.async_step_polling(user_input)
        return self._form("init", client_cls, user_input)

    async def async_step_polling(self, user_input: dict[str, Any] | None = None) -> ConfigFlowResult:
        """The same form without a push URL."""
        return self._form("polling", _client_cls(self.config_entry.data[CONF_BACKEND]), user_input)

    def _form(self, step_id: str, client_cls: type[MeterClient], user_input: dict[str, Any] | None) -> ConfigFlowResult:
        money = money_client(self.config_entry)
        if user_input is not None:
            # A threshold left empty is absent from the input: it is removed, not kept.
            kept = {k: v for k, v in self.config_entry.options.items() if k not in THRESHOLD_KEYS}
            given = {k: threshold_option(k, v, money) if k in THRESHOLD_KEYS else int(v) for k, v in user_input.items()}
            return self.async_create_entry(data={**kept, **given})
        options = self.config_entry.options
        minutes = NumberSelector(
            NumberSelectorConfig(min=MIN_SCAN_INTERVAL, max=1440, step=1, mode=NumberSelectorMode.BOX)
        )
        fields: dict[vol.Marker, Any] = {
            vol.Required(CONF_SCAN_INTERVAL, default=options.get(CONF_SCAN_INTERVAL, DEFAULT_SCAN_INTERVAL)): minutes
        }
        # Per-meter details exist only where the backend has a details call (the interval means nothing elsewhere).
        if Capability.DETAILS in client_cls.capabilities:
            fields[
                vol.Required(
                    CONF_DETAILS_INTERVAL, default=options.get(CONF_DETAILS_INTERVAL, DEFAULT_DETAILS_INTERVAL)
                )
            ] = minutes
        if money is not None:
            fields |= threshold_fields(options, money)
        placeholders = {}
        if step_id == "init":
            placeholders["push_url"] = push_url(self.hass, self.config_entry.data[CONF_PUSH_ID])
        return self.async_show_form(
            step_id=step_id, data_schema=vol.Schema(fields), description_placeholders=placeholders
        )
