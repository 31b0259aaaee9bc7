"""Server refusals of KUMIR-RESURS, in whatever shape they come: the spec defines no error document.

Chapter 5 only says an export answers with the import structure; what a refusal looks like is not
written down. Our decision: a refusal is any of these, at any HTTP status, read with the safe parser:

- `<error><code>17</code><message>…</message></error>` (also `msg`, `text`, `description`, `reason`;
  the code also as `error_code`/`errcode`), or the same as attributes `<error code=".." message=".."/>`,
  or an `<error>` whose own text is the message; several under `<errors>` are joined;
- `<result>` (or `<response>`, `<answer>`, `<d>`) whose `status` element or attribute says error
  (`error`, `fail`, `failed`, `false`, `refused`, `denied`), with `code`/`message` as elements or
  attributes, or holding an `<error>` element as above;
- plain text (not XML, not an HTML page): at a 4xx/5xx status any text other than the bare reason phrase
  ("Internal Server Error" is the web server, not KUMIR explaining itself); at 2xx only text that starts
  with an error word, as the spec's PHP samples print it ("Ошибка: …", "Error: …"), since a 2xx "OK"
  is success. "Ошибка 17: …" gives code 17.

Only small bodies are inspected (a refusal is a few lines; a 30 MB export is not one).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from http import HTTPStatus

from lxml import etree

from ..errors import ResponseError
from .xmlsafe import parse

MAX_REFUSAL_BYTES = 64 * 1024
MAX_MESSAGE_CHARS = 500
ERROR_STATUSES = frozenset({"error", "err", "fail", "failed", "failure", "false", "refused", "denied"})
ENVELOPES = frozenset({"result", "response", "answer", "d"})
MESSAGE_NAMES = ("message", "msg", "text", "description", "reason", "error_message", "errmsg")
CODE_NAMES = ("code", "error_code", "errcode", "errno")
# "Ошибка 17: текст", "Error: text", "ERROR #5 - text"; the code is optional.
_TEXT_ERROR = re.compile(
    r"^\s*(?:ошибка|error|err|fail(?:ed|ure)?)\b\s*(?:code\s*)?[#№]?\s*(?P<code>[\w.\-]*\d[\w.\-]*)?\s*[:\-—]?\s*(?P<message>.*)\Z",
    re.IGNORECASE | re.DOTALL,
)
_SPACES = re.compile(r"\s+")


@dataclass(frozen=True, slots=True)
class Refusal:
    """What the server said when it refused: its code (None when it gave none) and its message."""

    code: str | None
    message: str


def _clean(text: str | None) -> str:
    return _SPACES.sub(" ", text or "").strip()[:MAX_MESSAGE_CHARS]


def _local(element: etree._Element) -> str:
    tag = element.tag
    if not isinstance(tag, str):  # pragma: no cover - comments and PIs are stripped by the parser
        return ""
    return tag.rsplit("}", 1)[-1].lower()


def _field(element: etree._Element, names: tuple[str, ...]) -> str | None:
    """A field given as an attribute or a child element, first name first."""
    attributes = {str(key).rsplit("}", 1)[-1].lower(): str(value) for key, value in element.attrib.items()}
    children = {_local(child): child for child in reversed(list(element)) if _local(child)}
    for name in names:
        if attributes.get(name, "").strip():
            return _clean(attributes[name])
        child = children.get(name)
        if child is not None and len(child) == 0 and (child.text or "").strip():
            return _clean(child.text)
    return None


def _from_error(element: etree._Element) -> Refusal:
    """An `<error>`: fields as attributes or children, else its own text."""
    message = _field(element, MESSAGE_NAMES)
    if message is None and len(element) == 0:
        message = _clean(element.text)
    return Refusal(_field(element, CODE_NAMES), message or "")


def _from_xml(root: etree._Element) -> Refusal | None:
    name = _local(root)
    if name == "error":
        return _from_error(root)
    if name == "errors":
        found = [_from_error(child) for child in root if _local(child) == "error"]
        if not found:
            return None
        codes = [refusal.code for refusal in found if refusal.code]
        return Refusal(codes[0] if codes else None, "; ".join(r.message for r in found if r.message))
    if name not in ENVELOPES:
        return None
    inner = next((child for child in root if _local(child) == "error" and (len(child) or child.attrib)), None)
    status = (_field(root, ("status", "result", "state")) or "").lower()
    if status in ERROR_STATUSES:
        own = Refusal(_field(root, CODE_NAMES), _field(root, MESSAGE_NAMES) or "")
        if inner is not None and not own.message:
            nested = _from_error(inner)
            return Refusal(own.code or nested.code, nested.message)
        if not own.message:
            text = next((child.text for child in root if _local(child) == "error" and len(child) == 0), None)
            return Refusal(own.code, _clean(text))
        return own
    if inner is not None or any(_local(child) == "error" and (child.text or "").strip() for child in root):
        # No status at all, but an error element: `<result><error code="5">…</error></result>`, `<d><error>…`.
        element = inner if inner is not None else next(child for child in root if _local(child) == "error")
        return _from_error(element)
    return None


def _decode(body: bytes) -> str:
    try:
        return body.decode("utf-8-sig")
    except UnicodeDecodeError:
        # The system is Russian: a PHP page without a charset is often windows-1251.
        return body.decode("cp1251", errors="replace")


def _from_text(text: str, status: int) -> Refusal | None:
    text = text.strip()
    if not text:
        return None
    matched = _TEXT_ERROR.match(text)
    if matched:
        return Refusal(matched.group("code") or None, _clean(matched.group("message")) or _clean(text))
    if 200 <= status < 300:
        return None
    try:
        phrase = HTTPStatus(status).phrase.lower()
    except ValueError:
        phrase = ""
    bare = text.lower().removeprefix(str(status)).strip(" .:-")
    if bare in (phrase, ""):
        return None
    return Refusal(None, _clean(text))


def find_refusal(body: bytes, status: int, content_type: str = "") -> Refusal | None:
    """The server's refusal in `body`, or None when the body is no refusal (or not one we can read).

    Never raises: a body too odd to read is simply not taken for a refusal, and the caller goes on
    to judge the status and the body as before.
    """
    if not body.strip() or len(body) > MAX_REFUSAL_BYTES:
        return None
    content_type = content_type.split(";", 1)[0].strip().lower()
    if content_type in ("text/html", "application/xhtml+xml"):
        return None
    if body.lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"<"):
        try:
            root = parse(body, max_bytes=MAX_REFUSAL_BYTES)
        except ResponseError:
            return None
        return _from_xml(root)
    return _from_text(_decode(body), status)


def result_fields(body: bytes) -> dict[str, str]:
    """The fields of a `<result>` answer to an import ({} when the body is no XML document at all)."""
    if not body.strip():
        return {}
    try:
        root = parse(body, max_bytes=1024 * 1024)
    except ResponseError:
        if body.lstrip().startswith(b"<"):
            raise
        return {}
    fields = {str(key): str(value).strip() for key, value in root.attrib.items()}
    for child in root:
        if isinstance(child.tag, str) and len(child) == 0:
            fields[child.tag.rsplit("}", 1)[-1]] = (child.text or "").strip()
    return fields
