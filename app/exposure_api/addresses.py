"""Bitcoin mainnet address codecs: base58check (P2PKH, P2SH) and bech32/bech32m (BIP 173/350).

Used to validate request input and to generate the synthetic seed data. Pure Python, no
dependencies; every decode checks the checksum, the version byte and the payload length.
"""

from __future__ import annotations

import hashlib

B58_ALPHABET = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_B58_INDEX = {c: i for i, c in enumerate(B58_ALPHABET)}
P2PKH_VERSION = 0x00
P2SH_VERSION = 0x05

BECH32_CHARSET = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"
_BECH32_INDEX = {c: i for i, c in enumerate(BECH32_CHARSET)}
_BECH32_CONST = 1
_BECH32M_CONST = 0x2BC830A3
HRP = "bc"

MAX_ADDRESS_LENGTH = 90  # BIP 173 upper bound; base58 addresses are at most 35


def _dsha256(data: bytes) -> bytes:
    return hashlib.sha256(hashlib.sha256(data).digest()).digest()


# ---- base58check -------------------------------------------------------------------------
def b58check_encode(version: int, payload: bytes) -> str:
    raw = bytes([version]) + payload
    raw += _dsha256(raw)[:4]
    n = int.from_bytes(raw, "big")
    out = []
    while n:
        n, rem = divmod(n, 58)
        out.append(B58_ALPHABET[rem])
    pad = len(raw) - len(raw.lstrip(b"\0"))
    return "1" * pad + "".join(reversed(out))


def b58check_decode(text: str) -> tuple[int, bytes] | None:
    """(version, payload) or None when the text is not valid base58check of 25 bytes."""
    if not 25 <= len(text) <= 35:
        return None
    n = 0
    for c in text:
        i = _B58_INDEX.get(c)
        if i is None:
            return None
        n = n * 58 + i
    pad = len(text) - len(text.lstrip("1"))
    try:
        body = n.to_bytes((n.bit_length() + 7) // 8, "big") if n else b""
    except OverflowError:  # pragma: no cover - cannot happen for non-negative n
        return None
    raw = b"\0" * pad + body
    if len(raw) != 25:
        return None
    if _dsha256(raw[:-4])[:4] != raw[-4:]:
        return None
    return raw[0], raw[1:-4]


# ---- bech32 / bech32m ----------------------------------------------------------------------
def _polymod(values: list[int]) -> int:
    gen = (0x3B6A57B2, 0x26508E6D, 0x1EA119FA, 0x3D4233DD, 0x2A1462B3)
    chk = 1
    for v in values:
        top = chk >> 25
        chk = (chk & 0x1FFFFFF) << 5 ^ v
        for i in range(5):
            if (top >> i) & 1:
                chk ^= gen[i]
    return chk


def _hrp_expand(hrp: str) -> list[int]:
    return [ord(c) >> 5 for c in hrp] + [0] + [ord(c) & 31 for c in hrp]


def _convertbits(data, frombits: int, tobits: int, pad: bool) -> list[int] | None:
    acc = 0
    bits = 0
    ret = []
    maxv = (1 << tobits) - 1
    for value in data:
        acc = (acc << frombits) | value
        bits += frombits
        while bits >= tobits:
            bits -= tobits
            ret.append((acc >> bits) & maxv)
    if pad:
        if bits:
            ret.append((acc << (tobits - bits)) & maxv)
    elif bits >= frombits or ((acc << (tobits - bits)) & maxv):
        return None
    return ret


def segwit_encode(witver: int, program: bytes, hrp: str = HRP) -> str:
    const = _BECH32_CONST if witver == 0 else _BECH32M_CONST
    data = [witver] + _convertbits(program, 8, 5, True)
    polymod = _polymod(_hrp_expand(hrp) + data + [0] * 6) ^ const
    checksum = [(polymod >> 5 * (5 - i)) & 31 for i in range(6)]
    return hrp + "1" + "".join(BECH32_CHARSET[d] for d in data + checksum)


def segwit_decode(text: str, hrp: str = HRP) -> tuple[int, bytes] | None:
    """(witness version, program) or None when not a valid mainnet segwit address."""
    if len(text) > MAX_ADDRESS_LENGTH or len(text) < 14:
        return None
    if text.lower() != text and text.upper() != text:
        return None  # mixed case is invalid in bech32
    text = text.lower()
    pos = text.rfind("1")
    if text[:pos] != hrp or pos + 7 > len(text):
        return None
    data = []
    for c in text[pos + 1:]:
        i = _BECH32_INDEX.get(c)
        if i is None:
            return None
        data.append(i)
    const = _polymod(_hrp_expand(hrp) + data)
    if const not in (_BECH32_CONST, _BECH32M_CONST):
        return None
    witver = data[0]
    if witver > 16:
        return None
    program = _convertbits(data[1:-6], 5, 8, False)
    if program is None or not 2 <= len(program) <= 40:
        return None
    if witver == 0:
        if const != _BECH32_CONST or len(program) not in (20, 32):
            return None
    elif const != _BECH32M_CONST:
        return None
    return witver, bytes(program)


# ---- public API --------------------------------------------------------------------------
def normalize_address(text: str) -> str | None:
    """The canonical form of a valid mainnet address (bech32 lower-cased), or None."""
    if not text or len(text) > MAX_ADDRESS_LENGTH or not text.isascii():
        return None
    if text[:3].lower() == "bc1":
        return text.lower() if segwit_decode(text) else None
    decoded = b58check_decode(text)
    if decoded is None or decoded[0] not in (P2PKH_VERSION, P2SH_VERSION):
        return None
    return text


def is_valid_address(text: str) -> bool:
    return normalize_address(text) is not None
