"""Tests of the Bazel BUILD file and its generator (tools/update_build.py).

The first class checks the real checkout: BUILD is what the generator makes of
the current tree, every module and test file has a target, and the file is
well formed (labels resolve, sources exist). The second class runs the
generator on small synthetic trees.
"""

import ast
import contextlib
import glob
import io
import os
import textwrap

from absl.testing import absltest
from absl.testing import parameterized

from tools import build_graph
from tools import update_build

# update_build: ignore-strings (the strings below are synthetic source trees)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _rules(build_text):
  """Returns [(rule kind, {attribute: python value})] of a BUILD text."""
  rules = []
  for node in ast.parse(build_text).body:
    call = node.value
    attrs = {}
    for kw in call.keywords:
      value = kw.value
      if isinstance(value, ast.BinOp) or isinstance(value, ast.Call):
        attrs[kw.arg] = ast.unparse(value)  # data = [...] + glob([...])
      else:
        attrs[kw.arg] = ast.literal_eval(value)
    rules.append((call.func.id, attrs))
  return rules


class RealTreeTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    with open(os.path.join(ROOT, "BUILD"), encoding="utf-8") as f:
      cls.text = f.read()
    cls.rules = _rules(cls.text)

  def test_build_is_up_to_date(self):
    reasons = update_build.check(ROOT)
    self.assertEmpty(reasons, "BUILD is out of date; run `python "
                     "tools/update_build.py`:\n" + "\n".join(reasons))

  def test_every_module_and_test_file_has_a_target(self):
    srcs = {s for _, attrs in self.rules for s in attrs.get("srcs", [])}
    on_disk = [os.path.relpath(p, ROOT) for p in
               glob.glob(os.path.join(ROOT, "ssm_icl", "**", "*.py"),
                         recursive=True) +
               glob.glob(os.path.join(ROOT, "tests", "**", "*_test.py"),
                         recursive=True)]
    self.assertNotEmpty(on_disk)
    missing = sorted(p.replace(os.sep, "/") for p in on_disk
                     if p.replace(os.sep, "/") not in srcs)
    self.assertEmpty(missing, f"files without a BUILD target: {missing}")

  def test_labels_resolve_and_sources_exist(self):
    names = [attrs["name"] for _, attrs in self.rules if "name" in attrs]
    self.assertLen(set(names), len(names), "duplicate target names")
    kinds = {attrs["name"]: kind for kind, attrs in self.rules
             if "name" in attrs}
    for kind, attrs in self.rules:
      for label in attrs.get("deps", []) + attrs.get("tests", []):
        self.assertIn(label.lstrip(":"), kinds, f"{attrs['name']}: {label}")
      for path in attrs.get("srcs", []):
        self.assertTrue(os.path.isfile(os.path.join(ROOT, path)), path)
      if kind == "py_test":
        self.assertEqual(attrs["srcs"], [attrs["main"]])
        self.assertIn(attrs["size"], ("small", "medium", "large"))
      if kind == "test_suite":
        for label in attrs.get("tests", []):
          self.assertEqual(kinds[label.lstrip(":")], "py_test", label)

  def test_aggregate_library_covers_the_package(self):
    (aggregate,) = [a for k, a in self.rules if a.get("name") == "ssm_icl"]
    package = {a["name"] for k, a in self.rules if k == "py_library" and
               a.get("srcs", [""])[0].startswith("ssm_icl/")}
    self.assertSetEqual({d.lstrip(":") for d in aggregate["deps"]}, package)


def _write_tree(root, files):
  for path, text in files.items():
    full = os.path.join(root, path)
    os.makedirs(os.path.dirname(full), exist_ok=True)
    with open(full, "w", encoding="utf-8") as f:
      f.write(textwrap.dedent(text))


