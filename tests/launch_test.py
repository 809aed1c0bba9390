"""Offline tests of the shell scripts: launch/*.sh and .ci/run.

Nothing here touches the network or a real virtualenv. tpu.sh and gpu.sh are
checked through --dry-run; test.sh, local.sh and .ci/run run against a fake
virtualenv whose `python` records its arguments, answers `-m pip` by writing
package metadata, and hands every other snippet to the real interpreter.
"""

import glob
import os
import re
import shlex
import shutil
import stat
import subprocess
import sys
import textwrap

from absl.testing import absltest
from absl.testing import parameterized

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPTS = sorted(glob.glob(os.path.join(ROOT, "launch", "*.sh")) +
                 [os.path.join(ROOT, ".ci", "run")])
# The pytest-xdist arguments launch/test.sh puts before the caller's.
XDIST = "-n auto --dist loadfile --no-loadscope-reorder"
# Variables of the scripts that must not leak in from the caller.
_CLEARED = ("TPU_NAME", "ZONE", "PROJECT", "ACCEL", "VERSION", "QR_ID",
            "REPO_DIR", "DRY_RUN", "NUM_GPUS", "LOG_DIR", "WORKDIR", "CI",
            "SSM_ICL_VENV", "SSM_ICL_PYTHON", "SSM_ICL_STACK",
            "SSM_ICL_PYTHON312",
            # Bazel puts site-packages here; the fake venv must not see it.
            "PYTHONPATH")

# Stands in for <venv>/bin/python (and for python3.X creating the venv): it
# claims the version its name says (python3.12 -> 3.12), which a venv it makes
# inherits.
_FAKE_PYTHON = r"""#!/usr/bin/env bash
printf '%s\n' "$*" >>"$FAKE_LOG"
site="$(dirname "$(dirname "$0")")/site"
version="$(cat "$site/../fake-version" 2>/dev/null || basename "$0")"
version="${version#python}"
[[ "$*" != *sys.version_info* ]] || { echo "$version"; exit 0; }
[[ "$1" != --version ]] || { echo "Python $version.0"; exit 0; }
add_dist() {
  mkdir -p "$site/$1-$2.dist-info"
  printf 'Metadata-Version: 2.1\nName: %s\nVersion: %s\n' "$1" "$2" \
    >"$site/$1-$2.dist-info/METADATA"
}
case "$1 ${2:-}" in
  "-m venv")
    mkdir -p "$3/bin" && cp "$0" "$3/bin/python"
    echo "$version" >"$3/fake-version"
    exit 0 ;;
  "-m pip")
    for arg in "$@"; do
      case "$arg" in
        torch==*) add_dist torch "${arg#torch==}+cpu" ;;
        .|.\[*) add_dist ssm_icl "$(sed -n \
          's/^__version__ = "\(.*\)"/\1/p' ssm_icl/__init__.py)" ;;
      esac
    done
    exit 0 ;;
  "-m pytest") exit "${FAKE_PYTEST_STATUS:-0}" ;;
  "-m ssm_icl.main" | "-m ssm_icl.eval") exit "${FAKE_MAIN_STATUS:-0}" ;;
  "tools/update_build.py --check") exit 0 ;;
esac
# bazel_test.sh asks where site-packages is: answer for the real virtualenv
# (with -S, Python 3.11 reports the base installation instead).
[[ "$*" != *sysconfig* ]] || exec "$REAL_PYTHON" "$@"
PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}" exec "$REAL_PYTHON" -S "$@"
"""
_FAKE_BAZEL = """#!/usr/bin/env bash
printf 'bazel %s\\n' "$*" >>"$FAKE_LOG"
[[ "$1" != test ]] || exit "${FAKE_BAZEL_STATUS:-0}"
"""
_SECRETS = [
    (r"AIza[0-9A-Za-z_-]{35}", "Google API key"),
    (r"AKIA[0-9A-Z]{16}", "AWS access key"),
    (r"-----BEGIN [A-Z ]*PRIVATE KEY", "private key"),
    (r"ya29\.[0-9A-Za-z_-]+", "OAuth token"),
    (r"gs://[a-z0-9]", "bucket name"),
    (r"--project[= ][a-z][a-z0-9-]{4,}", "project id"),
    (r"(?i)(password|secret|token|api_key)\s*=", "credential variable"),
    (r"\.iam\.gserviceaccount\.com", "service account"),
]


