"""Shared-prefix packing (ado_jax/harness/packing.py, ``BucketedRunner.score_packed``): requests
that share a context, scored once per context and several contexts per row, get the log-likelihoods
and is-greedy flags of one padded row per request (``BucketedRunner.score``) and of a direct model
call per request; the model's optional positions and mask leave its default path as it was."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_harness import _logits, _model, _reference

from ado_jax.harness import batching, packing


def _mc_requests(rng, vocab: int = 256):
    """Multiple-choice shaped ``(context, continuation)`` pairs: groups of 1, 2, 4 and 5
    continuations (some of one token), contexts longer than max_length 128 (truncated on the
    left), a group too long for one row, and a context that is a prefix of another's."""
    pairs = []
    for n_choices, ctx_len, cont_len in [(4, 40, (3, 12)), (1, 20, (1, 2)), (2, 90, (5, 30)), (5, 10, (1, 4)),
                                         (4, 150, (2, 9)), (1, 140, (4, 5)), (3, 60, (30, 50)), (4, 3, (1, 2)),
                                         (2, 126, (1, 3))]:
        context = rng.integers(0, vocab, ctx_len).tolist()
        for _ in range(n_choices):
            pairs.append((context, rng.integers(0, vocab, int(rng.integers(*cont_len))).tolist()))
    pairs.append((pairs[0][0][:25], pairs[0][1]))  # a context that is another's prefix: its own group
    order = rng.permutation(len(pairs))  # lm-eval's order interleaves documents
    return [pairs[i] for i in order]


def test_grouping_follows_lm_evals_left_truncation():
    a, b = [1, 2, 3, 4, 5], [9]
    groups = packing.group_requests([(a, [6, 7]), (a, [8]), (b, [1]), (a, [6, 7, 8, 9])], max_length=6)
    # request 3 (5 + 4 tokens > 7) sees only [3, 4, 5]: a group of its own
    assert [(g.prefix, [(r, br, n) for r, br, n in g.members]) for g in groups] == [
        ([1, 2, 3, 4, 5], [(0, [6, 7], 2), (1, [8], 1)]), ([9], [(2, [1], 1)]), ([3, 4, 5], [(3, [6, 7, 8, 9], 4)])]
    assert [g.length for g in groups] == [6, 1, 6]
    (group,) = packing.group_requests([([1, 2], [3, 4, 5])] * 4, max_length=7)
    assert group.length == 10  # 2 + 4 * 2
    split = packing.split_groups([group], 7)
    assert [len(g.members) for g in split] == [2, 2] and all(g.length <= 7 for g in split)
    assert [r for g in split for r, _, _ in g.members] == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="request 0: 4 tokens exceed a row of 3"):
        packing.split_groups([group], 3)
    with pytest.raises(ValueError, match="request 0: 0 continuation tokens"):
        packing.group_requests([([1], [])], max_length=6)


def test_rows_are_packed_best_fit_decreasing():
    lengths = [60, 10, 70, 30, 64, 5, 128]
    rows = packing.pack_rows(lengths, 128)
    assert sorted(g for row in rows for g in row) == list(range(len(lengths)))
    assert all(sum(lengths[g] for g in row) <= 128 for row in rows)
    assert len(rows) == 3  # 367 tokens: 128 | 70 + 30 + 10 + 5 | 64 + 60 (+ room for none)
    assert [packing.points_bucket(n) for n in (1, 64, 65, 96, 97, 130, 200)] == [64, 64, 96, 96, 128, 192, 256]
    with pytest.raises(ValueError, match="does not fit"):
        packing.pack_rows([129], 128)


def test_packed_scores_equal_the_unpacked_rows_and_the_model(monkeypatch):
    traces = []
    real = packing.score_packed_batch
    monkeypatch.setattr(packing, "score_packed_batch", lambda *a: traces.append((a[1].shape, a[5].shape)) or real(*a))
    jax.clear_caches()  # the jitted functions are module-level: another test may have compiled these shapes
    model = _model()
    pairs = _mc_requests(np.random.default_rng(0))
    for i in [i for i, (_, k) in enumerate(pairs) if len(k) == 1][::2]:  # some one-token choices the model would make
        pairs[i] = (pairs[i][0], [int(_logits(model, pairs[i][0][-128:])[-1].argmax())])
    runner = batching.BucketedRunner(model, 128, batch_size=4)
    lp, greedy = runner.score_packed(pairs)
    inputs = [(c + k)[-129:] for c, k in pairs]
    lp_rows, greedy_rows = runner.score(inputs, [len(k) for _, k in pairs])
    np.testing.assert_allclose(lp, lp_rows, rtol=1e-5, atol=1e-4)
    np.testing.assert_array_equal(greedy, greedy_rows)
    for seq, (_, k), got_lp, got_g in zip(inputs, pairs, lp, greedy):
        want_lp, want_g = _reference(model, seq, len(k))
        assert abs(got_lp - want_lp) < 1e-4 * max(1.0, abs(want_lp)) and got_g == want_g, (len(seq), len(k))
    assert greedy.any() and not greedy.all()
    tokens_packed = sum(g.length for g in packing.group_requests(pairs, 128))
    assert tokens_packed < 0.85 * sum(len(x) - 1 for x in inputs)  # truncated contexts share nothing
    n = len(traces)
    assert n <= 4 and len(set(traces)) == n, traces
    runner.score_packed(pairs[::-1])  # the same requests in another order: nothing new to compile
    assert len(traces) == n
    groups, rows, lengths = runner.pack(packing.group_requests(pairs, 128))
    assert max(lengths) > 128  # rows longer than max_length: a long group is not split
    runner.row_buckets = runner.buckets  # rows of at most max_length: the long groups are split
    groups_short, _, lengths_short = runner.pack(packing.group_requests(pairs, 128))
    assert max(lengths_short) <= 128 and len(groups_short) > len(groups)
    lp_short, greedy_short = runner.score_packed(pairs)
    np.testing.assert_allclose(lp_short, lp_rows, rtol=1e-5, atol=1e-4)
    np.testing.assert_array_equal(greedy_short, greedy_rows)


