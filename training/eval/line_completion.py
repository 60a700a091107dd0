"""Line completion on held-out real code: what the editor asks of the packs (issue 13 item 2).

    python -m training.evaluate --tasks line-completion --sources python=SRC [--sources rust=SRC ...] \
        [--base-only] [--packs NAME=DIR ...] [--positions 200] [--per-file 10] [--split heldout|all] \
        [--heldout-fraction F] [--context-tokens 1024] [--max-new-tokens 48] [--seed 0] --out OUT [--append]

Files: those the corpus builder would mine for the language (:class:`training.corpus.build.LanguagePlan`,
:func:`~training.corpus.sources.iter_candidates`, :func:`~training.corpus.sources.load_text`, licence
header stripped), kept only when :func:`~training.corpus.build.split_of` puts them in the held-out split,
so a file that fed training is never asked about (``--split all``: every file, for trees that were not
mined). Files are visited in a seeded order.

Positions: lines with >= 4 non-space characters. Each file gives at most ``--per-file`` positions, on a run
of consecutive such lines from a seeded start (an editor session going down a region: the prompts of
one file then share their start, so the KV store prefills only the lines in between, which is what makes
the run affordable on a CPU; ``--spread``: seeded lines anywhere in the file, a full prefill each). Kinds alternate: ``mid`` (the cursor at a seeded offset inside the line,
at least 2 non-space characters after it) and ``start`` (the cursor after the line's indentation, as an
editor's auto-indent leaves it).

Each position is completed as the server does: :meth:`mole_lsp.engine.engine.Engine.complete` with
the prefix (text before the cursor), the text after the cursor's line as the suffix (the rest of the
line, the truth, withheld), the server's default context budget, the engine's stop rules with
``single_line=True`` (greedy decoding makes that the first line of the editor's suggestion), and the
file as the KV cache key, positions in cursor order. Scores, on the rest of the line (both rstripped):
exact match, edit similarity (1 - Levenshtein / longer length) and kept characters (the longest common
prefix: what a user accepting the suggestion keeps); plus the latency. Settings named ``METHOD-s<N>`` (one
per training seed) also get one column per method: the mean over seeds ± half their range. Rows go to
``OUT/line_completion.jsonl``, the tables to ``OUT/line_completion.md``; ``--append`` keeps the rows there
and skips the positions they already cover (resume, or add settings). Processes running different settings
may ``--append`` to one OUT at the same time (one row per write); the last to finish writes the tables over
all rows.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import re
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "LINE_TASK",
    "Position",
    "add_arguments",
    "edit_similarity",
    "heldout_texts",
    "levenshtein",
    "main",
    "parse_sources",
    "positions_from_args",
    "render_report",
    "run",
    "run_positions",
    "sample_language",
    "sample_positions",
    "score",
]

LINE_TASK = "line-completion"
KINDS = ("mid", "start")
MIN_NONSPACE = 4  # a line worth asking about
MIN_AFTER_CURSOR = 2  # non-space characters a mid-line cursor leaves after it
DEFAULT_MAX_NEW_TOKENS = 48
_TAIL = 120  # characters of the prefix kept in a row


# -- positions ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Position:
    language: str
    file: str  # the path the corpus builder records (relative to its source root)
    line: int  # 1-based
    col: int  # cursor column (characters)
    kind: str  # "mid" or "start"
    offset: int  # cursor offset in ``text``
    text: str = field(repr=False, compare=False)  # the whole (licence-stripped) file

    @property
    def line_end(self) -> int:
        end = self.text.find("\n", self.offset)
        return len(self.text) if end < 0 else end

    @property
    def prefix(self) -> str:
        return self.text[: self.offset]

    @property
    def truth(self) -> str:
        return self.text[self.offset : self.line_end].rstrip()

    @property
    def suffix(self) -> str:
        """What the engine sees after the cursor: the lines after the cursor's line."""
        return self.text[self.line_end :]