_MAIN = 'if __name__ == "__main__":\n  absltest.main()\n'
# A small package: p/__init__ re-exports its submodules, like ssm_icl's.
_TREE = {
    "ssm_icl/__init__.py": '"""Root."""\n',
    "ssm_icl/p/__init__.py": "from ssm_icl.p.a import f\nfrom . import b\n",
    "ssm_icl/p/a.py": "import os\nimport jax.numpy as jnp\n",
    "ssm_icl/p/b.py": "from .a import f\ndef g():\n  import numpy\n",
    "ssm_icl/q/__init__.py": "",
    "ssm_icl/q/c.py": "from ssm_icl import p\nimport ssm_icl.p.b\n",
    "ssm_icl/q/__main__.py": "from ssm_icl.q import c\n",
    "configs/base.py": "import ml_collections\n",
    "tests/__init__.py": "",
    "tests/conftest.py": "import jax\n",
    "tests/q/c_test.py": "from ssm_icl.q import c\n" + _MAIN,
    "tests/plain_test.py": (
        "import subprocess\nA = ['-m', 'ssm_icl.q', 'configs/base.py']\n"
        "B = 'testdata/x.json'\n" + _MAIN),
    "tests/testdata/x.json": "{}",
    "tests/lint_test.py": "import os\n" + _MAIN,
    "tests/pragma_test.py": ("# update_build: ignore-strings\n"
                             "A = ['ssm_icl.q', 'configs/base.py']\n" + _MAIN),
    "tests/slow_test.py": "import pytest\n@pytest.mark.slow\ndef t(): pass\n"
                          + _MAIN,
    "tests/tpu_test.py": "pytestmark = pytest.mark.tpu\n" + _MAIN,
}


