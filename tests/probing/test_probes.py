"""Streaming probes against independent references (sklearn, brute force)."""

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression, Ridge, RidgeCV
from sklearn.model_selection import PredefinedSplit
from sklearn.preprocessing import StandardScaler

from tslayers.probing import LogisticProbe, RidgeProbe, knn_propagate

LAMBDAS = [1e-4, 1e-2, 1.0, 10.0, 100.0, 1e4]


def _layers(rng, n, d=12, n_layers=3, k=2):
    """Features of several 'layers' with different signal levels and scales, offset means."""
    z = rng.standard_normal((n, d))
    w = rng.standard_normal((d, k))
    y = z @ w + 0.5 * rng.standard_normal((n, k))
    feats = {}
    for l in range(n_layers):
        noise = rng.standard_normal((n, d)) * (0.3 + l)
        feats[l] = (z + noise) * rng.uniform(0.1, 10, d) + rng.standard_normal(d) * 3
    return feats, y


def _fill(probe, feats, y, split, batch=37):
    for s in range(0, len(y), batch):
        probe.update({l: v[s : s + batch] for l, v in feats.items()}, y[s : s + batch], split)


def test_ridge_matches_sklearn_per_layer_and_lambda():
    rng = np.random.default_rng(0)
    feats, y = _layers(rng, 300)
    probe = RidgeProbe(LAMBDAS)
    _fill(probe, feats, y, "train")
    probe.fit(select_on=None)
    xq = {l: rng.standard_normal((50, v.shape[1])) * v.std(0) + v.mean(0) for l, v in feats.items()}
    grid = probe.predict_grid(xq)
    for l, x in feats.items():
        scaler = StandardScaler().fit(x)
        for j, lam in enumerate(LAMBDAS):
            ref = Ridge(alpha=lam).fit(scaler.transform(x), y)
            np.testing.assert_allclose(probe.coef_[l][j] * scaler.scale_[:, None], ref.coef_.T,
                                       rtol=1e-5, atol=1e-8 * np.abs(ref.coef_).max())
            expected = ref.predict(scaler.transform(xq[l]))
            np.testing.assert_allclose(grid[l][:, j], expected, rtol=1e-5,
                                       atol=1e-7 * np.abs(expected).max())


def test_ridge_picks_lambda_of_explicit_validation_loop_and_scores_match():
    rng = np.random.default_rng(1)
    feats, y = _layers(rng, 400, d=40)
    tr, va, te = slice(0, 120), slice(120, 260), slice(260, None)  # small train: lambda matters
    probe = RidgeProbe(LAMBDAS)
    for split, sl in (("train", tr), ("val", va), ("test", te)):
        _fill(probe, {l: v[sl] for l, v in feats.items()}, y[sl], split)
    probe.fit("val")
    scores = probe.scores("test")
    chosen = set()
    for l, x in feats.items():
        scaler = StandardScaler().fit(x[tr])
        val_mse = [np.mean((Ridge(alpha=lam).fit(scaler.transform(x[tr]), y[tr])
                            .predict(scaler.transform(x[va])) - y[va]) ** 2) for lam in LAMBDAS]
        best = int(np.argmin(val_mse))
        chosen.add(best)
        assert (probe.best_[l] == best).all()
        ref = Ridge(alpha=LAMBDAS[best]).fit(scaler.transform(x[tr]), y[tr])
        pred = ref.predict(scaler.transform(x[te]))
        mse = np.mean((pred - y[te]) ** 2)
        r2 = np.mean(1 - ((pred - y[te]) ** 2).sum(0) / ((y[te] - y[te].mean(0)) ** 2).sum(0))
        # test scores come from sufficient statistics only, never from stored predictions
        assert scores[l]["mse"] == pytest.approx(mse, rel=1e-6)
        assert scores[l]["r2"] == pytest.approx(r2, rel=1e-6)
        np.testing.assert_allclose(probe.predict({l: x[te]})[l], pred, rtol=1e-6, atol=1e-9)
    assert len(chosen) > 1 or 0 not in chosen  # the grid is not degenerate on this data


def test_ridge_refit_equals_ridgecv_with_predefined_split():
    rng = np.random.default_rng(2)
    feats, y = _layers(rng, 260, d=20, n_layers=2, k=1)
    tr, va = slice(0, 160), slice(160, None)
    probe = RidgeProbe(LAMBDAS, refit=True)
    _fill(probe, {l: v[tr] for l, v in feats.items()}, y[tr], "train")
    _fill(probe, {l: v[va] for l, v in feats.items()}, y[va], "val")
    probe.fit("val")
    for l, x in feats.items():
        xs = StandardScaler().fit(x[tr]).transform(x)
        fold = np.r_[np.full(160, -1), np.zeros(100)]
        ref = RidgeCV(alphas=LAMBDAS, cv=PredefinedSplit(fold),
                      scoring="neg_mean_squared_error").fit(xs, y[:, 0])
        assert probe.chosen_lambda()[l][0] == ref.alpha_
        np.testing.assert_allclose(probe.predict({l: x})[l][:, 0], ref.predict(xs), rtol=1e-6)