def _nonspace(s: str) -> int:
    return sum(not c.isspace() for c in s)


def sample_positions(text: str, language: str, file: str, rng: random.Random, limit: int,
                     first_kind: int = 0, spread: bool = False) -> list[Position]:
    """Up to ``limit`` positions on consecutive lines worth asking about from a seeded start (``spread``:
    on seeded lines anywhere in the file), in cursor order, kinds alternating from ``KINDS[first_kind]``."""
    eligible: list[tuple[int, int, str]] = []  # (line number, offset of the line, line)
    offset = 0
    for number, line in enumerate(text.split("\n"), 1):
        if _nonspace(line) >= MIN_NONSPACE:
            eligible.append((number, offset, line))
        offset += len(line) + 1
    k = min(limit, len(eligible))
    if k <= 0:
        return []
    if spread:
        picked = sorted(rng.sample(eligible, k))
    else:
        first = rng.randrange(len(eligible) - k + 1)
        picked = eligible[first : first + k]
    out: list[Position] = []
    for i, (number, start, line) in enumerate(picked):
        kind = KINDS[(first_kind + i) % len(KINDS)]
        indent = len(line) - len(line.lstrip())
        if kind == "start":
            col = indent
        else:
            body = line.rstrip()
            col = rng.choice([c for c in range(indent + 1, len(body)) if _nonspace(body[c:]) >= MIN_AFTER_CURSOR])
        out.append(Position(language, file, number, col, kind, start + col, text))
    return out


def _plan(language: str, registry: Any) -> Any:
    from mole_lsp.lang.plugins import feature, languages_with
    from mole_lsp.lang.plugins.mining import Corpus
    from training.corpus.build import LanguagePlan

    corpus = feature(language, "CORPUS")
    if not isinstance(corpus, Corpus):
        have = ", ".join(languages_with("CORPUS"))
        raise ValueError(f"no corpus rules for {language!r}; languages with them: {have}")
    return LanguagePlan(language, registry.get(language).name, registry, corpus)


def heldout_texts(language: str, roots: Sequence[Path], *, split: str = "heldout",
                  heldout_fraction: float | None = None, seed: int = 0,
                  registry: Any = None) -> Iterator[tuple[str, str]]:
    """(source path, text) of the files the corpus builder would mine for ``language`` under ``roots``,
    only its held-out split unless ``split == "all"``, in a seeded order."""
    from mole_lsp.lang.registry import load_registry
    from training.corpus.build import Options, split_of
    from training.corpus.sources import SkipFile, iter_candidates, load_text, strip_licence_header

    if split not in ("heldout", "all"):
        raise ValueError(f"split must be heldout or all, got {split!r}")
    fraction = Options.heldout_fraction if heldout_fraction is None else heldout_fraction
    plan = _plan(language, registry or load_registry())
    with ExitStack() as stack:
        cands = [c for c in iter_candidates([Path(r) for r in roots], stack, plan.wants, lambda _reason: None)
                 if split == "all" or split_of(c.source, fraction) == "heldout"]
        cands.sort(key=lambda c: hashlib.sha256(f"{seed}\0{c.source}".encode()).hexdigest())
        for cand in cands:
            try:
                text = load_text(cand)
            except SkipFile:
                continue
            if plan.accepts(cand.name, text):
                yield cand.source, strip_licence_header(text, hash_comments=plan.hash_comments)


def sample_language(language: str, roots: Sequence[Path], n: int, *, per_file: int = 10, seed: int = 0,
                    split: str = "heldout", heldout_fraction: float | None = None,
                    spread: bool = False) -> list[Position]:
    """``n`` positions (fewer when the files run out) over the language's held-out files, at most
    ``per_file`` per file, file by file in cursor order; half ``mid``, half ``start``."""
    out: list[Position] = []
    for source, text in heldout_texts(language, roots, split=split, heldout_fraction=heldout_fraction, seed=seed):
        if len(out) >= n:
            break
        rng = random.Random(f"{seed}\0{language}\0{source}")
        out += sample_positions(text, language, source, rng, min(per_file, n - len(out)), first_kind=len(out) % 2,
                                spread=spread)
    return out


