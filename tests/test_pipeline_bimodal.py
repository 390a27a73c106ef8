"""The whole chain on the two-mode task, through the CLI as a user runs it:
fetch -> train-teacher -> train-reward -> distill (reward weight 1 and 0) -> rollout.

The data hold both goals in equal parts; goal A pays 1.0, goal B 0.5. The teacher and a plain
CTD student (reward weight 0) must keep both modes; the RACTD student must pick A."""

from __future__ import annotations

import json
import os

import pytest
import torch
from typer.testing import CliRunner

from ractd_cli.cli import app
from ractd_cli.data.fetch import torch_threads

runner = CliRunner()
pytestmark = pytest.mark.slow
EPISODES = 50


def ractd(*args: str) -> dict:
    r = runner.invoke(app, [*args, "--json"])
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    old = os.environ.get("RACTD_CACHE_DIR")
    os.environ["RACTD_CACHE_DIR"] = str(tmp_path_factory.mktemp("chain-cache"))
    try:
        ractd("fetch", "bimodal", "--source", "local", "--steps", "8000")
        ids = {"teacher": ractd("train-teacher", "--env", "bimodal", "--preset", "tiny")["id"]}
        ids["reward"] = ractd("train-reward", "--env", "bimodal", "--preset", "tiny")["id"]
        doc = ractd("distill", "--env", "bimodal", "--preset", "tiny")  # the task's default weights (1, 1, 1)
        ids["ractd"], ids["ractd_terms"] = doc["id"], doc["loss_terms"]
        ids["ctd"] = ractd("distill", "--env", "bimodal", "--preset", "tiny", "--reward-weight", "0")["id"]
        yield {"cache": os.environ["RACTD_CACHE_DIR"], **ids}
    finally:
        if old is None:
            os.environ.pop("RACTD_CACHE_DIR", None)
        else:
            os.environ["RACTD_CACHE_DIR"] = old


@pytest.fixture
def cache(chain, monkeypatch):
    monkeypatch.setenv("RACTD_CACHE_DIR", chain["cache"])
    return chain


def share_of_high_mode(model: str) -> tuple[float, int]:
    doc = ractd("rollout", "--env", "bimodal", "--model", model, "--episodes", str(EPISODES), "--seed", "1")
    returns = [e["return"] for e in doc["per_episode"]]
    assert len(returns) == EPISODES
    finished = [r for r in returns if r > 0]
    return (sum(r == 1.0 for r in finished) / max(len(finished), 1)), len(finished)


def test_ractd_student_selects_the_high_return_mode(cache):
    share, finished = share_of_high_mode(cache["ractd"])
    assert finished >= 0.9 * EPISODES
    assert share >= 0.9


@pytest.mark.parametrize("which", ["teacher", "ctd"])
def test_teacher_and_ctd_student_keep_both_modes(cache, which):
    share, finished = share_of_high_mode(cache[which])
    assert finished >= 0.8 * EPISODES
    assert 0.25 <= share <= 0.75


def test_default_weights_keep_dsm_and_reward_within_an_order_of_magnitude(cache):
    """Paper App. B.3: the weights keep the terms within one order of magnitude; the artifact records
    each weighted term's mean magnitude over the last stretch of training. beta L_DSM and
    sigma |L_Reward| are within 10x at the default weights; alpha L_CTM, the element-wise
    pseudo-Huber of near-zero consistency errors (~ e^2 / 2c), is orders of magnitude smaller
    whatever the weights, so it is only checked to be recorded and finite."""
    terms = cache["ractd_terms"]
    assert set(terms) == {"ctm", "dsm", "reward"} and min(terms.values()) > 0
    assert max(terms["dsm"], terms["reward"]) / min(terms["dsm"], terms["reward"]) <= 10.0, terms
    assert terms["ctm"] < terms["dsm"]


def test_student_records_parents_and_weights(cache):
    doc = ractd("cache", "list", "--kind", "student")
    by_id = {a["id"]: a for a in doc["artifacts"]}
    assert by_id[cache["ractd"]]["parents"] == [cache["teacher"], cache["reward"]]
    assert by_id[cache["ctd"]]["parents"] == [cache["teacher"]]


