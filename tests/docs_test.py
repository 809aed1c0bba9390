"""Every reference to a page of docs/ resolves: the file and the section.

Docstrings, comments and pages cite the documentation as
`docs/PAPER.md §3.1` (several sections as `§3.5, §3.6` or `§3.1-§3.9`).
This test reads the source tree and fails on a cited page that does not
exist, a cited section number that the page has no heading for, a `§` that
names no page (outside docs/, where a bare `§N` means the page itself), and
any other file named like these pages (the notes outside the repository
that they replaced). Plain text only: it imports nothing from the package.
"""

import os
import re

from absl.testing import absltest

# update_build: ignore-strings (the strings below are paths read as text)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Where references may live (what BUILD gives this test as data).
SCAN_DIRS = ("ssm_icl", "configs", "tests", "benchmarks", "tools", "launch",
             "docs")
SCAN_FILES = ("README.md",)
EXTENSIONS = (".py", ".md", ".sh")

# "docs/PAPER.md §3.1, §3.2", "PAPER.md §6" (inside docs/) or a bare "§2.4".
_SECTION = r"§\d+(?:\.\d+)*"
_CITATION = re.compile(
    r"(?:(?P<page>(?:docs/)?[A-Z][A-Z0-9_]*\.md)\s+)?"
    rf"(?P<refs>{_SECTION}(?:(?:\s*,\s*|\s+and\s+|\s*-\s*|\s+to\s+)"
    rf"{_SECTION})*)")
# Any mention of a docs page, cited with a section or not.
_PAGE = re.compile(r"(?<![\w/])docs/([A-Za-z0-9_]+\.md)")
# Headings with a section number: "## 2. Setup", "### 2.1 Prompts".
_HEADING = re.compile(r"^#{1,6}\s+(\d+(?:\.\d+)*)\.?\s", re.MULTILINE)
# Notes outside the repository that these pages replaced.
_RETIRED = re.compile(r"[\w./-]*\b(?:paper|design)\.md", re.IGNORECASE)


def _source_files():
  """Yields (relative path, text) of every file that may hold a reference."""
  paths = list(SCAN_FILES)
  for top in SCAN_DIRS:
    for dirpath, dirnames, filenames in os.walk(os.path.join(ROOT, top)):
      dirnames[:] = [d for d in dirnames if not d.startswith((".", "_"))]
      for name in filenames:
        if name.endswith(EXTENSIONS):
          paths.append(os.path.relpath(os.path.join(dirpath, name), ROOT))
  for path in sorted(paths):
    if path == os.path.relpath(os.path.abspath(__file__), ROOT):
      continue  # This file's patterns are not references.
    with open(os.path.join(ROOT, path), encoding="utf-8") as f:
      yield path.replace(os.sep, "/"), f.read()


def _sections(page: str) -> set[str]:
  """The section numbers that docs/<page> has headings for."""
  with open(os.path.join(ROOT, "docs", page), encoding="utf-8") as f:
    return set(_HEADING.findall(f.read()))


def _line(text: str, offset: int) -> int:
  return text.count("\n", 0, offset) + 1


def check_references(files) -> tuple[list[str], int]:
  """(problems found, number of section references checked)."""
  problems, checked, sections = [], 0, {}
  for path, text in files:
    in_docs = path.startswith("docs/")
    for match in _PAGE.finditer(text):
      if not os.path.exists(os.path.join(ROOT, "docs", match.group(1))):
        problems.append(f"{path}:{_line(text, match.start())}: "
                        f"{match.group(0)} does not exist")
    for match in _CITATION.finditer(text):
      where = f"{path}:{_line(text, match.start())}"
      page = match.group("page")
      if page is None:
        if not in_docs:
          problems.append(f"{where}: {match.group('refs')} names no page "
                          "(write docs/<PAGE>.md §N)")
          continue
        page = os.path.basename(path)
      page = page.removeprefix("docs/")
      if not os.path.exists(os.path.join(ROOT, "docs", page)):
        problems.append(f"{where}: docs/{page} does not exist")
        continue
      if page not in sections:
        sections[page] = _sections(page)
      for number in re.findall(r"§(\d+(?:\.\d+)*)", match.group("refs")):
        checked += 1
        if number not in sections[page]:
          problems.append(f"{where}: docs/{page} has no section {number}")
    for match in _RETIRED.finditer(text):
      ref = match.group(0)
      allowed = ({"docs/PAPER.md", "docs/DESIGN.md", "PAPER.md", "DESIGN.md"}
                 if in_docs else {"docs/PAPER.md", "docs/DESIGN.md"})
      if ref not in allowed:
        problems.append(f"{path}:{_line(text, match.start())}: {ref!r} is "
                        "not a page of this repository; cite docs/PAPER.md "
                        "or docs/DESIGN.md")
  return list(dict.fromkeys(problems)), checked  # one line per problem


class DocsReferencesTest(absltest.TestCase):

  def test_every_reference_resolves(self):
    problems, checked = check_references(_source_files())
    self.assertEqual(problems, [], "\n".join(problems))
    # The package cites the paper's setup in dozens of places; far fewer
    # means the scan missed the tree (e.g. files absent from the runfiles).
    self.assertGreater(checked, 40)

  def test_detects_bad_references(self):
    files = [
        ("ssm_icl/x.py", "See docs/PAPER.md §3.1, §99.1 and §2."),
        ("ssm_icl/y.py", "A bare §2.4 and docs/NOPE.md §1."),
        ("configs/z.py", "From Paper.md section 2.1 and Design.md."),
        ("docs/PAPER.md", "Itself: §42; DESIGN.md §3.1 is fine."),
    ]
    problems, _ = check_references(files)
    text = "\n".join(problems)
    self.assertIn("ssm_icl/x.py:1: docs/PAPER.md has no section 99.1", text)
    self.assertNotIn("no section 3.1", text)
    self.assertNotIn("no section 2\n", text + "\n")
    self.assertIn("ssm_icl/y.py:1: §2.4 names no page", text)
    self.assertIn("docs/NOPE.md does not exist", text)
    self.assertIn("configs/z.py:1: 'Paper.md' is not a page", text)
    self.assertIn("configs/z.py:1: 'Design.md' is not a page", text)
    self.assertIn("docs/PAPER.md:1: docs/PAPER.md has no section 42", text)
    self.assertEqual(len(problems), 6, text)


if __name__ == "__main__":
  absltest.main()