def _write_executable(path, text):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "w", encoding="utf-8") as f:
    f.write(text)
  os.chmod(path, os.stat(path).st_mode | stat.S_IXUSR)


class ScriptTestCase(parameterized.TestCase):
  """Runs the scripts with a clean environment and a fake toolchain."""

  def setUp(self):
    super().setUp()
    self.tmp = self.create_tempdir().full_path
    self.log = os.path.join(self.tmp, "calls.log")
    self.fake_python = os.path.join(self.tmp, "python3.11")
    _write_executable(self.fake_python, _FAKE_PYTHON)
    self.fake_python312 = os.path.join(self.tmp, "python3.12")
    _write_executable(self.fake_python312, _FAKE_PYTHON)
    self.bin = os.path.join(self.tmp, "bin")
    _write_executable(os.path.join(self.bin, "bazel"), _FAKE_BAZEL)
    self.venv = os.path.join(self.tmp, "venv")
    self.env = {k: v for k, v in os.environ.items() if k not in _CLEARED}
    self.env.update(FAKE_LOG=self.log, REAL_PYTHON=sys.executable,
                    SSM_ICL_VENV=self.venv, SSM_ICL_PYTHON=self.fake_python,
                    PATH=self.bin + os.pathsep + os.environ.get("PATH", ""))

  def minimal_path(self):
    """A PATH with only bash and dirname: no gcloud, nvidia-smi, ..."""
    path = os.path.join(self.tmp, "minimal_bin")
    os.makedirs(path, exist_ok=True)
    for tool in ("bash", "dirname"):
      os.symlink(shutil.which(tool), os.path.join(path, tool))
    return path

  def run_script(self, script, *args, cwd=ROOT, **env):
    result = subprocess.run(
        ["bash", os.path.join(ROOT, script), *args], cwd=cwd,
        env={**self.env, **env}, capture_output=True, text=True, timeout=120,
        check=False)
    return result

  def calls(self):
    """The fake python/bazel invocations so far, then forgets them."""
    if not os.path.exists(self.log):
      return []
    with open(self.log, encoding="utf-8") as f:
      lines = f.read().splitlines()
    os.remove(self.log)
    # Keep the commands the scripts act on, not their `-c` probes.
    return [l for l in lines if re.match(r"(-m |bazel |tools/)", l)]


