"""Each figure rendered from a small results file and read back through matplotlib's API:
size, axis labels, tick labels, legend entries, colours kept across panels."""

import numpy as np
import pytest
from matplotlib.colors import to_hex

from tslayers.report.figures import build_figures, cka_grid, diagnostics, heatmap, layer_curves
from tslayers.report.style import DIAGNOSTICS


def _legend(fig) -> list[str]:
    return [t.get_text() for leg in fig.legends for t in leg.get_texts()]


def _size(fig) -> tuple[float, float]:
    return tuple(fig.get_size_inches() * fig.dpi)


def _lines_on_screen(ax) -> bool:
    lo, hi = ax.get_ylim()
    ys = np.concatenate([np.asarray(x.get_ydata(), float) for x in ax.lines])
    ys = ys[np.isfinite(ys)]
    return bool(((ys >= lo) & (ys <= hi)).all())


def test_heatmap_has_values_in_cells_a_box_per_task_and_one_scale_per_metric(results):
    fig = heatmap(results, "contrastive")
    w, h = _size(fig)
    assert 300 < w < 2000 and 200 < h < 2000
    blocks = [ax for ax in fig.axes if ax.images and ax.get_yticklabels()]
    main = [ax for ax in blocks if ax.texts]
    assert [t.get_text() for ax in main for t in ax.get_yticklabels()] == \
        ["forecast/h1/last", "latent"]  # both r2: one block
    ax = main[0]
    assert ax.images[0].get_clim() == (0.0, 1.0)  # r2's fixed scale, not min-max of the row
    score = float(results["score"].sel(model="contrastive", task="latent", metric="r2",
                                       split="test", layer=1).mean())
    assert f"{score:.3f}" in [t.get_text() for t in ax.texts]
    assert len(ax.patches) == 2  # the val-selected layer boxed in each row
    bars = [a.get_ylabel() for a in fig.axes if a not in main]
    assert "r2 ↑" in bars
    assert ax.get_xlabel() == "layer (0 = embeddings)"


def test_layer_curves_one_colour_per_model_everywhere_and_a_legend_for_every_line(results):
    fig = layer_curves(results)
    panels = [ax for ax in fig.axes if ax.lines]
    assert [ax.get_title() for ax in panels] == ["forecast/h1/last", "latent"]
    assert all(ax.get_ylabel() == "r2 (higher is better)" for ax in panels)
    assert all(ax.get_xlabel() == "layer (0 = embeddings)" for ax in panels)
    labels = _legend(fig)
    assert labels[:2] == ["contrastive", "forecast"]
    assert "Bayes optimum (Kalman)" in labels
    assert "untrained twins (control, dashed in the model's colour)" in labels  # 2 models
    assert "layer selected on validation" in labels
    assert not any("permuted" in x for x in labels) and len(labels) <= 7
    colour = {t.get_text(): to_hex(h.get_color()) for leg in fig.legends
              for t, h in zip(leg.get_texts(), leg.legend_handles)}
    for ax in panels:  # each model's line keeps its legend colour in every panel
        drawn = {line.get_label(): to_hex(line.get_color()) for line in ax.lines
                 if not line.get_label().startswith("_")}
        assert drawn == {m: colour[m] for m in ("contrastive", "forecast")}
        twins = {to_hex(x.get_color()) for x in ax.lines if x.get_linestyle() == "--"}
        assert twins and twins <= {colour[m] for m in ("contrastive", "forecast")}
    assert all(_lines_on_screen(ax) for ax in panels)  # optimum and controls included
    w, h = _size(fig)
    assert 500 < w < 3000 and 300 < h < 2000


def test_layer_curves_become_small_multiples_beyond_four_models(five_models):
    fig = layer_curves(five_models)
    panels = [ax for ax in fig.axes if ax.lines]
    assert len(panels) == 2 * 5  # tasks x models
    assert all(len([x for x in ax.lines if not x.get_label().startswith("_")]) == 1
               for ax in panels)
    assert panels[0].get_title() == "forecast/h1/last · model0"
    assert all(_lines_on_screen(ax) for ax in panels)  # shared rows fit every panel
    assert panels[0].get_ylabel() and not panels[1].get_ylabel()


def test_cka_grid_has_tick_labels_axis_labels_and_a_colour_bar(results):
    fig = cka_grid(results)
    w, h = _size(fig)
    assert w / h < 3  # a grid, not a strip
    grids = [ax for ax in fig.axes if ax.images]
    assert len(grids) == 4  # two models x (within, against the untrained twin)
    ax = grids[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["0", "1", "2"]
    assert ax.get_xlabel() and ax.get_ylabel().startswith("contrastive")
    assert [a.get_title() for a in grids[:2]] == ["within the model",
                                                  "against its untrained twin"]
    bar = [a for a in fig.axes if a.get_ylabel() == "linear CKA"]
    assert len(bar) == 1


def test_diagnostics_have_plain_titles_y_labels_and_the_legend_outside(results):
    fig = diagnostics(results)
    panels = [ax for ax in fig.axes if ax.lines]
    titles = {ax.get_title() for ax in panels}
    assert "attention entropy (nats)" in titles and "share of high-norm tokens" in titles
    assert not any("_" in t for t in titles)
    assert all(ax.get_ylabel() for ax in panels)
    assert not any(ax.get_legend() for ax in fig.axes)
    assert _legend(fig) == ["contrastive", "forecast", "untrained twin"]
    assert len(panels) == len([v for v in DIAGNOSTICS if v in results])


def test_external_models_are_labelled_with_their_tap_names(external):
    names = ["rnn", "head"]
    fig = heatmap(external, "gru")
    ax = [a for a in fig.axes if a.texts][0]
    assert [t.get_text() for t in ax.get_xticklabels()] == names
    assert ax.get_xlabel() == "tap (layer)"
    curves = layer_curves(external)
    assert [t.get_text() for t in curves.axes[0].get_xticklabels()] == names
    cka = cka_grid(external)
    if cka is not None:
        assert [t.get_text() for t in cka.axes[0].get_yticklabels()] == names


@pytest.mark.parametrize("stem", ["heatmap_contrastive", "layer_curves", "cka", "diagnostics"])
def test_no_title_or_label_leaves_the_canvas(results, stem):
    fig = build_figures(results)[stem]
    fig.draw_without_rendering()  # runs the constrained layout, as saving does
    box = fig.bbox
    texts = [fig._suptitle] if fig._suptitle else []
    for ax in fig.axes:
        texts += [ax.title, ax.xaxis.label, ax.yaxis.label]
    for t in texts:
        if t is not None and t.get_text():
            ext = t.get_window_extent()
            assert ext.x0 >= box.x0 - 1 and ext.x1 <= box.x1 + 1, t.get_text()
            assert ext.y0 >= box.y0 - 1 and ext.y1 <= box.y1 + 1, t.get_text()
    assert np.isfinite(_size(fig)).all()
