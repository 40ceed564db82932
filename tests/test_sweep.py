"""``ado-jax sweep``: vmapped proxies equal ordinary runs; samplers; resume; the table fit-mixture reads."""

from __future__ import annotations

import json
import re
from math import comb

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ado_jax import cli, loop
from ado_jax.optimizer import make_optimizer
from ado_jax.config import load_config
from ado_jax.data.setup import resolve_vocab_size, train_stream
from ado_jax.mixing import offline_fits
from ado_jax.mixing.basic import StaticConfig
from ado_jax.sweep import command, proxies, samplers
from ado_jax.sweep.run import SweepSpec, run_sweep

SMALL = ["data.max_bytes_per_domain=100000", "train.progress=false", "train.steps=4", "train.seq_len=32",
         "train.batch_size=8", "train.eval_batches=1", "train.eval_every=4", "train.warmup_steps=2",
         "model.n_layers=1"]
ROWS = [[0.7, 0.1, 0.1, 0.1], [0.1, 0.2, 0.3, 0.4]]


def _cfg(*extra):
    return load_config("tiny", SMALL + list(extra))


@pytest.fixture(scope="module")
def given_sweep(tmp_path_factory):
    """A 2-proxy sweep of the ``ROWS`` mixtures: (sweep dir, its results table)."""
    path = tmp_path_factory.mktemp("sweep")
    return path, run_sweep(_cfg(), SweepSpec(sampler="given", num=0, mixtures=ROWS), str(path))


def test_proxy_equals_an_ordinary_static_run(given_sweep, tmp_path):
    path, table = given_sweep
    assert table["domains"] == ["python", "docs", "c_headers", "legal"] and table["step"] == 4
    k = 1  # the second proxy: a mixed-up K axis would not match
    cfg = _cfg("mixer.name=static", f"mixer.weights={json.dumps(ROWS[k])}")
    summary = loop.run(cfg, str(tmp_path / "run"))  # ado-jax train, 8 devices, data parallel
    want = [summary["eval_loss"][d] for d in table["eval_domains"]]
    np.testing.assert_allclose(table["losses"][k], want, rtol=2e-5)
    assert table["aggregates"]["eval_loss_mean"][k] == pytest.approx(summary["eval_loss_mean"], rel=2e-5)
    assert table["aggregates"]["eval_loss_natural"][k] == pytest.approx(summary["eval_loss_natural"], rel=2e-5)
    assert table["train_loss"][k] == pytest.approx(summary["loss"], rel=2e-5)
    assert np.abs(np.subtract(table["losses"][0], table["losses"][1])).max() > 1e-3  # the mixtures matter


def test_table_feeds_fit_mixture_and_a_static_run(given_sweep, tmp_path):
    path, table = given_sweep
    for name in ("results.json", "results.csv"):
        t = offline_fits.load_table(str(path / name))
        np.testing.assert_allclose(t.mixtures, np.asarray(ROWS) / np.sum(ROWS, axis=1, keepdims=True), rtol=1e-6)
        np.testing.assert_allclose(t.losses, table["losses"])
        assert t.domains == tuple(table["domains"])
    out = tmp_path / "w.json"
    assert cli.main(["fit-mixture", str(path / "results.json"), "--method", "regmix-linear", "--target", "natural",
                     "--folds", "0", "--out", str(out)]) == 0
    static = StaticConfig(weights_from=str(out)).resolve(tuple(table["domains"]), str(tmp_path))
    assert len(static.weights) == 4 and sum(static.weights) == pytest.approx(1.0)
    static.build(np.asarray(table["sizes"]))  # trains directly: mixer.name=static, mixer.weights_from=OUT


def test_proxies_are_sharded_over_the_proxy_axis():
    cfg = _cfg()
    w = samplers.dirichlet_mixtures(jax.random.PRNGKey(0), 4, 8)
    mesh = proxies.proxy_mesh(8)
    assert mesh.devices.size == min(8, jax.device_count()) and proxies.proxy_mesh(6).devices.size in (1, 2, 3, 6)
    state = proxies.init_proxies(resolve_vocab_size(cfg).model, make_optimizer(cfg.train), [0] * 8, w, mesh)
    leaf = jax.tree.leaves(state.model)[0]
    assert leaf.shape[0] == 8 and leaf.sharding.spec[0] == proxies.AXIS
    assert len(leaf.sharding.device_set) == mesh.devices.size
    # same seed, same init: every proxy starts from the same weights
    np.testing.assert_array_equal(np.asarray(leaf[0]), np.asarray(leaf[7]))


