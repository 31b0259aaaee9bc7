"""The one way KUMIR-RESURS XML is read: a locked-down lxml parser that refuses DTDs.

The answers come from a server we do not control (and, through import, may carry data we did not
write), so a document is refused outright when it is too big, malformed, or declares a DOCTYPE or an
ENTITY: nothing in the protocol needs a DTD, and refusing it is simpler and safer than any attempt
to expand entities carefully (billion laughs, external entities reading files or the network).
"""

from __future__ import annotations

from lxml import etree

from ..errors import ResponseError

DEFAULT_MAX_BYTES = 16 * 1024 * 1024

# Tokens that open a DTD or declare an entity. XML keywords are case-sensitive.
_DTD_TOKENS = (b"<!DOCTYPE", b"<!ENTITY")


def make_parser() -> etree.XMLParser:
    """A fresh parser that resolves nothing, loads nothing and fetches nothing.

    A new one per document: lxml parser objects must not be shared between threads.
    """
    return etree.XMLParser(
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        dtd_validation=False,
        huge_tree=False,
        remove_comments=True,
        remove_pis=True,
    )


def _declares_dtd(data: bytes) -> bool:
    """Whether the raw bytes carry a DOCTYPE or ENTITY token (also in UTF-16/32, NULs dropped)."""
    if any(token in data for token in _DTD_TOKENS):
        return True
    if b"\x00" in data:
        squeezed = data.replace(b"\x00", b"")
        return any(token in squeezed for token in _DTD_TOKENS)
    return False


def parse(data: bytes, *, max_bytes: int = DEFAULT_MAX_BYTES) -> etree._Element:
    """The root element of a document, or ResponseError (unsafe_xml, xml_too_large, malformed_xml).

    The declared encoding is honoured (UTF-8 when none is declared, so stray non-UTF-8 bytes are
    malformed). Comments and processing instructions are dropped.
    """
    if not isinstance(data, bytes):
        raise TypeError("XML must be given as bytes")
    if len(data) > max_bytes:
        raise ResponseError(f"XML document of {len(data)} bytes exceeds {max_bytes}", reason="xml_too_large")
    # Refused before libxml2 sees it: a DTD is never parsed, let alone expanded.
    if _declares_dtd(data):
        raise ResponseError("XML document declares a DOCTYPE or ENTITY", reason="unsafe_xml")
    try:
        root = etree.fromstring(data, parser=make_parser())  # the parser above is locked down
    except (etree.XMLSyntaxError, ValueError) as err:
        raise ResponseError(f"malformed XML: {err}", reason="malformed_xml") from err
    if root is None:  # pragma: no cover - lxml raises for an empty document; kept as a guard
        raise ResponseError("empty XML document", reason="malformed_xml")
    # Belt and braces: an encoding the byte scan cannot see through must still not smuggle a DTD.
    docinfo = root.getroottree().docinfo
    if docinfo.internalDTD is not None or docinfo.doctype:
        raise ResponseError("XML document declares a DOCTYPE", reason="unsafe_xml")
    return root