# -- metrics ----------------------------------------------------------------------------------------

def levenshtein(a: str, b: str) -> int:
    """Edit distance (insert, delete, substitute: 1 each); lines are short, so the plain DP."""
    if len(a) < len(b):
        a, b = b, a
    row = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        prev, row[0] = row[0], i
        for j, cb in enumerate(b, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (ca != cb))
    return row[-1]


def edit_similarity(a: str, b: str) -> float:
    longest = max(len(a), len(b))
    return 1.0 if longest == 0 else 1.0 - levenshtein(a, b) / longest


def score(suggestion: str, truth: str) -> dict[str, Any]:
    """Exact match, edit similarity and kept characters of the suggestion's first line against the truth."""
    s, t = suggestion.split("\n", 1)[0].rstrip(), truth.rstrip()
    kept = 0
    while kept < min(len(s), len(t)) and s[kept] == t[kept]:
        kept += 1
    return {"exact": s == t, "edit_sim": round(edit_similarity(s, t), 4), "kept": kept, "truth_chars": len(t)}


# -- running ------------------------------------------------------------------------------------------

def _key(setting: str, p: Position | Mapping[str, Any]) -> tuple[Any, ...]:
    if isinstance(p, Position):
        return setting, p.language, p.file, p.line, p.col, p.kind
    return setting, p["language"], p["file"], p["line"], p["col"], p["kind"]


def run_positions(engine: Any, positions: Sequence[Position], *, setting: str, context_tokens: int,
                  max_new_tokens: int, sink: Callable[[dict[str, Any]], None]) -> None:
    """Complete every position (file by file, in cursor order, the file as the KV key); one row each."""
    for p in sorted(positions, key=lambda q: (q.file, q.offset)):
        r = engine.complete(p.prefix, p.suffix, p.language, max_new_tokens=max_new_tokens,
                            context_tokens=context_tokens, install=False, cache_key=f"{p.language}:{p.file}",
                            single_line=True)
        sink({"setting": setting, "language": p.language, "file": p.file, "line": p.line, "col": p.col,
              "kind": p.kind, "prefix_tail": p.prefix[-_TAIL:], "truth": p.truth, "suggestion": r.text,
              **score(r.text, p.truth), "ms": round(r.timings.get("total", 0.0), 1), "stop_reason": r.stop_reason,
              "prompt_tokens": r.prompt_tokens, "reused_tokens": r.reused_tokens, "new_tokens": r.new_tokens,
              "expert": r.expert, "base_only": r.base_only})


