"""The engine facade over a remote OpenAI-compatible server (vLLM, llama.cpp's llama-server,
llama-cpp-python's server) that serves the routes exported by ``mole-lsp export`` as named adapters.

>>> engine = RemoteEngine("http://gpu-box:8000", api_key=None)
>>> engine.ensure_core()                                  # GET /v1/models: which adapter serves what
>>> engine.complete("def fib(n):\\n    ", "", "python").text

One served adapter applies to a whole request, so the adapter is chosen per request: a completion takes
its document language's adapter (falling back through the registry, then the shared ``code`` route,
then the bare base); an explanation runs in automated mode segment by segment: the stream is read
token by token through the fence parser, and where a fence changes the route the stream is closed and
the answer continues with the next segment's adapter. Inside a segment the server computes EVERY
position (prompt included) with that segment's adapter: exact for completions (all code of one
language, as mole-lsp routes them), an approximation for mixed NL/code prompts (mole-lsp routes each
position by its own label).

Served names (``GET /v1/models``): the route's name itself (``python``, ``nl``, ``code``: the folder
names of an export, as its README serves them with ``--lora-modules python=./python``) or a name ending
in ``-<route>``, ``_<route>``, ``/<route>`` or ``:<route>`` (``smollm2-python``); a model matching no
route is the bare base. The ``remoteModels`` setting maps routes to names explicitly. llama.cpp's
``llama-server`` serves one model and picks adapters per request (``"lora": [{"id", "scale"}]``): when
``GET /lora-adapters`` lists them, their file names (``mole-python-lora.gguf``) or folders name the routes.

Degenerate repetition stops a stream as it stops the local decoder (``stop_reason == "repetition"``, the
text before the loop plus one copy, :mod:`~mole_lsp.engine.repetition`): the detector counts each streamed
piece as one token, which it is on llama-server and vLLM (one SSE event per token); the stream is closed
there, so the server stops generating.

Prompts: :func:`~mole_lsp.engine.prompts.completion_prompt` (and the explain/translate prompts) with the
base model's tokenizer when it is on this machine (``baseModel``); without it a byte tokenizer stands in,
so the completion prompt is the text before the cursor cut at a line start to ``3 * contextTokens``
bytes, without FIM, and explanations use the plain instruction layout (no chat template).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
import time
from collections.abc import Iterator, Mapping
from typing import Any

import httpx

from mole_lsp.engine.decode import Cancel, GenerationResult, _find_stop, _without_line_rest, is_cancelled
from mole_lsp.engine.prompts import (
    Prompt,
    completion_prompt,
    completion_stop,
    explain_prompt,
    translate_prompt,
)
from mole_lsp.engine.repetition import STOP_REASON as REPETITION
from mole_lsp.engine.repetition import RepetitionDetector
from mole_lsp.errors import UserError
from mole_lsp.lang.fence import NL, UNKNOWN, FenceParser
from mole_lsp.lang.registry import Registry, load_registry

log = logging.getLogger(__name__)

SHARED = "code"  # the export's route for code of a language without an expert (export/routes.py)
BASE = "base"  # a served model that matches no route: the untouched base
BYTES_PER_TOKEN = 3  # without the base's tokenizer: bytes of prompt per token of contextTokens
_SEPARATORS = ("-", "_", "/", ":")


def match_routes(names: list[str], registry: Registry, override: Mapping[str, str] | None = None) -> dict[str, str]:
    """route (language id, ``nl``, ``code``, ``base``) -> served model name, from the server's model
    names and the ``override`` (route or language alias -> name, which wins)."""
    routes = [*registry.ids, NL, SHARED]
    found: dict[str, tuple[int, str]] = {}  # route -> (rank: 0 = exact name, 1 = suffix, name)
    for name in names:
        low = name.lower()
        hits = [(0 if low == r else 1, r) for r in routes
                if low == r or any(low.endswith(sep + r) for sep in _SEPARATORS)]
        if not hits:
            found.setdefault(BASE, (2, name))
            continue
        rank, route = min(hits, key=lambda h: (h[0], -len(h[1])))  # "objective-c" is not "c"
        if route not in found or rank < found[route][0]:
            found[route] = (rank, name)
    table = {route: name for route, (_, name) in found.items()}
    for key, name in (override or {}).items():
        route = key if key in (NL, SHARED, BASE) else registry.resolve(key)
        if route is None:
            raise UserError(f"remoteModels: unknown language {key!r}")
        table[route] = name
    return table


def byte_tokenizer() -> Any:
    """A tokenizer of one token per byte (no merges, no chat template, no BOS) for prompts without the
    base's tokenizer: the prompt builders then cut and label text by bytes."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    tok = Tokenizer(models.BPE(vocab={c: i for i, c in enumerate(alphabet)}, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=tok)


