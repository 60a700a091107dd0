"""The llama.cpp backend (engine/backends/llamacpp.py) against the torch reference on a tiny random
Llama written as GGUF, with real packs (a core with residual, shared and NL adapters, two experts).

First the floor: llama.cpp and torch on the bare base (llama.cpp's Q8_0 kernels quantize activations,
torch runs the dequantized weights in fp32). Then every route (completion in each language, NL, an
automated prompt mixing both) stays at that floor and greedy tokens agree; KV trim/reuse in the one
llama context gives the logits of a cold run. Skipped without llama-cpp-python (the ``fast`` extra)."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

pytest.importorskip("llama_cpp")

from test_base_model import tiny_model, write_tiny_gguf  # noqa: E402

from mole_lsp.core.config import MoleConfig  # noqa: E402
from mole_lsp.core.model import attach_mole  # noqa: E402
from mole_lsp.engine.backends import choose_backend  # noqa: E402
from mole_lsp.engine.backends.lora_files import adapter_file, part_factors  # noqa: E402
from mole_lsp.engine.base_model import load_base_model, resolve_base_model  # noqa: E402
from mole_lsp.engine.engine import Engine  # noqa: E402
from mole_lsp.engine.sources import FolderPacks  # noqa: E402
from mole_lsp.packs.format import export_packs  # noqa: E402

DOC = "".join(f"def f{i}(x):\n    return x + {i}\n\n" for i in range(4))
RUST = "fn main() {\n    let xs = vec![1, 2, 3];\n    println!(\"{}\", xs.len());\n}\n"
MIXED = "the code:\n```python\ndef add(a, b):\n    return a + b\n```\nthe"
FLOOR_MAX = 0.05  # what the Q8_0 activation rounding may cost on this tiny model (measured ~1e-2)


class World:
    def __init__(self, root: Path) -> None:
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("MOLE_CACHE_DIR", str(root / "cache"))
            self.cache = root / "cache"
            gguf = write_tiny_gguf(root / "tiny.Q8_0.gguf", tiny_model(seed=5))
            self.info = resolve_base_model(gguf)
            model, _ = load_base_model(self.info)
            mole = attach_mole(copy.deepcopy(model), MoleConfig(r_shared=4, r_expert=2,
                                                                languages=("python", "rust")))
            g = torch.Generator().manual_seed(1)
            with torch.no_grad():
                for p in mole.trainable_parameters():
                    p.add_(torch.randn(p.shape, generator=g) * 0.2)
            self.packs = root / "packs"
            export_packs(mole, self.packs, self.info.identity())

    def engine(self, backend: str, packs: bool = True, kv: bool = True) -> Engine:
        model, tok = load_base_model(self.info)
        e = Engine(model, tok, packs=FolderPacks(self.packs) if packs else None, base=self.info.identity(),
                   info=self.info, backend=backend, auto_install=False)
        assert e.backend.name == backend, e.backend_reason
        if backend == "llamacpp":
            e.backend.merge = False  # routes as LoRA adapters; merged routes: _merged_engine
        if not kv:
            e.kv.max_bytes = 0
        e.seen, e.calls = [], []
        inner = e.decoder.forward

        def recording(ids, labels, past):
            logits, past = inner(ids, labels, past)
            e.seen.append(logits.clone())
            e.calls.append((list(ids), list(labels), past is None))
            return logits, past

        e.decoder.forward = recording
        return e


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    return World(tmp_path_factory.mktemp("llamacpp"))


@pytest.fixture(autouse=True)
def _cache(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MOLE_CACHE_DIR", str(world.cache))


def _diff(a: Engine, b: Engine) -> float:
    n = min(len(a.seen), len(b.seen))
    assert n
    return max(float((x - y).abs().max()) for x, y in zip(a.seen[:n], b.seen[:n], strict=True))


def _run(engines, method: str, *args, **kw):
    out = []
    for e in engines:
        e.seen.clear()
        e.calls.clear()
        out.append(getattr(e, method)(*args, **kw))
    return out


def _replay(torch_engine: Engine, llama: Engine) -> tuple[float, int, int]:
    """Feed the torch run's forward calls (its greedy tokens) to the llama.cpp backend: the largest logit
    difference, and how many greedy picks agree among the positions where torch's top-2 margin exceeds
    twice that difference (a closer call is a tie at the floor)."""
    past, diffs, picks = None, [], []
    for (ids, labels, fresh), ref in zip(torch_engine.calls, torch_engine.seen, strict=True):
        logits, past = llama.backend.forward(ids, labels, None if fresh else past)
        diffs.append(float((logits - ref).abs().max()))
        top = torch.topk(ref, 2).values
        picks.append((float(top[0] - top[1]), int(logits.argmax()) == int(ref.argmax())))
    d = max(diffs)
    decisive = [same for margin, same in picks if margin > 2 * d]
    return d, sum(decisive), len(decisive)


@pytest.fixture(scope="module")
def floor(world: World) -> float:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MOLE_CACHE_DIR", str(world.cache))
        t, c = world.engine("torch", packs=False, kv=False), world.engine("llamacpp", packs=False)
        rt, rc = _run((t, c), "complete", DOC, "", "python", max_new_tokens=12, context_tokens=256)
        assert rt.routes == rc.routes == ["base"] * len(rt.routes)
        d, agree, n = _replay(t, c)
    assert agree == n
    return d


def test_bare_base_floor_is_small(floor: float) -> None:
    print(f"llama.cpp vs torch, bare base: max |logit diff| = {floor:.2e}")
    assert 0 <= floor < FLOOR_MAX


def test_routes_stay_at_the_floor_and_greedy_tokens_agree(world: World, floor: float) -> None:
    t, c = world.engine("torch", kv=False), world.engine("llamacpp")
    cases = [("complete", (DOC, "", "python"), {"context_tokens": 256}),
             ("complete", (RUST, "", "rust"), {"context_tokens": 256}),
             ("generate", ("Explain what a loop is.",), {"mode": "automated", "relabel": {"*": "nl"}}),
             ("generate", (MIXED,), {"mode": "automated"})]
    seen_routes: set[str] = set()
    for method, args, kw in cases:
        rt, rc = _run((t, c), method, *args, max_new_tokens=12, **kw)
        seen_routes.update(rt.routes)
        d, agree, n = _replay(t, c)
        print(f"{method} {kw.get('mode', kw.get('language', args[-1]))}: max |logit diff| = {d:.2e} "
              f"(floor {floor:.2e}), greedy agree {agree}/{n}")
        assert d <= 2 * floor, (method, args, d, floor)
        assert agree == n and n >= len(t.calls) // 2
    assert {"python", "rust", "nl"} <= seen_routes


def test_routes_differ_from_the_bare_base(world: World, floor: float) -> None:
    """The adapters really are applied: a routed engine is far from the bare one (well above the floor)."""
    c, bare = world.engine("llamacpp"), world.engine("llamacpp", packs=False)
    _run((c, bare), "complete", DOC, "", "python", max_new_tokens=1, context_tokens=256)
    assert _diff(c, bare) > 20 * max(floor, 1e-3)


def test_kv_trim_and_reuse_equal_a_cold_run(world: World) -> None:
    warm, cold = world.engine("llamacpp"), world.engine("llamacpp", kv=False)
    steps = [DOC, DOC + "de", DOC[: len(DOC) // 2] + "# x\n" + DOC[len(DOC) // 2:], DOC + "def g"]
    reused = []
    for text in steps:
        rw, rc = _run((warm, cold), "complete", text, "", "python", max_new_tokens=6, context_tokens=256)
        assert rc.reused_tokens == 0
        assert rw.text == rc.text and rw.routes == rc.routes
        reused.append(rw.reused_tokens)
        assert _diff(warm, cold) < 1e-3
    # NL then code on the same context: the routes differ, so only the equal prefix is kept.
    rw, rc = _run((warm, cold), "generate", DOC + "def", relabel={"*": "nl"}, max_new_tokens=4)
    assert _diff(warm, cold) < 1e-3
    assert reused[0] == 0 and reused[1] > reused[0] and 0 < reused[2] < reused[1] and reused[3] > 0


def test_adapter_files_are_cached_and_checked(world: World, tmp_path: Path) -> None:
    e = world.engine("torch")
    e.ensure_expert("python")
    heads = {"n_head": 4, "n_head_kv": 2}
    factors = part_factors(e.mole, "python")
    path = adapter_file(factors, "python", tmp_path, **heads)
    assert path is not None and path.is_file()
    stamp = path.stat().st_mtime_ns
    assert adapter_file(factors, "python", tmp_path, **heads) == path and path.stat().st_mtime_ns == stamp
    good = path.read_bytes()
    path.write_bytes(good[:-8] + b"\0" * 8)  # damaged: written again
    assert adapter_file(factors, "python", tmp_path, **heads) == path and path.read_bytes() == good


def test_backend_choice_and_reason(world: World) -> None:
    gguf = world.info.gguf_path
    assert gguf is not None and gguf.suffix == ".gguf"
    assert choose_backend("auto", gguf, "cpu")[0] == "llamacpp"
    name, why = choose_backend("auto", None, "cpu")
    assert name == "torch" and "not a GGUF" in why
    assert choose_backend("auto", gguf, "cuda")[0] == "torch"
    assert choose_backend("torch", gguf, "cpu") == ("torch", "the backend setting is torch")
    with pytest.raises(ValueError):
        choose_backend("fast", gguf, "cpu")


def test_backend_setting_is_validated_and_reloads() -> None:
    from mole_lsp.server.settings import RELOAD, validate

    assert validate("backend", " llamacpp ") == ("llamacpp", None)
    value, problem = validate("backend", "fast")
    assert value is None and "auto, torch, llamacpp" in problem
    assert "backend" in RELOAD


def test_doctor_names_the_backend_and_why(world: World, capsys: pytest.CaptureFixture[str]) -> None:
    from mole_lsp.cli import main

    common = ["--base-model", str(world.info.gguf_path), "--pack-repo", str(world.packs), "--offline"]
    main([*common, "doctor"])
    rows = [ln for ln in capsys.readouterr().out.splitlines() if " backend " in ln]
    assert rows and "llamacpp (auto: llama-cpp-python is installed and the base model is a GGUF file)" in rows[0]
    main([*common, "--backend", "torch", "doctor"])
    assert "torch (the backend setting is torch)" in capsys.readouterr().out


def test_server_passes_the_backend_editor_setting_over_the_command_line() -> None:
    from mole_lsp.server.app import create_server
    from mole_lsp.server.base import Options

    server = create_server(Options(backend="torch", preload=False))
    assert server.host.config()["backend"] == "torch"
    server.settings.update({"backend": "auto"})  # sent by the editor, even at its default: it wins
    assert server.host.config()["backend"] == "auto"
    assert create_server(Options(preload=False)).host.config()["backend"] == "auto"


# -- merged routes (backends/merged_route.py): one-route requests on a GGUF with the route folded in ----------
def _merged_engine(world: World, kv: bool = True) -> Engine:
    e = world.engine("llamacpp", kv=kv)
    e.backend.merge = e.backend.merge_wait = True  # waits for a route's file (not written in the background)
    return e


def test_merged_route_gives_the_lora_paths_tokens_and_logits(world: World, floor: float) -> None:
    lora, merged, t = world.engine("llamacpp", kv=False), _merged_engine(world, kv=False), world.engine("torch", kv=False)
    for text, lang in ((DOC, "python"), (RUST, "rust")):
        rl, rm, rt = _run((lora, merged, t), "complete", text, "", lang, max_new_tokens=12, context_tokens=256)
        assert rm.routes == rl.routes == [lang] * len(rl.routes)
        assert rm.text == rl.text
        seq = merged.backend.seq_for([lang])
        assert seq.route == lang and seq is not merged.backend.base  # it ran on the merged model
        d_lora = _diff(lora, merged)
        d, agree, n = _replay(t, merged)
        print(f"merged {lang}: max |logit diff| vs LoRA path {d_lora:.2e}, vs torch {d:.2e} (floor {floor:.2e}), "
              f"greedy agree {agree}/{n}")
        assert d_lora <= 2 * floor and d <= 2 * floor
        assert agree == n


def test_merged_file_is_reused_and_a_damaged_one_rewritten(world: World, tmp_path: Path) -> None:
    from mole_lsp.engine.backends.merged_route import merged_file

    e = world.engine("torch")
    e.ensure_expert("python")
    factors = part_factors(e.mole, "python")
    gguf = world.info.gguf_path
    kw = {"n_head": 4, "n_head_kv": 2}
    path = merged_file(gguf, "sha-a", factors, "python", tmp_path, **kw)
    assert path is not None and path.stat().st_size == gguf.stat().st_size
    stamp = path.stat().st_mtime_ns
    assert merged_file(gguf, "sha-a", factors, "python", tmp_path, **kw) == path
    assert path.stat().st_mtime_ns == stamp  # reused, not written again
    good = path.read_bytes()
    path.write_bytes(good[:-8] + b"\0" * 8)  # damaged: written again
    assert merged_file(gguf, "sha-a", factors, "python", tmp_path, **kw) == path and path.read_bytes() == good
    other = merged_file(gguf, "sha-b", factors, "python", tmp_path, **kw)  # another base: another file
    assert other != path and other.read_bytes() == good


def test_switching_languages_switches_merged_models(world: World) -> None:
    merged, cold = _merged_engine(world), world.engine("llamacpp", kv=False)
    b = merged.backend
    seen = []
    for text, lang in ((DOC, "python"), (DOC + "de", "python"), (RUST, "rust"), (DOC, "python")):
        rm, rc = _run((merged, cold), "complete", text, "", lang, max_new_tokens=6, context_tokens=256)
        assert rm.text == rc.text
        seen.append((b.seq_for([lang]).route, rm.reused_tokens))
    assert [route for route, _ in seen] == ["python", "python", "rust", "python"]
    assert seen[1][1] > 0 and seen[2][1] == 0  # the KV cache is kept within a model, not across models
    assert len(b._merged) == 1  # a bounded few merged models stay loaded (MAX_MERGED)
    # a prompt mixing routes keeps the base model with adapters
    rm, rc = _run((merged, cold), "generate", MIXED, mode="automated", max_new_tokens=6)
    assert rm.text == rc.text and b.seq_for(["nl", "python"]) is b.base


def test_output_leaving_the_merged_route_moves_to_the_base_context(world: World) -> None:
    merged, lora = _merged_engine(world), world.engine("llamacpp", kv=False)
    merged.ensure_expert("python")
    lora.ensure_expert("python")
    ids = merged.tokenizer(DOC, add_special_tokens=False)["input_ids"]
    out = []
    for e in (merged, lora):
        logits, past = e.backend.forward(ids, ["python"] * len(ids), None)
        first = past
        logits2, past = e.backend.forward([int(logits.argmax())], ["nl"], past)
        out.append((logits, logits2, first, past))
    (m1, m2, mfirst, mpast), (l1, l2, _, _) = out
    assert mfirst.route == "python" and mpast is merged.backend.base and mpast.routes[-1] == "nl"
    assert int(m2.argmax()) == int(l2.argmax()) and float((m2 - l2).abs().max()) < 0.05


def test_a_missing_merged_file_is_written_in_the_background(world: World, tmp_path: Path) -> None:
    import threading

    e = world.engine("llamacpp")
    b = e.backend
    b.merge, b.merge_dir = True, tmp_path
    gate = threading.Event()
    b._writer.submit(gate.wait, 30)  # the writer is busy: the file cannot be ready during the first request
    r1 = e.complete(DOC, "", "python", max_new_tokens=4, context_tokens=256)
    assert b.seq_for(["python"]) is b.base and not list(tmp_path.glob("*.gguf"))  # the LoRA path meanwhile
    gate.set()
    b._writing["python"].result(timeout=60)
    r2 = e.complete(DOC, "", "python", max_new_tokens=4, context_tokens=256)
    assert b.seq_for(["python"]).route == "python" and len(list(tmp_path.glob("*.gguf"))) == 1
    assert r2.text == r1.text and r2.reused_tokens == 0  # another model: its own (empty) KV cache


def test_a_merged_context_that_fills_up_moves_to_the_base_context(world: World, floor: float,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from mole_lsp.engine.backends import llamacpp

    monkeypatch.setattr(llamacpp, "MERGED_CTX", 64)
    e = world.engine("torch")
    e.ensure_expert("python")
    lora, merged = (llamacpp.LlamaCppBackend(world.info.gguf_path, e.experts, lora_dir=world.cache / "gguf-lora",
                                             n_ctx=1024, n_head=4, n_head_kv=2, merge=m) for m in (False, True))
    merged.merge_wait = True
    ids = e.tokenizer("def f(x):\n    return", add_special_tokens=False)["input_ids"]
    assert len(ids) < 32
    logits, past = lora.forward(ids, ["python"] * len(ids), None)
    want, fed = [logits], []
    while len(ids) + len(fed) < 300:  # the LoRA path's greedy tokens, fed to both
        fed.append(int(logits.argmax()))
        logits, past = lora.forward(fed[-1:], ["python"], past)
        want.append(logits)
    logits, past = merged.forward(ids, ["python"] * len(ids), None)
    got, seqs = [logits], [past]
    for tok in fed:
        logits, past = merged.forward([tok], ["python"], past)
        got.append(logits)
        seqs.append(past)
    assert seqs[0].route == "python" and seqs[0].n_ctx < merged.n_ctx  # llama.cpp rounds it up to 256
    assert seqs[seqs[0].n_ctx - len(ids)] is seqs[0] and seqs[-1] is merged.base
    diffs = [float((g - w).abs().max()) for g, w in zip(got, want, strict=True)]
    cut = seqs.index(merged.base)
    print(f"merged part: max {max(diffs[:cut]):.2e} median {sorted(diffs[:cut])[cut // 2]:.2e}; "
          f"moved to the base: max {max(diffs[cut:]):.2e}")
    assert sorted(diffs[:cut])[cut // 2] <= 2 * floor  # the requantized weights: at the floor
    assert max(diffs[cut:]) < 1e-3  # after the move: the LoRA path's own computation
    merged.close()
    lora.close()


def test_merge_setting_is_validated_and_defaults_as_the_backend() -> None:
    from mole_lsp.engine.backends import llamacpp
    from mole_lsp.server.protocol import SETTINGS
    from mole_lsp.server.settings import RELOAD, validate

    assert SETTINGS["llamacppMerge"][1] is llamacpp.MERGE
    assert validate("llamacppMerge", False) == (False, None)
    assert validate("llamacppMerge", "yes")[0] is None
    assert "llamacppMerge" not in RELOAD  # applied per completion, no reload


def test_merge_command_line_option_reaches_the_server_options() -> None:
    from mole_lsp.cli import build_parser
    from mole_lsp.cli_commands import server_options

    parse = build_parser().parse_args
    assert server_options(parse(["--llamacpp-merge", "off", "serve"])).llamacpp_merge is False
    assert server_options(parse(["serve", "--llamacpp-merge", "on"])).llamacpp_merge is True
    assert server_options(parse(["serve"])).llamacpp_merge is None  # the setting's default then


def test_merged_tensors_in_another_type_are_a_rewritten_gguf(world: World, floor: float) -> None:
    lora, merged = world.engine("llamacpp", kv=False), _merged_engine(world, kv=False)
    merged.backend.merge_type = "F16"  # the tiny base's FFN is Q8_0: every metadata field and tensor copied
    rl, rm = _run((lora, merged), "complete", DOC, "", "python", max_new_tokens=12, context_tokens=256)
    path = merged.backend.merged_path("python")
    assert path is not None and path.stat().st_size > world.info.gguf_path.stat().st_size
    assert merged.backend.seq_for(["python"]).route == "python"
    assert rm.text == rl.text and _diff(lora, merged) <= floor


def test_complete_command_runs_on_the_merged_route(world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    from mole_lsp.cli import main

    monkeypatch.setenv("MOLE_CACHE_DIR", str(tmp_path / "cache"))
    src = tmp_path / "a.py"
    src.write_text(DOC)
    common = ["--base-model", str(world.info.gguf_path), "--pack-repo", str(world.packs), "--offline"]
    for merge in (["--llamacpp-merge", "off"], []):  # off, then the default (on)
        assert main([*common, *merge, "complete", str(src), "--line", "9", "--col", "1", "--max-new-tokens", "4"]) == 0
        written = list((tmp_path / "cache" / "gguf-merged").glob("*.gguf"))
        assert len(written) == (not merge)  # waited for and used, not written in the background at exit
    capsys.readouterr()
