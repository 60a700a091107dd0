"""The llama.cpp backend (llama-cpp-python >= 0.3.36): the CPU fast path for GGUF bases.

One llama context holds one sequence: the positions of the last request (prompt and generated tokens).
A request keeps the longest prefix of it whose token ids AND routes are equal (``llama_memory_seq_rm``
trims the rest) and decodes only what follows, as the torch KV store does (engine/kvcache.py).

MoLE routing: every route of the loaded MoleModel (``-res`` + shared + expert, ``-res`` + nl, ...) is one
GGUF LoRA adapter (:mod:`.lora_files`), loaded once per route, set with ``llama_set_adapters_lora``
between decode calls while the KV cache stays. The positions of one forward call are decoded in runs of
equal route.

Merged routes (``merge``): a request whose positions all take one route (a completion: the document
language's code) runs instead on a copy of the base GGUF with that route folded into its weights
(:mod:`.merged_route`), which decodes at the bare base's speed (no LoRA products). Each merged model has its
own context (a KV cache is valid only within one model); the last :data:`MAX_MERGED` are kept loaded. A
request mixing routes (explain, translate) takes the base context with adapters; a merged request whose
output leaves its route (a fence opens) moves there, replaying its positions first.

The MoleModel on the torch side stays the one reader and verifier of packs (and the reference): the
backend reads its factors, never a pack file.
"""

from __future__ import annotations

import ctypes
import time
from collections import OrderedDict
from collections.abc import Hashable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mole_lsp.engine.backends.base import Backend
from mole_lsp.engine.backends.lora_files import GENERIC, RESIDUAL, adapter_file, route_factors
from mole_lsp.engine.backends.merged_route import MergeUnsupported, merged_file
from mole_lsp.engine.experts import ROUTE_BASE, ROUTE_NL, ROUTE_SHARED, ExpertManager
from mole_lsp.io import sha256_file

N_BATCH = 512
LORA_DTYPE = "f32"  # the adapters' tensor type; f16 measured no faster (the cost is llama.cpp's extra graph nodes per linear, not the bytes)
MAX_CTX = 8192
MAX_MERGED = 1  # merged models kept loaded: each costs a model as large as the base plus its own KV cache
MERGED_CTX = 4096  # a merged model's context (a completion's prompt and output); longer ones move to the base
# Merged routes by default (the llamacppMerge setting): on the quick-start Q4_1 base they decode at the bare
# base's speed, at the bare floor with the merged tensors in Q8_0 (bench/RESULTS.md "bench_backends"; back in
# Q4_1 they cost agreement).
MERGE = True
MERGED_TYPE: str | None = "Q8_0"  # merged tensors coarser than this are written in it; None: each tensor's own


def available() -> bool:
    """Whether llama-cpp-python can be imported (the optional ``fast`` extra)."""
    try:
        import llama_cpp  # noqa: F401
    except Exception:  # ImportError, or a wheel whose native library does not load
        return False
    return True


class _Seq:
    """One llama context and what it holds: the token ids and the route each position went through.
    ``route``: the route merged into its model (None: the base model, routes set as LoRA adapters)."""

    def __init__(self, model: Any, ctx: Any, batch: Any, route: str | None = None) -> None:
        self.model, self.ctx, self.batch, self.route = model, ctx, batch, route
        self.n_ctx = ctx.n_ctx()
        self.ids: list[int] = []
        self.routes: list[str] = []

    def common(self, ids: Sequence[int], routes: Sequence[str], limit: int) -> int:
        """How many leading positions hold ``ids`` with ``routes`` (at most ``limit``)."""
        n, limit = 0, min(limit, len(self.ids))
        while n < limit and self.ids[n] == ids[n] and self.routes[n] == routes[n]:
            n += 1
        return n

    def trim(self, n: int) -> int:
        """Keep the first ``n`` positions (all of them go when the context cannot cut); returns the kept."""
        if n >= len(self.ids):
            return len(self.ids)
        if n <= 0 or not self.ctx.kv_cache_seq_rm(0, n, -1):
            self.ctx.kv_cache_clear()
            n = 0
        del self.ids[n:], self.routes[n:]
        return n

    def close(self, model: bool) -> None:
        self.batch.close()
        self.ctx.close()
        if model:
            self.model.close()


