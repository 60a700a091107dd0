"""The ``mole-lsp`` command: the language server and a few one-shot tools on the same engine.

    mole-lsp [serve] [--tcp HOST:PORT]           language server (stdio by default)
    mole-lsp install-pack LANG... [--from DIR]  download (or copy from a folder) expert packs
    mole-lsp list-packs | remove-pack LANG...   what is installed and available
    mole-lsp doctor                             base model, cache, packs, threads, device
    mole-lsp complete FILE --line N --col M     one completion at a position (1-based, as editors show)
    mole-lsp explain FILE --lines A-B           explain lines A..B (1-based, inclusive)
    mole-lsp translate FILE --to LANG           translate a file

User errors print one line (``mole-lsp: error: ...``) and exit with status 2; no tracebacks.
"""

from __future__ import annotations

import os

# Before torch is imported anywhere: idle OpenMP threads must sleep, or timings swing on small machines.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import logging  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

EXIT_USER = 2


class UserError(Exception):
    """A problem the user can fix; printed as one line."""


# -- argument parsing ---------------------------------------------------------------------------------------
def _device(text: str) -> str:
    """--device: the values the editor setting accepts (mole_lsp.server.settings validates both)."""
    from mole_lsp.server.settings import validate

    value, problem = validate("device", text)
    if problem is not None:
        raise argparse.ArgumentTypeError(f"expected auto, cpu, cuda, cuda:N or mps, got {text!r}")
    return value


