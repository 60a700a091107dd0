"""A tiny file to try completions on: `mole-lsp complete examples/fib.py --line 7 --col 9`."""


def fibonacci(n: int) -> int:
    """Return the n-th Fibonacci number (fibonacci(0) == 0)."""
    if n < 2:
        
