"""Generation on a MoLE model: base + core pack + experts loaded on demand, one decoding loop.

>>> engine = Engine.from_spec(None)                      # quick-start base, packs from the Hub cache
>>> r = engine.complete("def fib(n):\\n    ", "", "python")
>>> r.text, r.routes, r.stop_reason

Modes (how each generated token is routed):

- ``automated``: the fence parser reads the decoded text token by token and switches adapters (NL for
  prose, an expert inside ```lang fences); the KV cache is kept across switches;
- ``manual``: every generated token takes one forced language;
- ``completion``: every position, prompt included, is code of the document language.

Analyses (evaluation, RQ3/RQ4 of the paper) reroute positions without touching the text with
``generate(..., relabel={...})``: every position whose fence label is ``X`` takes the adapters of label
``relabel[X]`` (the key ``"*"`` matches every label), prompt and output alike. ``{"python": "rust"}``
answers Python with the Rust expert (misassigned expert); ``{"*": "nl"}`` sends every token through
the NL adapter (NL only). ``GenerationResult.labels`` keeps the parser's labels, ``routes`` says
which adapters were actually used.

The engine degrades instead of failing: no core pack -> the bare base model; a missing expert ->
the registry's fallback expert -> the shared adapter only. Each degradation is reported once, in
``GenerationResult.notes`` of the generation that met it (the server shows those to the user).

An engine is not thread-safe; a lock serialises generations (the server runs one at a time anyway).
"""

from __future__ import annotations

import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import torch

from mole_lsp.engine.device import configure_threads, default_dtype, pick_device
from mole_lsp.engine.prompts import (
    FimLike,
    Prompt,
    completion_prompt,
    completion_stop,
    explain_prompt,
    heal_completion,
    raw_prompt,
    translate_prompt,
)
from mole_lsp.lang.detok import IncrementalDecoder
from mole_lsp.lang.fence import NL, UNKNOWN, FenceParser
from mole_lsp.lang.registry import Registry, load_registry
from mole_lsp.packs.format import BaseIdentity, PackError, load_core, load_expert

Mode = Literal["automated", "manual", "completion"]
Progress = Callable[[str, float | None], None]

# Route names in GenerationResult.routes besides language ids.
ROUTE_BASE = "base"  # no core pack: the bare base model
ROUTE_SHARED = "shared"  # code without an expert: shared adapter only
ROUTE_NL = "nl"


class CancelToken:
    """A stop flag checked between two tokens; set from any thread."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()


def _is_cancelled(cancel: CancelToken | threading.Event | None) -> bool:
    if cancel is None:
        return False
    if isinstance(cancel, threading.Event):
        return cancel.is_set()
    return cancel.cancelled


@dataclass
class GenerationResult:
    text: str
    mode: str
    language: str | None  # the language generated (document language, target, or None for automated)
    expert: str | None  # expert pack used for ``language`` (may be a fallback); None = shared/base only
    routes: list[str]  # per generated token: the adapter its position took (language id, shared, nl, base)
    labels: list[str]  # per generated token: the fence-parser label
    stop_reason: str  # eos, max_tokens, stop, blank_line, end_of_block, suffix, cancelled, empty
    prompt_tokens: int
    new_tokens: int
    timings: dict[str, float] = field(default_factory=dict)  # milliseconds: load, prefill, decode, total
    notes: list[str] = field(default_factory=list)  # degradations met for the first time
    base_only: bool = False

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class PackSource(Protocol):
    """Where packs come from: mole_lsp.packs.store.PackStore, or :class:`FolderPacks` for a local folder."""

    def core_path(self, install: bool = True, progress: Progress | None = None) -> Path | None: ...

    def expert_path(self, lang: str, install: bool = True, progress: Progress | None = None) -> Path | None: ...


class FolderPacks:
    """A pack repository folder on disk (``core/``, ``experts/<lang>/``), e.g. packs you trained."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    def core_path(self, install: bool = True, progress: Progress | None = None) -> Path | None:
        p = self.root / "core"
        return p if p.is_dir() else None

    def expert_path(self, lang: str, install: bool = True, progress: Progress | None = None) -> Path | None:
        p = self.root / "experts" / lang
        return p if p.is_dir() else None


