"""Probes fitted on every layer at once.

- :class:`RidgeProbe`: streaming closed-form ridge. Per layer it accumulates sufficient statistics
  (``[X 1]^T [X 1]``, ``[X 1]^T Y``, ``Y^T Y``) per split, so memory is O(L d^2) whatever the
  number of windows. One eigendecomposition of the train covariance (standardised with train
  statistics) solves the whole lambda grid; validation and test errors for every lambda follow
  from the same statistics, with no second pass. Regression and one-vs-rest classification.
- :class:`LogisticProbe`: multinomial logistic regression, all layers in one batched L-BFGS.
- :func:`knn_propagate`: nearest-neighbour label propagation (zero-shot correspondence).
- :class:`MLPProbe`: a one-hidden-layer MLP on one layer, the nonlinear control (is information
  missing from a layer, or only not linearly accessible?).
"""

from __future__ import annotations

import contextlib
from collections.abc import Hashable, Mapping, Sequence

import numpy as np
import torch

try:  # ships with scikit-learn/scipy stacks; without it BLAS keeps its own thread count
    from threadpoolctl import threadpool_limits
except ImportError:  # pragma: no cover
    def threadpool_limits(*args, **kwargs):  # type: ignore[no-redef]
        return contextlib.nullcontext()

DEFAULT_LAMBDAS: tuple[float, ...] = tuple(float(x) for x in np.logspace(-3, 5, 9))

Layer = Hashable


class _Stats:
    """Augmented second moments of one (layer, split), kept in float64, O(d^2) memory.

    Rows are shifted by ``shift`` (the layer's first batch mean, shared by all splits) before
    accumulating, so the centred covariance does not cancel catastrophically when features have
    large means; per-batch products run in ``dtype`` (float32 doubles the GEMM throughput).
    """

    def __init__(self, shift: np.ndarray, k: int, dtype: type = np.float64):
        d = len(shift)
        self.shift = shift
        self.dtype = dtype
        self.n = 0
        self.xx = np.zeros((d, d))  # (X-shift)^T (X-shift)
        self.sx = np.zeros(d)  # column sums of X-shift
        self.xy = np.zeros((d, k))  # (X-shift)^T Y
        self.sy = np.zeros(k)
        self.yy = np.zeros(k)  # sum y^2 per output

    def update(self, x: np.ndarray, y: np.ndarray) -> None:
        xs = np.subtract(x, self.shift, dtype=self.dtype)
        yd = np.asarray(y, dtype=self.dtype)
        self.xx += xs.T @ xs
        self.xy += xs.T @ yd
        self.sx += xs.sum(0, dtype=np.float64)
        self.sy += yd.sum(0, dtype=np.float64)
        self.yy += np.square(yd, dtype=np.float64).sum(0)
        self.n += len(xs)

    def __iadd__(self, other: _Stats) -> _Stats:
        if not np.array_equal(self.shift, other.shift):
            raise ValueError("cannot add statistics accumulated with different shifts")
        for key in ("n", "xx", "sx", "xy", "sy", "yy"):
            setattr(self, key, getattr(self, key) + getattr(other, key))
        return self

    @property
    def gram(self) -> np.ndarray:
        """[X-shift 1]^T [X-shift 1], (d+1, d+1)."""
        return np.block([[self.xx, self.sx[:, None]], [self.sx[None], np.array([[self.n]])]])

    @property
    def cross(self) -> np.ndarray:
        """[X-shift 1]^T Y, (d+1, k)."""
        return np.concatenate([self.xy, self.sy[None]])

    @property
    def mean_xs(self) -> np.ndarray:
        """Mean of the shifted features."""
        return self.sx / self.n

    @property
    def mean_x(self) -> np.ndarray:
        return self.shift + self.mean_xs

    @property
    def mean_y(self) -> np.ndarray:
        return self.sy / self.n


def _as_2d(y: np.ndarray | torch.Tensor) -> np.ndarray:
    y = y.detach().cpu().numpy() if isinstance(y, torch.Tensor) else np.asarray(y)
    return y[:, None] if y.ndim == 1 else y.reshape(len(y), -1)


