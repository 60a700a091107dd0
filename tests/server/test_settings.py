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


NUMERIC = [name for name, (kind, _, _) in SETTINGS.items() if kind is int]
# JSON texts a client may send for a number (Python's json reads NaN/Infinity; 1e999 is infinity)
NON_NUMBERS = {"1e999": float("inf"), "-1e999": float("-inf"), "NaN": float("nan"), "1e300": 1e300,
               "10**400": 10**400, "-10**400": -(10**400)}


@pytest.mark.parametrize("text", list(NON_NUMBERS))
@pytest.mark.parametrize("name", NUMERIC)
def test_numbers_out_of_any_range_are_problems_not_crashes(name, text):
    value, problem = validate(name, NON_NUMBERS[text])
    assert value is None and problem.startswith(f"mole.{name} must")
    s = Settings()
    before = s[name]
    changed, problems = s.update({name: NON_NUMBERS[text]})
    assert changed == set() and len(problems) == 1 and f"keeping {before!r}" in problems[0]
    assert s[name] == before


def test_settings_sent_by_the_editor_are_known_even_when_they_equal_the_default():
    s = Settings()
    assert s.sent == set()
    s.update({"device": "auto", "packRevision": "main", "maxNewTokens": "bad"})
    assert s.sent == {"device", "packRevision"}  # a bad value was not taken
    s.update({"device": None})  # unset: the default, as if never sent
    assert s.sent == {"packRevision"}


def test_numeric_settings_over_a_real_server(tmp_path):
    """didChangeConfiguration with numbers no setting takes: one "invalid setting ... (keeping N)" message
    each, never "Error in server", and the server answers on."""
    from lsp_wire import Wire

    wire = Wire(tmp_path, "--no-preload", "--base-model", "no-such-model")
    try:
        wire.initialize()
        for name in NUMERIC:
            for text in ("1e999", "-1e999", "NaN", "1e300", "1" + "0" * 400):
                start = len(wire.shown())
                body = '{"jsonrpc": "2.0", "method": "workspace/didChangeConfiguration", "params": {"settings": '
                wire.send_raw(_frame(f'{body}{{"mole": {{"{name}": {text}}}}}}}}}'))
                assert "result" in wire.status()
                said = wire.shown()[start:]
                assert len(said) == 1 and f"invalid setting: mole.{name} must" in said[0], (name, text, said)
                assert f"(keeping {SETTINGS[name][1]})" in said[0]
        assert not [m for m in wire.shown() if "Error in server" in m]
    finally:
        assert wire.close() == 0


def _frame(body: str) -> bytes:
    data = body.encode()
    return b"Content-Length: %d\r\n\r\n" % len(data) + data


def test_editor_settings_win_over_the_command_line_even_at_their_default(monkeypatch):
    from mole_lsp.server.app import create_server
    from mole_lsp.server.base import Options

    monkeypatch.delenv("MOLE_BASE_MODEL", raising=False)
    cli = Options(base_model="cli-base", pack_repo="cli/packs", revision="v1", cache_dir="/cli-cache",
                  device="cpu", preload=False)
    server = create_server(cli)
    cfg = server.host.config()  # nothing sent yet: the command line
    assert (cfg["base_model"], cfg["pack_repo"], cfg["revision"], cfg["cache_dir"], cfg["device"]) == (
        "cli-base", "cli/packs", "v1", "/cli-cache", "cpu")
    server.settings.update({"device": "auto", "packRevision": "main"})  # the defaults, set on purpose
    cfg = server.host.config()
    assert (cfg["device"], cfg["revision"]) == ("auto", "main")
    # An empty path setting names nothing: the command line's value stays.
    server.settings.update({"baseModel": "", "packRepo": "", "cacheDir": ""})
    cfg = server.host.config()
    assert (cfg["base_model"], cfg["pack_repo"], cfg["cache_dir"]) == ("cli-base", "cli/packs", "/cli-cache")
    server.settings.update({"baseModel": "editor-base", "device": None})  # device unset again: CLI
    cfg = server.host.config()
    assert (cfg["base_model"], cfg["device"]) == ("editor-base", "cpu")
