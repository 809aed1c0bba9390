"""Workdir paths on a local disk and on GCS (the local emulator)."""

import os

from absl.testing import absltest
from absl.testing import parameterized
from etils import epath

from ssm_icl import errors
from ssm_icl import paths
from tests import gcs_emulator


def setUpModule():
  gcs_emulator.emulator()


class WorkdirPathTest(absltest.TestCase):

  def test_local_paths_become_absolute_and_urls_stay(self):
    got = paths.workdir_path("some/run")
    self.assertIsInstance(got, epath.Path)
    self.assertEqual(os.fspath(got), os.path.join(os.getcwd(), "some/run"))
    self.assertEqual(os.fspath(paths.workdir_path("gs://bkt/a/b")),
                     "gs://bkt/a/b")
    self.assertTrue(paths.is_object_store("gs://bkt/a"))
    self.assertFalse(paths.is_object_store(got))
    self.assertEqual(paths.bucket_of("gs://bkt/a/b"), "bkt")

  def test_bad_workdirs_are_user_errors_naming_them(self):
    for bad, message in (
        ("s3://bkt/run", r"--workdir='s3://bkt/run': unsupported scheme 's3'"),
        ("gs:///run", r"--workdir='gs:///run' names no bucket"),
        ("", r"--workdir is empty")):
      with self.assertRaisesRegex(errors.UserError, message):
        paths.workdir_path(bad, name="--workdir")


class CheckWritableTest(absltest.TestCase):

  def test_local_directory_is_created_and_left_clean(self):
    workdir = os.path.join(self.create_tempdir().full_path, "a", "run")
    self.assertEqual(os.fspath(paths.check_writable(workdir)), workdir)
    self.assertEqual(os.listdir(workdir), [])

  def test_local_file_in_the_way(self):
    blocker = self.create_tempfile("a_file").full_path
    with self.assertRaisesRegex(errors.UserError,
                                r"workdir='.*a_file/run' is not writable"):
      paths.check_writable(os.path.join(blocker, "run"))

  def test_bucket_is_checked_and_never_created(self):
    bucket = gcs_emulator.new_bucket("writable")
    workdir = paths.check_writable(f"{bucket}/run")
    self.assertEqual(list(workdir.parent.iterdir()), [])  # probe removed
    with self.assertRaisesRegex(
        errors.UserError, r"workdir='gs://no-such-bucket/run' is not "
        r"writable \(FileNotFoundError: bucket 'gs://no-such-bucket' does "
        "not exist"):
      paths.check_writable("gs://no-such-bucket/run")
    self.assertNotIn("no-such-bucket",
                     gcs_emulator.emulator().bucket_names())


class WriteTest(parameterized.TestCase):

  def _dir(self, kind):
    if kind == "local":
      return epath.Path(self.create_tempdir().full_path)
    return epath.Path(gcs_emulator.new_bucket("write")) / "run"

  @parameterized.parameters("local", "gcs")
  def test_write_create_and_append(self, kind):
    root = self._dir(kind)
    path = root / "sub" / "f.json"
    paths.write_text(path, "one")
    paths.write_text(path, "two")  # replaces
    self.assertEqual(path.read_text(), "two")
    self.assertEqual([p.name for p in path.parent.iterdir()], ["f.json"])

    marker = root / "DONE.json"
    self.assertTrue(paths.create_text(marker, "first"))
    self.assertFalse(paths.create_text(marker, "second"))
    self.assertEqual(marker.read_text(), "first")

    log = root / "sessions.jsonl"
    paths.append_text(log, "a\n")
    paths.append_text(log, "b\n")
    self.assertEqual(log.read_text(), "a\nb\n")

  def test_ensure_dir_makes_nothing_on_gcs(self):
    # gcsfs would create a missing bucket for a "directory" in it.
    paths.ensure_dir("gs://never-made/run")
    self.assertNotIn("never-made", gcs_emulator.emulator().bucket_names())


if __name__ == "__main__":
  absltest.main()
