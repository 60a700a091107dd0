"""Every custom method, command, notification and setting of the mole-lsp server, in one place.

Editors talk standard LSP to the server; this module documents what goes beyond it. The VS Code
extension mirrors these names in ``vscode-extension/src/protocol.ts``; keep the two in step.

Standard LSP used
-----------------
- ``textDocument/inlineCompletion`` (LSP 3.18, advertised with ``InlineCompletionOptions``): ghost text.
- ``textDocument/completion``: the same generation as one completion item, for clients without 3.18.
- ``$/cancelRequest``: stops a running generation between two tokens.
- ``$/progress`` (work-done progress): model load and pack downloads. Downloads run beside the model
  (completions answer with the fallback adapters meanwhile) and are cancellable
  (``window/workDoneProgress/cancel``); a cancelled pack is not fetched again automatically.
- ``window/showMessage``: bad settings, missing packs, degraded modes (said once).

Commands (``workspace/executeCommand``; ``arguments`` is a list holding ONE object)
-----------------------------------------------------------------------------------
``mole.explain``    ``{"uri": str, "range": Range}`` → ``{"markdown": str, "language": str, "stopReason": str}``
    Explains the selected code. The code is labelled by its language; the answer is generated in
    automated mode (NL adapter for prose, the code's expert inside fences).
``mole.translate``  ``{"uri": str, "range": Range, "target": str}`` →
    ``{"code": str, "language": str, "vscodeLanguageId": str, "stopReason": str}``
    ``target`` is a registry id or alias (``"rust"``, ``"c++"``). Manual mode: the source is read
    with the source expert, the output is generated with the target expert.
    ``stopReason`` (both): why the answer ended (``eos``, ``stop``, ``max_tokens``, ``cancelled``, ...);
    ``repetition``: the model fell into a loop and the answer ends before the repeated part (also said
    with ``window/showMessage``).
``mole.installPack`` ``{"languages": [str]}`` → ``{"installed": [str], "errors": {lang: reason}}``
``mole.removePack``  ``{"languages": [str]}`` → ``{"removed": [str], "errors": {lang: reason}}``
``mole.listPacks``   ``{}`` → ``{"packs": [PackInfo], "offline": bool, "repo": str, "revision": str}``
``mole.status``      ``{}`` → ``Status`` (the same object as the ``mole/status`` notification)

Notifications (server → client)
-------------------------------
``mole/status`` ``Status``: sent whenever the state, the active expert or offline-ness changes.
    ``activeUri``, ``vscodeLanguageId``, ``activeLanguage``, ``activeExpert`` and ``baseOnly`` describe
    the last FINISHED generation and change together; ``state: "generating"`` alone says that the next
    one is running. ``activeExpert: null`` means that no expert pack took part: the shared adapter
    alone answered (the language has no expert and no usable fallback, or no language was detected),
    or the bare base model when ``baseOnly`` is true. An explanation's prose always comes from the NL
    adapter; its ``activeExpert`` is the expert used for the code's language, null when there was none.
    ``activeUri`` is the document the request came from, as the client sent it, when the generation
    was in that document's language (completions, explanations). It is null before the first request
    and after a translation, whose expert is the target language's: match it against the editor's URI
    before showing ``activeExpert`` for that editor. ``vscodeLanguageId`` is the VS Code languageId of
    ``activeLanguage``: the document's own languageId (as sent in ``didOpen``) when ``activeUri`` is
    set, the target's (as in ``mole.translate``'s result) after a translation.

Debug only, not part of the contract
------------------------------------
``mole/trace`` ``{...}``: sent after every generation, and for every request that never started one,
    only when the server runs with ``MOLE_LSP_TRACE=1`` in its environment (tests and benchmarks read
    routes per token, stop reason, token counts and timings from it). Its fields follow the engine's
    internals and may change in any release; editors must not depend on it.

Settings
--------
Sent as ``initializationOptions`` (the object below) and with ``workspace/didChangeConfiguration``
(``{"settings": {"mole": {...}}}`` or the object itself). Every field is optional; an invalid value is
reported with ``window/showMessage`` and the previous value stays in force. See ``SETTINGS``.
"""

from __future__ import annotations

from typing import Any, Literal, TypedDict

# -- method names ---------------------------------------------------------------------------------
CMD_EXPLAIN = "mole.explain"
CMD_TRANSLATE = "mole.translate"
CMD_INSTALL_PACK = "mole.installPack"
CMD_REMOVE_PACK = "mole.removePack"
CMD_LIST_PACKS = "mole.listPacks"
CMD_STATUS = "mole.status"
COMMANDS = (CMD_EXPLAIN, CMD_TRANSLATE, CMD_INSTALL_PACK, CMD_REMOVE_PACK, CMD_LIST_PACKS, CMD_STATUS)

