"""`parchgrad stats` and `parchgrad stats merge` against PyTorch + scipy.

A random-weight torchvision resnet18 (3 classes, randomised BatchNorm statistics) and an
ImageFolder tree of .npy inputs (3 classes x 20 images of 3x64x64). The reference GAP
values (mean_hw relu(conv output) of every nn.Conv2d, from forward hooks) give per channel
the mean, std (ddof=1), scipy.stats.shapiro p and scipy.stats.ttest_ind(cls, rest,
equal_var=(test == "student"), alternative="greater") p (NaN -> 1), compared with the
engine's stats file. Sharded runs merged must equal one run bitwise, also with spilling.
Errors: empty tree, weights of another architecture, a class folder beyond the class count.

Run with `pytest -s` to see the worst errors.
"""
import json
import math
import os
import shutil
import struct
import subprocess
import warnings

import numpy as np
import pytest
import torch
import torchvision
from scipy import stats

SRC = os.environ.get("PARCHGRAD_SRC", os.path.join(os.path.dirname(__file__), "..", ".."))
BIN = os.environ.get("PARCHGRAD_BIN") or os.path.join(SRC, "build", "parchgrad")
if not os.path.exists(BIN):
    raise RuntimeError(f"parchgrad binary not found at {BIN} (set PARCHGRAD_BIN)")
SCRATCH = os.environ.get("PARCHGRAD_SCRATCH") or os.path.join(
    os.path.dirname(os.path.abspath(BIN)), "test_scratch", "test_stats")
os.makedirs(SCRATCH, exist_ok=True)

CLASSES, PER_CLASS, SIZE = 3, 20, 64
MEAN_STD_REL = 1e-5
P_REL, P_ABS = 1e-4, 1e-7
# Shapiro-Wilk p: scipy 1.10 evaluates the test in single precision, which amplifies the
# float32 rounding differences of the GAP values between the two engines. Measured on this
# data: engine vs PyTorch-float32 GAP up to 4.8e-4 relative, and PyTorch float64 vs
# PyTorch float32 GAP (same scipy call) up to 4.7e-4, i.e. the same size. Hence 1e-3 here;
# the algorithm itself is bit-exact with scipy (test_stats_math.py).
SHAPIRO_REL = 1e-3
# t-test p, likewise: engine vs PyTorch-float32 GAP up to 2.3e-4 relative (deep layers),
# PyTorch float64 vs float32 GAP up to 1.9e-4 (student) / 1.2e-4 (welch). The t-test
# itself matches scipy to ~1e-12 (test_stats_math.py); the 1e-4 of the brief is exceeded
# only through the GAP rounding.
TTEST_REL = 5e-4


def run(*args):
    return subprocess.run([BIN, *map(str, args)], capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, OPENBLAS_NUM_THREADS="1"))


def read_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    meta = header.pop("__metadata__", {})
    out = {}
    for name, info in header.items():
        assert info["dtype"] == "F32"
        a, b = info["data_offsets"]
        out[name] = np.frombuffer(data[a:b], dtype="<f4").reshape(info["shape"])
    return out, meta


@pytest.fixture(scope="module")
def setup():
    root = os.path.join(SCRATCH, "data")
    shutil.rmtree(root, ignore_errors=True)
    rng = np.random.default_rng(1234)
    labels = []
    xs = []
    for k in range(CLASSES):
        d = os.path.join(root, f"class_{k}")
        os.makedirs(d)
        for i in range(PER_CLASS):
            x = rng.standard_normal((3, SIZE, SIZE)).astype(np.float32) + 0.3 * k
            np.save(os.path.join(d, f"img_{i:03d}.npy"), x)
    # The order the engine sees: folders sorted, files sorted.
    for k in range(CLASSES):
        d = os.path.join(root, f"class_{k}")
        for name in sorted(os.listdir(d)):
            xs.append(np.load(os.path.join(d, name)))
            labels.append(k)

    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=CLASSES)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.3, 0.3)
    model.eval()
    weights = os.path.join(SCRATCH, "resnet18_3.pth")
    torch.save(model.state_dict(), weights)

    gaps = {}
    hooks = []
    for name, m in model.named_modules():
        if isinstance(m, torch.nn.Conv2d):
            def hook(mod, inp, out, name=name):
                gaps.setdefault(name, []).append(torch.relu(out).mean(dim=(2, 3)).numpy().copy())
            hooks.append(m.register_forward_hook(hook))
    with torch.no_grad():
        model(torch.from_numpy(np.stack(xs)))
    gaps = {k: np.concatenate(v).astype(np.float64) for k, v in gaps.items()}
    return {"root": root, "weights": weights, "gaps": gaps, "labels": np.array(labels)}


