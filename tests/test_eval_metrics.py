"""The papers' aggregates of per-domain held-out losses, and seed-paired comparisons of runs."""

import json
import math

import numpy as np
import pytest

from ado_jax import cli
from ado_jax.compare import compare
from ado_jax.eval_metrics import aggregate, paired_interval, paired_median_ratio


def test_aggregates_weigh_domains_as_each_paper_does():
    losses = {"big": 1.0, "small": 3.0, "ood": 2.5}
    out = aggregate(losses, sizes={"big": 3.0, "small": 1.0}, eval_only=["ood"])
    assert out["eval_loss_mean"] == pytest.approx(2.0)  # uniform over the trained domains only
    assert out["eval_ppl_mean"] == pytest.approx((math.e + math.e ** 3) / 2)  # Aioli: mean perplexity
    assert out["eval_loss_natural"] == pytest.approx(0.75 * 1.0 + 0.25 * 3.0)  # ADO: size-weighted
    assert out["eval_loss_ood"] == pytest.approx(2.5)
    assert "eval_loss_ood" not in aggregate({"a": 1.0}, {"a": 1.0})
    with pytest.raises(ValueError, match=r"no held-out loss for domain\(s\) \['ood'\]"):
        aggregate({"a": 1.0}, {"a": 1.0}, eval_only=["ood"])


def test_paired_interval_matches_the_t_formula():
    d = [0.1, 0.3, 0.2]
    mean, half, n = paired_interval(d)
    assert (n, mean) == (3, pytest.approx(0.2))
    assert half == pytest.approx(4.303 * np.std(d, ddof=1) / math.sqrt(3))
    assert paired_interval([0.5])[1] != paired_interval([0.5])[1]  # NaN: no spread from one pair
    assert paired_interval([math.nan, 1.0, 2.0])[2] == 2


def test_paired_median_ratio_pairs_seeds_and_keeps_censored_runs_slow():
    base = np.array([1000.0, 2000, 4000, 8000, 3000, 5000, 6000, 7000])
    ratio, lo, hi = paired_median_ratio(base / 2, base)  # every seed twice as fast
    assert ratio == lo == hi == 0.5  # paired resamples: the halving holds in each one
    r, lo, hi = paired_median_ratio(np.roll(base, 3), base)  # same times, scrambled pairing
    assert r == 1.0 and lo < 1.0 < hi
    never = np.array([np.nan] * 5 + [1000.0] * 3)  # most seeds never reached the threshold
    r, lo, hi = paired_median_ratio(never, base)
    assert r == np.inf and hi == np.inf and lo < np.inf  # censored = slower, not dropped
    with pytest.raises(ValueError, match=r"shapes \(3,\) and \(2,\)"):
        paired_median_ratio(np.ones(3), np.ones(2))


def _run(path, seed, mixer, mean, ood):
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps({"train": {"seed": seed, "batch_size": 2, "seq_len": 4},
                                                  "mixer": {"name": mixer}}))
    recs = [{"step": 1, "loss": 1.0, "weights": {"a": 0.5, "b": 0.5}},
            {"step": 1, "eval_loss": {"a": mean - 0.1, "b": mean + 0.1, "x": ood}, "eval_loss_mean": mean,
             "eval_ppl_mean": math.exp(mean), "eval_loss_natural": mean, "eval_loss_ood": ood}]
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    return str(path)


def test_compare_against_pairs_runs_by_seed(tmp_path, capsys):
    # seeds listed in different orders: pairing must follow train.seed, not the argument order
    a = [_run(tmp_path / f"ado{s}", s, "ado", 2.0 + 0.1 * s, 3.0) for s in (0, 1, 2)]
    b = [_run(tmp_path / f"bal{s}", s, "balanced", 2.05 + 0.1 * s + 0.01 * s, 3.2) for s in (2, 0, 1)]
    rows = {r["metric"]: r for r in json.loads(compare(a, as_json=True, against=b))}
    diffs = [-0.05, -0.06, -0.07]
    assert rows["eval_loss_mean"]["mean_diff"] == pytest.approx(np.mean(diffs))
    assert rows["eval_loss_mean"]["ci95"] == pytest.approx(4.303 * np.std(diffs, ddof=1) / math.sqrt(3))
    assert rows["eval_loss_ood"]["mean_diff"] == pytest.approx(-0.2) and rows["x"]["pairs"] == 3
    assert cli.main(["compare", *a, "--against", *b]) == 0
    table = capsys.readouterr().out
    assert "| eval_loss_mean | 2.1000 | 2.1600 | -0.0600 | [" in table
    with pytest.raises(ValueError, match="no seed in common"):
        compare(a[:1], against=[b[0]])  # seed 0 vs seed 2
    with pytest.raises(ValueError, match="two runs with train.seed=0"):
        compare([a[0], a[0]], against=b)
