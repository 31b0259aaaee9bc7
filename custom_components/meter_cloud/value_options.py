"""Options steps of backends whose named values the user can describe (KUMIR-RESURS): parameters, tariff layouts.

A menu leads to three forms: the polling options, a parameter (pick one of those the exports showed, then say
what it is: unit, device class, counter or gauge, on the Energy dashboard or not) and a device type's tariff
layout (detected, declared and checked, or declared whatever the data say). Changes collect until *Save*, which
stores them in the entry's options (api/values.py) and reloads the entry: the next poll applies them, a new
counter gets its statistic with a backfill, and a sensor that was created disabled for want of a meaning is
enabled.
"""

from __future__ import annotations

from typing import Any

import voluptuous as vol
from homeassistant.components.sensor.const import DEVICE_CLASS_STATE_CLASSES, DEVICE_CLASS_UNITS, SensorStateClass
from homeassistant.config_entries import ConfigEntryState, ConfigFlowResult
from homeassistant.helpers import entity_registry as er
from homeassistant.helpers.selector import (
    BooleanSelector,
    SelectOptionDict,
    SelectSelector,
    SelectSelectorConfig,
    SelectSelectorMode,
)
from homeassistant.helpers.translation import async_get_translations

from .api import MeterClient
from .api.values import (
    LAYOUT_MODES,
    Layout,
    LayoutRow,
    ValueMeaning,
    ValueParam,
    with_layout,
    with_meaning,
)
from .compat import ReloadingOptionsFlow
from .const import DOMAIN
from .coordinator import MeterCloudCoordinator

NONE = "none"
KINDS = ("cumulative", "instantaneous")
_SEP = "/"


def _units() -> list[str]:
    """Every unit Home Assistant's sensor device classes know."""
    found = {str(unit) for units in DEVICE_CLASS_UNITS.values() for unit in units if unit}
    return sorted(found, key=str.casefold)


def _device_classes() -> list[str]:
    """Sensor device classes with units (no money: a meter's parameter is never a balance)."""
    return sorted(str(dc) for dc in DEVICE_CLASS_UNITS if str(dc) != "monetary")


def meaning_error(meaning: ValueMeaning) -> str | None:
    """Why Home Assistant would refuse this meaning (unit or state class not for the device class), if it would."""
    if meaning.device_class is None:
        return None
    units = {str(unit) if unit else None for unit in DEVICE_CLASS_UNITS.get(meaning.device_class, ())}  # type: ignore[call-overload]
    if units and meaning.unit not in units:
        return "unit_not_for_class"
    classes = DEVICE_CLASS_STATE_CLASSES.get(meaning.device_class)  # type: ignore[call-overload]
    wanted = (
        SensorStateClass.TOTAL_INCREASING
        if meaning.cumulative and meaning.energy
        else None
        if meaning.cumulative
        else SensorStateClass.MEASUREMENT
    )
    if classes is not None and wanted is not None and wanted not in classes:
        return "kind_not_for_class"
    return None


