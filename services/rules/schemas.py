"""Request / response models of the rules service (``POST /v1/rules/score``): defined once in
:mod:`contracts.rules` (docs/contracts.md, "Rules service"), which the gateway validates with too."""

from contracts.channels import RULE_CHANNELS as CHANNELS  # noqa: F401
from contracts.messages import AssistantMessage  # noqa: F401
from contracts.rules import (  # noqa: F401
    Format,
    Mode,
    RulesItem,
    RulesOptions,
    RulesRequest,
    RulesResponse,
    RulesResult,
    ToolList,
    ToolRLValues,
    construct,
)
