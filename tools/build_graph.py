"""Scans the source tree and resolves its internal import graph.

Used by tools/update_build.py, which writes the Bazel BUILD file from it.
Every Python file under ROOTS becomes a `Source` with a Bazel target name; its
`import`/`from ... import` statements (anywhere in the file) resolve to other
targets, and string constants that name a module (`"ssm_icl.main"` for
`python -m`) or a file under configs/ add deps too. Third-party imports are
recorded by top-level name.

Python runs every ancestor package's `__init__.py` before a module, and those
`__init__` files re-export their submodules. A library therefore does not
depend on its own ancestor packages (that would be a cycle); instead
`Graph.runtime_deps` gives tests and binaries the ancestor `__init__` targets
of everything they run.
"""

import ast
import dataclasses
import os
import re
import sys

ROOTS = ("ssm_icl", "configs", "benchmarks", "tools", "tests")
SKIPPED_FILES = ("conftest.py",)
# A file with this comment gets no deps or data from its string constants
# (e.g. a test whose strings are source text of synthetic trees).
IGNORE_STRINGS_PRAGMA = "# update_build: ignore-strings"
# update_build: ignore-strings (this file's strings name targets and roots)
# "configs", "configs/x.py" or "configs/x.py:arg": config files read by path.
_CONFIG_PATH_RE = re.compile(r"configs(/[\w.-]+)*(:\S*)?")


@dataclasses.dataclass
class Source:
  """One Python file of the tree and what the generator learned from it."""
  path: str                 # relative, with "/" separators
  module: str               # dotted module name ("ssm_icl.ops" for __init__)
  name: str = ""            # Bazel target name
  is_test: bool = False
  has_main: bool = False
  imports: list = dataclasses.field(default_factory=list)  # (module, names)
  strings: list = dataclasses.field(default_factory=list)
  markers: frozenset = frozenset()
  error: str = ""


def target_name(path):
  """Bazel target name of a source path: ssm_icl/ops/scan.py -> ops_scan."""
  parts = path[:-len(".py")].split("/")
  if parts[-1] == "__main__":
    parts[-1] = "main"
  elif parts[-1] == "__init__":
    parts = parts[:-1]
    if len(parts) == 1:
      return parts[0] + "_init"
  if parts[0] == "ssm_icl" or (parts[0] == "tests" and
                               path.endswith("_test.py")):
    parts = parts[1:]
  return "_".join(parts)


def _module_name(path):
  parts = path[:-len(".py")].split("/")
  if parts[-1] == "__init__":
    parts = parts[:-1]
  return ".".join(parts)


def _has_main_block(tree):
  for node in tree.body:
    if (isinstance(node, ast.If) and isinstance(node.test, ast.Compare) and
        isinstance(node.test.left, ast.Name) and
        node.test.left.id == "__name__"):
      return True
  return False


def _parse(src, text):
  """Fills `src` with the imports, strings, markers and main block of text."""
  try:
    tree = ast.parse(text, filename=src.path)
  except SyntaxError as e:
    src.error = f"{src.path}:{e.lineno}: cannot parse: {e.msg}"
    return
  package = src.module if src.path.endswith("__init__.py") else (
      src.module.rpartition(".")[0])
  markers = set()
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      src.imports.extend((alias.name, ()) for alias in node.names)
    elif isinstance(node, ast.ImportFrom):
      base = node.module or ""
      if node.level:  # relative: walk up from this file's package
        anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
        base = ".".join(anchor + ([base] if base else []))
      src.imports.append((base, tuple(a.name for a in node.names)))
    elif isinstance(node, ast.Attribute) and (
        isinstance(node.value, ast.Attribute) and node.value.attr == "mark"
        and isinstance(node.value.value, ast.Name) and
        node.value.value.id == "pytest"):
      markers.add(node.attr)  # pytest.mark.<name>
    elif isinstance(node, ast.Constant) and isinstance(node.value, str):
      if len(node.value) < 200 and IGNORE_STRINGS_PRAGMA not in text:
        src.strings.append(node.value)
  # `python -m package` runs __main__.py whether or not it has the guard.
  src.has_main = src.path.endswith("__main__.py") or _has_main_block(tree)
  src.markers = frozenset(markers)


def scan_tree(root):
  """Returns {module name: Source} for every Python file under ROOTS."""
  sources = {}
  for top in ROOTS:
    for dirpath, dirnames, filenames in os.walk(os.path.join(root, top)):
      dirnames[:] = sorted(d for d in dirnames
                           if d != "__pycache__" and not d.startswith("."))
      for filename in sorted(filenames):
        if not filename.endswith(".py") or filename in SKIPPED_FILES:
          continue
        path = os.path.relpath(os.path.join(dirpath, filename), root)
        path = path.replace(os.sep, "/")
        is_test = top == "tests" and filename.endswith("_test.py")
        # tests/ package markers are empty; Bazel creates them in runfiles.
        if top == "tests" and filename == "__init__.py":
          continue
        src = Source(path=path, module=_module_name(path),
                     name=target_name(path), is_test=is_test)
        with open(os.path.join(root, path), encoding="utf-8") as f:
          _parse(src, f.read())
        sources[src.module] = src
  return sources


