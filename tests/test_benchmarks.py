"""benchmarks/device_check.py --smoke: runs on CPU and writes its JSON and markdown table."""

import json
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.mark.slow   # ~40-60 s on 2 shared CPU cores (every section compiles a train step or a fit)
def test_device_check_smoke_writes_its_table(tmp_path):
    sys.path.insert(0, str(BENCH))
    try:
        import device_check
        result = device_check.main(["--smoke", "--out-dir", str(tmp_path)])
    finally:
        sys.path.remove(str(BENCH))
    out = tmp_path / "cpu"
    data = json.loads((out / "device_check.json").read_text())
    assert data["setup"]["backend"] == "cpu" and data["setup"]["smoke"] is True
    assert data["step"][0]["preset"] == "tiny" and data["step"][0]["tokens_per_s"] > 0
    assert data["fitter"][0]["domains"] == 22 and data["fitter"][0]["domains_worse_than_cold_1e6"] == 0
    assert data["mixer"][0]["ado_between_fits_s"] > 0 and "eval_extra_pct" in data["heldout"]
    table = (out / "device_check.md").read_text()
    for heading in ("## Train step", "## Power-law fitter", "## ADO update", "## Held-out evaluation"):
        assert heading in table
    assert result["setup"]["total_s"] > 0


def test_peak_table_matches_device_kinds():
    sys.path.insert(0, str(BENCH))
    try:
        from step_bench import peak_bf16
    finally:
        sys.path.remove(str(BENCH))
    assert peak_bf16("NVIDIA H100 80GB HBM3") == 989e12 and peak_bf16("NVIDIA H100 PCIe") == 756e12
    assert peak_bf16("NVIDIA H200") == 989e12 and peak_bf16("NVIDIA A100-SXM4-80GB") == 312e12
    assert peak_bf16("TPU v5 lite") == 197e12 and peak_bf16("TPU v5p") == 459e12
    assert peak_bf16("TPU v4") == 275e12 and peak_bf16("TPU v3") == 61.5e12
    assert peak_bf16("cpu") != peak_bf16("cpu")      # unknown: NaN
