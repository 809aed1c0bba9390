"""Tests for ssm_icl/eval/plots.py, drawn from tests/testdata results."""

import copy
import os

from absl.testing import absltest
from absl.testing import parameterized
from matplotlib import figure as mpl_figure
import numpy as np
from PIL import Image

from ssm_icl.eval import icl_curves
from ssm_icl.eval import plots

_TESTDATA = os.path.join(os.path.dirname(os.path.dirname(__file__)),
                         "testdata")
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _load(task):
  return icl_curves.load_results(
      os.path.join(_TESTDATA, f"icl_results_{task}.json"))


class PlotCurvesTest(parameterized.TestCase):

  @parameterized.parameters(False, True)
  def test_writes_valid_png_and_svg(self, log_y):
    stem = os.path.join(self.create_tempdir().full_path, "figs", "lr")
    png, svg = plots.plot_curves(_load("linear_regression"), stem,
                                 log_y=log_y)
    self.assertEqual((png, svg), (stem + ".png", stem + ".svg"))
    with open(png, "rb") as f:
      data = f.read()
    self.assertTrue(data.startswith(_PNG_SIGNATURE))
    self.assertGreater(len(data), 5000)
    with open(svg, encoding="utf-8") as f:
      text = f.read()
    self.assertIn("<svg", text)

  def test_draws_every_curve_band_and_the_d_line(self):
    results = _load("linear_regression")
    ax = mpl_figure.Figure().add_subplot(1, 1, 1)
    plots.draw_curves(ax, results)
    labels = [line.get_label() for line in ax.get_lines()]
    models = ["transformer", "mamba", "mambaformer"]
    self.assertEqual(labels[:3], models)  # Models first, as solid lines.
    self.assertCountEqual(labels, list(results["curves"]) + ["d = 5"])
    styles = {line.get_label(): line.get_linestyle() for line in ax.get_lines()}
    self.assertEqual(styles["transformer"], "-")
    self.assertEqual(styles["least_squares"], "--")
    self.assertEqual(styles["zero"], ":")
    self.assertEqual(len(ax.collections), len(results["curves"]))  # Bands.
    d_line = [l for l in ax.get_lines() if l.get_label() == "d = 5"][0]
    np.testing.assert_array_equal(d_line.get_xdata(), [5, 5])
    np.testing.assert_allclose(ax.get_lines()[0].get_ydata(),
                               results["curves"]["transformer"]["mean"])
    self.assertEqual(ax.get_ylabel(), "normalised squared error (/ 5)")

  def test_accuracy_axis_and_no_d_line_for_parity(self):
    ax = mpl_figure.Figure().add_subplot(1, 1, 1)
    plots.draw_curves(ax, _load("sparse_parity"), curves=["mamba"])
    self.assertEqual([l.get_label() for l in ax.get_lines()], ["mamba"])
    self.assertEqual(ax.get_ylabel(), "accuracy")

  def test_crops_spiking_baselines(self):
    results = copy.deepcopy(_load("decision_tree"))
    results["curves"]["least_squares"]["mean"][3] = 500.0
    ax = mpl_figure.Figure().add_subplot(1, 1, 1)
    plots.draw_curves(ax, results)
    anchors = max(max(results["curves"][n]["mean"])
                  for n in ("transformer", "mamba", "mambaformer", "zero"))
    self.assertAlmostEqual(ax.get_ylim()[1], 1.2 * anchors)
    ax = mpl_figure.Figure().add_subplot(1, 1, 1)
    plots.draw_curves(ax, results, ylim=(0.0, 600.0))
    self.assertEqual(ax.get_ylim(), (0.0, 600.0))

  def test_unscored_points_are_gaps(self):
    results = copy.deepcopy(_load("linear_regression"))
    results["curves"]["mamba"]["mean"][2] = None
    ax = mpl_figure.Figure().add_subplot(1, 1, 1)
    plots.draw_curves(ax, results, curves=["mamba"])
    self.assertTrue(np.isnan(ax.get_lines()[0].get_ydata()[2]))

  def test_rejects_unknown_curve(self):
    ax = mpl_figure.Figure().add_subplot(1, 1, 1)
    with self.assertRaisesRegex(ValueError, r"Unknown curve\(s\) \['s4'\]"):
      plots.draw_curves(ax, _load("linear_regression"), curves=["s4"])


class PlotGridTest(absltest.TestCase):

  def test_one_panel_per_task(self):
    results = [_load(t) for t in ("linear_regression", "decision_tree",
                                  "sparse_parity")]
    stem = os.path.join(self.create_tempdir().full_path, "grid")
    png, _ = plots.plot_grid(results, stem, ncols=2)
    with open(png, "rb") as f:
      self.assertTrue(f.read().startswith(_PNG_SIGNATURE))

  def test_small_palette_png_for_the_docs(self):
    results = [_load("linear_regression")]
    directory = self.create_tempdir().full_path
    big, _ = plots.plot_grid(results, os.path.join(directory, "big"), dpi=60)
    paths = plots.plot_grid(results, os.path.join(directory, "small"),
                            dpi=60, svg=False, palette_colors=16)
    self.assertEqual(paths, (os.path.join(directory, "small.png"),))
    self.assertFalse(os.path.exists(os.path.join(directory, "small.svg")))
    with Image.open(paths[0]) as image:
      self.assertEqual(image.mode, "P")
      self.assertLessEqual(len(image.getcolors()), 16)
    self.assertLess(os.path.getsize(paths[0]), os.path.getsize(big))

  def test_rejects_empty_list(self):
    with self.assertRaisesRegex(ValueError, r"results_list is empty"):
      plots.plot_grid([], "unused")

  def test_rejects_bad_ncols(self):
    with self.assertRaisesRegex(ValueError, r"ncols=0 must be an int >= 1"):
      plots.plot_grid([_load("sparse_parity")], "unused", ncols=0)

  def test_panel_grid_rows_and_size(self):
    fig, panels = plots.panel_grid(5, ncols=3)
    self.assertLen(panels, 5)
    self.assertEqual([ax.get_subplotspec().get_geometry()[:2]
                      for ax in panels], [(2, 3)] * 5)
    self.assertSequenceAlmostEqual(fig.get_size_inches(), (13.5, 7.2))
    fig, panels = plots.panel_grid(2)  # fewer panels than columns
    self.assertSequenceAlmostEqual(fig.get_size_inches(), (9.0, 3.6))


if __name__ == "__main__":
  absltest.main()
