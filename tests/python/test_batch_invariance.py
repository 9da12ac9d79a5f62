"""An image's results must not depend on its batch.

For every command that runs a model, an image's logits, map, GAP statistics and ParchGrad
decisions are bitwise the same whatever the batch size, the other images of the batch, the
image's position in it and the thread count (README, "Batch invariance"). Float32 results
legitimately differ between CPUs (OpenBLAS picks its kernels per processor), so nothing here
is compared with recorded bits: every comparison is between two runs on this machine.

Inputs are the ones that expose a batch-dependent rounding: the bundled examples, photographs
(../shared/data/images), and generated images made of flat colour fields, rectangles and
discs, whose flat regions give exactly equal activations after the stem (max-pool ties) so that
a one-ulp difference moves the gradient to another pixel. Models: the bundled default, and
torchvision resnet18 and vgg11_bn with random weights (BatchNorm statistics randomised).
Runs: --batch 1 and --batch 8 with two threads (a batch smaller than the thread count splits
one sample's work between the threads), and --batch 3 --threads 1.
"""
import json
import os
import shutil
import subprocess

import numpy as np
import pytest
import torch

import parchgrad_ref as ref
import parity_common as pc

torch.set_num_threads(2)

BIN = pc.binary_path()
if not BIN or not os.path.exists(BIN):
    raise RuntimeError("the parchgrad binary is needed: set PARCHGRAD_BIN or build into build/")
SIM_BIN = os.environ.get("PARCHGRAD_SIM_BIN")
SRC = os.environ.get("PARCHGRAD_SRC", os.path.join(os.path.dirname(__file__), "..", ".."))
DEFAULT_WEIGHTS = os.path.join(SRC, "assets", "default", "resnet_synth.pth")
DEFAULT_STATS = os.path.join(SRC, "assets", "default", "stats.safetensors")
EXAMPLES = os.path.join(SRC, "assets", "default", "examples")
PHOTOS = os.path.join(SRC, "..", "shared", "data", "images")
SCRATCH = os.path.join(pc.scratch_dir(), "batch_invariance")

# The batch configurations whose results must agree bit for bit.
RUNS = {"b1": ["--batch", "1"], "b8": ["--batch", "8"], "b3t1": ["--batch", "3", "--threads", "1"]}
METHODS = "grad,grad+cls,inputgrad,ig,smoothgrad"
IG_STEPS, SG_SAMPLES = 3, 2


def run(binary, args, threads=2, timeout=1800):
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), PG_SIMT_THREADS=str(threads))
    proc = subprocess.run([binary] + [str(a) for a in args], capture_output=True, text=True, timeout=timeout,
                          env=env)
    if proc.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, args))} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc


# ---- inputs -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def inputs():
    """Every input file, in one folder: examples, photographs, generated flat images."""
    shutil.rmtree(SCRATCH, ignore_errors=True)
    folder = os.path.join(SCRATCH, "inputs")
    os.makedirs(folder)
    files = []
    for f in sorted(os.listdir(EXAMPLES)):
        if f.endswith(".png"):
            files.append(shutil.copy(os.path.join(EXAMPLES, f), folder))
    photos = ["astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg"]
    for f in photos:
        path = os.path.join(PHOTOS, f)
        assert os.path.exists(path), f"{path}: the shared sample photographs are needed"
        files.append(shutil.copy(path, folder))
    files += pc.make_flat_images(folder)
    return files


def noise_file(path, M, size):
    """Fixed SmoothGrad noise shared by every image, [M, 3, size, size]."""
    rng = np.random.default_rng(7)
    return pc.save_npy(path, (0.3 * rng.standard_normal((M, 3, size, size))).astype(np.float32))



def records_of(out):
    """Per input: what results.jsonl says of its prediction (the settings name the batch)."""
    recs = {}
    for line in open(os.path.join(out, "results.jsonl")):
        r = json.loads(line)
        recs[os.path.basename(r["input"])] = {k: r[k] for k in ("target", "target_prob", "top5")}
    return recs


def texts_of(out, suffix):
    return {f: open(os.path.join(out, f)).read() for f in sorted(os.listdir(out)) if f.endswith(suffix)}


