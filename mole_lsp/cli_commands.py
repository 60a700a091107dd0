"""What the ``mole-lsp`` subcommands do (:mod:`mole_lsp.cli` parses the command line): ``serve``, the
one-shot ``complete``/``explain``/``translate`` on the same engine as the server, pack management and
``doctor``.

Heavy modules (torch, the engine) are imported inside the commands: ``mole-lsp --help`` stays fast and
the entry points set ``OMP_WAIT_POLICY`` before torch starts.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from mole_lsp.errors import UserError, is_user_error, one_line

ERROR_LINES = 3  # a user error is printed as one line made of at most its first three lines


# -- serve --------------------------------------------------------------------------------------------------
def server_options(args: argparse.Namespace) -> Any:
    """The server's Options from the parsed command line."""
    from mole_lsp.server.base import Options

    return Options(base_model=args.base_model, pack_repo=args.pack_repo, revision=args.revision,
                   cache_dir=args.cache_dir, device=args.device, offline=args.offline, threads=args.threads,
                   backend=args.backend, endpoint=getattr(args, "endpoint", None),
                   api_key=getattr(args, "api_key", None),
                   preload=not getattr(args, "no_preload", False), llamacpp_merge=_merge_option(args))


def _merge_option(args: argparse.Namespace) -> bool | None:
    """``--llamacpp-merge on|off`` as a bool (None: not given)."""
    value = getattr(args, "llamacpp_merge", None)
    return None if value is None else value == "on"


def cmd_serve(args: argparse.Namespace) -> int:
    """``serve``: the language server on stdio, or on ``--tcp HOST:PORT``."""
    from mole_lsp.server.app import create_server

    server = create_server(server_options(args))
    tcp = getattr(args, "tcp", None)
    if tcp:
        host, _, port = tcp.rpartition(":")
        if not port.isdigit():
            raise UserError(f"--tcp wants HOST:PORT, got {tcp!r}")
        server.start_tcp(host or "127.0.0.1", int(port))
    else:
        server.start_io()
    return 0


# -- helpers shared by the one-shot commands ----------------------------------------------------------------
def _progress_bar() -> Any:
    """progress(message, fraction) drawing a tqdm bar per message on stderr."""
    from tqdm import tqdm

    state: dict[str, Any] = {"bar": None, "label": None}

    def progress(message: str, fraction: float | None = None) -> None:
        label = message.split(" (")[0]
        if state["label"] != label:
            if state["bar"] is not None:
                state["bar"].close()
            state["bar"] = tqdm(total=100, desc=label, unit="%", file=sys.stderr, leave=False,
                                bar_format="{desc}: {percentage:3.0f}%|{bar}|")
            state["label"] = label
        if fraction is not None:
            bar = state["bar"]
            bar.n = int(fraction * 100)
            bar.refresh()
            if fraction >= 1.0:
                bar.close()
                state["bar"], state["label"] = None, None
                print(message, file=sys.stderr)

    return progress


def _engine(args: argparse.Namespace) -> Any:
    from mole_lsp.engine.engine import Engine

    engine = Engine.from_spec(args.base_model, cache_dir=args.cache_dir, pack_repo=args.pack_repo,
                              revision=args.revision, offline=args.offline, device=args.device or "auto",
                              progress=_progress_bar(), threads=args.threads, backend=args.backend or "auto")
    if hasattr(engine.backend, "merge"):  # the llamacpp backend (engine/backends/merged_route.py)
        engine.backend.merge_wait = True  # a one-shot command writes a route's merged file before use, not at exit
        if _merge_option(args) is not None:
            engine.backend.merge = _merge_option(args)
    return engine


def _store(args: argparse.Namespace) -> Any:
    """The pack store of the configured base (resolving the base model, not loading it)."""
    from mole_lsp.engine.base_model import resolve_base_model
    from mole_lsp.packs.store import PackStore, default_pack_repo
    from mole_lsp.paths import hub_endpoint

    info = resolve_base_model(args.base_model, cache_dir=args.cache_dir, offline=args.offline or None,
                              progress=lambda m: print(m, file=sys.stderr))
    repo = args.pack_repo or default_pack_repo(info.repo_id)
    return PackStore(repo, args.revision or "main", args.cache_dir, args.offline or None, hub_endpoint(),
                     base=info.identity())


def _read(path: str) -> str:
    p = Path(path)
    if not p.is_file():
        raise UserError(f"{path}: no such file")
    try:
        return p.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise UserError(f"{path} is not UTF-8 text (byte {e.start}: {e.reason})") from None


def _file_language(args: argparse.Namespace, text: str) -> str | None:
    from mole_lsp.engine.language import resolve_document_language

    if args.language:
        from mole_lsp.lang.registry import load_registry

        lang = load_registry().resolve(args.language)
        if lang is None:
            raise UserError(f"unknown language {args.language!r}")
        return lang
    return resolve_document_language(None, args.file, text)