class SetupScriptsTest(ScriptTestCase):

  def test_test_sh_bootstraps_installs_in_order_and_runs_pytest(self):
    result = self.run_script("launch/test.sh", "tests/ops", "-x")
    self.assertEqual(result.returncode, 0, result.stderr)
    self.assertEqual(self.calls(), [
        f"-m venv {self.venv}",
        "-m pip install --quiet --disable-pip-version-check torch==2.13.0",
        "-m pip install --quiet --disable-pip-version-check -e .[test,interop]",
        f"-m pytest {XDIST} tests/ops -x",
    ])
    self.assertRegex(result.stdout, r"Tests passed in \d+s")
    # A second run reuses the venv and skips both installs.
    result = self.run_script("launch/test.sh")
    self.assertEqual(result.returncode, 0, result.stderr)
    self.assertEqual(self.calls(), [f"-m pytest {XDIST}"])
    self.assertIn("torch 2.13.0+cpu already installed", result.stdout)

  def test_test_sh_newest_stack_upgrades_and_deselects_interop(self):
    env = {"SSM_ICL_STACK": "newest", "SSM_ICL_PYTHON": self.fake_python312}
    upgrade = ("-m pip install --quiet --disable-pip-version-check --upgrade "
               "--upgrade-strategy eager -e .[test]")
    result = self.run_script("launch/test.sh", "tests/ops", **env)
    self.assertEqual(result.returncode, 0, result.stderr)
    self.assertEqual(self.calls(), [
        f"-m venv {self.venv}",
        upgrade,
        f"-m pytest -m not interop {XDIST} tests/ops",
    ])
    self.assertIn("==> Stack newest: Python 3.", result.stdout)
    self.assertIn(f"Running: python -m pytest -m 'not interop' {XDIST} "
                  "tests/ops", result.stdout)
    # A second run reuses the venv but asks the index for upgrades again.
    result = self.run_script("launch/test.sh", **env)
    self.assertEqual(result.returncode, 0, result.stderr)
    self.assertEqual(self.calls(), [upgrade,
                                    f"-m pytest -m not interop {XDIST}"])
    # The oldest stack refuses that 3.12 venv.
    result = self.run_script("launch/test.sh")
    self.assertEqual(result.returncode, 1)
    self.assertIn(f"{self.venv} uses Python 3.12.0, but ssm_icl's oldest "
                  "stack needs Python 3.11", result.stderr)

  def _fake_pyenv(self, versions):
    """A pyenv listing `versions`, and a python3.12 shim that does not run."""
    root = os.path.join(self.tmp, "pyenv")
    for version in versions:
      _write_executable(os.path.join(root, "versions", version, "bin",
                                     "python" + version[:4]), _FAKE_PYTHON)
    _write_executable(os.path.join(self.bin, "pyenv"), textwrap.dedent(f"""\
        #!/usr/bin/env bash
        case "$1" in
          root) echo {root} ;;
          versions) printf '%s\\n' system {' '.join(versions)} ;;
        esac
        """))
    _write_executable(os.path.join(self.bin, "python3.12"),
                      "#!/usr/bin/env bash\nexit 127\n")
    return root

  def test_newest_stack_finds_python312_under_pyenv(self):
    root = self._fake_pyenv(["3.11.7", "3.12.1", "3.12.10", "3.13.0"])
    result = self.run_script("launch/test.sh", SSM_ICL_STACK="newest",
                             SSM_ICL_PYTHON="")
    self.assertEqual(result.returncode, 0, result.stderr)
    python = os.path.join(root, "versions", "3.12.10", "bin", "python3.12")
    self.assertIn(f"Creating virtualenv {self.venv} ({python})", result.stdout)
    self.assertEqual(self.calls()[0], f"-m venv {self.venv}")

  def test_newest_stack_without_python312_is_a_clear_error(self):
    self._fake_pyenv(["3.11.7", "3.13.0"])
    result = self.run_script("launch/test.sh", SSM_ICL_STACK="newest",
                             SSM_ICL_PYTHON="")
    self.assertEqual(result.returncode, 1)
    self.assertIn("python3.12 (on PATH or under pyenv) not found: ssm_icl "
                  "needs Python 3.12 (newest stack)", result.stderr)
    self.assertFalse(os.path.exists(self.venv))

  def test_unknown_stack_is_a_clear_error(self):
    result = self.run_script("launch/test.sh", SSM_ICL_STACK="latest")
    self.assertEqual(result.returncode, 1)
    self.assertIn("SSM_ICL_STACK='latest' is not a stack: expected oldest or "
                  "newest", result.stderr)
    self.assertEqual(self.calls(), [])

  @parameterized.parameters(
      (5, 1, "pytest collected no tests (exit status 5)"),
      (1, 1, "tests failed (pytest exit status 1)"),
      (2, 2, "tests failed (pytest exit status 2)"),
  )
  def test_test_sh_pytest_failures(self, status, expected, message):
    result = self.run_script("launch/test.sh", FAKE_PYTEST_STATUS=str(status))
    self.assertEqual(result.returncode, expected)
    self.assertIn(message, result.stderr)

  def test_local_sh_installs_trains_then_evaluates(self):
    result = self.run_script("launch/local.sh", "--config.train.steps=3")
    self.assertEqual(result.returncode, 0, result.stderr)
    workdir = os.path.join(ROOT, "workdirs", "quickstart")
    self.assertEqual(self.calls(), [
        f"-m venv {self.venv}",
        "-m pip install --quiet --disable-pip-version-check -e .",
        f"-m ssm_icl.main --config=configs/quickstart.py --workdir={workdir} "
        "--config.train.steps=3",
        f"-m ssm_icl.eval --workdir={workdir}",
    ])
    # WORKDIR is taken relative to the caller's directory; no reinstall.
    result = self.run_script("launch/local.sh", cwd=self.tmp, WORKDIR="run1")
    self.assertEqual(result.returncode, 0, result.stderr)
    workdir = os.path.join(self.tmp, "run1")
    self.assertEqual(self.calls(), [
        f"-m ssm_icl.main --config=configs/quickstart.py --workdir={workdir}",
        f"-m ssm_icl.eval --workdir={workdir}",
    ])

  def test_local_sh_help_installs_nothing(self):
    result = self.run_script("launch/local.sh", "--help")
    self.assertEqual(result.returncode, 0, result.stderr)
    self.assertIn("bash launch/local.sh [extra ssm_icl.main flags...]",
                  result.stdout)
    self.assertEqual(self.calls(), [])
    self.assertFalse(os.path.exists(self.venv))

  def test_local_sh_stops_when_training_fails(self):
    result = self.run_script("launch/local.sh", FAKE_MAIN_STATUS="3")
    self.assertEqual(result.returncode, 3)
    self.assertNotIn("-m ssm_icl.eval", " ".join(self.calls()))

  @parameterized.parameters("launch/local.sh", "launch/test.sh")
  def test_missing_python311_is_a_clear_error(self, script):
    result = self.run_script(script, SSM_ICL_PYTHON="no-such-python3.11")
    self.assertEqual(result.returncode, 1)
    self.assertIn("no-such-python3.11 not found: ssm_icl needs Python 3.11",
                  result.stderr)
    self.assertFalse(os.path.exists(self.venv))

  def test_wrong_python_version_is_a_clear_error(self):
    _write_executable(self.fake_python, "#!/usr/bin/env bash\n"
                      "[[ $1 == --version ]] && echo 'Python 3.9.1'\nexit 1\n")
    result = self.run_script("launch/local.sh")
    self.assertEqual(result.returncode, 1)
    self.assertIn("is Python 3.9.1, not Python 3.11", result.stderr)

  def test_ci_runs_the_test_command_on_both_stacks_then_bazel(self):
    result = self.run_script(".ci/run", CI="true",
                             SSM_ICL_PYTHON312=self.fake_python312)
    self.assertEqual(result.returncode, 0, result.stderr)
    python = os.path.join(self.venv, "bin", "python")
    calls = self.calls()
    self.assertEqual(calls[-7:], [
        f"-m pytest {XDIST} --durations=20",
        f"-m venv {self.venv}312",
        "-m pip install --quiet --disable-pip-version-check --upgrade "
        "--upgrade-strategy eager -e .[test]",
        f"-m pytest -m not interop {XDIST} --durations=20",
        "tools/update_build.py --check",
        "bazel test --incompatible_use_python_toolchains=false "
        f"--python_path={python}-bazel --curses=no --color=no //:ops_tests",
        "bazel shutdown",
    ])
    self.assertIn("CI passed", result.stdout)
    # Bazel's interpreter sees site-packages but not the editable install's
    # import hook, so a target cannot import modules it does not depend on.
    probe = subprocess.run(
        [python + "-bazel", "-c", "import absl, importlib.util, sys; "
         "print(sys.flags.no_site, importlib.util.find_spec('ssm_icl'))"],
        cwd=self.tmp, env={**self.env, "PYTHONPATH": ""}, capture_output=True,
        text=True, timeout=60, check=False)
    self.assertEqual(probe.stdout, "1 None\n", probe.stderr)

  @parameterized.named_parameters(
      ("pytest", {"FAKE_PYTEST_STATUS": "1"}, "[pytest] failed"),
      ("bazel", {"FAKE_BAZEL_STATUS": "3"}, "[bazel] failed"),
      ("no_python312", {"SSM_ICL_PYTHON312": "no-such-python3.12"},
       "[pytest-newest] failed"),
  )
  def test_ci_fails_when_a_step_fails(self, env, message):
    env = {"SSM_ICL_PYTHON312": self.fake_python312, **env}
    result = self.run_script(".ci/run", CI="true", **env)
    self.assertEqual(result.returncode, 1)
    self.assertIn(message, result.stderr)
    self.assertNotIn("CI passed", result.stdout)
    if "FAKE_PYTEST_STATUS" in env:
      self.assertNotIn("bazel test", " ".join(self.calls()))