def assert_same_runs(outs, what):
    """Every run's maps, predictions and ParchGrad masks equal the first run's, bit for bit."""
    names = list(outs)
    first = outs[names[0]]
    maps0, recs0, masks0 = pc.maps_of(first), records_of(first), texts_of(first, ".masks.json")
    assert maps0 and recs0
    for name in names[1:]:
        maps, recs, masks = pc.maps_of(outs[name]), records_of(outs[name]), texts_of(outs[name], ".masks.json")
        assert sorted(maps) == sorted(maps0), f"{what} {name}: other map files"
        differ = [f for f in maps0 if not np.array_equal(maps[f], maps0[f])]
        detail = ""
        if differ:
            f = differ[0]
            err = float(np.abs(maps[f] - maps0[f]).max() / max(np.abs(maps0[f]).max(), 1e-30))
            detail = f" (first: {f}, {err:.3g} of its maximum)"
        assert not differ, f"{what}: {name} differs from {names[0]} on {len(differ)} maps{detail}"
        assert recs == recs0, f"{what}: {name} predicts differently from {names[0]}"
        assert masks == masks0, f"{what}: {name} keeps other ParchGrad channels than {names[0]}"


def saliency_runs(binary, tag, weights, stats, files, extra=()):
    noise = noise_file(os.path.join(SCRATCH, f"{tag}_noise.npy"), SG_SAMPLES, 224)
    outs = {}
    for name, flags in RUNS.items():
        out = os.path.join(SCRATCH, f"{tag}_{name}")
        shutil.rmtree(out, ignore_errors=True)
        run(binary, ["saliency", "--weights", weights, "--stats", stats, "--target", "top1", "--compare", METHODS,
                     "--ig-steps", IG_STEPS, "--sg-noise", noise, "--explain-masks", "--out", out] + flags +
            list(extra) + files)
        outs[name] = out
    return outs


# ---- random-weight torchvision models ------------------------------------------------------

def random_model_files(arch, files):
    """Weights and random statistics (ParchGrad selects some channels of every layer) of a
    torchvision model with random weights."""
    d = os.path.join(SCRATCH, arch)
    os.makedirs(d, exist_ok=True)
    model = pc.build_model(arch, num_classes=10)
    probes = []
    for i, f in enumerate(files):
        x_path = os.path.join(d, f"probe{i}.npy")
        run(BIN, ["preprocess", f, "-o", x_path])
        probes.append(np.load(x_path))
    probes = torch.from_numpy(np.stack(probes))
    stats = ref.random_stats(model, 10, probes, pc.stable_seed("batch-invariance", arch))
    weights = pc.save_weights(pc.model_state_dict(model), os.path.join(d, "w.safetensors"), "safetensors")
    stats_path = ref.write_stats(stats, os.path.join(d, "stats.safetensors"), arch, 10, write=pc.write_safetensors)
    del model
    return weights, stats_path


# ---- tests ---------------------------------------------------------------------------------

def test_default_model_saliency(inputs):
    outs = saliency_runs(BIN, "default", DEFAULT_WEIGHTS, DEFAULT_STATS, inputs)
    assert_same_runs(outs, "default model")


@pytest.mark.parametrize("arch,count", [("resnet18", 9), ("vgg11_bn", 4)])
def test_torchvision_saliency(inputs, arch, count):
    files = inputs[:count] if count >= len(inputs) else inputs[-count:]  # the flat images always
    weights, stats = random_model_files(arch, files)
    outs = saliency_runs(BIN, arch, weights, stats, files)
    assert_same_runs(outs, arch)
    shutil.rmtree(os.path.join(SCRATCH, arch), ignore_errors=True)