def resolve_document_language(language_id: str | None, path: str | None = None, text: str = "",
                              registry: Registry | None = None) -> str | None:
    """Registry id of a document: its editor languageId, then its file name, then a detector's guess."""
    reg = registry or load_registry()
    if language_id:
        hit = reg.by_vscode_id(language_id) or reg.resolve(language_id)
        if hit:
            return hit
    if path:
        hit = reg.by_path(path)
        if hit:
            return hit
    if text.strip():
        try:
            from mole_lsp.lang.detect import detect_language  # optional: the light classifier
        except ImportError:
            return None
        try:
            guess = detect_language(text)
        except Exception:  # a guess must never break a request
            return None
        if isinstance(guess, tuple):  # (language, confidence)
            guess = guess[0]
        return guess if isinstance(guess, str) and guess in reg else None
    return None


class Engine:
    """A base model with MoLE packs, generating completions, explanations and translations."""

    def __init__(self, model: torch.nn.Module, tokenizer: Any, *, packs: PackSource | None = None,
                 base: BaseIdentity | None = None, fim: FimLike | None = None, registry: Registry | None = None,
                 max_experts: int = 4, auto_install: bool = True, info: Any = None) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.packs = packs
        self.base = base
        self.fim = fim
        self.info = info  # BaseModelInfo when built from a spec
        self.registry = registry or load_registry()
        self.max_experts = max(1, max_experts)
        self.auto_install = auto_install
        self.progress: Progress | None = None  # set by the caller around long work (downloads)
        self.mole: Any = None  # MoleModel once a core pack is loaded
        self._core_done = False
        self._loaded: OrderedDict[str, None] = OrderedDict()  # LRU of loaded experts
        self._texts: list[str] | None = None  # vocabulary as text, for token healing
        self._heal_cache: dict[str, torch.Tensor] = {}
        self._merged: str | None = None
        self._said: set[str] = set()
        self._notes: list[str] = []
        self._lock = threading.RLock()
        self.eos_ids = self._eos_ids()

    # -- construction -------------------------------------------------------------------------------------
    @classmethod
    def from_spec(cls, base_model: str | None = None, *, cache_dir: str | None = None,
                  pack_repo: str | None = None, revision: str | None = None, offline: bool = False,
                  device: str = "auto", progress: Progress | None = None, auto_install: bool = True,
                  max_experts: int = 4, threads: int | None = None) -> Engine:
        """Resolve and load a base model (Hub id, local folder, GGUF; None = MOLE_BASE_MODEL or the
        quick-start default) and attach its pack store (``pack_repo`` may be a local folder)."""
        from mole_lsp.engine import base_model as bm
        from mole_lsp.paths import hub_endpoint

        configure_threads(threads)
        dev = pick_device(device)
        say = (lambda message: progress(message, None)) if progress is not None else None
        # resolve_base_model itself reads MOLE_BASE_MODEL when no spec is given.
        info = bm.resolve_base_model(base_model or None, cache_dir=cache_dir, offline=offline or None,
                                     progress=say)
        dtype = default_dtype(dev)
        model, tokenizer = bm.load_base_model(info, dtype=dtype, device=dev)
        base = info.identity()
        packs: PackSource
        if pack_repo and Path(pack_repo).expanduser().is_dir():
            packs = FolderPacks(Path(pack_repo).expanduser())
        else:
            from mole_lsp.packs.store import PackStore, default_pack_repo

            packs = PackStore(pack_repo or default_pack_repo(info.repo_id), revision or "main", cache_dir,
                              offline or None, hub_endpoint(), base=base)
        return cls(model, tokenizer, packs=packs, base=base, fim=info.fim, max_experts=max_experts,
                   auto_install=auto_install, info=info)

    def _eos_ids(self) -> set[int]:
        ids: set[int] = set()
        cfg = getattr(self.model, "generation_config", None)
        for src in (getattr(cfg, "eos_token_id", None), getattr(self.tokenizer, "eos_token_id", None)):
            if isinstance(src, int):
                ids.add(src)
            elif isinstance(src, Iterable):
                ids.update(int(i) for i in src)
        vocab = self.tokenizer.get_vocab()
        for tok in ("<|im_end|>", "<|endoftext|>", "<|eot_id|>", "<｜end▁of▁sentence｜>", "<|EOT|>"):
            if tok in vocab:
                ids.add(int(vocab[tok]))
        return ids

    # -- notices ------------------------------------------------------------------------------------------
    def _note(self, message: str) -> None:
        if message not in self._said:
            self._said.add(message)
            self._notes.append(message)

    def take_notes(self) -> list[str]:
        notes, self._notes = self._notes, []
        return notes

    # -- packs ------------------------------------------------------------------------------------------
    @property
    def base_only(self) -> bool:
        return self._core_done and self.mole is None

    @property
    def loaded_experts(self) -> list[str]:
        return list(self._loaded)

    def ensure_core(self) -> bool:
        """Load the core pack once (installing it when allowed); False = base model only."""
        with self._lock:
            if self._core_done:
                return self.mole is not None
            path = None
            why = "no pack source configured"
            if self.packs is not None:
                try:
                    path = self.packs.core_path(install=self.auto_install, progress=self.progress)
                    why = ("no core pack published for this base model" if self.auto_install else
                           "the core pack is not installed: run `mole-lsp install-pack <language>`")
                except Exception as e:  # StoreError/OfflineError: degrade to the base, say why
                    why = str(e)
            if path is not None:
                try:
                    self.mole = load_core(self.model, path, base=self.base, registry=self.registry)
                except PackError as e:
                    why = f"core pack refused: {e}"
                    path = None
            self._core_done = True
            if self.mole is None:
                self._note(f"No MoLE core pack ({why}): answering with the base model only.")
            return self.mole is not None

    def _find_expert_path(self, lang: str, install: bool) -> Path | None:
        if self.packs is None:
            return None
        try:
            return self.packs.expert_path(lang, install=install, progress=self.progress)
        except Exception as e:  # not published / offline / download failed: try the fallback
            self._note(f"{self.registry.get(lang).name} expert unavailable: {e}")
            return None

    def ensure_expert(self, language: str | None, install: bool | None = None,
                      pinned: Sequence[str] = ()) -> str | None:
        """Make ``language``'s expert (or its registry fallback) available; return the expert used or
        None (shared adapter only / base only)."""
        if language is None or language not in self.registry or not self.ensure_core():
            return None
        install = self.auto_install if install is None else install
        with self._lock:
            for cand in self.registry.fallback_chain(language):
                if cand in self._loaded:
                    self._loaded.move_to_end(cand)
                    break
                path = self._find_expert_path(cand, install)
                if path is None:
                    continue
                try:
                    load_expert(self.mole, path, language=cand)
                except PackError as e:
                    self._note(f"{self.registry.get(cand).name} expert refused: {e}")
                    continue
                self._loaded[cand] = None
                self._unmerge()
                self._evict(keep={cand, language, *pinned})
                break
            else:
                self._note(f"No {self.registry.get(language).name} expert: using the shared adapter only.")
                return None
            if cand != language:
                self._note(f"No {self.registry.get(language).name} expert: using the "
                           f"{self.registry.get(cand).name} expert instead.")
            return cand

    def unload_expert(self, lang: str) -> None:
        with self._lock:
            if lang in self._loaded:
                del self._loaded[lang]
                self._unmerge()
                self.mole.remove_language(lang)

    def _evict(self, keep: set[str]) -> None:
        while len(self._loaded) > self.max_experts:
            victim = next((lang for lang in self._loaded if lang not in keep), None)
            if victim is None:
                return
            del self._loaded[victim]
            self.mole.remove_language(victim)

    def _unmerge(self) -> None:
        if self.mole is not None and self._merged is not None:
            self.mole.unmerge()
        self._merged = None

    def _merge(self, label: str) -> None:
        """Single-language fast path; kept merged across requests for the same language."""
        if self.mole is None or self._merged == label:
            return
        self.mole.merge(label)
        self._merged = label

    # -- routing helpers --------------------------------------------------------------------------------
    def _route_name(self, label: str) -> str:
        if self.mole is None:
            return ROUTE_BASE
        if label == NL:
            return ROUTE_NL
        return self.mole.expert_for(label) or ROUTE_SHARED

    def _forward(self, ids: torch.Tensor, labels: Sequence[str], past: Any) -> tuple[torch.Tensor, Any]:
        kwargs: dict[str, Any] = {"input_ids": ids, "use_cache": True}
        if past is not None:
            kwargs["past_key_values"] = past
        if self.mole is not None:
            route = self.mole.route_ids(labels, device=ids.device).view(ids.shape)
            out = self.mole(route_ids=route, **kwargs)
        else:
            out = self.model(**kwargs)
        return out.logits[0, -1].float(), out.past_key_values

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    # -- generation -------------------------------------------------------------------------------------
    def generate(self, prompt: str | Prompt, mode: Mode = "automated", language: str | None = None,
                 max_new_tokens: int = 128, stop: Sequence[str] | None = None, temperature: float = 0.0,
                 cancel: CancelToken | threading.Event | None = None, seed: int | None = None,
                 install: bool | None = None, relabel: Mapping[str, str] | None = None) -> GenerationResult:
        """Generate from ``prompt`` (text, labelled by the fence parser, or a built :class:`Prompt`).

        mode: ``automated`` (the fence parser routes each new token), ``manual`` (every new token
        takes ``language``), ``completion`` (prompt and output are code of ``language``).
        ``stop``: strings that end the output (not included). Greedy unless ``temperature`` > 0.
        ``relabel``: route label ``X`` as ``relabel[X]`` (``"*"``: any label), for the prompt and the
        output; ``expert`` then names the expert the output's language was answered with.
        """
        t0 = time.perf_counter()
        if mode not in ("automated", "manual", "completion"):
            raise ValueError(f"mode must be automated, manual or completion, got {mode!r}")
        if mode != "automated" and language is not None and language not in self.registry:
            resolved = self.registry.resolve(language)
            if resolved is None:
                raise ValueError(f"unknown language {language!r}")
            language = resolved
        with self._lock:
            self.ensure_core()
            if isinstance(prompt, str):
                if mode == "completion":
                    prompt = Prompt(ids=self._encode_raw(prompt), labels=[], kind="raw")
                    prompt.labels = [language or UNKNOWN] * len(prompt.ids)
                else:
                    prompt = raw_prompt(self.tokenizer, prompt, self.registry)
            out_label = (language or UNKNOWN) if mode != "automated" else None
            route_as = _relabeller(relabel)
            # Experts the prompt needs (source code inside fences) and the output's language.
            wanted = [lb for lb in dict.fromkeys(map(route_as, prompt.labels)) if lb in self.registry]
            out_route = route_as(out_label) if out_label is not None else None
            if out_route in self.registry and out_route not in wanted:
                wanted.append(out_route)
            expert = None
            for lb in wanted:
                used = self.ensure_expert(lb, install=install, pinned=wanted)
                if lb == out_route:
                    expert = used
            t_load = time.perf_counter()
            if out_route is not None:
                self._merge(out_route)
            t_merge = time.perf_counter()
            result = self._decode(prompt, mode, out_label, max_new_tokens, list(stop or []), temperature,
                                  cancel, seed, route_as)
            result.language = language if mode != "automated" else None
            result.expert = expert
            result.timings.update(load=(t_load - t0) * 1e3, merge=(t_merge - t_load) * 1e3,
                                  total=(time.perf_counter() - t0) * 1e3)
            result.notes = self.take_notes()
            result.base_only = self.mole is None
            return result

    def _token_texts(self) -> list[str]:
        """Text of every vocabulary id (decoded once, for token healing)."""
        if self._texts is None:
            self._texts = self.tokenizer.batch_decode([[i] for i in range(len(self.tokenizer))],
                                                      clean_up_tokenization_spaces=False)
        return self._texts

    def _constrain(self, logits: torch.Tensor, pending: str) -> torch.Tensor:
        """Keep only tokens that write the next part of ``pending`` (or all of it and more)."""
        key = pending
        allowed = self._heal_cache.get(key)
        if allowed is None:
            ids = [i for i, t in enumerate(self._token_texts()) if t and (t.startswith(pending) or pending.startswith(t))]
            allowed = self._heal_cache[key] = torch.tensor(ids, dtype=torch.long)
        if not len(allowed):
            return logits
        masked = torch.full_like(logits, float("-inf"))
        idx = allowed.to(logits.device)
        masked[..., idx] = logits[..., idx]
        return masked

    def _encode_raw(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    # no_grad, not inference_mode: the routing plan cache reads tensor version counters.
    @torch.no_grad()
    def _decode(self, prompt: Prompt, mode: str, out_label: str | None, max_new_tokens: int,
                stop: list[str], temperature: float, cancel: CancelToken | threading.Event | None,
                seed: int | None, route_as: Callable[[str], str] | None = None) -> GenerationResult:
        dev = self.device
        # Automated mode: the parser starts in the state the prompt leaves it (e.g. inside a fence).
        parser = _parser_after(self.tokenizer, prompt, self.registry) if mode == "automated" else None
        gen = torch.Generator(device="cpu").manual_seed(seed) if seed is not None and temperature > 0 else None
        decoder = IncrementalDecoder(self.tokenizer, prompt.ids)
        routes: list[str] = []
        labels: list[str] = []
        ids_out: list[int] = []
        text = ""
        reason = "max_tokens"
        names: dict[str, str] = {}
        route_as = route_as or _identity

        t0 = time.perf_counter()
        if _is_cancelled(cancel):
            return self._result("", mode, routes, labels, "cancelled", prompt, 0, {})
        logits, past = self._forward(torch.tensor([prompt.ids], device=dev), [route_as(lb) for lb in prompt.labels],
                                     None)
        t_prefill = time.perf_counter()
        final_text: str | None = None
        pending = prompt.heal  # indentation the model must write first (token healing)
        for _ in range(max_new_tokens):
            if _is_cancelled(cancel):
                reason = "cancelled"
                break
            if pending:
                logits = self._constrain(logits, pending)
            next_id = self._pick(logits, temperature, gen)
            if pending:
                piece_text = self._token_texts()[next_id]
                pending = pending[len(piece_text):] if pending.startswith(piece_text) else ""
            if next_id in self.eos_ids:
                reason = "eos"
                break
            ids_out.append(next_id)
            piece = decoder.push(next_id)
            text += piece
            label = parser.feed(piece) if parser is not None else out_label  # type: ignore[assignment]
            labels.append(label)
            if label not in names:
                names[label] = self._route_name(route_as(label))
            routes.append(names[label])
            hit = _find_stop(text, piece, stop, prompt)
            if hit is not None:
                final_text, reason = hit
                break
            if mode == "completion" and "\n" in piece:
                cut = completion_stop(text, prompt)
                if cut is not None:
                    final_text, reason = cut
                    break
            if len(ids_out) == max_new_tokens:
                break
            logits, past = self._forward(torch.tensor([[next_id]], device=dev), [route_as(label)], past)
        if final_text is None:
            text += decoder.flush()
            final_text = text
            if mode == "completion" and reason in ("max_tokens", "eos"):
                cut = completion_stop(text, prompt, final=True)
                if cut is not None:
                    final_text, reason = cut
        t_end = time.perf_counter()
        timings = {"prefill": (t_prefill - t0) * 1e3, "decode": (t_end - t_prefill) * 1e3}
        return self._result(final_text, mode, routes, labels, reason, prompt, len(ids_out), timings)

    def _result(self, text: str, mode: str, routes: list[str], labels: list[str], reason: str,
                prompt: Prompt, n_new: int, timings: dict[str, float]) -> GenerationResult:
        return GenerationResult(text=text, mode=mode, language=None, expert=None, routes=routes, labels=labels,
                                stop_reason=reason, prompt_tokens=len(prompt.ids), new_tokens=n_new,
                                timings=timings)

    @staticmethod
    def _pick(logits: torch.Tensor, temperature: float, gen: torch.Generator | None) -> int:
        if temperature <= 0:
            return int(torch.argmax(logits))
        probs = torch.softmax(logits.cpu() / temperature, dim=-1)
        return int(torch.multinomial(probs, 1, generator=gen))

    # -- tasks ------------------------------------------------------------------------------------------
    def complete(self, prefix: str, suffix: str, language: str | None, *, max_new_tokens: int = 64,
                 context_tokens: int = 1024, cancel: CancelToken | threading.Event | None = None,
                 temperature: float = 0.0, install: bool | None = None) -> GenerationResult:
        """Text to insert at the cursor of a source file (FIM when the base has FIM tokens)."""
        label = language if language in self.registry else UNKNOWN
        prompt = completion_prompt(self.tokenizer, prefix, suffix, label, context_tokens, self.fim)
        result = self.generate(prompt, mode="completion", language=language if label != UNKNOWN else None,
                               max_new_tokens=max_new_tokens, temperature=temperature, cancel=cancel,
                               install=install)
        result.text = heal_completion(result.text, prompt)
        return result

    def explain(self, code: str, language: str | None, *, max_new_tokens: int = 256,
                cancel: CancelToken | threading.Event | None = None, install: bool | None = None
                ) -> GenerationResult:
        """A markdown explanation of ``code`` (automated mode: NL adapter, experts inside fences)."""
        prompt = explain_prompt(self.tokenizer, code, language or "", self.registry)
        result = self.generate(prompt, mode="automated", max_new_tokens=max_new_tokens, stop=prompt.stop,
                               cancel=cancel, install=install)
        result.language = language
        if language is not None and self.mole is not None:
            result.expert = self.mole.expert_for(language)
        return result

    def translate(self, code: str, source: str | None, target: str, *, max_new_tokens: int = 256,
                  cancel: CancelToken | threading.Event | None = None, install: bool | None = None
                  ) -> GenerationResult:
        """``code`` rewritten in ``target`` (manual mode: the output takes the target expert)."""
        tgt = target if target in self.registry else self.registry.resolve(target)
        if tgt is None:
            raise ValueError(f"unknown target language {target!r}")
        prompt = translate_prompt(self.tokenizer, code, source or "", tgt, self.registry)
        return self.generate(prompt, mode="manual", language=tgt, max_new_tokens=max_new_tokens,
                             stop=prompt.stop, cancel=cancel, install=install)


def _identity(label: str) -> str:
    return label


def _relabeller(relabel: Mapping[str, str] | None) -> Callable[[str], str]:
    """The label a position is routed as (see ``Engine.generate``'s ``relabel``)."""
    if not relabel:
        return _identity
    table = dict(relabel)
    every = table.pop("*", None)
    if every is not None:
        return lambda label: table.get(label, every)
    return lambda label: table.get(label, label)


def _parser_after(tokenizer: Any, prompt: Prompt, registry: Registry) -> FenceParser:
    """A fence parser in the state the prompt's text leaves it (where the answer starts)."""
    parser = FenceParser(registry)
    parser.feed(prompt.text if prompt.text is not None else tokenizer.decode(prompt.ids))
    return parser


def _find_stop(text: str, piece: str, stop: Sequence[str], prompt: Prompt) -> tuple[str, str] | None:
    for s in stop:
        # Only the tail can hold a new match; search from just before the new piece.
        start = max(0, len(text) - len(piece) - len(s))
        i = text.find(s, start)
        if i >= 0:
            return text[:i], "stop"
        # A translation can close its fence on the very first line.
        if s.startswith("\n") and text.startswith(s[1:]) and len(text) >= len(s) - 1:
            return "", "stop"
    return None