class _NoKV:
    """The server keeps its own caches (prefix caching); the setting is accepted and unused."""

    max_bytes = 0


class Stream:
    """One streamed ``/v1/completions`` request: iterate for text pieces (one SSE event each, a token on
    llama.cpp and vLLM); ``finish_reason`` once it ends. ``close()`` (also from another thread, and when
    ``cancel`` is set) drops the connection: the server sees the client go and stops generating."""

    def __init__(self, client: httpx.Client, body: dict[str, Any], cancel: Cancel) -> None:
        self.finish_reason: str | None = None
        self._cancel = cancel
        self._done = threading.Event()
        request = client.build_request("POST", "/v1/completions", json=body)
        self._response = client.send(request, stream=True)
        if self._response.status_code != 200:
            self._response.read()
            self.close()
            raise RemoteError(f"{self._response.status_code} from the server: {self._response.text[:300]}")
        if cancel is not None:  # a read may block for a whole prefill: close from a watcher
            threading.Thread(target=self._watch, daemon=True).start()

    def _watch(self) -> None:
        while not self._done.wait(0.02):
            if is_cancelled(self._cancel):
                self.close()
                return

    def __iter__(self) -> Iterator[str]:
        try:
            for line in self._response.iter_lines():
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    break
                choice = (json.loads(data).get("choices") or [{}])[0]
                if choice.get("finish_reason"):
                    self.finish_reason = choice["finish_reason"]
                if choice.get("text"):
                    yield choice["text"]
        except (httpx.StreamError, httpx.ReadError, httpx.RemoteProtocolError):
            if not is_cancelled(self._cancel):
                raise
        finally:
            self.close()

    def close(self) -> None:
        self._done.set()
        self._response.close()


class LoopWatch:
    """The repetition detector on a streamed answer: each streamed piece is one token (interned to an id:
    equal text, equal id), so the rule's token counts are the server's tokens without a local tokenizer."""

    def __init__(self) -> None:
        self.detector = RepetitionDetector()
        self.ends: list[int] = []  # len(text) after each piece, where a loop's cut falls
        self.ids: dict[str, int] = {}

    def push(self, text: str, piece: str) -> str | None:
        """``text`` (which ends with ``piece``) cut to before its loop plus one copy of the loop's unit, when
        it now ends in a loop; else None."""
        self.ends.append(len(text))
        loop = self.detector.push(self.ids.setdefault(piece, len(self.ids)))
        return None if loop is None else loop.keep(text, self.ends)


class RemoteError(RuntimeError):
    """The server answered with an error or could not be reached."""


