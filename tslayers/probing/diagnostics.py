"""Label-free layer diagnostics: CKA, effective rank, global-token norms, over-smoothing, and
per-head attention statistics. Everything streams over batches; nothing forms an N x N Gram
matrix over the whole dataset.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import numpy as np
import torch
from einops import rearrange

from tslayers.kernels import AttentionStats
from tslayers.objectives.collapse import effective_rank as _effective_rank


def _t(x: np.ndarray | torch.Tensor) -> torch.Tensor:
    x = torch.as_tensor(x) if not isinstance(x, torch.Tensor) else x.detach()
    return x.double().reshape(len(x), -1)


# -------------------------------------------------------------------- CKA
def linear_cka(x: np.ndarray | torch.Tensor, y: np.ndarray | torch.Tensor) -> float:
    """Linear CKA (Kornblith et al. 2019) of (n, d1) and (n, d2) features, biased estimator,
    in feature space: ``||Yc^T Xc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F)``. O(n d^2) memory-free
    of n x n matrices; use :class:`MinibatchCKA` for datasets that do not fit in memory."""
    xc, yc = _t(x), _t(y)
    xc, yc = xc - xc.mean(0), yc - yc.mean(0)
    num = (yc.T @ xc).pow(2).sum()
    den = (xc.T @ xc).pow(2).sum().sqrt() * (yc.T @ yc).pow(2).sum().sqrt()
    return float(num / den) if den > 0 else float("nan")


def _unbiased_hsic_all(grams: torch.Tensor) -> torch.Tensor:
    """Unbiased HSIC (Song et al. 2012) between all pairs of (L, b, b) Gram matrices -> (L, L)."""
    n = grams.shape[-1]
    k = grams.clone()
    k.diagonal(dim1=-2, dim2=-1).zero_()
    rows = k.sum(-1)  # (L, b)
    tot = rows.sum(-1)  # (L,)
    trace = torch.einsum("aij,bij->ab", k, k)
    return (trace + torch.outer(tot, tot) / ((n - 1) * (n - 2)) - 2 * rows @ rows.T / (n - 2)) / (
        n * (n - 3)
    )


class MinibatchCKA:
    """Minibatch CKA between every pair of layers (Nguyen et al. 2021): unbiased HSIC summed
    over minibatches, ``CKA_ab = sum HSIC_ab / sqrt(sum HSIC_aa sum HSIC_bb)``. Memory per
    update is O(L b^2) for batch size b. Two models: :func:`cross_cka`."""

    def __init__(self) -> None:
        self.hsic: torch.Tensor | None = None
        self.layers: list[Hashable] = []

    def update(self, feats: Mapping[Hashable, np.ndarray | torch.Tensor]) -> None:
        layers = list(feats)
        if self.hsic is None:
            self.layers = layers
            self.hsic = torch.zeros(len(layers), len(layers), dtype=torch.float64)
        elif layers != self.layers:
            raise ValueError(f"MinibatchCKA: layers changed from {self.layers} to {layers}")
        xs = [_t(v) for v in feats.values()]
        if len(xs[0]) < 4:
            return  # the unbiased estimator needs n >= 4
        grams = torch.stack([x @ x.T for x in xs])
        self.hsic += _unbiased_hsic_all(grams)

    def result(self) -> np.ndarray:
        """(L, L) CKA matrix in the order layers were given."""
        if self.hsic is None:
            raise ValueError("MinibatchCKA.result before any update")
        d = self.hsic.diagonal().clamp(min=1e-300).sqrt()
        return (self.hsic / torch.outer(d, d)).numpy()


def minibatch_cka(
    feats: Mapping[Hashable, np.ndarray | torch.Tensor], batch_size: int = 256
) -> np.ndarray:
    """All-pairs minibatch CKA of in-memory features ``{layer: (n, d)}`` -> (L, L)."""
    acc = MinibatchCKA()
    n = len(next(iter(feats.values())))
    for start in range(0, n - 3, batch_size):
        stop = start + batch_size
        if n - stop < 4:  # fold a tail too small for the estimator into this batch
            stop = n
        acc.update({k: v[start:stop] for k, v in feats.items()})
        if stop == n:
            break
    return acc.result()


def cross_cka(a: Mapping[Hashable, np.ndarray | torch.Tensor],
              b: Mapping[Hashable, np.ndarray | torch.Tensor],
              batch_size: int = 256) -> np.ndarray:
    """Minibatch CKA between every layer of one model (rows) and every layer of another
    (columns), ``{layer: (n, d)}`` each -> (La, Lb). Row i of both must be the same window:
    CKA compares two views of the same examples, so it is only defined on a shared sample."""
    na, nb = (len(next(iter(f.values()))) for f in (a, b))
    if na != nb:
        raise ValueError(f"cross-model CKA needs both models' features on the same windows, "
                         f"got {na} and {nb} rows; tap both models on one window sample "
                         "(probe them in one call: probe([source_a, source_b], ...) or "
                         "probe_model(..., compare=other))")
    joint = {("a", k): v for k, v in a.items()}
    joint.update({("b", k): v for k, v in b.items()})
    return minibatch_cka(joint, batch_size)[: len(a), len(a):]


# -------------------------------------------------------------------- spectra and norms
def effective_rank(emb: np.ndarray | torch.Tensor) -> float:
    """RankMe of an (n, d) embedding matrix (the one definition lives in objectives.collapse)."""
    return _effective_rank(_t(emb))


def effective_rank_from_gram(gram: np.ndarray, eps: float = 1e-7) -> float:
    """RankMe from the (d, d) second-moment matrix X^T X (streamed): singular values are the
    square roots of its eigenvalues."""
    s = np.sqrt(np.clip(np.linalg.eigvalsh(gram), 0.0, None))
    p = s / s.sum() + eps
    return float(np.exp(-(p * np.log(p)).sum()))


def norm_outlier_frac(tokens: np.ndarray | torch.Tensor, factor: float = 3.0) -> float:
    """Fraction of tokens whose L2 norm exceeds ``factor`` x the median token norm: the
    high-norm "global tokens" of "Vision Transformers Need Registers". tokens (B, N, D)."""
    norms = torch.as_tensor(tokens).double().norm(dim=-1).flatten()
    return float((norms > factor * norms.median()).double().mean())


def mean_token_sim(tokens: np.ndarray | torch.Tensor) -> float:
    """Mean cosine similarity of each token to its sequence's mean token (over-smoothing: 1
    when all tokens collapse to the same direction). tokens (B, N, D)."""
    t = torch.as_tensor(tokens).double()
    mean = t.mean(1, keepdim=True).expand_as(t)
    return float(torch.nn.functional.cosine_similarity(t, mean, dim=-1).mean())


# -------------------------------------------------------------------- attention statistics
ATTN_FIELDS = ("attn_entropy", "attn_distance", "attn_prefix_mass", "attn_received_max")


class AttentionSummary:
    """Running per-head means of attention statistics over batches, one entry per layer.

    ``entropy``/``distance``/``prefix_mass`` average over queries and sequences;
    ``received_max`` is the largest share of all attention any single key receives
    (received mass / number of queries), averaged over sequences: ~1/N for uniform attention,
    near 1 when one global token absorbs everything.
    """

    def __init__(self) -> None:
        self.sums: dict[Hashable, dict[str, torch.Tensor]] = {}
        self.counts: dict[Hashable, int] = {}

    def update(self, stats: Mapping[Hashable, AttentionStats]) -> None:
        for layer, st in stats.items():
            n_q = st.received.shape[-1]
            vals = {
                "attn_entropy": st.entropy.float().mean(-1),
                "attn_distance": st.distance.float().mean(-1),
                "attn_prefix_mass": st.prefix_mass.float().mean(-1),
                "attn_received_max": st.received.float().amax(-1) / n_q,
            }  # each (B, H)
            acc = self.sums.setdefault(layer,
                                       {k: torch.zeros(v.shape[1]) for k, v in vals.items()})
            for key, v in vals.items():
                acc[key] += v.sum(0).cpu()
            self.counts[layer] = self.counts.get(layer, 0) + next(iter(vals.values())).shape[0]

    def result(self) -> dict[Hashable, dict[str, np.ndarray]]:
        """{layer: {field: (H,)}}."""
        return {layer: {k: (v / self.counts[layer]).numpy() for k, v in acc.items()}
                for layer, acc in self.sums.items()}


def stack_heads(summary: dict[Hashable, dict[str, np.ndarray]], layers: Sequence[Hashable],
                n_heads: int) -> dict[str, np.ndarray]:
    """{field: (L, H)} with NaN for layers without attention (the embedding layer)."""
    out = {f: np.full((len(layers), n_heads), np.nan) for f in ATTN_FIELDS}
    for i, layer in enumerate(layers):
        for f in ATTN_FIELDS:
            if layer in summary:
                out[f][i, : len(summary[layer][f])] = summary[layer][f]
    return out


class TokenDiagnostics:
    """Streaming label-free diagnostics per layer over batches of (B', N, D) token sequences:
    effective rank (from the token Gram matrix), share of high-norm outlier tokens, similarity
    of tokens to their sequence mean, and minibatch CKA between layers on pooled features."""

    def __init__(self, layers: Sequence[Hashable], outlier_factor: float = 3.0):
        self.layers = list(layers)
        self.factor = outlier_factor
        self.gram: dict[Hashable, np.ndarray] = {}
        self.norms: dict[Hashable, list[np.ndarray]] = {l: [] for l in self.layers}
        self.sim_sum = dict.fromkeys(self.layers, 0.0)
        self.n_seq = 0
        self.cka = MinibatchCKA()

    def update(self, hidden: Mapping[Hashable, torch.Tensor],
               pooled: Mapping[Hashable, np.ndarray | torch.Tensor]) -> None:
        for l in self.layers:
            h = torch.as_tensor(hidden[l]).double()
            flat = rearrange(h, "b n d -> (b n) d")
            self.gram[l] = self.gram.get(l, 0) + (flat.T @ flat).numpy()
            self.norms[l].append(flat.norm(dim=-1).float().numpy())
            self.sim_sum[l] += mean_token_sim(h) * len(h)
        self.n_seq += len(next(iter(hidden.values())))
        self.cka.update(pooled)

    def result(self) -> dict[str, np.ndarray]:
        ls = self.layers
        norms = {l: np.concatenate(self.norms[l]) for l in ls}
        return {
            "effective_rank": np.array([effective_rank_from_gram(self.gram[l]) for l in ls]),
            "norm_outlier_frac": np.array(
                [float((norms[l] > self.factor * np.median(norms[l])).mean()) for l in ls]),
            "mean_token_sim": np.array([self.sim_sum[l] / self.n_seq for l in ls]),
            "cka": self.cka.result(),
        }
