"""array_record / TFDS sources: round trip, mixture frequencies, exact resume, bad input."""

import json

import numpy as np
import pytest
from scipy import stats

pytest.importorskip("array_record")

from ado_jax.data.host_source import Prefetcher  # noqa: E402
from ado_jax.data.tfds_source import (ArrayRecordDomain, ArrayRecordSource, TfdsDomain,  # noqa: E402
                                      open_array_record_domains, write_array_record)
from ado_jax.data.tokenizer import ByteTokenizer  # noqa: E402

B, T = 8, 12


def _write(tmp_path, n_domains=3, split="train"):
    rng = np.random.default_rng(0)
    docs = {}
    for d in range(n_domains):
        # Records of domain d: ids d*100 + (running index % 100), lengths 1..30 (some shorter than T+1).
        lengths = rng.integers(1, 30, size=20 + 10 * d)
        flat = d * 100 + np.arange(lengths.sum()) % 100
        docs[f"dom{d}"] = np.split(flat, np.cumsum(lengths)[:-1])
        write_array_record(tmp_path / f"dom{d}.{split}.array_record", docs[f"dom{d}"], vocab_size=300)
    return docs


def test_round_trip_and_sidecar(tmp_path):
    docs = _write(tmp_path)
    dom = ArrayRecordDomain(tmp_path / "dom1.train.array_record")
    assert len(dom) == 30 and dom.vocab_size == 300 and dom.tokens == sum(map(len, docs["dom1"]))
    for i, rec in zip([3, 0, 29], dom.read([3, 0, 29])):
        np.testing.assert_array_equal(rec, docs["dom1"][i])
    assert list(open_array_record_domains(tmp_path)) == ["dom0", "dom1", "dom2"]


def test_windows_span_consecutive_records(tmp_path):
    docs = _write(tmp_path)
    src = ArrayRecordSource(open_array_record_domains(tmp_path), B, T)
    for t in range(5):
        batch = src.sample(0, t, [1, 1, 1])
        seq = np.concatenate([batch["inputs"], batch["targets"][:, -1:]], axis=1)
        np.testing.assert_array_equal(seq // 100, np.repeat(batch["domain"][:, None], T + 1, axis=1))
        # consecutive ids (mod 100, wrapping at the domain's end where the running index restarts)
        flat_len = np.array([sum(map(len, docs[f"dom{d}"])) for d in range(3)])
        step = np.diff(seq % 100, axis=1) % 100
        assert np.all((step == 1) | ((seq[:, 1:] % 100 == 0) & (flat_len[batch["domain"]] % 100 != 0)[:, None]))


def test_domain_frequencies_match_weights_chi_square(tmp_path):
    _write(tmp_path)
    src = ArrayRecordSource(open_array_record_domains(tmp_path), 32, T)
    w = np.array([0.6, 0.3, 0.1])
    counts = np.bincount(np.concatenate([src.sample(2, t, w)["domain"] for t in range(60)]), minlength=3)
    assert stats.chisquare(counts, counts.sum() * w).pvalue > 1e-3, counts


def test_exact_resume_through_prefetcher(tmp_path):
    _write(tmp_path)
    src = ArrayRecordSource(open_array_record_domains(tmp_path), B, T)
    ws = [np.array([1.0 + t % 3, 1.0, 0.5 + t]) for t in range(8)]
    with Prefetcher(src, seed=4, lag=2) as it:
        out = []
        for t in range(8):
            if t == 3:
                saved = it.state
            out.append(it.next(ws[t]))
    with Prefetcher(src, seed=4, lag=2, workers=4) as it:  # concurrent reads on shared readers
        for t in range(8):
            b = it.next(ws[t])
            np.testing.assert_array_equal(b["inputs"], src.sample(4, t, ws[t - 2] if t >= 2 else np.ones(3))["inputs"])
    src2 = ArrayRecordSource(open_array_record_domains(tmp_path), B, T)  # fresh readers, as after a restart
    with Prefetcher.restore(src2, saved) as again:
        for t in range(3, 8):
            b = again.next(ws[t])
            for k in b:
                np.testing.assert_array_equal(b[k], out[t][k])


def test_bad_inputs(tmp_path):
    _write(tmp_path)
    with pytest.raises(ValueError, match=r"record 1 has token id 300 outside \[0, 300\)"):
        write_array_record(tmp_path / "bad.train.array_record", [np.arange(3), np.array([1, 300])], 300)
    assert not (tmp_path / "bad.train.array_record").exists()
    with pytest.raises(ValueError, match=r"unknown domain name\(s\) \['web'\]"):
        open_array_record_domains(tmp_path, "train", ["dom0", "web"])
    src = ArrayRecordSource(open_array_record_domains(tmp_path), B, T)
    with pytest.raises(ValueError, match="weights has 2 entries but there are 3 domains"):
        src.sample(0, 0, [0.5, 0.5])
    side = tmp_path / "dom0.train.json"
    meta = json.loads(side.read_text())
    side.write_text(json.dumps({**meta, "count": meta["count"] + 1}))
    with pytest.raises(ValueError, match="20 records but the sidecar says 21"):
        ArrayRecordDomain(tmp_path / "dom0.train.array_record")
    write_array_record(tmp_path / "tiny.train.array_record", [np.arange(5)], 300)
    with pytest.raises(ValueError, match=r"domain 'tiny' has 1 records / 5 tokens; need at least seq_len\+1=13"):
        ArrayRecordSource(open_array_record_domains(tmp_path, names=["tiny"]), B, T)


def test_tfds_dataset_built_locally(tmp_path):
    tfds = pytest.importorskip("tensorflow_datasets")

    class AdoTinyText(tfds.core.GeneratorBasedBuilder):
        VERSION = tfds.core.Version("1.0.0")

        def _info(self):
            features = tfds.features.FeaturesDict({"text": tfds.features.Text()})
            return tfds.core.DatasetInfo(builder=self, features=features)

        def _split_generators(self, dl_manager):
            return {"train": self._generate_examples()}

        def _generate_examples(self):
            for i in range(40):
                yield i, {"text": f"<{i:02d}>" * 5}

    builder = AdoTinyText(data_dir=str(tmp_path), file_format="array_record")
    builder.download_and_prepare()
    tok = ByteTokenizer()
    dom = TfdsDomain(str(tmp_path / "ado_tiny_text" / "1.0.0"), "train", tok)
    assert len(dom) == 40
    doms = {"tiny": dom, "also": TfdsDomain("ado_tiny_text", "train", tok, data_dir=str(tmp_path))}
    src = ArrayRecordSource(doms, B, T)
    batch = src.sample(0, 0, [0.5, 0.5])
    assert src.vocab_size == 257 and batch["inputs"].max() <= 256
    for row in np.concatenate([batch["inputs"], batch["targets"][:, -1:]], axis=1):
        text = tok.decode(row)
        assert set(text) <= set("<>0123456789\n"), text  # every window is made of the records' text
    a = Prefetcher(src, seed=1, lag=1)
    first = [a.next([0.3, 0.7]) for _ in range(3)]
    a.close()
    b = Prefetcher(src, seed=1, lag=1)
    np.testing.assert_array_equal(b.next([0.3, 0.7])["inputs"], first[0]["inputs"])
    b.close()