class ValueOptionsFlow(ReloadingOptionsFlow):
    """The parameter and tariff-layout steps; the polling form is the subclass's."""

    _pending: dict[str, Any] | None = None
    _param: tuple[str, str] | None = None
    _devtype: str | None = None
    _enable: set[tuple[str, str]] | None = None
    _words: dict[str, str] | None = None

    def _coordinator(self) -> MeterCloudCoordinator | None:
        entry = self.config_entry
        if entry.state is not ConfigEntryState.LOADED:
            return None
        coordinator: MeterCloudCoordinator = entry.runtime_data
        return coordinator

    def _client(self) -> MeterClient | None:
        coordinator = self._coordinator()
        return coordinator.client if coordinator is not None else None

    async def _word(self, selector: str, key: str) -> str:
        """A word of our selector translations, in Home Assistant's language."""
        if self._words is None:
            self._words = await async_get_translations(self.hass, self.hass.config.language, "selector", [DOMAIN])
        return self._words.get(f"component.{DOMAIN}.selector.{selector}.options.{key}", key)

    async def _summary(self, meaning: ValueMeaning | None) -> str:
        if meaning is None:
            return "—"
        kind = "cumulative" if meaning.cumulative else "instantaneous"
        parts = [meaning.unit or "—", meaning.device_class or "—", await self._word("param_kind", kind)]
        if meaning.cumulative:
            parts.append(await self._word("param_energy", "on" if meaning.energy else "off"))
        return ", ".join(parts)

    def _options(self) -> dict[str, Any]:
        return dict(self._pending if self._pending is not None else self.config_entry.options)

    async def async_step_settings(self, user_input: dict[str, Any] | None = None) -> ConfigFlowResult:
        """The menu: polling, parameters, tariff layouts; once something changed, save instead of polling."""
        menu = (
            ["polling", "parameters", "tariff_layout"]
            if self._pending is None
            else ["parameters", "tariff_layout", "save"]
        )
        return self.async_show_menu(step_id="settings", menu_options=menu)

    async def async_step_save(self, user_input: dict[str, Any] | None = None) -> ConfigFlowResult:
        """Store the changes (the entry reloads) and enable the sensors of newly described parameters."""
        self._enable_described()
        return self.async_create_entry(data=self._options())

    # --- parameters -------------------------------------------------------------------------------------

    async def _param_rows(self) -> list[ValueParam] | None:
        client = self._client()
        return client.value_params() if client is not None else None

    async def async_step_parameters(self, user_input: dict[str, Any] | None = None) -> ConfigFlowResult:
        """Pick a parameter of a device type; each label says what is known of it and from where."""
        rows = await self._param_rows()
        if rows is None:
            return self.async_abort(reason="entry_not_loaded")
        if not rows:
            return self.async_abort(reason="no_parameters")
        if user_input is not None:
            devtype, param = str(user_input["parameter"]).split(_SEP, 1)
            self._param = (devtype, param)
            return await self.async_step_parameter()
        pending = self._pending_meanings()
        options = []
        for row in rows:
            key = f"{row.device_type}{_SEP}{row.param}"
            if (known := f"{row.device_type.lower()}{_SEP}{row.param}") in pending:
                source, meaning = "user", pending[known]
            else:
                source, meaning = row.source, row.meaning or row.suggestion
            where = await self._word("param_source", source)
            text = f"{row.device_type} · {row.param}: {await self._summary(meaning)} ({where})"
            options.append(SelectOptionDict(value=key, label=text))
        return self.async_show_form(
            step_id="parameters",
            data_schema=vol.Schema(
                {
                    vol.Required("parameter"): SelectSelector(
                        SelectSelectorConfig(options=options, mode=SelectSelectorMode.DROPDOWN)
                    )
                }
            ),
            description_placeholders={"count": str(len(rows))},
        )

    def _pending_meanings(self) -> dict[str, ValueMeaning | None]:
        """Meanings changed in this flow, by "device type/parameter" (None: forgotten)."""
        if self._pending is None:
            return {}
        before = self.config_entry.options.get("parameters") or {}
        after = self._pending.get("parameters") or {}
        changed: dict[str, ValueMeaning | None] = {}
        for devtype in {*before, *after}:
            old, new = before.get(devtype, {}), after.get(devtype, {})
            for param in {*old, *new}:
                if old.get(param) != new.get(param):
                    changed[f"{devtype}{_SEP}{param}"] = ValueMeaning.from_option(new[param]) if param in new else None
        return changed

    async def async_step_parameter(self, user_input: dict[str, Any] | None = None) -> ConfigFlowResult:
        """Say what one parameter is; back to the menu."""
        rows = await self._param_rows()
        assert self._param is not None
        devtype, param = self._param
        row = next((r for r in rows or [] if (r.device_type, r.param) == (devtype, param)), None)
        if row is None:
            return self.async_abort(reason="entry_not_loaded")
        errors: dict[str, str] = {}
        if user_input is not None:
            cumulative = user_input["kind"] == "cumulative"
            meaning = ValueMeaning(
                unit=user_input.get("unit") or None,
                device_class=user_input.get("device_class") or None,
                cumulative=cumulative,
                energy=cumulative and bool(user_input.get("energy")),
            )
            reset = bool(user_input.get("reset"))
            error = None if reset else meaning_error(meaning)
            if error is None:
                self._pending = with_meaning(self._options(), devtype, param, None if reset else meaning)
                if not reset:
                    self._enable = (self._enable or set()) | {(devtype, param)}
                return await self.async_step_settings()
            errors["base"] = error
        shown = self._pending_meanings().get(f"{devtype.lower()}{_SEP}{param}") or row.meaning or row.suggestion
        default = shown or ValueMeaning(None, None, cumulative=False, energy=False)
        schema = {
            vol.Optional("unit", description={"suggested_value": default.unit}): SelectSelector(
                SelectSelectorConfig(options=_units(), custom_value=True, mode=SelectSelectorMode.DROPDOWN)
            ),
            vol.Optional("device_class", description={"suggested_value": default.device_class}): SelectSelector(
                SelectSelectorConfig(options=_device_classes(), mode=SelectSelectorMode.DROPDOWN)
            ),
            vol.Required("kind", default="cumulative" if default.cumulative else "instantaneous"): SelectSelector(
                SelectSelectorConfig(options=list(KINDS), translation_key="param_kind", mode=SelectSelectorMode.LIST)
            ),
            vol.Required("energy", default=default.energy and default.cumulative): BooleanSelector(),
            vol.Required("reset", default=False): BooleanSelector(),
        }
        return self.async_show_form(
            step_id="parameter",
            data_schema=vol.Schema(schema),
            errors=errors,
            description_placeholders={
                "device_type": devtype,
                "param": param,
                "source": await self._word("param_source", row.source),
                "meaning": await self._summary(row.meaning),
                "suggestion": await self._summary(row.suggestion),
            },
        )

    def _enable_described(self) -> None:
        """Sensors created disabled for want of a meaning are wanted now that the user gave one."""
        coordinator = self._coordinator()
        if coordinator is None or not self._enable:
            return
        registry = er.async_get(self.hass)
        wanted = {(devtype.lower(), param) for devtype, param in self._enable}
        for meter in (coordinator.data or {}).values():
            for key in meter.values or {}:
                info = coordinator.client.value_info(meter, key)
                if ((meter.model or "").lower(), info.param) not in wanted:
                    continue
                unique_id = f"{coordinator.device_key(meter.meter_id)}_{key}"
                entity_id = registry.async_get_entity_id("sensor", DOMAIN, unique_id)
                entity = registry.async_get(entity_id) if entity_id else None
                if entity is not None and entity.disabled_by is er.RegistryEntryDisabler.INTEGRATION:
                    registry.async_update_entity(entity.entity_id, disabled_by=None)

    # --- tariff layouts ---------------------------------------------------------------------------------

    def _layout_rows(self) -> list[LayoutRow] | None:
        client = self._client()
        return client.value_layouts() if client is not None else None

    async def _layout_text(self, row: LayoutRow) -> str:
        layout = self._pending_layout(row.device_type) or row.layout
        declared = f"{await self._word('layout_mode', layout.mode)}"
        if layout.mode != "detect":
            declared += f": Σ {layout.sum or '—'}, ∆ {layout.losses or '—'}"
        found = "; ".join(
            f"{f.meter_id}: Σ {f.sum or '—'}"
            + (f" ({', '.join(map(str, f.sums[f.sum]))})" if f.sum is not None else "")
            + f", ∆ {f.loss or '—'}"
            for f in row.findings
        )
        return f"{row.device_type} · {', '.join(map(str, row.systems))} · {declared}" + (f" · {found}" if found else "")

    def _pending_layout(self, devtype: str) -> Layout | None:
        stored = (self._pending or {}).get("tariff_layout", {}).get(devtype.lower())
        return Layout.from_option(stored) if stored else None

    async def async_step_tariff_layout(self, user_input: dict[str, Any] | None = None) -> ConfigFlowResult:
        """Pick a device type: each label says its systems, the layout in force and what each meter's data showed."""
        rows = self._layout_rows()
        if rows is None:
            return self.async_abort(reason="entry_not_loaded")
        if not rows:
            return self.async_abort(reason="no_layouts")
        if user_input is not None:
            self._devtype = str(user_input["device_type"])
            return await self.async_step_tariff_layout_edit()
        options = [SelectOptionDict(value=row.device_type, label=await self._layout_text(row)) for row in rows]
        return self.async_show_form(
            step_id="tariff_layout",
            data_schema=vol.Schema(
                {
                    vol.Required("device_type"): SelectSelector(
                        SelectSelectorConfig(options=options, mode=SelectSelectorMode.LIST)
                    )
                }
            ),
        )

    async def async_step_tariff_layout_edit(self, user_input: dict[str, Any] | None = None) -> ConfigFlowResult:
        """Detect, or declare the sum and losses systems (checked against the data, or not)."""
        row = next((r for r in self._layout_rows() or [] if r.device_type == self._devtype), None)
        if row is None:
            return self.async_abort(reason="entry_not_loaded")
        errors: dict[str, str] = {}
        if user_input is not None:
            total = None if user_input["sum"] == NONE else int(user_input["sum"])
            losses = None if user_input["losses"] == NONE else int(user_input["losses"])
            mode = str(user_input["mode"])
            if mode != "detect" and total is not None and total == losses:
                errors["base"] = "sum_is_losses"
            else:
                layout = Layout(mode, None, None) if mode == "detect" else Layout(mode, total, losses)
                self._pending = with_layout(self._options(), row.device_type, layout)
                return await self.async_step_settings()
        layout = self._pending_layout(row.device_type) or row.layout
        none = await self._word("layout_system", NONE)
        systems = [SelectOptionDict(value=NONE, label=none)] + [
            SelectOptionDict(value=str(system), label=str(system)) for system in row.systems
        ]

        def system(value: int | None) -> str:
            return NONE if value is None else str(value)

        schema = {
            vol.Required("mode", default=layout.mode): SelectSelector(
                SelectSelectorConfig(
                    options=list(LAYOUT_MODES), translation_key="layout_mode", mode=SelectSelectorMode.LIST
                )
            ),
            vol.Required("sum", default=system(layout.sum)): SelectSelector(
                SelectSelectorConfig(options=systems, mode=SelectSelectorMode.DROPDOWN)
            ),
            vol.Required("losses", default=system(layout.losses)): SelectSelector(
                SelectSelectorConfig(options=systems, mode=SelectSelectorMode.DROPDOWN)
            ),
        }
        return self.async_show_form(
            step_id="tariff_layout_edit",
            data_schema=vol.Schema(schema),
            errors=errors,
            description_placeholders={"device_type": row.device_type, "found": await self._layout_text(row)},
        )
