"""Generation on a MoLE model: base + core pack + experts loaded on demand, one decoding loop.

>>> engine = Engine.from_spec(None)                      # quick-start base, packs from the Hub cache
>>> r = engine.complete("def fib(n):\\n    ", "", "python")
>>> r.text, r.routes, r.stop_reason

:class:`Engine` is the facade the server and the evaluation use. It builds the prompt
(:mod:`~mole_lsp.engine.prompts`), makes the adapters it needs available
(:class:`~mole_lsp.engine.experts.ExpertManager`) and runs the token loop
(:class:`~mole_lsp.engine.decode.Decoder`).

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

The engine degrades instead of failing (see :mod:`~mole_lsp.engine.experts`). Each degradation is
reported once, in ``GenerationResult.notes`` of the generation that met it (the server shows those to
the user).

An engine is not thread-safe; a lock serialises generations (the server runs one at a time anyway).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import torch

from mole_lsp.engine.backends import make_backend
from mole_lsp.engine.decode import Cancel, Decoder, GenerationResult, eos_token_ids, relabeller
from mole_lsp.engine.device import configure_threads, default_dtype, pick_device
from mole_lsp.engine.experts import ExpertManager
from mole_lsp.engine.prompts import (
    FimLike,
    Prompt,
    completion_prompt,
    explain_prompt,
    heal_completion,
    raw_prompt,
    translate_prompt,
)
from mole_lsp.engine.sources import PackSource, Progress, open_pack_source
from mole_lsp.lang.fence import UNKNOWN
from mole_lsp.lang.registry import Registry, load_registry
from mole_lsp.packs.format import BaseIdentity

Mode = Literal["automated", "manual", "completion"]


class Engine:
    """A base model with MoLE packs, generating completions, explanations and translations."""

    def __init__(self, model: torch.nn.Module, tokenizer: Any, *, packs: PackSource | None = None,
                 base: BaseIdentity | None = None, fim: FimLike | None = None, registry: Registry | None = None,
                 max_experts: int = 4, auto_install: bool = True, info: Any = None, backend: str = "torch",
                 threads: int | None = None) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.base = base
        self.fim = fim
        self.info = info  # BaseModelInfo when built from a spec
        self.registry = registry or load_registry()
        self.auto_install = auto_install
        self.progress: Progress | None = None  # set by the caller around long work (downloads)
        self.experts = ExpertManager(self.model, packs, base, self.registry, max_experts)
        self.eos_ids = eos_token_ids(self.model, tokenizer)
        # What runs the model (engine/backends): torch, or llama.cpp on a GGUF base; and why.
        self.backend, self.backend_reason = make_backend(
            backend, self.experts, gguf=getattr(info, "gguf_path", None), device=self.device.type,
            config=getattr(self.model, "config", None), threads=threads)
        self.decoder = Decoder(tokenizer, self.registry, self.backend.forward, self.experts.route_name,
                               self.eos_ids)
        self.kv = self.backend.kv  # KV caches of recent prompts, reused by the next request (kv.max_bytes)
        self._lock = threading.RLock()

    @classmethod
    def from_spec(cls, base_model: str | None = None, *, cache_dir: str | None = None,
                  pack_repo: str | None = None, revision: str | None = None, offline: bool = False,
                  device: str = "auto", progress: Progress | None = None, auto_install: bool = True,
                  max_experts: int = 4, threads: int | None = None, backend: str = "auto") -> Engine:
        """Resolve and load a base model (Hub id, local folder, GGUF; None = MOLE_BASE_MODEL or the
        quick-start default) and attach its pack source (``pack_repo`` may be a local folder).
        ``backend``: auto, torch or llamacpp (see engine/backends)."""
        from mole_lsp.engine.base_model import load_base_model, resolve_base_model

        configure_threads(threads)
        dev = pick_device(device)
        say = (lambda message: progress(message, None)) if progress is not None else None
        # resolve_base_model itself reads MOLE_BASE_MODEL when no spec is given.
        info = resolve_base_model(base_model or None, cache_dir=cache_dir, offline=offline or None, progress=say)
        model, tokenizer = load_base_model(info, dtype=default_dtype(dev), device=dev)
        base = info.identity()
        packs = open_pack_source(pack_repo, info.repo_id, base, revision=revision, cache_dir=cache_dir,
                                 offline=offline)
        return cls(model, tokenizer, packs=packs, base=base, fim=info.fim, max_experts=max_experts,
                   auto_install=auto_install, info=info, backend=backend, threads=threads)

    # -- adapters -----------------------------------------------------------------------------------------
    @property
    def packs(self) -> PackSource | None:
        return self.experts.packs

    @property
    def mole(self) -> Any:
        """The MoleModel once a core pack is loaded, else None."""
        return self.experts.mole

    @property
    def base_only(self) -> bool:
        return self.experts.base_only

    @property
    def loaded_experts(self) -> list[str]:
        return self.experts.loaded

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def take_notes(self) -> list[str]:
        """Degradations met since the last call, each said once per engine."""
        return self.experts.take_notes()

    def ensure_core(self) -> bool:
        """Load the core pack (installing it when allowed); False = base model only, for now: a core
        installed later is found (see ExpertManager.ensure_core)."""
        with self._lock:
            return self.experts.ensure_core(self.auto_install, self.progress)

    def retry_core(self) -> None:
        """Look for the core pack again at the next request (a pack was installed, a setting changed)."""
        self.experts.retry_core()

    def ensure_expert(self, language: str | None, install: bool | None = None,
                      pinned: Sequence[str] = ()) -> str | None:
        """Make ``language``'s expert (or its registry fallback) available; return the expert used or
        None (shared adapter only / base only)."""
        if language is None or language not in self.registry or not self.ensure_core():
            return None
        install = self.auto_install if install is None else install
        with self._lock:
            return self.experts.ensure_expert(language, install, pinned, self.progress)

    def unload_expert(self, lang: str) -> None:
        with self._lock:
            self.experts.unload(lang)

    # -- generation -------------------------------------------------------------------------------------
    def generate(self, prompt: str | Prompt, mode: Mode = "automated", language: str | None = None,
                 max_new_tokens: int = 128, stop: Sequence[str] | None = None, temperature: float = 0.0,
                 cancel: Cancel = None, seed: int | None = None,
                 install: bool | None = None, relabel: Mapping[str, str] | None = None,
                 cache_key: str | None = None, time_budget_ms: float | None = None) -> GenerationResult:
        """Generate from ``prompt`` (text, labelled by the fence parser, or a built :class:`Prompt`).

        mode: ``automated`` (the fence parser routes each new token), ``manual`` (every new token
        takes ``language``), ``completion`` (prompt and output are code of ``language``).
        ``stop``: strings that end the output (not included). Greedy unless ``temperature`` > 0.
        ``relabel``: route label ``X`` as ``relabel[X]`` (``"*"``: any label), for the prompt and the
        output; ``expert`` then names the expert the output's language was answered with.
        ``cache_key``: where the KV cache is kept for the next request (a document; default: the mode).
        ``time_budget_ms``: a multi-line completion's time budget (see decode.py).
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
                    ids = list(self.tokenizer(prompt, add_special_tokens=False)["input_ids"])
                    prompt = Prompt(ids=ids, labels=[language or UNKNOWN] * len(ids), kind="raw")
                else:
                    prompt = raw_prompt(self.tokenizer, prompt, self.registry)
            out_label = (language or UNKNOWN) if mode != "automated" else None
            route_as = relabeller(relabel)
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
            if out_route is not None and self.backend.merges:
                self.experts.merge(out_route)
            t_merge = time.perf_counter()
            result = self.decoder.run(prompt, mode, out_label, max_new_tokens, list(stop or []), temperature,
                                      cancel, seed, route_as, kv=self.kv, kv_key=cache_key or mode,
                                      kv_stamp=(self.experts.epoch, self.experts.merged),
                                      time_budget_ms=time_budget_ms)
            result.language = language if mode != "automated" else None
            result.expert = expert
            result.timings.update(load=(t_load - t0) * 1e3, merge=(t_merge - t_load) * 1e3,
                                  total=(time.perf_counter() - t0) * 1e3)
            result.notes = self.take_notes()
            result.base_only = self.mole is None
            return result

    # -- tasks ------------------------------------------------------------------------------------------
    def complete(self, prefix: str, suffix: str, language: str | None, *, max_new_tokens: int = 64,
                 context_tokens: int = 1024, cancel: Cancel = None,
                 temperature: float = 0.0, install: bool | None = None, cache_key: str | None = None,
                 multi_line_ms: float | None = None, single_line: bool | None = None) -> GenerationResult:
        """Text to insert at the cursor of a source file (FIM when the base has FIM tokens).

        Code after the cursor on its line: that line only (``end_of_line``); else a block of lines,
        cut to whole lines after ``multi_line_ms`` (``time_budget``). ``cache_key``: the document.
        ``single_line``: True = stop at the end of the cursor's line whatever follows it (greedy: the first
        line of the block the default rule gives; the line-completion benchmark), None = the rule above."""
        label = language if language in self.registry else UNKNOWN
        prompt = completion_prompt(self.tokenizer, prefix, suffix, label, context_tokens, self.fim)
        if single_line is not None:
            prompt.single_line = single_line
        result = self.generate(prompt, mode="completion", language=language if label != UNKNOWN else None,
                               max_new_tokens=max_new_tokens, temperature=temperature, cancel=cancel,
                               install=install, cache_key=cache_key, time_budget_ms=multi_line_ms)
        result.text = heal_completion(result.text, prompt)
        return result

    def explain(self, code: str, language: str | None, *, max_new_tokens: int = 256,
                cancel: Cancel = None, install: bool | None = None) -> GenerationResult:
        """A markdown explanation of ``code`` (automated mode: NL adapter, experts inside fences)."""
        prompt = explain_prompt(self.tokenizer, code, language or "", self.registry)
        result = self.generate(prompt, mode="automated", max_new_tokens=max_new_tokens, stop=prompt.stop,
                               cancel=cancel, install=install)
        result.language = language
        if language is not None and self.mole is not None:
            result.expert = self.mole.expert_for(language)
        return result

    def translate(self, code: str, source: str | None, target: str, *, max_new_tokens: int = 256,
                  cancel: Cancel = None, install: bool | None = None) -> GenerationResult:
        """``code`` rewritten in ``target`` (manual mode: the output takes the target expert)."""
        tgt = target if target in self.registry else self.registry.resolve(target)
        if tgt is None:
            raise ValueError(f"unknown target language {target!r}")
        prompt = translate_prompt(self.tokenizer, code, source or "", tgt, self.registry)
        return self.generate(prompt, mode="manual", language=tgt, max_new_tokens=max_new_tokens,
                             stop=prompt.stop, cancel=cancel, install=install)