def test_gradient_logits_per_sample(inputs):
    """`gradient` on one .npy batch: every sample's logits and input gradient equal those of
    the sample alone and those of the sample inside another batch."""
    xs = []
    for i, f in enumerate(inputs):
        p = os.path.join(SCRATCH, f"x{i}.npy")
        run(BIN, ["preprocess", f, "-o", p])
        xs.append(np.load(p))
    X = np.stack(xs)
    full = pc.save_npy(os.path.join(SCRATCH, "all.npy"), X)
    run(BIN, ["gradient", "--weights", DEFAULT_WEIGHTS, "--input", full, "--target", "top1",
              "--logits-out", os.path.join(SCRATCH, "all_logits.npy"), "--grad-out", os.path.join(SCRATCH, "all_grad.npy")])
    L, G = np.load(os.path.join(SCRATCH, "all_logits.npy")), np.load(os.path.join(SCRATCH, "all_grad.npy"))
    for lo, hi, threads in [(0, 1, 2), (5, 6, 2), (3, 6, 1), (len(X) - 2, len(X), 2)]:
        part = pc.save_npy(os.path.join(SCRATCH, "part.npy"), X[lo:hi])
        run(BIN, ["gradient", "--weights", DEFAULT_WEIGHTS, "--input", part, "--target", "top1",
                  "--logits-out", os.path.join(SCRATCH, "part_logits.npy"),
                  "--grad-out", os.path.join(SCRATCH, "part_grad.npy")], threads=threads)
        np.testing.assert_array_equal(np.load(os.path.join(SCRATCH, "part_logits.npy")), L[lo:hi],
                                      err_msg=f"logits of samples {lo}..{hi - 1}")
        np.testing.assert_array_equal(np.load(os.path.join(SCRATCH, "part_grad.npy")), G[lo:hi],
                                      err_msg=f"input gradient of samples {lo}..{hi - 1}")


def test_stats_files_equal(inputs):
    """The GAP statistics of a data set do not depend on the batch or the thread count."""
    root = os.path.join(SCRATCH, "stats_data")
    for i, f in enumerate(inputs):
        d = os.path.join(root, "a" if i % 2 == 0 else "b")
        os.makedirs(d, exist_ok=True)
        shutil.copy(f, d)
    outs = []
    for flags, threads in [(["--batch", "1"], 2), (["--batch", "8"], 2), (["--batch", "3"], 1)]:
        out = os.path.join(SCRATCH, f"stats_{len(outs)}.safetensors")
        run(BIN, ["stats", "--weights", DEFAULT_WEIGHTS, "--data", root, "--out", out] + flags, threads=threads)
        outs.append(open(out, "rb").read())
    assert outs[1] == outs[0], "--batch 8 gives other statistics than --batch 1"
    assert outs[2] == outs[0], "--batch 3 --threads 1 gives other statistics than --batch 1"


def test_eval_records_equal():
    """eval's metrics of an image do not depend on --batch (maps) or --perturb-batch (the
    masked copies)."""
    reports = []
    for flags in (["--batch", "1", "--perturb-batch", "7"], ["--batch", "16", "--perturb-batch", "64"]):
        out = os.path.join(SCRATCH, f"eval_{len(reports)}", "report")
        run(BIN, ["eval", "--weights", DEFAULT_WEIGHTS, "--stats", DEFAULT_STATS, "--data", EXAMPLES,
                  "--methods", "grad,grad+cls", "--auc-steps", "4", "--no-resume", "--out", out] + flags)
        recs = {}
        for line in open(out + ".jsonl"):
            r = json.loads(line)
            for k in ("settings_id", "settings", "seconds", "time"):
                r.pop(k, None)
            recs[(r["image"], r["method"])] = r
        reports.append(recs)
    assert reports[0] and reports[0] == reports[1]


def test_device_path_deterministic():
    """The device path with --deterministic, run on the host SIMT runtime (the CUDA kernels
    and the per-sample library calls of the real device path): the same promise."""
    assert SIM_BIN and os.path.exists(SIM_BIN), \
        "PARCHGRAD_SIM_BIN: the PARCHGRAD_CUDA=SIM build (CTest's fixture device_simt_build) is needed"
    # Four example images at 96x96 in one .npy batch (the SIMT runtime is slow).
    names = sorted(f for f in os.listdir(EXAMPLES) if f.endswith(".png"))[:4]
    os.makedirs(SCRATCH, exist_ok=True)
    x = pc.save_npy(os.path.join(SCRATCH, "sim_x.npy"), pc.small_image_batch(EXAMPLES, names, 96))
    noise = noise_file(os.path.join(SCRATCH, "sim_noise.npy"), SG_SAMPLES, 96)
    outs = {}
    for name, flags in RUNS.items():
        out = os.path.join(SCRATCH, f"sim_{name}")
        shutil.rmtree(out, ignore_errors=True)
        run(SIM_BIN, ["saliency", "--weights", DEFAULT_WEIGHTS, "--stats", DEFAULT_STATS, "--target", "top1",
                      "--compare", METHODS, "--ig-steps", IG_STEPS, "--sg-noise", noise, "--explain-masks",
                      "--device", "cuda", "--deterministic", "--out", out, x] + flags)
        outs[name] = out
    assert_same_runs(outs, "device path (SIMT), --deterministic")
