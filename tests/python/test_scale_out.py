"""Large jobs past one machine (#15): `--shard auto` under a launcher, and the merges.

- `mpirun --oversubscribe -np 3` (Open MPI, on the CPU, one OpenMP thread per process) runs
  `stats`, `saliency` and `eval` over small folders; `stats merge`, `merge-results` and
  `eval merge` give what one process gives: the statistics file and the maps byte for byte,
  results.jsonl and the report (REPORT.jsonl, .json, .md, .png) byte for byte.
- Slurm's variables (srun tasks, array jobs, both), Open MPI's and PMI's, set by hand, choose
  the shard; missing, partial and malformed environments are refused naming the variable; an
  explicit --shard i/N wins.
- Merges refuse shards of another job, a missing shard and a shard given twice, naming the file;
  a killed shard is rerun alone (its report resumes) and the merge then equals one run.
- The GPU of a task from its local rank, on the SIMT device build with two simulated devices.
- `--gpu all` (one worker per device in one process) on the same build with two simulated
  devices: stats, saliency, eval and gradient write what `--gpu 0` writes, byte for byte, with
  one summary line and no shard file left; saliency and eval run again resume; --device cpu and
  --shard refused.
"""
import glob
import json
import os
import shutil
import struct
import subprocess

import numpy as np
from PIL import Image

import parity_common as pc

BIN = pc.engine_binary()
SIM_BIN = os.environ.get("PARCHGRAD_SIM_BIN")
SRC = pc.SRC
DEFAULT = os.path.join(SRC, "assets", "default")
WEIGHTS = os.path.join(DEFAULT, "resnet_synth.pth")
STATS = os.path.join(DEFAULT, "stats.safetensors")
EXAMPLES = os.path.join(DEFAULT, "examples")
SCRATCH = pc.scratch_dir()
CLASSES = ["circle", "cross", "ring", "square", "star", "triangle"]  # the model's classes, sorted
LAUNCHER_VARS = [v for v in os.environ if v.startswith(("SLURM_", "OMPI_", "PMI_", "PMIX_", "MPI_LOCALRANKID"))]


def clean_env(**extra):
    """This process's environment without any launcher's variables, one thread per process."""
    env = {k: v for k, v in os.environ.items() if k not in LAUNCHER_VARS}
    env.update(OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    env.update({k: str(v) for k, v in extra.items()})
    return env


def run(*args, env=None, binary=BIN):
    return subprocess.run([binary, *map(str, args)], capture_output=True, text=True, timeout=300,
                          env=env or clean_env(), cwd=SCRATCH)


def ok(r):
    assert r.returncode == 0, r.stderr
    return r


def mpirun(*args):
    """The command on 3 processes of Open MPI (mpirun from Debian's openmpi-bin: tools/setup.sh)."""
    mpi = shutil.which("mpirun")
    assert mpi, "mpirun not found: install openmpi-bin (tools/setup.sh does)"
    root = ["--allow-run-as-root"] if os.geteuid() == 0 else []
    cmd = [mpi, "--oversubscribe", "-np", "3", *root, "-x", "OMP_NUM_THREADS", "-x", "OPENBLAS_NUM_THREADS",
           BIN, *map(str, args)]
    return ok(subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=clean_env(), cwd=SCRATCH))


def error_line(r):
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.returncode != 0 and len(lines) == 1, r.stderr
    return lines[0]


def fresh(name):
    path = os.path.join(SCRATCH, name)
    shutil.rmtree(path, ignore_errors=True)
    return path


def image_tree():
    """The six bundled examples as an ImageFolder tree (one image per class)."""
    root = fresh("tree")
    for c in CLASSES:
        os.makedirs(os.path.join(root, c))
        shutil.copy(os.path.join(EXAMPLES, c + ".png"), os.path.join(root, c))
    return root


