"""Integrated gradients' baseline (`--ig-baseline zero|black|blurred|FILE.npy`) against PyTorch
float64 and scipy.

The bundled model (a small torchvision ResNet) on one example: the path b + a (x - b) with the
engine's trapezoidal rule, each copy's gradient seeded with onehot(target) * p[target], and the
map |mean over RGB of (x - b) * mean gradient|, all in float64 in PyTorch; `black` must be the
normalised black image given as a file, bit for bit, and `blurred` the normalised input blurred
by scipy.ndimage.gaussian_filter (reflect, truncate 4) given as a file, bit for bit.
"""
import os
import subprocess

import numpy as np
import scipy.ndimage
import torch
from torchvision.models.resnet import BasicBlock

import parity_common as pc

BIN = pc.engine_binary()
SRC = pc.SRC
WEIGHTS = os.path.join(SRC, "assets", "default", "resnet_synth.pth")
IMAGE = os.path.join(SRC, "assets", "default", "examples", "star.png")
SCRATCH = pc.scratch_dir()
STEPS, TARGET = 6, 4
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def run(*args):
    r = subprocess.run([BIN, *map(str, args)], capture_output=True, text=True, timeout=600,
                       env=dict(os.environ, OPENBLAS_NUM_THREADS="1"))
    assert r.returncode == 0, r.stderr
    return r


def engine_map(x_path, baseline, name, *extra):
    out = os.path.join(SCRATCH, name)
    run("saliency", "--weights", WEIGHTS, "--method", "ig", "--ig-steps", STEPS, "--ig-baseline", baseline,
        *extra, "--target", TARGET, "--out", out, x_path)
    return np.load(os.path.join(out, os.path.basename(x_path)))


def reference_map(model, x, b, dtype=torch.float64):
    model = model.to(dtype)
    x, b = x.to(dtype), b.to(dtype)
    total = torch.zeros_like(x)
    for i in range(STEPS + 1):
        a = i / STEPS
        p = (b + a * (x - b)).unsqueeze(0).requires_grad_(True)
        logits = model(p)
        prob = torch.softmax(logits, dim=1)[0, TARGET].detach()
        (g,) = torch.autograd.grad(logits[0, TARGET] * prob, p)
        total += (0.5 if i in (0, STEPS) else 1.0) * g[0]
    return ((x - b) * total / STEPS).mean(dim=0).abs().numpy()


def test_ig_baselines_match_pytorch_float64():
    x_path = os.path.join(SCRATCH, "x.npy")
    run("preprocess", IMAGE, "--out", x_path)
    x = torch.from_numpy(np.load(x_path))
    model = pc.build_small_resnet(BasicBlock, num_classes=6)
    model.load_state_dict(torch.load(WEIGHTS, map_location="cpu"))
    model = model.eval()
    # A black image normalised as torchvision normalises it (float32 arithmetic).
    black = torch.stack([(torch.zeros(x.shape[1:]) - m) / s for m, s in zip(MEAN, STD)])
    # A dimmed, noisy copy of the image: the path stays where the target's probability is not
    # so small that float32's seed underflows (which would test float32, not the engine).
    noise = np.random.default_rng(3).standard_normal(x.shape).astype(np.float32) * 0.05
    given = torch.from_numpy((x.numpy() * 0.25 + noise).astype(np.float32))
    given_path = os.path.join(SCRATCH, "given.npy")
    np.save(given_path, given.numpy())
    # Against float64 with baselines that make no exact ties: a constant baseline (black) makes
    # every max-pool window of the first copy an exact tie, which the engine's convolution does
    # not keep exact (its values at equal receptive fields differ in the last bit), so its
    # routing of that copy's gradient differs from PyTorch's; black is checked below as the
    # given baseline it stands for.
    for name, baseline, b in (("zero", "zero", torch.zeros_like(x)), ("given", given_path, given)):
        got = engine_map(x_path, baseline, "ig_" + name)
        want = reference_map(model, x, b)
        err = np.abs(got - want).max() / np.abs(want).max()
        # PyTorch's own float32 error on the same path: a constant baseline makes max-pool ties
        # and ReLU inputs at zero whose float32 rounding decides (see README, Numerical notes).
        own = reference_map(model, x, b, torch.float32).astype(np.float64)
        own_err = np.abs(own - want).max() / np.abs(want).max()
        print(f"{name}: max error {err:.2e} of the map's maximum (PyTorch float32: {own_err:.2e})")
        assert err <= max(2 * own_err, 1e-5), (name, err, own_err)
    # black is the normalised black image, bit for bit; the default is a file of zeros.
    black_path = os.path.join(SCRATCH, "black.npy")
    np.save(black_path, black.numpy().astype(np.float32))
    assert np.array_equal(engine_map(x_path, black_path, "ig_black_file"), engine_map(x_path, "black", "ig_black"))
    zeros_path = os.path.join(SCRATCH, "zeros.npy")
    np.save(zeros_path, np.zeros(x.shape, np.float32))
    # Not bit for bit: b + (x - b) a is another float expression than a x (signed zeros of the
    # all-zero first copy, FMA contraction), so within 1e-6 of the map.
    a, b = engine_map(x_path, zeros_path, "ig_zeros_file"), engine_map(x_path, "zero", "ig_zero2")
    assert np.abs(a - b).max() <= 1e-6 * np.abs(b).max()


def test_blurred_baseline_is_scipy_gaussian_filter():
    """`blurred` is the normalised input through scipy.ndimage.gaussian_filter with sigma
    --ig-blur-sigma pixels on the two spatial axes, mode "reflect", truncate 4.0: the map equals,
    bit for bit, the map of that tensor given as a file. The default sigma (10), a small one, and
    one whose kernel is longer than the image (mirrored again and again); an image and a
    non-square .npy input of other values."""
    x_path = os.path.join(SCRATCH, "x.npy")
    run("preprocess", IMAGE, "--out", x_path)
    r_path = os.path.join(SCRATCH, "r.npy")
    rng = np.random.default_rng(5)
    np.save(r_path, (np.load(x_path)[:, 40:77, 20:70] + rng.standard_normal((3, 37, 50)) * 0.3).astype(np.float32))
    for path, sigma in ((x_path, None), (x_path, 1.7), (r_path, 3.0), (r_path, 40.0)):
        x = np.load(path)
        s = 10.0 if sigma is None else sigma
        b = scipy.ndimage.gaussian_filter(x, (0, s, s), mode="reflect", truncate=4.0)
        assert b.dtype == np.float32 and not np.array_equal(b, x)
        b_path = os.path.join(SCRATCH, "blur_file.npy")
        np.save(b_path, b)
        tag = f"{os.path.basename(path)[0]}_{s}"
        extra = () if sigma is None else ("--ig-blur-sigma", sigma)
        got = engine_map(path, "blurred", "ig_blurred_" + tag, *extra)
        want = engine_map(path, b_path, "ig_blur_file_" + tag)
        assert np.array_equal(got, want), (tag, np.abs(got - want).max() / np.abs(want).max())
        assert np.abs(want).max() > 0
    # The baseline matters: another sigma gives another map.
    assert not np.array_equal(engine_map(x_path, "blurred", "ig_blurred_s3", "--ig-blur-sigma", 3),
                              engine_map(x_path, "blurred", "ig_blurred_s10"))
