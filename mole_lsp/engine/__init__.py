"""The engine: base model loading, prompts, expert management and decoding for the server and evaluation."""
