"""Tiny GGUF bases for the tests: a random tiny Llama's weights in llama.cpp layout with a byte-level BPE
vocabulary. All F32 for the export tests (so llama.cpp's floor against torch is its own arithmetic, not
quantization); the FFN in Q8_0 for the base-model tests (tests/engine/test_base_model.py), as a
quantized GGUF that transformers dequantizes."""

from __future__ import annotations

from pathlib import Path

import numpy as np

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
MERGES = ["Ġ t", "h e"]  # llama.cpp refuses a BPE vocabulary without merges


def tiny_gguf_vocab(merges: list[str] = MERGES, extra_specials: tuple[str, ...] = ()) -> list[str]:
    """Specials, the 256 byte-level symbols, then one token per merge."""
    from tokenizers import pre_tokenizers

    return [*SPECIALS, *extra_specials, *sorted(pre_tokenizers.ByteLevel.alphabet()),
            *(m.replace(" ", "") for m in merges)]


def permute_for_gguf(w: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's q/k row order for its rope layout (transformers undoes it when loading a GGUF)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def write_f32_gguf(path: Path, model) -> Path:
    """``model`` (a LlamaForCausalLM whose vocab is ``tiny_gguf_vocab()``) as an all-F32 GGUF."""
    return write_gguf(path, model, MERGES)


def write_gguf(path: Path, model, merges: list[str], *, q8_ffn: bool = False, pre: str = "smollm") -> Path:
    """``model`` (a LlamaForCausalLM whose vocab is ``tiny_gguf_vocab(merges)``) as a GGUF: all F32, or
    with the FFN weights in Q8_0 (``q8_ffn``); ``pre`` names llama.cpp's pre-tokenizer."""
    import gguf

    cfg = model.config
    tokens = tiny_gguf_vocab(merges)
    assert cfg.vocab_size == len(tokens), "build the model with vocab_size=len(tiny_gguf_vocab(merges))"
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name("tiny test llama")
    w.add_context_length(cfg.max_position_embeddings)
    w.add_embedding_length(cfg.hidden_size)
    w.add_block_count(cfg.num_hidden_layers)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_head_count(cfg.num_attention_heads)
    w.add_head_count_kv(cfg.num_key_value_heads)
    w.add_rope_dimension_count(cfg.hidden_size // cfg.num_attention_heads)
    w.add_rope_freq_base(float(cfg.rope_parameters["rope_theta"]))
    w.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    w.add_vocab_size(cfg.vocab_size)
    w.add_file_type(gguf.LlamaFileType.MOSTLY_Q8_0 if q8_ffn else gguf.LlamaFileType.ALL_F32)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre(pre)
    w.add_token_list(tokens)
    w.add_token_types([3 if t in SPECIALS else 1 for t in tokens])
    w.add_token_merges(merges)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)
    w.add_pad_token_id(2)
    w.add_add_bos_token(False)

    sd = {k: v.detach().float().numpy() for k, v in model.state_dict().items()}

    def put(name: str, array: np.ndarray, quantize: bool = False) -> None:
        if quantize:
            qtype = gguf.GGMLQuantizationType.Q8_0
            w.add_tensor(name, gguf.quants.quantize(array, qtype), raw_dtype=qtype)
        else:
            w.add_tensor(name, np.ascontiguousarray(array, dtype=np.float32))

    put("token_embd.weight", sd["model.embed_tokens.weight"])
    put("output_norm.weight", sd["model.norm.weight"])
    if not cfg.tie_word_embeddings:
        put("output.weight", sd["lm_head.weight"])
    for i in range(cfg.num_hidden_layers):
        p = f"model.layers.{i}."
        put(f"blk.{i}.attn_norm.weight", sd[p + "input_layernorm.weight"])
        put(f"blk.{i}.attn_q.weight", permute_for_gguf(sd[p + "self_attn.q_proj.weight"], cfg.num_attention_heads))
        put(f"blk.{i}.attn_k.weight", permute_for_gguf(sd[p + "self_attn.k_proj.weight"], cfg.num_key_value_heads))
        put(f"blk.{i}.attn_v.weight", sd[p + "self_attn.v_proj.weight"])
        put(f"blk.{i}.attn_output.weight", sd[p + "self_attn.o_proj.weight"])
        put(f"blk.{i}.ffn_norm.weight", sd[p + "post_attention_layernorm.weight"])
        put(f"blk.{i}.ffn_gate.weight", sd[p + "mlp.gate_proj.weight"], q8_ffn)
        put(f"blk.{i}.ffn_up.weight", sd[p + "mlp.up_proj.weight"], q8_ffn)
        put(f"blk.{i}.ffn_down.weight", sd[p + "mlp.down_proj.weight"], q8_ffn)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def llama_cpp_logits(gguf_path: Path, tokens: list[int], lora: Path | None = None, scale: float = 1.0):
    """Logits (fp32 numpy [n_tokens, vocab]) of llama.cpp on the GGUF base, with a LoRA file if given."""
    from llama_cpp import Llama

    llm = Llama(
        model_path=str(gguf_path), lora_path=str(lora) if lora else None, lora_scale=scale,
        n_ctx=64, n_batch=64, n_threads=1, logits_all=True, verbose=False, seed=0,
    )  # fmt: skip
    try:
        llm.eval(tokens)
        return np.array(llm.scores[: len(tokens)], dtype=np.float32)
    finally:
        llm.close()


def dequantized_gguf(src: Path, dst: Path) -> Path:
    """An all-F32 copy of a (quantized) GGUF: same metadata and tensor names, every tensor dequantized.
    llama.cpp on it computes with the very weights transformers dequantizes from ``src``, so its floor
    against torch is arithmetic only."""
    import gguf

    reader = gguf.GGUFReader(str(src))
    arch = reader.fields["general.architecture"].contents()
    writer = gguf.GGUFWriter(str(dst), arch)
    for key, f in reader.fields.items():
        if key.startswith("GGUF.") or key in ("general.architecture", "general.file_type"):
            continue
        sub = f.types[1] if len(f.types) > 1 else None
        writer.add_key_value(key, f.contents(), f.types[0], sub_type=sub)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    for t in reader.tensors:
        data = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32)
        writer.add_tensor(t.name, data.reshape([int(x) for x in reversed(t.shape)]))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return dst
