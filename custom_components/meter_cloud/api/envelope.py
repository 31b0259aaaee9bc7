"""The optional "3DES + MAC" payload envelope of Cangnan CNMCSP (spec 4.2).

The spec names the algorithms but no byte layout (the vendor ships a DLL). Our envelope, with the
choices the spec leaves open made configurable:

- plaintext: the UTF-8 JSON body that would otherwise be sent;
- cipher: 3DES (two-key, 16-byte, or three-key, 24-byte key given as hex), mode CBC with an all-zero
  IV (default) or ECB; padding PKCS#7 (default) or zeros;
- MAC over the ciphertext: ISO 9797-1 MAC algorithm 3 (the "retail MAC" used by Chinese banking and
  utility systems; DES with the key's first two halves) with padding method 2 (0x80 then zeros) by
  default ("x919"), the same with zero padding as ANSI X9.19 itself pads ("x919_zero"), or
  HMAC-SHA256 with the whole key; sent as upper-case hex;
- wire body: ``{"Data": <ciphertext as Base64 (default) or hex>, "MAC": <hex>}``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import importlib
import json
import logging
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from .errors import ConfigurationError, ResponseError

_LOGGER = logging.getLogger(__name__)

MODES = ("cbc", "ecb")
PADDINGS = ("pkcs7", "zero")
MACS = ("x919", "x919_zero", "hmac_sha256")
ENCODINGS = ("base64", "hex")
BLOCK = 8
ZERO_IV = bytes(BLOCK)


def _cipher_modules() -> tuple[ModuleType, ModuleType]:
    """pycryptodome's DES and DES3, imported only for an entry that has an envelope key.

    The envelope is optional: a missing or broken crypto library (seen: a `cffi` replaced under the
    running process) must fail only the entries that use it, never the import of the integration.
    """
    try:
        return importlib.import_module("Crypto.Cipher.DES"), importlib.import_module("Crypto.Cipher.DES3")
    except Exception as err:  # ImportError, or whatever a broken native backend raises
        _LOGGER.debug("pycryptodome cannot be imported: %r", err)
        raise ConfigurationError(f"{type(err).__name__}: {err}", reason="crypto_unavailable") from err


@dataclass(frozen=True, slots=True)
class Envelope:
    """Settings of the envelope; `key` is 16 or 24 bytes."""

    key: bytes
    mode: str = "cbc"
    padding: str = "pkcs7"
    mac: str = "x919"
    encoding: str = "base64"

    @classmethod
    def from_config(cls, key_hex: str, mode: str, padding: str, mac: str, encoding: str) -> Envelope:
        """Validate settings from the config flow."""
        try:
            key = bytes.fromhex(key_hex.strip())
        except ValueError as err:
            raise ConfigurationError("the key is not hex", reason="invalid_encryption_key") from err
        if len(key) not in (16, 24):
            raise ConfigurationError("the key must be 32 or 48 hex digits", reason="invalid_encryption_key")
        if mode not in MODES or padding not in PADDINGS or mac not in MACS or encoding not in ENCODINGS:
            raise ConfigurationError(
                f"unknown mode {mode}, padding {padding}, MAC {mac} or encoding {encoding}",
                reason="invalid_encryption_key",
            )
        des3 = _cipher_modules()[1]
        try:
            des3.adjust_key_parity(key)
            des3.new(key, des3.MODE_ECB)
        except ValueError as err:  # e.g. K1 == K2: 3DES would collapse to single DES
            raise ConfigurationError(str(err), reason="invalid_encryption_key") from err
        return cls(key, mode, padding, mac, encoding)

    def _cipher(self) -> Any:
        des3 = _cipher_modules()[1]
        if self.mode == "cbc":
            return des3.new(self.key, des3.MODE_CBC, iv=ZERO_IV)
        return des3.new(self.key, des3.MODE_ECB)

    def _pad(self, data: bytes) -> bytes:
        missing = BLOCK - len(data) % BLOCK
        if self.padding == "pkcs7":
            return data + bytes([missing]) * missing
        return data + bytes(missing % BLOCK)

    def _unpad(self, data: bytes) -> bytes:
        if self.padding == "zero":
            return data.rstrip(b"\x00")
        count = data[-1] if data else 0
        if not 1 <= count <= BLOCK or data[-count:] != bytes([count]) * count:
            raise ResponseError("bad padding in the encrypted payload")
        return data[:-count]

    def mac_of(self, data: bytes) -> str:
        """The MAC of `data` as upper-case hex."""
        if self.mac == "hmac_sha256":
            return hmac.new(self.key, data, hashlib.sha256).hexdigest().upper()
        return retail_mac(self.key[:8], self.key[8:16], data, zero_padding=self.mac == "x919_zero").hex().upper()

    def _encode(self, data: bytes) -> str:
        return base64.b64encode(data).decode("ascii") if self.encoding == "base64" else data.hex().upper()

    def _decode(self, text: str) -> bytes:
        try:
            if self.encoding == "base64":
                return base64.b64decode(text, validate=True)
            return bytes.fromhex(text)
        except (binascii.Error, ValueError) as err:
            raise ResponseError("the encrypted payload is not valid Base64/hex") from err

    def seal(self, plaintext: bytes) -> bytes:
        """Encrypt and MAC a body."""
        ciphertext = self._cipher().encrypt(self._pad(plaintext))
        return json.dumps({"Data": self._encode(ciphertext), "MAC": self.mac_of(ciphertext)}).encode()

    def open(self, body: bytes) -> bytes:
        """Check the MAC and decrypt a body; raise ResponseError when it is not a valid envelope."""
        try:
            outer = json.loads(body.decode("utf-8-sig"))
        except (UnicodeDecodeError, ValueError) as err:
            raise ResponseError("the encrypted payload is not JSON") from err
        if (
            not isinstance(outer, dict)
            or not isinstance(outer.get("Data"), str)
            or not isinstance(outer.get("MAC"), str)
        ):
            raise ResponseError("the encrypted payload lacks Data or MAC")
        ciphertext = self._decode(outer["Data"])
        if not ciphertext or len(ciphertext) % BLOCK:
            raise ResponseError("the encrypted payload is not whole 3DES blocks")
        if not hmac.compare_digest(outer["MAC"].strip().upper(), self.mac_of(ciphertext)):
            raise ResponseError("the payload's MAC does not match")
        return self._unpad(self._cipher().decrypt(ciphertext))


def retail_mac(k1: bytes, k2: bytes, data: bytes, *, zero_padding: bool = False) -> bytes:
    """ISO 9797-1 MAC algorithm 3: padding method 2, or method 1 (zeros, as ANSI X9.19 pads)."""
    if zero_padding:
        padded = data + bytes(-len(data) % BLOCK) if data else bytes(BLOCK)
    else:
        padded = data + b"\x80" + bytes((BLOCK - (len(data) + 1) % BLOCK) % BLOCK)
    des = _cipher_modules()[0]
    state: bytes = des.new(k1, des.MODE_CBC, iv=ZERO_IV).encrypt(padded)[-BLOCK:]
    state = des.new(k2, des.MODE_ECB).decrypt(state)
    mac: bytes = des.new(k1, des.MODE_ECB).encrypt(state)
    return mac
