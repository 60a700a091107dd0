"""Evaluation on the paper's HumanEvalPack tasks (MoLE §III-B; pass@1 with greedy decoding, §IV-C).

The command line: arguments, checks, and dispatch to the modules that do the work —
:mod:`training.eval.reference` (the reference check: the executor's self-test),
:mod:`training.eval.runs` (model runs: settings × tasks, every sample with its execution verdict to
``generations.jsonl``, then :mod:`training.eval.report`'s tables and heatmaps), on problems from
:mod:`training.eval.problems` run by :mod:`training.eval.executor`.

Command line::

    python -m training.evaluate --check-reference --data ../shared/data/humaneval-x \
        [--languages cpp go ...] [--limit N] [--workers N] [--as-response synthesis]
    python -m training.evaluate --data ../shared/data/humaneval-x --base-model smollm2-135m-instruct \
        --base-only --packs mole=DIR --packs alllang=DIR [--tasks synthesis,summarization,translation] \
        [--pairs from:python,to:python] [--mode manual|automated] [--nl-only | --misassign] \
        [--n-samples N --temperature T] [--limit N] --out OUT [--append]
    python -m training.evaluate --tasks line-completion --sources python=SRC [--sources rust=SRC ...] \
        --base-only --packs mole=DIR [--positions 200] --out OUT    (see training.eval.line_completion)
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch starts its thread pool (2-core machines)

from training.eval.executor import Executor
from training.eval.line_completion import LINE_TASK
from training.eval.line_completion import add_arguments as add_line_completion_arguments
from training.eval.problems import HUMANEVALPACK_REPO, Problem, load_problems
from training.eval.reference import (
    Progress,
    check_reference,
    describe_toolchain,
    format_failures,
    format_notes,
    format_reference_table,
)
from training.eval.runs import ALL_TASKS, RunPlan, evaluate_settings, order_languages, parse_pairs
from training.eval.sandbox import Limits

__all__ = ["BASE_ONLY_NAME", "main"]

BASE_ONLY_NAME = "No-FT"


def _build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m training.evaluate", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=_EPILOG)
    data = ap.add_argument_group("data")
    data.add_argument("--data", default=HUMANEVALPACK_REPO,
                      help="HumanEval-X/HumanEvalPack directory or file, or the Hub dataset id (default)")
    data.add_argument("--revision", default=None, help="Hub revision of the dataset")
    data.add_argument("--languages", nargs="+", default=None,
                      help="language ids or names, space or comma separated (default: all found)")
    data.add_argument("--language", default=None,
                      help="language of every problem in --data (default: each record's `language` field, else "
                           "its task-id prefix), for benchmarks such as MBXP or MultiPL-E")
    data.add_argument("--limit", type=int, default=None, help="first N problems per language")
    tasks = ap.add_argument_group("tasks and analyses")
    tasks.add_argument("--check-reference", action="store_true",
                       help="run the dataset's reference solutions through the executor (self-test)")
    tasks.add_argument("--as-response", choices=["synthesis", "translation", "summary_synthesis"], default=None,
                       help="with --check-reference: feed each reference through that task's answer path")
    tasks.add_argument("--tasks", default=",".join(ALL_TASKS), help="comma list of synthesis, summarization, "
                       f"translation (default: all three); or {LINE_TASK} alone (held-out source files, see below)")
    tasks.add_argument("--pairs", default=None, help="translation pairs: all (default: the 30 ordered pairs of the "
                       "loaded languages), or a comma list of from:L, to:L, A->B")
    tasks.add_argument("--mode", default="manual", help="code answers in manual mode (the target expert; default) "
                       "or automated mode (the live fence parser); 'manual,automated' runs both")
    tasks.add_argument("--nl-only", action="store_true", help="route every token through the NL adapter (packs only)")
    tasks.add_argument("--misassign", action="store_true",
                       help="RQ4: answer language L with the expert of M for every L, M (6×6; synthesis and "
                            "summarization; diagonal = the right expert)")
    models = ap.add_argument_group("models")
    models.add_argument("--base-model", default=None,
                        help="base model: local folder, .gguf, Hub id, or smollm2-135m-instruct, the quick-start "
                             "model (the default, unless MOLE_BASE_MODEL names another)")
    models.add_argument("--packs", action="append", default=[], metavar="NAME=DIR",
                        help="a pack set to evaluate (repeatable): a pack repository folder (core/, experts/), or "
                             "a folder of per-language pack folders (PerLang-FT)")
    models.add_argument("--base-only", action="store_true",
                        help=f"evaluate the base model alone ({BASE_ONLY_NAME}); the default without --packs")
    models.add_argument("--device", default="auto")
    models.add_argument("--threads", type=int, default=None, help="torch threads (default: the usable cores)")
    gen = ap.add_argument_group("generation")
    gen.add_argument("--n-samples", type=int, default=1, help="samples per problem (pass@k for k <= n)")
    gen.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (the paper's pass@1)")
    gen.add_argument("--seed", type=int, default=0)
    gen.add_argument("--max-new-tokens", type=int, default=None, help=f"default 512; {LINE_TASK}: 48")
    gen.add_argument("--summary-max-new-tokens", type=int, default=None,
                     help="explanations (default: about half the description's character budget, capped by "
                          "--max-new-tokens)")
    run = ap.add_argument_group("execution and output")
    run.add_argument("--workers", type=int, default=2)
    run.add_argument("--timeout", type=float, default=Limits.wall_s, help="wall-clock seconds per test run")
    run.add_argument("--memory-mb", type=int, default=Limits.memory_mb)
    run.add_argument("--example-tests", action="store_true", help="use the docstring examples as tests")
    run.add_argument("--npm-packages", nargs="+", default=[], metavar="NAME[@VERSION]",
                     help="extra npm packages JavaScript programs may require (MBXP's tests require lodash)")
    run.add_argument("--node-modules", type=Path, default=None, metavar="DIR",
                     help="take npm packages from this local node_modules folder instead of installing them")
    run.add_argument("--out", default=None, help="output folder: generations.jsonl, report.md, results.json, PNGs "
                     "(required for model runs)")
    run.add_argument("--append", action="store_true",
                     help="add to the rows already in --out and report over all of them (several runs, one report)")
    add_line_completion_arguments(ap)
    return ap


_EPILOG = """\
examples:
  python -m training.evaluate --check-reference --data ../shared/data/humaneval-x --workers 2
  python -m training.evaluate --data ../shared/data/humaneval-x --base-model ../shared/models/smollm2-135m-instruct \\
      --base-only --packs mole=/tmp/exp/mole/packs --tasks synthesis --limit 20 --out out/eval
  python -m training.evaluate ... --tasks translation --pairs from:python,to:python --limit 10 --out out/eval --append
  python -m training.evaluate ... --packs mole=DIR --misassign --tasks synthesis --limit 10 --out out/rq4