def test_ridge_per_group_lambda_and_bad_input():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((200, 10))
    y = np.c_[x @ rng.standard_normal(10), rng.standard_normal(200)]  # signal | pure noise
    probe = RidgeProbe(LAMBDAS)
    probe.update({0: x[:100]}, y[:100], "train")
    probe.update({0: x[100:]}, y[100:], "val")
    probe.fit("val", groups=[slice(0, 1), slice(1, 2)])
    assert probe.best_[0][0] < probe.best_[0][1]  # noise output wants the strongest penalty
    with pytest.raises(ValueError, match="feature rows"):
        probe.update({0: x[:5]}, y[:4])
    with pytest.raises(ValueError, match="no training data"):
        RidgeProbe().fit()


def test_logistic_matches_sklearn_accuracy():
    rng = np.random.default_rng(4)
    n, d, k = 500, 16, 4
    y = rng.integers(0, k, n)
    centers = rng.standard_normal((k, d))
    x = np.stack([centers[y] * s + rng.standard_normal((n, d)) * 1.5 + 5 for s in (0.2, 0.5, 1.0)])
    tr, te = slice(0, 350), slice(350, None)
    probe = LogisticProbe(Cs=[0.5]).fit(x[:, tr], y[tr])
    pred = probe.predict(x[:, te])
    for l in range(len(x)):
        scaler = StandardScaler().fit(x[l, tr])
        ref = LogisticRegression(C=0.5, max_iter=5000, tol=1e-10).fit(scaler.transform(x[l, tr]),
                                                                      y[tr])
        ref_pred = ref.predict(scaler.transform(x[l, te]))
        assert (pred[l] == ref_pred).mean() >= 0.99
        assert (pred[l] == y[te]).mean() == pytest.approx((ref_pred == y[te]).mean(), abs=0.01)


def test_logistic_on_permuted_labels_is_at_chance():
    """A single permutation maps whole classes to classes, so its accuracy is lumpy; the null
    is a distribution: its mean over permutations must sit at chance (1/K)."""
    rng = np.random.default_rng(5)
    n, k, d = 1200, 4, 20
    y = rng.integers(0, k, n)
    x = rng.standard_normal((k, d))[y] * 1.5 + rng.standard_normal((n, d))
    tr, va, te = slice(0, 600), slice(600, 900), slice(900, None)
    accs = []
    for _ in range(20):
        probe = LogisticProbe(Cs=[0.1, 1.0]).fit(x[None, tr], rng.permutation(y[tr]), x[None, va],
                                                 rng.permutation(y[va]), k)
        accs.append((probe.predict(x[None, te])[0] == y[te]).mean())
    assert abs(np.mean(accs) - 1 / k) < 0.06
    true = LogisticProbe().fit(x[None, tr], y[tr], x[None, va], y[va])
    assert (true.predict(x[None, te])[0] == y[te]).mean() > 0.9


def test_knn_propagate_matches_brute_force():
    rng = np.random.default_rng(6)
    ref, qry = rng.standard_normal((300, 8)), rng.standard_normal((40, 8))
    labels = rng.integers(0, 3, 300)
    scores = knn_propagate(ref, labels, qry, k=5, batch_size=7)
    rn = ref / np.linalg.norm(ref, axis=1, keepdims=True)
    qn = qry / np.linalg.norm(qry, axis=1, keepdims=True)
    sim = qn @ rn.T
    for i in range(len(qry)):
        top = np.argsort(-sim[i])[:5]
        expect = np.zeros(3)
        np.add.at(expect, labels[top], np.exp((sim[i, top] - 1) / 0.07))
        np.testing.assert_allclose(scores[i], expect, rtol=1e-4)


def test_weighted_auroc_and_bootstrap_match_sklearn():
    from sklearn.metrics import roc_auc_score

    from tslayers.probing.metrics import auroc, bootstrap_ci, r2

    rng = np.random.default_rng(7)
    y = rng.integers(0, 2, 300)
    score = np.round(y + rng.standard_normal(300), 1)  # rounded: many ties
    w = rng.integers(0, 3, (4, 300)).astype(float)
    assert auroc(y, score) == pytest.approx(roc_auc_score(y, score))
    for row, wi in zip(auroc(y, score, w), w):
        assert row == pytest.approx(roc_auc_score(y, score, sample_weight=wi))
    # bootstrap intervals bracket the full-sample score and resample whole groups
    yy = rng.standard_normal((300, 2))
    pred = yy + 0.5 * rng.standard_normal((300, 2))
    s, lo, hi = bootstrap_ci(r2, yy, pred, np.arange(300) // 10, n_boot=200)
    assert lo < s < hi and s == pytest.approx(np.mean([
        1 - ((yy[:, j] - pred[:, j]) ** 2).sum() / ((yy[:, j] - yy[:, j].mean()) ** 2).sum()
        for j in range(2)]))
