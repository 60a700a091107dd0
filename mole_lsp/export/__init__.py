"""Exports of MoLE routes as standard LoRA adapters (PEFT folders, GGUF LoRA files): see DESIGN §9."""