def test_greedy_flags_of_shared_first_tokens():
    """The first token of every branch is predicted at the prefix's last position, which the
    branches share: a branch is greedy only when all of its own tokens are."""
    model = _model()
    context = [3, 1, 4, 1, 5, 9, 2, 6]
    best = int(np.argmax(np.asarray(model(jnp.asarray([context]))[0, -1])))
    after = int(np.argmax(np.asarray(model(jnp.asarray([context + [best]]))[0, -1])))
    pairs = [(context, [best]), (context, [(best + 1) % 256]), (context, [best, after]),
             (context, [best, (after + 1) % 256])]
    _, greedy = batching.BucketedRunner(model, 64, batch_size=2).score_packed(pairs)
    assert greedy.tolist() == [True, False, True, False]


def test_sharded_packed_scores_equal_the_single_device_ones():
    from ado_jax import sharding
    from ado_jax.config import MeshConfig

    model = _model()
    mesh = sharding.make_mesh(MeshConfig(data=4, fsdp=2))
    placed = jax.tree.map(lambda x, s: jax.device_put(x, s), model, sharding.tree_shardings(model, mesh))
    pairs = _mc_requests(np.random.default_rng(1))[:12]
    lp_sharded, g_sharded = batching.BucketedRunner(placed, 128, batch_size=3, mesh=mesh).score_packed(pairs)
    lp_single, g_single = batching.BucketedRunner(model, 128, batch_size=4).score_packed(pairs)
    np.testing.assert_allclose(lp_sharded, lp_single, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(g_sharded, g_single)


def test_model_positions_and_mask_default_to_the_training_path():
    model = _model()
    tokens = jnp.asarray(np.random.default_rng(2).integers(0, 256, (2, 24)), jnp.int32)
    plain = model(tokens)
    explicit = model(tokens, jnp.broadcast_to(jnp.arange(24), (2, 24)), jnp.ones((2, 24, 24), bool))
    np.testing.assert_allclose(np.asarray(explicit), np.asarray(plain), rtol=1e-5, atol=1e-5)
    assert str(jax.make_jaxpr(lambda t: model(t, None, None))(tokens)) == str(jax.make_jaxpr(model)(tokens))
    # two sequences side by side, the second's positions from 0 and blind to the first: each one's own logits
    a, b = tokens[0, :10], tokens[1, :14]
    row = jnp.concatenate([a, b])[None]
    positions = jnp.concatenate([jnp.arange(10), jnp.arange(14)])[None]
    doc = jnp.asarray([0] * 10 + [1] * 14)
    packed = model(row, positions, (doc[:, None] == doc[None, :])[None])[0]
    np.testing.assert_allclose(np.asarray(packed[:10]), np.asarray(model(a[None])[0]), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(np.asarray(packed[10:]), np.asarray(model(b[None])[0]), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("kind", ["byte", "bpe"])
def test_adapter_packed_equals_unpacked(kind):
    """``JaxLM`` with lm-eval's own requests: multiple choice (one context string, several
    continuations), WinoGrande's partial form (two contexts, one continuation), an empty context
    and contexts longer than ``max_length``, byte and BPE tokenizers."""
    pytest.importorskip("lm_eval", reason="the adapter needs lm-eval (pip install 'ado-jax[harness]')")
    from lm_eval.api.instance import Instance

    from ado_jax.data.tokenizer import BPETokenizer, ByteTokenizer
    from ado_jax.harness.lm import JaxLM

    text = ("The old man told the children a story about the sea, and they listened until the lamps were lit. "
            "We planted tomatoes and beans in the garden behind the house. ") * 3
    tok = ByteTokenizer() if kind == "byte" else BPETokenizer.train([text] * 4, vocab_size=300)
    model = _model(300)
    args = []
    for i, context in enumerate(["The old man told the children", "We planted", text[:150], text[:40] + " "]):
        args += [(context, f" {w}") for w in ["a story", "tomatoes and beans", "x", "the sea, and they"][:4 - i % 3]]
    args += [(f"The trophy did not fit in the {w} because it", " was too big.") for w in ("case", "suitcase")]
    args += [("", "hello"), ("", "We")]
    reqs = [Instance("loglikelihood", {}, a, i) for i, a in enumerate(args)]
    packed = JaxLM(model, tok, batch_size=4, max_length=64)
    unpacked = JaxLM(model, tok, batch_size=4, max_length=64, pack=False)
    got, want = packed.loglikelihood(reqs), unpacked.loglikelihood(reqs)
    np.testing.assert_allclose([lp for lp, _ in got], [lp for lp, _ in want], rtol=1e-5, atol=1e-4)
    assert [g for _, g in got] == [g for _, g in want]
    rolling = [Instance("loglikelihood_rolling", {}, (t,), i) for i, t in enumerate([text[:200], text[:30]])]
    np.testing.assert_allclose(packed.loglikelihood_rolling(rolling), unpacked.loglikelihood_rolling(rolling),
                               rtol=1e-5, atol=1e-4)
