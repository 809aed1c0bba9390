"""Paper-style figures of in-context-learning curves (matplotlib, Agg).

One line per model (solid) and baseline (dashed; trivial references dotted),
with the shaded 5%-95% bootstrap interval, x = number of in-context examples,
y = normalised squared error (or accuracy), optionally log-scaled, and a
vertical line at x = d for linear regression, where least squares reaches
zero error. Figures are drawn on `matplotlib.figure.Figure` objects, which
render with the Agg canvas and leave pyplot's global state alone.
"""

from __future__ import annotations

import io
import itertools
import math
from typing import Any, Iterable, Mapping, Sequence

from etils import epath
from matplotlib import figure as mpl_figure
from matplotlib import ticker
import numpy as np

from ssm_icl import paths as paths_lib
from ssm_icl.eval import icl_curves

# Names of the trivial references, drawn dotted in grey.
TRIVIAL_NAMES = ("zero", "chance")
# Tasks whose plots mark x = d (the input dimension).
_VLINE_TASKS = ("linear_regression",)
_METRIC_LABELS = {
    "squared_error": "normalised squared error",
    "accuracy": "accuracy",
}


def _array(values: Sequence[float | None]) -> np.ndarray:
  """JSON list (None = not scored) -> float array with NaN gaps."""
  return np.array([np.nan if v is None else v for v in values], np.float64)


def _ylabel(results: Mapping[str, Any]) -> str:
  label = _METRIC_LABELS.get(results["metric"], str(results["metric"]))
  normalizer = results.get("normalizer", 1.0)
  if results["metric"] == "squared_error" and normalizer != 1.0:
    label += f" (/ {normalizer:g})"
  return label


def _auto_top(results: Mapping[str, Any], curves: Sequence[str]
              ) -> float | None:
  """An upper y limit that keeps models and trivial references readable.

  Baselines such as least squares near the interpolation threshold (k ~ d)
  can spike orders of magnitude above everything else; when they do, the
  axis stops at 1.2 x the highest model / trivial curve (the paper's plots
  likewise crop them). None when nothing needs cropping.
  """
  def peak(names):
    values = [_array(results["curves"][n]["mean"]) for n in names]
    values = [v[np.isfinite(v)] for v in values]
    return max((v.max() for v in values if v.size), default=None)

  anchors = [n for n in curves if n in TRIVIAL_NAMES
             or results["curves"][n]["kind"] == icl_curves.KIND_MODEL]
  anchor, overall = peak(anchors), peak(curves)
  if anchor is None or overall is None or anchor <= 0:
    return None
  return 1.2 * anchor if overall > 1.5 * anchor else None


def draw_curves(ax: Any, results: Mapping[str, Any], *,
                curves: Iterable[str] | None = None, log_y: bool = False,
                title: str | None = None, legend: bool = True,
                ylim: tuple[float, float] | None = None) -> None:
  """Draws the curves of one `evaluate` result on a matplotlib Axes.

  Args:
    ax: the Axes.
    results: a dict from `icl_curves.evaluate` / `load_results`.
    curves: names to draw, in order (default: all, models first).
    log_y: log-scaled y axis (non-positive values are clipped).
    title: panel title (default: the task name).
    legend: draw a legend.
    ylim: y-axis limits; default: automatic, cropping baselines that spike
      far above the models and trivial references (linear axes only).

  Raises:
    ValueError: if `results` is malformed or names an unknown curve.
  """
  icl_curves.validate_results(results)
  available = results["curves"]
  if curves is None:
    models = [n for n, c in available.items()
              if c["kind"] == icl_curves.KIND_MODEL]
    curves = models + [n for n in available if n not in models]
  curves = list(curves)
  unknown = [n for n in curves if n not in available]
  if unknown:
    raise ValueError(f"Unknown curve(s) {unknown}; the results hold "
                     f"{sorted(available)}.")
  x = np.asarray(results["x"], np.float64)
  # Matplotlib's default qualitative cycle, C0..C9.
  palette = itertools.cycle([f"C{i}" for i in range(10)])
  for name in curves:
    curve = available[name]
    mean = _array(curve["mean"])
    low, high = _array(curve["low"]), _array(curve["high"])
    if name in TRIVIAL_NAMES:
      style = dict(color="0.45", linestyle=":", linewidth=1.5)
    elif curve["kind"] == icl_curves.KIND_MODEL:
      style = dict(color=next(palette), linestyle="-", linewidth=2.0)
    else:
      style = dict(color=next(palette), linestyle="--", linewidth=1.2)
    ax.plot(x, mean, label=name, marker="." if len(x) < 3 else None, **style)
    ax.fill_between(x, low, high, color=style["color"], alpha=0.2,
                    linewidth=0)
  config = results.get("task_config", {})
  if results["task"] in _VLINE_TASKS and "n_dims" in config:
    ax.axvline(config["n_dims"], color="0.3", linestyle="-.", linewidth=1,
               label=f"d = {config['n_dims']}")
  if log_y:
    ax.set_yscale("log", nonpositive="clip")
  if ylim is not None:
    ax.set_ylim(*ylim)
  elif not log_y and results["metric"] != "accuracy":
    top = _auto_top(results, curves)
    if top is not None:
      ax.set_ylim(bottom=0.0, top=top)
  ax.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))
  ax.set_xlabel("in-context examples")
  ax.set_ylabel(_ylabel(results))
  ax.set_title(results["task"] if title is None else title)
  ax.grid(True, alpha=0.3)
  if legend:
    ax.legend(fontsize="small", frameon=False)


