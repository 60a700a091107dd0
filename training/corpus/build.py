"""Mine local source trees into instruction samples for one language expert.

    python -m training.corpus SRC... --language L --out FILE.jsonl [--max-per-file N]
        [--fim-rate F] [--seed S] [--heldout-fraction F] [--max-samples N]

SRC may be a directory, a single file or a .zip archive (the JDK's src.zip); archives found inside
a directory are read too. Each line of the output is one sample shaped like glaive-code-assistant
(``question``, ``answer`` with a fenced code block tagged with the language id) plus ``language``,
``kind`` (doc2code | code2doc | fim), ``source`` (path relative to its SRC root), ``split``
(train | heldout, by a hash of that path so that one file never feeds both sides) and ``symbol``.

With ``--windows-per-file N`` (default 2) each file also gives up to N raw windows of whole lines for the
completion objective: rows ``{"kind": "completion", "code": ..., "line": first line (0-based)}`` with the
same ``language``/``source``/``split`` fields; training renders them with the engine's own completion
prompt (:func:`mole_lsp.engine.prompts.completion_sample`).

Runs are deterministic for a given seed: files are visited in a seeded order, each file has its own
RNG, and duplicates (same normalised code) keep their first occurrence in that order.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import re
import sys
import time
from collections import Counter
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from mole_lsp.lang.plugins import feature, languages_with
from mole_lsp.lang.plugins.doc_comments import looks_like_licence
from mole_lsp.lang.plugins.mining import Corpus, Function, ParseError
from mole_lsp.lang.registry import Registry, load_registry
from training.corpus.extract import extract
from training.corpus.samples import BUILDERS
from training.corpus.sources import Candidate, SkipFile, iter_candidates, load_text, strip_licence_header

KINDS = ("doc2code", "code2doc", "fim", "completion")

# --- per-language file plan ---------------------------------------------------------------------

@dataclass(frozen=True)
class LanguagePlan:
    """Which files belong to the language being mined: the registry's extensions, plus what its plugin's
    ``CORPUS`` claims or refuses."""

    language: str
    display: str
    registry: Registry
    corpus: Corpus

    def wants(self, path: str) -> bool:
        """Cheap name test; files the plugin claims may still be refused by :meth:`accepts`."""
        owner = self.registry.by_path(path)
        if owner == self.language:
            return True
        return self.corpus.claims is not None and self.corpus.claims(path, owner)

    def accepts(self, path: str, text: str) -> bool:
        """False when the file turns out to be another language (a C++ header named .h)."""
        return self.corpus.accepts is None or self.corpus.accepts(path, text)

    @property
    def hash_comments(self) -> bool:
        """Whether licence headers may be ``#`` comments (the registry's line-comment marker)."""
        return self.registry.get(self.language).line_comment == "#"


# --- the builder ----------------------------------------------------------------------------------

@dataclass
class Options:
    max_per_file: int = 8
    fim_rate: float = 0.3
    seed: int = 42
    heldout_fraction: float = 0.05
    max_samples: int = 0  # 0: no limit
    windows_per_file: int = 2  # raw windows for the completion objective (0: none)
    window_chars: int = 2000  # a window: whole lines, at most this many characters (~500-700 tokens)
    max_windows: int = 0  # 0: no limit
    min_lines: int = 4
    max_lines: int = 60
    max_chars: int = 3000


@dataclass
class Stats:
    language: str = ""
    files_found: int = 0
    files_scanned: int = 0
    files_with_parse_errors: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    functions: int = 0
    documented: int = 0
    dropped: Counter[str] = field(default_factory=Counter)
    samples: Counter[str] = field(default_factory=Counter)
    splits: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "language": self.language, "files_found": self.files_found, "files_scanned": self.files_scanned,
            "files_with_parse_errors": self.files_with_parse_errors, "skipped": dict(self.skipped),
            "functions": self.functions, "documented": self.documented, "dropped": dict(self.dropped),
            "samples": dict(self.samples), "splits": dict(self.splits), "seconds": round(self.seconds, 2),
        }