def npy_tree(name="npy_tree", classes=CLASSES, size=64):
    """The examples (all six by default) as normalised size x size tensors (eval's masked copies cost little)."""
    root = fresh(name)
    mean = np.array([0.485, 0.456, 0.406], np.float32)[:, None, None]
    std = np.array([0.229, 0.224, 0.225], np.float32)[:, None, None]
    for c in classes:
        os.makedirs(os.path.join(root, c))
        img = Image.open(os.path.join(EXAMPLES, c + ".png")).convert("RGB").resize((size, size), Image.BILINEAR)
        x = (np.asarray(img, np.float32).transpose(2, 0, 1) / 255.0 - mean) / std
        np.save(os.path.join(root, c, c + ".npy"), x.astype(np.float32))
    return root


def same_bytes(a, b):
    with open(a, "rb") as fa, open(b, "rb") as fb:
        return fa.read() == fb.read()


def shard_header(path):
    with open(path, "rb") as f:
        assert f.read(16).startswith(b"PGSTATSSHARD")
        (n,) = struct.unpack("<Q", f.read(8))
        return json.loads(f.read(n))


# ---- mpirun: three processes, merged, equal to one ----------------------------------------

def test_stats_under_mpirun_merges_into_the_file_of_one_run():
    tree, out = image_tree(), fresh("stats_mpi")
    os.makedirs(out)
    one = os.path.join(out, "one.safetensors")
    ok(run("stats", "--weights", WEIGHTS, "--data", tree, "--out", one))
    r = mpirun("stats", "--weights", WEIGHTS, "--data", tree, "--out", os.path.join(out, "s.safetensors"),
               "--shard", "auto")
    shards = sorted(glob.glob(os.path.join(out, "s-*-of-3.safetensors")))
    assert len(shards) == 3, (os.listdir(out), r.stderr)
    assert [shard_header(s)["images"] for s in shards] == [2, 2, 2]
    merged = os.path.join(out, "merged.safetensors")
    ok(run("stats", "merge", *shards, "--out", merged))
    assert same_bytes(merged, one)

    # Refusals, each naming the file: a shard of another job, a shard missing, one given twice.
    other = os.path.join(out, "welch-1-of-3.bin")
    ok(run("stats", "--weights", WEIGHTS, "--data", tree, "--out", other, "--shard", "1/3", "--test", "welch"))
    says = error_line(run("stats", "merge", shards[0], other, shards[2], "--out", merged))
    assert other in says and "differs from" in says and "test" in says, says
    says = error_line(run("stats", "merge", shards[0], shards[2], "--out", merged))
    assert "shard 1/3 is missing" in says, says
    says = error_line(run("stats", "merge", shards[0], shards[1], shards[1], shards[2], "--out", merged))
    assert shards[1] in says and "given twice" in says, says


