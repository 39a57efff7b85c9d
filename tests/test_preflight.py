"""csr.preflight's checks and csr.costs' projections: tiny models, made-up data folders and injected
failures, and one run of reproduce/preflight.py at tiny sizes (no full-size step is run here)."""

import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from csr import costs
from csr import experiments as E
from csr import preflight as P
from csr.sources import DataPlaces
from csr.spec import RunSpec

REPO = Path(__file__).resolve().parents[1]
# A network and batches small enough that building, tracing and stepping take seconds on a CPU.
TINY = dict(backbone="small", weights=None, sample_rate=8000, clip_samples=4000, n_fft=256, hop_length=64,
            n_mels=32, f_max=4000.0, projection_dim=16, labeled_batch=4, unlabeled_batch=4, eval_batch=4)
TINY_FLAGS = [f"--{k}={'none' if v is None else v}" for k, v in TINY.items()]


# ------------------------------------------------------------------------------------ csr.costs

def test_split_sizes_follow_the_published_folds():
    assert costs.split_sizes("esc10", 0.1, 1) == (30, 80)  # floor(0.1 x 32) = 3 clips per class kept
    assert costs.split_sizes("esc10", 0.25, 3) == (80, 80)
    assert costs.split_sizes("esc50", 1.0, 5) == (1600, 400)
    assert costs.split_sizes("us8k", 1.0, 4) == (8732 - 990, 990)


def test_run_work_follows_the_phases_and_batches():
    spec = RunSpec(method="proposed", fraction=0.1)  # 30 labeled clips: 4 steps an epoch
    assert costs.run_steps(spec) == {"supervised": 20 * 4, "proposed": 100 * 4, "eval": 120 * 80}
    clips = costs.run_clips(spec)
    assert clips == {"supervised": 80 * 8, "proposed": 400 * (8 + 2 * 40), "eval": 9600}
    assert costs.run_clips(spec, single_pass=True)["proposed"] == 400 * 80
    assert costs.run_clips(spec.replace(single_pass=True))["proposed"] == 400 * 80
    ablation = RunSpec(method="no_unlabeled", unlabeled="none", target="esc50")
    assert costs.proposed_step_clips(ablation) == 8 + 2 * 8  # the contrastive batch is the labeled one
    baseline = RunSpec(method="supervised", unlabeled="none")
    assert costs.run_steps(baseline) == {"supervised": 200 * 40, "proposed": 0, "eval": 200 * 80}
    assert costs.run_cost(baseline, {"supervised": 2.0, "proposed": 99.0, "eval": 0.5}) == 200 * 40 * 8 * 2 + 8000


def test_table_costs_count_a_shared_run_once():
    unit = {"supervised": 1.0, "proposed": 1.0, "eval": 0.0}
    rows = costs.table_costs(("table1", "table2", "ablation"), "paper", unit)
    assert [(r["table"], r["runs"], r["new_runs"]) for r in rows] == [
        ("table1", 75, 75), ("table2", 40, 30), ("ablation", 20, 10)]
    union = {s for t in ("table1", "table2", "ablation") for s in E.runs_for(t, "paper")}
    assert sum(r["new"] for r in rows) == pytest.approx(sum(costs.run_cost(s, unit) for s in union))
    for r in rows:
        assert r["total"] == pytest.approx(sum(r["run_costs"])) and r["new"] <= r["total"]


def test_makespan_starts_runs_in_order_on_the_first_free_device():
    assert costs.makespan([3, 1, 1, 1], 1) == 6
    assert costs.makespan([3, 1, 1, 1], 2) == 3
    assert costs.makespan([1, 1, 3], 2) == 4  # in order, as run_jobs starts them (not the best packing, 3)
    assert costs.makespan([], 4) == 0
    with pytest.raises(ValueError):
        costs.makespan([1], 0)


# ---------------------------------------------------------------------------------- the checks

def test_tensorflow_check_fails_when_the_driver_sees_gpus_tensorflow_does_not():
    cpu_build = {"is_cuda_build": False}
    cuda_build = {"is_cuda_build": True, "cuda_version": "12.3", "cudnn_version": "8"}
    check = P.tensorflow_check(["0"], tf_gpus=[], build_info=cpu_build)
    assert check.failed and '.[gpu]' in check.fix and "CPU build" in check.detail
    check = P.tensorflow_check(["0", "1"], tf_gpus=[], build_info=cuda_build)
    assert check.failed and "2 GPU(s)" in check.detail and "CUDA 12.3" in check.fix
    check = P.tensorflow_check([], tf_gpus=[], build_info=cuda_build)
    assert check.status == P.PASS and "CUDA 12.3, cuDNN 8" in check.detail and "on the CPU" in check.detail
    check = P.tensorflow_check(["0"], tf_gpus=["/physical_device:GPU:0"], build_info=cuda_build)
    assert check.status == P.PASS and "/physical_device:GPU:0" in check.detail