NOTIFY_STATUS = "mole/status"

# Debug only, not part of the contract (see above; not mirrored in protocol.ts): the trace notification
# and the environment variable that turns it on ("1").
DEBUG_TRACE = "mole/trace"
DEBUG_TRACE_ENV = "MOLE_LSP_TRACE"

State = Literal["starting", "loading", "ready", "downloading", "generating", "error"]


class Status(TypedDict):
    state: State
    activeExpert: str | None  # expert pack used by the last generation (may be a fallback); None: no expert
    activeLanguage: str | None  # registry id of the language the last generation was for
    activeUri: str | None  # document of the last generation when it was in that document's language
    vscodeLanguageId: str | None  # VS Code languageId of activeLanguage (the document's own when activeUri)
    baseOnly: bool  # no core pack: the bare base model answers
    offline: bool  # HF_HUB_OFFLINE / no network: cached packs only
    message: str | None  # human-readable detail ("downloading rust pack", an error, ...)


class PackInfo(TypedDict):
    language: str  # registry id
    name: str  # display name
    vscodeLanguageIds: list[str]  # VS Code languageIds the registry maps to this language (may be empty)
    installed: bool
    available: bool  # listed in the pack repository's index
    sizeBytes: int | None
    revision: str | None  # installed revision (commit sha)


# -- settings ---------------------------------------------------------------------------------------
# Values the "device" setting accepts (a JSON-schema/ECMAScript and Python regular expression alike).
DEVICE_PATTERN = r"^(auto|cpu|cuda|cuda:[0-9]+|mps)$"
BACKEND_PATTERN = r"^(auto|torch|llamacpp|openai)$"  # the "backend" setting (engine/backends, engine/remote.py)

# name → (type, default, help). The server validates against this table; the extension contributes
# the same names under "mole.*" in package.json.
SETTINGS: dict[str, tuple[type | tuple[type, ...], Any, str]] = {
    "baseModel": (str, "", "Hub repo id or local folder of the base model; empty = quick-start default."),
    "packRepo": (str, "", "Hub repository holding the packs for this base; empty = the base's default."),
    "packRevision": (str, "main", "Branch, tag or commit of the pack repository to install from."),
    "cacheDir": (str, "", "Where models and packs are cached; empty = the platform's user cache."),
    "device": (str, "auto", "auto, cpu, cuda, cuda:N (the Nth CUDA GPU) or mps."),
    "backend": (str, "auto", "What runs the model: auto (llama.cpp for a GGUF base on the CPU when llama-cpp-python is installed, else torch), torch, llamacpp, or openai (a remote OpenAI-compatible server at endpoint, e.g. vLLM or llama-server serving the exported adapters)."),
    "endpoint": (str, "", "URL of the OpenAI-compatible server of the openai backend (http://host:8000)."),
    "apiKey": (str, "", "Bearer key of the openai backend's server; empty = none."),
    "remoteModels": (dict, {}, "openai backend: route (language id, nl, code, base) -> served model name, over the names found in /v1/models."),
    "maxNewTokens": (int, 64, "Most tokens generated for one inline completion (1-1024)."),
    "explainMaxNewTokens": (int, 256, "Most tokens for an explanation or a translation (1-4096)."),
    "contextTokens": (int, 1024, "Token budget of the prompt around the cursor (64-16384)."),
    "debounceMs": (int, 150, "Wait this long after the last edit before generating (0-5000)."),
    "kvCacheMB": (int, 256, "Memory for the KV caches of recent prompts, reused by the next request; 0 = off (0-65536)."),
    "multiLineTimeMs": (int, 1000, "Time budget of a multi-line completion: whole lines so far are shown; 0 = none (0-60000)."),
    "llamacppMerge": (bool, True, "llamacpp backend: a completion runs on a copy of the base GGUF with its language's route folded into the weights (coarser tensors as Q8_0; written once per route in the background; no LoRA work per token) instead of the base with a LoRA adapter."),
    "reuseSuggestions": (bool, True, "Typing the start of the last suggestion shows the rest at once, without the model."),
    "enable": (dict, {"*": True}, "Per VS Code languageId on/off map; '*' is the default."),
    "offline": (bool, False, "Never touch the network: cached packs only."),
    "autoInstallPacks": (bool, True, "Download a missing expert pack the first time a language is used."),
    "idleUnloadMinutes": (int, 30, "Free the model after this many idle minutes; 0 = never (0-10080)."),
}