def test_saliency_under_mpirun_merges_into_the_index_of_one_run():
    tree = image_tree()
    one, three = fresh("sal_one"), fresh("sal_three")
    ok(run("saliency", "--weights", WEIGHTS, "--out", one, "--batch", 4, tree))
    mpirun("saliency", "--weights", WEIGHTS, "--out", three, "--batch", 4, "--shard", "auto", tree)
    assert sorted(f for f in os.listdir(three) if f.startswith("results")) == \
        [f"results-{i}-of-3.{e}" for i in range(3) for e in ("json", "jsonl")]
    ok(run("merge-results", three))
    maps = sorted(os.path.relpath(p, one) for p in glob.glob(os.path.join(one, "*", "*")))
    assert len(maps) == 12  # a map and an overlay per image
    for rel in maps:
        assert same_bytes(os.path.join(one, rel), os.path.join(three, rel)), rel
    with open(os.path.join(one, "results.jsonl")) as a, open(os.path.join(three, "results.jsonl")) as b:
        assert a.read().replace(one, "OUT") == b.read().replace(three, "OUT")
    # Merging again changes nothing (the index keeps one line per map).
    ok(run("merge-results", three))
    with open(os.path.join(three, "results.jsonl")) as b:
        assert len(b.read().splitlines()) == 6

    # Refusals: another job's shard (another method), a shard given twice, a shard missing.
    other = fresh("sal_other")
    ok(run("saliency", "--weights", WEIGHTS, "--out", other, "--batch", 4, "--shard", "1/3", "--method", "inputgrad",
           tree))
    r = run("merge-results", *(os.path.join(d, f"results-{i}-of-3.jsonl") for d, i in ((three, 0), (other, 1), (three, 2))))
    says = error_line(r)
    assert os.path.join(other, "results-1-of-3.json") in says and "settings" in says, says
    shutil.copy(os.path.join(three, "results-1-of-3.json"), os.path.join(other, "results-1-of-3.json"))
    shutil.copy(os.path.join(three, "results-1-of-3.jsonl"), os.path.join(other, "results-1-of-3.jsonl"))
    says = error_line(run("merge-results", three, os.path.join(other, "results-1-of-3.jsonl")))
    assert "given twice" in says and "results-1-of-3.json" in says, says
    os.remove(os.path.join(three, "results-2-of-3.json"))  # as a killed shard leaves it
    says = error_line(run("merge-results", three))
    assert os.path.join(three, "results-2-of-3.json") in says and "has not finished" in says, says
    os.remove(os.path.join(three, "results-2-of-3.jsonl"))
    says = error_line(run("merge-results", three))
    assert "shard 2/3 is missing" in says, says


def test_eval_under_mpirun_merges_into_the_report_of_one_run_and_a_killed_shard_is_rerun_alone():
    data, out = npy_tree(), fresh("eval_mpi")
    os.makedirs(out)
    common = ["--weights", WEIGHTS, "--stats", STATS, "--data", data, "--methods", "grad,grad+cls", "--batch", 4]
    one = os.path.join(out, "one")
    ok(run("eval", *common, "--out", one))
    three = os.path.join(out, "three")
    mpirun("eval", *common, "--out", three, "--shard", "auto")
    reports = [f"{three}-{i}-of-3.json" for i in range(3)]
    ok(run("eval", "merge", *reports))
    for ext in ("jsonl", "json", "md", "png"):
        assert same_bytes(f"{one}.{ext}", f"{three}.{ext}"), ext
    with open(one + ".json") as f:
        assert json.load(f)["methods"]["grad"]["images"] == 6

    # A killed shard: its last image's records cut, its summary not yet written. The merge
    # refuses it; the shard is rerun alone, resumes, and the merge then equals one run.
    with open(f"{three}-1-of-3.jsonl") as f:
        lines = f.read().splitlines(keepends=True)
    with open(f"{three}-1-of-3.jsonl", "w") as f:
        f.writelines(lines[:2] + [lines[2][:40]])  # one image done, a partial line
    os.remove(reports[1])
    says = error_line(run("eval", "merge", *reports, "--out", os.path.join(out, "x")))
    assert reports[1] in says and "has not finished" in says, says
    r = ok(run("eval", *common, "--out", three, "--shard", "1/3"))
    assert "resuming: 1 of 2 images done" in r.stderr, r.stderr
    ok(run("eval", "merge", *reports, "--out", os.path.join(out, "again")))
    for ext in ("json", "md", "png"):
        assert same_bytes(f"{one}.{ext}", os.path.join(out, "again." + ext)), ext

    # Refusals: another job's shard (other --auc-steps), a shard missing, a shard given twice.
    other = os.path.join(out, "other")
    ok(run("eval", *common, "--auc-steps", 10, "--out", other, "--shard", "2/3"))
    says = error_line(run("eval", "merge", reports[0], reports[1], f"{other}-2-of-3.json"))
    assert f"{other}-2-of-3.json" in says and "differs from" in says and "auc_steps" in says, says
    says = error_line(run("eval", "merge", reports[0], reports[2]))
    assert "shard 1/3 is missing" in says, says
    says = error_line(run("eval", "merge", reports[0], reports[1], f"{three}-1-of-3.jsonl", reports[2]))
    assert "given twice" in says and reports[1] in says, says
    # `eval` itself still wants its options (a usage error, status 2).
    r = run("eval", "--data", data)
    assert r.returncode == 2 and "--weights is required" in r.stderr, r.stderr


