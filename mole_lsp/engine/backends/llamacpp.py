"""The llama.cpp backend (llama-cpp-python >= 0.3.36): the CPU fast path for GGUF bases.

One llama context holds one sequence: the positions of the last request (prompt and generated tokens).
A request keeps the longest prefix of it whose token ids AND routes are equal (``llama_memory_seq_rm``
trims the rest) and decodes only what follows, as the torch KV store does (engine/kvcache.py).

MoLE routing: every route of the loaded MoleModel (``-res`` + shared + expert, ``-res`` + nl, ...) is one
GGUF LoRA adapter (:mod:`.lora_files`), loaded once per route, set with ``llama_set_adapters_lora``
between decode calls while the KV cache stays. The positions of one forward call are decoded in runs of
equal route.

The MoleModel on the torch side stays the one reader and verifier of packs (and the reference): the
backend reads its factors, never a pack file.
"""

from __future__ import annotations

import ctypes
from collections.abc import Hashable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mole_lsp.engine.backends.base import Backend
from mole_lsp.engine.backends.lora_files import GENERIC, RESIDUAL, adapter_file, route_factors
from mole_lsp.engine.experts import ROUTE_BASE, ROUTE_NL, ROUTE_SHARED, ExpertManager

N_BATCH = 512
LORA_DTYPE = "f32"  # the adapters' tensor type; f16 measured no faster (the cost is llama.cpp's extra graph nodes per linear, not the bytes)
MAX_CTX = 8192


def available() -> bool:
    """Whether llama-cpp-python can be imported (the optional ``fast`` extra)."""
    try:
        import llama_cpp  # noqa: F401
    except Exception:  # ImportError, or a wheel whose native library does not load
        return False
    return True


