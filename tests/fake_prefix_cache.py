"""The fake LLM's optional prefix-cache model (``FAKE_LLM_PREFIX_CACHE_TOKENS`` > 0; see tests/fake_llm.py).

It models vLLM's automatic prefix caching closely enough to count what routing changes:
- the prompt is the chat rendered as ``<|role|>\\ncontent\\n`` per message plus ``<|assistant|>\\n``, cut into
  tokens of ``chars_per_token`` characters (about what a BPE tokenizer gives for English), tokens into blocks of
  ``block_tokens``;
- a FULL block is identified by a hash chained over every block before it (vLLM's block hash), so a block is
  reusable only after the identical prefix; the last partial block is never cached;
- a request reuses the longest run of cached blocks from the start; the rest is computed (the prefill tokens)
  and all its full blocks become cached at once (when the request is scheduled, as vLLM v1 does), the least
  recently used blocks evicted beyond ``capacity_tokens``.
Deterministic: the same sequence of requests gives the same counts.
"""

from __future__ import annotations

import collections
import hashlib
import math
from dataclasses import dataclass


def render_prompt(messages: list[dict]) -> str:
    """The prompt text whose tokens the model computes (a plain chat template with the generation prompt)."""
    parts = []
    for m in messages:
        content = m.get("content")
        text = content if isinstance(content, str) else repr(content)
        parts.append(f"<|{m.get('role', '')}|>\n{text}\n")
    parts.append("<|assistant|>\n")
    return "".join(parts)


@dataclass
class Lookup:
    """One request's prompt tokens, of which ``cached`` came from the cache and ``computed`` were prefilled."""

    prompt_tokens: int
    cached: int

    @property
    def computed(self) -> int:
        return self.prompt_tokens - self.cached


class PrefixCache:
    """LRU of block hashes with a fixed capacity in tokens. Raises ValueError for a non-positive size."""

    def __init__(self, capacity_tokens: int, block_tokens: int = 16, chars_per_token: int = 4):
        if capacity_tokens <= 0 or block_tokens <= 0 or chars_per_token <= 0:
            raise ValueError("capacity_tokens, block_tokens and chars_per_token must be > 0")
        self.block_tokens, self.chars_per_token = block_tokens, chars_per_token
        self.capacity_blocks = capacity_tokens // block_tokens
        self._lru: collections.OrderedDict[bytes, None] = collections.OrderedDict()

    def tokens(self, text: str) -> int:
        """Number of tokens of ``text``."""
        return math.ceil(len(text) / self.chars_per_token)

    def lookup(self, messages: list[dict]) -> Lookup:
        """Count the cached prefix of this request's prompt, then cache its full blocks (LRU order updated)."""
        text = render_prompt(messages)
        width = self.block_tokens * self.chars_per_token
        digest, cached, hit = b"", 0, True
        for start in range(0, len(text) - width + 1, width):
            digest = hashlib.blake2b(digest + text[start:start + width].encode(), digest_size=16).digest()
            if hit and digest in self._lru:
                cached += self.block_tokens
            else:
                hit = False
            self._lru[digest] = None
            self._lru.move_to_end(digest)
        while len(self._lru) > self.capacity_blocks:
            self._lru.popitem(last=False)
        return Lookup(self.tokens(text), cached)

    def clear(self) -> None:
        self._lru.clear()

    def __len__(self) -> int:
        """Cached tokens."""
        return len(self._lru) * self.block_tokens
