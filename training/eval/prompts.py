"""The paper's task prompts (MoLE §III-B, evaluated as HumanEvalPack does) and the test program of an answer.

*Synthesis* (instruction → code), *summarization* (code → description, then description → code; the
code is what gets tested) and *translation* (reference solution in language A → code in language B).
Each builder returns a :class:`TaskPrompt`: the user instruction plus the start of the answer, which
opens a code fence of the target language and repeats the function header, as in the authors'
evaluation harness (their fork of bigcode-evaluation-harness), so generation can stop at the closing
fence. Language names come from the registry; the chat layout around the instruction is the engine's
(:func:`mole_lsp.engine.prompts.chat_text`, applied where the prompt meets the model).
"""

from __future__ import annotations

from dataclasses import dataclass

from training.eval.extract import extract_code
from training.eval.problems import Problem, display_name, reference_code
from training.eval.programs import build_program

__all__ = [
    "TaskPrompt",
    "clean_summary",
    "program_from_response",
    "summarization_prompt",
    "summary_synthesis_prompt",
    "synthesis_prompt",
    "translation_prompt",
]


@dataclass(frozen=True)
class TaskPrompt:
    task: str  # "synthesis", "summarization", "summary_synthesis" or "translation"
    problem: Problem  # whose tests judge the result (the target for translation)
    instruction: str  # the user's turn
    response_prefix: str  # how the answer starts ("```rust\n" + function header for code answers)
    language: str | None  # language of the code to extract from the answer; None for prose answers
    stop: tuple[str, ...] = ()
    source: Problem | None = None  # translation: the problem whose solution is shown
    max_chars: int | None = None  # summarization: length budget of the description


_FENCE = "```"


def _fence(lang: str, code: str) -> str:
    """``code`` in a closed fence tagged with the language id (the benchmark harness's layout)."""
    return f"{_FENCE}{lang}\n{code.strip(chr(10))}\n{_FENCE}"


def _open_fence(lang: str) -> str:
    return f"{_FENCE}{lang}\n"


def synthesis_prompt(problem: Problem) -> TaskPrompt:
    """Instruction → code; the answer starts with the function header and its docstring."""
    return TaskPrompt("synthesis", problem, problem.instruction, _open_fence(problem.language) + problem.prefix,
                      problem.language, (_FENCE,))


def summarization_prompt(problem: Problem) -> TaskPrompt:
    """Code (without docstring) → a description no longer than the original docstring."""
    budget = max(1, len(problem.docstring))
    code = problem.declaration + problem.solution
    instruction = (f"{_fence(problem.language, code)}\n\nExplain what this {display_name(problem.language)} code "
                   f"does in plain language, in at most {budget} characters.")
    return TaskPrompt("summarization", problem, instruction, "", None, (), max_chars=budget)


def clean_summary(problem: Problem, text: str) -> str:
    """The description as the second step gets it: cut to the budget, with lines copied from the
    reference solution removed (so a summary cannot pass by quoting the code)."""
    long_lines = {ln.strip() for ln in problem.solution.splitlines() if len(ln.strip()) > 20}
    kept = [ln for ln in text.strip().splitlines() if ln.strip() not in long_lines]
    budget = max(1, len(problem.docstring))
    return "\n".join(kept)[:budget].strip()


def summary_synthesis_prompt(problem: Problem, summary: str) -> TaskPrompt:
    """Description → code; the answer starts with the function header (no docstring)."""
    instruction = f"{summary.strip()}\n\nWrite {display_name(problem.language)} code that does what is described above."
    return TaskPrompt("summary_synthesis", problem, instruction, _open_fence(problem.language) + problem.declaration,
                      problem.language, (_FENCE,))


def translation_prompt(source: Problem, target: Problem) -> TaskPrompt:
    """Reference solution in the source language → code in the target language."""
    if source.index != target.index:
        raise ValueError(f"{source.task_id} and {target.task_id} are different problems")
    instruction = (f"Translate this {display_name(source.language)} code to {display_name(target.language)}.\n\n"
                   f"{_fence(source.language, reference_code(source))}")
    return TaskPrompt("translation", target, instruction, _open_fence(target.language) + target.declaration,
                      target.language, (_FENCE,), source=source)


def program_from_response(prompt: TaskPrompt, response: str, *, example_tests: bool = False) -> str | None:
    """The test program for a generated answer (``response`` continues ``prompt.response_prefix``);
    None when the answer holds no code of the target language."""
    if prompt.language is None:
        raise ValueError(f"{prompt.task} answers are prose; use clean_summary and summary_synthesis_prompt")
    code = extract_code(prompt.response_prefix + response, prompt.language)
    if code is None:
        return None
    return build_program(prompt.problem, code, example_tests=example_tests)
