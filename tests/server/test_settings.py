"""Settings validation against protocol.SETTINGS: bad values are reported and the old value stays."""

from __future__ import annotations

import re

import pytest
import torch

from mole_lsp.engine.device import pick_device
from mole_lsp.server.protocol import SETTINGS
from mole_lsp.server.settings import PATTERNS, Settings, unwrap, validate


def test_defaults_come_from_the_protocol_table():
    s = Settings()
    for name, (_, default, _) in SETTINGS.items():
        assert s[name] == default
    assert s.maxNewTokens == 64 and s.enabled_for("python")


def test_payload_shapes_are_unwrapped():
    inner = {"maxNewTokens": 8}
    assert unwrap({"settings": {"mole": inner}}) == inner
    assert unwrap({"mole": inner}) == inner
    assert unwrap(inner) == inner


def test_valid_update_reports_changes():
    s = Settings()
    changed, problems = s.update({"settings": {"mole": {"maxNewTokens": 8, "device": " cpu ", "offline": False}}})
    assert problems == [] and changed == {"maxNewTokens", "device"}
    assert s.maxNewTokens == 8 and s.device == "cpu"


def test_bad_values_keep_the_previous_value():
    s = Settings()
    s.update({"debounceMs": 10})
    changed, problems = s.update({"debounceMs": -1, "maxNewTokens": "many", "device": "tpu",
                                  "offline": "yes", "enable": {"python": 1}, "bogus": 1, "contextTokens": 128})
    assert changed == {"contextTokens"}
    assert len(problems) == 6
    assert s.debounceMs == 10 and s.maxNewTokens == 64 and s.device == "auto" and s.offline is False
    assert any("mole.debounceMs must lie between 0 and 5000" in p and "keeping 10" in p for p in problems)
    assert any("mole.bogus is not a known setting" in p for p in problems)


@pytest.mark.parametrize("raw,clean", [
    ("auto", "auto"), ("cpu", "cpu"), ("cuda", "cuda"), ("mps", "mps"), ("cuda:0", "cuda:0"), ("cuda:3", "cuda:3"),
    (" cuda:12 ", "cuda:12"), ("cuda:01", "cuda:1"),
])
def test_device_values(raw, clean):
    assert validate("device", raw) == (clean, None)
    s = Settings()
    assert s.update({"device": raw}) == ({"device"} if clean != "auto" else set(), [])
    assert s.device == clean
    # Every accepted value reaches the engine unchanged ("auto" is resolved there) and names a torch device.
    if clean != "auto":
        assert pick_device(clean) == clean
        device = torch.device(pick_device(clean))
        assert device.type == clean.split(":")[0]
        assert device.index == (int(clean.split(":")[1]) if ":" in clean else None)


@pytest.mark.parametrize("raw", ["tpu", "gpu", "cuda:", "cuda:-1", "cuda:x", "cuda:0:1", "CUDA", "cuda 0", "mps:0",
                                 "cpu,cuda", "", 0, None])
def test_device_rejects_other_values(raw):
    value, problem = validate("device", raw)
    assert value is None and problem and problem.startswith("mole.device must be")
    s = Settings()
    s.update({"device": "cuda:1"})
    changed, problems = s.update({"device": raw})
    if raw is None:  # an unset value means the default
        assert (changed, problems, s.device) == ({"device"}, [], "auto")
    else:
        assert changed == set() and len(problems) == 1 and "keeping 'cuda:1'" in problems[0] and s.device == "cuda:1"


def test_device_pattern_is_the_protocol_one():
    from mole_lsp.server.protocol import DEVICE_PATTERN

    assert PATTERNS["device"][0].pattern == DEVICE_PATTERN
    assert "cuda:N" in SETTINGS["device"][2]
    # The pattern itself (the extension's package.json uses it as a JSON-schema pattern) and the validator
    # accept and refuse the same concrete values.
    for value in ("auto", "cpu", "cuda", "cuda:0", "cuda:1", "cuda:12", "mps"):
        assert re.search(DEVICE_PATTERN, value) and PATTERNS["device"][0].fullmatch(value), value
        assert validate("device", value) == (value, None)
    for value in ("gpu", "cuda:", "cuda:x", "", "tpu", "cuda:-1", "cuda:0:1", "CPU", "mps:0", "cuda 1", "auto "):
        assert re.search(DEVICE_PATTERN, value) is None and PATTERNS["device"][0].fullmatch(value) is None, value
        if value.strip() == value:  # the validator strips surrounding blanks first
            assert validate("device", value)[0] is None, value


def test_integers_reject_bools_and_fractions():
    assert validate("maxNewTokens", True)[1]
    assert validate("maxNewTokens", 2.5)[1]
    assert validate("maxNewTokens", 2.0) == (2, None)


def test_enable_map():
    s = Settings()
    s.update({"enable": {"*": False, "python": True}})
    assert s.enabled_for("python") and not s.enabled_for("rust") and not s.enabled_for(None)


def test_non_object_payload_is_a_problem():
    assert Settings().update([1, 2])[1]
    assert Settings().update(None) == (set(), [])