class LlamaCppBackend(Backend):
    """``gguf`` run by llama.cpp with the adapters of ``experts.mole`` (see the module docstring).
    ``merge``: run one-route requests on merged models (files under ``merge_dir``)."""

    name = "llamacpp"
    merges = False

    def __init__(self, gguf: Path, experts: ExpertManager, *, lora_dir: Path, n_ctx: int | None = None,
                 threads: int | None = None, n_head: int | None = None, n_head_kv: int | None = None,
                 merge: bool = MERGE, merge_dir: Path | None = None) -> None:
        import llama_cpp
        from llama_cpp import _internals

        self._ll = llama_cpp
        self._internals = _internals
        from llama_cpp._logger import set_verbose

        set_verbose(False)  # errors only (as Llama(verbose=False)): llama.cpp logs every adapter switch
        self.experts = experts
        self.gguf = gguf
        self.lora_dir = lora_dir
        self.merge = merge
        self.merge_dir = merge_dir or lora_dir.parent / "gguf-merged"
        self.merge_off: str | None = None  # why routes cannot be merged into this base, once found
        # Whether a request waits for its route's merged file to be written (seconds, once per route
        # content); else it runs with the LoRA adapter while the file is written in the background.
        self.merge_wait = False
        self.merge_type = MERGED_TYPE
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mole-merge")
        self._writing: dict[str, Future[Path | None]] = {}
        self.heads = (n_head, n_head_kv)
        self._mparams = llama_cpp.llama_model_default_params()
        model = _internals.LlamaModel(path_model=str(gguf), params=self._mparams, verbose=False)
        self._threads = threads or torch.get_num_threads()
        self.base = self._open(model, n_ctx=n_ctx or min(model.n_ctx_train(), MAX_CTX))
        self.n_ctx = self.base.ctx.n_ctx()
        self.n_vocab = model.n_vocab()
        self.stamp: Hashable = None  # the weights behind the routes (the KV store's stamp)
        self._epoch: int | None = None
        self._plans: dict[str, tuple[tuple[Any, ...], tuple[float, ...]]] = {}
        self._adapters: dict[Path, Any] = {}
        self._active: tuple[Any, ...] | None = None
        self._gguf_sha: str | None = None
        self._merged_files: dict[str, Path | None] = {}  # route -> its merged file (this epoch)
        self._merged: OrderedDict[Path, _Seq] = OrderedDict()  # loaded merged models, least recent first
        self.merge_load_s: float | None = None  # seconds the last merged model took to load
        self.kv = _SingleSequence(self)

    def _open(self, model: Any, route: str | None = None, n_ctx: int | None = None) -> _Seq:
        params = self._ll.llama_context_default_params()
        params.n_ctx = n_ctx or min(self.n_ctx, MERGED_CTX)
        params.n_batch = params.n_ubatch = N_BATCH
        params.n_threads = params.n_threads_batch = self._threads
        params.no_perf = True
        ctx = self._internals.LlamaContext(model=model, params=params, verbose=False)
        return _Seq(model, ctx, self._internals.LlamaBatch(n_tokens=N_BATCH, embd=0, n_seq_max=1, verbose=False),
                    route)

    @property
    def seqs(self) -> list[_Seq]:
        return [self.base, *self._merged.values()]

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

    def _route_factors(self, route: str) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """One LoRA for ``route``: ``-res`` and the route's parts."""
        return route_factors(self.experts.mole, [(RESIDUAL, -1.0)] + [(p, 1.0) for p in self._part_names(route)])

    def _adapter(self, route: str) -> Any:
        path = adapter_file(self._route_factors(route), route, self.lora_dir, n_head=self.heads[0],
                            n_head_kv=self.heads[1], dtype=LORA_DTYPE)  # type: ignore[arg-type]
        if path is None:
            return None
        ptr = self._adapters.get(path)
        if ptr is None:
            ptr = self._ll.llama_adapter_lora_init(self.base.model.model, str(path).encode())
            if not ptr:
                raise RuntimeError(f"llama.cpp refused the LoRA adapter {path}")
            self._adapters[path] = ptr
        return ptr

    def _check_epoch(self) -> None:
        """Plans and merged files follow the weights behind the routes (the experts' epoch)."""
        if self._epoch != self.experts.epoch:
            self._drop_adapters()
            self._merged_files.clear()
            self._writing.clear()  # a file being written for the old weights is finished, not used
            self._epoch = self.experts.epoch

    def _plan(self, route: str) -> tuple[tuple[Any, ...], tuple[float, ...]]:
        """The adapter (none or one, scale 1) of ``route``; rebuilt after any change of the weights behind
        a route."""
        self._check_epoch()
        plan = self._plans.get(route)
        if plan is None:
            adapter = None
            if self.experts.mole is not None and route != ROUTE_BASE:
                adapter = self._adapter(route)
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
        if self._ll.llama_set_adapters_lora(self.base.ctx.ctx, arr, n, sc) != 0:
            raise RuntimeError(f"llama.cpp could not set the adapters of route {route!r}")
        self._active = key

    def _drop_adapters(self) -> None:
        if self._adapters:
            self._ll.llama_set_adapters_lora(self.base.ctx.ctx, None, 0, None)
            for ptr in self._adapters.values():
                self._ll.llama_adapter_lora_free(ptr)
        self._adapters.clear()
        self._plans.clear()
        self._active = None

    # -- merged routes --------------------------------------------------------------------------------------
    def merged_path(self, route: str, wait: bool = True) -> Path | None:
        """``route``'s merged GGUF, or None: not mergeable (no adapters; a base tensor type the gguf package
        cannot quantize: ``merge_off`` says why) or, unless ``wait``, being written in the background."""
        self._check_epoch()
        if route in self._merged_files:
            return self._merged_files[route]
        job = self._writing.get(route)
        if job is None:
            factors = self._route_factors(route) if self.experts.mole is not None and route != ROUTE_BASE \
                and self.merge_off is None else {}
            if not factors:
                self._merged_files[route] = None
                return None
            if self._gguf_sha is None:
                self._gguf_sha = sha256_file(self.gguf)
            args = (self.gguf, self._gguf_sha, factors, route, self.merge_dir)
            kw = {"n_head": self.heads[0], "n_head_kv": self.heads[1], "qtype": self.merge_type}
            path = merged_file(*args, **kw, write=False)
            if path is not None:
                self._merged_files[route] = path
                return path
            job = self._writing[route] = self._writer.submit(merged_file, *args, **kw)
        if not (wait or job.done()):
            return None  # being written: the LoRA adapter meanwhile
        del self._writing[route]
        path = None
        try:
            path = job.result()
        except MergeUnsupported as e:
            self.merge_off = f"routes run as LoRA adapters: {e}"
        except OSError:  # e.g. a full disk: the route keeps its LoRA adapter until its weights change
            pass
        self._merged_files[route] = path
        return path

    def _merged_seq(self, route: str) -> _Seq | None:
        path = self.merged_path(route, wait=self.merge_wait)
        if path is None:
            return None
        seq = self._merged.get(path)
        if seq is not None:
            self._merged.move_to_end(path)
            return seq
        t0 = time.perf_counter()
        model = self._internals.LlamaModel(path_model=str(path), params=self._mparams, verbose=False)
        seq = self._merged[path] = self._open(model, route)
        self.merge_load_s = time.perf_counter() - t0
        while len(self._merged) > MAX_MERGED:
            _, old = self._merged.popitem(last=False)
            old.close(model=True)
        return seq

    def seq_for(self, routes: Sequence[str]) -> _Seq:
        """The context a request whose prompt takes ``routes`` starts in: the merged model of its one route,
        else the base with adapters."""
        route = routes[0] if routes else ROUTE_BASE
        if not self.merge or route == ROUTE_BASE or len(routes) >= MERGED_CTX // 2 or any(r != route for r in routes):
            return self.base
        return self._merged_seq(route) or self.base

    # -- the sequence -------------------------------------------------------------------------------------
    def _decode(self, seq: _Seq, ids: Sequence[int], routes: Sequence[str]) -> None:
        start = 0
        while start < len(ids):  # runs of equal route, at most N_BATCH positions each
            route = routes[start]
            end = start + 1
            while end < len(ids) and routes[end] == route and end - start < N_BATCH:
                end += 1
            if seq.route is None:
                self._use(route)
            elif route != seq.route:
                raise ValueError(f"route {route!r} in the merged model of {seq.route!r}")
            seq.batch.set_batch(list(ids[start:end]), n_past=len(seq.ids), logits_all=False)
            seq.ctx.decode(seq.batch)
            seq.ids += ids[start:end]
            seq.routes += routes[start:end]
            start = end

    def _to_base(self, seq: _Seq) -> _Seq:
        """Continue ``seq`` (a merged model's) in the base context: its positions, past the prefix the base
        already holds, are decoded there with adapters."""
        n = self.base.trim(self.base.common(seq.ids, seq.routes, len(seq.ids)))
        self._decode(self.base, seq.ids[n:], seq.routes[n:])
        return self.base

    def forward(self, ids: list[int], labels: Sequence[str], past: Any) -> tuple[torch.Tensor, Any]:
        if not ids:
            raise ValueError("forward needs at least one position")
        names: dict[str, str] = {}
        for lb in labels:
            if lb not in names:
                names[lb] = self.experts.route_name(lb)
        routes = [names[lb] for lb in labels]
        seq = past if isinstance(past, _Seq) else None
        try:
            if seq is None:
                seq = self.seq_for(routes)
                seq.trim(0)
            elif seq.route is not None and (len(seq.ids) + len(ids) > seq.n_ctx or any(r != seq.route for r in routes)):
                seq = self._to_base(seq)  # the output left the merged route (a fence opened) or its context
            if len(seq.ids) + len(ids) > self.n_ctx:
                raise ValueError(f"{len(seq.ids) + len(ids)} positions exceed the llama.cpp context ({self.n_ctx})")
            self._decode(seq, ids, routes)
        except BaseException:
            if seq is not None:
                seq.trim(0)  # what a failed decode left in the context is unknown
            raise
        ptr = seq.ctx.get_logits_ith(-1)
        logits = np.ctypeslib.as_array(ptr, shape=(self.n_vocab,)).copy()
        return torch.from_numpy(logits), seq

    def close(self) -> None:
        self._writer.shutdown(wait=True, cancel_futures=True)
        self._drop_adapters()
        for seq in self._merged.values():
            seq.close(model=True)
        self._merged.clear()
        self.base.close(model=True)


class _SingleSequence:
    """The KV store interface over the backend's contexts, one sequence each (``max_bytes`` 0 turns reuse
    off): a request reuses the context it would start in (:meth:`LlamaCppBackend.seq_for`)."""

    def __init__(self, backend: LlamaCppBackend, max_bytes: int = 1) -> None:
        self.backend = backend
        self.max_bytes = max_bytes

    def take(self, key: str, ids: Sequence[int], routes: Sequence[str], stamp: Hashable) -> tuple[int, Any]:
        b = self.backend
        if self.max_bytes <= 0 or stamp != b.stamp:
            self.clear()
            b.stamp = stamp
            return 0, None
        seq = b.seq_for(routes)
        n = seq.trim(seq.common(ids, routes, len(ids) - 1))
        return n, (seq if n else None)

    def put(self, key: str, ids: Sequence[int], routes: Sequence[str], past: Any, stamp: Hashable) -> None:
        if isinstance(past, _Seq) and (list(ids) != past.ids or list(routes) != past.routes):
            past.trim(0)  # not what the context holds: do not trust it
        self.backend.stamp = stamp

    def clear(self) -> None:
        for seq in self.backend.seqs:
            seq.trim(0)
