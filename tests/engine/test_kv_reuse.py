"""KV cache reuse across requests (engine/kvcache.py) on the tiny random Llama with real packs: every
logit computed with reuse equals the one of an engine that prefills everything again (fp32), reuse
really happens, and it stops where tokens, routes or the weights behind a route changed."""

from __future__ import annotations

import pytest
import torch
from lsp_fixtures import load_tiny_base, tiny_world  # noqa: F401

from mole_lsp.engine.engine import Engine
from mole_lsp.engine.kvcache import KVStore
from mole_lsp.engine.sources import FolderPacks

DOC = "".join(f"def f{i}(x):\n    return x + {i}\n\n" for i in range(6))
OTHER = "fn main() {\n    let xs = vec![1, 2, 3];\n    println!(\"{}\", xs.len());\n}\n"
TOL = 1e-5


def _engine(world, kv: bool) -> tuple[Engine, list[torch.Tensor]]:
    model, tok = load_tiny_base(world)
    engine = Engine(model, tok, packs=FolderPacks(world.packs_dir))
    if not kv:
        engine.kv.max_bytes = 0
    seen: list[torch.Tensor] = []
    inner = engine.decoder.forward

    def recording(ids, labels, past):
        logits, past = inner(ids, labels, past)
        seen.append(logits.clone())
        return logits, past

    engine.decoder.forward = recording  # type: ignore[method-assign]
    return engine, seen


class Pair:
    """The same requests on an engine with KV reuse and on one without; every logit compared."""

    def __init__(self, world) -> None:
        self.warm, self.warm_logits = _engine(world, kv=True)
        self.cold, self.cold_logits = _engine(world, kv=False)

    def __call__(self, method: str, *args, **kwargs):
        self.warm_logits.clear()
        self.cold_logits.clear()
        r = getattr(self.warm, method)(*args, **kwargs)
        c = getattr(self.cold, method)(*args, **kwargs)
        assert c.reused_tokens == 0
        assert r.text == c.text and r.routes == c.routes
        assert len(self.warm_logits) == len(self.cold_logits)
        for w, k in zip(self.warm_logits, self.cold_logits, strict=True):
            assert torch.allclose(w, k, atol=TOL, rtol=0), float((w - k).abs().max())
        return r


@pytest.fixture
def pair(tiny_world):  # noqa: F811
    return Pair(tiny_world)


def test_completion_reuse_is_exact_after_edits_anywhere(pair):
    def complete(text: str, key: str = "a.py"):
        return pair("complete", text, "", "python", max_new_tokens=6, context_tokens=128, cache_key=key)

    assert complete(DOC).reused_tokens == 0
    typed = complete(DOC + "de")
    assert typed.reused_tokens > typed.prompt_tokens - 4  # only the edited tail is prefilled again
    assert complete(DOC + "def").reused_tokens > 0
    mid = len(DOC) // 2
    middle = complete(DOC[:mid] + "# note\n" + DOC[mid:] + "def")
    assert 0 < middle.reused_tokens < middle.prompt_tokens // 2 + 8
    assert complete("import os\n" + DOC + "def").reused_tokens <= 1  # an edit at the start: (almost) nothing
    assert complete(OTHER, key="b.py").reused_tokens == 0  # another document
    assert complete("import os\n" + DOC + "def g").reused_tokens > 0  # and back


def test_generated_tokens_are_reused_when_the_suggestion_is_accepted(pair):
    first = pair("complete", DOC, "", "python", max_new_tokens=6, context_tokens=128, cache_key="a.py")
    accepted = pair("complete", DOC + first.text, "", "python", max_new_tokens=6, context_tokens=128,
                    cache_key="a.py")
    assert accepted.reused_tokens > first.prompt_tokens


def test_manual_and_automated_modes_are_exact(pair):
    prompt = "Translate:\n```python\ndef f(x):\n    return x\n```\nNow in ```rust\n"
    pair("generate", prompt, mode="manual", language="rust", max_new_tokens=5)
    r = pair("generate", prompt + "fn", mode="manual", language="rust", max_new_tokens=5)
    assert r.reused_tokens > 0
    pair("generate", prompt, mode="automated", max_new_tokens=5)
    r = pair("generate", prompt + "fn f", mode="automated", max_new_tokens=5)
    assert r.reused_tokens > 0


def test_loading_or_removing_an_expert_invalidates(pair):
    def complete(text: str, lang: str = "python"):
        return pair("complete", text, "", lang, max_new_tokens=4, context_tokens=128, cache_key=lang)

    complete(DOC)
    assert complete(DOC + "d").reused_tokens > 0
    epoch = pair.warm.experts.epoch
    complete(OTHER, "rust")  # loads the Rust expert: new weights epoch
    assert pair.warm.experts.epoch > epoch
    assert complete(DOC + "de").reused_tokens == 0
    for e in (pair.warm, pair.cold):
        e.unload_expert("python")
    assert complete(DOC + "def").reused_tokens == 0  # loaded again: computed again


def test_the_store_is_bounded_and_checks_stamps(tiny_world):  # noqa: F811
    engine, _ = _engine(tiny_world, kv=True)
    engine.complete(DOC, "", "python", max_new_tokens=2, context_tokens=128, cache_key="a")
    one = engine.kv.nbytes
    assert one > 0 and len(engine.kv) == 1
    engine.kv.max_bytes = one  # room for one entry of DOC (OTHER is shorter)
    engine.complete(OTHER, "", "python", max_new_tokens=2, context_tokens=128, cache_key="b")
    assert len(engine.kv) == 1 and engine.kv.nbytes <= engine.kv.max_bytes  # the older entry went
    store = KVStore()
    assert store.take("a", [1, 2, 3], ["x"] * 3, 0) == (0, None)
    engine.kv.max_bytes = 1 << 30
    r = engine.complete(OTHER + "x", "", "python", max_new_tokens=2, context_tokens=128, cache_key="b")
    assert r.reused_tokens > 0
    engine.experts.epoch += 1  # what a weight change does
    r = engine.complete(OTHER + "xy", "", "python", max_new_tokens=2, context_tokens=128, cache_key="b")
    assert r.reused_tokens == 0


def test_switching_the_merged_language_back_and_forth_is_exact(pair):
    def complete(text: str, lang: str):
        return pair("complete", text, "", lang, max_new_tokens=4, context_tokens=128, cache_key=lang)

    complete(DOC, "python")
    complete(OTHER, "rust")  # both experts loaded from here on: the epoch stays
    complete(DOC + "d", "python")
    epoch = pair.warm.experts.epoch
    assert complete(OTHER + "x", "rust").reused_tokens > 0  # computed while Rust was merged, as now
    assert complete(DOC + "de", "python").reused_tokens > 0
    assert pair.warm.experts.epoch == epoch