def test_headers_read_back_typed_as_they_were_trained(cache):
    """Each kind's header comes back as its typed config: the student's sigma (1 for RACTD at the
    task's weights, 0 for CTD) and noise range, the teacher's plans; another kind is one line."""
    from ractd_cli.artifacts import load_artifact
    from ractd_cli.diffusion import SIGMA_DATA, SIGMA_MAX, SIGMA_MIN
    from ractd_cli.errors import UsageError
    from ractd_cli.models import StudentConfig, TeacherConfig
    from ractd_cli.registry import get_task

    ractd_cfg, ctd_cfg = StudentConfig.of(load_artifact(cache["ractd"])), StudentConfig.of(load_artifact(cache["ctd"]))
    assert (ractd_cfg.reward_weight, ractd_cfg.rewarded, ctd_cfg.reward_weight, ctd_cfg.rewarded) == (1.0, True, 0.0, False)
    assert ractd_cfg.selection is None and ractd_cfg.eval is None and ractd_cfg.ctm_weight == 1.0
    teacher = TeacherConfig.of(load_artifact(cache["teacher"]))
    assert (teacher.sigma_data, teacher.sigma_min, teacher.sigma_max) == (SIGMA_DATA, SIGMA_MIN, SIGMA_MAX) == (
        ractd_cfg.sigma_data, ractd_cfg.sigma_min, ractd_cfg.sigma_max)
    spec = get_task("bimodal")[1]
    assert (teacher.planning, teacher.horizon, teacher.teacher_reward_weight) == (spec.planning, spec.x_shape[0], 0.0)
    with pytest.raises(UsageError, match="is a reward, not a student"):
        StudentConfig.of(load_artifact(cache["reward"]))
    # the trainers write these fields from the same values: what is read back is what is stored
    for key, typed in (("ractd", StudentConfig), ("ctd", StudentConfig), ("teacher", TeacherConfig)):
        config = load_artifact(cache[key]).config
        stored = typed.of(load_artifact(cache[key])).stored()
        assert stored == {k: config[k] for k in stored}, key
    assert "reward_id" not in TeacherConfig.of(load_artifact(cache["teacher"])).stored()  # the paper's teacher: no w recorded


def test_rollout_json_reports_latency_and_nfe(cache):
    doc = ractd("rollout", "--env", "bimodal", "--model", cache["ractd"], "--episodes", "3")
    assert doc["nfe"] == 1 and doc["sampler"] == "onestep" and doc["ms_per_action"] > 0
    doc = ractd("rollout", "--env", "bimodal", "--model", cache["teacher"], "--episodes", "2", "--sampler", "euler", "--nfe", "7")
    assert doc["nfe"] == 7 and doc["nfe_paper"] == 7
    assert len(doc["per_episode"]) == 2
    # Heun over 80 bins: the paper's NFE 80, beside the 159 network calls it makes
    doc = ractd("rollout", "--env", "bimodal", "--model", cache["teacher"], "--episodes", "1")
    assert (doc["sampler"], doc["nfe"], doc["nfe_paper"]) == ("heun", 159, 80)


@pytest.mark.parametrize("model", ["ractd", "teacher"])
def test_rollout_does_not_depend_on_the_batch_size(cache, model):
    """Each episode plans from its own (seed, episode) noise stream (the teacher row also draws fresh
    noise at every replanning step): --batch 7 and --batch 50 give the very same episodes."""
    args = ["rollout", "--env", "bimodal", "--model", cache[model], "--episodes", "20", "--seed", "4"]
    if model == "teacher":
        args += ["--sampler", "ancestral", "--nfe", "6"]
    a, b = ractd(*args, "--batch", "7"), ractd(*args, "--batch", "50")
    assert a["per_episode"] == b["per_episode"]


