"""Runs every ```python block of README.md, in order, as written.

Each block runs in a fresh namespace, so a block that stops working (an API
change, a wrong shape in an example) fails here. Needs the `interop` extra:
the pretrained-Mamba example builds a Hugging Face model.
"""

import os
import re

from absl.testing import absltest
from absl.testing import parameterized
import pytest

pytestmark = pytest.mark.interop

_README = os.path.join(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))), "README.md")
_BLOCK = re.compile(r"^```python\n(.*?)^```", re.DOTALL | re.MULTILINE)


def _blocks() -> list[str]:
  with open(_README, encoding="utf-8") as f:
    return _BLOCK.findall(f.read())


class ReadmeTest(parameterized.TestCase):

  def test_has_the_examples(self):
    text = "".join(_blocks())
    for needle in ("MambaMixer", "init_cache", "load_state_dict",
                   "greedy_generate"):
      self.assertIn(needle, text)

  @parameterized.parameters(*range(len(_blocks())))
  def test_block_runs(self, index):
    code = _blocks()[index]
    exec(compile(code, f"README.md python block {index}", "exec"), {})  # pylint: disable=exec-used


if __name__ == "__main__":
  absltest.main()
