"""Rules service: tool-call checks (BFCL AST checker semantics, ToolRL rewards) as reward channels.

Library entry point (used in-process by the worker, the trainer and the benchmarks)::

    from services.rules import score_item
    result = score_item({"id": "x", "completion": "[f(a=1)]", "tools": [...], "ground_truth": [...]})
    result.valid, result.error_type, result.channels["rules/arg_values"], result.toolrl.correctness

The HTTP app is ``services.rules.app:app`` (``POST /v1/rules/score``).
"""

from services.rules.channels import score_item
from services.rules.schemas import CHANNELS, RulesItem, RulesResult

__all__ = ["CHANNELS", "RulesItem", "RulesResult", "score_item"]