class TpuScriptTest(ScriptTestCase):

  def tpu(self, *args, **env):
    env = {"TPU_NAME": "t1", "ZONE": "zone-a", **env}
    result = self.run_script("launch/tpu.sh", "--dry-run", *args, **env)
    self.assertEqual(result.returncode, 0, result.stderr)
    return [shlex.split(l) for l in result.stdout.splitlines()
            if not l.startswith("==>")]

  def test_create(self):
    self.assertEqual(self.tpu("create"), [[
        "gcloud", "compute", "tpus", "tpu-vm", "create", "t1", "--zone=zone-a",
        "--accelerator-type=v4-32", "--version=tpu-ubuntu2204-base"]])
    self.assertEqual(self.tpu("create", "--queued", "--spot",
                              ACCEL="v5p-16", PROJECT="proj-a"), [[
        "gcloud", "compute", "tpus", "queued-resources", "create", "t1-qr",
        "--node-id=t1", "--zone=zone-a", "--accelerator-type=v5p-16",
        "--runtime-version=tpu-ubuntu2204-base", "--spot",
        "--project=proj-a"]])

  @parameterized.parameters(
      (["delete"], "tpu-vm delete t1 --zone=zone-a --quiet"),
      (["delete", "--queued"],
       "queued-resources delete t1-qr --zone=zone-a --force --quiet"),
      (["status"], "tpu-vm describe t1 --zone=zone-a"),
      (["copy"], "tpu-vm scp --recurse <staging_dir>/ssm_icl t1: "
       "--zone=zone-a --worker=all"),
  )
  def test_vm_commands(self, args, expected):
    (cmd,) = self.tpu(*args)
    self.assertEqual(cmd, ["gcloud", "compute", "tpus"] + expected.split())

  def _remote(self, *args):
    (cmd,) = self.tpu(*args)
    self.assertEqual(cmd[:6], ["gcloud", "compute", "tpus", "tpu-vm", "ssh",
                               "t1"])
    self.assertIn("--zone=zone-a", cmd)
    worker = [a for a in cmd if a.startswith("--worker=")]
    (command,) = [a[len("--command="):] for a in cmd
                  if a.startswith("--command=")]
    return worker, command

  def test_run_starts_the_worker_side_on_every_worker(self):
    worker, command = self._remote("run", "--", "--config=c.py:mamba",
                                   "--workdir=a dir")
    self.assertEqual(worker, ["--worker=all"])
    self.assertEqual(shlex.split(command), [
        "cd", "~/ssm_icl", "&&", "bash", "launch/tpu.sh", "run-worker", "--",
        "--config=c.py:mamba", "--workdir=a dir"])

  @parameterized.parameters(
      (["setup"], "all", "cd ~/ssm_icl && bash launch/tpu.sh setup-worker"),
      (["kill"], "all", "cd ~/ssm_icl && bash launch/tpu.sh kill-worker"),
      (["kill", "--force"], "all",
       "cd ~/ssm_icl && bash launch/tpu.sh kill-worker --force"),
      (["logs"], "0", "tail -n 100 -F ~/ssm_icl-*.log"),
      (["logs", "--all"], "all", "tail -n 20 ~/ssm_icl-*.log"),
  )
  def test_worker_commands(self, args, worker, command):
    self.assertEqual(self._remote(*args), ([f"--worker={worker}"], command))

  def test_run_worker_frees_the_tpu_then_starts_main(self):
    lines = self.tpu("run-worker", "--", "--config=c.py", "--workdir=w")
    text = "\n".join(" ".join(l) for l in lines)
    self.assertIn("sudo lsof -t /dev/accel* /dev/vfio/*", text)
    self.assertIn("libtpu_lockfile", text)
    python = os.path.join(self.venv, "bin", "python")
    self.assertEqual(lines[-1][:8], [
        "env", "SSM_ICL_DIST_INIT=1", python, "-m", "ssm_icl.main",
        "--config=c.py", "--workdir=w", ">"])
    self.assertRegex(lines[-1][8], r"/ssm_icl-.+\.log$")

  def test_copy_ships_sources_but_not_local_state(self):
    checkout = os.path.join(self.tmp, "checkout")
    for path in ("setup.py", "launch/tpu.sh", "launch/common.sh",
                 ".venv/bin/python", "workdirs/run/x", "ssm_icl/a.py"):
      _write_executable(os.path.join(checkout, path), "")
    for name in ("tpu.sh", "common.sh"):
      with open(os.path.join(ROOT, "launch", name), encoding="utf-8") as f:
        _write_executable(os.path.join(checkout, "launch", name), f.read())
    _write_executable(os.path.join(self.bin, "gcloud"), textwrap.dedent("""\
        #!/usr/bin/env bash
        printf 'gcloud %s\\n' "$*" >>"$FAKE_LOG"
        (cd "$6" && find . -type f | sort) >>"$FAKE_LOG"
        """))
    result = subprocess.run(
        ["bash", "launch/tpu.sh", "copy"], cwd=checkout, capture_output=True,
        text=True, env={**self.env, "TPU_NAME": "t1", "ZONE": "z"},
        timeout=60, check=False)
    self.assertEqual(result.returncode, 0, result.stderr)
    with open(self.log, encoding="utf-8") as f:
      lines = f.read().splitlines()
    self.assertRegex(lines[0], r"^gcloud compute tpus tpu-vm scp --recurse "
                     r"\S+/ssm_icl t1: --zone=z --worker=all$")
    self.assertEqual(lines[1:], ["./launch/common.sh", "./launch/tpu.sh",
                                 "./setup.py", "./ssm_icl/a.py"])

  @parameterized.parameters(
      ({"TPU_NAME": ""}, ["create"], "TPU_NAME is not set"),
      ({"ZONE": ""}, ["run", "--", "--x"], "ZONE is not set"),
      ({}, ["run"], "run: give the ssm_icl.main flags after --"),
      ({}, ["launch"], "unknown command 'launch'"),
      ({}, ["create", "--big"], "create: unknown option '--big'"),
      ({}, ["logs", "--tail"], "logs: unknown option '--tail'"),
      ({"REPO_DIR": "a/b"}, ["setup"],
       "REPO_DIR='a/b' must be one directory name"),
  )
  def test_errors(self, env, args, message):
    env = {"TPU_NAME": "t1", "ZONE": "zone-a", **env}
    result = self.run_script("launch/tpu.sh", "--dry-run", *args, **env)
    self.assertNotEqual(result.returncode, 0)
    self.assertIn(message, result.stderr)

  def test_real_run_needs_gcloud(self):
    result = self.run_script("launch/tpu.sh", "create", TPU_NAME="t",
                             ZONE="z", PATH=self.minimal_path())
    self.assertEqual(result.returncode, 1)
    self.assertIn("gcloud not found", result.stderr)

  def test_help(self):
    result = self.run_script("launch/tpu.sh", "--help")
    self.assertEqual(result.returncode, 0)
    for word in ("create", "setup", "copy", "run", "logs", "kill", "delete",
                 "TPU_NAME", "ZONE", "--dry-run"):
      self.assertIn(word, result.stdout)