def _chunked_vs_vmapped(variants):
    """Two steps of 4 proxies (d_model 32) with each ``(chunk, devices)`` of ``variants`` and with all
    4 vmapped on one device: the same losses, models and data keys (float rounding only)."""
    cfg = resolve_vocab_size(_cfg("model.d_model=32", "model.n_heads=2", "model.n_kv_heads=1"))
    stream = train_stream(cfg)
    optimizer = make_optimizer(cfg.train)
    mesh1 = proxies.proxy_mesh(4, jax.devices()[:1])
    init = proxies.init_proxies(cfg.model, optimizer, [0, 1, 2, 3], samplers.dirichlet_mixtures(
        jax.random.PRNGKey(0), 4, 4), mesh1)
    out = {}
    for chunk, ndev in [(0, 1), *variants]:
        mesh = proxies.proxy_mesh(4, jax.devices()[:ndev])
        shardings = proxies.state_shardings(init, mesh)
        arrays, rest = eqx.partition(init, eqx.is_array)
        state = eqx.combine(jax.tree.map(lambda x, s: jax.device_put(x.copy(), s), arrays, shardings), rest)
        step = proxies.make_sweep_step(cfg.train, optimizer, mesh, shardings, chunk)
        for _ in range(2):
            state, metrics = step(state, stream)
        out[chunk, ndev] = jax.device_get((metrics, state.model, state.stream_state.key))
    want = out[0, 1]
    assert len(set(np.asarray(want[0]["loss"]).round(6))) == 4  # four different proxies
    for got in list(out.values())[1:]:
        np.testing.assert_array_equal(got[2], want[2])  # the same data keys: the same batches
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), got[:2], want[:2])


def test_map_arrays_in_chunks_equals_vmap_arrays():
    # a toy per-proxy function with a static leaf: every chunking (plain scan, chunks with a
    # remainder, within 2 device groups) gives vmap's arrays and keeps the static leaf
    tree = {"w": jnp.arange(24.0).reshape(6, 2, 2), "b": jnp.arange(6.0), "name": "proxy"}
    fn = lambda t: {"y": t["w"] @ t["w"] + t["b"], "name": t["name"] + "!"}
    want = proxies.vmap_arrays(fn, tree)
    for chunk, groups in [(1, 1), (4, 1), (1, 2), (2, 2), (0, 1), (6, 1)]:
        got = proxies.map_arrays(fn, tree, chunk, groups)
        assert got["name"] == "proxy!"
        np.testing.assert_allclose(got["y"], want["y"], rtol=1e-6)
    with pytest.raises(ValueError, match="chunk=-1"):
        proxies.make_sweep_step(_cfg().train, None, proxies.proxy_mesh(1), None, -1)
    assert proxies.default_chunk(16, "cpu") == 1 and proxies.default_chunk(16, "gpu") == 16


@pytest.mark.slow  # 15-28 s on 2 shared CPU cores (three compilations of the sweep step)
def test_chunked_step_equals_the_vmapped_step():
    # chunk 1 (the CPU default: a scan over proxies, each the unbatched program) within each of 2
    # devices' halves of K
    _chunked_vs_vmapped([(1, 2)])


@pytest.mark.slow  # ~25 s on 2 shared CPU cores: a lax.map with a remainder compiles the step twice
def test_chunk_with_a_remainder_equals_the_vmapped_step():
    _chunked_vs_vmapped([(3, 1)])  # lax.map batch_size 3: a vmapped chunk of 3, then the remainder of 1


def test_resume_after_a_crash_equals_an_uninterrupted_sweep(tmp_path, monkeypatch):
    cfg, spec = _cfg("train.ckpt_every=2"), SweepSpec(sampler="regmix", num=2, seed=3)
    whole = run_sweep(cfg, spec, str(tmp_path / "whole"))
    real = proxies.make_sweep_step

    def crashing(*a, **kw):
        step, calls = real(*a, **kw), [0]

        def wrapped(state, data):
            calls[0] += 1
            if calls[0] == 4:
                raise KeyboardInterrupt  # killed inside step 4: checkpoint 2 is the latest
            return step(state, data)
        return wrapped

    monkeypatch.setattr(proxies, "make_sweep_step", crashing)
    with pytest.raises(KeyboardInterrupt):
        run_sweep(cfg, spec, str(tmp_path / "crashed"))
    monkeypatch.setattr(proxies, "make_sweep_step", real)
    assert sorted(p.name for p in (tmp_path / "crashed" / "checkpoints").iterdir() if p.name.isdigit()) == ["2"]
    resumed = run_sweep(cfg, spec, str(tmp_path / "crashed"))
    assert resumed == whole  # bit-identical table on CPU
    lines = lambda d: [json.loads(x) for x in (tmp_path / d / "metrics.jsonl").read_text().splitlines()]
    assert lines("crashed") == lines("whole")