def reference(gaps, labels, test):
    ref = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name, g in gaps.items():
            C = g.shape[1]
            sp = np.ones(C)
            cp = np.ones((C, CLASSES))
            for c in range(C):
                p = stats.shapiro(g[:, c].astype(np.float32)).pvalue
                sp[c] = 1.0 if math.isnan(p) else p
                for k in range(CLASSES):
                    r = stats.ttest_ind(g[labels == k, c], g[labels != k, c],
                                        equal_var=(test == "student"), alternative="greater")
                    cp[c, k] = 1.0 if math.isnan(r.pvalue) else r.pvalue
            ref[name] = {"mean": g.mean(0), "std": g.std(0, ddof=1), "shapiro_p": sp, "cls_p": cp}
    return ref


def worst(got, want, rel, abs_):
    """(worst relative error where |want| > abs_, worst absolute error, all within?)"""
    got = got.astype(np.float64)
    err = np.abs(got - want)
    ok = (err <= rel * np.abs(want)) | (err <= abs_)
    big = np.abs(want) > abs_
    wrel = float((err[big] / np.abs(want[big])).max()) if big.any() else 0.0
    return wrel, float(err.max()), bool(ok.all())


@pytest.mark.parametrize("test", ["student", "welch"])
def test_against_scipy(setup, test):
    out = os.path.join(SCRATCH, f"stats_{test}.safetensors")
    dump = os.path.join(SCRATCH, f"gap_{test}.safetensors")
    r = run("stats", "--weights", setup["weights"], "--model", "resnet18", "--data", setup["root"],
            "--out", out, "--test", test, "--batch", 7, "--threads", 1, "--dump-gap", dump)
    assert r.returncode == 0, r.stderr
    tensors, meta = read_safetensors(out)
    assert meta["model"] == "resnet18" and meta["test"] == test and meta["num_classes"] == "3"
    assert json.loads(meta["images_per_class"]) == [PER_CLASS] * CLASSES
    assert meta["weights"] == "resnet18_3.pth"
    ref = reference(setup["gaps"], setup["labels"], test)
    assert set(tensors) == {f"{n}.{k}" for n in ref for k in ("mean", "std", "shapiro_p", "cls_p")}
    scale = max(float(np.abs(v["mean"]).max()) for v in ref.values())
    report = {}
    failures = []
    for name, want in ref.items():
        for key, (rel, abs_) in {"mean": (MEAN_STD_REL, 1e-7 * scale), "std": (MEAN_STD_REL, 1e-7 * scale),
                                 "shapiro_p": (SHAPIRO_REL, P_ABS), "cls_p": (TTEST_REL, P_ABS)}.items():
            got = tensors[f"{name}.{key}"]
            assert got.shape == want[key].shape, (name, key)
            wrel, wabs, ok = worst(got, want[key], rel, abs_)
            w = report.setdefault(key, [0.0, 0.0])
            report[key] = [max(w[0], wrel), max(w[1], wabs)]
            if not ok:
                failures.append(f"{name}.{key}: worst rel {wrel:.3g}, abs {wabs:.3g}")
    print(f"\n{test}: worst (relative, absolute) errors vs PyTorch GAP:", json.dumps(report))
    assert not failures, failures

    # The tight check: the engine's own GAP values (--dump-gap) equal PyTorch's to float32
    # rounding, and scipy on exactly those values gives the engine's statistics within the
    # issue's tolerances (mean/std 1e-5, p-values 1e-4 relative or 1e-7 absolute).
    gap, _ = read_safetensors(dump)
    assert np.array_equal(gap["__labels__"], setup["labels"].astype(np.float32))
    engine_gaps = {n: gap[n].astype(np.float64) for n in ref}
    for name, g in engine_gaps.items():
        want = setup["gaps"][name]
        assert np.linalg.norm(g - want) <= 1e-5 * np.linalg.norm(want), name
    ref2 = reference(engine_gaps, setup["labels"], test)
    report2, failures2 = {}, []
    for name, want in ref2.items():
        for key, (rel, abs_) in {"mean": (MEAN_STD_REL, 1e-7 * scale), "std": (MEAN_STD_REL, 1e-7 * scale),
                                 "shapiro_p": (P_REL, P_ABS), "cls_p": (P_REL, P_ABS)}.items():
            wrel, wabs, ok = worst(tensors[f"{name}.{key}"], want[key], rel, abs_)
            w = report2.setdefault(key, [0.0, 0.0])
            report2[key] = [max(w[0], wrel), max(w[1], wabs)]
            if not ok:
                failures2.append(f"{name}.{key}: worst rel {wrel:.3g}, abs {wabs:.3g}")
    print(f"{test}: worst (relative, absolute) errors vs scipy on the engine's GAP:", json.dumps(report2))
    assert not failures2, failures2


