"""The ``mole-lsp`` command: the language server and a few one-shot tools on the same engine.

    mole-lsp [serve] [--tcp HOST:PORT]           language server (stdio by default)
    mole-lsp install-pack LANG... [--from DIR]  download (or copy from a folder) expert packs
    mole-lsp list-packs | remove-pack LANG...   what is installed and available
    mole-lsp doctor                             base model, cache, packs, threads, device
    mole-lsp complete FILE --line N --col M     one completion at a position (1-based, as editors show)
    mole-lsp explain FILE --lines A-B           explain lines A..B (1-based, inclusive)
    mole-lsp translate FILE --to LANG           translate a file
    mole-lsp export --format peft|gguf --out DIR  every route as a standard LoRA (vLLM, llama-server)

User errors print one line (``mole-lsp: error: ...``) and exit with status 2; no tracebacks.
This module parses the command line and reports errors; :mod:`mole_lsp.cli_commands` runs the commands.
"""

from __future__ import annotations

import os

# Before torch is imported anywhere: idle OpenMP threads must sleep, or timings swing on small machines.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import logging  # noqa: E402
import sys  # noqa: E402

from mole_lsp import cli_commands as run  # noqa: E402
from mole_lsp.errors import is_user_error, one_line  # noqa: E402

EXIT_USER = 2

# subcommand -> its implementation (cli_commands); no subcommand means "serve"
COMMANDS = {"serve": run.cmd_serve, "install-pack": run.cmd_install_pack, "list-packs": run.cmd_list_packs,
            "remove-pack": run.cmd_remove_pack, "doctor": run.cmd_doctor, "complete": run.cmd_complete,
            "explain": run.cmd_explain, "translate": run.cmd_translate, "export": run.cmd_export}


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
    g.add_argument("--backend", default=d, choices=("auto", "torch", "llamacpp", "openai"),
                   help="what runs the model (default: auto = llama.cpp for a GGUF base on the CPU when "
                   "llama-cpp-python is installed, else torch; openai = a remote server, serve only)")
    g.add_argument("--llamacpp-merge", default=d, choices=("on", "off"),
                   help="llamacpp backend: completions on the base GGUF with their route merged into the weights "
                   "(default: on; the editor setting llamacppMerge wins)")
    g.add_argument("-v", "--verbose", action="count", default=0 if top else argparse.SUPPRESS,
                   help="log more (to stderr)")


def build_parser() -> argparse.ArgumentParser:
    """The parser of every subcommand; global options go before or after the subcommand."""
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
    sp.add_argument("--endpoint", metavar="URL", help="--backend openai: the OpenAI-compatible server (vLLM, "
                    "llama-server) serving the adapters of `mole-lsp export`")
    sp.add_argument("--api-key", metavar="KEY", help="--backend openai: its bearer key (or $MOLE_LSP_API_KEY)")

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

    sp = add("export", "write every route (each language, NL) as a standard LoRA adapter for vLLM, PEFT or "
             "llama.cpp, exact on the untouched base model")
    sp.add_argument("--format", required=True, choices=["peft", "gguf"], dest="export_format")
    sp.add_argument("--languages", help="comma-separated languages (default: every installed or available expert)")
    sp.add_argument("--out", required=True, metavar="DIR", help="folder to write (one sub-folder per route)")
    sp.add_argument("--half", action="store_true", help="float16 adapters (half the size) instead of float32")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the ``mole-lsp`` command; the exit status (2: a user error, printed as one line)."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING - 10 * min(args.verbose, 2), stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")
    command = args.command or "serve"
    if args.backend == "openai" and command != "serve":
        print("mole-lsp: error: --backend openai is for `mole-lsp serve` (the other commands run the model here)",
              file=sys.stderr)
        return EXIT_USER
    try:
        return COMMANDS[command](args) or 0
    except KeyboardInterrupt:
        print("mole-lsp: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # user-facing errors: one line, no traceback (-vv shows it)
        if not is_user_error(e):
            raise
        if args.verbose >= 2:
            logging.exception("details")
        print(f"mole-lsp: error: {one_line(e, run.ERROR_LINES)}", file=sys.stderr)
        return EXIT_USER


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
