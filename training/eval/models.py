"""The model side of the evaluation: pack settings and :data:`~training.eval.tasks.Generate` callables
built on :class:`mole_lsp.engine.engine.Engine` (the server's generation engine; no second decoding loop).

A *setting* is what a row of the paper's tables names: the base alone (No-FT), a pack repository
folder (MoLE, or AllLang-FT: a core without experts), or one pack folder per language (PerLang-FT:
each problem is answered by its own language's model; not applicable to translation).

How a task prompt is generated (MoLE §III-B):

- the user turn is the task's instruction in the model's chat template (the same layout the server
  uses, :func:`mole_lsp.engine.prompts.chat_text`), and the answer starts with ``response_prefix`` (an
  opened code fence of the target language plus the function header), so the fence parser labels
  code in the prompt with its language — e.g. a translation's source code takes the source expert;
- code answers: ``manual`` mode with the target language's expert (or ``automated``: the fence
  parser routes each new token), stopping at the closing fence;
- prose answers (the explanation of summarization): ``automated`` mode, so the explanation takes
  the NL adapter;
- analyses: ``forced_expert`` routes the problem's language through another language's expert
  (misassigned expert, RQ4) and ``nl_only`` routes every position through the NL adapter.
"""

from __future__ import annotations

import copy
import gc
import math
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from training.eval.problems import BENCHMARK_LANGUAGES
from training.eval.prompts import TaskPrompt

BASE_ONLY = "No-FT"

__all__ = [
    "BASE_ONLY",
    "BaseLoader",
    "EngineGenerate",
    "GenOptions",
    "Setting",
    "base_only_setting",
    "parse_packs",
]


@dataclass(frozen=True)
class Setting:
    name: str  # row name in the tables
    kind: str  # "base", "packs" (one pack repository) or "perlang" (one pack folder per language)
    path: Path | None = None
    per_language: tuple[tuple[str, Path], ...] = ()  # perlang: language -> pack repository folder

    @property
    def has_packs(self) -> bool:
        return self.kind != "base"

    def pack_dir(self, language: str | None) -> Path | None:
        if self.kind == "packs":
            return self.path
        if self.kind == "perlang":
            return dict(self.per_language).get(language or "")
        return None


def base_only_setting(name: str = BASE_ONLY) -> Setting:
    return Setting(name, "base")


def _pack_repo(folder: Path) -> Path | None:
    """``folder`` or ``folder/packs`` when it holds a core pack."""
    for cand in (folder, folder / "packs"):
        if (cand / "core").is_dir():
            return cand
    return None


def parse_packs(spec: str) -> Setting:
    """``NAME=DIR``: a pack repository folder (``core/``, ``experts/<lang>/``), or a folder of
    per-language pack repositories (``<lang>/[packs/]core``, or ``perlang/<lang>/packs`` as
    ``training.finetune --method perlang`` writes them)."""
    name, sep, where = spec.partition("=")
    if not sep or not name.strip() or not where.strip():
        raise ValueError(f"--packs wants NAME=DIR, got {spec!r}")
    folder = Path(where.strip()).expanduser()
    if not folder.is_dir():
        raise ValueError(f"--packs {name}: {folder} is not a folder")
    repo = _pack_repo(folder)
    if repo is not None:
        return Setting(name.strip(), "packs", repo)
    for root in (folder, folder / "perlang"):
        found = tuple((lang, r) for lang in BENCHMARK_LANGUAGES
                      if (r := _pack_repo(root / lang)) is not None)
        if found:
            return Setting(name.strip(), "perlang", root, found)
    raise ValueError(f"--packs {name}: no core pack in {folder} (nor per-language pack folders <lang>/core)")


class BaseLoader:
    """Loads the base model once; every engine gets a fresh copy (packs modify the model they load on)."""

    def __init__(self, spec: str | None = None, *, device: str = "auto", threads: int | None = None,
                 cache_dir: str | None = None, log: Callable[[str], None] | None = None) -> None:

        from mole_lsp.engine import base_model as bm
        from mole_lsp.engine.device import configure_threads, default_dtype, pick_device

        configure_threads(threads)
        self.device = pick_device(device)
        say = (lambda m, _=None: log(m)) if log is not None else None
        self.info = bm.resolve_base_model(spec or None, cache_dir=cache_dir, progress=say)
        dtype = default_dtype(self.device)
        self.model, self.tokenizer = bm.load_base_model(self.info, dtype=dtype, device=self.device)
        self.identity = self.info.identity()

    @property
    def name(self) -> str:
        return self.info.name

    def engine(self, pack_dir: Path | None) -> Any:
        """An engine on a copy of the base; ``pack_dir`` None = the base alone."""
        from mole_lsp.engine.engine import Engine
        from mole_lsp.engine.sources import FolderPacks

        model = copy.deepcopy(self.model)
        packs = FolderPacks(pack_dir) if pack_dir is not None else None
        return Engine(model, self.tokenizer, packs=packs, base=self.identity, fim=self.info.fim,
                      max_experts=len(BENCHMARK_LANGUAGES) + 2, auto_install=False, info=self.info)


