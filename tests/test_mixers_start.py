"""Every registered mixer starts from its defaults (plus at most one documented field) on any
number of domains and any run length: Aioli sizes itself to the run, DoReMi reads (or has
trained) its reference run, Skill-It estimates its skills graph in the run or reads one."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ado_jax import config as config_lib
from ado_jax.mixing import DomainStats, config_class, mixer_names
from ado_jax.mixing.base import wants_grad_dot
from ado_jax.mixing.aioli import aioli_sizing
from ado_jax.mixing.skill_it import skill_it, skill_it_schedule

# The one field a mixer may need from the user (documented in docs/mixers.md).
ONE_FLAG = {"static": lambda d: {"weights": [1.0] * d}}


def _reference_run(tmp_path, names, losses, extra=None):
    run = tmp_path / "ref"
    run.mkdir(exist_ok=True)
    recs = [{"step": 5, "eval_loss": {n: 9.0 for n in names}},
            {"step": 10, "eval_loss": {**dict(zip(names, losses)), **(extra or {})}}, {"step": 10, "loss": 1.0}]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    return str(run)


def _drive(mixer, d, steps, heldout_fn=lambda step: None):
    """Runs ``steps`` jitted updates with random per-domain losses; returns the [steps, D] weights."""
    update = jax.jit(mixer.update)
    st = mixer.init(d)
    out = []
    rng = np.random.default_rng(0)
    for step in range(steps):
        held = heldout_fn(step)
        stats = DomainStats.create(jnp.asarray(rng.uniform(1, 3, d), jnp.float32), jnp.ones((d,), jnp.float32),
                                   jnp.asarray(step, jnp.int32),
                                   heldout_loss=jnp.asarray(held if held is not None else rng.uniform(1, 3, d),
                                                            jnp.float32))
        if wants_grad_dot(st) is not False:  # DoGE: the step computes per-domain gradient products
            stats = stats._replace(grad_dot=jnp.eye(d, dtype=jnp.float32))
        w, st = update(stats, st)
        out.append(np.asarray(w))
    return np.stack(out)


def _cases():
    for name in mixer_names():
        for d in (3, 8):
            for steps in (12, 200):
                # ADO's update (the fitter inside) compiles in ~10 s per D: the default run has D = 8.
                slow = name == "ado" and d == 3
                yield pytest.param(name, steps, d, marks=[pytest.mark.slow] if slow else [])


@pytest.mark.parametrize("name, steps, d", list(_cases()))
def test_every_mixer_builds_and_runs_from_its_defaults(name, steps, d, tmp_path):
    names = [f"dom{i}" for i in range(d)]
    spec = config_class(name)(**ONE_FLAG.get(name, lambda d: {})(d))
    run_dir = str(tmp_path / "run")
    for pre_dir, _ in spec.prerequisite_runs(config_lib.Config(mixer=spec), run_dir):  # DoReMi's reference
        assert pre_dir == f"{run_dir}/reference"
        _reference_run(tmp_path, names, np.linspace(2.0, 3.0, d))
        spec = dataclass_replace(spec, reference_run=str(tmp_path / "ref"))
    sizes = np.arange(1, d + 1) * 1000
    mixer = spec.resolve(tuple(names), run_dir).build(sizes, total_steps=steps, seed=0)
    w_SD = _drive(mixer, d, steps)
    assert w_SD.shape == (steps, d)
    assert np.all(np.isfinite(w_SD)) and np.all(w_SD >= 0)
    np.testing.assert_allclose(w_SD.sum(axis=1), 1.0, atol=1e-5)


def dataclass_replace(obj, **kw):
    import dataclasses

    return dataclasses.replace(obj, **kw)


def test_aioli_sizes_itself_to_the_demo_budget_keeping_delta():
    # The demo preset with the built corpus: 8 domains, 200 steps; 20 rounds x 4 sweeps need 5001.
    rounds, sweeps, note = aioli_sizing(8, 200, 20, 4, 0.128, 1)
    assert (rounds, sweeps) == (3, 1)
    assert 8 * sweeps <= 0.128 * (199 // rounds)  # LEARNPARAMS within delta of each round
    assert "5001" in note and "mixer.fit=strict keeps" in note
    assert aioli_sizing(8, 6000, 20, 4, 0.128, 1) == (20, 4, "")  # the paper's schedule fits: unchanged
    assert aioli_sizing(2, 2000, 20, 4, 0.128, 1)[:2] == (20, 4)
    assert aioli_sizing(3, 12, 20, 4, 0.128, 1)[:2] == (1, 1)  # too short for delta: one round, 1-step segments
    with pytest.raises(ValueError, match="train.decay_steps >= 9"):
        aioli_sizing(8, 8, 20, 4, 0.128, 1)


def test_aioli_strict_refuses_and_names_the_budget():
    spec = config_class("aioli")(fit="strict")
    with pytest.raises(ValueError, match=r"smallest train.decay_steps that fits 20 rounds is 641"):
        spec.build(np.ones(8), total_steps=200)
    assert "sized to 3 round(s) x 1 sweep(s)" in config_class("aioli")().describe(np.ones(8), 200)
    with pytest.raises(ValueError, match="mixer.fit='sometimes'"):
        config_class("aioli")(fit="sometimes").build(np.ones(8), total_steps=200)


def test_skill_it_estimates_the_graph_in_the_run():
    # A linear loss model: a step on domain j lowers domain i's held-out loss by G[i, j] * loss.
    d, seg, sweeps, warm = 3, 2, 2, 3
    g_true = np.array([[0.10, 0.02, 0.00], [0.03, 0.08, 0.01], [0.00, 0.05, 0.12]])
    mixer = skill_it(None, 40, rounds=4, graph_segment_steps=seg, graph_sweeps=sweeps, graph_warmup_steps=warm,
                     eta=0.5, seed=3)
    sch = skill_it_schedule(d, 40, 4, None, True, seg, sweeps=sweeps, warmup_steps=warm)
    assert (sch.graph_steps, sch.rounds, sch.round_steps) == (warm + sweeps * d * seg, 4, (40 - 15) // 4)
    st = mixer.init(d)
    loss = np.full(d, 4.0)
    seen_w, drops = [], np.zeros((d, d))
    update = jax.jit(mixer.update)
    for step in range(sch.graph_steps):
        w = np.asarray(st.weights)
        seen_w.append(w)
        if step >= warm:  # the segments: one domain alone, read off the mixture it was given
            j = int(np.argmax(w))
            if (step - warm) % seg == 0:
                start = loss.copy()
            loss = loss * (1 - g_true[:, j])
            if (step - warm + 1) % seg == 0:
                drops[:, j] += (start - loss) / start / sweeps
        else:
            loss = loss * (1 - 0.01)  # the warm-up on the prior: a shared drop, not in the graph
        held = loss if bool(st.wants_heldout) else np.full(d, np.nan)
        _, st = update(DomainStats.create(jnp.ones(d), jnp.ones(d), jnp.asarray(step), jnp.asarray(held, jnp.float32))
                       ._replace(heldout_valid=st.wants_heldout), st)
    np.testing.assert_allclose(seen_w[:warm], np.full((warm, d), 1 / d), rtol=1e-6)  # the prior through the warm-up
    seg_domains = [int(np.argmax(w)) for w in seen_w[warm::seg]]
    for step, w in enumerate(seen_w[warm:], start=warm):  # then one domain alone a segment
        np.testing.assert_array_equal(w, np.eye(d)[seg_domains[(step - warm) // seg]])
    for k in range(sweeps):  # every domain once a sweep, the sweeps in different orders for this seed
        assert sorted(seg_domains[k * d:(k + 1) * d]) == list(range(d))
    assert seg_domains != list(range(d)) * sweeps  # not the domain order
    expect = np.stack([sum((1 - (1 - g_true[:, j]) ** seg) for _ in range(sweeps)) / sweeps for j in range(d)], axis=1)
    np.testing.assert_allclose(drops, expect, rtol=1e-5)  # the model's own bookkeeping, checked against closed form
    np.testing.assert_allclose(np.asarray(st.graph), expect, rtol=1e-5)
    # Right after the estimation the mixture is Skill-It's first update from the last losses.
    logits = np.log(np.full(d, 1 / d)) + 0.5 * expect.T @ loss
    np.testing.assert_allclose(np.asarray(st.weights), np.exp(logits) / np.exp(logits).sum(), rtol=1e-5)
    assert int(st.rounds_done) == 1


def test_skill_it_orders_its_segments_by_seed_and_fits_small_budgets():
    def order(seed):
        m = skill_it(None, 40, rounds=4, graph_segment_steps=1, graph_sweeps=3, graph_warmup_steps=1, seed=seed)
        st, out = m.init(4), []
        for step in range(1 + 3 * 4):
            out.append(int(np.argmax(st.weights)))
            _, st = m.update(DomainStats.create(jnp.ones(4), jnp.ones(4), jnp.asarray(step), jnp.full(4, 2.0))
                             ._replace(heldout_valid=st.wants_heldout), st)
        return out[1:]
    assert order(0) == order(0) and order(0) != order(1)
    # 8 domains in 12 steps: one sweep of one step each after a one-step warm-up, then rounds.
    sch = skill_it_schedule(8, 12, 10, None, True)
    assert (sch.warmup_steps, sch.sweeps, sch.segment_steps, sch.graph_steps) == (1, 1, 1, 9)
    sch = skill_it_schedule(4, 600, 20, None, True)  # the known-answer runs: 60 warm-up steps, 2 x 4 x 7
    assert (sch.warmup_steps, sch.sweeps, sch.segment_steps, sch.graph_steps) == (60, 2, 7, 116)
    assert "steps 60-115 (2 sweep(s) of 7 step(s)" in config_class("skill_it")().describe(np.ones(4), 600)
    assert config_class("skill_it")(graph_from="RUN").describe(np.ones(4), 600) == ""  # nothing estimated


def test_skill_it_reads_the_graph_of_another_run_by_domain_name(tmp_path):
    names = ["a", "b", "c"]
    g = np.arange(9.0).reshape(3, 3) / 10
    logged = {r: {c: g[i, j] for j, c in enumerate(names)} for i, r in enumerate(names)}
    run = tmp_path / "other"
    run.mkdir()
    (run / "metrics.jsonl").write_text(json.dumps({"step": 3, "skills_graph": logged}) + "\n")
    spec = config_class("skill_it")(graph_from=str(run))
    resolved = spec.resolve(("c", "a"), "unused")  # another order, a subset
    np.testing.assert_allclose(resolved.graph, [[g[2, 2], g[2, 0]], [g[0, 2], g[0, 0]]])
    with pytest.raises(ValueError, match=r"no row for domain\(s\) \['z'\]"):
        spec.resolve(("a", "z"), "unused")
    with pytest.raises(ValueError, match="call resolve"):
        spec.build(np.ones(3), 100)


def test_doremi_reads_its_reference_run_by_domain_name(tmp_path):
    names = ["a", "b", "c"]
    ref = _reference_run(tmp_path, names, [2.0, 2.5, 3.0], extra={"held_only": 1.0})
    spec = config_class("doremi")(reference_run=ref)
    assert spec.prerequisite_runs(config_lib.Config(mixer=spec), "runs/x") == []
    assert spec.resolve(("c", "a"), "runs/x").reference_losses == [3.0, 2.0]  # the LAST eval record
    with pytest.raises(ValueError, match=r"no value for domain\(s\) \['q'\]"):
        spec.resolve(("a", "q"), "runs/x")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="has no record with 'eval_loss'"):
        config_class("doremi")(reference_run=str(tmp_path / "empty")).resolve(("a",), "runs/x")
    typed = config_class("doremi")(reference_losses=[1.0, 2.0])
    assert typed.resolve(("a", "b"), "runs/x") is typed and typed.prerequisite_runs(None, "runs/x") == []


def test_doremi_without_a_reference_plans_one_in_the_run_dir():
    cfg = config_lib.load_config("tiny", ["mixer.name=doremi", "train.eval_every=0"])
    [(ref_dir, ref_cfg)] = cfg.mixer.prerequisite_runs(cfg, "gs://b/runs/x/")
    assert ref_dir == "gs://b/runs/x/reference"
    assert ref_cfg.mixer.name == "balanced" and ref_cfg.train.eval_every == ref_cfg.train.steps
    assert ref_cfg.model == cfg.model and ref_cfg.train.steps == cfg.train.steps
    with pytest.raises(ValueError, match="reference_mixer='skill'"):
        config_class("doremi")(reference_mixer="skill").prerequisite_runs(cfg, "r")


@pytest.mark.slow  # ~10 s a mixer; CI's slow step runs it
@pytest.mark.parametrize("name", mixer_names())
def test_every_mixer_trains_from_the_cli_on_tiny_with_8_domains(name, tmp_path, capsys):
    """``ado-jax train --config tiny --mixer NAME`` with at most one --set for the mixer, on a
    corpus of 8 domains and a run shorter than Aioli's paper schedule (DoReMi trains its
    reference first; Skill-It estimates its graph)."""
    from ado_jax import cli
    from ado_jax.data.encode import encode_dir
    from ado_jax.run_log import read_metrics

    rng = np.random.default_rng(0)
    for i in range(8):
        (tmp_path / "text" / f"d{i}").mkdir(parents=True)
        alphabet = list("abcdefghijklmnopqrstuvwxyz .,\n")[i * 3:i * 3 + 8]
        (tmp_path / "text" / f"d{i}" / "0.txt").write_text("".join(rng.choice(alphabet, 6000)))
    encode_dir(tmp_path / "text", tmp_path / "corpus", "byte")
    one = [f"mixer.{k}={json.dumps(v)}" for k, v in ONE_FLAG.get(name, lambda d: {})(8).items()]
    argv = ["train", "--config", "tiny", "--mixer", name, "--steps", "24", "--run-dir", str(tmp_path / "run"),
            "--set", "train.decay_steps=24", "--set", "train.eval_every=12", "--set", "train.progress=false",
            "--set", "data.source=corpus", "--set", f"data.corpus_dir={tmp_path / 'corpus'}",
            "--set", "model.vocab_size=0"]
    for flag in one:
        argv += ["--set", flag]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    recs = [r for r in read_metrics(tmp_path / "run" / "metrics.jsonl") if "weights" in r]
    assert recs[-1]["step"] == 24 and len(recs[-1]["weights"]) == 8
    if name == "aioli":
        assert "sized to 1 round(s) x 1 sweep(s)" in out
    if name == "doremi":
        assert (tmp_path / "run" / "reference" / "metrics.jsonl").exists()
    if name == "skill_it":
        assert "estimating the [8, 8] skills graph" in out
        graph = [r for r in read_metrics(tmp_path / "run" / "metrics.jsonl") if "skills_graph" in r][-1]
        assert any(v != 0.0 for row in graph["skills_graph"].values() for v in row.values())


def test_static_and_aioli_read_mixtures_from_runs_and_files_by_domain_name(tmp_path):
    """Aioli+DML / Aioli+DoGE and a final DoGE/DoReMi run: the mixture comes from a weights file
    or a proxy run's last *_avg_weights, matched to the run's domains by name."""
    run = tmp_path / "doge_run"
    run.mkdir()
    recs = [{"step": 5, "doge_avg_weights": {"a": 0.1, "b": 0.1, "c": 0.8}},
            {"step": 9, "doge_avg_weights": {"a": 0.5, "b": 0.3, "c": 0.2}}, {"step": 9, "loss": 2.0}]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    fit = tmp_path / "dml.json"
    fit.write_text(json.dumps({"weights": [0.6, 0.3, 0.1], "domains": ["c", "b", "a"]}))
    static = config_class("static")
    assert static(weights_from=str(run)).resolve(("c", "a", "b"), "r").weights == pytest.approx([0.2, 0.5, 0.3])
    assert static(weights_from=str(fit)).resolve(("a", "b", "c"), "r").weights == pytest.approx([0.1, 0.3, 0.6])
    with pytest.raises(ValueError, match=r"no value for domain\(s\) \['z'\]"):
        static(weights_from=str(fit)).resolve(("a", "z"), "r")
    aioli_cfg = config_class("aioli")(init_weights_from=str(fit), init_steps=10).resolve(("a", "b", "c"), "r")
    st = aioli_cfg.build(np.ones(3), total_steps=4000).init(3)
    np.testing.assert_allclose(np.asarray(st.weights), [0.1, 0.3, 0.6], rtol=1e-6)  # the init phase's mixture
    with pytest.raises(ValueError, match="needs mixer.init_steps > 0, the steps"):
        config_class("aioli")(init_weights=[0.2, 0.3, 0.5]).build(np.ones(3), total_steps=4000)
    with pytest.raises(ValueError, match="logged no \\*_avg_weights"):
        (tmp_path / "plain").mkdir()
        (tmp_path / "plain" / "metrics.jsonl").write_text('{"step": 1, "loss": 2.0}\n')
        static(weights_from=str(tmp_path / "plain")).resolve(("a",), "r")