class GeneratorTest(parameterized.TestCase):

  def _graph(self, extra=None, drop=()):
    root = self.create_tempdir().full_path
    files = {k: v for k, v in {**_TREE, **(extra or {})}.items()
             if k not in drop}
    _write_tree(root, files)
    return root, build_graph.build_graph(root)

  def _rule(self, text, name):
    (attrs,) = [a for _, a in _rules(text) if a.get("name") == name]
    return attrs

  @parameterized.parameters(
      ("ssm_icl/ops/scan.py", "ops_scan"),
      ("ssm_icl/ops/__init__.py", "ops"),
      ("ssm_icl/__init__.py", "ssm_icl_init"),
      ("ssm_icl/eval/__main__.py", "eval_main"),
      ("tests/ops/scan_test.py", "ops_scan_test"),
      ("tests/eval/main_test.py", "eval_main_test"),
      ("tests/ops/util.py", "tests_ops_util"),
      ("configs/base.py", "configs_base"),
      ("benchmarks/scan_bench.py", "benchmarks_scan_bench"),
  )
  def test_target_name(self, path, name):
    self.assertEqual(build_graph.target_name(path), name)

  def test_import_forms_resolve_to_targets(self):
    _, graph = self._graph()
    self.assertEmpty(graph.problems)
    # Relative imports and an import inside a function body.
    self.assertEqual(graph.deps["p_b"], ["p_a"])
    self.assertEqual(graph.third_party["p_b"], ["numpy"])
    # `from ssm_icl import p` is the package; `import ssm_icl.p.b` the module.
    self.assertEqual(graph.deps["q_c"], ["p", "p_b"])
    self.assertEqual(graph.deps["p"], ["p_a", "p_b"])
    # stdlib imports are not dependencies; third-party ones are by top name.
    self.assertEqual(graph.third_party["p_a"], ["jax"])

  def test_libraries_skip_own_ancestors_but_tests_list_them(self):
    _, graph = self._graph()
    text = update_build.render(graph)
    # q/__main__ imports its own package q: not a library dep (cycle), but
    # the binary that runs it lists q and the root __init__ as well.
    self.assertEqual(graph.deps["q_main"], ["q_c"])
    self.assertEqual(self._rule(text, "q_main_bin")["deps"],
                     [":p", ":q", ":q_c", ":q_main", ":ssm_icl_init"])
    test = self._rule(text, "q_c_test")
    self.assertEqual(test["deps"], [":p", ":q", ":q_c", ":ssm_icl_init"])
    self.assertEqual(test["main"], "tests/q/c_test.py")

  def test_strings_add_module_config_and_testdata_deps(self):
    _, graph = self._graph()
    attrs = self._rule(update_build.render(graph), "plain_test")
    # "-m ssm_icl.q" runs q/__main__.py; a configs/ path needs the configs.
    self.assertContainsSubset([":q", ":q_main", ":configs"], attrs["deps"])
    self.assertEqual(attrs["data"], "glob(['tests/testdata/**'])")
    self.assertNotIn("tags", attrs)

  def test_size_env_and_tags(self):
    _, graph = self._graph()
    text = update_build.render(graph)
    jax_test = self._rule(text, "q_c_test")
    self.assertEqual(jax_test["size"], "medium")  # jax reached transitively
    self.assertEqual(jax_test["env"]["XLA_FLAGS"],
                     "--xla_force_host_platform_device_count=8")
    # plain_test runs `-m ssm_icl.q`, which imports jax.
    self.assertEqual(self._rule(text, "plain_test")["size"], "medium")
    # With the pragma, strings add nothing.
    self.assertNotIn("deps", self._rule(text, "pragma_test"))
    lint = self._rule(text, "lint_test")
    self.assertEqual(lint["size"], "small")
    self.assertNotIn("env", lint)
    self.assertEqual(self._rule(text, "slow_test")["size"], "large")
    self.assertEqual(self._rule(text, "tpu_test")["tags"], ["manual", "tpu"])
    suites = {a["name"]: a.get("tests") for k, a in _rules(text)
              if k == "test_suite"}
    self.assertEqual(suites["q_tests"], [":q_c_test"])
    self.assertEqual(suites["root_tests"],
                     [":lint_test", ":plain_test", ":pragma_test", ":slow_test",
                      ":tpu_test"])
    self.assertIsNone(suites["all_tests"])

  def test_render_is_deterministic(self):
    _, graph = self._graph()
    _, graph2 = self._graph()
    self.assertEqual(update_build.render(graph), update_build.render(graph2))

  @parameterized.named_parameters(
      ("cycle", {"ssm_icl/p/a.py": "from ssm_icl.q import c\n"},
       "dependency cycle: p -> p_a -> q_c -> p"),
      ("unknown_module", {"ssm_icl/q/d.py": "import ssm_icl.nope\n"},
       "ssm_icl/q/d.py imports ssm_icl.nope, which is not a module"),
      ("unknown_name", {"ssm_icl/q/d.py": "from tests.q import x\n"},
       "ssm_icl/q/d.py imports tests.q.x, which is not a module"),
      ("collision", {"ssm_icl/q/main.py": ""},
       "ssm_icl/q/main.py: target name 'q_main' is already taken"),
      ("no_main_block", {"tests/q/d_test.py": "import os\n"},
       "tests/q/d_test.py has no `if __name__ == \"__main__\""),
      ("syntax_error", {"ssm_icl/q/d.py": "def (:\n"},
       "ssm_icl/q/d.py:1: cannot parse"),
  )
  def test_problems_are_reported(self, extra, message):
    _, graph = self._graph(extra)
    self.assertTrue(any(p.startswith(message) for p in graph.problems),
                    graph.problems)

  def test_check_lists_missing_and_stale_targets(self):
    root, _ = self._graph()
    self.assertEqual(update_build.check(root), ["BUILD does not exist"])
    with contextlib.redirect_stdout(io.StringIO()):
      self.assertEqual(update_build.main(["--root", root]), 0)
    self.assertEqual(update_build.check(root), [])
    _write_tree(root, {"tests/q/e_test.py": _MAIN})
    os.remove(os.path.join(root, "tests", "slow_test.py"))
    self.assertEqual(update_build.check(root),
                     ["missing target: q_e_test", "stale target: slow_test"])
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr):
      self.assertEqual(update_build.main(["--root", root, "--check"]), 1)
    self.assertIn("missing target: q_e_test", stderr.getvalue())

  def test_check_reports_changed_deps(self):
    root, _ = self._graph()
    with contextlib.redirect_stdout(io.StringIO()):
      update_build.main(["--root", root])
    _write_tree(root, {"ssm_icl/p/a.py": "import ssm_icl.q\n"})
    (reason,) = update_build.check(root)
    self.assertStartsWith(reason, "targets differ from the sources:")
    self.assertIn('+    deps = [":q"],', reason)


if __name__ == "__main__":
  absltest.main()
