"""CKA across models, on the window sample every model of one probe run shares.

Two results variables, both linear minibatch CKA (unbiased HSIC) of pooled features, the
estimator of the within-model ``cka``:

- ``cka_cross`` (model, layer, layer2): each model against its own untrained twin (is a
  layer's geometry learned, or already there at initialisation?);
- ``cka_compare`` (model, model_other, layer, layer_other): the first probed model against
  every other model probed with it (``probe([a, b], ...)``, ``probe_model(..., compare=b)``,
  ``tslayers inspect --compare``) and against those models' untrained twins (how similar two
  random networks already are): ``layer`` indexes the model's layers, ``layer_other`` the
  other model's (names in ``layer_name``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import xarray as xr

from .diagnostics import cross_cka


def twin_cka(result: xr.Dataset, entries: Sequence) -> xr.Dataset:
    """Add ``cka_cross``: each entry (``.name``, ``.feats``) against ``<name>/untrained``."""
    by_name = {e.name: e for e in entries}
    pairs = [(e.name, f"{e.name}/untrained") for e in entries
             if f"{e.name}/untrained" in by_name]
    if not pairs:
        return result
    da = xr.DataArray(np.nan, coords={"model": result["model"], "layer": result["layer"],
                                      "layer2": result["layer2"]},
                      dims=("model", "layer", "layer2"))
    for a, b in pairs:
        fa, fb = by_name[a].feats, by_name[b].feats
        block = cross_cka(fa.pooled, fb.pooled)
        da.loc[{"model": a, "layer": fa.layers, "layer2": fb.layers}] = block
        da.loc[{"model": b, "layer": fb.layers, "layer2": fa.layers}] = block.T
    da.attrs["description"] = "linear CKA between a model's layer and layer2 of its twin"
    result["cka_cross"] = da
    return result


def compare_cka(result: xr.Dataset, entries: Sequence, models: Sequence[str]) -> xr.Dataset:
    """Add ``cka_compare``: ``models[0]`` against each later model and its untrained twin."""
    if len(models) < 2:
        return result
    by_name = {e.name: e for e in entries}
    ref = by_name[models[0]]
    others = [by_name[n] for m in models[1:] for n in (m, f"{m}/untrained") if n in by_name]
    n_other = max(len(o.feats.layers) for o in others)
    da = xr.DataArray(np.nan, dims=("model", "model_other", "layer", "layer_other"),
                      coords={"model": result["model"].values,
                              "model_other": [o.name for o in others],
                              "layer": result["layer"].values,
                              "layer_other": np.arange(n_other)})
    for o in others:
        da.loc[{"model": ref.name, "model_other": o.name, "layer": ref.feats.layers,
                "layer_other": o.feats.layers}] = cross_cka(ref.feats.pooled, o.feats.pooled)
    da.attrs["description"] = ("linear CKA between a layer of model and a layer (layer_other) "
                               "of model_other, on the same windows")
    result["cka_compare"] = da
    return result
