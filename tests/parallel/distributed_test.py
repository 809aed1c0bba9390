"""Tests for the guards of ssm_icl/parallel/distributed.py (no real init)."""

from absl.testing import absltest
from absl.testing import parameterized

from ssm_icl.parallel import distributed


class MaybeInitializeTest(parameterized.TestCase):

  def test_noop_without_request(self):
    self.assertFalse(distributed.maybe_initialize(environ={}))
    self.assertFalse(distributed.maybe_initialize(
        environ={distributed.ENV_VAR: "0"}))

  def test_incomplete_triple(self):
    with self.assertRaisesRegex(
        ValueError, r"together; missing \['num_processes', 'process_id'\]"):
      distributed.maybe_initialize("127.0.0.1:1234", environ={})

  @parameterized.parameters((2, 2), (2, -1), (0, 0))
  def test_process_id_out_of_range(self, num, pid):
    with self.assertRaisesRegex(ValueError, rf"process_id={pid} must be"):
      distributed.maybe_initialize("127.0.0.1:1234", num, pid, environ={})

  def test_main_process(self):
    self.assertTrue(distributed.is_main_process())


if __name__ == "__main__":
  absltest.main()
