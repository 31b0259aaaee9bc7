"""KUMIR-RESURS (NTC KUMIR) documents: safe XML, archive export/import, parameter meanings."""

from __future__ import annotations

from .archive import (
    ARCHIVES,
    ArchiveRow,
    ExportAnswer,
    export_request,
    import_document,
    parse_export,
    parse_export_answer,
)
from .params import (
    LOSSES_SYSTEMS,
    PARAMS,
    SUM_SYSTEMS,
    ParamInfo,
    describe,
    is_losses_system,
    is_sum_system,
    sum_components,
)
from .refusal import Refusal, find_refusal
from .xmlsafe import DEFAULT_MAX_BYTES, make_parser, parse

__all__ = [
    "ARCHIVES",
    "DEFAULT_MAX_BYTES",
    "LOSSES_SYSTEMS",
    "PARAMS",
    "SUM_SYSTEMS",
    "ArchiveRow",
    "ExportAnswer",
    "ParamInfo",
    "Refusal",
    "describe",
    "export_request",
    "find_refusal",
    "import_document",
    "is_losses_system",
    "is_sum_system",
    "make_parser",
    "parse",
    "parse_export",
    "parse_export_answer",
    "sum_components",
]
