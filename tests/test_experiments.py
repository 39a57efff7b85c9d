"""csr.experiments (the registry of the paper's runs) and reproduce/run_experiment.py's planning.

Nothing here trains: the registry is checked against the paper's printed numbers, the planning
against fake result.json files, and the worker hand-over by reading the spec file with run_fold.py's
own code in a subprocess (it must get exactly the RunSpec it was given).
"""

import dataclasses
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from csr import experiments as E
from csr import jobs as jobs_mod
from csr import rundir, sources
from csr.sources import DataPlaces
from csr.spec import RunSpec

REPO = Path(__file__).resolve().parents[1]
SHARED_ESC10 = REPO.parent / "shared" / "data" / "esc10"


def load_script(name):
    spec = importlib.util.spec_from_file_location(f"csr_test_{name}", REPO / "reproduce" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the file executes
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def runexp():
    return load_script("run_experiment")


def finish(root, spec, best=0.5, last=0.4):
    path = rundir.path(root, spec)
    path.mkdir(parents=True, exist_ok=True)
    (path / "result.json").write_text(json.dumps({"best": best, "last": last}))


# ----------------------------------------------------------------------------------- the registry
def test_table1_has_every_own_cell_with_the_papers_numbers():
    own = [c for c in E.cells("table1") if not c.quoted]
    assert len(own) == 3 * 5 * 2
    keys = {(c.method, c.metric, c.fraction) for c in own}
    assert keys == {(m, k, f) for m in ("supervised", "supervised_imagenet", "proposed")
                    for k in ("best", "last") for f in (0.1, 0.25, 0.5, 0.75, 1.0)}
    by = {(c.method, c.metric, c.fraction): (c.paper_mean, c.paper_std) for c in own}
    # Spot checks, one per row of the paper's Table 1, at different fractions.
    assert by[("supervised", "best", 0.1)] == (59.0, 5.0)
    assert by[("supervised", "last", 0.75)] == (66.8, 5.0)
    assert by[("supervised_imagenet", "best", 0.25)] == (76.2, 7.1)
    assert by[("supervised_imagenet", "last", 1.0)] == (89.1, 3.6)
    assert by[("proposed", "best", 1.0)] == (95.2, 4.0)
    assert by[("proposed", "last", 0.1)] == (61.8, 0.4)
    # Row means of the paper's table (guards against a shifted or mistyped value anywhere).
    def row_mean(method, metric):
        vals = [by[(method, metric, f)][0] for f in E.FRACTIONS]
        return round(sum(vals) / 5, 2)
    assert row_mean("supervised", "best") == round((59.0 + 67.2 + 75.0 + 76.2 + 81.2) / 5, 2)
    assert row_mean("supervised_imagenet", "last") == round((49.9 + 73.0 + 82.5 + 84.9 + 89.1) / 5, 2)
    assert row_mean("proposed", "last") == round((61.8 + 75.6 + 85.4 + 87.6 + 92.4) / 5, 2)
    stds = sum(by[k][1] for k in by)
    assert stds == pytest.approx(5.0 + 2.2 + 2.9 + 3.7 + 1.6 + 5.8 + 2.4 + 1.6 + 5.0 + 1.3
                                 + 4.8 + 7.1 + 1.5 + 1.7 + 3.6 + 4.8 + 7.7 + 1.7 + 1.9 + 3.6
                                 + 1.7 + 3.7 + 1.4 + 1.3 + 4.0 + 0.4 + 3.2 + 1.9 + 3.2 + 2.5)
    assert {c.unlabeled for c in own if c.method == "proposed"} == {"esc40"}
    assert {c.unlabeled for c in own if c.method != "proposed"} == {"none"}
    assert {c.target for c in own} == {"esc10"} and {c.experiment for c in own} == {"table1"}


def test_table1_quoted_rows_are_marked_and_never_run():
    quoted = [c for c in E.cells("table1") if c.quoted]
    assert {c.row for c in quoted} == {"Supervised [19]", "Deep-Co-Training† [19]"}
    assert len(quoted) == 10
    values = {(c.row, c.column): c.paper_mean for c in quoted}
    assert values[("Supervised [19]", "10%")] == 67.8
    assert values[("Supervised [19]", "75%")] is None  # "-" in the paper
    assert values[("Supervised [19]", "100%")] == 91.7
    assert values[("Deep-Co-Training† [19]", "50%")] == 91.7
    assert values[("Deep-Co-Training† [19]", "100%")] is None
    assert all(c.method is None and c.metric is None for c in quoted)
    assert all(E.runs_for_cell(c, E.PROFILES["paper"]) == [] for c in quoted)
    with pytest.raises(ValueError, match="quoted from other work"):
        E.spec_for(quoted[0], 1, E.PROFILES["paper"])


def test_table2_rows_report_last_and_reuse_table1():
    rows = E.cells("table2")
    assert [(c.target, c.unlabeled, c.method, c.paper_mean, c.paper_std) for c in rows] == [
        ("esc10", "none", "supervised_imagenet", 89.1, 3.6),
        ("esc10", "esc40", "proposed", 92.4, 2.5),
        ("esc50", "none", "supervised_imagenet", 73.6, 1.0),
        ("esc50", "us8k", "proposed", 83.5, 3.0),
        ("us8k", "none", "supervised_imagenet", 78.6, 4.3),
        ("us8k", "esc50", "proposed", 79.7, 4.3)]
    assert {c.metric for c in rows} == {"last"}
    # Table 2's ESC10 rows are Table 1's 100 % last cells: same number, same runs.
    t1 = {(c.method, c.metric, c.fraction): c for c in E.cells("table1") if not c.quoted}
    paper = E.PROFILES["paper"]
    for row in rows[:2]:
        twin = t1[(row.method, "last", 1.0)]
        assert (row.paper_mean, row.paper_std) == (twin.paper_mean, twin.paper_std)
        assert E.runs_for_cell(row, paper) == E.runs_for_cell(twin, paper)


def test_table3_ablation_columns_and_shared_runs():
    cols = E.cells("ablation")
    assert [(c.column, c.method, c.unlabeled, c.paper_mean, c.paper_std) for c in cols] == [
        ("Proposed", "proposed", "us8k", 83.5, 3.0),
        ("-Mixing", "no_mixing", "us8k", 82.0, 3.0),
        ("-Unlabeled", "no_unlabeled", "none", 79.5, 1.6),
        ("Supervised", "supervised_imagenet", "none", 73.6, 1.0)]
    assert {c.target for c in cols} == {"esc50"} and {c.metric for c in cols} == {"last"}
    # The paper's text: -Unlabeled is 5.9 points, -Mixing 8.4 points above supervised.
    assert cols[2].paper_mean - cols[3].paper_mean == pytest.approx(5.9)
    assert cols[1].paper_mean - cols[3].paper_mean == pytest.approx(8.4)
    t2 = {(c.target, c.method): c for c in E.cells("table2")}
    paper = E.PROFILES["paper"]
    for col in (cols[0], cols[3]):
        assert E.runs_for_cell(col, paper) == E.runs_for_cell(t2[("esc50", col.method)], paper)
    for cell in E.CELLS:  # every registered combination is one RunSpec accepts
        if not cell.quoted:
            RunSpec(method=cell.method, target=cell.target, unlabeled=cell.unlabeled)


def test_cell_counts():
    assert len(E.CELLS) == 30 + 10 + 6 + 4 + 2 * 2 * 3 * 4  # sensitivity: fractions x metrics x tau x lambda
    assert len({E.cell_key(c) for c in E.CELLS}) == len(E.CELLS)


def test_runs_for_deduplicates_and_counts_folds():
    paper, quick = E.PROFILES["paper"], E.PROFILES["quick"]
    t1 = E.runs_for("table1", paper)
    assert len(t1) == len(set(t1)) == 3 * 5 * 5  # best and last share a run
    t2 = E.runs_for("table2", paper)
    assert len(t2) == 2 * 5 + 2 * 5 + 2 * 10  # US8K has 10 folds
    assert sum(s.experiment == "table1" for s in t2) == 10  # Table 1's 100 % runs
    assert set(s for s in t2 if s.experiment == "table1") <= set(t1)
    ab = E.runs_for("ablation", paper)
    assert len(ab) == 4 * 5 and sum(s.experiment == "ablation" for s in ab) == 10
    assert set(s for s in ab if s.experiment == "table2") <= set(t2)
    fig = E.runs_for("figure3", paper)
    assert set(fig) <= set(t1) and len(fig) == 3 * 5
    assert {s.fraction for s in fig} == {1.0}
    every = set(t1) | set(t2) | set(ab) | set(fig)
    assert len(every) == 75 + 30 + 10  # distinct runs behind the whole paper
    # The run directory of each distinct run is distinct too (nothing overwrites anything).
    assert len({rundir.path("r", s) for s in every}) == len(every)
    assert len(E.runs_for("table1", quick)) == 3 * 5 * 2
    assert {s.fold for s in E.runs_for("table2", quick)} == {1, 2}
    with pytest.raises(ValueError, match="unknown table"):
        E.runs_for("table4", paper)


def test_profiles_shape_the_specs():
    cell = next(c for c in E.cells("table1") if c.method == "proposed" and c.fraction == 0.1)
    paper = E.spec_for(cell, 3, E.PROFILES["paper"])
    assert paper == RunSpec(experiment="table1", method="proposed", target="esc10", unlabeled="esc40",
                            fraction=0.1, fold=3, seed=0)
    assert paper.run_id() == "esc10-esc40-proposed-frac0.1-fold3-seed0"
    quick = E.spec_for(cell, 1, E.PROFILES["quick"])
    assert (quick.backbone, quick.weights, quick.warmup_epochs, quick.joint_epochs,
            quick.supervised_epochs) == ("small", None, 2, 4, 6)
    assert (quick.bn_momentum, quick.hop_length, quick.n_mels) == (0.9, 920, 64)
    assert (quick.sample_rate, quick.n_fft, quick.temperature) == (22050, 1024, 0.01)  # the paper's
    assert E.result_root("results", E.PROFILES["quick"]) == Path("results/quick")
    assert E.result_root("results", E.PROFILES["paper"]) == Path("results")
    assert E.get_profile("paper", max_folds=1).folds("us8k") == (1,)
    assert "NOT comparable" in E.PROFILES["quick"].describe()
    assert "NOT comparable" not in E.PROFILES["paper"].describe()
    with pytest.raises(ValueError, match="unknown profile"):
        E.get_profile("fast")


def test_profile_round_trips_through_profile_json(tmp_path):
    profile = E.get_profile("quick", max_folds=1, seeds=[3, 4])
    profile = E.Profile(**{**profile.to_json(), "standins": (("esc40", "us8k"),), "notes": ("n",)})
    E.save_profile(tmp_path, profile)
    assert E.load_profile(tmp_path, "quick") == profile
    with pytest.raises(ValueError, match="records profile 'quick'"):
        E.load_profile(tmp_path, "paper")
    assert E.load_profile(tmp_path / "none", "paper") == E.PROFILES["paper"]


def write_esc_meta(root, esc10_only):
    (root / "meta").mkdir(parents=True)
    rows = ["filename,fold,target,category,esc10,src_file,take",
            "1-1-A-0.wav,1,0,dog,True,1,A", "1-2-A-1.wav,1,1,rooster,True,2,A"]
    if not esc10_only:
        rows.append("1-3-A-2.wav,1,2,pig,False,3,A")
    (root / "meta" / "esc50.csv").write_text("\n".join(rows) + "\n")


def test_standin_replaces_absent_esc40_only_where_allowed(tmp_path):
    esc, us8k = tmp_path / "esc", tmp_path / "us8k"
    write_esc_meta(esc, esc10_only=True)
    roots = sources.DataRoots(esc, us8k)
    quick, paper = E.PROFILES["quick"], E.PROFILES["paper"]
    assert E.with_standins(paper, roots) == paper  # the paper profile never substitutes
    with pytest.raises(FileNotFoundError, match="holds no ESC-40 clips.*data/synthesize.py"):
        E.with_standins(quick, roots, ["table1"])
    assert E.with_standins(quick, roots, ["ablation"]) == quick  # no ESC-40 needed, no error
    (us8k / "metadata").mkdir(parents=True)
    (us8k / "metadata" / "UrbanSound8K.csv").write_text("slice_file_name,fold,classID,class\n")
    sub = E.with_standins(quick, roots, ["ablation"])  # decided by the data, whatever the table
    assert sub.standins == (("esc40", "us8k"),)
    assert any("ESC-40 is absent" in n for n in sub.notes) and "ESC-40 is absent" in sub.describe()
    specs = E.runs_for("table1", sub)
    assert {s.unlabeled for s in specs if s.method == "proposed"} == {"us8k"}
    assert {s.unlabeled for s in specs if s.method != "proposed"} == {"none"}
    full = tmp_path / "full"
    write_esc_meta(full, esc10_only=False)
    assert E.with_standins(quick, sources.DataRoots(full, us8k)) == quick


@pytest.mark.skipif(not SHARED_ESC10.exists(), reason=f"{SHARED_ESC10} not present")
def test_shared_esc10_folder_has_no_esc40(tmp_path):
    roots = sources.DataRoots(SHARED_ESC10, tmp_path / "absent")
    with pytest.raises(FileNotFoundError, match="holds no ESC-40"):
        E.with_standins(E.PROFILES["quick"], roots, ["table1"])


# --------------------------------------------------------------------------- run_experiment.py
def test_plan_lists_runs_without_result_json(tmp_path, runexp):
    profile = E.PROFILES["quick"]
    specs, missing = runexp.plan(["table1", "figure3"], profile, tmp_path)
    assert specs == E.runs_for("table1", profile)  # figure3's runs are table1's
    assert missing == specs
    done = [specs[0], specs[7]]
    for spec in done:
        finish(tmp_path, spec)
    started = rundir.path(tmp_path, specs[3])  # a folder without result.json is still missing
    started.mkdir(parents=True)
    (started / "history.csv").write_text("epoch\n0\n")
    specs2, missing2 = runexp.plan(["table1", "figure3"], profile, tmp_path)
    assert specs2 == specs
    assert missing2 == [s for s in specs if s not in done]
    _, ab_missing = runexp.plan(["table2", "ablation"], profile, tmp_path)
    assert len(ab_missing) == len(set(E.runs_for("table2", profile)) | set(E.runs_for("ablation", profile)))


def test_worker_gets_the_exact_runspec_through_its_spec_file(tmp_path, runexp):
    """run_experiment writes each RunSpec to a file; run_fold.py --spec reads back the same spec."""
    places = DataPlaces("data/datasets", "/esc", "/us8k", "/cache")
    fast = E.get_profile("quick").with_overrides(joint_lr=2e-4, temperature=0.1, mix_snr_db=(0.0, 10.0),
                                                 noise_colors=("white", "pink"), mixed_precision=True)
    specs = [E.runs_for("table1", "quick")[-1], E.runs_for("ablation", "paper")[5],
             E.runs_for("table1", fast)[0], E.runs_for("table2", fast)[-1]]
    assert specs[3].joint_lr == 2e-4 and "joint lr 0.0002" in fast.describe()
    assert "temperature=0.1" in fast.describe()
    jobs = jobs_mod.make_jobs(specs, tmp_path, places, python="PY")
    for job in jobs:
        assert job.command[:4] == ("PY", "-m", "csr.cli.run_fold", f"--spec={job.spec_file}")
        assert "--nodownload" in job.command and f"--out_dir={tmp_path}" in job.command
        assert {"--esc50_root=/esc", "--us8k_root=/us8k", "--cache_dir=/cache"} <= set(job.command)
        assert job.spec_file == tmp_path / job.spec.experiment / f"{job.spec.run_id()}.spec.json"
        jobs_mod.launch(dataclasses.replace(job, command=("true",)), {})  # writes the spec file
    script = (
        "import json, sys\n"
        "from csr.cli import run_fold\n"
        "for path in json.loads(sys.argv[1]):\n"
        "    run_fold.FLAGS.unparse_flags()\n"
        "    run_fold.FLAGS(['run_fold', '--spec=' + path])\n"
        "    print(json.dumps(run_fold.spec_from_command_line().to_json()))\n")
    out = subprocess.run([sys.executable, "-c", script, json.dumps([str(j.spec_file) for j in jobs])],
                         capture_output=True, text=True, cwd=REPO, timeout=120)
    assert out.returncode == 0, out.stderr
    rebuilt = [RunSpec.from_json(json.loads(line)) for line in out.stdout.splitlines()]
    assert rebuilt == specs
    assert (rebuilt[0].bn_momentum, rebuilt[0].hop_length, rebuilt[0].n_mels) == (0.9, 920, 64)
    assert rebuilt[2].noise_colors == ("white", "pink") and rebuilt[2].mixed_precision


def test_run_fold_refuses_flags_beside_a_spec_file(tmp_path):
    spec_file = tmp_path / "run.spec.json"
    spec_file.write_text(json.dumps(RunSpec().to_json()))
    done = subprocess.run([sys.executable, str(REPO / "reproduce" / "run_fold.py"), f"--spec={spec_file}",
                           "--fold=2"], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert done.returncode != 0 and "drop --fold" in done.stderr


def test_every_runspec_field_is_a_run_fold_flag():
    from absl import flags

    from csr.cli.spec_flags import define_spec_flags, spec_from_flags
    from csr.spec import FIELDS

    values = flags.FlagValues()
    define_spec_flags(FIELDS, flag_values=values)
    values(["prog", "--temperature=0.1", "--mix_snr_db=-3,9", "--noise_colors=white,grey", "--weights=none",
            "--method=supervised", "--unlabeled=none", "--mixed_precision"])
    spec = spec_from_flags(FIELDS, values)
    assert spec == RunSpec(temperature=0.1, mix_snr_db=(-3.0, 9.0), noise_colors=("white", "grey"),
                           weights=None, method="supervised", unlabeled="none", mixed_precision=True)
    fresh = flags.FlagValues()
    define_spec_flags(FIELDS, flag_values=fresh)
    fresh(["prog"])
    assert spec_from_flags(FIELDS, fresh) == RunSpec()  # the flags' defaults are the paper's


def test_jobs_log_beside_the_run_dir(tmp_path, runexp):
    spec = E.runs_for("table1", "paper")[0]
    (job,) = jobs_mod.make_jobs([spec], tmp_path, DataPlaces())
    assert job.log == tmp_path / "table1" / f"{spec.run_id()}.log"


def test_visible_gpus(runexp):
    class Out:
        returncode = 0
        stdout = "GPU 0: A100 (UUID: GPU-1)\nGPU 1: A100 (UUID: GPU-2)\n"

    assert jobs_mod.visible_gpus({}, runner=lambda *a, **k: Out()) == ["0", "1"]
    assert jobs_mod.visible_gpus({"CUDA_VISIBLE_DEVICES": "3,5"}, runner=None) == ["3", "5"]
    assert jobs_mod.visible_gpus({"CUDA_VISIBLE_DEVICES": "-1"}, runner=None) == []

    def missing(*a, **k):
        raise FileNotFoundError("nvidia-smi")

    assert jobs_mod.visible_gpus({}, runner=missing) == []


def test_run_jobs_one_gpu_per_job_and_continues_past_failures(tmp_path, runexp):
    specs = E.runs_for("table1", "quick")[:6]
    jobs = jobs_mod.make_jobs(specs, tmp_path, DataPlaces())
    seen = []

    def fake(job, env):
        seen.append((job.spec.fold, job.spec.fraction, env.get("CUDA_VISIBLE_DEVICES"),
                     env.get("TF_FORCE_GPU_ALLOW_GROWTH")))
        return 1 if job is jobs[2] else 0

    failures = jobs_mod.run_jobs(jobs, 2, ["0", "1"], launcher=fake, base_env={}, echo=lambda m: None)
    assert [(j, s) for j, s in failures] == [(jobs[2], 1)]
    assert len(seen) == 6 and {g for _, _, g, _ in seen} <= {"0", "1"}
    assert all(grow is None for *_, grow in seen)  # one job per GPU: no sharing
    seen.clear()
    jobs_mod.run_jobs(jobs, 3, ["0"], launcher=fake, base_env={}, echo=lambda m: None)
    assert {(g, grow) for _, _, g, grow in seen} == {("0", "true")}  # shared GPU: allow growth
    seen.clear()
    jobs_mod.run_jobs(jobs, 2, [], launcher=fake, base_env={}, echo=lambda m: None)
    assert {g for _, _, g, _ in seen} == {None}  # CPU: CUDA_VISIBLE_DEVICES untouched


def test_launch_appends_output_to_the_log(tmp_path, runexp):
    log = tmp_path / "table1" / "x.log"
    job = jobs_mod.Job(E.runs_for("table1", "quick")[0],
                     (sys.executable, "-c", "import os, sys; print('gpu=' + os.environ['CUDA_VISIBLE_DEVICES']);"
                      " sys.exit(3)"), log, tmp_path / "x.spec.json")
    env = jobs_mod.job_env({"PATH": "/usr/bin:/bin"}, "1", shared=False)
    assert jobs_mod.launch(job, env) == 3
    assert jobs_mod.launch(job, env) == 3
    text = log.read_text()
    assert text.count("gpu=1") == 2 and text.count("=== ") == 2  # appended, with the command line


def test_execution_options_reach_the_worker_and_keep_the_run_id(tmp_path, runexp):
    spec = E.runs_for("table1", "paper")[0]
    fast_profile = E.get_profile("paper").with_overrides(strategy="mirrored", mixed_precision=True)
    fast = E.runs_for("table1", fast_profile)[0]
    assert (fast.strategy, fast.mixed_precision) == ("mirrored", True)
    assert fast.run_id() == spec.run_id()
    (job,) = jobs_mod.make_jobs([fast], tmp_path, DataPlaces(), python="PY")
    jobs_mod.launch(dataclasses.replace(job, command=("true",)), {})
    assert json.loads(job.spec_file.read_text())["strategy"] == "mirrored"


def test_progress_counts_runs_and_estimates_the_time_left():
    spec = E.runs_for("table1", "quick")[0]
    job = jobs_mod.Job(spec, ("true",), Path("x.log"), Path("x.spec.json"))
    now = [0.0]
    lines = []
    progress = jobs_mod.Progress(4, lines.append, clock=lambda: now[0])
    now[0] = 120.0
    progress.finished(job, 0, {"best": 0.5, "last": 0.25})
    assert lines[-2] == f"{job.name} ok: best 50.0%, last 25.0%"
    assert lines[-1] == "[1/4 runs done, 0 failed, 2 min elapsed, about 6 min left]"
    now[0] = 3 * 3600.0
    progress.finished(job, 3)
    assert "FAILED (exit 3; see x.log)" in lines[-2]
    assert lines[-1] == "[2/4 runs done, 1 failed, 3 h 00 min elapsed, about 3 h 00 min left]"


def test_sensitivity_grid_shares_the_paper_setting_and_the_lambda_zero_control():
    paper, table1 = E.runs_for("sensitivity", "paper"), E.runs_for("table1", "paper")
    assert len(paper) == 2 * 10 * 5  # fractions x (3 tau x 3 nonzero lambda + one lambda = 0) x folds
    shared = set(paper) & set(table1)
    assert len(shared) == 2 * 5 and {(s.temperature, s.reg_weight) for s in shared} == {(0.01, 0.05)}
    controls = [s for s in paper if s.reg_weight == 0]
    assert len(controls) == 2 * 5 and {s.temperature for s in controls} == {0.01}  # one run for every tau
    new = [s for s in paper if s not in shared]
    assert {s.experiment for s in new} == {"sensitivity"} and len({rundir.path("r", s) for s in new}) == 90
    ids = {s.run_id() for s in paper if s.fold == 1 and s.fraction == 0.1}
    assert "esc10-esc40-proposed-frac0.1-fold1-seed0-tau0.001-lambda0.2" in ids
    assert "esc10-esc40-proposed-frac0.1-fold1-seed0-lambda0" in ids
    ((a, b), *_) = E.comparison_pairs(E.COMPARISONS[-1])
    assert (a.settings, b.settings) == ((), (("reg_weight", 0.0),)) and a.fraction == b.fraction


def test_seeds_multiply_every_cell_by_its_seeds():
    profile = E.get_profile("quick", seeds=[0, 1, 2])
    cell = next(c for c in E.cells("table1") if not c.quoted)
    runs = E.runs_for_cell(cell, profile)
    assert sorted((s.fold, s.seed) for s in runs) == [(f, s) for f in (1, 2) for s in (0, 1, 2)]
    assert len({s.run_id() for s in runs}) == 6
    assert "seeds 0, 1, 2" in profile.describe()
    with pytest.raises(ValueError, match="do not override `seed`"):
        E.get_profile("quick").with_overrides(seed=3)
