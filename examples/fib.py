"""A tiny file to try completions on: `mole-lsp complete examples/fib.py --line 6 --col 0`."""


def fibonacci(n: int) -> int:
    """Return the n-th Fibonacci number (fibonacci(0) == 0)."""

