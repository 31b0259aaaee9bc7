"""The parameter table in force for an entry: the user's meanings over the shipped table, and suggestions.

The shipped table (params.py) names the spec's m234 parameters and the usual names of heat meters, gas
correctors and pulse counters. Device types the table does not know report names of their own; a name with a
recognisable pattern (V... a volume, Q... heat energy, Imp... pulses, a unit suffix such as _kWh) gets a
*suggested* meaning that the options flow shows for the user to confirm. A suggestion is never applied by itself:
until the user says what a parameter is, its sensor stays unitless and disabled, with no statistics.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from ..values import ValueMeaning, ValueParam
from .params import MEASUREMENT, PARAMS, TOTAL_INCREASING, ParamInfo

# (pattern, meaning): the first match wins. Ambiguous names are left out on purpose: T... is a temperature
# (T1) or a time (Tnar, Tw), P... a pressure or a power, so only the digit forms are suggested.
_SUGGESTIONS: tuple[tuple[re.Pattern[str], ValueMeaning], ...] = (
    # A unit written into the name.
    (re.compile(r".*[_-]?kWh$", re.IGNORECASE), ValueMeaning("kWh", "energy", cumulative=True)),
    (re.compile(r".*[_-]?kvarh$", re.IGNORECASE), ValueMeaning("kvarh", "reactive_energy", cumulative=True)),
    (re.compile(r".*[_-]?Gcal$", re.IGNORECASE), ValueMeaning("Gcal", "energy", cumulative=True)),
    (re.compile(r".*[_-]?GJ$"), ValueMeaning("GJ", "energy", cumulative=True)),
    (re.compile(r".*[_-]m3$", re.IGNORECASE), ValueMeaning("m³", "volume", cumulative=True)),
    # Active and reactive energy registers spelled otherwise (EA, EAp, ER1, A+, R-).
    (re.compile(r"^(EA[ipo+\-]?|A[+\-])\d*$"), ValueMeaning("kWh", "energy", cumulative=True)),
    (re.compile(r"^(ER|R)[ipo+\-]\d*$"), ValueMeaning("kvarh", "reactive_energy", cumulative=True)),
    # Heat: Q, Q3, Qo, Qgvs; mass M3; volume V, V3, Vc, Vr (the standard/working volume of a corrector).
    (re.compile(r"^Q(\d+|[a-z]+\d*)?$"), ValueMeaning("Gcal", "energy", cumulative=True)),
    (re.compile(r"^M\d+$"), ValueMeaning("t", None, cumulative=True)),
    (re.compile(r"^V(\d+|[a-z]{1,3}\d*)?$"), ValueMeaning("m³", "volume", cumulative=True)),
    # Pulse totals: the unit depends on what the channel counts.
    (re.compile(r"^(Imp|Cnt|C)\d*$", re.IGNORECASE), ValueMeaning(None, None, cumulative=True)),
    # Temperatures and pressures numbered by pipe (T4, t1, P3), flows (G1).
    (re.compile(r"^[Tt]\d+$"), ValueMeaning("°C", "temperature", cumulative=False)),
    (re.compile(r"^P\d+$"), ValueMeaning("MPa", None, cumulative=False)),
    (re.compile(r"^G\d*$"), ValueMeaning("m³/h", "volume_flow_rate", cumulative=False)),
    # Phase voltages and currents spelled without the underscore or with numbers (UA, U1, I_1).
    (re.compile(r"^U_?[ABC123]$"), ValueMeaning("V", "voltage", cumulative=False)),
    (re.compile(r"^I_?[ABC123]$"), ValueMeaning("A", "current", cumulative=False)),
)


def suggest(name: str) -> ValueMeaning | None:
    """What an unknown parameter's name suggests; None when it suggests nothing (or too many things)."""
    for pattern, meaning in _SUGGESTIONS:
        if pattern.match(name):
            return meaning
    return None


def shipped(name: str) -> ValueMeaning:
    """A shipped table row as a meaning (what the options flow shows and pre-fills)."""
    info = PARAMS[name]
    return ValueMeaning(info.unit, info.device_class, info.cumulative, info.energy)


class ParamTable:
    """The meanings in force: the user's per device type, then the shipped table; suggestions on the side."""

    def __init__(self, user: Mapping[str, Mapping[str, ValueMeaning]] | None = None) -> None:
        """`user`: {device type (lower case): {parameter: meaning}} from the entry's options."""
        self._user = {devtype.lower(): dict(params) for devtype, params in (user or {}).items()}

    def info(self, devtype: str, param: str) -> ParamInfo | None:
        """The parameter's description for this device type; None when nobody has said what it is."""
        meaning = self._user.get(devtype.lower(), {}).get(param)
        if meaning is None:
            return PARAMS.get(param)
        known = PARAMS.get(param)
        return ParamInfo(
            param,
            known.label if known is not None else param,
            meaning.unit,
            meaning.device_class,
            TOTAL_INCREASING if meaning.cumulative else MEASUREMENT,
            cumulative=meaning.cumulative,
            # A parameter the user described is one they want to see.
            shown=True,
            energy=meaning.energy,
        )

    def described(self) -> dict[str, dict[str, ValueMeaning]]:
        """The user's meanings, by device type (lower case) and parameter."""
        return {devtype: dict(params) for devtype, params in self._user.items()}

    def user_described(self, devtype: str, param: str) -> bool:
        """Whether the meaning in force is the user's."""
        return param in self._user.get(devtype.lower(), {})

    def row(self, devtype: str, param: str) -> ValueParam:
        """One parameter for the options flow: its meaning, where it comes from, and a suggestion."""
        if self.user_described(devtype, param):
            return ValueParam(devtype, param, "user", self._user[devtype.lower()][param], label=self._label(param))
        if param in PARAMS:
            source = "document" if PARAMS[param].documented else "default"
            return ValueParam(devtype, param, source, shipped(param), label=self._label(param))
        suggestion = suggest(param)
        if suggestion is not None:
            return ValueParam(devtype, param, "suggested", None, suggestion)
        return ValueParam(devtype, param, "unknown", None)

    @staticmethod
    def _label(param: str) -> str:
        known = PARAMS.get(param)
        return known.label if known is not None else ""