class RemoteEngine:
    """What the language server needs of an :class:`~mole_lsp.engine.engine.Engine`, served remotely."""

    packs = None  # no pack store: the server holds the adapters
    backend_reason = "the backend setting is openai"

    def __init__(self, endpoint: str, *, api_key: str | None = None, models: Mapping[str, str] | None = None,
                 tokenizer: Any = None, fim: Any = None, registry: Registry | None = None,
                 timeout: float = 120.0) -> None:
        if not endpoint:
            raise UserError("the openai backend needs an endpoint (setting mole.endpoint or --endpoint URL)")
        base = endpoint.rstrip("/")
        base = base[: -len("/v1")] if base.endswith("/v1") else base
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.client = httpx.Client(base_url=base, headers=headers, timeout=httpx.Timeout(timeout, connect=10.0))
        self.endpoint = base
        self.registry = registry or load_registry()
        self.override = dict(models or {})
        self.tokenizer = tokenizer  # the base's, or None: the byte tokenizer stands in
        self._prompt_tokenizer = tokenizer if tokenizer is not None else byte_tokenizer()
        self.fim = fim if tokenizer is not None else None
        self.routes: dict[str, str] | None = None  # route -> served name, from ensure_core
        # llama-server: adapter name -> its id (sent as the request's "lora" scales), and the one model
        self._lora: dict[str, int] = {}
        self._base_model = ""
        self.kv = _NoKV()
        self.auto_install = False
        self.progress = None
        self._notes: list[str] = []
        self._said: set[str] = set()
        self._lock = threading.RLock()

    # -- what the server calls besides generating -------------------------------------------------------
    @property
    def base_only(self) -> bool:
        return self.routes is not None and not (set(self.routes) - {BASE})

    def ensure_core(self) -> bool:
        """Ask the server which models it serves (once; again after retry_core)."""
        with self._lock:
            if self.routes is None:
                try:
                    reply = self.client.get("/v1/models")
                    reply.raise_for_status()
                    names = [m["id"] for m in reply.json().get("data", [])]
                except (httpx.HTTPError, ValueError, KeyError, TypeError) as e:
                    raise UserError(f"cannot list the models of {self.endpoint}: {e}") from e
                if not names:
                    raise UserError(f"{self.endpoint} serves no model")
                self.routes = match_routes(names, self.registry, self.override)
                self.routes.setdefault(BASE, names[0])
                if set(self.routes) == {BASE} and (adapters := self._lora_adapters()):
                    # llama.cpp's llama-server: one model, adapters picked per request by id
                    self._base_model = names[0]
                    self._lora = {_adapter_name(a["path"], self.registry): int(a["id"]) for a in adapters}
                    self.routes = {**match_routes(list(self._lora), self.registry, self.override), BASE: names[0]}
                log.info("served routes: %s", self.routes)
            return not self.base_only

    def _lora_adapters(self) -> list[dict[str, Any]]:
        """llama-server's ``GET /lora-adapters`` (``[{"id", "path", "scale"}]``); [] from other servers."""
        try:
            reply = self.client.get("/lora-adapters")
            listed = reply.json() if reply.status_code == 200 else []
        except (httpx.HTTPError, ValueError):
            return []
        ok = isinstance(listed, list) and all(isinstance(a, dict) and "id" in a and "path" in a for a in listed)
        return listed if ok else []

    def retry_core(self) -> None:
        with self._lock:
            self.routes = None

    def take_notes(self) -> list[str]:
        notes, self._notes = self._notes, []
        return notes

    def unload_expert(self, lang: str) -> None:
        """Nothing is loaded here."""

    def close(self) -> None:
        self.client.close()

    def _note(self, text: str) -> None:
        if text not in self._said:
            self._said.add(text)
            self._notes.append(text)

    def model_for(self, label: str) -> tuple[str, str | None, str]:
        """(served name, expert language or None, route name) for a position labelled ``label``."""
        self.ensure_core()
        routes = self.routes or {}
        if label in self.registry:
            for lang in self.registry.fallback_chain(label):
                if lang in routes:
                    if lang != label:
                        self._note(f"no {label} adapter on {self.endpoint}: using the {lang} adapter")
                    return routes[lang], lang, lang
        if label == NL and NL in routes:
            return routes[NL], None, NL
        if label != NL and SHARED in routes:
            if label in self.registry:
                self._note(f"no {label} adapter on {self.endpoint}: using the shared code adapter")
            return routes[SHARED], None, "shared"
        return routes[BASE], None, "base"

    # -- generation -------------------------------------------------------------------------------------
    def _stream(self, model: str, prompt: str, max_tokens: int, stop: list[str], temperature: float,
                cancel: Cancel) -> Stream:
        body = {"model": model, "prompt": prompt, "max_tokens": max(1, max_tokens), "stream": True,
                "temperature": temperature, "stop": stop[:4] or None,  # OpenAI takes at most 4 stops
                "repeat_penalty": 1.0}  # llama-cpp-python's server defaults to 1.1: greedy would not be greedy
        if self._lora:  # every adapter listed: unlisted ones would keep the server's global scale
            chosen = self._lora.get(model)
            body["model"] = self._base_model
            body["lora"] = [{"id": i, "scale": 1.0 if i == chosen else 0.0} for i in sorted(self._lora.values())]
        try:
            return Stream(self.client, body, cancel)
        except httpx.HTTPError as e:
            raise RemoteError(f"{self.endpoint}: {e}") from e

    def _text(self, prompt: Prompt) -> str:
        """The prompt as text for the server, which adds its own BOS (so a leading BOS is left out)."""
        tok = self._prompt_tokenizer
        ids = prompt.ids
        bos = getattr(tok, "bos_token_id", None)
        if ids and bos is not None and ids[0] == bos:
            ids = ids[1:]
        return tok.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)

    def complete(self, prefix: str, suffix: str, language: str | None, *, max_new_tokens: int = 64,
                 context_tokens: int = 1024, cancel: Cancel = None, temperature: float = 0.0,
                 install: bool | None = None, cache_key: str | None = None,
                 multi_line_ms: float | None = None) -> GenerationResult:
        """Text to insert at the cursor, with the document language's adapter (see Engine.complete)."""
        t0 = time.perf_counter()
        label = language if language in self.registry else UNKNOWN
        budget = context_tokens if self.tokenizer is not None else context_tokens * BYTES_PER_TOKEN
        prompt = completion_prompt(self._prompt_tokenizer, prefix, suffix, label, budget, self.fim)
        # No token healing remotely: the indentation the prompt left out goes back into the prompt.
        text_in = self._text(prompt) + prompt.heal
        prompt = dataclasses.replace(prompt, line_prefix=prompt.line_prefix + prompt.heal, heal="")
        model, expert, route = self.model_for(label)
        text, reason, n = "", "max_tokens", 0
        single = prompt.single_line
        budget_s = multi_line_ms / 1e3 if multi_line_ms and not single else None
        stream = self._stream(model, text_in, max_new_tokens, ["\n"] if single else [], temperature, cancel)
        t_first = None
        loops = LoopWatch()
        for piece in stream:
            t_first = t_first or time.perf_counter()
            text += piece
            n += 1
            cut = completion_stop(text, prompt) if "\n" in piece else None
            if cut is None and (kept := loops.push(text, piece)) is not None:
                cut = kept, REPETITION
            if cut is None and "\n" in piece and budget_s is not None and time.perf_counter() - t_first > budget_s:
                cut = text[: text.rfind("\n")], "time_budget"
            if cut is not None:
                stream.close()
                text, reason = cut
                break
        else:
            reason = _reason(stream, cancel, single)
            if reason in ("max_tokens", "eos", "end_of_line") and not single:
                cut = completion_stop(text, prompt, final=True)
                if cut is not None:
                    text, reason = cut
        if single:
            text = _without_line_rest(text.split("\n", 1)[0], suffix)
        return self._result(text, "completion", language if label != UNKNOWN else None, expert,
                            [route] * n, [label] * n, reason, n, t0)

    def explain(self, code: str, language: str | None, *, max_new_tokens: int = 256, cancel: Cancel = None,
                install: bool | None = None) -> GenerationResult:
        """A markdown explanation, segment by segment: NL adapter for prose, the code's inside fences."""
        t0 = time.perf_counter()
        prompt = explain_prompt(self._prompt_tokenizer, code, language or "", self.registry)
        text_in = prompt.text or self._text(prompt)
        parser = FenceParser(self.registry)
        label = parser.feed(text_in)
        text, routes, labels, reason = "", [], [], "max_tokens"
        loops = LoopWatch()  # over the whole answer, across segments
        switched = True
        while switched and len(labels) < max_new_tokens:
            model, _, route = self.model_for(label)
            stream = self._stream(model, text_in + text, max_new_tokens - len(labels), prompt.stop, 0.0, cancel)
            switched = False
            for piece in stream:
                text += piece
                label = parser.feed(piece)
                labels.append(label)
                routes.append(route)
                if (hit := _find_stop(text, piece, prompt.stop)) is not None:
                    text, reason = hit
                    stream.close()
                    break
                if (kept := loops.push(text, piece)) is not None:
                    text, reason = kept, REPETITION
                    stream.close()
                    break
                if self.model_for(label)[0] != model:  # a fence opened or closed: next segment
                    stream.close()
                    switched = True
                    break
            else:
                reason = _reason(stream, cancel, False)
        expert = None
        if language in self.registry:
            expert = self.model_for(language)[1]
        result = self._result(text, "automated", language, expert, routes, labels, reason, len(labels), t0)
        return result

    def translate(self, code: str, source: str | None, target: str, *, max_new_tokens: int = 256,
                  cancel: Cancel = None, install: bool | None = None) -> GenerationResult:
        """``code`` rewritten in ``target``: the whole request takes the target's adapter."""
        t0 = time.perf_counter()
        tgt = target if target in self.registry else self.registry.resolve(target)
        if tgt is None:
            raise ValueError(f"unknown target language {target!r}")
        prompt = translate_prompt(self._prompt_tokenizer, code, source or "", tgt, self.registry)
        model, expert, route = self.model_for(tgt)
        text, n = "", 0
        stream = self._stream(model, prompt.text or self._text(prompt), max_new_tokens, prompt.stop, 0.0, cancel)
        reason = "max_tokens"
        loops = LoopWatch()
        for piece in stream:
            text += piece
            n += 1
            if (hit := _find_stop(text, piece, prompt.stop)) is not None:
                text, reason = hit
                stream.close()
                break
            if (kept := loops.push(text, piece)) is not None:
                text, reason = kept, REPETITION
                stream.close()
                break
        else:
            reason = _reason(stream, cancel, False)
        return self._result(text, "manual", tgt, expert, [route] * n, [tgt] * n, reason, n, t0)

    def _result(self, text: str, mode: str, language: str | None, expert: str | None, routes: list[str],
                labels: list[str], reason: str, n: int, t0: float) -> GenerationResult:
        return GenerationResult(text=text, mode=mode, language=language, expert=expert, routes=routes,
                                labels=labels, stop_reason=reason, prompt_tokens=0, new_tokens=n,
                                timings={"total": (time.perf_counter() - t0) * 1e3},
                                notes=self.take_notes(), base_only=self.base_only)