# ---- launchers' environments, set by hand ----------------------------------------------------

def gradient_batch():
    path = os.path.join(SCRATCH, "batch5.npy")
    np.save(path, np.random.default_rng(3).standard_normal((5, 3, 32, 32)).astype(np.float32))
    return path


def shard_run(env, *extra):
    """gradient --shard auto on a 5-sample batch: (stdout JSON, logits) or the failed run."""
    x = gradient_batch()
    logits = os.path.join(SCRATCH, "env_logits.npy")
    for old in glob.glob(os.path.join(SCRATCH, "env_logits*.npy")):
        os.remove(old)
    r = run("gradient", "--weights", WEIGHTS, "--input", x, "--logits-out", logits, "--shard", "auto", *extra,
            env=clean_env(**env))
    return r


def test_the_shard_comes_from_slurm_open_mpi_or_pmi():
    x = gradient_batch()
    whole = os.path.join(SCRATCH, "whole_logits.npy")
    ok(run("gradient", "--weights", WEIGHTS, "--input", x, "--logits-out", whole))
    everything = np.load(whole)
    cases = [
        ({"SLURM_PROCID": 1, "SLURM_NTASKS": 3, "SLURM_LOCALID": 1}, "1-of-3", [1, 4]),  # srun -n 3
        ({"SLURM_ARRAY_TASK_ID": 3, "SLURM_ARRAY_TASK_COUNT": 3, "SLURM_ARRAY_TASK_MIN": 1,  # sbatch --array=1-3
          "SLURM_PROCID": 0, "SLURM_NTASKS": 1}, "2-of-3", [2]),
        ({"SLURM_ARRAY_TASK_ID": 1, "SLURM_ARRAY_TASK_COUNT": 2, "SLURM_PROCID": 1, "SLURM_NTASKS": 2},
         "3-of-4", [3]),  # an array of 2, srun -n 2 in each
        ({"OMPI_COMM_WORLD_RANK": 0, "OMPI_COMM_WORLD_SIZE": 2, "SLURM_PROCID": 1, "SLURM_NTASKS": 4},
         "0-of-2", [0, 2, 4]),  # mpirun inside an allocation: Open MPI's rank
        ({"PMI_RANK": 1, "PMI_SIZE": 2}, "1-of-2", [1, 3]),
    ]
    for env, tag, samples in cases:
        r = ok(shard_run(env))
        line = json.loads(r.stdout)
        assert line["samples"] == samples and line["shard"] == tag.replace("-of-", "/"), (env, r.stdout)
        got = np.load(os.path.join(SCRATCH, f"env_logits-{tag}.npy"))
        assert got.tobytes() == everything[samples].tobytes(), env  # the rows of one run, bitwise
    # An explicit --shard i/N wins over the environment (and its file is named as given).
    r = ok(run("gradient", "--weights", WEIGHTS, "--input", x, "--logits-out", os.path.join(SCRATCH, "given.npy"),
               "--shard", "0/5", env=clean_env(SLURM_PROCID=1, SLURM_NTASKS=3)))
    assert json.loads(r.stdout)["samples"] == [0]
    assert np.load(os.path.join(SCRATCH, "given.npy")).tobytes() == everything[[0]].tobytes()


