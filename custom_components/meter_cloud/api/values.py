"""Named values the user can describe: parameter meanings and system layouts kept in the entry's options.

Backends whose meters report named values of their own (KUMIR-RESURS: system x parameter) declare
`MeterClient.value_options`; the options flow lists what the client has seen and stores the user's word here,
in one format, and the client reads it back (`MeterClient.use_options`) at the next setup.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

# entry.options keys: {device type: {parameter: meaning}} and {device type: layout}.
CONF_PARAMETERS = "parameters"
CONF_LAYOUTS = "tariff_layout"

# Where a parameter's meaning comes from: the user, the vendor's document, the usual name (our table),
# a pattern of the name (shown, not applied), or nothing at all.
SOURCES = ("user", "document", "default", "suggested", "unknown")
# How a device type's systems are laid out: detected from the data, declared and checked against the data,
# or declared and believed whatever the data say.
LAYOUT_MODES = ("detect", "declared", "fixed")


@dataclass(frozen=True, slots=True)
class ValueMeaning:
    """What a parameter is: unit and device class as Home Assistant spells them, counter or gauge."""

    unit: str | None
    device_class: str | None
    cumulative: bool
    # A counter offered for long-term statistics and the Energy dashboard (meaningless for a gauge).
    energy: bool = True

    def as_option(self) -> dict[str, Any]:
        """The stored form."""
        return {
            "unit": self.unit,
            "device_class": self.device_class,
            "kind": "cumulative" if self.cumulative else "instantaneous",
            "energy": self.energy and self.cumulative,
        }

    @classmethod
    def from_option(cls, stored: Mapping[str, Any]) -> ValueMeaning:
        """Read the stored form back (unknown or missing fields fall back to a unitless gauge)."""
        cumulative = stored.get("kind") == "cumulative"
        return cls(
            unit=str(stored["unit"]) if stored.get("unit") else None,
            device_class=str(stored["device_class"]) if stored.get("device_class") else None,
            cumulative=cumulative,
            energy=cumulative and bool(stored.get("energy", True)),
        )


@dataclass(frozen=True, slots=True)
class ValueParam:
    """One parameter of one device type as exports showed it, and what is known of it."""

    device_type: str
    param: str
    source: str
    # Applied to its sensors (None: unknown or only suggested).
    meaning: ValueMeaning | None
    # What the name suggests, for the user to confirm; never applied by itself.
    suggestion: ValueMeaning | None = None
    label: str = ""


@dataclass(frozen=True, slots=True)
class Layout:
    """A device type's declared layout: which system holds the sum of others, which the losses."""

    mode: str = "detect"
    sum: int | None = None
    losses: int | None = None

    def as_option(self) -> dict[str, Any]:
        """The stored form."""
        return {"mode": self.mode, "sum": self.sum, "losses": self.losses}

    @classmethod
    def from_option(cls, stored: Mapping[str, Any]) -> Layout:
        """Read the stored form back."""
        mode = str(stored.get("mode") or "detect")

        def number(key: str) -> int | None:
            value = stored.get(key)
            return None if value is None or value == "" else int(value)

        return cls(mode if mode in LAYOUT_MODES else "detect", number("sum"), number("losses"))


@dataclass(frozen=True, slots=True)
class LayoutFinding:
    """What the data of one meter showed: its sum systems (with their parts) and losses systems."""

    meter_id: str
    sums: Mapping[int, tuple[int, ...]]
    losses: frozenset[int]

    @property
    def sum(self) -> int | None:
        """The sum system adding up the most others (a device has one)."""
        return max(self.sums, key=lambda system: (len(self.sums[system]), -system)) if self.sums else None

    @property
    def loss(self) -> int | None:
        """The lowest losses system."""
        return min(self.losses) if self.losses else None


@dataclass(frozen=True, slots=True)
class LayoutRow:
    """One device type for the options: its systems, the layout in force, what each meter's data showed."""

    device_type: str
    systems: tuple[int, ...]
    layout: Layout
    # True when the layout is the user's; False: the vendor's glossary or detection by default.
    chosen: bool
    findings: tuple[LayoutFinding, ...] = field(default=())


@dataclass(frozen=True, slots=True)
class ValueProblem:
    """Declaration and data disagree for one meter (a repair issue, never a silent choice)."""

    meter_id: str
    device_type: str
    declared: Layout
    found: LayoutFinding


def meanings_from(options: Mapping[str, Any]) -> dict[str, dict[str, ValueMeaning]]:
    """The user's meanings by device type (lower case) and parameter."""
    stored = options.get(CONF_PARAMETERS) or {}
    return {
        str(devtype).lower(): {str(param): ValueMeaning.from_option(meaning) for param, meaning in params.items()}
        for devtype, params in stored.items()
        if isinstance(params, Mapping)
    }


def layouts_from(options: Mapping[str, Any]) -> dict[str, Layout]:
    """The user's layouts by device type (lower case)."""
    stored = options.get(CONF_LAYOUTS) or {}
    return {str(devtype).lower(): Layout.from_option(layout) for devtype, layout in stored.items()}


def with_meaning(options: Mapping[str, Any], devtype: str, param: str, meaning: ValueMeaning | None) -> dict[str, Any]:
    """Options with one parameter's meaning set (None: forgotten, back to the shipped table)."""
    tables = {key: dict(value) for key, value in (options.get(CONF_PARAMETERS) or {}).items()}
    table = tables.setdefault(devtype.lower(), {})
    if meaning is None:
        table.pop(param, None)
    else:
        table[param] = meaning.as_option()
    return {**options, CONF_PARAMETERS: {key: value for key, value in tables.items() if value}}


def with_layout(options: Mapping[str, Any], devtype: str, layout: Layout) -> dict[str, Any]:
    """Options with one device type's layout set."""
    layouts = dict(options.get(CONF_LAYOUTS) or {})
    layouts[devtype.lower()] = layout.as_option()
    return {**options, CONF_LAYOUTS: layouts}
