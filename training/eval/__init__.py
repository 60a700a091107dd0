"""Evaluation: sandboxed execution, HumanEval-X tasks, model runs through the engine, reports."""
