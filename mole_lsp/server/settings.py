"""Typed validation of the server settings declared in :data:`mole_lsp.server.protocol.SETTINGS`.

:func:`Settings.update` takes a payload from ``initializationOptions`` or
``workspace/didChangeConfiguration`` (``{"settings": {"mole": {...}}}``, ``{"mole": {...}}`` or the
object itself), keeps every valid value and returns one problem string per invalid one; the previous
value of an invalid setting stays in force.
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Mapping
from typing import Any

from mole_lsp.server.protocol import BACKEND_PATTERN, DEVICE_PATTERN, SETTINGS

# Ranges and choices are part of each setting's contract (the help texts in protocol.py say the same).
RANGES: dict[str, tuple[int, int]] = {
    "maxNewTokens": (1, 1024),
    "explainMaxNewTokens": (1, 4096),
    "contextTokens": (64, 16384),
    "debounceMs": (0, 5000),
    "kvCacheMB": (0, 65536),
    "multiLineTimeMs": (0, 60000),
    "idleUnloadMinutes": (0, 10080),
}
# String settings restricted by a regular expression: (pattern, what the message says is accepted).
PATTERNS: dict[str, tuple[re.Pattern[str], str]] = {
    "device": (re.compile(DEVICE_PATTERN), "auto, cpu, cuda, cuda:N (N = 0, 1, ...) or mps"),
    "backend": (re.compile(BACKEND_PATTERN), "auto, torch, llamacpp or openai"),
}
# Settings whose change needs the model (or the pack store) to be set up again.
RELOAD = frozenset({"baseModel", "packRepo", "packRevision", "cacheDir", "device", "backend", "endpoint", "apiKey",
                    "remoteModels"})


def _describe(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def validate(name: str, value: Any) -> tuple[Any, str | None]:
    """``(clean value, None)`` or ``(None, problem)`` for one setting."""
    if name not in SETTINGS:
        return None, f"mole.{name} is not a known setting (known: {', '.join(SETTINGS)})"
    kind = SETTINGS[name][0]
    key = f"mole.{name}"
    if kind is bool:
        if not isinstance(value, bool):
            return None, f"{key} must be true or false, not {_describe(value)}"
        return value, None
    if kind is int:
        # NaN and ±infinity (JSON 1e999) are floats that int() refuses: no number of tokens either.
        if (isinstance(value, bool) or not isinstance(value, int | float)
                or (isinstance(value, float) and (not math.isfinite(value) or not value.is_integer()))):
            return None, f"{key} must be a whole number, not {_describe(value)}"
        lo, hi = RANGES.get(name, (-(2**31), 2**31))
        if not lo <= value <= hi:
            return None, f"{key} must lie between {lo} and {hi}; got {value}"
        return int(value), None
    if kind is str:
        if not isinstance(value, str):
            return None, f"{key} must be a string, not {_describe(value)}"
        value = value.strip()
        if name in PATTERNS:
            pattern, accepted = PATTERNS[name]
            if not pattern.fullmatch(value):
                return None, f"{key} must be {accepted}; got {_describe(value)}"
        if name == "device" and value.startswith("cuda:"):
            value = f"cuda:{int(value[5:])}"  # "cuda:01" and "cuda:1" are the same device
        return value, None
    if kind is dict and name == "remoteModels":  # route -> served model name
        if not isinstance(value, Mapping) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
            return None, f"{key} must map languages to model names, not {_describe(value)}"
        return dict(value), None
    if kind is dict:  # "enable": languageId -> bool
        if not isinstance(value, Mapping) or not all(
            isinstance(k, str) and isinstance(v, bool) for k, v in value.items()
        ):
            return None, f"{key} must map languageIds to true/false, not {_describe(value)}"
        return dict(value), None
    return None, f"{key}: unsupported setting type"  # pragma: no cover - protocol table is fixed


def unwrap(payload: Any) -> Any:
    """The settings object inside a didChangeConfiguration/initializationOptions payload."""
    if isinstance(payload, Mapping):
        if "settings" in payload and isinstance(payload["settings"], Mapping) and not set(payload) - {"settings"}:
            payload = payload["settings"]
        if "mole" in payload and isinstance(payload["mole"], Mapping) and "mole" not in SETTINGS:
            payload = payload["mole"]
    return payload


class Settings:
    """Current values of every setting (defaults from protocol.SETTINGS)."""

    def __init__(self) -> None:
        self.values: dict[str, Any] = {name: copy.deepcopy(spec[1]) for name, spec in SETTINGS.items()}
        # Names whose value the editor set (even to the default): they win over command-line options.
        self.sent: set[str] = set()

    def __getitem__(self, name: str) -> Any:
        return self.values[name]

    def __getattr__(self, name: str) -> Any:
        try:
            return self.__dict__["values"][name]
        except KeyError:
            raise AttributeError(name) from None

    def update(self, payload: Any) -> tuple[set[str], list[str]]:
        """Apply valid values; return (names that changed, problems)."""
        payload = unwrap(payload)
        if payload is None:
            return set(), []
        if not isinstance(payload, Mapping):
            return set(), [f"mole settings must be an object, not {_describe(payload)}"]
        changed: set[str] = set()
        problems: list[str] = []
        for name, raw in payload.items():
            sent = raw is not None
            if raw is None:  # an unset value in the client means "default"
                raw = copy.deepcopy(SETTINGS[name][1]) if name in SETTINGS else None
                if raw is None:
                    continue
            value, problem = validate(name, raw)
            if problem is not None:
                problems.append(f"{problem} (keeping {_describe(self.values.get(name))})"
                                if name in SETTINGS else problem)
                continue
            if sent:
                self.sent.add(name)
            else:
                self.sent.discard(name)
            if self.values[name] != value:
                self.values[name] = value
                changed.add(name)
        return changed, problems

    def enabled_for(self, language_id: str | None) -> bool:
        enable = self.values["enable"]
        if language_id and language_id in enable:
            return bool(enable[language_id])
        return bool(enable.get("*", True))
