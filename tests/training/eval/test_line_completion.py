"""The line-completion benchmark (training/eval/line_completion.py) and the engine's single-line switch."""

from __future__ import annotations

from lsp_fixtures import load_tiny_base, tiny_world  # noqa: F401


def _tiny_engine(world):
    from mole_lsp.engine.engine import Engine

    model, tok = load_tiny_base(world)
    return Engine(model, tok, packs=None, auto_install=False)


def test_complete_single_line_stops_at_the_end_of_the_line(tiny_world) -> None:  # noqa: F811
    """single_line=True: the first line of what the default rule writes (greedy), and nothing after it."""
    engine = _tiny_engine(tiny_world)
    prefixes = ["if n < 2:\n", "a\n", "x = ", "def f(", "    return "]
    multi = 0
    for prefix in prefixes:
        free = engine.complete(prefix, "\n", "python", max_new_tokens=40)
        one = engine.complete(prefix, "\n", "python", max_new_tokens=40, single_line=True)
        assert "\n" not in one.text
        assert one.text == free.text.split("\n", 1)[0] or free.stop_reason == "max_tokens"
        if "\n" in free.text.strip("\n"):
            multi += 1
            assert one.stop_reason == "end_of_line" and one.new_tokens < free.new_tokens
    assert multi, "no prefix made the tiny model write several lines: the check proves nothing"