"""

def _executor(args: argparse.Namespace) -> Executor:
    limits = Limits(wall_s=args.timeout, cpu_s=max(1, int(args.timeout)), memory_mb=args.memory_mb)
    packages = [x for item in args.npm_packages for x in item.split(",") if x.strip()]
    return Executor(limits, workers=args.workers, npm_packages=packages, node_modules=args.node_modules)


def _load(args: argparse.Namespace) -> dict[str, list[Problem]]:
    langs = None
    if args.languages:
        langs = [x for item in args.languages for x in item.split(",") if x.strip()]
    problems = load_problems(None if args.data == HUMANEVALPACK_REPO else args.data, langs, revision=args.revision,
                             language=args.language)
    if args.limit is not None:
        problems = {lang: ps[: args.limit] for lang, ps in problems.items()}
    return problems


def _runnable(problems: dict[str, list[Problem]], executor: Executor) -> dict[str, list[Problem]]:
    print("sandbox:")
    for line in executor.info.lines():
        print(f"  {line}")
    toolchains = executor.prepare(sorted(problems))
    print("toolchains:")
    for tc in toolchains.values():
        print(f"  {describe_toolchain(tc)}")
    skipped = sorted(lang for lang, tc in toolchains.items() if not tc.available)
    if skipped:
        print(f"skipped (toolchain missing, not counted): {', '.join(skipped)}")
    return {lang: ps for lang, ps in problems.items() if lang not in skipped}


def main(argv: Sequence[str] | None = None) -> int:
    ap = _build_parser()
    args = ap.parse_args(argv)
    if args.check_reference:
        return _check_reference_main(args)
    if args.out is None:
        ap.error("--out DIR is required for model runs")
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    bad = sorted(set(tasks) - {*ALL_TASKS, LINE_TASK})
    if bad or not tasks:
        ap.error(f"--tasks: unknown {', '.join(bad) or '(none)'}; choose from {', '.join(ALL_TASKS)} or {LINE_TASK}")
    if LINE_TASK in tasks and len(tasks) > 1:
        ap.error(f"--tasks {LINE_TASK} runs alone (other data, other output)")
    modes = [m.strip() for m in args.mode.split(",") if m.strip()]
    if not modes or set(modes) - {"manual", "automated"}:
        ap.error("--mode: manual, automated or both (comma separated)")
    if args.n_samples < 1:
        ap.error("--n-samples must be >= 1")
    if args.n_samples > 1 and args.temperature <= 0:
        ap.error("--n-samples > 1 needs --temperature > 0 (greedy samples are all the same)")
    if args.misassign and args.nl_only:
        ap.error("--misassign and --nl-only are separate runs")

    from training.eval.models import BaseLoader, GenOptions, base_only_setting, parse_packs

    try:
        settings = [parse_packs(spec) for spec in args.packs]
    except ValueError as e:
        ap.error(str(e))
    if args.base_only or not settings:
        settings.insert(0, base_only_setting(BASE_ONLY_NAME))
    names = [s.name for s in settings]
    if len(set(names)) != len(names):
        ap.error(f"setting names must differ: {names}")

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    command = "python -m training.evaluate " + " ".join(sys.argv[1:] if argv is None else argv)
    if tasks == [LINE_TASK]:
        from training.eval import line_completion

        try:
            positions = line_completion.positions_from_args(args, log)
        except ValueError as e:
            ap.error(str(e))
        return line_completion.main(args, positions, settings, lambda: BaseLoader(
            args.base_model, device=args.device, threads=args.threads, log=log), command, log)
    if args.max_new_tokens is None:
        args.max_new_tokens = 512
    problems = _load(args)
    try:
        pairs = parse_pairs(args.pairs, order_languages(problems)) if "translation" in tasks else None
    except ValueError as e:
        ap.error(str(e))
    executor = _executor(args)
    runnable = _runnable(problems, executor)
    if pairs is not None:
        pairs = [p for p in pairs if p[0] in runnable and p[1] in runnable]

    loader = BaseLoader(args.base_model, device=args.device, threads=args.threads, log=log)
    plan = RunPlan(tasks=tasks, pairs=pairs, modes=modes, nl_only=args.nl_only, misassign=args.misassign,
                   n_samples=args.n_samples, example_tests=args.example_tests)
    options = GenOptions(mode=modes[0], max_new_tokens=args.max_new_tokens,
                         summary_max_new_tokens=args.summary_max_new_tokens, temperature=args.temperature,
                         seed=args.seed)
    decoding = ("greedy" if args.temperature <= 0 else f"T={args.temperature}, {args.n_samples} samples") \
        + f", max {args.max_new_tokens} new tokens"
    jsonl, report = evaluate_settings(settings, runnable, executor, plan, options, loader, Path(args.out),
                                      append=args.append, command=command, decoding=decoding, log=log)
    print(report.read_text(encoding="utf-8"))
    print(f"rows: {jsonl}\nreport: {report}")
    return 0


def _check_reference_main(args: argparse.Namespace) -> int:
    problems = _load(args)
    executor = _executor(args)
    runnable = _runnable(problems, executor)
    total = sum(len(ps) for ps in runnable.values())
    mode = f"as {args.as_response} answers" if args.as_response else "as completions"
    print(f"\nreference solutions {mode}, {'example' if args.example_tests else 'full'} tests, "
          f"{args.workers} workers:\n")
    outcomes = check_reference(runnable, executor, as_response=args.as_response, example_tests=args.example_tests,
                               on_result=Progress(total))
    print(format_reference_table(outcomes))
    failures = format_failures(outcomes)
    if failures:
        print("\nfailures:")
        for line in failures:
            print(f"  {line}")
    notes = format_notes(outcomes)
    if notes:
        print("\nnotes:")
        for line in notes:
            print(f"  {line}")
    return 0 if not failures else 1


if __name__ == "__main__":
    sys.exit(main())