def test_rollout_workers_run_the_episodes_of_one_process(cache, tmp_path):
    """--workers 2 splits 9 episodes into two spawned processes of one thread (5 + 4 episodes, each at
    --batch 3): the same episodes, in order, as one process running them; the result says so. Bench
    rows score the same with and without workers. Refusals: --workers 0, --workers with --video."""
    args = ["rollout", "--env", "bimodal", "--model", cache["ctd"], "--episodes", "9", "--seed", "3", "--batch", "3"]
    threads = torch.get_num_threads()
    with torch_threads(1):  # what each worker runs with here
        one = ractd(*args)
    split = ractd(*args, "--workers", "2")
    assert split["per_episode"] == one["per_episode"] and len(split["per_episode"]) == 9
    assert (split["workers"], split["threads_per_worker"], split["model_id"]) == (2, max(1, threads // 2), cache["ctd"])
    assert (split["nfe"], split["nfe_paper"], one["workers"]) == (1, 1, 1)
    assert len({e["return"] for e in one["per_episode"]}) > 1  # the episodes differ, so their order is checked
    bench = ["bench", "--env", "bimodal", "--episodes", "4", "--teacher-episodes", "1", "--repeats", "1"]
    rows1, rows2 = ractd(*bench)["rows"], ractd(*bench, "--workers", "2")
    assert rows2["workers"] == 2
    assert [(r["method"], r["score_mean"]) for r in rows2["rows"]] == [(r["method"], r["score_mean"]) for r in rows1]
    for bad, match in ((["--workers", "0"], "--workers must be at least 1"),
                       (["--workers", "2", "--video", str(tmp_path / "v.mp4")], "--video records in one process")):
        r = runner.invoke(app, [*args, *bad])
        assert r.exit_code == 2 and match in r.output and r.output.strip().count("\n") == 0, r.output
    r = runner.invoke(app, [*bench, "--workers", "0"])
    assert r.exit_code == 2 and "--workers must be at least 1" in r.output, r.output


def _children(pid: int) -> list[int]:
    """The processes ``pid`` started, from any of its threads (Linux /proc, as tests/test_distributed.py
    finds torchrun's workers)."""
    from pathlib import Path

    kids = []
    for listing in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            kids += [int(k) for k in listing.read_text().split()]
        except OSError:  # the thread ended meanwhile
            pass
    return kids


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().decode(errors="replace")
    except OSError:  # ended meanwhile
        return ""


@pytest.mark.skipif(not os.path.exists("/proc/self/task"), reason="reads /proc")
def test_a_stopped_rollout_ends_its_workers_at_once(cache):
    """SIGTERM (or Ctrl-C of the parent alone, as `reproduce` passes it on) of `rollout --workers 2`
    ends both workers and exits 130 with its one line; before, the pool waited for each worker to
    play all its episodes (here thousands of Heun-80 decisions)."""
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    env = {**os.environ, "RACTD_CACHE_DIR": cache["cache"], "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "ractd_cli", "rollout", "--env", "bimodal", "--model", cache["teacher"],
                             "--episodes", "5000", "--workers", "2"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    workers: list[int] = []
    try:
        while len(workers) < 2:  # the two rollout workers (beside multiprocessing's resource tracker) have started
            assert proc.poll() is None, proc.communicate()[1][-2000:]
            time.sleep(0.2)
            workers = [k for k in _children(proc.pid) if "spawn_main" in _cmdline(k)]
        time.sleep(2)  # planning
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=300)
        for _ in range(100):  # terminated on the way out; gone a moment later
            if not any(Path(f"/proc/{k}").exists() for k in workers):
                break
            time.sleep(0.1)
        left = [k for k in workers if Path(f"/proc/{k}").exists()]
    finally:
        proc.kill()
        for k in workers:
            if Path(f"/proc/{k}").exists():
                os.kill(k, signal.SIGKILL)
    assert proc.returncode == 130, stderr[-2000:]
    assert stderr.splitlines()[-1] == "interrupted; nothing half-written is left in the cache, rerun the same command", stderr[-2000:]
    assert left == []


def test_student_nfe_k_samples_k_steps(cache):
    """`--model student --nfe 3` used to run one step silently."""
    doc = ractd("rollout", "--env", "bimodal", "--model", cache["ractd"], "--episodes", "1", "--nfe", "3")
    assert (doc["sampler"], doc["nfe"]) == ("multistep", 3)
    r = runner.invoke(app, ["rollout", "--env", "bimodal", "--model", cache["ractd"], "--episodes", "1",
                            "--sampler", "onestep", "--nfe", "3"])
    assert r.exit_code == 2 and "multistep" in r.output
    r = runner.invoke(app, ["rollout", "--env", "bimodal", "--model", cache["teacher"], "--episodes", "1", "--nfe", "0"])
    assert r.exit_code == 2 and "--nfe" in r.output and "greater than or equal to 1" in r.output  # it used to run the default silently


def test_student_sampler_on_teacher_is_a_usage_error(cache):
    r = runner.invoke(app, ["rollout", "--env", "bimodal", "--model", "teacher", "--sampler", "onestep"])
    assert r.exit_code == 2 and "does not apply to a teacher" in r.output


def test_wrong_task_teacher_is_refused(cache, monkeypatch):
    r = runner.invoke(app, ["distill", "--env", "maze2d-umaze", "--teacher", cache["teacher"], "--preset", "tiny"])
    assert r.exit_code == 1
    assert "trained for task bimodal, not maze2d-umaze" in r.output
    assert "Traceback" not in r.output


def test_distill_refuses_data_the_teacher_was_not_trained_on(cache):
    """The student lives in its teacher's normalised space and R_psi in its own data's: a reward model
    fitted on other data, or --dataset other than the teacher's, is refused before any training."""
    from ractd_cli.artifacts import load_artifact, save_artifact

    real = load_artifact(cache["reward"])
    other = save_artifact(real.tensors, kind="reward", task="bimodal", dataset="ractd/bimodal/other-v0",
                          config=real.config)
    try:
        r = runner.invoke(app, ["distill", "--env", "bimodal", "--preset", "tiny", "--reward", other.id])
        assert r.exit_code == 2 and "train-reward --env bimodal --dataset ractd/bimodal/local-v0" in r.output
    finally:
        other.path.unlink()
    r = runner.invoke(app, ["distill", "--env", "bimodal", "--preset", "tiny", "--dataset", "ractd/bimodal/other-v0"])
    assert r.exit_code == 2 and "drop --dataset" in r.output
    # a teacher whose normalisers differ from those fitted to its dataset today: the student trains in
    # (and ships) the teacher's space by construction, and a reward model fitted in another is refused
    teacher = load_artifact(cache["teacher"])
    tensors = {k: (v + 1.0 if k == "norm.state.max" else v) for k, v in teacher.tensors.items()}
    moved = save_artifact(tensors, kind="teacher", task="bimodal", dataset=teacher.meta["dataset"], config=teacher.config)
    try:
        r = runner.invoke(app, ["distill", "--env", "bimodal", "--preset", "tiny", "--teacher", moved.id])
        assert r.exit_code == 1 and "normalises plans otherwise" in r.output
        doc = ractd("distill", "--env", "bimodal", "--preset", "tiny", "--steps", "5", "--teacher", moved.id, "--reward-weight", "0")
        student = load_artifact(doc["id"])
        assert torch.equal(student.tensors["norm.state.max"], tensors["norm.state.max"])
        student.path.unlink()
    finally:
        moved.path.unlink()


def test_distill_saves_the_last_weights_or_their_ema(cache):
    """--weights raw (default, the authors' choice) saves the student's weights at the last step,
    --weights ema the loop's EMA of the same run: same losses, other tensors, recorded in the config."""
    from ractd_cli.artifacts import load_artifact

    args = ("distill", "--env", "bimodal", "--preset", "tiny", "--steps", "30", "--reward-weight", "0")
    raw, ema = ractd(*args), ractd(*args, "--weights", "ema")
    assert raw["losses"] == ema["losses"] and raw["id"] != ema["id"]
    a, b = load_artifact(raw["id"]), load_artifact(ema["id"])
    assert (a.config["weights"], b.config["weights"]) == ("raw", "ema")
    assert any(not torch.equal(a.tensors[k], b.tensors[k]) for k in a.tensors if k.startswith("net."))
    for art in (a, b):
        art.path.unlink()
    r = runner.invoke(app, [*args, "--weights", "last"])
    assert r.exit_code == 2 and "raw, ema" in r.output


def test_teacher_steps_lengthen_the_ctm_targets_and_are_recorded(cache):
    """--teacher-steps N: CTM targets from up to N teacher Heun steps; another student (other losses),
    recorded as max_teacher_steps; the default 1 is RACTD's code's."""
    from ractd_cli.artifacts import load_artifact

    args = ("distill", "--env", "bimodal", "--preset", "tiny", "--steps", "20", "--reward-weight", "0")
    one, four = ractd(*args), ractd(*args, "--teacher-steps", "4")
    a, b = load_artifact(one["id"]), load_artifact(four["id"])
    assert (a.config["max_teacher_steps"], b.config["max_teacher_steps"]) == (1, 4)
    assert one["id"] != four["id"] and one["losses"]["ctm"] != four["losses"]["ctm"]
    for art in (a, b):
        art.path.unlink()


def test_missing_teacher_names_the_command(tmp_path, monkeypatch):
    monkeypatch.setenv("RACTD_CACHE_DIR", str(tmp_path / "empty"))
    r = runner.invoke(app, ["distill", "--env", "bimodal"])
    assert r.exit_code == 1 and "ractd train-teacher --env bimodal" in r.output


def test_bench_json_schema_and_plot(cache, tmp_path):
    png = tmp_path / "bench.png"
    r = runner.invoke(app, ["bench", "--env", "bimodal", "--episodes", "12", "--teacher-episodes", "6", "--repeats", "3", "--seed", "2",
                            "--plot", str(png), "--json"])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["task"] == "bimodal" and doc["device"]
    # each row's rollout bar names its row
    assert all(f"rollout bimodal: {row['method']}" in r.stderr for row in doc["rows"] if row["episodes"]), r.stderr[-2000:]
    methods = {r["method"]: r for r in doc["rows"]}
    teacher = doc["rows"][0]
    assert teacher["nfe"] == 159 and teacher["speedup_vs_teacher"] == 1.0
    assert methods["RACTD student (1 step)"]["nfe"] == 1
    assert [methods[f"RACTD student ({k} steps)"]["nfe"] for k in (2, 3, 4)] == [2, 3, 4]
    assert "CTD student (reward weight 0)" in methods
    # the RACTD rows name their R_psi's return-to-go (bimodal's: gamma 0.99, no penalty), the table header too
    assert methods["RACTD student (1 step)"]["rtg_gamma"] == 0.99 and "rtg_gamma" not in methods["CTD student (reward weight 0)"]
    assert doc["return_to_go"] == "gamma 0.99, termination penalty 0"
    assert [r["key"] for r in doc["rows"]][:3] == ["teacher-heun", "euler-15", "ancestral-15"]
    assert methods["RACTD student (1 step)"]["key"] == "ractd-1" and methods["RACTD student (1 step)"]["paper"] is None  # no paper figure for the toy
    for r in doc["rows"]:
        assert {"key", "method", "nfe", "ms_per_action", "speedup_vs_teacher", "score_mean", "score_stderr", "success_rate", "paper"} <= r.keys()
        assert r["ms_per_action"] > 0 and r["score_mean"] is not None
    assert doc["forward_ms"] > 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = png.with_suffix(".md").read_text()  # the same table as markdown beside the plot, every method whole
    assert doc["table"] == str(png.with_suffix(".md")) and "| method | NFE (paper) |" in md
    assert "R_psi's return-to-go gamma 0.99, termination penalty 0" in md.splitlines()[0]  # the table's title
    assert all(f"| {row['method']} |" in md for row in doc["rows"]) and "…" not in md
    # However many calls the latency timer made, a row's episodes are those `ractd rollout` plays
    # with the same seed, at any batch size (the CTD student and the teacher keep both modes, so
    # the noise matters).
    assert [r["episodes"] for r in doc["rows"]] == [6] + [12] * (len(doc["rows"]) - 1)  # --teacher-episodes: the Heun row only
    for method, model, n in (("CTD student (reward weight 0)", cache["ctd"], "12"), ("EDM teacher (Heun, 80 bins)", cache["teacher"], "6")):
        roll = ractd("rollout", "--env", "bimodal", "--model", model, "--episodes", n, "--seed", "2", "--batch", "5")
        assert (methods[method]["score_mean"], methods[method]["score_stderr"]) == (roll["score_mean"], roll["score_stderr"]), method


def test_bench_picks_the_student_at_the_tasks_weight_or_the_one_named(cache):
    """A newer RACTD student of another weight does not displace the one at the task's own sigma
    (bimodal: 1), unless named by --student; the rows and the footer name each model's weight."""
    from ractd_cli.artifacts import load_artifact

    other = ractd("distill", "--env", "bimodal", "--preset", "tiny", "--steps", "5", "--reward-weight", "0.5")["id"]
    try:
        bench = ("bench", "--env", "bimodal", "--latency-only", "--repeats", "1")
        table = runner.invoke(app, list(bench))  # not a terminal (a log file): markdown, no cell cut to "RAC…"
        assert table.exit_code == 0 and "| RACTD student (1 step) |" in table.stderr and "…" not in table.stderr, table.stderr
        picked = {r["key"]: (r["model_id"], r["reward_weight"]) for r in ractd(*bench)["rows"]}
        assert picked["ractd-1"] == (cache["ractd"], 1.0) and picked["ctd-1"] == (cache["ctd"], 0.0)
        assert picked["teacher-heun"] == (cache["teacher"], None)
        named = {r["key"]: (r["model_id"], r["reward_weight"]) for r in ractd(*bench, "--student", other[:8])["rows"]}
        assert named["ractd-1"] == named["ractd-4"] == (other, 0.5) and named["ctd-1"] == (cache["ctd"], 0.0)
        r = runner.invoke(app, [*bench, "--student", other[:8]])
        line = " ".join(r.output.split())
        assert r.exit_code == 0 and f"RACTD student {other[:8]} (reward weight sigma 0.5)" in line and f"teacher {cache['teacher'][:8]}" in line
        for wrong, says in ((["--student", cache["ctd"][:8]], "reward weight 0"), (["--ctd", other[:8]], "pass one distilled with --reward-weight 0")):
            r = runner.invoke(app, [*bench, *wrong])
            assert r.exit_code == 2 and says in " ".join(r.output.split()), r.output
    finally:
        load_artifact(other).path.unlink()


def test_frozen_graph_planner_matches_eager(cache):
    import torch

    from ractd_cli.planner import Planner
    from ractd_cli.registry import get_task
    from ractd_cli.resolve import load_for_planning

    _, spec = get_task("bimodal")
    cond = torch.randn(4, spec.history, spec.obs_dim, generator=torch.Generator().manual_seed(0))  # raw past states
    for ref, sampler, nfe in [(cache["ractd"], "onestep", 1), (cache["ractd"], "multistep", 3), (cache["teacher"], "heun", 159)]:
        art = load_for_planning(ref, spec).art
        eager, _ = Planner(art, spec, sampler=sampler, nfe=nfe, seed=5, jit=False).plan(cond)
        frozen_planner = Planner(art, spec, sampler=sampler, nfe=nfe, seed=5, jit=True)
        frozen, n = frozen_planner.plan(cond)
        assert frozen_planner.jit and n == nfe
        assert torch.allclose(eager, frozen, atol=1e-5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a CUDA device (none here)")
def test_cuda_graph_planner_matches_plain_launches(cache):
    """On CUDA the frozen graph is replayed as captured CUDA graphs, one per batch shape: the same
    plans as launching its kernels one by one, for every sampler and two batch sizes."""
    from ractd_cli.accel import CudaGraphs
    from ractd_cli.planner import Planner
    from ractd_cli.registry import get_task
    from ractd_cli.resolve import load_for_planning

    _, spec = get_task("bimodal")
    for ref, sampler, nfe in [(cache["ractd"], "onestep", 1), (cache["ractd"], "multistep", 3), (cache["teacher"], "heun", 159)]:
        art = load_for_planning(ref, spec).art
        graphed = Planner(art, spec, sampler=sampler, nfe=nfe, seed=5, jit=True, device="cuda")
        plain = Planner(art, spec, sampler=sampler, nfe=nfe, seed=5, jit=True, device="cuda", cuda_graphs=False)
        assert graphed.cuda_graphs and not plain.cuda_graphs
        for batch in (1, 4, 1):
            past = torch.randn(batch, spec.history, spec.obs_dim, generator=torch.Generator().manual_seed(batch))
            x, n = graphed.plan(past)
            y, _ = plain.plan(past)
            assert n == nfe and graphed.cuda_graphs_error is None
            assert torch.allclose(x, y, atol=1e-5), (ref, sampler, batch)
        wrapper = graphed._one_step_graph if sampler == "onestep" else graphed.model.frozen
        assert isinstance(wrapper, CudaGraphs) and len(wrapper.graphs) == 2  # batch 1 and 4, the second batch 1 replayed


def test_planner_stays_eager_when_tracing_fails(cache, monkeypatch):
    import torch

    from ractd_cli import accel
    from ractd_cli import planner as planner_mod
    from ractd_cli.registry import get_task
    from ractd_cli.resolve import load_for_planning

    def fail(*args, **kwargs):
        raise RuntimeError("cannot trace")

    monkeypatch.setattr(planner_mod, "frozen", fail)  # the one-step student's graph
    monkeypatch.setattr(accel, "frozen", fail)  # the teacher's network, through accel.frozen_model
    _, spec = get_task("bimodal")
    cond = torch.randn(4, spec.history, spec.obs_dim, generator=torch.Generator().manual_seed(0))  # raw past states
    for ref, sampler, nfe in [(cache["ractd"], "onestep", 1), (cache["teacher"], "euler", 15)]:
        art = load_for_planning(ref, spec).art
        p = planner_mod.Planner(art, spec, sampler=sampler, nfe=nfe, seed=5, jit=True)
        x, n = p.plan(cond)
        eager, _ = planner_mod.Planner(art, spec, sampler=sampler, nfe=nfe, seed=5, jit=False).plan(cond)
        assert not p.jit and n == nfe and p.jit_error == "RuntimeError: cannot trace"
        assert torch.equal(x, eager)
    # the command line says so and records it
    r = runner.invoke(app, ["rollout", "--env", "bimodal", "--model", cache["ractd"], "--episodes", "1", "--json"])
    assert r.exit_code == 0
    doc = json.loads(r.stdout)
    assert doc["jit"] is False and doc["jit_error"] == "RuntimeError: cannot trace"
    assert "ran eager" in r.stderr


def test_same_seed_same_artifact_id(cache):
    a = ractd("train-reward", "--env", "bimodal", "--preset", "tiny", "--steps", "60", "--seed", "7")
    b = ractd("train-reward", "--env", "bimodal", "--preset", "tiny", "--steps", "60", "--seed", "7")
    c = ractd("train-reward", "--env", "bimodal", "--preset", "tiny", "--steps", "60", "--seed", "8")
    assert a["id"] == b["id"] != c["id"]
    # the denoiser too, at this (one) thread count; the artifact says what it was made on
    t1 = ractd("train-teacher", "--env", "bimodal", "--preset", "tiny", "--steps", "40", "--seed", "7")
    t2 = ractd("train-teacher", "--env", "bimodal", "--preset", "tiny", "--steps", "40", "--seed", "7")
    assert t1["id"] == t2["id"]
    import torch

    from ractd_cli.artifacts import load_artifact

    made_on = load_artifact(t1["id"]).meta["made_on"]
    assert made_on["threads"] == torch.get_num_threads() and made_on["torch"] == torch.__version__
    assert made_on["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert isinstance(made_on["cpu"], str) and made_on["cpu"]  # the CPU's model: one kernel family may still round otherwise


def _peers_file(path, chain, **over):
    """A file as scripts/peers.py writes it (d3rlpy's numbers stand in: its environment is not this one)."""
    from ractd_cli.artifacts import load_artifact

    doc = {"task": "bimodal", "dataset_id": load_artifact(chain["teacher"]).meta["dataset"], "episodes": 4, "seed": 2,
           "score_scale": "return", "library": "d3rlpy 2.8.1",
           "rows": [{"key": "bc", "method": "BC (d3rlpy, 20000 steps)", "score_mean": 41.25, "score_stderr": 3.5}], **over}
    path.write_text(json.dumps(doc))
    return path


def test_bench_peers_rows_under_the_data_and_checked_against_the_bench(cache, tmp_path):
    from ractd_cli.adapters import resolve_score_scale
    from ractd_cli.registry import get_task

    scale = resolve_score_scale(get_task("bimodal")[1], None)
    good = _peers_file(tmp_path / "peers.json", cache, score_scale=scale)
    bench = ["bench", "--env", "bimodal", "--latency-only", "--repeats", "1", "--seed", "2", "--json"]
    r = runner.invoke(app, [*bench, "--peers", str(good)])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["peers"]["rows"][0]["score_mean"] == 41.25 and doc["peers"]["library"] == "d3rlpy 2.8.1"
    from ractd_cli.bench import table

    head, body = table(doc)
    assert ["peer: BC (d3rlpy, 20000 steps)", "41.2 ± 3.5 (4 episodes)"] == [body[-1][0], body[-1][6]]
    for over, word in (({"seed": 3}, "episode seed"), ({"task": "other"}, "task"), ({"dataset_id": "ractd/x/local-v0"}, "dataset")):
        bad = _peers_file(tmp_path / "bad.json", cache, score_scale=scale, **over)
        r = runner.invoke(app, [*bench, "--peers", str(bad)])
        assert r.exit_code != 0 and word in r.output and "Traceback" not in r.output, r.output
    r = runner.invoke(app, [*bench, "--peers", str(tmp_path / "missing.json")])
    assert r.exit_code != 0 and "scripts/peers.py" in r.output
    # several files (scripts/peers.py --methods run as halves): rows joined in order, each method once
    iql = _peers_file(tmp_path / "iql.json", cache, score_scale=scale,
                      rows=[{"key": "iql", "method": "IQL (d3rlpy, 50000 steps)", "score_mean": 52.5, "score_stderr": 1.25}])
    r = runner.invoke(app, [*bench, "--peers", str(good), "--peers", str(iql)])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert [row["method"] for row in doc["peers"]["rows"]] == ["BC (d3rlpy, 20000 steps)", "IQL (d3rlpy, 50000 steps)"]
    assert doc["peers"]["files"] == [str(good), str(iql)] and doc["peers"]["file"] == str(good)
    assert [b[0] for b in table(doc)[1][-2:]] == ["peer: BC (d3rlpy, 20000 steps)", "peer: IQL (d3rlpy, 50000 steps)"]
    for other, word in ((good, "both score"), (_peers_file(tmp_path / "iql30.json", cache, score_scale=scale, episodes=30,
                                                           rows=[{"method": "IQL", "score_mean": 1.0, "score_stderr": 0.1}]), "episodes")):
        r = runner.invoke(app, [*bench, "--peers", str(good), "--peers", str(other)])
        assert r.exit_code != 0 and word in r.output and "Traceback" not in r.output, r.output


def test_distill_ode_pairs_recorded_and_reproducible(cache, monkeypatch):
    """`--ode-pairs N`: the pairs term is trained and reported, the choice is in the artifact, the same
    run gives the same artifact, and the teacher's pairs do not depend on how many plans it solves at
    once (up to float rounding; the solve batch is fixed, so artifacts are bitwise reproducible)."""
    import ractd_cli.train.distill as d
    from ractd_cli.artifacts import load_artifact
    from ractd_cli.models import denoiser_from, normalizers_from
    from ractd_cli.registry import get_task
    from ractd_cli.train.data import load_task_data

    args = ["distill", "--env", "bimodal", "--preset", "tiny", "--steps", "20", "--reward-weight", "0", "--ode-pairs", "48"]
    first = ractd(*args)
    assert load_artifact(first["id"]).config["ode_pairs"]["n"] == 48 and "pair" in first["losses"] and "pair" in first["loss_terms"]
    assert ractd(*args)["id"] == first["id"]
    plain = ractd("distill", "--env", "bimodal", "--preset", "tiny", "--steps", "20", "--reward-weight", "0")
    assert "ode_pairs" not in load_artifact(plain["id"]).config and "pair" not in plain["losses"] and plain["id"] != first["id"]
    r = runner.invoke(app, [*args[:-1], "-3"])
    assert r.exit_code != 0 and "--ode-pairs must be >= 0" in r.output

    teacher_art = load_artifact(cache["teacher"])
    adapter, spec = get_task("bimodal")
    data = load_task_data(adapter, spec, teacher_art.meta["dataset"], normalizers=normalizers_from(teacher_art.tensors))
    kw = dict(sigma_max=80.0, sigma_min=0.002, seed=0, device="cpu", show_progress=False)
    a = d.teacher_pairs(denoiser_from(teacher_art), data.diffusion, 20, **kw)
    monkeypatch.setattr(d, "PAIR_BATCH", 7)
    b = d.teacher_pairs(denoiser_from(teacher_art), data.diffusion, 20, **kw)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) and torch.allclose(a[2], b[2], atol=1e-5)
    assert float(a[2].abs().max()) <= 1.0  # clamped, as the default sampling clamps
