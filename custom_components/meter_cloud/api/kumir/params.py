"""What the KUMIR-RESURS archive parameters mean, as plain data (no Home Assistant imports).

Units and device classes are spelled as Home Assistant spells them, so the integration can map a
parameter to a sensor without a second table. Where Home Assistant has no device class accepting
the unit the server reports (MPa pressure, tonnes of mass), the device class is None rather than
a class that would reject the unit. `reactive_energy` only exists from Home Assistant 2025.x on;
the integration falls back to no device class where it is missing.

`cumulative` marks counters (meter registers that only grow). Which archive carries the register
and which carries a period's delta ("наработка") is the device's business: read counters from the
archive that holds readings and check monotonicity before feeding long-term statistics.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from types import MappingProxyType

TOTAL_INCREASING = "total_increasing"
MEASUREMENT = "measurement"


@dataclass(frozen=True, slots=True)
class ParamInfo:
    """One known archive parameter."""

    name: str
    label: str
    unit: str | None
    device_class: str | None
    state_class: str
    cumulative: bool
    # The same for every system of a device (an electricity meter's voltage is not per tariff):
    # shown by default only in the lowest system that reports it.
    meter_wide: bool = False
    # Created enabled (an undocumented parameter is there to switch on, not shown by default).
    shown: bool = True
    # A counter offered for long-term statistics and the Energy dashboard (False: a counter kept off them).
    energy: bool = True
    # Named by the spec's own sample (the m234 export); the others are the usual names, not confirmed by it.
    documented: bool = False


def _counter(name: str, label: str, unit: str | None, device_class: str | None) -> ParamInfo:
    return ParamInfo(name, label, unit, device_class, TOTAL_INCREASING, cumulative=True)


def _gauge(name: str, label: str, unit: str | None, device_class: str | None) -> ParamInfo:
    return ParamInfo(name, label, unit, device_class, MEASUREMENT, cumulative=False)


def _line(name: str, label: str, unit: str | None, device_class: str | None) -> ParamInfo:
    return ParamInfo(name, label, unit, device_class, MEASUREMENT, cumulative=False, meter_wide=True)


# Created disabled: engineering values most households never look at. An entry may enable at most
# 10,000 entities in Home Assistant 2026, and an account can hold hundreds of meters.
def _quiet_line(name: str, label: str, unit: str | None, device_class: str | None) -> ParamInfo:
    return ParamInfo(name, label, unit, device_class, MEASUREMENT, cumulative=False, meter_wide=True, shown=False)


def _quiet_counter(name: str, label: str, unit: str | None, device_class: str | None) -> ParamInfo:
    return ParamInfo(name, label, unit, device_class, TOTAL_INCREASING, cumulative=True, shown=False)


_TABLE: tuple[ParamInfo, ...] = (
    # Electricity meters (m234 in the spec's sample; Mercury, Energomera, ...).
    _counter("EAi", "Active energy import", "kWh", "energy"),
    _counter("EAo", "Active energy export", "kWh", "energy"),
    _quiet_counter("ERi", "Reactive energy import", "kvarh", "reactive_energy"),
    _quiet_counter("ERo", "Reactive energy export", "kvarh", "reactive_energy"),
    _line("U_A", "Voltage phase A", "V", "voltage"),
    _line("U_B", "Voltage phase B", "V", "voltage"),
    _line("U_C", "Voltage phase C", "V", "voltage"),
    _quiet_line("I_A", "Current phase A", "A", "current"),
    _quiet_line("I_B", "Current phase B", "A", "current"),
    _quiet_line("I_C", "Current phase C", "A", "current"),
    _quiet_line("F0", "Grid frequency", "Hz", "frequency"),
    _quiet_line("COS_A", "Power factor phase A", None, "power_factor"),
    _quiet_line("COS_B", "Power factor phase B", None, "power_factor"),
    _quiet_line("COS_C", "Power factor phase C", None, "power_factor"),
    _quiet_line("COS_S", "Power factor total", None, "power_factor"),
    _quiet_line("F_AB", "Phase angle A-B", "°", None),
    _quiet_line("F_CA", "Phase angle C-A", "°", None),
    _quiet_line("F_BC", "Phase angle B-C", "°", None),
    # In the spec's m234 sample but not explained anywhere: kept so it is named, never interpreted.
    ParamInfo("RF7", "RF7 (undocumented)", None, None, MEASUREMENT, cumulative=False, meter_wide=True, shown=False),
    # Heat meters (one accounting scheme = one heat system).
    _counter("Q", "Heat energy", "Gcal", "energy"),
    # Home Assistant's weight class has no tonnes.
    _counter("M1", "Mass supply pipe", "t", None),
    _counter("M2", "Mass return pipe", "t", None),
    _counter("V1", "Volume supply pipe", "m³", "volume"),
    _counter("V2", "Volume return pipe", "m³", "volume"),
    _gauge("T1", "Temperature supply pipe", "°C", "temperature"),
    _gauge("T2", "Temperature return pipe", "°C", "temperature"),
    _gauge("T3", "Temperature cold water", "°C", "temperature"),
    # Home Assistant's pressure class has no MPa.
    _gauge("P1", "Pressure supply pipe", "MPa", None),
    _gauge("P2", "Pressure return pipe", "MPa", None),
    _counter("Tnar", "Operating time", "h", "duration"),
    # Gas volume correctors (one accounting scheme = one pipeline/channel). The standard volume
    # is what gas is billed by, so only it is a gas sensor; the working volume is plain volume.
    _counter("Vs", "Gas volume (standard conditions)", "m³", "gas"),
    _counter("Vw", "Gas volume (working conditions)", "m³", "volume"),
    _gauge("P", "Gas pressure", "kPa", "pressure"),
    _gauge("T", "Gas temperature", "°C", "temperature"),
    # Pulse counters (one accounting scheme = one channel): the unit depends on what is counted.
    _counter("C", "Pulse total", None, None),
)

# The spec's m234 sample names these (and only these); its glossary explains none of them.
DOCUMENTED = frozenset(
    {"EAi", "EAo", "ERi", "ERo", "U_A", "U_B", "U_C", "I_A", "I_B", "I_C", "F0"}
    | {"COS_A", "COS_B", "COS_C", "COS_S", "F_AB", "F_CA", "F_BC", "RF7"}
)
PARAMS: Mapping[str, ParamInfo] = MappingProxyType(
    {info.name: replace(info, documented=info.name in DOCUMENTED) for info in _TABLE}
)


def describe(name: str) -> ParamInfo | None:
    """The description of a parameter (names are case-sensitive, as in XML), None when unknown."""
    return PARAMS.get(name)


# Tariff semantics of the glossary ("схема учёта" of an electricity meter is a tariff):
# a sum system repeats the energy of its components, a losses system is technical losses.
# Keys are KUMIR device codes, compared case-insensitively. Only m234 is confirmed by the spec's
# samples; "ce303" (Energomera CE303) and "m230" (Mercury 230 ART) follow the same naming.
SUM_SYSTEMS: Mapping[str, Mapping[int, tuple[int, ...]]] = MappingProxyType(
    {
        # CE303: tariff 1 holds the sum of all tariffs (2-5 are the individual ones).
        "ce303": MappingProxyType({1: (2, 3, 4, 5)}),
        # Mercury 230 ART: tariff 6 holds the sum of tariffs 1-4.
        "m230": MappingProxyType({6: (1, 2, 3, 4)}),
    }
)
LOSSES_SYSTEMS: Mapping[str, frozenset[int]] = MappingProxyType(
    {
        # Mercury 230 ART: tariff 5 holds the energy of technical losses.
        "m230": frozenset({5}),
    }
)


def sum_components(devtype: str, system: int) -> tuple[int, ...]:
    """The systems a sum system adds up; empty when `system` is not a sum for this device."""
    return SUM_SYSTEMS.get(devtype.lower(), {}).get(system, ())


def is_sum_system(devtype: str, system: int) -> bool:
    """Whether the system repeats other tariffs' energy (keep it off the Energy dashboard)."""
    return bool(sum_components(devtype, system))


def is_losses_system(devtype: str, system: int) -> bool:
    """Whether the system holds technical losses rather than consumed energy."""
    return system in LOSSES_SYSTEMS.get(devtype.lower(), frozenset())