def test_missing_partial_and_malformed_environments_are_refused_naming_the_variable():
    for env, says in (
        ({}, "no launcher's rank in the environment"),
        ({"SLURM_PROCID": 1}, "SLURM_PROCID is set but SLURM_NTASKS is not"),
        ({"SLURM_NTASKS": 4}, "SLURM_NTASKS is set but SLURM_PROCID is not"),
        ({"SLURM_ARRAY_TASK_ID": 2}, "SLURM_ARRAY_TASK_ID is set but SLURM_ARRAY_TASK_COUNT is not"),
        ({"OMPI_COMM_WORLD_RANK": 3, "OMPI_COMM_WORLD_SIZE": 3}, "OMPI_COMM_WORLD_RANK=3 is not below"),
        ({"PMI_RANK": "one", "PMI_SIZE": 2}, "PMI_RANK='one' is not a non-negative integer"),
        ({"SLURM_ARRAY_TASK_ID": 7, "SLURM_ARRAY_TASK_COUNT": 3}, "SLURM_ARRAY_TASK_ID=7 is not one of the 3"),
    ):
        line = error_line(shard_run(env))
        assert line.startswith("parchgrad: error: --shard auto: ") and says in line, (env, line)
    line = error_line(run("stats", "--weights", WEIGHTS, "--data", EXAMPLES, "--out", "x", "--shard", "1/1"))
    assert "--shard: '1/1' is not i/N" in line, line


def test_the_gpu_of_a_task_is_its_local_rank_modulo_the_visible_devices():
    """On the SIMT device build (PARCHGRAD_CUDA=SIM), with two simulated devices."""
    assert SIM_BIN and os.path.exists(SIM_BIN), "the SIMT device build is needed (CTest fixture device_simt_build)"
    x = os.path.join(SCRATCH, "one32.npy")  # one small sample: the device path runs on CPU fibers here
    np.save(x, np.random.default_rng(4).standard_normal((1, 3, 32, 32)).astype(np.float32))
    for env, extra, says in (
        ({"SLURM_LOCALID": 3}, [], "(device 1: SLURM_LOCALID=3 of 2 visible)"),
        ({"SLURM_LOCALID": 3, "OMPI_COMM_WORLD_LOCAL_RANK": 2}, [], "(device 0: OMPI_COMM_WORLD_LOCAL_RANK=2 of 2"),
        ({"MPI_LOCALRANKID": 1}, [], "(device 1: MPI_LOCALRANKID=1 of 2 visible)"),
        ({"SLURM_LOCALID": 3}, ["--gpu", 0], "(--gpu 0)"),
        ({}, [], None),  # no launcher, no --gpu: device 0, said as before
    ):
        r = ok(run("gradient", "--weights", WEIGHTS, "--input", x, "--device", "cuda", *extra,
                   env=clean_env(PARCHGRAD_SIM_DEVICES=2, **env), binary=SIM_BIN))
        line = [ln for ln in r.stderr.splitlines() if ln.startswith("device: ")]
        assert len(line) == 1 and line[0].startswith("device: host SIMT runtime"), r.stderr
        assert (says in line[0]) if says else "(device" not in line[0] and "(--gpu" not in line[0], (env, line)
    line = error_line(run("gradient", "--weights", WEIGHTS, "--input", x, "--device", "cuda", "--gpu", 2,
                          env=clean_env(PARCHGRAD_SIM_DEVICES=2), binary=SIM_BIN))
    assert "device 2 does not exist" in line, line
    line = error_line(run("gradient", "--weights", WEIGHTS, "--input", x, "--gpu", 1))
    assert "--gpu 1 needs --device cuda" in line, line


# ---- --gpu all: one worker per device in one process -----------------------------------------

def summary_lines(stderr):
    """The summary lines (", N images ... in T s (R images/s)") of a command's stderr."""
    return [ln for ln in stderr.splitlines() if " in " in ln and "images/s)" in ln]


