"""Validated YAML configuration: every error names the file, the key and what is expected.

`load_config(path)` returns the file's top-level mapping as a `ConfigNode`; its accessors read one
key each, check its type (and its allowed values or lower bound) and raise `ConfigError` with a
message such as `configs/scanners/x.yml: filters[1].op: unknown value 'gte'; allowed: gt, lt`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    """A configuration file that cannot be used, with the file, the key and the reason."""


class _Missing:
    def __repr__(self) -> str:
        return "<required>"


REQUIRED: Any = _Missing()

KIND_NAMES: dict[type, str] = {
    str: "a string",
    int: "an integer",
    float: "a number",
    bool: "true or false",
    list: "a list",
    dict: "a mapping",
}
# PyYAML reads `1e6` (no dot) as a string; numbers written that way are still numbers.
_FLOAT_TEXT = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")


def _coerce(value: Any, kind: type) -> tuple[bool, Any]:
    """(True, value as `kind`) when the YAML value is of that kind, else (False, None)."""
    if kind is float:
        if isinstance(value, str) and _FLOAT_TEXT.match(value.strip()):
            return True, float(value)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return True, float(value)
        return False, None
    if kind is int and isinstance(value, bool):
        return False, None
    return isinstance(value, kind), value


def describe(value: Any) -> str:
    """How a wrong value is shown in an error: its YAML type and the value."""
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return f"a boolean ({str(value).lower()})"  # YAML reads yes/no/on/off as booleans too
    kind = next((name for k, name in KIND_NAMES.items() if type(value) is k), type(value).__name__)
    return f"{kind} ({value!r})"


@dataclass(frozen=True)
class ConfigNode:
    """One mapping inside a config file, and where it sits (`where` is the dotted key path)."""

    path: Path
    where: str
    data: Mapping[str, Any]

    def key_path(self, key: str) -> str:
        return f"{self.where}.{key}" if self.where else key

    def error(self, key: str | None, message: str) -> ConfigError:
        location = self.key_path(key) if key is not None else self.where
        prefix = f"{self.path}: {location}: " if location else f"{self.path}: "
        return ConfigError(prefix + message)

    def has(self, key: str) -> bool:
        return self.data.get(key) is not None

    def only_keys(self, allowed: Iterable[str]) -> None:
        """Reject keys this mapping does not know (most often a typo)."""
        allowed = list(allowed)
        for key in self.data:
            if key not in allowed:
                raise self.error(str(key), f"unknown key; allowed keys: {', '.join(allowed)}")

    def value(
        self, key: str, kind: type, *, default: Any = REQUIRED, at_least: float | None = None
    ) -> Any:
        """The value of `key`, checked to be of `kind` (and >= `at_least` for numbers)."""
        raw = self.data.get(key)
        if raw is None:
            if default is REQUIRED:
                raise self.error(key, f"missing; expected {KIND_NAMES[kind]}")
            return default
        return self.check(key, raw, kind, at_least=at_least)

    def check(self, key: str, raw: Any, kind: type, *, at_least: float | None = None) -> Any:
        """Check one value found under `key` (also used for list items, `key` = `name[i]`)."""
        ok, value = _coerce(raw, kind)
        if not ok:
            raise self.error(key, f"expected {KIND_NAMES[kind]}, got {describe(raw)}")
        if at_least is not None and value < at_least:
            raise self.error(key, f"expected a value >= {at_least:g}, got {value!r}")
        return value

    def choice(self, key: str, allowed: Sequence[str], *, default: Any = REQUIRED) -> str:
        """A string that must be one of `allowed`."""
        value = self.value(key, str, default=default)
        if value not in allowed:
            raise self.error(key, f"unknown value {value!r}; allowed: {', '.join(allowed)}")
        return value

    def items(self, key: str, kind: type, *, default: Any = REQUIRED) -> list[Any]:
        """A list whose items are all of `kind`."""
        values = self.value(key, list, default=default)
        return [self.check(f"{key}[{i}]", item, kind) for i, item in enumerate(values)]

    def child(self, key: str, *, default: Any = REQUIRED) -> ConfigNode:
        """The mapping under `key` (an empty one when absent and `default` is `{}`)."""
        return ConfigNode(self.path, self.key_path(key), self.value(key, dict, default=default))

    def children(self, key: str, *, default: Any = REQUIRED) -> list[ConfigNode]:
        """The mappings of a list of mappings under `key`."""
        return [
            ConfigNode(self.path, self.key_path(f"{key}[{i}]"), item)
            for i, item in enumerate(self.items(key, dict, default=default))
        ]


def load_config(path: Path) -> ConfigNode:
    """Read a YAML file whose top level is a mapping."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the config file: {exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{path}: not valid YAML{where}: {problem}") from None
    except ValueError as exc:  # e.g. an impossible date such as 2024-13-01, parsed as a date
        raise ConfigError(f"{path}: a value cannot be read: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(
            f"{path}: expected a mapping of keys at the top level, got {describe(data)}"
        )
    return ConfigNode(path, "", data)
