"""Host-side sources: mixture frequencies (chi-square), window contents, exact resume, bad input."""

import numpy as np
import pytest
from scipy import stats

from ado_jax.data import token_files
from ado_jax.data.host_source import HostSource, Prefetcher, PrefetchState

B, T = 16, 8


def _domains(sizes=(500, 300, 400, 200)):
    # Domain d holds ids d*100 + (i % 100): a row's ids name its domain and their order is checkable.
    return {f"d{d}": (d * 100 + np.arange(n) % 100).astype(np.uint16) for d, n in enumerate(sizes)}


def _weights(step, D=4):
    w = np.abs(np.sin(np.arange(D) + 0.3 * step)) + 0.05
    return (w / w.sum()).astype(np.float32)


def test_windows_are_contiguous_slices_of_the_drawn_domain():
    src = HostSource(_domains(), B, T, vocab_size=400)
    batch = src.sample(seed=0, step=3, weights_D=[0.25] * 4)
    assert batch["inputs"].shape == (B, T) and batch["inputs"].dtype == np.int32
    assert batch["domain"].shape == (B,) and batch["domain"].dtype == np.int32
    np.testing.assert_array_equal(batch["inputs"][:, 1:], batch["targets"][:, :-1])
    seq = np.concatenate([batch["inputs"], batch["targets"][:, -1:]], axis=1)
    np.testing.assert_array_equal(seq // 100, np.repeat(batch["domain"][:, None], T + 1, axis=1))
    assert np.all(np.diff(seq % 100, axis=1) % 100 == 1)


def test_domain_frequencies_match_weights_chi_square():
    w = np.array([0.5, 0.3, 0.15, 0.05, 0.0])
    src = HostSource(_domains((500, 300, 400, 200, 100)), 64, T)
    dom = np.concatenate([src.sample(7, t, w)["domain"] for t in range(300)])
    counts = np.bincount(dom, minlength=5)
    assert counts[4] == 0  # a zero-weight domain is never drawn
    res = stats.chisquare(counts[:4], dom.size * w[:4])
    assert res.pvalue > 1e-3, (counts, res)


def test_window_starts_cover_the_domain_uniformly():
    src = HostSource({"a": np.arange(1000, dtype=np.uint16)}, 64, T)
    starts = np.concatenate([src.sample(1, t, [1.0])["inputs"][:, 0] for t in range(100)])
    assert starts.min() >= 0 and starts.max() <= 1000 - T - 1
    res = stats.chisquare(np.histogram(starts, bins=10, range=(0, 1000 - T))[0])
    assert res.pvalue > 1e-3, res


def test_sample_is_a_pure_function_of_seed_step_weights():
    src = HostSource(_domains(), B, T)
    a, b = src.sample(5, 9, _weights(1)), src.sample(5, 9, _weights(1))
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    assert not np.array_equal(a["inputs"], src.sample(5, 10, _weights(1))["inputs"])
    assert not np.array_equal(a["inputs"], src.sample(6, 9, _weights(1))["inputs"])


@pytest.mark.parametrize("lag", [0, 1, 3])
def test_prefetcher_contract_and_exact_resume(lag):
    src = HostSource(_domains(), B, T)
    w0 = _weights(-1)
    it = Prefetcher(src, seed=11, lag=lag, initial_weights=w0)
    batches, given, saved = [], [], None
    for t in range(12):
        if t == 5:
            saved = it.state
        given.append(_weights(t))
        batches.append(it.next(given[-1]))
    it.close()
    # The documented contract: batch t uses the weights passed at call t - lag (initial before).
    for t, batch in enumerate(batches):
        w = given[t - lag] if t >= lag else w0
        np.testing.assert_array_equal(batch["inputs"], src.sample(11, t, w)["inputs"])
    # Restoring the state saved before step 5 replays steps 5.. exactly (state as a checkpoint would hold it).
    state = PrefetchState(*(np.array(x) for x in saved))
    assert int(state.step) == 5 and state.pending_weights.shape == (lag, 4)
    with Prefetcher.restore(src, state) as again:
        for t in range(5, 12):
            b = again.next(given[t])
            for k in b:
                np.testing.assert_array_equal(b[k], batches[t][k])


def test_bad_weights_and_domains_fail_clearly():
    src = HostSource(_domains(), B, T)
    with pytest.raises(ValueError, match="weights has 3 entries but there are 4 domains"):
        src.sample(0, 0, [0.5, 0.25, 0.25])
    with pytest.raises(ValueError, match="finite and non-negative"):
        src.sample(0, 0, [0.5, -0.25, 0.5, 0.25])
    with Prefetcher(src, lag=1) as it, pytest.raises(ValueError, match="5 entries but there are 4"):
        it.next(np.ones(5))
    with pytest.raises(ValueError, match="initial_weights has 2 entries"):
        Prefetcher(src, initial_weights=[0.5, 0.5])
    with pytest.raises(ValueError, match=r"domain 'short' has 5 tokens; need at least seq_len\+1=9"):
        HostSource({"ok": np.arange(100), "short": np.arange(5)}, B, T)
    with pytest.raises(ValueError, match="no domains given"):
        HostSource({}, B, T)


def test_corrupted_ids_are_caught_when_sampled(tmp_path):
    doms = {"a": np.arange(200) % 250, "b": np.arange(200) % 250}
    doms["b"][50:] = 300  # a file written without checks, or corrupted
    src = HostSource(doms, B, T, vocab_size=257)
    with pytest.raises(ValueError, match=r"token id 300 >= vocab_size 257 in domain 'b'"):
        src.sample(0, 0, [0.0, 1.0])


def test_host_source_over_memmapped_token_files(tmp_path):
    for name, d in _domains().items():
        token_files.write_tokens(tmp_path / "tokens" / f"{name}.train.bin", d, vocab_size=400)
    doms = token_files.open_domains(tmp_path, "train", min_tokens=T + 1)
    src = HostSource(doms, B, T, vocab_size=token_files.domains_vocab_size(tmp_path))
    a = src.sample(3, 4, _weights(0))
    b = HostSource(_domains(), B, T).sample(3, 4, _weights(0))
    np.testing.assert_array_equal(a["inputs"], b["inputs"])