class Graph:
  """Internal dependency graph of the scanned sources."""

  def __init__(self, root, sources):
    self.root = root
    self.sources = sources
    self.by_name = {s.name: s for s in sources.values()}
    self.problems = []
    self.configs = sorted(s.name for s in sources.values()
                          if s.path.startswith("configs/"))
    self.deps = {}        # target -> internal target deps (sorted)
    self.third_party = {}  # target -> third-party top-level imports
    for src in sorted(sources.values(), key=lambda s: s.path):
      self._resolve(src)
    if self.configs:  # the `configs` aggregate target
      self.deps["configs"] = list(self.configs)
      self.third_party["configs"] = []

  def _lookup(self, module):
    src = self.sources.get(module)
    return src.name if src else None

  def _resolve(self, src):
    deps, third = set(), set()
    for base, names in src.imports:
      top = base.split(".")[0]
      if top not in ROOTS:
        if top and top not in sys.stdlib_module_names and top != "__future__":
          third.add(top)
        continue
      found = [self._lookup(f"{base}.{n}") or self._lookup(base)
               for n in names] if names else [self._lookup(base)]
      if None in found:
        self.problems.append(
            f"{src.path} imports {base}"
            f"{'.' + ','.join(names) if names else ''}, which is not a module "
            "of this tree")
      deps.update(f for f in found if f)
    if not src.path.startswith("configs/"):
      for value in src.strings:
        deps.update(self._string_deps(value))
    deps.discard(src.name)
    # A package's own ancestors are provided by its executables (see module
    # docstring); depending on them here would close a cycle.
    deps.difference_update(self.ancestor_inits(src))
    self.deps[src.name] = sorted(deps)
    self.third_party[src.name] = sorted(third)

  def _string_deps(self, value):
    """Deps implied by a string constant: `-m` module names, config paths."""
    found = set()
    if "*" in value:  # a glob pattern, not a reference to one file
      return found
    if "." in value and value in self.sources:
      found.add(self.sources[value].name)
      main = self.sources.get(value + ".__main__")
      if main:
        found.add(main.name)
    if _CONFIG_PATH_RE.fullmatch(value) and self.configs:
      found.add("configs")
    return found

  def ancestor_inits(self, src):
    """Targets of the __init__.py files Python runs before `src`."""
    parts = src.module.split(".")
    stop = len(parts) if src.path.endswith("__init__.py") else len(parts) - 1
    names = (self._lookup(".".join(parts[:i])) for i in range(1, stop + 1))
    return {n for n in names if n and n != src.name}

  def runtime_deps(self, src):
    """Returns (deps to list, closure) of an executable source.

    The listed deps are the direct deps plus every ancestor __init__ target of
    the modules it runs; the closure is every target it runs.
    """
    direct = set(self.deps[src.name])
    todo, seen = list(direct | self.ancestor_inits(src)), set()
    while todo:
      name = todo.pop()
      if name in seen:
        continue
      seen.add(name)
      todo.extend(self.deps.get(name, ()))
      if name in self.by_name:
        todo.extend(self.ancestor_inits(self.by_name[name]))
    inits = {n for n in seen if n in self.by_name and
             self.by_name[n].path.endswith("__init__.py")}
    return sorted((direct | inits) - {src.name}), seen

  def find_cycles(self):
    """Returns library dependency cycles, each as a list of target names."""
    cycles, state = [], {}

    def visit(name, stack):
      state[name] = 1
      stack.append(name)
      for dep in self.deps.get(name, ()):
        if state.get(dep) == 1:
          cycles.append(stack[stack.index(dep):] + [dep])
        elif dep not in state:
          visit(dep, stack)
      stack.pop()
      state[name] = 2

    for name in sorted(self.deps):
      if name not in state:
        visit(name, [])
    return cycles


def test_suites(tests):
  """{suite name: test targets}: one suite per tests/ subdirectory."""
  suites = {}
  for src in tests:
    parts = src.path.split("/")
    suite = f"{parts[1]}_tests" if len(parts) > 2 else "root_tests"
    suites.setdefault(suite, []).append(src.name)
  return {k: sorted(v) for k, v in suites.items()}


def build_graph(root):
  """Scans `root` and returns its Graph, with every problem found."""
  sources = scan_tree(root)
  graph = Graph(root, sources)
  seen = {"ssm_icl", "configs", "all_tests"} | set(
      test_suites([s for s in sources.values() if s.is_test]))
  for src in sorted(sources.values(), key=lambda s: s.path):
    if src.error:
      graph.problems.append(src.error)
    names = [src.name] + ([src.name + "_bin"] if src.has_main else [])
    for name in names:
      if name in seen:
        graph.problems.append(
            f"{src.path}: target name {name!r} is already taken; rename the "
            "file")
      seen.add(name)
    if src.is_test and not src.has_main and not src.error:
      graph.problems.append(
          f"{src.path} has no `if __name__ == \"__main__\": absltest.main()` "
          "block, so its Bazel py_test would run no tests")
  for cycle in graph.find_cycles():
    graph.problems.append("dependency cycle: " + " -> ".join(cycle))
  return graph
