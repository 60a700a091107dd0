"""Training, corpus mining and evaluation for mole-lsp (see training.finetune for a run's path)."""