def test_weights_check(tmp_path, monkeypatch):
    import keras

    from csr.model import IMAGENET_FILE, build_backbone

    check = P.weights_check("resnet50v2", None, (32, 32, 3))
    assert check.status == P.PASS and "random initialisation" in check.detail

    small = tmp_path / "small.weights.h5"
    build_backbone("small", (32, 32, 3)).save_weights(str(small))
    assert P.weights_check("small", str(small), (32, 32, 3)).status == P.PASS
    check = P.weights_check("resnet50v2", str(small), (32, 32, 3))  # saved from the other backbone
    assert check.failed and str(small) in check.detail and "--backbone" in check.fix

    check = P.weights_check("resnet50v2", str(tmp_path / "absent.weights.h5"), (32, 32, 3))
    assert check.failed and "absent.weights.h5" in check.detail and "existing file" in check.fix

    def offline(*args, **kwargs):
        raise Exception("URL fetch failure: no network")  # what keras.utils.get_file raises

    monkeypatch.setattr(keras.utils, "get_file", offline)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    check = P.weights_check("resnet50v2", "imagenet", (32, 32, 3))
    assert check.failed
    assert str(tmp_path / "keras" / "models" / IMAGENET_FILE) in check.detail
    assert "--weights=none" in check.fix


def _esc_layout(root: Path, classes=(("dog", 0), ("rooster", 1))) -> Path:
    """An ESC-50-layout folder holding a few ESC-10 clips (the checks only stat the files)."""
    (root / "meta").mkdir(parents=True)
    (root / "audio").mkdir()
    rows = ["filename,fold,target,category,esc10,src_file,take"]
    for category, target in classes:
        for fold in range(1, 6):
            name = f"{fold}-{target}-A-{target}.wav"
            (root / "audio" / name).write_bytes(b"x" * 1000)
            rows.append(f"{name},{fold},{target},{category},True,{target},A")
    (root / "meta" / "esc50.csv").write_text("\n".join(rows) + "\n")
    return root


def test_dataset_checks(tmp_path):
    table2 = E.runs_for("table2", "paper")  # needs ESC-50 and UrbanSound8K
    esc = _esc_layout(tmp_path / "esc")
    places = DataPlaces(data_root=str(tmp_path / "data"), esc50_root=str(esc))
    checks = {c.name: c for c in P.dataset_checks(table2, places, download=True)}
    assert checks["data esc50"].status == P.PASS and "10 clips" in checks["data esc50"].detail
    assert "--esc50_root" in checks["data esc50"].detail
    assert checks["data us8k"].status == P.PASS and "will be downloaded" in checks["data us8k"].detail
    assert "6.0 GB" in checks["data us8k"].detail

    missing = {c.name: c for c in P.dataset_checks(table2, places, download=False)}["data us8k"]
    assert missing.failed and "UrbanSound8K.tar.gz" in missing.fix

    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "UrbanSound8K.tar.gz").write_bytes(b"x" * 2_000_000)
    archived = {c.name: c for c in P.dataset_checks(table2, places, download=False)}["data us8k"]
    assert archived.status == P.PASS and "will be verified and unpacked" in archived.detail

    # An empty dataset folder is what the download step refuses ("exists but is not complete"), not
    # something it will fetch.
    (tmp_path / "data" / "UrbanSound8K").mkdir()
    check = {c.name: c for c in P.dataset_checks(table2, places)}["data us8k"]
    assert check.failed and "is not a complete us8k" in check.detail and "remove" in check.fix

    partial = tmp_path / "data" / "UrbanSound8K" / "metadata"
    partial.mkdir(parents=True)
    (partial / "UrbanSound8K.csv").write_text("slice_file_name,fold,classID,class\na.wav,1,0,air\n")
    check = {c.name: c for c in P.dataset_checks(table2, places)}["data us8k"]
    assert check.failed and "1 rows, expected 8732" in check.detail and "remove" in check.fix

    (tmp_path / "esc" / "audio" / "1-0-A-0.wav").unlink()
    check = {c.name: c for c in P.dataset_checks(table2, places)}["data esc50"]
    assert check.failed and "missing" in check.detail
    table1_only_esc = [s for s in E.runs_for("table1", "paper") if s.unlabeled == "none"]
    assert [c.name for c in P.dataset_checks(table1_only_esc, places)] == ["data esc50"]


def test_cpu_input_reduces_only_the_resnet_at_full_size():
    spec, scale = P.cpu_input(RunSpec())
    assert P.image_shape(spec) == (64, 120, 3) and scale == pytest.approx(8.0)
    small = RunSpec(backbone="small", weights=None)
    assert P.cpu_input(small) == (small, 1.0)
    already = RunSpec(n_mels=32, hop_length=2000)
    assert P.cpu_input(already) == (already, 1.0)


