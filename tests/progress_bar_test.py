"""Tests for ssm_icl/progress_bar.py: lines on files, redraws on terminals."""

import io

from absl.testing import absltest

from ssm_icl import progress_bar


class _Terminal(io.StringIO):

  def isatty(self):
    return True


def _run(stream, n=5, **kwargs):
  bar = progress_bar.progress_bar(n, "eval task", stream=stream,
                                  mininterval=0, leave=False, **kwargs)
  for i in range(n):
    bar.set_postfix_str(f"model {i}")
    bar.update()
  bar.close()
  return stream.getvalue()


class ProgressBarTest(absltest.TestCase):

  def test_a_file_gets_one_line_per_update_and_no_carriage_return(self):
    out = _run(io.StringIO())
    self.assertNotIn("\r", out)
    self.assertNotIn("\x1b", out)  # no cursor movement either
    lines = out.splitlines()
    self.assertGreaterEqual(len(lines), 5)
    self.assertTrue(all(line.startswith("eval task:") for line in lines))
    self.assertIn("5/5", lines[-1])  # leave=False is overridden on files
    self.assertTrue(out.endswith("\n"))

  def test_a_file_gets_no_line_per_postfix_within_the_interval(self):
    # The eval loop sets a postfix per predictor: with the default
    # interval, 100 updates must not write 100 lines.
    stream = io.StringIO()
    bar = progress_bar.progress_bar(100, "eval task", stream=stream)
    for i in range(100):
      bar.set_postfix_str(f"model {i}")
      bar.set_description("eval task")
      bar.set_postfix(model=i)
      bar.update()
    bar.close()
    lines = stream.getvalue().splitlines()
    self.assertLessEqual(len(lines), 3)
    self.assertIn("100/100", lines[-1])

  def test_a_terminal_gets_the_usual_in_place_bar(self):
    out = _run(_Terminal())
    self.assertIn("\r", out)

  def test_disabled_bar_writes_nothing(self):
    self.assertEqual(_run(io.StringIO(), enabled=False), "")

  def test_line_writer_splits_redraws(self):
    stream = io.StringIO()
    writer = progress_bar.LineWriter(stream)
    writer.write("\ra 1/3   ")
    writer.write("\ra 2/3\r   \r")
    writer.write("\n")
    self.assertEqual(stream.getvalue(), "a 1/3\na 2/3\n")

  def test_is_terminal(self):
    self.assertFalse(progress_bar.is_terminal(io.StringIO()))
    self.assertTrue(progress_bar.is_terminal(_Terminal()))
    self.assertFalse(progress_bar.is_terminal(object()))


if __name__ == "__main__":
  absltest.main()