def _line_range(spec: str | None, text: str) -> str:
    lines = text.splitlines(keepends=True)
    if not spec:
        return text
    a, sep, b = spec.partition("-")
    if not a.isdigit() or (sep and not b.isdigit()):
        raise UserError(f"--lines wants A-B (1-based), got {spec!r}")
    start, end = int(a), int(b) if sep else int(a)
    if not 1 <= start <= end <= len(lines):
        raise UserError(f"--lines {spec} is outside the file (1-{len(lines)})")
    return "".join(lines[start - 1 : end])


def _print_notes(result: Any) -> None:
    from mole_lsp.engine.repetition import NOTE, STOP_REASON

    for note in [*result.notes, *([NOTE] if result.stop_reason == STOP_REASON else [])]:
        print(f"mole-lsp: note: {note}", file=sys.stderr)


# -- one-shot commands --------------------------------------------------------------------------------------
def cmd_complete(args: argparse.Namespace) -> int:
    """``complete``: print the completion at ``--line``/``--col`` (1-based) of a file."""
    text = _read(args.file)
    lines = text.splitlines(keepends=True)
    row, col = args.line - 1, args.col - 1  # editors count from 1
    if row < 0 or row > len(lines) or (row == len(lines) and col):
        raise UserError(f"--line {args.line} is outside {args.file} (1-{max(len(lines), 1)})")
    line = lines[row] if row < len(lines) else ""
    width = len(line.rstrip("\r\n"))
    if col < 0 or col > width:
        raise UserError(f"--col {args.col} is outside line {args.line} (1-{width + 1})")
    offset = sum(len(x) for x in lines[:row]) + col
    language = _file_language(args, text)
    engine = _engine(args)
    result = engine.complete(text[:offset], text[offset:], language, max_new_tokens=args.max_new_tokens)
    _print_notes(result)
    sys.stdout.write(result.text + ("\n" if not result.text.endswith("\n") else ""))
    return 0


def cmd_explain(args: argparse.Namespace) -> int:
    """``explain``: print an explanation of a file or of ``--lines A-B``."""
    text = _read(args.file)
    code = _line_range(args.lines, text)
    language = _file_language(args, code)
    result = _engine(args).explain(code, language, max_new_tokens=args.max_new_tokens)
    _print_notes(result)
    print(result.text.strip())
    return 0


def cmd_translate(args: argparse.Namespace) -> int:
    """``translate``: print a file (or ``--lines A-B``) translated ``--to`` a language."""
    from mole_lsp.lang.registry import load_registry

    target = load_registry().resolve(args.target)
    if target is None:
        raise UserError(f"unknown target language {args.target!r}")
    text = _read(args.file)
    code = _line_range(args.lines, text)
    result = _engine(args).translate(code, _file_language(args, code), target, max_new_tokens=args.max_new_tokens)
    _print_notes(result)
    print(result.text.rstrip("\n"))
    return 0


# -- packs --------------------------------------------------------------------------------------------------
def _resolve_languages(names: list[str]) -> list[str]:
    from mole_lsp.lang.registry import load_registry

    reg = load_registry()
    out = []
    for name in names:
        lang = reg.resolve(name)
        if lang is None:
            raise UserError(f"unknown language {name!r} (known: {', '.join(reg.ids)})")
        out.append(lang)
    return out


def cmd_install_pack(args: argparse.Namespace) -> int:
    """``install-pack``: install expert packs (and the core) from the Hub or ``--from`` a folder."""
    langs = _resolve_languages(args.languages)
    store = _store(args)
    if args.from_dir:
        done = store.install_from(args.from_dir, langs)
    else:
        done = store.install(langs, progress=_progress_bar())
    for name, pack in done.items():
        print(f"installed {name:<12} {pack.size_bytes / 1e6:8.2f} MB  {pack.revision[:12]}  {pack.path}")
    return 0


def cmd_remove_pack(args: argparse.Namespace) -> int:
    """``remove-pack``: delete installed expert packs; a user error names those not installed."""
    store = _store(args)
    missing = []
    for lang in _resolve_languages(args.languages):
        if store.remove(lang):
            print(f"removed {lang}")
        else:
            missing.append(lang)
    if missing:
        raise UserError(f"not installed: {', '.join(missing)}")
    return 0


