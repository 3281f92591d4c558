"""Build a tiny causal LM and its tokenizer locally (no model hub): a byte-level BPE tokenizer trained with
`tokenizers` on a small corpus, wrapped as a transformers fast tokenizer with a chat template, and a
randomly initialised 2-layer Qwen2 model. Used by tests, the demo and the benchmarks."""

from __future__ import annotations

from pathlib import Path

CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<pad>"]


def build_tokenizer(out_dir: str | Path, corpus: list[str] | None = None, vocab_size: int = 512):
    """Train a byte-level BPE tokenizer on `corpus` and save it (with a chat template) to `out_dir`."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    corpus = corpus or [
        "Find the area of a triangle with a base of 10 units and height of 5 units.",
        '<tool_call>{"name": "calculate_triangle_area", "arguments": {"base": 10, "height": 5}}</tool_call>',
        "[calculate_triangle_area(base=10, height=5)] The quick brown fox jumps over the lazy dog 0123456789.",
    ] * 20
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(corpus, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<pad>",
                                   bos_token=None, unk_token=None)
    fast.chat_template = CHAT_TEMPLATE
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(out_dir)
    return fast


def english_corpus(max_chars: int = 1_500_000) -> list[str]:
    """Plain English-ish text available offline: the Python standard library's own sources (docstrings and
    comments). Training a larger-vocabulary tokenizer on it makes long prompts (HealthBench conversations)
    about 4x shorter in tokens than a byte-level vocabulary would."""
    import sysconfig

    texts, total = [], 0
    for path in sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py")):
        text = path.read_text(errors="ignore")
        texts.append(text)
        total += len(text)
        if total >= max_chars:
            break
    return texts


def build_tiny_qwen2(out_dir: str | Path, corpus: list[str] | None = None, seed: int = 0,
                     hidden_size: int = 32, num_layers: int = 2, vocab_size: int = 512) -> Path:
    """Save a tokenizer (BPE with `vocab_size` entries trained on `corpus`) and a random tiny
    Qwen2ForCausalLM to `out_dir`; returns the path."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    out_dir = Path(out_dir)
    tok = build_tokenizer(out_dir, corpus, vocab_size=vocab_size)
    torch.manual_seed(seed)
    config = Qwen2Config(
        vocab_size=len(tok), hidden_size=hidden_size, intermediate_size=2 * hidden_size,
        num_hidden_layers=num_layers, num_attention_heads=4, num_key_value_heads=2,
        max_position_embeddings=8192, tie_word_embeddings=True,
        eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, bos_token_id=None,
    )
    model = Qwen2ForCausalLM(config)
    model.save_pretrained(out_dir)
    return out_dir