def test_gpu_all_writes_what_one_gpu_writes():
    """On the SIMT device build with two simulated devices: each command with --gpu all equals --gpu 0."""
    assert SIM_BIN and os.path.exists(SIM_BIN), "the SIMT device build is needed (CTest fixture device_simt_build)"
    env = clean_env(PARCHGRAD_SIM_DEVICES=2)

    def sim(*args):
        return run(*args, env=env, binary=SIM_BIN)

    # Three 32x32 images (stats needs three; the device path runs on CPU fibers here).
    data, out = npy_tree("gpu_all_data", CLASSES[:3], 32), fresh("gpu_all")
    os.makedirs(out)
    dev = ["--weights", WEIGHTS, "--device", "cuda"]

    # A worker that fails (an unreadable image under --strict): one line naming its device, status
    # 1, the other worker's shard file kept.
    broken = os.path.join(data, "circle", "broken.png")
    with open(broken, "wb") as f:
        f.write(b"not a png")
    r = sim("stats", *dev, "--data", data, "--out", os.path.join(out, "all.safetensors"), "--gpu", "all", "--strict")
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("parchgrad: error: ")]
    assert r.returncode == 1 and len(errors) == 2, r.stderr
    assert errors[0].startswith("parchgrad: error: --gpu all: worker 0 (device 0): ") and "broken.png" in errors[0], r.stderr
    assert "1 of 2 workers failed" in errors[1] and not summary_lines(r.stderr), r.stderr
    assert os.listdir(out) == ["all-1-of-2.safetensors"], os.listdir(out)
    os.remove(broken)

    # stats: the statistics file, and nothing else left beside it.
    ok(sim("stats", *dev, "--data", data, "--out", os.path.join(out, "one.safetensors"), "--gpu", 0))
    r = ok(sim("stats", *dev, "--data", data, "--out", os.path.join(out, "all.safetensors"), "--gpu", "all"))
    assert same_bytes(os.path.join(out, "one.safetensors"), os.path.join(out, "all.safetensors"))
    assert sorted(os.listdir(out)) == ["all.safetensors", "one.safetensors"], os.listdir(out)
    lines = summary_lines(r.stderr)
    assert len(lines) == 1 and lines[0].startswith("stats (2 GPUs): 3 images in "), r.stderr
    devices = [ln for ln in r.stderr.splitlines() if ln.startswith("device: ")]
    assert len(devices) == 2 and all("(--gpu all: worker" in ln for ln in devices), r.stderr

    # saliency: the maps, overlays and results.jsonl; an unreadable input fails in both alike.
    # saliency and eval: two of them (one per worker; the unreadable input the third).
    inputs = os.path.join(out, "inputs")
    shutil.copytree(data, inputs)
    shutil.rmtree(os.path.join(inputs, CLASSES[2]))
    with open(os.path.join(inputs, "circle", "broken.png"), "wb") as f:
        f.write(b"not a png")
    one, every = os.path.join(out, "sal_one"), os.path.join(out, "sal_all")
    r1 = sim("saliency", *dev, "--stats", STATS, "--parchgrad", "cls", "--batch", 2, "--out", one, "--gpu", 0, inputs)
    r = sim("saliency", *dev, "--stats", STATS, "--parchgrad", "cls", "--batch", 2, "--out", every, "--gpu", "all",
            inputs)
    for res in (r1, r):
        assert res.returncode == 1 and "1 of 3 inputs failed" in res.stderr.splitlines()[-1], res.stderr
        assert "broken.png" in res.stderr
    files = sorted(os.path.relpath(p, one) for p in glob.glob(os.path.join(one, "**"), recursive=True)
                   if os.path.isfile(p))
    assert files == sorted(os.path.relpath(p, every) for p in glob.glob(os.path.join(every, "**"), recursive=True)
                           if os.path.isfile(p))
    assert len(files) == 5, files  # a map and an overlay per readable input, and results.jsonl
    for rel in files:
        if rel != "results.jsonl":
            assert same_bytes(os.path.join(one, rel), os.path.join(every, rel)), rel
    with open(os.path.join(one, "results.jsonl")) as a, open(os.path.join(every, "results.jsonl")) as b:
        assert a.read().replace(one, "OUT") == b.read().replace(every, "OUT")
    lines = summary_lines(r.stderr)
    assert len(lines) == 1 and lines[0].startswith("saliency (2 GPUs): 2 images, 1 skipped in "), r.stderr
    # Run again after a kill took the second input's record: the workers resume the first from
    # results.jsonl, explain the second again, and the merge leaves the folder as it was.
    with open(os.path.join(every, "results.jsonl")) as f:
        first = f.read().splitlines()[0]
    with open(os.path.join(every, "results.jsonl"), "w") as f:
        f.write(first + "\n")
    r = sim("saliency", *dev, "--stats", STATS, "--parchgrad", "cls", "--batch", 2, "--out", every, "--gpu", "all",
            inputs)
    assert r.returncode == 1, r.stderr
    lines = summary_lines(r.stderr)
    assert len(lines) == 1 and lines[0].startswith("saliency (2 GPUs): 1 image, 1 resumed, 1 skipped in "), r.stderr
    for rel in files:
        if rel != "results.jsonl":
            assert same_bytes(os.path.join(one, rel), os.path.join(every, rel)), rel
    with open(os.path.join(one, "results.jsonl")) as a, open(os.path.join(every, "results.jsonl")) as b:
        assert a.read().replace(one, "OUT") == b.read().replace(every, "OUT")
    assert not glob.glob(os.path.join(every, "results-*")), os.listdir(every)

    # eval: the report (its table once on stdout); run again, it resumes from the report.
    os.remove(os.path.join(inputs, "circle", "broken.png"))
    common = [*dev, "--stats", STATS, "--data", inputs, "--methods", "grad+cls", "--ratios", "0,0.5",
              "--auc-steps", 2, "--batch", 2]
    r1 = ok(sim("eval", *common, "--out", os.path.join(out, "one"), "--gpu", 0))
    for attempt in range(2):
        r = ok(sim("eval", *common, "--out", os.path.join(out, "all"), "--gpu", "all"))
        for ext in ("jsonl", "json", "md", "png"):
            assert same_bytes(os.path.join(out, "one." + ext), os.path.join(out, "all." + ext)), ext
        assert r.stdout == r1.stdout  # the table, once
        assert not glob.glob(os.path.join(out, "all-*")), os.listdir(out)
        lines = summary_lines(r.stderr)
        assert len(lines) == 1 and lines[0].startswith("eval (2 GPUs): 2 images in "), r.stderr
        assert ("resuming" in r.stderr) == (attempt == 1), r.stderr

    # gradient: the rows dealt to the workers come back in order; stdout as one run's.
    x = os.path.join(out, "batch3.npy")
    np.save(x, np.random.default_rng(5).standard_normal((3, 3, 32, 32)).astype(np.float32))
    g1 = ok(sim("gradient", *dev, "--input", x, "--logits-out", os.path.join(out, "l1.npy"), "--grad-out",
                os.path.join(out, "g1.npy"), "--gpu", 0))
    g = ok(sim("gradient", *dev, "--input", x, "--logits-out", os.path.join(out, "la.npy"), "--grad-out",
               os.path.join(out, "ga.npy"), "--gpu", "all"))
    assert g.stdout == g1.stdout and same_bytes(os.path.join(out, "l1.npy"), os.path.join(out, "la.npy"))
    assert same_bytes(os.path.join(out, "g1.npy"), os.path.join(out, "ga.npy"))
    assert not summary_lines(g.stderr), g.stderr

    # Refusals, one line each.
    line = error_line(run("gradient", "--weights", WEIGHTS, "--input", x, "--gpu", "all"))
    assert "--gpu all needs --device cuda" in line, line
    line = error_line(sim("stats", *dev, "--data", data, "--out", os.path.join(out, "x.bin"), "--gpu", "all",
                          "--shard", "0/2"))
    assert "--gpu all does not go with --shard" in line and "--shard auto" in line, line


