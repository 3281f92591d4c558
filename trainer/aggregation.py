"""Advantages from multi-channel rewards: GRPO, GDPO, RVPO (SoftMin), variance penalty and min.

Layout (TRL's gathered layout): `rewards` is `[N, K]`, `N = num_prompts * num_generations`, the
`num_generations` completions of one prompt in contiguous rows, one column per reward channel. NaN means the
channel does not exist for that completion (a prompt with 5 rubric criteria in a K = 17 batch) or could not be
scored; NaN is always left out, never read as 0.

Formulas
- Group z-score per channel (GDPO, arXiv 2601.05242; TRL `normalize_then_sum`):
  `Z = (r - nanmean_G(r)) / (nanstd_G(r) + eps)`, Bessel-corrected NaN-aware std (TRL's `nanstd`). A channel seen
  once in its group (or a group of size 1), or constant over it, has no within-group contrast: `Z = 0` (also with
  `eps = 0`, where the formula would be 0/0).
- grpo: `s = nansum_j w_j r_j`, then `(s - mean_G s) / (std_G s + eps)` (TRL `sum_then_normalize`,
  `scale_rewards="group"`).
- gdpo: `S = nansum_j w_j Z_j`, then batch whitening `(S - nanmean S) / (nanstd S + eps)` over all N rows.
- gdpo_mean (the GDPO baseline of the RVPO paper, arXiv 2605.05750): `S = sum_j w~_j Z_j` over the channels
  present in the row, `w~` = weights renormalised over them (uniform weights: `(1/M) sum_j Z_j`), then batch
  whitening. It is the k -> 0 limit of rvpo. Unlike gdpo's sum it does not grow with the number of channels a
  prompt has, so prompts with many criteria do not get larger scores before the whitening.
- rvpo (RVPO, arXiv 2605.05750, the SoftMin / entropic risk of the channel z-scores):
  `S = -(1/k) log sum_j w~_j exp(-k Z_j)` over the channels present in the row, `w~` = weights renormalised over
  them (uniform weights give the paper's `(1/M) sum_j`). It goes to the weighted mean of Z as k -> 0 and to the
  min as k -> inf, and `S = mean - (k/2) var + O(k^2)`. Computed as
  `S = Zmin - (1/k) log1p(sum_j w~_j expm1(-k (Z_j - Zmin)))` (exact rewrite: every exponent is <= 0), in the
  rewards' dtype where k and Z are in its safe range, else in float64 without forming 1/k (see `softmin`): finite
  and accurate for any finite k > 0, also where k or k * Z leave the dtype's range (the hard-min limit) and for
  subnormal k (the weighted-mean limit).
- variance_penalty: `S = mean_w~(Z) - beta var_w~(Z)` (population variance), `beta = k/2` by default: the
  second-order Taylor match of rvpo.
- min: `S = min_j Z_j` over the present channels with positive weight.
All but grpo are batch-whitened like gdpo. A row without any usable channel gets advantage 0 and is left out of
every statistic; for gdpo "usable" means "not NaN in every channel", exactly as TRL does.

Constant channels: by default (the literal formula) a channel without within-group contrast enters every
aggregator at `Z = 0`. With `drop_constant_channels=True` (default off) such a channel is left out of the row's
channel set instead, so `M` counts only the channels that vary in the group: rvpo, gdpo_mean, variance_penalty and
min then aggregate over the varying channels only (a row whose group varies in no channel has no usable channel:
advantage 0, left out of the whitening). It has no meaning for grpo (raw rewards) and gdpo (a sum, where a 0
term changes nothing) and is refused there.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

METHODS = ("grpo", "gdpo", "gdpo_mean", "rvpo", "variance_penalty", "min")
#: Methods for which `drop_constant_channels` changes the score (see the module docstring).
DROP_CONSTANT_METHODS = ("gdpo_mean", "rvpo", "variance_penalty", "min")


def compute_advantages(
    rewards: torch.Tensor,
    num_generations: int,
    method: str = "rvpo",
    *,
    risk: float = 1.0,
    beta: float | None = None,
    weights: Sequence[float] | torch.Tensor | None = None,
    eps: float = 1e-4,
    whiten: bool = True,
    drop_constant_channels: bool = False,
) -> torch.Tensor:
    """Advantages `[N]` from rewards `[N, K]` (NaN = channel absent or unscored); formulas in the module docstring.

    Args:
        rewards: float `[N, K]`, rows of one prompt contiguous (TRL's gathered layout); reward units per channel.
        num_generations: G, completions per prompt; N must be a multiple of G.
        method: one of `METHODS`.
        risk: k > 0, the RVPO risk coefficient (also sets `beta = k / 2` for variance_penalty).
        beta: variance weight of variance_penalty; default `risk / 2`.
        weights: `[K]` non-negative channel weights (TRL's `reward_weights`); default all ones. gdpo and grpo use
            them as TRL does (weighted nansum); rvpo / variance_penalty renormalise them over the present channels;
            min only drops zero-weight channels.
        eps: finite, >= 0, added to every std (TRL uses 1e-4).
        whiten: False returns the score S before batch whitening (NaN for rows without a usable channel);
            grpo is unaffected.
        drop_constant_channels: leave channels that are constant (or seen once) within a group out of the row's
            channel set instead of entering at Z = 0; only for `DROP_CONSTANT_METHODS`. Default False (the
            literal formula).

    Returns:
        `[N]` advantages, dtype of `rewards` (float32 for integer or half inputs).

    Raises:
        ValueError: naming the argument, when rewards is not 2-D or holds +-inf, K = 0, N is not a multiple of
            num_generations, risk is not a finite number > 0, beta < 0, eps is negative or not finite, weights
            have the wrong length, are negative or all zero, method is unknown, or drop_constant_channels is set
            for grpo / gdpo.
    """
    if method not in METHODS:
        raise ValueError(f"method: unknown method {method!r}; expected one of {METHODS}")
    if drop_constant_channels and method not in DROP_CONSTANT_METHODS:
        raise ValueError(f"drop_constant_channels: only for {DROP_CONSTANT_METHODS}, not {method!r} (for grpo the "
                         "rewards are raw, for gdpo's sum a Z = 0 term changes nothing)")
    r = _check_rewards(rewards, num_generations)
    _check_risk(risk)
    _check_eps(eps)
    w = _check_weights(weights, r.shape[1], r)
    if method == "grpo":
        return _grpo(r, num_generations, w, eps)
    z = _zscores(r, num_generations, eps, drop_constant=drop_constant_channels)
    if method == "gdpo":
        pw = _pow2_down(w.amax())  # sum with w / 2^f (exact) so huge weights do not overflow the whitened sum
        s = (z.nan_to_num(0.0) @ (w * pw)).masked_fill(torch.isnan(r).all(dim=1), float("nan"))
        return _whiten(s, eps * pw.item()) if whiten else s / pw
    elif method == "gdpo_mean":
        s = weighted_mean(z, w)
    elif method == "rvpo":
        s = softmin(z, risk, w)
    elif method == "variance_penalty":
        if beta is not None and not beta >= 0:
            raise ValueError(f"beta: must be >= 0, got {beta}")
        b = risk / 2 if beta is None else beta
        if whiten and b > 1:
            # The whitening is scale-free: whiten(S, eps) = whiten(S p, eps p) with p = 2^-e <= 1/b (exact), and
            # S p = mean p - (b p) var stays finite where b var overflows (k beyond ~1e38 in float32: S = -inf,
            # and every advantage became 0)
            p2 = math.ldexp(1.0, -math.frexp(b)[1])  # 2^-e with b * 2^-e in [0.5, 1)
            mean, var = _weighted_mean_var(z, w)
            return _whiten(mean * p2 - (b * p2) * var, eps * p2)
        s = variance_penalty(z, b, w)
    else:
        s = _nanmin(_drop_zero_weight(z, w))
        s = s.masked_fill(torch.isinf(s), float("nan"))
    return _whiten(s, eps) if whiten else s


def group_zscores(rewards: torch.Tensor, num_generations: int, *, eps: float = 1e-4,
                  drop_constant_channels: bool = False) -> torch.Tensor:
    """Per-channel group z-scores `[N, K]` of rewards `[N, K]`: `(r - nanmean_G) / (nanstd_G + eps)`.

    NaN stays NaN; a channel present once in its group, or constant over it, gets 0 (NaN with
    `drop_constant_channels`). Bessel-corrected std as TRL's `nanstd` (GDPO, arXiv 2601.05242), so for a group
    of G values the z-scores are the population z-scores times sqrt((G - 1) / G). Raises ValueError like
    `compute_advantages`.
    """
    _check_eps(eps)
    return _zscores(_check_rewards(rewards, num_generations), num_generations, eps,
                    drop_constant=drop_constant_channels)


def _zscores(r: torch.Tensor, num_generations: int, eps: float, drop_constant: bool = False) -> torch.Tensor:
    n, k = r.shape
    g = r.reshape(n // num_generations, num_generations, k)
    # The z-score is scale-free: work on g / 2^e (a power of two, so exact) with |g / 2^e| < 1 per group and
    # channel, and eps / 2^e. Otherwise the group sum (mean) and the deviations of rewards near the float max
    # overflow to +-inf (Z = -inf for a finite reward). e >= 0: small rewards are left as they are.
    p2 = _pow2_down(g.nan_to_num(0.0).abs().amax(dim=1, keepdim=True))  # [P, 1, K]
    g = g * p2
    count = (~torch.isnan(g)).sum(dim=1, keepdim=True)
    dev = g - g.nan_to_num(0.0).sum(dim=1, keepdim=True) / count  # NaN where absent
    std = _std(dev, count, dim=1)
    contrast = (count > 1) & (std > 0)  # [P, 1, K]
    scale = torch.where(contrast, 1.0 / (std + eps * p2), 0.0)  # 0 if seen once or constant
    if drop_constant:
        scale = scale.masked_fill(~contrast, float("nan"))  # no contrast: the channel counts as absent
    return (dev * scale).reshape(n, k)


def _pow2_down(amax: torch.Tensor) -> torch.Tensor:
    """`2^-e` (exact power of two, dtype of amax) with `amax * 2^-e < 1` for amax >= 1, and 1 for amax < 1."""
    e = torch.frexp(amax).exponent.clamp_min(0)
    return torch.pow(torch.tensor(2.0, dtype=amax.dtype, device=amax.device), -e.to(amax.dtype))


def weighted_mean(z: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """gdpo_mean score `[N]`: `sum_j w~_j z_j` over the non-NaN entries of each row of z `[N, K]`.

    `w~` = weights `[K]` (default uniform) renormalised over the present channels, so uniform weights give
    `(1/M) sum_j z_j` with M the row's present channel count (the GDPO baseline of RVPO, arXiv 2605.05750; the
    k -> 0 limit of `softmin`). Rows with no present positive-weight channel give NaN.
    """
    w = _weights_like(z, weights)
    z = _drop_zero_weight(z, w)
    wsum = (~torch.isnan(z)).to(z.dtype) @ w
    return (z.nan_to_num(0.0) @ w) / wsum  # 0 / 0 = NaN for a row without a present channel


def softmin(z: torch.Tensor, risk: float, weights: torch.Tensor | None = None) -> torch.Tensor:
    """RVPO score `[N]`: `-(1/k) log sum_j w~_j exp(-k z_j)` over the non-NaN entries of each row of z `[N, K]`.

    `w~` = weights `[K]` (default uniform) renormalised over the present channels (RVPO, arXiv 2605.05750, the
    SoftMin aggregator). Rows with no present positive-weight channel give NaN. Raises ValueError for risk <= 0.

    Computed in z's dtype as `zmin - (1/k) log1p(sum_j w~_j expm1(-k (z_j - zmin)))` whenever that is safe
    (`sqrt(tiny) <= k <= max / 4` and `|z| <= max / 4` for the dtype; every exponent <= 0), else (`_softmin_wide`)
    in float64 (result in z's dtype) as `S = zmin + L(y) q`, with gaps `d_j = z_j - zmin >= 0`,
    `a_j = k d_j`, `q = sum_j w~_j d_j phi(a_j)`, `phi(a) = (1 - exp(-a)) / a` (0 at a = inf),
    `y = -k q = sum_j w~_j expm1(-a_j)` and `L(y) = log1p(y) / y` (both by their series near 0): an exact rewrite of
    `zmin - (1/k) log1p(y)` in which nothing overflows or divides by k, so it stays finite and accurate for any
    finite k > 0 (k beyond the dtype's range: the hard min; k below it, subnormal: the weighted mean) and any
    finite z (|z| near the float max: `S_k(z) = 4 S_{4k}(z / 4)`).
    """
    _check_risk(risk)
    w = _weights_like(z, weights)
    z = _drop_zero_weight(z, w)
    fi = torch.finfo(z.dtype)
    if fi.tiny ** 0.5 <= risk <= fi.max / 4 and (not z.numel() or z.nan_to_num(0.0).abs().amax() <= fi.max / 4):
        zmin = _nanmin(z)  # the common case, in z's dtype: gaps finite, k and k * gap representable (or -> -inf)
        gap = (z - zmin.unsqueeze(1)).nan_to_num(0.0)  # >= 0, so every exponent below is <= 0; absent -> 0
        y = (torch.expm1(gap * -risk) @ w) / ((~torch.isnan(z)).to(z.dtype) @ w)  # absent terms are expm1(0) = 0
        y = y.clamp_min(fi.eps - 1.0)  # rounding could reach -1 only for weights ~1e-7
        return zmin - torch.log1p(y) / risk
    return _softmin_wide(z, risk, w)


def _softmin_wide(z: torch.Tensor, risk: float, w: torch.Tensor) -> torch.Tensor:
    """`softmin` for k or z outside the range where the direct form is safe in z's dtype (see there)."""
    out_dtype = z.dtype
    z, w = z.double(), w.double()
    c = 1.0
    if z.numel() and z.nan_to_num(0.0).abs().amax() > torch.finfo(torch.float64).max / 4:
        c = 4.0  # S_k(z) = c S_{ck}(z / c): keeps every gap z_j - zmin finite
    z, k = z / c, risk * c  # k may be inf here: handled (a = inf where d > 0, 0 where d = 0)
    zmin = _nanmin(z)
    d = (z - zmin.unsqueeze(1)).nan_to_num(0.0)  # >= 0; absent -> 0 (adds nothing to q)
    a = torch.where(d > 0, d * k, 0.0)
    phi = torch.where(a > 1e-6, -torch.expm1(-a) / a, 1.0 - a / 2 + a * a / 6)  # series: error < 1e-24
    q = ((d * phi) @ w) / ((~torch.isnan(z)).to(z.dtype) @ w)  # NaN for a row without a present channel
    y = torch.where(q > 0, -k * q, 0.0).clamp_min(torch.finfo(torch.float64).eps - 1.0)  # y > -1 exactly
    lg = torch.where(y < -1e-6, torch.log1p(y) / y, 1.0 - y / 2 + y * y / 3)  # series (log1p is 0 at subnormal y)
    return ((zmin + lg * q) * c).to(out_dtype)


def softmin_weights(z: torch.Tensor, risk: float, weights: torch.Tensor | None = None) -> torch.Tensor:
    """`[N, K]` gradient of `softmin` w.r.t. z: `p_j = w~_j exp(-k z_j) / sum_i w~_i exp(-k z_i)` (0 where absent).

    Each row sums to 1 (NaN for rows with no present channel); `p_j` is the share of channel j in the SoftMin.
    Computed in float64 from the gaps `z_j - zmin` (logits `log w_j - k (z_j - zmin) <= log w_j`), so k z beyond
    the dtype's range gives the hard-min limit (the weight split over the channels at the min), not NaN.
    """
    _check_risk(risk)
    w = _weights_like(z, weights)
    z = _drop_zero_weight(z, w)
    out_dtype = z.dtype
    z, w = z.double(), w.double()
    d = z - _nanmin(z).unsqueeze(1)  # NaN where absent (and in all-NaN rows)
    logits = (w.log() - torch.where(d > 0, d * risk, 0.0)).masked_fill(torch.isnan(d), -torch.inf)
    return torch.softmax(logits, dim=1).to(out_dtype)


def variance_penalty(z: torch.Tensor, beta: float, weights: torch.Tensor | None = None) -> torch.Tensor:
    """`[N]` score `mean_w~(z) - beta * var_w~(z)` over the non-NaN entries of z `[N, K]`, population variance.

    With `beta = k/2` this is the second-order Taylor expansion of `softmin` (RVPO, arXiv 2605.05750).
    """
    mean, var = _weighted_mean_var(z, weights)
    return mean - beta * var


def _weighted_mean_var(z: torch.Tensor, weights: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Row-wise `mean_w~(z)` and population `var_w~(z)` `[N]` over the non-NaN entries (NaN for empty rows)."""
    w = _weights_like(z, weights)
    z = _drop_zero_weight(z, w)
    wsum = (~torch.isnan(z)).to(z.dtype) @ w
    mean = weighted_mean(z, w)
    var = ((z - mean.unsqueeze(1)).nan_to_num(0.0).square() @ w) / wsum
    return mean, var


def _weights_like(z: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
    if weights is None:
        return torch.ones(z.shape[1], dtype=z.dtype, device=z.device)
    w = torch.as_tensor(weights).to(dtype=z.dtype, device=z.device)
    return w * _pow2_down(w.abs().amax())  # renormalised anyway: an exact 2^-e keeps sum(w) finite for huge w


def _drop_zero_weight(z: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """A channel with weight 0 counts as absent (NaN)."""
    zero = w == 0
    return z.masked_fill(zero, float("nan")) if zero.any() else z


def _nanmin(z: torch.Tensor) -> torch.Tensor:
    """Row min over non-NaN entries; +inf for an all-NaN row."""
    return z.nan_to_num(nan=torch.inf, posinf=torch.inf).amin(dim=1)


def _grpo(r: torch.Tensor, num_generations: int, w: torch.Tensor, eps: float) -> torch.Tensor:
    # Scale-free like the z-scores: sum r / 2^e with weights w / 2^f (|terms| < 1, powers of two, exact) and use
    # eps / 2^(e + f), so rewards or weights near the float max do not overflow the weighted sum.
    g = r.view(-1, num_generations, r.shape[1])
    p2 = _pow2_down(g.nan_to_num(0.0).abs().amax(dim=(1, 2))).unsqueeze(1)  # [P, 1]
    pw = _pow2_down(w.abs().amax())
    w = w * pw
    s = (g.nan_to_num(0.0) * p2.unsqueeze(2)) @ w  # [P, G]
    s = s.masked_fill(torch.isnan(g).all(dim=2), float("nan"))
    count = (~torch.isnan(s)).sum(dim=1, keepdim=True)
    dev = s - s.nan_to_num(0.0).sum(dim=1, keepdim=True) / count
    std = _std(dev, count, dim=1)
    return (dev / (std + eps * p2 * pw)).nan_to_num(0.0).view(-1)  # NaN rows and groups with < 2 scored rows -> 0


def _whiten(s: torch.Tensor, eps: float) -> torch.Tensor:
    """Batch whitening `(s - nanmean) / (nanstd + eps)`; NaN rows and batches with < 2 scored rows give 0."""
    count = (~torch.isnan(s)).sum()
    dev = s - s.nan_to_num(0.0).sum() / count
    std = _std(dev, count, dim=0)
    return (dev / (std + eps)).nan_to_num(0.0)


def _std(dev: torch.Tensor, count: torch.Tensor, dim: int) -> torch.Tensor:
    """Bessel std along `dim` (kept) from deviations `dev` (NaN = absent) and the counts; NaN where count < 2.
    Where the squares overflow (|dev| beyond ~1e19 in float32) it is computed from `dev / max|dev|`: the ratio
    dev / std is all that matters, and an overflow would turn it into 0 for the whole group."""
    d = dev.nan_to_num(0.0)
    std = (d.square().sum(dim=dim, keepdim=True) / (count - 1)).sqrt()
    if torch.isinf(std).any():
        m = d.abs().amax(dim=dim, keepdim=True)
        std = torch.where(torch.isinf(std), m * ((d / m).square().sum(dim=dim, keepdim=True) / (count - 1)).sqrt(), std)
    return std


def _check_rewards(rewards, num_generations: int) -> torch.Tensor:
    r = torch.as_tensor(rewards)
    if r.dtype not in (torch.float32, torch.float64):
        r = r.float()
    if r.dim() != 2:
        raise ValueError(f"rewards: expected a 2-D tensor [N, K], got shape {tuple(r.shape)}")
    if r.shape[1] == 0:
        raise ValueError("rewards: K = 0 reward channels")
    if not isinstance(num_generations, int) or num_generations < 1:
        raise ValueError(f"num_generations: must be a positive int, got {num_generations!r}")
    if r.shape[0] % num_generations:
        raise ValueError(f"num_generations: N = {r.shape[0]} rows is not a multiple of {num_generations}")
    if torch.isinf(r).any():
        raise ValueError("rewards: contains +-inf; use NaN for a reward that could not be computed")
    return r


def _check_risk(risk: float) -> None:
    if not (isinstance(risk, (int, float)) and 0 < risk < float("inf")):
        raise ValueError(f"risk: must be a finite number > 0, got {risk!r}")


def _check_eps(eps: float) -> None:
    if not (isinstance(eps, (int, float)) and 0 <= eps < float("inf")):
        raise ValueError(f"eps: must be a finite number >= 0, got {eps!r}")


def _check_weights(weights, k: int, like: torch.Tensor) -> torch.Tensor:
    if weights is None:
        return torch.ones(k, dtype=like.dtype, device=like.device)
    w = torch.as_tensor(weights, dtype=like.dtype).to(like.device).reshape(-1)
    if w.numel() != k:
        raise ValueError(f"weights: expected {k} weights (one per reward channel), got {w.numel()}")
    if not torch.isfinite(w).all() or (w < 0).any():
        raise ValueError(f"weights: must be finite and >= 0, got {w.tolist()}")
    if not (w > 0).any():
        raise ValueError("weights: all zero")
    return w