def run(settings: Sequence[Any], positions: Mapping[str, Sequence[Position]], loader: Any, out: Path, *,
        context_tokens: int, max_new_tokens: int, append: bool = False, meta: Sequence[str] = (),
        log: Callable[[str], None] = print) -> tuple[Path, Path]:
    """Every setting (:class:`training.eval.models.Setting`) on every language's positions; rows to
    ``out/line_completion.jsonl`` (kept and skipped when done with ``append``), tables to
    ``out/line_completion.md``. Returns (rows, report)."""
    from mole_lsp.server.protocol import SETTINGS
    from training.eval.models import EngineGenerate, GenOptions

    out.mkdir(parents=True, exist_ok=True)
    jsonl, report = out / "line_completion.jsonl", out / "line_completion.md"
    if not append and jsonl.exists():
        jsonl.unlink()
    done = {_key(r["setting"], r) for r in _read_rows(jsonl)}
    kv_bytes = int(SETTINGS["kvCacheMB"][1]) << 20  # the server's default KV memory
    fd = os.open(jsonl, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def sink(row: dict[str, Any]) -> None:  # one write per row: processes appending at once never interleave
        os.write(fd, (json.dumps(row, ensure_ascii=False) + "\n").encode("utf-8"))

    try:
        for setting in settings:
            gen = EngineGenerate(setting, loader.engine, GenOptions(), log=log)  # its engines: one per PerLang pack
            try:
                for language, ps in positions.items():
                    todo = [p for p in ps if _key(setting.name, p) not in done]
                    if not todo:
                        continue
                    engine = gen.engine_for(language)
                    engine.kv.max_bytes = kv_bytes
                    rows: list[dict[str, Any]] = []
                    t0 = time.monotonic()

                    def keep(row: dict[str, Any], rows: list[dict[str, Any]] = rows, t0: float = t0) -> None:
                        sink(row)
                        rows.append(row)
                        if len(rows) % 50 == 0:
                            log(f"  [{row['setting']}] {row['language']}: {len(rows)} positions, "
                                f"{(time.monotonic() - t0) / len(rows):.2f} s/position")

                    run_positions(engine, todo, setting=setting.name, context_tokens=context_tokens,
                                  max_new_tokens=max_new_tokens, sink=keep)
                    secs = time.monotonic() - t0
                    log(f"[{setting.name}] {language}: {len(rows)} positions, exact {_mean(rows, 'exact'):.3f}, "
                        f"edit sim {_mean(rows, 'edit_sim'):.3f}, {secs / max(1, len(rows)):.2f} s/position")
            finally:
                gen.close()
    finally:
        os.close(fd)
    rows = _read_rows(jsonl)
    report.write_text(render_report(rows, [s.name for s in settings], meta=meta), encoding="utf-8")
    return jsonl, report


def _read_rows(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


# -- report -----------------------------------------------------------------------------------------

def _mean(rows: Sequence[Mapping[str, Any]], key: str) -> float:
    return sum(float(r[key]) for r in rows) / len(rows) if rows else float("nan")


def _share(rows: Sequence[Mapping[str, Any]]) -> float:
    """Kept characters over the truths' characters, pooled."""
    return sum(r["kept"] for r in rows) / max(1, sum(r["truth_chars"] for r in rows))


_METRICS: tuple[tuple[str, str, Callable[[Sequence[Mapping[str, Any]]], str]], ...] = (
    ("Exact match of the rest of the line", "exact", lambda rs: f"{_mean(rs, 'exact'):.3f}"),
    ("Edit similarity", "edit_sim", lambda rs: f"{_mean(rs, 'edit_sim'):.3f}"),
    ("Kept characters per position (share of the truth's characters)", "kept",
     lambda rs: f"{_mean(rs, 'kept'):.1f} ({_share(rs):.0%})"),
    ("Latency per position, ms (mean)", "ms", lambda rs: f"{_mean(rs, 'ms'):.0f}"),
)


def render_report(rows: Sequence[Mapping[str, Any]], settings: Sequence[str] = (), meta: Sequence[str] = ()) -> str:
    """Markdown tables: one per metric (languages as rows, settings as columns, ``all`` pooled), and
    exact match by kind, over the positions every setting was asked (so settings are compared on the
    same cursors; a run cut short or grown with ``--append`` does not skew the comparison)."""
    names = list(dict.fromkeys([*settings, *(r["setting"] for r in rows)]))
    kept_rows = common_positions(rows)
    if len(kept_rows) < len(rows):
        meta = [*meta, f"compared on the {len(kept_rows) // max(1, len(names))} positions every setting has "
                       f"({len(rows) - len(kept_rows)} rows of positions only some settings have are left out)"]
    rows = kept_rows
    languages = list(dict.fromkeys(r["language"] for r in rows))
    cells: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for r in rows:
        for lang in (r["language"], "all"):
            cells.setdefault((r["setting"], lang), []).append(r)
    lines = ["# Line completion on held-out files", ""] + [f"- {m}" for m in meta] + [""]

    def table(title: str, fmt: Callable[[Sequence[Mapping[str, Any]]], str], groups: Sequence[str]) -> None:
        lines.extend([f"## {title}", "", "| language | n | " + " | ".join(names) + " |",
                      "|---|---:|" + "---:|" * len(names)])
        for g in groups:
            got = [cells.get((s, g), []) for s in names]
            n = max(len(c) for c in got)
            shown = [(fmt(c) + ("" if len(c) == n else f" (n={len(c)})")) if c else "–" for c in got]
            lines.append(f"| {g} | {n} | " + " | ".join(shown) + " |")
        lines.append("")

    for title, _key_name, fmt in _METRICS:
        table(title, fmt, [*languages, "all"])
    for r in rows:
        cells.setdefault((r["setting"], f"{r['language']} {r['kind']}"), []).append(r)
    by_kind = [f"{lang} {kind}" for lang in languages for kind in KINDS]
    table("Exact match by cursor kind (mid-line / line start)", _METRICS[0][2], by_kind)
    lines += _seed_tables(cells, names, [*languages, "all"])
    return "\n".join(lines)


def common_positions(rows: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The rows whose position (language, file, line, column, kind) every setting in ``rows`` has."""
    have: dict[str, set[tuple[Any, ...]]] = {}
    for r in rows:
        have.setdefault(r["setting"], set()).add(_key("", r)[1:])
    if len(have) < 2:
        return list(rows)
    shared = set.intersection(*have.values())
    return [r for r in rows if _key("", r)[1:] in shared]


_SEEDED = re.compile(r"^(?P<method>.+?)[-_.](?:s|seed)(?P<seed>\d+)$")


def _seed_tables(cells: Mapping[tuple[str, str], Sequence[Mapping[str, Any]]], names: Sequence[str],
                 groups: Sequence[str]) -> list[str]:
    """Settings named ``METHOD-s<N>`` (or ``METHOD-seed<N>``), two seeds or more: each metric's mean over
    the seeds ± half their range; settings without a seed are shown as they are."""
    methods: dict[str, list[str]] = {}
    for name in names:
        m = _SEEDED.match(name)
        methods.setdefault(m["method"] if m else name, []).append(name)
    if all(len(v) < 2 for v in methods.values()):
        return []
    out: list[str] = []
    for title, key, _fmt in _METRICS[:3]:
        out += [f"## {title.split(' (')[0]}: mean over seeds ± half the range", "",
                "| language | " + " | ".join(f"{m} ({len(v)})" for m, v in methods.items()) + " |",
                "|---|" + "---:|" * len(methods)]
        for g in groups:
            shown = []
            for members in methods.values():
                vals = [_mean(cells[(s, g)], key) for s in members if cells.get((s, g))]
                if not vals:
                    shown.append("–")
                    continue
                mean, half = sum(vals) / len(vals), (max(vals) - min(vals)) / 2
                digits = 1 if key == "kept" else 3
                shown.append(f"{mean:.{digits}f}" + (f" ± {half:.{digits}f}" if len(vals) > 1 else ""))
            out.append(f"| {g} | " + " | ".join(shown) + " |")
        out.append("")
    return out


# -- command line ---------------------------------------------------------------------------------

def add_arguments(ap: argparse.ArgumentParser) -> None:
    """The options of ``--tasks line-completion`` (the model options are the evaluator's)."""
    from training.corpus.build import Options

    g = ap.add_argument_group("line completion (--tasks line-completion)")
    g.add_argument("--sources", action="append", default=[], metavar="LANG=PATH",
                   help="source tree of a language (repeatable; a directory, file or .zip, as the corpus "
                        "builder reads)")
    g.add_argument("--positions", type=int, default=200, help="cursor positions per language (default 200)")
    g.add_argument("--per-file", type=int, default=10, help="most positions per file (default 10)")
    g.add_argument("--spread", action="store_true",
                   help="a file's positions on seeded lines anywhere in it (default: consecutive lines from a "
                        "seeded start, whose prompts share their KV cache: several times faster on a CPU)")
    g.add_argument("--split", choices=["heldout", "all"], default="heldout",
                   help="the corpus builder's held-out files only (default) or every file")
    g.add_argument("--heldout-fraction", type=float, default=Options.heldout_fraction,
                   help=f"the corpus builder's held-out share (default {Options.heldout_fraction})")
    g.add_argument("--context-tokens", type=int, default=None, help="prompt budget (default: the server's)")


def parse_sources(specs: Sequence[str], languages: Sequence[str] | None = None) -> dict[str, list[Path]]:
    """``LANG=PATH`` items (a language may repeat) -> language id -> roots, in the order given."""
    from mole_lsp.lang.registry import load_registry

    reg = load_registry()
    names = [x.strip() for item in languages or () for x in item.split(",") if x.strip()]
    wanted = {reg.resolve(x) or x for x in names} if names else None
    out: dict[str, list[Path]] = {}
    for spec in specs:
        name, sep, path = spec.partition("=")
        lang = reg.resolve(name.strip()) if sep else None
        if lang is None or not path.strip():
            raise ValueError(f"--sources wants LANG=PATH with a known language, got {spec!r}")
        if not Path(path).expanduser().exists():
            raise ValueError(f"--sources {spec}: no such file or folder")
        if wanted is None or lang in wanted:
            out.setdefault(lang, []).append(Path(path).expanduser())
    return out


def positions_from_args(args: argparse.Namespace, log: Callable[[str], None]) -> dict[str, list[Position]]:
    """The positions of every ``--sources`` language; ValueError for a bad source or language."""
    sources = parse_sources(args.sources, args.languages)
    if not sources:
        raise ValueError("--tasks line-completion needs --sources LANG=PATH")
    positions: dict[str, list[Position]] = {}
    for lang, roots in sources.items():
        ps = sample_language(lang, roots, args.positions, per_file=max(1, args.per_file), seed=args.seed,
                             split=args.split, heldout_fraction=args.heldout_fraction, spread=args.spread)
        files = len({p.file for p in ps})
        log(f"{lang}: {len(ps)} positions in {files} {args.split} files"
            + (f" (fewer than {args.positions}: the files ran out)" if len(ps) < args.positions else ""))
        positions[lang] = ps
    return positions


def main(args: argparse.Namespace, positions: Mapping[str, Sequence[Position]], settings: Sequence[Any],
         loader_factory: Callable[[], Any], command: str, log: Callable[[str], None]) -> int:
    """``--tasks line-completion`` once the evaluator has parsed the settings and sampled the positions."""
    from mole_lsp.server.protocol import SETTINGS

    context = args.context_tokens or int(SETTINGS["contextTokens"][1])
    max_new = args.max_new_tokens or DEFAULT_MAX_NEW_TOKENS
    loader = loader_factory()
    layout = "seeded lines" if args.spread else "consecutive lines from a seeded start"
    meta = [f"command: `{command}`", f"base: {loader.name}, device {loader.device}",
            "settings: " + ", ".join(f"{s.name} = {s.path or 'base only'}" for s in settings),
            f"positions: {args.split} files, seed {args.seed}, at most {args.per_file} per file ({layout}), half "
            f"mid-line / half line start; context {context} tokens, greedy, one line, max {max_new} new tokens"]
    started = time.monotonic()
    jsonl, report = run(settings, positions, loader, Path(args.out), context_tokens=context, max_new_tokens=max_new,
                        append=args.append, meta=meta, log=log)
    log(f"wall time {(time.monotonic() - started) / 60:.1f} min")
    print(report.read_text(encoding="utf-8"))
    print(f"rows: {jsonl}\nreport: {report}")
    return 0