def split_of(source: str, heldout_fraction: float) -> str:
    """train/heldout from a hash of the file's path, so a whole file lands on one side, whatever the
    seed or the order of the run."""
    h = int.from_bytes(hashlib.sha256(source.encode("utf-8")).digest()[:8], "big") / 2**64
    return "heldout" if h < heldout_fraction else "train"


def _normalised_hash(code: str) -> str:
    return hashlib.sha1(re.sub(r"\s+", "", code).encode("utf-8")).hexdigest()


def _file_order_key(seed: int, source: str) -> str:
    return hashlib.sha256(f"{seed}\0{source}".encode()).hexdigest()


def build_corpus(roots: Sequence[Path | str], language: str, out: TextIO, options: Options | None = None,
                 registry: Registry | None = None) -> Stats:
    """Mine ``roots`` for ``language`` (any name the registry resolves) and write JSONL to ``out``."""
    opts = options or Options()
    reg = registry or load_registry()
    lang = reg.resolve(language)
    corpus = feature(lang, "CORPUS") if lang is not None else None
    if not isinstance(corpus, Corpus):
        supported = ", ".join(languages_with("CORPUS"))
        raise ValueError(f"unsupported language {language!r}; supported: {supported}")
    plan = LanguagePlan(lang, reg.get(lang).name, reg, corpus)
    stats = Stats(language=lang)
    started = time.perf_counter()
    seen: set[str] = set()
    total = 0
    with ExitStack() as stack:
        cands = list(iter_candidates([Path(r) for r in roots], stack, plan.wants,
                                     lambda reason: stats.skipped.update([reason])))
        # A seeded file order: a --max-samples cap then draws from the whole tree, not its first folders.
        cands.sort(key=lambda c: _file_order_key(opts.seed, c.source))
        stats.files_found = len(cands)
        for cand in cands:
            samples_full = bool(opts.max_samples) and total >= opts.max_samples
            windows_full = not opts.windows_per_file or (
                bool(opts.max_windows) and stats.samples["completion"] >= opts.max_windows)
            if samples_full and windows_full:
                break
            total += _mine_file(cand, plan, opts, stats, seen, out, max(0, opts.max_samples - total)
                                if opts.max_samples else None, windows_full)
    stats.seconds = time.perf_counter() - started
    return stats


def _mine_file(cand: Candidate, plan: LanguagePlan, opts: Options, stats: Stats, seen: set[str],
               out: TextIO, room: int | None, windows_full: bool = False) -> int:
    try:
        text = load_text(cand)
    except SkipFile as skip:
        stats.skipped[skip.reason] += 1
        return 0
    if not plan.accepts(cand.name, text):
        stats.skipped["other_language"] += 1
        return 0
    text = strip_licence_header(text, hash_comments=plan.hash_comments)
    try:
        result = extract(text, plan.language, cand.name)
    except ParseError:
        stats.skipped["syntax_error"] += 1
        return 0
    except RecursionError:
        stats.skipped["too_deep"] += 1
        return 0
    stats.files_scanned += 1
    stats.files_with_parse_errors += result.had_errors
    stats.functions += len(result.functions)
    stats.documented += sum(fn.doc is not None for fn in result.functions)

    rng = random.Random(f"{opts.seed}\0{cand.source}")
    split = split_of(cand.source, opts.heldout_fraction)
    if not windows_full:
        _write_windows(text, cand, plan, opts, stats, seen, out, split, random.Random(f"{opts.seed}\0w\0{cand.source}"))
    functions = [fn for fn in result.functions if _keep(fn, opts, stats)]
    rng.shuffle(functions)
    # Documented functions are the scarce ones: they get a file's capped slots first.
    functions.sort(key=lambda fn: fn.doc is None)
    cap = opts.max_per_file if room is None else min(opts.max_per_file, room)
    if cap <= 0:
        return 0
    written = 0
    for fn in functions:
        if written >= cap:
            stats.dropped["file_cap"] += 1
            continue
        key = _normalised_hash(fn.code)
        if key in seen:
            stats.dropped["duplicate"] += 1
            continue
        sample = _sample(fn, plan, opts, rng, stats)
        if sample is None:
            stats.dropped["undocumented"] += 1
            continue
        seen.add(key)
        kind, qa = sample
        record = {**qa, "language": plan.language, "kind": kind, "source": cand.source, "split": split,
                  "symbol": fn.name}
        out.write(json.dumps(record, ensure_ascii=False) + "\n")
        stats.samples[kind] += 1
        stats.splits[split] += 1
        written += 1
    return written