class GpuScriptTest(ScriptTestCase):

  def test_run_processes_splits_gpus_and_joins_with_distributed(self):
    result = self.run_script(
        "launch/gpu.sh", "--dry-run", "run", "--processes", "2", "--port",
        "4321", "--", "--config=c.py", NUM_GPUS="4", LOG_DIR="logs")
    self.assertEqual(result.returncode, 0, result.stderr)
    python = os.path.join(self.venv, "bin", "python")
    lines = [shlex.split(l) for l in result.stdout.splitlines()]
    for i, devices in enumerate(("0,1", "2,3")):
      self.assertEqual(lines[i], [
          "env", f"CUDA_VISIBLE_DEVICES={devices}", python, "-m",
          "ssm_icl.main", "--config=c.py",
          "--coordinator_address=127.0.0.1:4321", "--num_processes=2",
          f"--process_id={i}", ">", f"logs/process-{i}.log", "2>&1", "&"])

  def test_run_single_process_and_setup(self):
    python = os.path.join(self.venv, "bin", "python")
    result = self.run_script("launch/gpu.sh", "run", "--dry-run", "--",
                             "--config=c.py")
    self.assertEqual(result.stdout.split(), [python, "-m", "ssm_icl.main",
                                             "--config=c.py"])
    result = self.run_script("launch/gpu.sh", "--dry-run", "setup")
    self.assertIn(f"{python} -m pip install --quiet "
                  "--disable-pip-version-check -e '.[gpu]'", result.stdout)
    self.assertFalse(os.path.exists(self.venv))

  @parameterized.parameters(
      ({"NUM_GPUS": "4"}, ["--processes", "3"],
       "--processes=3 does not divide the 4 GPUs"),
      ({"NUM_GPUS": "4"}, ["--processes", "x"],
       "--processes='x' must be a positive whole number"),
      ({"NUM_GPUS": "0"}, ["--processes", "1"], "no GPUs found"),
      ({"PATH": None}, ["--processes", "2"], "nvidia-smi not found"),
      ({}, ["--gpus", "2"], "run: unknown option '--gpus'"),
  )
  def test_errors(self, env, args, message):
    if "PATH" in env:
      env = {**env, "PATH": self.minimal_path()}
    result = self.run_script("launch/gpu.sh", "--dry-run", "run", *args,
                             "--", "--config=c.py", **env)
    self.assertEqual(result.returncode, 1)
    self.assertIn(message, result.stderr)


