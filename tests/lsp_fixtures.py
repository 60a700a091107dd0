"""Tiny real components for engine and server tests: a random Llama with a small BPE tokenizer saved
as a local model folder, and tiny packs (core + a few experts) exported with mole_lsp.packs.format.

Everything is built once per test session (a few seconds on 2 cores) under a session temp folder.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<fim_prefix>", "<fim_suffix>", "<fim_middle>"]
CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
PACK_LANGUAGES = ("python", "rust", "javascript")
PACK_REPO = "mole-test/tiny-packs"

_CORPUS = [
    "def fib(n):\n    if n < 2:\n        return n\n    return fib(n - 1) + fib(n - 2)\n",
    "fn main() {\n    let xs: Vec<i32> = vec![1, 2, 3];\n    println!(\"{}\", xs.len());\n}\n",
    "function add(a, b) {\n  return a + b;\n}\nconsole.log(add(1, 2));\n",
    "Explain what this code does, briefly.\n```python\nprint('hi')\n```\nIt prints a greeting.\n",
    "Translate this Python code to Rust. Answer with the code only.\n```rust\nlet x = 1;\n```\n",
    "class Stack:\n    def __init__(self):\n        self.items = []\n\n    def push(self, x):\n"
    "        self.items.append(x)\n",
    "for i in range(10):\n    print(i * i)\n# the end\n",
]


def make_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=420, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  special_tokens=SPECIALS, show_progress=False)
    tok.train_from_iterator(_CORPUS * 4, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|endoftext|>", eos_token="<|endoftext|>",
                                   pad_token="<|endoftext|>")
    fast.chat_template = CHAT_TEMPLATE
    return fast


@dataclass
class TinyWorld:
    base_dir: Path  # a local model folder (config, safetensors, tokenizer)
    packs_dir: Path  # core/ experts/<lang>/ index.json
    weights_sha256: str


def build_tiny_world(root: Path, seed: int = 0) -> TinyWorld:
    """Save the tiny base and export its packs below ``root`` (idempotent per folder)."""
    from helpers import make_tiny_llama

    from mole_lsp.core.config import MoleConfig
    from mole_lsp.core.model import attach_mole
    from mole_lsp.packs.format import BaseIdentity, export_packs, fingerprint_model

    base_dir, packs_dir = root / "tiny-base", root / "tiny-packs"
    tok = make_tokenizer()
    torch.manual_seed(seed)
    model = make_tiny_llama(seed, vocab_size=len(tok), bos_token_id=tok.bos_token_id,
                            eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    model.save_pretrained(base_dir)
    tok.save_pretrained(base_dir)
    sha = fingerprint_model(model)  # what base_model.weights_identity computes for the saved folder

    mole = attach_mole(copy.deepcopy(model), MoleConfig(r_shared=4, r_expert=2, languages=PACK_LANGUAGES))
    # PiSSA init leaves the logits unchanged; perturb every adapter so routes give different logits.
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for p in mole.trainable_parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.3)
    export_packs(mole, packs_dir, BaseIdentity(f"local:{base_dir.name}", None, sha))
    return TinyWorld(base_dir, packs_dir, sha)


def load_tiny_base(world: TinyWorld):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(world.base_dir, dtype=torch.float32).eval()
    return model, AutoTokenizer.from_pretrained(world.base_dir)


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory: pytest.TempPathFactory) -> TinyWorld:
    """The tiny base + packs, built once per session (import this fixture into a test module)."""
    return build_tiny_world(tmp_path_factory.mktemp("tiny-world"))
