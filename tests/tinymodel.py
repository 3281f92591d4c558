"""Tests build their tiny models with the package's own builder (also used by the demo and benchmarks)."""

from rvpo.demo.tinymodel import CHAT_TEMPLATE, build_tiny_qwen2, build_tokenizer  # noqa: F401