class LintTest(parameterized.TestCase):

  def test_scripts_exist(self):
    names = [os.path.relpath(p, ROOT) for p in SCRIPTS]
    self.assertContainsSubset(
        ["launch/local.sh", "launch/test.sh", "launch/tpu.sh", "launch/gpu.sh",
         "launch/bazel_test.sh", ".ci/run"], names)

  def test_bash_syntax(self):
    for path in SCRIPTS:
      result = subprocess.run(["bash", "-n", path], capture_output=True,
                              text=True, check=False)
      self.assertEqual(result.returncode, 0, f"{path}: {result.stderr}")

  def test_shellcheck_finds_nothing(self):
    shellcheck = os.path.join(os.path.dirname(sys.executable), "shellcheck")
    self.assertTrue(os.access(shellcheck, os.X_OK),
                    "shellcheck missing: pip install -e '.[test]'")
    result = subprocess.run(
        [shellcheck, "--external-sources", "--severity=style"] +
        [os.path.relpath(p, ROOT) for p in SCRIPTS],
        cwd=ROOT, capture_output=True, text=True, check=False)
    self.assertEqual(result.returncode, 0, result.stdout + result.stderr)

  def test_no_credentials_or_project_names(self):
    for path in SCRIPTS:
      with open(path, encoding="utf-8") as f:
        text = f.read()
      for pattern, what in _SECRETS:
        self.assertIsNone(re.search(pattern, text), f"{what} in {path}")

  def test_secret_patterns_catch_examples(self):
    for example in ("gs://my-bucket/run", "--project=my-project-123",
                    "API_KEY=abc", "-----BEGIN RSA PRIVATE KEY"):
      self.assertTrue(any(re.search(p, example) for p, _ in _SECRETS),
                      example)


if __name__ == "__main__":
  absltest.main()