@dataclass(frozen=True)
class GenOptions:
    mode: str = "manual"  # code answers: "manual" (target expert) or "automated" (fence parser)
    max_new_tokens: int = 256
    summary_max_new_tokens: int | None = None  # default: about the description's character budget
    temperature: float = 0.0
    seed: int = 0
    nl_only: bool = False
    forced_expert: str | None = None  # misassigned expert: route the problem's language as this one


class EngineGenerate:
    """A :data:`~training.eval.tasks.Generate` callable for one setting.

    ``records`` gets one dict per generation, in the order of the prompts given (engine facts:
    stop reason, token counts, routes used, notes, timings), for the JSONL report.
    """

    def __init__(self, setting: Setting, make_engine: Callable[[Path | None], Any], options: GenOptions,
                 *, log: Callable[[str], None] | None = None, progress_every: int = 10) -> None:
        if options.mode not in ("manual", "automated"):
            raise ValueError(f"mode must be manual or automated, got {options.mode!r}")
        self.setting = setting
        self.options = options
        self._make_engine = make_engine
        self._engine: Any = None
        self._engine_key: object = ()
        self.records: list[dict[str, Any]] = []
        self.log = log or (lambda m: print(m, file=sys.stderr, flush=True))
        self.progress_every = max(1, progress_every)
        self._count = 0
        self._tokens = 0
        self._started = time.monotonic()

    # -- engines ----------------------------------------------------------------------------------------
    def engine_for(self, language: str | None) -> Any:
        key = self.setting.pack_dir(language) if self.setting.kind == "perlang" else None
        if self._engine is None or key != self._engine_key:
            self.close()
            self._engine = self._make_engine(self.setting.pack_dir(language))
            self._engine_key = key
        return self._engine

    def close(self) -> None:
        self._engine = None
        gc.collect()

    # -- generation -------------------------------------------------------------------------------------
    def __call__(self, prompts: Sequence[TaskPrompt]) -> list[str]:
        out: list[str | None] = [None] * len(prompts)
        recs: list[dict[str, Any] | None] = [None] * len(prompts)
        # PerLang: one model per language, so answer a batch language by language.
        order = sorted(range(len(prompts)), key=lambda i: prompts[i].problem.language)
        for i in order:
            out[i], recs[i] = self._one(prompts[i])
        self.records.extend(r for r in recs if r is not None)
        return [o or "" for o in out]

    def _relabel(self, prompt: TaskPrompt) -> dict[str, str] | None:
        if self.options.nl_only:
            return {"*": "nl"}
        if self.options.forced_expert:
            return {prompt.problem.language: self.options.forced_expert}
        return None

    def _one(self, prompt: TaskPrompt) -> tuple[str, dict[str, Any]]:
        from mole_lsp.engine.prompts import chat_text  # the server's chat layout

        opts = self.options
        engine = self.engine_for(prompt.problem.language)
        text = chat_text(engine.tokenizer, prompt.instruction, prompt.response_prefix)
        if prompt.language is None:  # prose: the explanation of summarization
            mode, language = "automated", None
            budget = opts.summary_max_new_tokens
            if budget is None:
                budget = max(16, math.ceil((prompt.max_chars or 4 * opts.max_new_tokens) / 2) + 16)
            max_new = min(opts.max_new_tokens, budget)
        else:
            mode = opts.mode
            language = prompt.language if mode == "manual" else None
            max_new = opts.max_new_tokens
        seed = opts.seed + self._count if opts.temperature > 0 else None
        r = engine.generate(text, mode=mode, language=language, max_new_tokens=max_new, stop=list(prompt.stop),
                            temperature=opts.temperature, seed=seed, install=False, relabel=self._relabel(prompt))
        self._count += 1
        self._tokens += r.new_tokens
        if self._count % self.progress_every == 0:
            secs = time.monotonic() - self._started
            self.log(f"  [{self.setting.name}] {self._count} generations, {self._tokens} tokens, "
                     f"{self._tokens / max(secs, 1e-9):.1f} tok/s")
        record = {
            "mode": mode,
            "expert": r.expert,
            "stop_reason": r.stop_reason,
            "prompt_tokens": r.prompt_tokens,
            "new_tokens": r.new_tokens,
            "routes": dict(Counter(r.routes)),
            "notes": list(r.notes),
            "ms": round(r.timings.get("total", 0.0), 1),
            "base_only": r.base_only,
        }
        return r.text, record


@contextmanager
def setting_generate(setting: Setting, loader: BaseLoader, options: GenOptions,
                     log: Callable[[str], None] | None = None) -> Iterator[EngineGenerate]:
    """An :class:`EngineGenerate` whose engines are freed on exit."""
    gen = EngineGenerate(setting, loader.engine, options, log=log)
    try:
        yield gen
    finally:
        gen.close()