class LlamaCppBackend(Backend):
    """``gguf`` run by llama.cpp with the adapters of ``experts.mole`` (see the module docstring)."""

    name = "llamacpp"
    merges = False

    def __init__(self, gguf: Path, experts: ExpertManager, *, lora_dir: Path, n_ctx: int | None = None,
                 threads: int | None = None, n_head: int | None = None, n_head_kv: int | None = None) -> None:
        import llama_cpp
        from llama_cpp import _internals

        self._ll = llama_cpp
        from llama_cpp._logger import set_verbose

        set_verbose(False)  # errors only (as Llama(verbose=False)): llama.cpp logs every adapter switch
        self.experts = experts
        self.lora_dir = lora_dir
        self.heads = (n_head, n_head_kv)
        mparams = llama_cpp.llama_model_default_params()
        self._model = _internals.LlamaModel(path_model=str(gguf), params=mparams, verbose=False)
        threads = threads or torch.get_num_threads()
        cparams = llama_cpp.llama_context_default_params()
        cparams.n_ctx = n_ctx or min(self._model.n_ctx_train(), MAX_CTX)
        cparams.n_batch = cparams.n_ubatch = N_BATCH
        cparams.n_threads = cparams.n_threads_batch = threads
        cparams.no_perf = True
        self._ctx = _internals.LlamaContext(model=self._model, params=cparams, verbose=False)
        self._batch = _internals.LlamaBatch(n_tokens=N_BATCH, embd=0, n_seq_max=1, verbose=False)
        self.n_ctx = self._ctx.n_ctx()
        self.n_vocab = self._model.n_vocab()
        # What the context holds: token ids and the route each position went through, and the stamp of
        # the weights behind the routes (the KV store's stamp).
        self.ids: list[int] = []
        self.routes: list[str] = []
        self.stamp: Hashable = None
        self._epoch: int | None = None
        self._plans: dict[str, tuple[tuple[Any, ...], tuple[float, ...]]] = {}
        self._adapters: dict[Path, Any] = {}
        self._active: tuple[Any, ...] | None = None
        self.kv = _SingleSequence(self)

    # -- adapters -------------------------------------------------------------------------------------------
    def _part_names(self, route: str) -> list[str]:
        """The parts (besides the residual) a route goes through, as the torch layer routes them."""
        from mole_lsp.core.routing import ROUTE_UNKNOWN
        from mole_lsp.lang.fence import NL

        mole = self.experts.mole
        rid = mole.route_for(NL) if route == ROUTE_NL else ROUTE_UNKNOWN if route == ROUTE_SHARED else \
            mole.slots.index(route)
        layer = next(iter(mole.layers.values()))
        names = []
        for pair in layer._parts(rid):
            if pair is layer.shared:
                names.append("shared")
            elif pair is layer.nl:
                names.append("nl")
            elif pair is layer.generic():
                names.append(GENERIC)
            else:
                names.append(next(lang for lang, p in layer.experts.items() if p is pair))
        return names

    def _adapter(self, route: str, parts: list[tuple[str, float]]) -> Any:
        path = adapter_file(route_factors(self.experts.mole, parts), route, self.lora_dir, n_head=self.heads[0],
                            n_head_kv=self.heads[1], dtype=LORA_DTYPE)  # type: ignore[arg-type]
        if path is None:
            return None
        ptr = self._adapters.get(path)
        if ptr is None:
            ptr = self._ll.llama_adapter_lora_init(self._model.model, str(path).encode())
            if not ptr:
                raise RuntimeError(f"llama.cpp refused the LoRA adapter {path}")
            self._adapters[path] = ptr
        return ptr

    def _plan(self, route: str) -> tuple[tuple[Any, ...], tuple[float, ...]]:
        """The adapter (none or one, scale 1) of ``route``; rebuilt after any change of the weights behind
        a route."""
        if self._epoch != self.experts.epoch:
            self._drop_adapters()
            self._epoch = self.experts.epoch
        plan = self._plans.get(route)
        if plan is None:
            adapter = None
            if self.experts.mole is not None and route != ROUTE_BASE:
                adapter = self._adapter(route, [(RESIDUAL, -1.0)] + [(p, 1.0) for p in self._part_names(route)])
            plan = self._plans[route] = ((adapter,), (1.0,)) if adapter is not None else ((), ())
        return plan

    def _use(self, route: str) -> None:
        adapters, scales = self._plan(route)
        key = (adapters, scales)
        if key == self._active:
            return
        n = len(adapters)
        arr = (self._ll.llama_adapter_lora_p_ctypes * n)(*adapters) if n else None
        sc = (ctypes.c_float * n)(*scales) if n else None
        if self._ll.llama_set_adapters_lora(self._ctx.ctx, arr, n, sc) != 0:
            raise RuntimeError(f"llama.cpp could not set the adapters of route {route!r}")
        self._active = key

    def _drop_adapters(self) -> None:
        if self._adapters:
            self._ll.llama_set_adapters_lora(self._ctx.ctx, None, 0, None)
            for ptr in self._adapters.values():
                self._ll.llama_adapter_lora_free(ptr)
        self._adapters.clear()
        self._plans.clear()
        self._active = None

    # -- the sequence -------------------------------------------------------------------------------------
    def trim(self, n: int) -> int:
        """Keep the first ``n`` positions of the context (all of them go when it cannot cut); returns the kept."""
        if n >= len(self.ids):
            return len(self.ids)
        if n <= 0 or not self._ctx.kv_cache_seq_rm(0, n, -1):
            self._ctx.kv_cache_clear()
            n = 0
        del self.ids[n:], self.routes[n:]
        return n

    def forward(self, ids: list[int], labels: Sequence[str], past: Any) -> tuple[torch.Tensor, Any]:
        if past is None:
            self.trim(0)
        if not ids:
            raise ValueError("forward needs at least one position")
        if len(self.ids) + len(ids) > self.n_ctx:
            raise ValueError(f"{len(self.ids) + len(ids)} positions exceed the llama.cpp context ({self.n_ctx})")
        names: dict[str, str] = {}
        for lb in labels:
            if lb not in names:
                names[lb] = self.experts.route_name(lb)
        routes = [names[lb] for lb in labels]
        try:
            start = 0
            while start < len(ids):  # runs of equal route, at most N_BATCH positions each
                route = routes[start]
                end = start + 1
                while end < len(ids) and routes[end] == route and end - start < N_BATCH:
                    end += 1
                self._use(route)
                self._batch.set_batch(ids[start:end], n_past=len(self.ids), logits_all=False)
                self._ctx.decode(self._batch)
                self.ids += ids[start:end]
                self.routes += routes[start:end]
                start = end
        except BaseException:
            self.trim(0)  # what a failed decode left in the context is unknown
            raise
        ptr = self._ctx.get_logits_ith(-1)
        logits = np.ctypeslib.as_array(ptr, shape=(self.n_vocab,)).copy()
        return torch.from_numpy(logits), self

    def close(self) -> None:
        self._drop_adapters()
        self._batch.close()
        self._ctx.close()
        self._model.close()


class _SingleSequence:
    """The KV store interface over the backend's one sequence (``max_bytes`` 0 turns reuse off)."""

    def __init__(self, backend: LlamaCppBackend, max_bytes: int = 1) -> None:
        self.backend = backend
        self.max_bytes = max_bytes

    def take(self, key: str, ids: Sequence[int], routes: Sequence[str], stamp: Hashable) -> tuple[int, Any]:
        b = self.backend
        if self.max_bytes <= 0 or stamp != b.stamp:
            b.trim(0)
            b.stamp = stamp
            return 0, None
        limit = min(len(ids) - 1, len(b.ids))
        n = 0
        while n < limit and b.ids[n] == ids[n] and b.routes[n] == routes[n]:
            n += 1
        n = b.trim(n)
        return n, (b if n else None)

    def put(self, key: str, ids: Sequence[int], routes: Sequence[str], past: Any, stamp: Hashable) -> None:
        b = self.backend
        if list(ids) != b.ids or list(routes) != b.routes:  # not what the context holds: do not trust it
            b.trim(0)
        b.stamp = stamp

    def clear(self) -> None:
        self.backend.trim(0)
