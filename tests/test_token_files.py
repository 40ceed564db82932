"""Token files: round trip, sidecar checks, and every bad input named in the error."""

import json

import numpy as np
import pytest

from ado_jax.data import token_files as tf


def test_round_trip_uint16_and_uint32(tmp_path):
    ids = np.array([0, 5, 256, 65535, 7], np.int64)
    meta = tf.write_tokens(tmp_path / "a.train.bin", ids, vocab_size=65536)
    assert meta["dtype"] == "uint16" and meta["count"] == 5
    mm = tf.open_tokens(tmp_path / "a.train.bin", verify="sha256")
    assert isinstance(mm, np.memmap) and mm.dtype == np.uint16
    np.testing.assert_array_equal(mm, ids)
    assert (tmp_path / "a.train.bin").stat().st_size == 10

    big = np.array([0, 65536, 69999], np.int64)
    assert tf.write_tokens(tmp_path / "b.train.bin", big, vocab_size=70000)["dtype"] == "uint32"
    np.testing.assert_array_equal(tf.open_tokens(tmp_path / "b.train.bin"), big)
    assert not list(tmp_path.glob("*.tmp-*"))


def test_ids_outside_vocab_are_rejected_on_write(tmp_path):
    with pytest.raises(ValueError, match=r"token id 300 at position 2 .*\[0, 257\)"):
        tf.write_tokens(tmp_path / "a.train.bin", np.array([1, 2, 300, 4]), vocab_size=257)
    with pytest.raises(ValueError, match=r"token id -1"):
        tf.write_tokens(tmp_path / "a.train.bin", np.array([1, -1]), vocab_size=257)
    assert not (tmp_path / "a.train.bin").exists()


def test_truncated_file_is_rejected(tmp_path):
    path = tmp_path / "a.train.bin"
    tf.write_tokens(path, np.arange(100), vocab_size=257)
    path.write_bytes(path.read_bytes()[:150])
    with pytest.raises(ValueError, match=r"150 bytes but the sidecar says 100 uint16 tokens = 200 bytes"):
        tf.open_tokens(path)


def test_sidecar_dtype_mismatch(tmp_path):
    path = tmp_path / "a.train.bin"
    tf.write_tokens(path, np.arange(100), vocab_size=257)
    with pytest.raises(ValueError, match="sidecar dtype uint16 does not match the expected uint32"):
        tf.open_tokens(path, expect_dtype="uint32")
    side = json.loads(path.with_suffix(".json").read_text())
    path.with_suffix(".json").write_text(json.dumps({**side, "dtype": "uint32"}))  # file is really uint16
    with pytest.raises(ValueError, match="truncated or wrong dtype"):
        tf.open_tokens(path)
    path.with_suffix(".json").write_text(json.dumps({**side, "dtype": "int8"}))
    with pytest.raises(ValueError, match="dtype 'int8' is not supported"):
        tf.open_tokens(path)
    path.with_suffix(".json").write_text(json.dumps({**side, "vocab_size": 100000}))
    with pytest.raises(ValueError, match="uint16 cannot hold vocab_size 100000"):
        tf.open_tokens(path)


def test_changed_contents_fail_sha256_and_id_checks(tmp_path):
    path = tmp_path / "a.train.bin"
    tf.write_tokens(path, np.arange(100), vocab_size=257)
    raw = bytearray(path.read_bytes())
    raw[20:22] = np.array([999], np.uint16).tobytes()  # same size, id 999 >= vocab
    path.write_bytes(bytes(raw))
    tf.open_tokens(path)  # the size check alone cannot see it
    with pytest.raises(ValueError, match="sha256 .* does not match"):
        tf.open_tokens(path, verify="sha256")
    with pytest.raises(ValueError, match=r"token id 999 at position 10"):
        tf.open_tokens(path, check_ids=True)


def test_missing_sidecar_and_missing_file(tmp_path):
    path = tmp_path / "a.train.bin"
    tf.write_tokens(path, np.arange(10), vocab_size=257)
    path.with_suffix(".json").unlink()
    with pytest.raises(FileNotFoundError, match="sidecar a.train.json is missing"):
        tf.open_tokens(path)


def test_open_domains_names_order_and_bad_names(tmp_path):
    for name, n in [("web", 50), ("code", 40), ("books", 30)]:
        tf.write_tokens(tmp_path / "tokens" / f"{name}.train.bin", np.full(n, 3), vocab_size=257)
    doms = tf.open_domains(tmp_path, "train")
    assert list(doms) == ["books", "code", "web"] and doms["web"].size == 50
    assert list(tf.open_domains(tmp_path, "train", ["web", "books"])) == ["web", "books"]
    assert tf.domains_vocab_size(tmp_path) == 257
    with pytest.raises(ValueError, match=r"unknown domain name\(s\) \['wiki'\].*'books', 'code', 'web'"):
        tf.open_domains(tmp_path, "train", ["web", "wiki"])
    with pytest.raises(ValueError, match="unknown split 'dev'"):
        tf.open_domains(tmp_path, "dev")
    with pytest.raises(FileNotFoundError, match=r"no \*.heldout.bin token files"):
        tf.open_domains(tmp_path, "heldout")
    with pytest.raises(ValueError, match=r"domain 'books' \(train\) has 30 tokens; at least 33"):
        tf.open_domains(tmp_path, "train", min_tokens=33)


def test_open_domains_rejects_empty_and_mixed_vocab(tmp_path):
    tf.write_tokens(tmp_path / "a.train.bin", np.arange(10), vocab_size=257)
    tf.write_tokens(tmp_path / "b.train.bin", np.zeros(0, np.int64), vocab_size=257)
    with pytest.raises(ValueError, match=r"domain 'b' \(train\) has 0 tokens"):
        tf.open_domains(tmp_path, "train")
    tf.write_tokens(tmp_path / "b.train.bin", np.arange(10), vocab_size=4096)
    with pytest.raises(ValueError, match="domain 'b' has vocab_size 4096 but 'a' has 257"):
        tf.open_domains(tmp_path, "train")
