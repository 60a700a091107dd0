"""Pack commands: ``mole.installPack``, ``mole.removePack``, ``mole.listPacks`` (see protocol.py).

Store calls may touch the network, so they run on the pack thread, never on the model thread:
completions keep working during a download (:mod:`~mole_lsp.server.downloads`, cancellable).
"""

from __future__ import annotations

from typing import Any

from lsprotocol import types

from mole_lsp.engine.engine import Engine
from mole_lsp.engine.sources import FolderPacks
from mole_lsp.packs.errors import StoreError
from mole_lsp.packs.format import CORE_PACK, EXPERTS_DIR
from mole_lsp.server import protocol
from mole_lsp.server.arguments import languages_argument, single_argument
from mole_lsp.server.downloads import can_install
from mole_lsp.server.host import EngineUnavailable
from mole_lsp.server.state import MoleServer


async def _engine_or_errors(ls: MoleServer, langs: list[str]) -> tuple[Engine | None, dict[str, str]]:
    try:
        return await ls.host.get_engine(), {}
    except EngineUnavailable as e:
        return None, {lang: f"the model is not loaded: {e}" for lang in langs}


def _pack_info(ls: MoleServer, lang: str, *, installed: bool, available: bool, size: int | None,
               revision: str | None) -> protocol.PackInfo:
    known = lang in ls.registry
    return {
        "language": lang,
        "name": ls.registry.get(lang).name if known else lang,
        "vscodeLanguageIds": list(ls.registry.get(lang).vscode_ids) if known else [],
        "installed": installed,
        "available": available,
        "sizeBytes": size,
        "revision": revision,
    }


def _store_pack_info(ls: MoleServer, lang: str, available: dict[str, Any], installed: dict[str, Any]
                     ) -> protocol.PackInfo:
    inst = installed.get(lang)
    avail = available.get(lang)
    size = getattr(inst, "size_bytes", None) if inst is not None else (avail or {}).get("size_bytes")
    return _pack_info(ls, lang, installed=inst is not None, available=avail is not None, size=size,
                      revision=getattr(inst, "revision", None))


def register(server: MoleServer) -> None:
    """Declare ``mole.installPack``, ``mole.removePack`` and ``mole.listPacks``."""

    @server.command(protocol.CMD_INSTALL_PACK)
    async def install_pack(ls: MoleServer, *arguments: Any) -> dict[str, Any]:
        langs = languages_argument(arguments, protocol.CMD_INSTALL_PACK)
        engine, errors = await _engine_or_errors(ls, langs)
        installed: list[str] = []
        if engine is None:
            return {"installed": installed, "errors": errors}
        store = engine.packs
        for raw in langs:
            lang = ls.registry.resolve(raw)
            if lang is None:
                errors[raw] = f"unknown language {raw!r}"
                continue
            try:
                if not can_install(store):
                    if store is None or store.expert_path(lang) is None:
                        raise StoreError(f"no {lang} expert in the pack folder")
                else:  # on the pack thread with a cancellable progress: completions go on meanwhile
                    await ls.jobs.downloads.install(engine, [lang], retry=True)
                installed.append(lang)
            except StoreError as e:  # not published, offline, refused, cancelled: one line per language
                errors[raw] = str(e)  # anything else is a bug: it fails the request with its traceback
        if errors:
            ls.say("; ".join(f"{k}: {v}" for k, v in errors.items()), types.MessageType.Warning, once=False)
        return {"installed": installed, "errors": errors}

    @server.command(protocol.CMD_REMOVE_PACK)
    async def remove_pack(ls: MoleServer, *arguments: Any) -> dict[str, Any]:
        langs = languages_argument(arguments, protocol.CMD_REMOVE_PACK)
        engine, errors = await _engine_or_errors(ls, langs)
        removed: list[str] = []
        if engine is None:
            return {"removed": removed, "errors": errors}
        store = engine.packs
        for raw in langs:
            lang = ls.registry.resolve(raw)
            if lang is None:
                errors[raw] = f"unknown language {raw!r}"
                continue
            if store is None or not hasattr(store, "remove"):
                errors[raw] = "packs in a local folder are not removed by mole-lsp"
                continue
            await ls.run_model(lambda lang=lang: engine.unload_expert(lang))
            if await ls.run_io(lambda lang=lang: store.remove(lang)):
                removed.append(lang)
            else:
                errors[raw] = f"the {lang} pack is not installed"
        return {"removed": removed, "errors": errors}

    @server.command(protocol.CMD_LIST_PACKS)
    async def list_packs(ls: MoleServer, *arguments: Any) -> dict[str, Any]:
        single_argument(list(arguments), protocol.CMD_LIST_PACKS)
        engine = await ls.host.get_engine()
        store = engine.packs
        if store is None or isinstance(store, FolderPacks):
            root = getattr(store, "root", None)
            experts = root / EXPERTS_DIR if root else None
            langs = sorted(p.name for p in experts.iterdir()) if experts and experts.is_dir() else []
            packs = [_pack_info(ls, x, installed=True, available=True, size=None, revision=None) for x in langs]
            return {"packs": packs, "offline": ls.is_offline(), "repo": str(root or ""), "revision": "local"}

        def gather() -> tuple[dict[str, Any], dict[str, Any], bool, str]:
            available = store.available()
            installed = store.installed()
            return available, installed, bool(store.offline), store.resolved_revision() or store.revision

        available, installed, offline, revision = await ls.run_io(gather)
        langs = sorted((set(available) | set(installed)) - {CORE_PACK})
        return {"packs": [_store_pack_info(ls, x, available, installed) for x in langs],
                "offline": offline or ls.is_offline(), "repo": store.repo_id, "revision": revision}