def test_rerun_with_another_spec_is_refused(given_sweep):
    path, _ = given_sweep
    with pytest.raises(ValueError, match=r"sweep\.mixtures"):
        run_sweep(_cfg(), SweepSpec(sampler="given", num=0, mixtures=ROWS[:1]), str(path))
    with pytest.raises(ValueError, match=r"train\.lr"):
        run_sweep(_cfg("train.lr=0.01"), SweepSpec(sampler="given", num=0, mixtures=ROWS), str(path))


# ----------------------------------------------------------------------------- samplers

def test_regmix_sampler_simplex_zeroed_capped_seeded():
    sizes = np.array([1e6, 2e5, 5e4, 1e3])
    kw = dict(run_tokens=2e5, max_epochs=2.0)
    w = samplers.regmix_mixtures(jax.random.PRNGKey(1), sizes, 300, **kw)
    assert w.shape == (300, 4) and w.dtype == np.float32
    np.testing.assert_allclose(w.sum(axis=1), 1.0, rtol=1e-5)
    assert np.all((w == 0) | (w >= 2e-4))  # tiny weights zeroed
    assert np.any(w == 0)  # small strengths put mass on few domains
    caps = samplers.epoch_caps(sizes, 2e5, 2.0)  # [1, 1, 0.5, 0.01]
    np.testing.assert_allclose(caps, [1.0, 1.0, 0.5, 0.01])
    assert np.all(w <= caps * (1 + 1e-5))  # no domain beyond 2 epochs of its tokens
    assert w[:, 3].max() > 0  # the capped domain still appears
    np.testing.assert_array_equal(w, samplers.regmix_mixtures(jax.random.PRNGKey(1), sizes, 300, **kw))
    assert not np.array_equal(w, samplers.regmix_mixtures(jax.random.PRNGKey(2), sizes, 300, **kw))
    # the prior tempered by 0.5: the big domain gets the most weight on average, but less than its share
    assert w[:, 0].mean() > w[:, 1].mean() and w[:, 0].mean() < sizes[0] / sizes.sum()


def test_regmix_sampler_refuses_an_impossible_cap():
    with pytest.raises(ValueError, match="max_epochs=1"):
        samplers.regmix_mixtures(jax.random.PRNGKey(0), [100, 100], 4, run_tokens=1000, max_epochs=1)
    with pytest.raises(ValueError, match="K=0"):
        samplers.regmix_mixtures(jax.random.PRNGKey(0), [100, 100], 0, run_tokens=10)


def test_grid_and_dirichlet_cover():
    g = samplers.grid_mixtures(3, 4)
    assert g.shape == (comb(6, 2), 3) and np.allclose(g.sum(axis=1), 1)
    np.testing.assert_allclose(g * 4, np.round(g * 4), atol=1e-6)
    d = samplers.dirichlet_mixtures(jax.random.PRNGKey(0), 5, 7, alpha=0.5)
    assert d.shape == (7, 5) and np.allclose(d.sum(axis=1), 1, atol=1e-5)
    assert command.SAMPLERS == samplers.SAMPLERS


def test_given_mixtures_by_name_and_order():
    w = samplers.given_mixtures([{"b": 3, "a": 1}, [1, 1, 2]], ("a", "b", "c"))
    np.testing.assert_allclose(w, [[0.25, 0.75, 0], [0.25, 0.25, 0.5]])


# ----------------------------------------------------------------------------- bad input: one line, exit 2

@pytest.mark.parametrize("args, rows, message", [
    (["--num", "0"], None, "--num 0"),
    (["--sampler", "given"], [[0.5, 0.5]], r"mixture 0 \[0.5, 0.5\] has 2 entries but there are 4 domains"),
    (["--sampler", "given"], [{"python": 1, "klingon": 1}], r"unknown domain\(s\) \['klingon'\]"),
    (["--sampler", "given"], {"domains": ["python", "docs"], "mixtures": [[1, 2, 3]]}, r"mixture 0 \[1, 2, 3\]"),
    (["--set", "train.grad_accum=2"], None, "train.grad_accum=2"),
    (["--chunk", "-1"], None, "--chunk -1"),
])
def test_bad_input_is_one_clear_error(tmp_path, capsys, args, rows, message):
    extra = []
    if rows is not None:
        (tmp_path / "m.json").write_text(json.dumps(rows))
        extra = ["--mixtures", str(tmp_path / "m.json")]
    sets = [a for s in SMALL for a in ("--set", s)]
    assert cli.main(["sweep", *sets, "--sweep-dir", str(tmp_path / "s"), *args, *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1
    assert re.search(message, err), err
    assert not (tmp_path / "s" / "checkpoints").exists() or not any((tmp_path / "s" / "checkpoints").iterdir())
