"""scripts/gpu_check.py (the GPU check) on the CPU: plan, JSON layout, node + probe section.

No GPU is needed: the script's CUDA-independent parts run with ``--device cpu`` on tiny sizes;
what only CUDA exercises (fp16, ONNX Runtime's CUDA/TensorRT providers) is skipped there.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from shared_data import REPO

SCRIPT = REPO / "scripts" / "gpu_check.py"


def run(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True,
                          text=True, timeout=timeout, check=False, cwd=REPO)


def test_dry_run_prints_the_plan() -> None:
    out = run("--dry-run")
    assert out.returncode == 0, out.stderr
    plan = json.loads(out.stdout)
    assert plan["device"] == "cuda" and plan["precisions"] == ["fp32", "fp16"]
    assert plan["camera"] == [2048, 1024] and plan["input_size"] == "native"
    assert {"lightfpn", "pidnet_s", "ddrnet_23_slim", "twinlitenet"} <= set(plan["models"])
    assert plan["node"] and plan["onnxruntime"]
    bad = run("--dry-run", "--models", "no_such_net")
    assert bad.returncode != 0 and "no_such_net" in bad.stderr


def test_shell_wrapper_parses() -> None:
    assert subprocess.run(["bash", "-n", str(REPO / "scripts" / "gpu_check.sh")],
                          check=False).returncode == 0


def test_cpu_plumbing_run_writes_one_json(tmp_path: Path) -> None:
    out = tmp_path / "g.json"
    res = run("--device", "cpu", "--models", "tiny_seg", "--camera", "96x64", "--precisions",
              "fp32,bf16", "--frames", "2", "--warmup", "1", "--agreement-frames", "1",
              "--no-node", "--out", str(out))
    assert res.returncode == 0, res.stderr
    data = json.loads(out.read_text())
    assert data["errors"] == [] and data["finished"]
    assert data["environment"]["torch"] and data["plan"]["models"] == ["tiny_seg"]
    entry = data["models"]["results"]["tiny_seg"]
    for precision in ("fp32", "bf16"):
        r = entry[precision]
        assert r["frame_size"] == [96, 64] and r["precision"] == precision
        assert r["stages_ms"]["inference"]["median"] > 0 and r["fps"] > 0
    agree = entry["bf16_vs_fp32_label_agreement"]
    assert 0.0 <= agree["min"] <= agree["mean"] <= 1.0 and len(agree["per_frame"]) == 1
    assert data["onnxruntime"]["skipped"] == "not a CUDA run"
    assert "node" not in data  # --no-node


def test_time_budget_skips_what_does_not_fit(tmp_path: Path) -> None:
    out = tmp_path / "g.json"
    res = run("--device", "cpu", "--models", "tiny_seg", "--budget-s", "0", "--out", str(out))
    assert res.returncode == 0, res.stderr
    data = json.loads(out.read_text())
    assert data["models"] == {"skipped": "time budget"}
    assert data["node"] == {"skipped": "time budget"}


@pytest.mark.integration
def test_node_section_measures_a_running_node(tmp_path: Path) -> None:
    out = tmp_path / "g.json"
    res = run("--device", "cpu", "--models", "tiny_seg", "--precisions", "fp32", "--camera",
              "96x64", "--frames", "2", "--warmup", "1", "--agreement-frames", "1",
              "--no-ort", "--node-model", "tiny_seg", "--node-frames", "8", "--out", str(out))
    data = json.loads(out.read_text())
    assert res.returncode == 0, (res.stderr, data.get("errors"))
    node = data["node"]
    assert node["node_returncode"] == 0, node["node_log_tail"]
    probe = node["probe"]
    assert probe["frames_sent"] == 8 and probe["frames_received"] >= 6
    assert probe["latency_p50_ms"] > 0
    assert probe["node"]["model"] == "tiny_seg" and probe["node"]["backend"]
    assert probe["node"]["precision"] and probe["node"]["precision_reason"]