def _global_options(p: argparse.ArgumentParser, top: bool) -> None:
    # Global options are accepted before and after the subcommand; SUPPRESS keeps a later default from
    # overwriting a value given earlier.
    d = None if top else argparse.SUPPRESS
    g = p.add_argument_group("model and packs")
    g.add_argument("--base-model", default=d, help="Hub repo id, local folder or .gguf (default: "
                   "$MOLE_BASE_MODEL, then the quick-start SmolLM2-135M-Instruct)")
    g.add_argument("--cache-dir", default=d, help="cache for models and packs (default: $MOLE_CACHE_DIR or "
                   "the user cache folder)")
    g.add_argument("--pack-repo", default=d, help="Hub repo (or local folder) with the packs (default: the "
                   "base model's pack repo)")
    g.add_argument("--revision", default=d, help="branch, tag or commit of the pack repo (default: main)")
    g.add_argument("--device", default=d, type=_device, metavar="{auto,cpu,cuda,cuda:N,mps}",
                   help="where the model runs (default: auto)")
    g.add_argument("--offline", action="store_true", default=False if top else argparse.SUPPRESS,
                   help="never touch the network: cached packs only")
    g.add_argument("--threads", type=int, default=d, help="CPU threads for torch (default: usable cores)")
    g.add_argument("-v", "--verbose", action="count", default=0 if top else argparse.SUPPRESS,
                   help="log more (to stderr)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mole-lsp", description="Local multilingual code assistant (LSP server "
                                     "and tools) on a Mix-of-Language-Experts code model.")
    _global_options(parser, top=True)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    def add(name: str, help_text: str) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help_text, description=help_text)
        _global_options(sp, top=False)
        return sp

    sp = add("serve", "run the language server (stdio by default)")
    sp.add_argument("--tcp", metavar="HOST:PORT", help="listen on TCP instead of stdio")
    sp.add_argument("--stdio", action="store_true", help="use stdio (the default; accepted for editors that pass it)")
    sp.add_argument("--no-preload", action="store_true", help="load the model on the first request, not at start")

    sp = add("install-pack", "install expert packs (and the core pack) into the cache")
    sp.add_argument("languages", nargs="+", metavar="LANG")
    sp.add_argument("--from", dest="from_dir", metavar="DIR", help="copy from a local pack folder instead of the Hub")

    add("list-packs", "list installed and available packs with sizes")

    sp = add("remove-pack", "delete installed expert packs")
    sp.add_argument("languages", nargs="+", metavar="LANG")

    add("doctor", "check the base model, cache, packs, threads and device")

    sp = add("complete", "print the completion at a position of a file")
    sp.add_argument("file")
    sp.add_argument("--line", type=int, required=True, help="line, 1-based (as editors show it)")
    sp.add_argument("--col", type=int, required=True, help="column in characters, 1-based (1 = start of the line)")
    sp.add_argument("--max-new-tokens", type=int, default=64)
    sp.add_argument("--language", help="language of the file (default: from its extension)")

    sp = add("explain", "explain some lines of a file")
    sp.add_argument("file")
    sp.add_argument("--lines", help="A-B, 1-based and inclusive (default: the whole file)")
    sp.add_argument("--max-new-tokens", type=int, default=256)
    sp.add_argument("--language", help="language of the file (default: from its extension)")

    sp = add("translate", "translate a file (or some lines) to another language")
    sp.add_argument("file")
    sp.add_argument("--to", required=True, dest="target", metavar="LANG")
    sp.add_argument("--lines", help="A-B, 1-based and inclusive (default: the whole file)")
    sp.add_argument("--max-new-tokens", type=int, default=256)
    sp.add_argument("--language", help="language of the file (default: from its extension)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING - 10 * min(args.verbose, 2), stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")
    command = args.command or "serve"
    handlers = {"serve": cmd_serve, "install-pack": cmd_install_pack, "list-packs": cmd_list_packs,
                "remove-pack": cmd_remove_pack, "doctor": cmd_doctor, "complete": cmd_complete,
                "explain": cmd_explain, "translate": cmd_translate}
    try:
        return handlers[command](args) or 0
    except KeyboardInterrupt:
        print("mole-lsp: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # user-facing errors: one line, no traceback (-vv shows it)
        if not _is_user_error(e):
            raise
        if args.verbose >= 2:
            logging.exception("details")
        print(f"mole-lsp: error: {_one_line(e)}", file=sys.stderr)
        return EXIT_USER


def _is_user_error(e: Exception) -> bool:
    names = {c.__name__ for c in type(e).__mro__}
    return bool(names & {"UserError", "BaseModelError", "StoreError", "OfflineError", "PackError",
                         "RegistryError", "FileNotFoundError", "IsADirectoryError", "PermissionError",
                         "UnicodeDecodeError", "ValueError"})


def _one_line(e: BaseException) -> str:
    lines = [ln.strip() for ln in str(e).strip().splitlines() if ln.strip()]
    return " ".join(lines[:3]) if lines else type(e).__name__


# -- serve --------------------------------------------------------------------------------------------------
def server_options(args: argparse.Namespace) -> Any:
    from mole_lsp.server.app import Options

    return Options(base_model=args.base_model, pack_repo=args.pack_repo, revision=args.revision,
                   cache_dir=args.cache_dir, device=args.device, offline=args.offline, threads=args.threads,
                   preload=not getattr(args, "no_preload", False))


def cmd_serve(args: argparse.Namespace) -> int:
    from mole_lsp.server import create_server

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

    return Engine.from_spec(args.base_model, cache_dir=args.cache_dir, pack_repo=args.pack_repo,
                            revision=args.revision, offline=args.offline, device=args.device or "auto",
                            progress=_progress_bar(), threads=args.threads)


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
    return p.read_text(encoding="utf-8")


def _file_language(args: argparse.Namespace, text: str) -> str | None:
    from mole_lsp.engine.engine import resolve_document_language

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
    for note in result.notes:
        print(f"mole-lsp: note: {note}", file=sys.stderr)


# -- one-shot commands --------------------------------------------------------------------------------------
def cmd_complete(args: argparse.Namespace) -> int:
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
    text = _read(args.file)
    code = _line_range(args.lines, text)
    language = _file_language(args, code)
    result = _engine(args).explain(code, language, max_new_tokens=args.max_new_tokens)
    _print_notes(result)
    print(result.text.strip())
    return 0


def cmd_translate(args: argparse.Namespace) -> int:
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
    store = _store(args)
    available, installed = store.available(), store.installed()
    print(f"pack repo {store.repo_id} @ {store.resolved_revision() or store.revision}"
          + ("  (offline: cached packs only)" if store.offline else ""))
    names = sorted(set(available) | set(installed), key=lambda n: (n != "core", n))
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
    import torch

    from mole_lsp.engine.device import configure_threads, pick_device
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
        if not _is_user_error(e):
            raise
        row("base model", _one_line(e), good=False)
        return 1
    from mole_lsp.engine.base_model import resolve_base_model

    info = resolve_base_model(args.base_model, cache_dir=args.cache_dir, offline=args.offline or None)
    row("base model", f"{info.name} ({info.source}) {info.path}")
    row("fim", "yes" if info.fim else "no (prefix-only completions)")
    row("pack repo", f"{store.repo_id} @ {store.revision}{' (offline)' if store.offline else ''}")
    installed = store.installed()
    core = "core" in installed
    experts = sorted(n for n in installed if n != "core")
    row("core pack", "installed" if core else "not installed: the base model answers alone")
    row("experts", ", ".join(experts) or "none installed")
    return 0 if ok else 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