def _adapter_name(path: str, registry: Registry) -> str:
    """A llama-server adapter's name from its file: ``.../mole-python-lora.gguf`` -> ``mole-python`` (the
    export's file name), else its folder's name (``python/adapter.gguf`` -> ``python``)."""
    from pathlib import PurePath

    p = PurePath(path)
    stem = p.stem.removesuffix("-lora")
    return stem if set(match_routes([stem], registry)) != {BASE} else (p.parent.name or stem)


def _reason(stream: Stream, cancel: Cancel, single_line: bool) -> str:
    """The stop reason of a stream that ended by itself (or was cancelled)."""
    if is_cancelled(cancel):
        return "cancelled"
    if stream.finish_reason == "length":
        return "max_tokens"
    if stream.finish_reason == "stop":
        return "end_of_line" if single_line else "eos"
    return stream.finish_reason or "eos"


def open_remote(config: Mapping[str, Any]) -> RemoteEngine:
    """A RemoteEngine from the server's engine config (host.py): ``endpoint``, ``api_key``,
    ``remote_models``, and ``base_model`` for the tokenizer when that base is on this machine."""
    tokenizer, fim = _local_tokenizer(config.get("base_model"))
    return RemoteEngine(config.get("endpoint") or "", api_key=config.get("api_key") or None,
                        models=config.get("remote_models") or {}, tokenizer=tokenizer, fim=fim)


def _local_tokenizer(spec: str | None) -> tuple[Any, Any]:
    """(tokenizer, FIM tokens) of the base model ``spec`` when it is a local folder or in the Hub cache
    (never downloaded: the model itself runs remotely); (None, None) otherwise."""
    if not spec:
        return None, None
    from pathlib import Path

    from transformers import AutoTokenizer

    from mole_lsp.engine.folder import detect_fim_tokens

    try:
        path = Path(spec).expanduser()
        if path.is_file() and path.suffix == ".gguf":
            return AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name), None
        tok = AutoTokenizer.from_pretrained(spec, local_files_only=True)
        return tok, detect_fim_tokens(path) if path.is_dir() else None
    except Exception as e:  # noqa: BLE001 - any failure means: no local tokenizer
        log.info("no local tokenizer for %s (%s): prompts are cut by bytes", spec, e)
        return None, None
