"""Tests for ssm_icl/reproduce: plans, sweeps, the smoke suite, resume.

The smoke suite (configs/suites.py:smoke, every task and family once with a
tiny model) runs end to end once per test class setup; the other heavy
tests reuse its workdir. A subprocess run is interrupted with Ctrl-C
(SIGINT) mid-run and resumed, to check that no finished run and no finished
step is repeated.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile

from absl.testing import absltest
from absl.testing import parameterized
import chex
import jax
import pytest

from ssm_icl.eval import report
from ssm_icl.ops import flops as flops_lib
from ssm_icl.reproduce import estimate
from ssm_icl.reproduce import outputs
from ssm_icl.reproduce import plan as plan_lib
from ssm_icl.reproduce import runner
from ssm_icl.reproduce import summaries
from ssm_icl.train import loop
from ssm_icl.train import metrics

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TASKS = ("linear_regression", "sparse_linear_regression",
         "relu_2nn_regression", "decision_tree", "ortho_outlier_regression",
         "many_outlier_regression", "sparse_parity", "cot_io", "vector_mqar")
FAMILIES = ("transformer", "mamba", "s4", "s4_mamba", "hybrid", "mambaformer")
RESUME_STEPS = 400


def resume_suite():
  """Two tiny linear-regression runs, long enough to be interrupted."""
  suite = plan_lib.suite_config("smoke")
  suite.runs = {"linear_regression": "transformer,mamba"}
  suite.common.ckpt.every = 50
  suite.common.train.update(steps=RESUME_STEPS, log_every=5)
  suite.eval.baselines = False
  return suite


def run_resume_suite(workdir):
  """Entry point of the interrupted subprocess."""
  runner.run_suite(resume_suite(), workdir)


def _quiet(message):
  del message


class PlanTest(parameterized.TestCase):

  def test_parse_sweep_values(self):
    self.assertEqual(
        plan_lib.parse_sweep(["model.d_model=64, 128", "train.lr=1e-3",
                              "model.family=mamba"]),
        [("model.d_model", [64, 128]), ("train.lr", [1e-3]),
         ("model.family", ["mamba"])])

  @parameterized.parameters(
      (["model.d_model"], "expected KEY=V1,V2"),
      (["model.d_model="], "expected KEY=V1,V2"),
      (["=1,2"], "expected KEY=V1,V2"),
      (["model.d_model=1", "model.d_model=2"], "sets 'model.d_model' twice"))
  def test_parse_sweep_errors(self, specs, message):
    with self.assertRaisesRegex(ValueError, message):
      plan_lib.parse_sweep(specs)

  def test_unknown_suite(self):
    with self.assertRaisesRegex(ValueError, "unknown suite 'nope'"):
      plan_lib.suite_config("nope")

  def test_sweep_multiplies_runs_with_labels_and_dirs(self):
    runs = plan_lib.plan_runs(
        plan_lib.suite_config("smoke"),
        sweep=plan_lib.parse_sweep(["model.d_model=8,16", "train.lr=0.01"]),
        tasks=["linear_regression"], families=["mamba"])
    self.assertEqual([r.label for r in runs],
                     ["mamba@d_model=8,lr=0.01", "mamba@d_model=16,lr=0.01"])
    self.assertEqual([r.config.model.d_model for r in runs], [8, 16])
    self.assertEqual({r.config.train.lr for r in runs}, {0.01})
    self.assertEqual(runs[0].relpath, os.path.join(
        "linear_regression", "mamba@d_model=8,lr=0.01"))
    self.assertEqual({r.group for r in runs}, {"linear_regression"})

  def test_task_sweep_makes_task_groups(self):
    runs = plan_lib.plan_runs(
        plan_lib.suite_config("smoke"),
        sweep=plan_lib.parse_sweep(["task.kwargs.n_dims=3,5"]),
        tasks=["linear_regression"], families=["mamba"])
    self.assertEqual([r.group for r in runs], ["linear_regression@n_dims=3",
                                               "linear_regression@n_dims=5"])
    self.assertEqual([r.config.task.kwargs.n_dims for r in runs], [3, 5])

  def test_longer_prompts_raise_n_positions(self):
    runs = plan_lib.plan_runs(
        plan_lib.suite_config("smoke"),
        sweep=plan_lib.parse_sweep(["task.curriculum.points.end=30"]),
        tasks=["linear_regression"], families=["mamba"])
    # The tiny config sizes its table for 6 examples (12 tokens); 30
    # examples are 60 tokens.
    self.assertEqual(runs[0].config.model.n_positions, 60)

  @parameterized.parameters(
      (["model.nope=1"], "Override 'model.nope': the config has no such key"),
      (["train.steps=abc"], "Override train.steps='abc' has the wrong type"))
  def test_bad_sweep_key_or_type(self, specs, message):
    with self.assertRaisesRegex(ValueError, message):
      plan_lib.plan_runs(plan_lib.suite_config("smoke"),
                         sweep=plan_lib.parse_sweep(specs),
                         tasks=["linear_regression"])

  def test_task_kwargs_accept_new_fields(self):
    config = plan_lib.task_config("linear_regression", "mamba", "tiny")
    plan_lib.apply_overrides(config, {"task": {"kwargs": {"noise_std": 0.5}}})
    self.assertEqual(config.task.kwargs.noise_std, 0.5)

  @parameterized.parameters(
      ({"tasks": ["nope"]}, r"Unknown task\(s\) \['nope'\]"),
      ({"families": ["nope"]}, r"Unknown model\(s\) \['nope'\]"),
      ({"tasks": ["cot_io"], "families": ["s4"]}, "keep no run"))
  def test_bad_filters(self, kwargs, message):
    with self.assertRaisesRegex(ValueError, message):
      plan_lib.plan_runs(plan_lib.suite_config("smoke"), **kwargs)

  def test_paper_suite_has_the_paper_settings(self):
    runs = plan_lib.plan_runs(plan_lib.suite_config("paper"))
    self.assertLen(runs, 6 * 6 + 3 * 3)
    by = {(r.task, r.family): r for r in runs}
    self.assertEqual({t for t, _ in by}, set(TASKS))
    for task in TASKS[:6]:
      self.assertEqual({f for t, f in by if t == task}, set(FAMILIES))
    # Parameter counts of docs/PAPER.md §6.
    for family, params in (("transformer", 425_473), ("mamba", 470_017),
                           ("mambaformer", 485_889), ("s4", 153_601),
                           ("s4_mamba", 437_249), ("hybrid", 382_081)):
      run = by["linear_regression", family]
      self.assertEqual(plan_lib.training_flops(run.config)["params"], params,
                       msg=family)
    for (task, _), run in by.items():
      want_steps = 1_000_000 if task == "many_outlier_regression" else 500_000
      self.assertEqual(run.config.train.steps, want_steps, msg=task)
      self.assertEqual(run.config.train.batch_size, 64)
    self.assertEqual(by["decision_tree", "mamba"].config.train.lr, 4e-4)
    self.assertEqual(by["sparse_parity", "mamba"].config.train.lr, 4e-4)
    self.assertEqual(by["vector_mqar", "mamba"].config.train.lr, 2e-4)
    self.assertEqual(by["vector_mqar", "mamba"].config.train.grad_clip, 100)

  def test_mini_suite_covers_table1(self):
    runs = plan_lib.plan_runs(plan_lib.suite_config("mini"))
    pairs = {(r.task, r.family) for r in runs}
    for task in TASKS:
      for family in outputs.PAPER_MODELS:
        self.assertIn((task, family), pairs)
    self.assertEqual({f for t, f in pairs if t == "linear_regression"},
                     set(FAMILIES))

  def test_training_flops_of_a_constant_length(self):
    run = plan_lib.plan_runs(plan_lib.suite_config("smoke"),
                             tasks=["sparse_parity"])[0]
    task, curriculum, model_cfg, _ = loop.build(run.config)
    per_step = flops_lib.model_flops(
        model_cfg, task.seq_len(curriculum.points_end),
        batch=run.config.train.batch_size, training=True)["total"]
    self.assertEqual(plan_lib.training_flops(run.config)["train_flops"],
                     run.config.train.steps * per_step)

  def test_training_flops_follow_the_curriculum(self):
    config = plan_lib.task_config("linear_regression", "mamba", "paper")
    config.train.steps = 4500
    task, curriculum, model_cfg, _ = loop.build(config)
    want = sum(flops_lib.model_flops(
        model_cfg, task.seq_len(curriculum.at(s)[1]), batch=64,
        training=True)["total"] for s in range(4500))
    self.assertEqual(plan_lib.training_flops(config)["train_flops"], want)


class EstimateTest(absltest.TestCase):

  def test_projection_interpolates_in_tokens(self):
    config = plan_lib.task_config("linear_regression", "mamba", "paper")
    config.train.steps = 5000
    # 13 points = 26 tokens at 1 s, 41 points = 82 tokens at 4 s per step;
    # steps 0-1999 at 11 points and 2000-3999 at 13 both run in the first
    # length bucket (13 points), 4000-4999 at 15 in the second (17).
    got = estimate.projected_seconds(config, {13: 1.0, 41: 4.0})
    per_token = 3.0 / 56
    want = 4000 * 1.0 + 1000 * (1 + 8 * per_token)
    self.assertAlmostEqual(got, want)

  def test_projection_of_a_constant_length(self):
    config = plan_lib.task_config("sparse_parity", "mamba", "tiny")
    self.assertAlmostEqual(estimate.projected_seconds(config, {12: 0.5}),
                           0.5 * config.train.steps)

  def test_one_length_bucket_runs_every_step_at_the_final_length(self):
    suite = plan_lib.suite_config("mini")
    run = plan_lib.plan_runs(suite, tasks=["linear_regression"],
                             families=["mamba"])[0]
    config = run.config
    self.assertEqual(config.train.length_buckets, 1)
    final = config.task.curriculum.points.end
    self.assertEqual(estimate.timed_points(config), [final])
    self.assertAlmostEqual(estimate.projected_seconds(config, {final: 0.03}),
                           0.03 * config.train.steps)

  def test_paper_runs_are_timed_at_their_first_and_last_bucket(self):
    config = plan_lib.task_config("linear_regression", "mamba", "paper")
    # Buckets (13, 17, ..., 41): the first stages (11, 13 points) share 13.
    self.assertEqual(estimate.timed_points(config), [13, 41])

  def test_time_steps_must_be_positive(self):
    with self.assertRaisesRegex(ValueError, "time_steps=0 must be >= 1"):
      estimate.estimate_times([], self.create_tempdir().full_path, n_steps=0)


class OutputsTest(absltest.TestCase):

  def test_paper_marks(self):
    self.assertEqual(outputs.paper_mark("sparse_parity", "transformer"), "✗")
    self.assertEqual(outputs.paper_mark("vector_mqar", "mamba"), "✗")
    self.assertEqual(outputs.paper_mark("decision_tree", "mamba"), "▲")
    self.assertEqual(outputs.paper_mark("many_outlier_regression",
                                        "transformer"), "▲")
    self.assertIsNone(outputs.paper_mark("linear_regression", "s4"))

  def test_comparison_lists_disagreements(self):
    cell = report.Cell
    rows = [report.Row(
        "sparse_parity", "accuracy", 0.5, "analytic", 0.01,
        {"transformer": cell("✓", 0.02), "mamba": cell("✓", 0.01),
         "mambaformer": cell("✗", 0.45)})]
    text = outputs.comparison_markdown(rows)
    self.assertIn("| sparse_parity | ✓ / ✗ | ✓ / ✓ | ✗ / ✓ |", text)
    self.assertIn("## Disagreements (2)", text)
    self.assertIn("- sparse_parity, transformer: measured ✓ (e = 0.02, best "
                  "0.01, trivial 0.5), paper ✗.", text)

  def test_flops_figure(self):
    stem = os.path.join(self.create_tempdir().full_path, "flops")
    points = [{"group": "lr", "family": "mamba", "label": f"mamba@d={d}",
               "train_flops": f, "error": e}
              for d, f, e in ((8, 1e9, 0.5), (16, 4e9, 0.2))]
    points.append({"group": "lr", "family": "s4", "label": "s4",
                   "train_flops": 2e9, "error": 0.9})
    for path in outputs.plot_flops(points, stem):
      self.assertGreater(os.path.getsize(path), 1000)

  def test_changed_config_of_a_finished_run_is_an_error(self):
    run_dir = self.create_tempdir().full_path
    config = plan_lib.task_config("linear_regression", "mamba", "tiny")
    planned = runner.resolved_config(config)
    runner.write_json(os.path.join(run_dir, runner.MARKER),
                      {"config": planned})
    self.assertIsNotNone(runner.finished_marker(run_dir, planned))
    config.model.d_model = 32
    with self.assertRaisesRegex(
        ValueError, "model.d_model: finished run 16, suite 32"):
      runner.finished_marker(run_dir, runner.resolved_config(config))


@pytest.mark.slow
class SmokeSuiteTest(absltest.TestCase):
  """The smoke suite end to end, then resume, determinism and a kill."""

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    # End-to-end smoke tests check plumbing, not speed: skip XLA's
    # optimisation passes to halve the compile times (restored below).
    cls.optimizations = jax.config.read("jax_disable_most_optimizations")
    jax.config.update("jax_disable_most_optimizations", True)
    # A fresh directory per test process: a workdir left by an earlier
    # process would make its runs "finished earlier" here.
    cls.root = tempfile.mkdtemp(dir=absltest.get_default_test_tmpdir())
    cls.workdir = os.path.join(cls.root, "smoke_suite")
    cls.suite = plan_lib.suite_config("smoke")
    cls.result = runner.run_suite(cls.suite, cls.workdir, out=_quiet)
    cls.figures = os.path.join(cls.root, "smoke_figures")
    cls.summary = outputs.write_outputs(cls.workdir, cls.result.runs, "smoke",
                                        figures_dir=cls.figures)

  @classmethod
  def tearDownClass(cls):
    jax.config.update("jax_disable_most_optimizations", cls.optimizations)
    shutil.rmtree(cls.root, ignore_errors=True)
    super().tearDownClass()

  def test_every_task_and_family_ran_and_the_table_is_written(self):
    runs = self.result.runs
    self.assertFalse(self.result.interrupted)
    self.assertEqual({r.task for r in runs}, set(TASKS))
    self.assertEqual({r.family for r in runs}, set(FAMILIES))
    self.assertEqual(sorted(self.result.done), sorted(r.relpath for r in runs))
    self.assertLen(self.summary["runs"], len(runs))
    with open(os.path.join(self.workdir, "table.md"), encoding="utf-8") as f:
      table = f.read()
    for task in TASKS:
      self.assertIn(f"| {task} |", table)
    for name in ("table1.md", "comparison.md", "curves.png", "flops.png",
                 "loss_curves.png", "summary.json", "plan.json"):
      self.assertTrue(os.path.exists(os.path.join(self.workdir, name)), name)
    self.assertCountEqual(os.listdir(self.figures),
                          ["smoke_curves.png", "smoke_flops.png",
                           "smoke_loss_curves.png"])
    for run in runs:
      run_dir = os.path.join(self.workdir, run.relpath)
      self.assertTrue(os.path.exists(os.path.join(run_dir,
                                                  summaries.SUMMARY)))
      sessions = runner.read_sessions(run_dir)
      self.assertEqual([(s["start_step"], s["end_step"]) for s in sessions],
                       [(0, 10)], msg=run.relpath)
      merged = json.load(open(os.path.join(self.workdir, run.group,
                                           "results.json")))
      self.assertIn(run.label, merged["curves"])
      # The baselines were evaluated on the same prompts.
      self.assertIn("zero" if run.task != "sparse_parity" else "chance",
                    merged["curves"])

  def test_second_call_skips_every_finished_run(self):
    lines = []
    again = runner.run_suite(self.suite, self.workdir, out=lines.append)
    self.assertEqual(again.trained, [])
    self.assertLen(again.done, len(self.result.runs))
    self.assertLen([x for x in lines if "finished earlier; skipped" in x],
                   len(self.result.runs))

  def test_same_seed_gives_bit_identical_results(self):
    other = os.path.join(self.root, "smoke_again")
    runner.run_suite(self.suite, other, tasks=["linear_regression"],
                     families=["mamba"], out=_quiet)
    relpath = os.path.join("linear_regression", "mamba")
    first, second = (os.path.join(w, relpath)
                     for w in (self.workdir, other))
    curves = [json.load(open(os.path.join(d, runner.RESULTS)))["curves"]
              for d in (first, second)]
    self.assertEqual(curves[0], curves[1])
    losses = [[(r["step"], r["train/loss"], r["train/grad_norm"])
               for r in metrics.read_metrics(d) if "train/loss" in r]
              for d in (first, second)]
    self.assertEqual(losses[0], losses[1])
    # The saved parameters are equal bit for bit (a finished run's
    # train_and_evaluate only restores its last checkpoint).
    config = next(r.config for r in self.result.runs
                  if r.relpath == relpath)
    states = [loop.train_and_evaluate(config, d).state.params
              for d in (first, second)]
    chex.assert_trees_all_equal(states[0], states[1])

  def test_interrupt_and_resume_repeats_no_run_and_no_step(self):
    workdir = os.path.join(self.root, "resume_suite")
    code = ("import sys; sys.path.insert(0, '.'); "
            "from tests import reproduce_test as t; "
            f"t.run_resume_suite({workdir!r})")
    env = dict(os.environ, JAX_DISABLE_MOST_OPTIMIZATIONS="1")
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    second_run, log = False, []
    for line in proc.stdout:
      log.append(line)
      second_run = second_run or "[run 2/2]" in line
      if second_run and line.startswith("step "):
        proc.send_signal(signal.SIGINT)  # Ctrl-C in the middle of run 2
        break
    rest, _ = proc.communicate(timeout=120)
    log.append(rest)
    self.assertEqual(proc.returncode, 0, msg="".join(log))
    self.assertIn("Stopped after", rest)
    first_dir = os.path.join(workdir, "linear_regression", "transformer")
    second_dir = os.path.join(workdir, "linear_regression", "mamba")
    marker_time = os.path.getmtime(os.path.join(first_dir, runner.MARKER))
    stopped = runner.read_sessions(second_dir)
    self.assertLen(stopped, 1)
    self.assertTrue(stopped[0]["interrupted"])
    stop_step = stopped[0]["end_step"]
    self.assertBetween(stop_step, 1, RESUME_STEPS - 1)
    self.assertFalse(os.path.exists(os.path.join(second_dir, runner.MARKER)))

    resumed = runner.run_suite(resume_suite(), workdir, out=_quiet)
    self.assertEqual(resumed.trained, [os.path.join("linear_regression",
                                                    "mamba")])
    self.assertEqual(
        os.path.getmtime(os.path.join(first_dir, runner.MARKER)), marker_time)
    self.assertLen(runner.read_sessions(first_dir), 1)
    sessions = runner.read_sessions(second_dir)
    self.assertEqual([(s["start_step"], s["end_step"]) for s in sessions],
                     [(0, stop_step), (stop_step, RESUME_STEPS)])
    logged = [r["step"] for r in metrics.read_metrics(second_dir)
              if "train/loss" in r]
    self.assertLen(logged, len(set(logged)))
    self.assertEqual(logged[-1], RESUME_STEPS)
    self.assertTrue(os.path.exists(os.path.join(second_dir, runner.MARKER)))


class CommandLineTest(absltest.TestCase):

  def _run(self, *args):
    return subprocess.run(
        [sys.executable, "-m", "ssm_icl.reproduce", *args], cwd=REPO,
        capture_output=True, text=True, timeout=120, check=False)

  def test_dry_run_prints_the_plan(self):
    workdir = self.create_tempdir().full_path
    proc = self._run("--suite=smoke", f"--workdir={workdir}", "--dry_run",
                     "--tasks=linear_regression",
                     "--sweep=model.d_model=8,16")
    self.assertEqual(proc.returncode, 0, msg=proc.stderr)
    self.assertIn("linear_regression/mamba@d_model=16", proc.stdout)
    # The smoke suite trains only Mamba on linear regression: 1 x 2 values.
    self.assertIn("linear_regression/mamba@d_model=8", proc.stdout)
    self.assertIn("2 runs,", proc.stdout)
    self.assertEqual(os.listdir(workdir), [])

  def test_bad_sweep_is_a_usage_error(self):
    proc = self._run("--suite=smoke", "--workdir=unused", "--dry_run",
                     "--sweep=model.d_model")
    self.assertNotEqual(proc.returncode, 0)
    self.assertIn("expected KEY=V1,V2", proc.stderr + proc.stdout)


if __name__ == "__main__":
  absltest.main()