def _as_np(x: np.ndarray | torch.Tensor) -> np.ndarray:
    x = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    return x.reshape(len(x), -1)


class RidgeProbe:
    """Streaming all-layer ridge regression with a lambda grid chosen on validation data.

    Objective per layer and lambda (sklearn's ``Ridge``): ``||y - X_s w - b||^2 + lambda ||w||^2``
    with ``X_s`` the features standardised by train mean/std (``standardize=True``); the intercept
    is not penalised. Usage::

        probe = RidgeProbe(lambdas)
        for feats, y in train_batches: probe.update(feats, y, "train")   # feats: {layer: (n, d)}
        for feats, y in val_batches:   probe.update(feats, y, "val")
        probe.fit()                     # solves the grid, picks lambda per layer on "val"
        probe.scores("test")            # {layer: {"mse": ., "r2": .}} from test statistics
        probe.predict(feats)            # {layer: (n, k)} at the chosen lambdas

    ``refit=True`` re-solves at the chosen lambda on train + val statistics (what sklearn's
    ``RidgeCV(cv=...)`` does), keeping the train standardisation. ``dtype=np.float32`` computes
    per-batch products in single precision (about 2x faster; sums stay float64).
    """

    def __init__(
        self,
        lambdas: Sequence[float] = DEFAULT_LAMBDAS,
        *,
        standardize: bool = True,
        refit: bool = False,
        eps: float = 1e-12,
        dtype: type = np.float64,
    ):
        if len(lambdas) == 0 or min(lambdas) < 0:
            raise ValueError(f"lambdas must be a non-empty list of values >= 0, got {lambdas}")
        self.lambdas = np.asarray(lambdas, dtype=np.float64)
        self.standardize = standardize
        self.refit = refit
        self.eps = eps
        self.dtype = dtype
        self._shift: dict[Layer, np.ndarray] = {}
        self.stats: dict[str, dict[Layer, _Stats]] = {}
        self.coef_: dict[Layer, np.ndarray] = {}  # (n_lambda, d, k) in raw feature units
        self.intercept_: dict[Layer, np.ndarray] = {}  # (n_lambda, k)
        self.best_: dict[Layer, np.ndarray] = {}  # (k,) index into lambdas per output

    # ---------------------------------------------------------------- accumulation
    def update(
        self,
        feats: Mapping[Layer, np.ndarray | torch.Tensor],
        y: np.ndarray | torch.Tensor,
        split: str = "train",
    ) -> None:
        """Add a batch: ``feats[layer]`` (n, d) (any trailing dims are flattened), ``y`` (n, k)."""
        y2 = _as_2d(y)
        table = self.stats.setdefault(split, {})
        for layer, x in feats.items():
            x2 = _as_np(x)
            if len(x2) != len(y2):
                raise ValueError(f"layer {layer}: {len(x2)} feature rows but {len(y2)} targets")
            if layer not in table:
                shift = self._shift.setdefault(layer, x2.mean(0, dtype=np.float64))
                table[layer] = _Stats(shift, y2.shape[1], self.dtype)
            table[layer].update(x2, y2)

    @property
    def layers(self) -> list[Layer]:
        return list(self.stats.get("train", {}))

    # ---------------------------------------------------------------- solving
    def _scaling(self, st: _Stats) -> tuple[np.ndarray, np.ndarray]:
        mu = st.mean_x
        if not self.standardize:
            return mu, np.ones_like(mu)
        var = np.diag(st.xx) / st.n - st.mean_xs**2
        sd = np.sqrt(np.clip(var, 0.0, None))
        return mu, np.where(sd > self.eps, sd, 1.0)  # constant features: leave unscaled

    @staticmethod
    def _centered(st: _Stats, sd: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Covariance-type sums of X/sd and Y centered on this split's own means."""
        mx, my = st.mean_xs, st.mean_y
        sxx = st.xx - st.n * np.outer(mx, mx)
        sxy = st.xy - st.n * np.outer(mx, my)
        return sxx / np.outer(sd, sd), sxy / sd[:, None], my

    def _solve_grid(self, st: _Stats, sd: np.ndarray, lambdas: np.ndarray):
        sxx, sxy, my = self._centered(st, sd)
        # Multi-threaded OpenBLAS runs the (level-2 bound) tridiagonal reduction 10-100x slower
        # than one thread on a busy machine; one thread is never slower at these sizes.
        with threadpool_limits(1, user_api="blas"):
            evals, evecs = np.linalg.eigh((sxx + sxx.T) / 2)
        evals = np.clip(evals, 0.0, None)
        proj = evecs.T @ sxy  # (d, k)
        # w(lambda) = V diag(1 / (e + lambda)) V^T Sxy, for every lambda at once
        inv = 1.0 / np.maximum(evals[None, :] + lambdas[:, None], 1e-300)  # (n_l, d)
        w_s = evecs[None] @ (inv[:, :, None] * proj[None])  # (n_l, d, k) standardised units
        w = w_s / sd[None, :, None]
        b = my[None, :] - np.einsum("d,ldk->lk", st.mean_x, w)
        return w, b

    def fit(
        self, select_on: str | None = "val", groups: Sequence[slice] | None = None
    ) -> RidgeProbe:
        """Solve every lambda for every layer; choose lambda per layer by the lowest MSE on
        ``select_on`` (the first lambda when that split is absent). ``groups``: slices of the
        outputs that choose their lambda separately (e.g. one per forecast horizon)."""
        train = self.stats.get("train")
        if not train:
            raise ValueError("RidgeProbe.fit: no training data; call update(..., split='train')")
        for layer, st in train.items():
            if st.n < 2:
                raise ValueError(f"RidgeProbe: layer {layer} has {st.n} training rows")
            _, sd = self._scaling(st)
            self.coef_[layer], self.intercept_[layer] = self._solve_grid(st, sd, self.lambdas)
        split = select_on if select_on in self.stats else None
        for layer, st in train.items():
            k = st.xy.shape[1]
            best = np.zeros(k, dtype=int)
            if split is not None:
                mse = self.grid_mse(split, layers=[layer])[layer]  # (n_lambda, k)
                for g in groups or [slice(0, k)]:
                    best[g] = int(np.argmin(mse[:, g].mean(-1)))
            self.best_[layer] = best
        if self.refit and split is not None:
            for layer, st in train.items():
                _, sd = self._scaling(st)
                both = _copy_stats(st)
                both += self.stats[split][layer]
                for i in np.unique(self.best_[layer]):
                    w, b = self._solve_grid(both, sd, self.lambdas[i : i + 1])
                    self.coef_[layer][i], self.intercept_[layer][i] = w[0], b[0]
        return self

    # ---------------------------------------------------------------- evaluation
    def grid_sse(
        self, split: str, layers: Sequence[Layer] | None = None
    ) -> dict[Layer, np.ndarray]:
        """Sum of squared errors per lambda and output, (n_lambda, k), from ``split``'s stats:
        SSE = y'y - 2 B'[X 1]'y + B'[X 1]'[X 1]B with B = [w; b]."""
        out = {}
        table = self._split(split)
        for layer in layers if layers is not None else table:
            st = table[layer]
            w = self.coef_[layer]
            b = self.intercept_[layer] + np.einsum("d,ldk->lk", st.shift, w)  # shifted inputs
            beta = np.concatenate([w, b[:, None]], axis=1)
            cross = (beta * st.cross[None]).sum(1)
            quad = (beta * (st.gram[None] @ beta)).sum(1)
            out[layer] = np.clip(st.yy[None] - 2 * cross + quad, 0.0, None)
        return out

    def grid_mse(
        self, split: str, layers: Sequence[Layer] | None = None
    ) -> dict[Layer, np.ndarray]:
        """Mean squared error per lambda and output, (n_lambda, k)."""
        return {k: v / self._split(split)[k].n for k, v in self.grid_sse(split, layers).items()}

    def scores(self, split: str) -> dict[Layer, dict[str, float]]:
        """MSE (averaged over outputs) and R^2 (uniform average over outputs, as sklearn's
        ``r2_score``) at each layer's chosen lambda, computed from ``split``'s statistics."""
        out = {}
        sse = self.grid_sse(split)
        for layer, st in self._split(split).items():
            e = sse[layer][self.best_[layer], np.arange(sse[layer].shape[1])]
            sst = st.yy - st.n * st.mean_y**2
            r2 = 1.0 - e / np.where(sst > 0, sst, np.nan)
            out[layer] = {"mse": float(e.mean() / st.n), "r2": float(np.nanmean(r2))}
        return out

    def predict_grid(
        self, feats: Mapping[Layer, np.ndarray | torch.Tensor]
    ) -> dict[Layer, np.ndarray]:
        """Predictions for every lambda, (n, n_lambda, k)."""
        return {layer: np.einsum("nd,ldk->nlk", _as_np(x).astype(np.float64), self.coef_[layer])
                + self.intercept_[layer][None] for layer, x in feats.items()}

    def predict(self, feats: Mapping[Layer, np.ndarray | torch.Tensor]) -> dict[Layer, np.ndarray]:
        """Predictions at each layer's chosen lambda, (n, k)."""
        out = {}
        for layer, x in feats.items():
            best, cols = self.best_[layer], np.arange(len(self.best_[layer]))
            w = self.coef_[layer][best, :, cols].T  # (d, k): output j uses lambda best[j]
            out[layer] = _as_np(x).astype(np.float64) @ w + self.intercept_[layer][best, cols]
        return out

    def chosen_lambda(self) -> dict[Layer, np.ndarray]:
        """Chosen lambda per layer and output, {layer: (k,)}."""
        return {layer: self.lambdas[i] for layer, i in self.best_.items()}

    def _split(self, split: str) -> dict[Layer, _Stats]:
        if split not in self.stats:
            raise ValueError(f"no '{split}' data; splits seen: {list(self.stats)}")
        return self.stats[split]


def _copy_stats(st: _Stats) -> _Stats:
    new = _Stats(st.shift, st.xy.shape[1], st.dtype)
    new += st
    return new


# -------------------------------------------------------------------- logistic
class LogisticProbe:
    """Multinomial logistic regression on every layer at once (one L-BFGS over all layers).

    Loss per layer (sklearn ``LogisticRegression(C)``, multinomial, lbfgs):
    ``sum_i CE_i / n + ||W||^2 / (2 C n)``, on train-standardised features; the intercept is
    not penalised. Layers are independent terms of one objective, so one optimiser run fits
    them all. ``Cs``: candidate C values (solved from strongest to weakest penalty, each warm
    started from the previous), chosen per layer on validation accuracy (ties -> smaller C).
    Features are held in memory: (L, n, d) pooled features of at most ``max_windows`` windows.
    """

    def __init__(self, Cs: Sequence[float] = (0.01, 0.1, 1.0, 10.0), *, max_iter: int = 200,
                 tol: float = 1e-6):
        self.Cs = sorted(float(c) for c in Cs)
        self.max_iter = max_iter
        self.tol = tol
        self.W: np.ndarray | None = None  # (L, d, K) at the chosen C per layer
        self.b: np.ndarray | None = None  # (L, 1, K)
        self.best_: np.ndarray | None = None  # (L,) index into Cs

    @staticmethod
    def _stack(feats: Mapping[Layer, np.ndarray | torch.Tensor] | np.ndarray) -> np.ndarray:
        if isinstance(feats, Mapping):
            return np.stack([_as_np(v) for v in feats.values()]).astype(np.float64)
        return np.asarray(feats, dtype=np.float64)

    def _train(self, x: np.ndarray, y: np.ndarray, n_classes: int, C: float,
               init: np.ndarray | None) -> np.ndarray:
        from scipy.optimize import minimize

        n_layers, n, d = x.shape
        k = n_classes
        onehot = np.eye(k)[y]  # (n, K)
        xt = x.transpose(0, 2, 1)
        split = n_layers * d * k

        def loss_grad(theta: np.ndarray) -> tuple[float, np.ndarray]:
            W = theta[:split].reshape(n_layers, d, k)
            b = theta[split:].reshape(n_layers, 1, k)
            z = x @ W + b
            z -= z.max(-1, keepdims=True)
            logp = z - np.log(np.exp(z).sum(-1, keepdims=True))
            loss = -(onehot * logp).sum() / n + (W**2).sum() / (2 * C * n)
            g = (np.exp(logp) - onehot) / n  # (L, n, K)
            gw = xt @ g + W / (C * n)
            return float(loss), np.concatenate([gw.ravel(), g.sum(1).ravel()])

        theta0 = np.zeros(split + n_layers * k) if init is None else init
        with threadpool_limits(1, user_api="blas"):  # many small BLAS calls: threads only hurt
            res = minimize(loss_grad, theta0, jac=True, method="L-BFGS-B",
                           options=dict(maxiter=self.max_iter, gtol=self.tol, ftol=1e-13))
        return res.x

    def fit(self, train: Mapping[Layer, np.ndarray] | np.ndarray, y_train: np.ndarray,
            val: Mapping[Layer, np.ndarray] | np.ndarray | None = None,
            y_val: np.ndarray | None = None, n_classes: int | None = None) -> LogisticProbe:
        """``train``: {layer: (n, d)} or (L, n, d); labels (n,) ints in 0..K-1."""
        x = self._stack(train)
        y = np.asarray(y_train, dtype=np.int64)
        k = int(n_classes or int(y.max()) + 1)
        n_layers, _, d = x.shape
        self.n_classes = k
        self.mu = x.mean(1, keepdims=True)
        sd = x.std(1, keepdims=True)
        self.sd = np.where(sd > 1e-12, sd, 1.0)
        xs = (x - self.mu) / self.sd
        thetas, theta = [], None
        for C in self.Cs:
            theta = self._train(xs, y, k, C, theta)
            thetas.append(theta)
        split = n_layers * d * k
        Ws = [t[:split].reshape(n_layers, d, k) for t in thetas]
        bs = [t[split:].reshape(n_layers, 1, k) for t in thetas]
        if val is not None and len(self.Cs) > 1:
            xv = (self._stack(val) - self.mu) / self.sd
            yv = np.asarray(y_val)
            acc = np.stack([((xv @ W + b).argmax(-1) == yv).mean(-1) for W, b in zip(Ws, bs)])
            self.best_ = acc.argmax(0)  # (L,), first max = the smallest C
        else:
            self.best_ = np.zeros(n_layers, dtype=int)
        layers = np.arange(n_layers)
        self.W = np.stack(Ws)[self.best_, layers]
        self.b = np.stack(bs)[self.best_, layers]
        return self

    def decision_function(self, feats: Mapping[Layer, np.ndarray] | np.ndarray) -> np.ndarray:
        """Logits (L, n, K)."""
        xs = (self._stack(feats) - self.mu) / self.sd
        return xs @ self.W + self.b

    def predict(self, feats: Mapping[Layer, np.ndarray] | np.ndarray) -> np.ndarray:
        """Class predictions (L, n)."""
        return self.decision_function(feats).argmax(-1)


# -------------------------------------------------------------------- kNN
def knn_propagate(
    ref_feats: np.ndarray | torch.Tensor,
    ref_labels: np.ndarray,
    query_feats: np.ndarray | torch.Tensor,
    *,
    k: int = 10,
    n_classes: int | None = None,
    temperature: float = 0.07,
    batch_size: int = 4096,
) -> np.ndarray:
    """Propagate labels from reference tokens to query tokens by cosine nearest neighbours.

    ``ref_feats`` (R, d), ``ref_labels`` (R,) ints, ``query_feats`` (Q, d). Each query takes the
    class with the largest ``sum exp(cos / temperature)`` over its ``k`` nearest references
    (the label propagation used for zero-shot video tracking). No training; memory O(batch * R).
    Returns (Q, K) class scores (argmax for the prediction).
    """
    ref = torch.nn.functional.normalize(torch.as_tensor(_as_np(ref_feats)).float(), dim=-1)
    qry = torch.nn.functional.normalize(torch.as_tensor(_as_np(query_feats)).float(), dim=-1)
    labels = torch.as_tensor(np.asarray(ref_labels), dtype=torch.long)
    n_cls = int(n_classes or int(labels.max()) + 1)
    k = min(k, len(ref))
    out = []
    for start in range(0, len(qry), batch_size):
        sim = qry[start : start + batch_size] @ ref.T  # (b, R)
        top, idx = sim.topk(k, dim=-1)
        weight = torch.exp((top - 1.0) / temperature)
        scores = torch.zeros(len(sim), n_cls).scatter_add_(1, labels[idx], weight)
        out.append(scores)
    return torch.cat(out).numpy()


# -------------------------------------------------------------------- MLP
class MLPProbe:
    """One-hidden-layer MLP on train-standardised features, full-batch AdamW, early stopping
    on the validation loss (the best epoch's weights are kept; training stops after
    ``patience`` epochs without improvement). ``kind``: ``regress`` (MSE on train-standardised
    targets) or ``classify`` (cross-entropy)."""

    def __init__(self, kind: str, hidden: int = 128, epochs: int = 300, lr: float = 3e-3,
                 weight_decay: float = 1e-3, seed: int = 0, patience: int = 20):
        self.kind, self.hidden, self.epochs, self.patience = kind, hidden, epochs, patience
        self.lr, self.weight_decay, self.seed = lr, weight_decay, seed

    def fit(self, x: np.ndarray, y: np.ndarray, xv: np.ndarray, yv: np.ndarray,
            n_classes: int = 0) -> MLPProbe:
        torch.manual_seed(self.seed)
        self.mu, sd = x.mean(0), x.std(0)
        self.sd = np.where(sd > 1e-12, sd, 1.0)
        classify = self.kind == "classify"
        if not classify:
            self.ymu, ysd = y.mean(0), y.std(0)
            self.ysd = np.where(ysd > 1e-12, ysd, 1.0)
        out = n_classes if classify else y.shape[1]
        self.net = torch.nn.Sequential(torch.nn.Linear(x.shape[1], self.hidden),
                                       torch.nn.GELU(), torch.nn.Linear(self.hidden, out))
        opt = torch.optim.AdamW(self.net.parameters(), lr=self.lr,
                                weight_decay=self.weight_decay)
        xt, xvt = self._x(x), self._x(xv)
        yt, yvt = self._y(y), self._y(yv)
        loss_fn = torch.nn.functional.cross_entropy if classify else torch.nn.functional.mse_loss
        best, state, since = float("inf"), None, 0
        for _ in range(self.epochs):
            opt.zero_grad()
            loss_fn(self.net(xt), yt).backward()
            opt.step()
            with torch.no_grad():
                v = float(loss_fn(self.net(xvt), yvt))
            if v < best:
                best, state, since = v, {k: t.clone() for k, t in self.net.state_dict().items()}, 0
            elif (since := since + 1) >= self.patience:
                break
        self.net.load_state_dict(state)
        return self

    def _x(self, x: np.ndarray) -> torch.Tensor:
        return torch.as_tensor((x - self.mu) / self.sd, dtype=torch.float32)

    def _y(self, y: np.ndarray) -> torch.Tensor:
        if self.kind == "classify":
            return torch.as_tensor(y, dtype=torch.long)
        return torch.as_tensor((y - self.ymu) / self.ysd, dtype=torch.float32)

    @torch.no_grad()
    def predict(self, x: np.ndarray) -> np.ndarray:
        z = self.net(self._x(x)).numpy().astype(np.float64)
        return z.argmax(-1) if self.kind == "classify" else z * self.ysd + self.ymu