def cmd_list_packs(args: argparse.Namespace) -> int:
    """``list-packs``: a table of installed and available packs with sizes."""
    from mole_lsp.packs.format import CORE_PACK

    store = _store(args)
    available, installed = store.available(), store.installed()
    print(f"pack repo {store.repo_id} @ {store.resolved_revision() or store.revision}"
          + ("  (offline: cached packs only)" if store.offline else ""))
    names = sorted(set(available) | set(installed), key=lambda n: (n != CORE_PACK, n))
    if not names:
        print("no packs available or installed")
        return 0
    print(f"{'pack':<12} {'installed':<10} {'available':<10} {'size':>10}")
    for name in names:
        inst, avail = installed.get(name), available.get(name)
        size = inst.size_bytes if inst is not None else (avail or {}).get("size_bytes")
        size_txt = f"{size / 1e6:.2f} MB" if size is not None else "?"
        print(f"{name:<12} {'yes' if inst else 'no':<10} {'yes' if avail else 'no':<10} {size_txt:>10}")
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    """``doctor``: check the base model, cache, packs, threads and device (1 when one fails)."""
    import torch

    from mole_lsp.engine.device import configure_threads, pick_device
    from mole_lsp.packs.format import CORE_PACK
    from mole_lsp.paths import cache_dir

    ok = True

    def row(name: str, value: str, good: bool = True) -> None:
        nonlocal ok
        ok = ok and good
        print(f"{'ok ' if good else 'ERR'} {name:<14} {value}")

    threads = configure_threads(args.threads)
    row("python", sys.version.split()[0])
    row("torch", f"{torch.__version__}, {threads} threads, OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}")
    row("device", pick_device(args.device or "auto"))
    row("cache", str(cache_dir(args.cache_dir)))
    try:
        store = _store(args)
    except Exception as e:
        if not is_user_error(e):
            raise
        row("base model", one_line(e, ERROR_LINES), good=False)
        return 1
    from mole_lsp.engine.base_model import resolve_base_model

    info = resolve_base_model(args.base_model, cache_dir=args.cache_dir, offline=args.offline or None)
    row("base model", f"{info.name} ({info.source}) {info.path}")
    row("fim", "yes" if info.fim else "no (prefix-only completions)")
    from mole_lsp.engine.backends import choose_backend

    device = pick_device(args.device or "auto").split(":")[0]
    backend, why = choose_backend(args.backend or "auto", info.gguf_path, device)
    row("backend", f"{backend} ({why})")
    row("pack repo", f"{store.repo_id} @ {store.revision}{' (offline)' if store.offline else ''}")
    installed = store.installed()
    core = CORE_PACK in installed
    experts = sorted(n for n in installed if n != CORE_PACK)
    row("core pack", "installed" if core else "not installed: the base model answers alone")
    row("experts", ", ".join(experts) or "none installed")
    return 0 if ok else 1


# -- export -------------------------------------------------------------------------------------------------
def _export_sources(args: argparse.Namespace, langs: list[str] | None) -> tuple[Path, dict[str, Path]]:
    """The core and expert pack folders to export: a local pack repository given as ``--pack-repo``
    (no base model needed), otherwise the installed packs of the configured base."""
    from mole_lsp.export.routes import NL_EXPERT
    from mole_lsp.packs.format import CORE_DIR, CORE_PACK, EXPERTS_DIR

    repo = Path(args.pack_repo) if args.pack_repo else None
    if repo is not None and (repo / CORE_DIR).is_dir():
        have = sorted(p.name for p in (repo / EXPERTS_DIR).glob("*") if p.is_dir())
        missing = [x for x in langs or [] if x not in have]
        if missing:
            raise UserError(f"no expert pack for {', '.join(missing)} in {repo} (available: {', '.join(have) or 'none'})")
        names = [*(langs if langs is not None else have), *([NL_EXPERT] if NL_EXPERT in have else [])]
        return repo / CORE_DIR, {x: repo / EXPERTS_DIR / x for x in dict.fromkeys(names)}
    store = _store(args)
    core = store.core_path(install=False)
    if core is None:
        raise UserError("the core pack is not installed: run `mole-lsp install-pack <language>` first")
    installed = [x for x in store.installed() if x != CORE_PACK]
    names = [*(langs if langs is not None else installed), *([NL_EXPERT] if NL_EXPERT in installed else [])]
    return core, {x: store.expert_path(x, install=False) for x in dict.fromkeys(names)}


def cmd_export(args: argparse.Namespace) -> int:
    """``export``: every route of the packs as one standard LoRA per folder (PEFT or GGUF) plus a README."""
    from mole_lsp.export.bundle import export_packs_as_lora

    langs = _resolve_languages([x for x in args.languages.split(",") if x.strip()]) if args.languages else None
    core, experts = _export_sources(args, langs)
    out = Path(args.out)
    routes = export_packs_as_lora(core, experts, out, args.export_format, half=args.half)
    for name, what in routes.describe.items():
        print(f"{name:<12} rank {routes.rank(name):<4} {out / name}  ({what})")
    print(f"how to serve them: {out / 'README.md'}")
    return 0