def file_windows(text: str, max_chars: int) -> list[tuple[int, str]]:
    """Consecutive windows of whole lines, each at most ``max_chars`` long: (first line, text).

    A line longer than ``max_chars`` (minified code, data) ends the window before it and is skipped."""
    out: list[tuple[int, str]] = []
    start, chunk, size = 0, [], 0
    for i, line in enumerate(text.splitlines(keepends=True)):
        if size + len(line) > max_chars and chunk:
            out.append((start, "".join(chunk)))
            chunk, size = [], 0
        if len(line) > max_chars:
            start = i + 1
            continue
        if not chunk:
            start = i
        chunk.append(line)
        size += len(line)
    if chunk:
        out.append((start, "".join(chunk)))
    return out


def _write_windows(text: str, cand: Candidate, plan: LanguagePlan, opts: Options, stats: Stats,
                   seen: set[str], out: TextIO, split: str, rng: random.Random) -> None:
    """Up to ``windows_per_file`` seeded windows of the file as completion rows (deduplicated like
    functions; windows of mostly blank lines, licence text or very long lines are left out)."""
    windows = file_windows(text, opts.window_chars)
    rng.shuffle(windows)
    written = 0
    for line, code in windows:
        if written >= opts.windows_per_file or (opts.max_windows and stats.samples["completion"] >= opts.max_windows):
            break
        lines = [ln for ln in code.split("\n") if ln.strip()]
        if len(lines) < opts.min_lines or len(code) / len(lines) > 160 or looks_like_licence(code):
            stats.dropped["window_unfit"] += 1
            continue
        key = _normalised_hash(code)
        if key in seen:
            stats.dropped["duplicate"] += 1
            continue
        seen.add(key)
        record = {"code": code, "language": plan.language, "kind": "completion", "source": cand.source,
                  "split": split, "line": line}
        out.write(json.dumps(record, ensure_ascii=False) + "\n")
        stats.samples["completion"] += 1
        stats.splits[split] += 1
        written += 1


def _keep(fn: Function, opts: Options, stats: Stats) -> bool:
    lines = sum(1 for ln in fn.code.split("\n") if ln.strip())
    if lines < opts.min_lines:
        stats.dropped["tiny"] += 1
        return False
    if lines > opts.max_lines or len(fn.text) > opts.max_chars:
        stats.dropped["huge"] += 1
        return False
    if looks_like_licence(fn.code):
        stats.dropped["licence_text"] += 1
        return False
    return True


def _sample(fn: Function, plan: LanguagePlan, opts: Options, rng: random.Random,
            stats: Stats) -> tuple[str, dict[str, str]] | None:
    """Pick a kind so that about ``fim_rate`` of all samples are FIM.

    A documented function becomes FIM with probability fim_rate, else doc2code or code2doc.
    Undocumented functions can only give FIM; they are used while the FIM share is below target,
    which keeps trees with few doc comments from turning into FIM-only corpora.
    """
    doc_kind = rng.choice(("doc2code", "code2doc"))
    if fn.doc is None:
        done = sum(n for k, n in stats.samples.items() if k != "completion")
        if stats.samples["fim"] >= opts.fim_rate * (done + 1):
            return None
        order = ["fim"]
    else:
        order = ["fim", doc_kind] if rng.random() < opts.fim_rate else [doc_kind]
    for kind in order:
        qa = BUILDERS[kind](fn, plan.language, plan.display, rng)
        if qa is not None:
            return kind, qa
    return None