# ---- the examples: examples/mpi/run.sh under mpirun, examples/slurm/ under a stand-in srun ----

FAKE_SRUN = """#!/bin/bash
# srun's part that the scripts use: "$@" as SLURM_NTASKS tasks on this node.
pids=()
for ((i = 0; i < SLURM_NTASKS; i++)); do SLURM_PROCID=$i SLURM_LOCALID=$i "$@" & pids+=($!); done
rc=0
for p in "${pids[@]}"; do wait "$p" || rc=1; done
exit $rc
"""


def example_env(out, data, **extra):
    return clean_env(PARCHGRAD=BIN, WEIGHTS=WEIGHTS, STATS=STATS, DATA=data, OUT=out, DEVICE="cpu", **extra)


def test_the_mpi_example_runs_under_mpirun():
    data, out = npy_tree(), fresh("example_mpi")
    root = {"OMPI_ALLOW_RUN_AS_ROOT": 1, "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": 1} if os.geteuid() == 0 else {}
    r = subprocess.run(["bash", os.path.join(SRC, "examples", "mpi", "run.sh")], capture_output=True, text=True,
                       timeout=300, cwd=SCRATCH,
                       env=example_env(out, data, NP=3, MPIRUN_ARGS="--oversubscribe", **root))
    assert r.returncode == 0, r.stderr
    assert "eval merge: 3 shards, 6 images" in r.stderr and "merge-results: 3 shards, 6 inputs" in r.stderr, r.stderr
    with open(os.path.join(out, "eval", "REPORT.json")) as f:
        assert json.load(f)["methods"]["grad+cls"]["images"] == 6