def test_shards_merge_bitwise(setup):
    single = os.path.join(SCRATCH, "single.safetensors")
    r = run("stats", "--weights", setup["weights"], "--data", setup["root"], "--out", single, "--batch", 16)
    assert r.returncode == 0, r.stderr
    shards = []
    for i in range(2):
        p = os.path.join(SCRATCH, f"shard{i}.bin")
        # Tiny memory limit: the samples spill to a temporary file after every batch.
        r = run("stats", "--weights", setup["weights"], "--data", setup["root"], "--out", p,
                "--shard", f"{i}/2", "--batch", 5, "--memory-mb", 0)
        assert r.returncode == 0, r.stderr
        shards.append(p)
    assert not [f for f in os.listdir(SCRATCH) if ".samples." in f], "spill file left behind"
    merged = os.path.join(SCRATCH, "merged.safetensors")
    # Shard order given reversed: the result must not depend on it.
    r = run("stats", "merge", shards[1], shards[0], "--out", merged, "--memory-mb", 0.001)
    assert r.returncode == 0, r.stderr
    a, ma = read_safetensors(single)
    b, mb = read_safetensors(merged)
    assert ma == mb
    assert set(a) == set(b)
    for k in a:
        assert a[k].tobytes() == b[k].tobytes(), k
    # Bad merges: a shard twice, a missing shard.
    r = run("stats", "merge", shards[0], shards[0], "--out", merged)
    assert r.returncode != 0 and "parchgrad: error:" in r.stderr
    r = run("stats", "merge", shards[0], "--out", merged)
    assert r.returncode != 0 and "missing" in r.stderr


def test_labels_file(setup):
    labels = os.path.join(SCRATCH, "labels.txt")
    with open(labels, "w") as f:
        f.write("class_0 2\nclass_1 0\nclass_2 1\n")
    out = os.path.join(SCRATCH, "labels.safetensors")
    r = run("stats", "--weights", setup["weights"], "--data", setup["root"], "--out", out, "--labels", labels)
    assert r.returncode == 0, r.stderr
    t, meta = read_safetensors(out)
    assert json.loads(meta["images_per_class"]) == [PER_CLASS] * CLASSES
    base, _ = read_safetensors(os.path.join(SCRATCH, "single.safetensors")) if os.path.exists(
        os.path.join(SCRATCH, "single.safetensors")) else (None, None)
    if base is not None:
        # Class k of this run is folder class_{(k + 1) % 3}.
        for name in t:
            if name.endswith(".cls_p"):
                assert np.array_equal(t[name], base[name][:, [1, 2, 0]])


def one_error(r):
    lines = r.stderr.strip().splitlines()
    return r.returncode != 0 and len(lines) == 1 and lines[0].startswith("parchgrad: error: ")


def test_errors(setup):
    empty = os.path.join(SCRATCH, "empty")
    shutil.rmtree(empty, ignore_errors=True)
    os.makedirs(empty)
    out = os.path.join(SCRATCH, "err.safetensors")
    r = run("stats", "--weights", setup["weights"], "--data", empty, "--out", out)
    assert one_error(r), r.stderr
    os.makedirs(os.path.join(empty, "a"))
    r = run("stats", "--weights", setup["weights"], "--data", empty, "--out", out)
    assert one_error(r), r.stderr
    r = run("stats", "--weights", setup["weights"], "--model", "vgg11", "--data", setup["root"], "--out", out)
    assert one_error(r), r.stderr
    extra = os.path.join(SCRATCH, "extra")
    shutil.rmtree(extra, ignore_errors=True)
    shutil.copytree(setup["root"], extra)
    os.makedirs(os.path.join(extra, "class_3"))
    np.save(os.path.join(extra, "class_3", "x.npy"), np.zeros((3, SIZE, SIZE), np.float32))
    r = run("stats", "--weights", setup["weights"], "--data", extra, "--out", out)
    assert one_error(r) and "class_3" in r.stderr, r.stderr
    assert not os.path.exists(out)