# --- CLI ----------------------------------------------------------------------------------------

def format_summary(stats: Stats) -> str:
    rows: list[tuple[str, str]] = [
        ("language", stats.language),
        ("files found", str(stats.files_found)),
        ("files scanned", str(stats.files_scanned)),
        ("  with parse errors (partly used)", str(stats.files_with_parse_errors)),
    ]
    rows += [(f"  skipped: {k}", str(v)) for k, v in sorted(stats.skipped.items())]
    rows += [("functions found", str(stats.functions)), ("  documented", str(stats.documented))]
    rows += [(f"  dropped: {k}", str(v)) for k, v in sorted(stats.dropped.items())]
    rows += [(f"samples: {k}", str(stats.samples.get(k, 0))) for k in KINDS]
    rows += [("samples total", str(sum(stats.samples.values())))]
    rows += [(f"split: {k}", str(stats.splits.get(k, 0))) for k in ("train", "heldout")]
    rows += [("seconds", f"{stats.seconds:.1f}")]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k.ljust(width)}  {v}" for k, v in rows)


def _fraction(value: str) -> float:
    f = float(value)
    if not 0.0 <= f <= 1.0:
        raise argparse.ArgumentTypeError(f"{value} is not between 0 and 1")
    return f


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.corpus", description=__doc__.split("\n\n")[0])
    parser.add_argument("src", nargs="+", type=Path, help="source directories, files or .zip archives")
    parser.add_argument("--language", required=True, help="language id or alias (registry)")
    parser.add_argument("--out", required=True, type=Path, help="output JSONL file")
    parser.add_argument("--max-per-file", type=int, default=Options.max_per_file)
    parser.add_argument("--fim-rate", type=_fraction, default=Options.fim_rate)
    parser.add_argument("--seed", type=int, default=Options.seed)
    parser.add_argument("--heldout-fraction", type=_fraction, default=Options.heldout_fraction)
    parser.add_argument("--max-samples", type=int, default=0, help="stop after this many samples (0: all)")
    parser.add_argument("--windows-per-file", type=int, default=Options.windows_per_file,
                        help="raw source windows per file for the completion objective (0: none)")
    parser.add_argument("--window-chars", type=int, default=Options.window_chars,
                        help="characters per window (whole lines)")
    parser.add_argument("--max-windows", type=int, default=None,
                        help="stop windows after this many (default: --max-samples; 0: all)")
    parser.add_argument("--min-lines", type=int, default=Options.min_lines)
    parser.add_argument("--max-lines", type=int, default=Options.max_lines)
    parser.add_argument("--json-summary", action="store_true", help="print the summary as JSON")
    args = parser.parse_args(argv)
    opts = Options(max_per_file=args.max_per_file, fim_rate=args.fim_rate, seed=args.seed,
                   heldout_fraction=args.heldout_fraction, max_samples=args.max_samples,
                   windows_per_file=args.windows_per_file, window_chars=args.window_chars,
                   max_windows=args.max_samples if args.max_windows is None else args.max_windows,
                   min_lines=args.min_lines, max_lines=args.max_lines)
    missing = [str(s) for s in args.src if not s.exists()]
    if missing:
        parser.error(f"no such source: {', '.join(missing)}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_name(args.out.name + ".part")
    try:
        with tmp.open("w", encoding="utf-8") as out:
            stats = build_corpus(args.src, args.language, out, opts)
    except (ValueError, ImportError) as exc:
        tmp.unlink(missing_ok=True)
        print(f"error: {exc}", file=sys.stderr)
        return 2
    os.replace(tmp, args.out)
    print(json.dumps(stats.as_dict(), indent=2) if args.json_summary else format_summary(stats))
    return 0


if __name__ == "__main__":
    sys.exit(main())
