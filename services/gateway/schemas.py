"""Wire formats of the gateway: defined once in :mod:`contracts.gateway` (docs/contracts.md, "Gateway")."""

from contracts.gateway import (  # noqa: F401
    BfclVerdict,
    ChannelCounts,
    DenseRewards,
    ItemResult,
    JobView,
    ScoreItem,
    ScoreRequest,
    SourceState,
)
