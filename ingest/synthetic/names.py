"""Symbol names: one shared, seed-free sequence of pronounceable base assets.

A base asset is two consonant-vowel syllables and an optional final consonant ("KOLU", "BEZAT").
Each preset takes its own range of the sequence (`name_offset`), so presets never share a name.
"""

from __future__ import annotations

_CONSONANTS = "BDFGKLMNPRSTVZ"
_SYLLABLES = [c + v for c in _CONSONANTS for v in "AEIOU"]
_ENDINGS = ["", *_CONSONANTS]
NAME_SPACE = len(_SYLLABLES) ** 2 * len(_ENDINGS)
# A stride coprime with NAME_SPACE walks every name once; neighbours in the sequence look unalike.
_NAME_STRIDE = 7919
_NAME_START = 4321
BTC_QUOTE_EVERY = 6  # one name in six is quoted in BTC, the rest in USDT


def base_asset(name_index: int) -> str:
    code = (name_index * _NAME_STRIDE + _NAME_START) % NAME_SPACE
    first, rest = divmod(code, len(_SYLLABLES) * len(_ENDINGS))
    second, ending = divmod(rest, len(_ENDINGS))
    return _SYLLABLES[first] + _SYLLABLES[second] + _ENDINGS[ending]


def quote_asset(name_index: int) -> str:
    return "BTC" if name_index % BTC_QUOTE_EVERY == BTC_QUOTE_EVERY - 1 else "USDT"


def symbol_name(name_index: int) -> str:
    return base_asset(name_index) + quote_asset(name_index)