def test_the_slurm_examples_run_as_an_array_job_and_under_srun():
    data, out = npy_tree(), fresh("example_slurm")
    bin_dir = os.path.join(out, "bin")
    os.makedirs(bin_dir)
    with open(os.path.join(bin_dir, "srun"), "w") as f:
        f.write(FAKE_SRUN)
    os.chmod(os.path.join(bin_dir, "srun"), 0o755)
    slurm = os.path.join(SRC, "examples", "slurm")
    # The array job: three tasks, one after another here; the merge equals one run.
    for task in range(3):
        ok(subprocess.run(["bash", os.path.join(slurm, "stats_array.sbatch")], capture_output=True, text=True,
                          timeout=300, cwd=SCRATCH,
                          env=example_env(os.path.join(out, "stats"), data, SLURM_ARRAY_TASK_ID=task,
                                          SLURM_ARRAY_TASK_COUNT=3, SLURM_ARRAY_TASK_MIN=0, SLURM_PROCID=0,
                                          SLURM_NTASKS=1)))
    shards = sorted(glob.glob(os.path.join(out, "stats", "stats-*-of-3.pgshard")))
    assert len(shards) == 3, os.listdir(os.path.join(out, "stats"))
    ok(run("stats", "merge", *shards, "--out", os.path.join(out, "merged.safetensors")))
    ok(run("stats", "--weights", WEIGHTS, "--data", data, "--out", os.path.join(out, "one.safetensors")))
    assert same_bytes(os.path.join(out, "merged.safetensors"), os.path.join(out, "one.safetensors"))
    # srun with three tasks: saliency (IG + class-wise ParchGrad) and eval, each merged.
    env = example_env(os.path.join(out, "maps"), data, SLURM_NTASKS=3, PATH=bin_dir + os.pathsep + os.environ["PATH"])
    r = ok(subprocess.run(["bash", os.path.join(slurm, "saliency_srun.sbatch")], capture_output=True, text=True,
                          timeout=300, cwd=SCRATCH, env=env))
    assert "merge-results: 3 shards, 6 inputs, 6 records" in r.stderr, r.stderr
    env["OUT"] = os.path.join(out, "eval", "REPORT")
    r = ok(subprocess.run(["bash", os.path.join(slurm, "eval_srun.sbatch")], capture_output=True, text=True,
                          timeout=300, cwd=SCRATCH, env=env))
    assert "eval merge: 3 shards, 6 images" in r.stderr, r.stderr