def save_figure(fig: mpl_figure.Figure, path_stem: paths.PathLike, *,
                dpi: int = 150, svg: bool = True,
                palette_colors: int | None = None) -> tuple[str, ...]:
  """Writes `<path_stem>.png` (and `.svg`), local or gs://.

  Each file is rendered in memory and written in one piece.

  Args:
    fig: the figure.
    path_stem: output path without extension.
    dpi: PNG resolution.
    svg: also write an SVG.
    palette_colors: if set, rewrite the PNG with a palette of this many
      colours: line plots need few, and the file gets ~4x smaller than
      matplotlib's RGBA output (for figures committed to the docs). Pillow
      is a matplotlib dependency.

  Returns:
    The paths written (png, then svg).
  """
  stem = epath.Path(path_stem)
  paths_lib.ensure_dir(stem.parent)
  written = (f"{stem}.png",) + ((f"{stem}.svg",) if svg else ())
  png = io.BytesIO()
  fig.savefig(png, format="png", dpi=dpi, bbox_inches="tight")
  if palette_colors:
    from PIL import Image  # pylint: disable=g-import-not-at-top
    png.seek(0)
    with Image.open(png) as image:
      small = image.convert("RGB").quantize(colors=palette_colors)
    png = io.BytesIO()
    small.save(png, format="png", optimize=True)
  epath.Path(written[0]).write_bytes(png.getvalue())
  if svg:
    text = io.StringIO()
    fig.savefig(text, format="svg", bbox_inches="tight")
    epath.Path(written[1]).write_text(text.getvalue())
  return written


def plot_curves(results: Mapping[str, Any], path_stem: paths_lib.PathLike, *,
                curves: Iterable[str] | None = None, log_y: bool = False,
                title: str | None = None,
                ylim: tuple[float, float] | None = None) -> tuple[str, str]:
  """Plots one task's curves and writes `<path_stem>.png` and `.svg`.

  Args:
    results: a dict from `icl_curves.evaluate` / `load_results`.
    path_stem: output path without extension.
    curves: names to draw (default: all).
    log_y: log-scaled y axis.
    title: figure title (default: the task name).
    ylim: y-axis limits (default: automatic, see `draw_curves`).

  Returns:
    The (png, svg) paths written.
  """
  fig = mpl_figure.Figure(figsize=(5.5, 4.0))
  draw_curves(fig.add_subplot(1, 1, 1), results, curves=curves, log_y=log_y,
              title=title, ylim=ylim)
  return save_figure(fig, path_stem)


def panel_grid(n_panels: int, ncols: int = 3
               ) -> tuple[mpl_figure.Figure, list[Any]]:
  """A figure of `n_panels` axes, at most `ncols` per row, 4.5 x 3.6 in each.

  Args:
    n_panels: number of panels, >= 1.
    ncols: panels per row, >= 1.

  Returns:
    (figure, the panels' axes in row-major order).

  Raises:
    ValueError: on ncols < 1.
  """
  if not (isinstance(ncols, int) and ncols >= 1):
    raise ValueError(f"ncols={ncols!r} must be an int >= 1.")
  ncols = min(ncols, n_panels)
  nrows = math.ceil(n_panels / ncols)
  fig = mpl_figure.Figure(figsize=(4.5 * ncols, 3.6 * nrows))
  return fig, [fig.add_subplot(nrows, ncols, i + 1) for i in range(n_panels)]


def plot_grid(results_list: Sequence[Mapping[str, Any]],
              path_stem: paths_lib.PathLike, *, ncols: int = 3,
              log_y: bool = False, curves: Iterable[str] | None = None,
              dpi: int = 150, svg: bool = True,
              palette_colors: int | None = None) -> tuple[str, ...]:
  """Plots several tasks as a grid of panels (one per result).

  Args:
    results_list: one `evaluate` result per panel.
    path_stem: output path without extension.
    ncols: panels per row, >= 1.
    log_y: log-scaled y axes.
    curves: names to draw in every panel (default: all of each result).
    dpi, svg, palette_colors: how to write it (see `save_figure`).

  Returns:
    The paths written (png, then svg).

  Raises:
    ValueError: on an empty list or ncols < 1.
  """
  if not results_list:
    raise ValueError("results_list is empty; pass at least one result.")
  fig, panels = panel_grid(len(results_list), ncols)
  for ax, results in zip(panels, results_list):
    names = None if curves is None else [
        n for n in curves if n in results["curves"]]
    draw_curves(ax, results, curves=names, log_y=log_y)
  fig.tight_layout()
  return save_figure(fig, path_stem, dpi=dpi, svg=svg,
                     palette_colors=palette_colors)