def test_measure_steps_times_real_steps_and_steps_check_reports_them():
    spec = RunSpec(**TINY)
    measured = P.measure_steps(spec, steps=2)
    assert [t.kind for t in measured] == ["supervised", "proposed", "eval"]
    assert [t.clips for t in measured] == [4, 4 + 2 * 8, 4]
    for t in measured:
        assert len(t.seconds) == 2 and all(s > 0 for s in t.seconds) and len(t.losses) == 3
        assert t.finite and t.peak_bytes > 0 and t.memory == "peak RSS of this process"
    check = P.steps_check(measured, spec, spec, 1.0)
    assert check.status == P.PASS and "small at 32x63" in check.detail
    assert check.detail.count("clips/step") == 3


def test_steps_check_fails_on_a_non_finite_loss_and_says_how_many_runs_fit():
    spec = RunSpec()
    ok = P.StepTimes("supervised", 8, [0.1, 0.2, 0.3], [2.3, 2.2, 2.1, 2.0], 3 * 2**30, "GPU memory peak")
    bad = P.StepTimes("proposed", 88, [1.0, 1.0], [5.0, float("nan"), 5.0], 7 * 2**30, "GPU memory peak")
    check = P.steps_check([ok, bad], spec, spec, 1.0)
    assert check.failed and "proposed" in check.fix and "supervised" not in check.fix
    bad.losses[1] = 4.9
    check = P.steps_check([ok, bad], spec, spec, 1.0, gpu_memory=[40 * 2**30])
    assert check.status == P.PASS and "--runs_per_gpu=5 at most" in check.detail  # 0.9 x 40 GB / 7 GB
    assert "200 ms/step" in check.detail  # the median


def test_mix_on_outcomes_agree_and_differences_name_what_differs():
    spec = RunSpec(**TINY)
    outcomes = P.mix_on_outcomes(spec)
    assert P.mix_on_differences(outcomes["host"], outcomes["device"]) == []
    assert all(math.isfinite(v) for v in outcomes["device"]["losses"].values())

    changed = {"views": dict(outcomes["device"]["views"]), "losses": dict(outcomes["device"]["losses"])}
    changed["views"]["s2_aug"] = changed["views"]["s2_aug"] + 1e-2 * np.abs(changed["views"]["s2_aug"]).max()
    changed["losses"]["reg_loss"] *= 1.01
    found = P.mix_on_differences(outcomes["host"], changed)
    assert len(found) == 2 and found[0].startswith("view s2_aug") and found[1].startswith("reg_loss")

    check = P.mix_on_check(spec, on_gpu=False)
    assert check.status == P.SKIP and "no GPU" in check.detail


def test_projection_check_scales_the_measured_times():
    measured = [P.StepTimes("supervised", 8, [0.8], [1.0]), P.StepTimes("proposed", 88, [8.8], [1.0]),
                P.StepTimes("eval", 32, [3.2], [1.0])]  # 0.1 s per clip of every kind
    profile = E.get_profile("quick")
    per_clip = {"supervised": 0.2, "proposed": 0.2, "eval": 0.2}  # x 2 below
    runs = [costs.run_cost(s, per_clip) for s in E.runs_for("ablation", profile)]
    check = P.projection_check(["ablation"], profile, measured, 2.0, 2, "note")
    assert check.status == P.PASS
    assert f"{sum(runs) / 3600:8.1f} h of device time" in check.detail
    assert f"{costs.makespan(runs, 2) / 3600:8.1f} h on 2 device(s)" in check.detail
    assert "measured x 2.0" in check.detail and "(note;" in check.detail


# --------------------------------------------------------------------------- the script itself

def test_preflight_script_reports_every_check_and_fails_on_missing_data(tmp_path):
    """Tiny network, quick profile: every check runs; UrbanSound8K is absent and downloads are off,
    so the data check fails, says what to do, and the exit status is 1."""
    esc = _esc_layout(tmp_path / "esc")
    cmd = [sys.executable, str(REPO / "reproduce" / "preflight.py"), *TINY_FLAGS, "--profile=quick",
           "--tables=ablation", f"--esc50_root={esc}", f"--data_root={tmp_path / 'data'}", "--nodownload",
           "--steps=1", "--jobs=2"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=tmp_path,
                         env={**os.environ, "CUDA_VISIBLE_DEVICES": "-1"})
    assert out.returncode == 1, out.stdout + out.stderr
    lines = [ln for ln in out.stdout.splitlines() if ln[:4] in ("PASS", "FAIL", "SKIP")]
    assert [ln.split(":")[0] for ln in lines] == [
        "PASS  TensorFlow", "PASS  backbone weights", "PASS  data esc50", "FAIL  data us8k",
        "PASS  training steps", "SKIP  mix_on device = host", "PASS  projected hours"]
    assert "what to do: run `make data`" in out.stdout
    assert "2 run(s) at a time on 1 CPU" in out.stdout
    assert "preflight: 5 PASS, 1 FAIL, 1 SKIP" in out.stdout
