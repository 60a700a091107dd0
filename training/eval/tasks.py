"""Evaluating the code tasks with any generator: prompts → ``generate`` → extract code → run the tests.

``generate`` is any callable taking a batch of :class:`~training.eval.prompts.TaskPrompt` and returning,
per prompt, the text generated after ``prompt.response_prefix`` (the model side lives in the server's
engine and plugs in through :mod:`training.eval.models`). :func:`pass_rates` gives pass@k per task and
language (or language pair).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from training.eval.executor import Executor
from training.eval.passk import pass_at_k_table
from training.eval.problems import Problem
from training.eval.prompts import (
    TaskPrompt,
    clean_summary,
    program_from_response,
    summarization_prompt,
    summary_synthesis_prompt,
    synthesis_prompt,
    translation_prompt,
)
from training.eval.verdicts import ExecResult, Status

__all__ = [
    "Generate",
    "SampleResult",
    "evaluate_code_task",
    "evaluate_summarization",
    "pass_rates",
    "synthesis_prompts",
    "translation_prompts",
]

Generate = Callable[[Sequence[TaskPrompt]], list[str]]


@dataclass
class SampleResult:
    """One generated answer of a task and its execution verdict."""

    task: str
    task_id: str
    language: str  # language of the tested code
    source_language: str | None  # translation source
    sample: int  # index among the samples of this prompt
    result: ExecResult
    response: str = ""
    summary: str | None = None  # summarization: the cleaned description the code was written from

    @property
    def key(self) -> str:
        """Groups results for reports: language, or "source->target" for translation."""
        return f"{self.source_language}->{self.language}" if self.source_language else self.language



def evaluate_code_task(prompts: Sequence[TaskPrompt], generate: Generate, executor: Executor, *, n_samples: int = 1,
                       example_tests: bool = False) -> list[SampleResult]:
    """Generate ``n_samples`` answers per prompt, build each test program and run them all."""
    batch = [p for p in prompts for _ in range(n_samples)]
    responses = generate(batch)
    if len(responses) != len(batch):
        raise ValueError(f"generate returned {len(responses)} answers for {len(batch)} prompts")
    programs = [program_from_response(p, r, example_tests=example_tests) for p, r in zip(batch, responses, strict=True)]
    idx = [i for i, prog in enumerate(programs) if prog is not None]
    ran = dict(zip(idx, executor.run_many([(batch[i].problem.language, programs[i]) for i in idx]), strict=True))
    out = []
    for i, (p, r) in enumerate(zip(batch, responses, strict=True)):
        res = ran.get(i) or ExecResult(p.problem.language, Status.FAILED, "no code block of the target language")
        out.append(SampleResult(p.task, p.problem.task_id, p.problem.language,
                                p.source.language if p.source else None, i % n_samples, res, r))
    return out


def synthesis_prompts(problems: Mapping[str, Sequence[Problem]]) -> list[TaskPrompt]:
    """One synthesis prompt per problem."""
    return [synthesis_prompt(p) for ps in problems.values() for p in ps]


def translation_prompts(problems: Mapping[str, Sequence[Problem]],
                        pairs: Iterable[tuple[str, str]] | None = None) -> list[TaskPrompt]:
    """All ordered pairs of distinct languages (30 for six), problems paired by number."""
    langs = sorted(problems)
    pairs = list(pairs) if pairs is not None else [(a, b) for a in langs for b in langs if a != b]
    out = []
    for src, tgt in pairs:
        by_index = {p.index: p for p in problems[src]}
        out += [translation_prompt(by_index[t.index], t) for t in problems[tgt] if t.index in by_index]
    return out


def evaluate_summarization(problems: Mapping[str, Sequence[Problem]], generate: Generate, executor: Executor, *,
                           n_samples: int = 1) -> list[SampleResult]:
    """Describe each reference solution, then write code from the (cleaned) description alone."""
    first = [summarization_prompt(p) for ps in problems.values() for p in ps for _ in range(n_samples)]
    summaries = [clean_summary(p.problem, s) for p, s in zip(first, generate(first), strict=True)]
    second = [summary_synthesis_prompt(p.problem, s) for p, s in zip(first, summaries, strict=True)]
    results = evaluate_code_task(second, generate, executor)
    for i, (r, s) in enumerate(zip(results, summaries, strict=True)):
        r.task, r.summary, r.sample = "summarization", s, i % n_samples
    return results


def pass_rates(results: Iterable[SampleResult], ks: Iterable[int] = (1,)) -> dict[str, dict[str, dict[int, float]]]:
    """task -> key (language or pair) -> {k: pass@k}, plus key "all" (mean over every problem)."""
    grouped: dict[str, dict[str, dict[str, list[bool]]]] = defaultdict(lambda: defaultdict(dict))
    for r in results:
        grouped[r.task][r.key].setdefault(r.task_id, []).append(r.result.passed)
    ks = tuple(ks)
    out: dict[str, dict[str, dict[int, float]]] = {}
    for task, by_key in grouped.items():
        out[task] = {key: pass_at_k_table(per_problem, ks) for key, per_problem in sorted(by_key.items())}
        everything = {f"{key}:{tid}": v for key, pp in by_key.items() for tid, v in pp.items()}
        out[task]["all"] = pass_at_k_table(everything, ks)
    return out
