"""Helpers the tests share (fixtures live in conftest.py): tiny random Llama models and tokenizers,
a tiny base folder, training rows, adapter perturbation, and where the repository and ../shared are.

Everything here is built offline in memory or in a temporary folder.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("MOLE_SHARED", REPO_ROOT.parent / "shared"))
SMOLLM2 = SHARED / "models" / "smollm2-135m-instruct"


def tiny_llama_config(**overrides):
    from transformers import LlamaConfig

    kw = dict(vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
              num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
              tie_word_embeddings=False, attn_implementation="eager")
    kw.update(overrides)
    return LlamaConfig(**kw)


def make_tiny_llama(seed: int = 0, **overrides):
    from transformers import LlamaForCausalLM

    torch.manual_seed(seed)
    model = LlamaForCausalLM(tiny_llama_config(**overrides)).float().eval()
    # Random init has tiny FFN weights; widen them so adapter errors show up in the logits.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "mlp" in name:
                p.normal_(0, 0.2)
    return model


def perturb(mole, seed: int = 1, std: float = 0.05) -> None:
    """Make adapters look trained: distinct, non-zero factors everywhere."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in mole.trainable_parameters():
            p.add_(torch.randn(p.shape, generator=g) * std)


CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

CODE = {
    "python": "def add(a, b):\n    return a + b\n",
    "rust": "fn add(a: i32, b: i32) -> i32 {\n    a + b\n}\n",
    "go": "func add(a int, b int) int {\n\treturn a + b\n}\n",
    "cpp": "int add(int a, int b) {\n    return a + b;\n}\n",
}
TAGS = {"python": "py", "rust": "rs", "go": "golang", "cpp": "c++"}  # aliases on purpose


def make_rows(n_per_lang: int = 12, langs=("python", "rust", "go")) -> list[dict]:
    rows = []
    for lang in langs:
        for i in range(n_per_lang):
            code = CODE[lang].replace("add", f"add{i}")
            rows.append({"question": f"Write add{i} in {lang}.",
                         "answer": f"Here:\n```{TAGS[lang]}\n{code}```\nDone.", "split": None})
    for r in rows:
        del r["split"]
    return rows


def tiny_tokenizer(chat: bool = True):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    corpus = [r["question"] + r["answer"] for r in make_rows(3, tuple(CODE))] * 5
    trainer = trainers.BpeTrainer(vocab_size=300, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"])
    tok.train_from_iterator(corpus, trainer)
    kw = dict(chat_template=CHAT_TEMPLATE) if chat else {}
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|im_start|>", eos_token="<|im_end|>",
                                   pad_token="<|im_end|>", unk_token="<|endoftext|>",
                                   clean_up_tokenization_spaces=False, **kw)


def tiny_base_dir(path: Path, seed: int = 0, chat: bool = True) -> Path:
    """A folder holding a tiny random Llama + tokenizer, loadable with from_pretrained."""
    tok = tiny_tokenizer(chat)
    model = make_tiny_llama(seed, vocab_size=len(tok), max_position_embeddings=512)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


def write_jsonl(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def tiny_train_config(base: Path, data: Path, out: Path, langs, **kw):
    """A TrainConfig for a few CPU steps on a tiny base (override any field with ``kw``)."""
    from training.config import TrainConfig

    values = dict(base=str(base), data=[str(data)], languages=list(langs), max_length=96, val_fraction=0.1,
                  r_shared=6, r_expert=2, r_lora=8, lr=1e-2, micro_batch=2, grad_accum=2, max_steps=8,
                  warmup_ratio=0.1, device="cpu", precision="fp32", attn_implementation="eager", out=str(out),
                  log_every=1, progress=False, offline=True, threads=1)
    values.update(kw)
    return TrainConfig(**values)


def quiet(_msg: str) -> None:
    """A log function that prints nothing."""
