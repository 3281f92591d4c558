"""The demo and its example code (what `rvpo demo`, `rvpo train` and the constraint-neglect benchmark run),
kept out of the library packages:

- :mod:`rvpo.demo.run` — the stages of `make demo` / `rvpo demo`;
- :mod:`rvpo.demo.tooltask` — the tool-calling task built from the BFCL function docs;
- :mod:`rvpo.demo.warmstart` — the supervised warm start of the tiny policy;
- :mod:`rvpo.demo.tinymodel` — a tiny Qwen2 and its tokenizer, built locally (no model hub).
"""
