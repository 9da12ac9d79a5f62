"""Parity of `parchgrad gradient` with torchvision's mobilenet_v2 (depthwise convolutions,
ReLU6, inverted residual blocks): logits and input gradients against PyTorch, architecture named
and inferred from the weights (which must then name it); and ParchGrad's cls/ins maps and
masks against the PyTorch implementation of the method (parchgrad_ref.py), whose hooked convs
are the last int(ratio * K) nn.Conv2d modules, depthwise ones included.

Random weights (BatchNorm statistics included), small inputs (96x96: every layer's shape is
exercised at any size; CI time). Criterion, per sample: relative error below 1e-4 for the logits
against PyTorch float32; for the input gradient, below 1e-4 against PyTorch float32 or float64,
or no farther from float64 than twice PyTorch float32's own distance.
"""
import json
import os

import numpy as np
import pytest
import torch

import parchgrad_ref as ref
import parity_common as pc

torch.set_num_threads(2)

BIN = pc.binary_path()
if os.environ.get("PARCHGRAD_BIN") and not os.path.exists(BIN):
    raise RuntimeError(f"PARCHGRAD_BIN={BIN} does not exist")
pytestmark = pytest.mark.skipif(BIN is None, reason="parchgrad binary not built")

SCRATCH = pc.scratch_dir()
ARCH = "mobilenet_v2"


def set_relu6_margins(model, x, k=3.0, seed=0):
    """set_relu_margins for ReLU6: every ReLU6 input channel gets its producer's (BatchNorm's)
    bias shifted so that its mean over x sits at +k or -k standard deviations (random sign), and
    its scale so that +k sd stays below 6 - k sd: fewer units within float32 rounding of either
    kink (0 and 6), where two correct implementations may take different sides."""
    gen = torch.Generator().manual_seed(seed)
    state = {}

    def track(mod, inputs, output):
        state["last"] = mod

    def shift_input(mod, inputs):
        z = inputs[0]
        mu, sd = z.mean(dim=(0, 2, 3)), z.std(dim=(0, 2, 3)).clamp(min=1e-6)
        bn = state["last"]
        # At most sd = 6 / (4k): the channel's +k sd mean and its spread stay inside (0, 6).
        f = torch.clamp(6.0 / (4 * k * sd), max=1.0)
        sign = torch.where(torch.rand(mu.shape, generator=gen) < 0.5, -1.0, 1.0)
        target = sign * k * sd * f
        # z' = f * (z - mu) + target: BatchNorm's weight and bias scaled and shifted.
        bn.weight.mul_(f)
        bn.bias.copy_(f * (bn.bias - mu) + target)
        shape = (1, -1, 1, 1)
        return (f.view(shape) * (z - mu.view(shape)) + target.view(shape),)

    return pc.run_shifting(model, x, torch.nn.BatchNorm2d, track, torch.nn.ReLU6, shift_input)


def conditioned_model(classes, x):
    model = pc.build_model(ARCH, classes)
    logits = set_relu6_margins(model, x)
    pc.calibrate_logits(model, x, logits=logits)
    return model


def test_hooked_convs_in_module_order():
    """The engine's conv order is torchvision's Conv2d module order (depthwise convs included):
    the ratio of ParchGrad counts in it. 52 Conv2d modules; the first block has no expansion."""
    model = torchvision_model = pc.build_model(ARCH, 10)
    names = [n for n, _ in ref.conv_layers(torchvision_model)]
    assert len(names) == 52 and names[:4] == ["features.0.0", "features.1.conv.0.0", "features.1.conv.1",
                                              "features.2.conv.0.0"]
    assert ref.hooked_layers(model, "ratio:0.5") == names[26:]


@pytest.mark.parametrize("fmt", ["safetensors"])
def test_mobilenet_parity(fmt):
    classes = 10
    x = pc.make_input(2, 64, 64, pc.stable_seed("input", ARCH))
    model = conditioned_model(classes, x)
    targets = [3, classes - 1]
    failures = pc.family_gradient_parity(BIN, model, ARCH, x, targets, fmt, SCRATCH, explain=False)
    assert not failures, "; ".join(failures)


def test_mobilenet_errors():
    """A mis-shaped and a missing tensor are named in one line, inferred or named."""
    model = pc.build_model(ARCH, 10)
    sd = pc.model_state_dict(model)
    bad = dict(sd)
    bad["features.5.conv.1.0.weight"] = bad["features.5.conv.1.0.weight"][:, :, :2, :2].clone()
    del bad["features.18.1.running_var"]
    path = pc.save_weights(bad, os.path.join(SCRATCH, ARCH + "_bad.safetensors"), "safetensors")
    x = pc.make_input(1, 32, 32, 1)
    input_path = pc.save_npy(os.path.join(SCRATCH, ARCH + "_bad_input.npy"), x.numpy())
    try:
        for named in (True, False):
            proc, _, _ = pc.run_gradient(BIN, path, input_path, [0], os.path.join(SCRATCH, ARCH + "_bad"),
                                         model=ARCH if named else None)
            assert proc.returncode == 1
            err = proc.stderr.strip().splitlines()
            assert len(err) == 1, proc.stderr
            assert "features.5.conv.1.0.weight" in err[0] and "features.18.1.running_var" in err[0], err[0]
    finally:
        for p in (path, input_path):
            if os.path.exists(p):
                os.remove(p)


@pytest.mark.parametrize("mode", ["cls", "ins"])
def test_mobilenet_parchgrad(mode):
    """ParchGrad (ratio 0.5: the last 26 of 52 convs, depthwise ones among them) against the
    PyTorch implementation of the method: maps and the hooked layers' selections H."""
    import shutil
    import subprocess
    classes, size = 10, 64
    seed = pc.stable_seed("parchgrad", ARCH)
    x = pc.make_input(2, size, size, seed)
    model = conditioned_model(classes, x)
    for m in model.modules():
        if isinstance(m, torch.nn.ReLU6):
            m.inplace = False
    ref.prepare(model)
    with torch.no_grad():
        prob = torch.softmax(model(x), 1)
    targets = [int(prob[n].argmax()) for n in range(x.shape[0])]
    stats = ref.random_stats(model, classes, torch.cat([x, torch.zeros(1, 3, size, size)]), seed,
                             cls_alphas=(0.05,), ins_alphas=(0.2,), quantiles=(0.1, 0.05),
                             shapiro_thresholds=(0.05, 0.5))
    # gamma 2: the unselected channels are damped, not zeroed (with gamma inf, 26 edited layers
    # leave both maps exactly zero on these random statistics).
    cfg = ref.Config(mode, gamma=2.0)
    ref_maps, records, layers = ref.attribute(model, stats, cfg, x, targets, method="grad")
    assert len(layers) == 26 and any(".conv.1.0" in l for l in layers), layers  # depthwise hooked
    d = os.path.join(SCRATCH, "mobilenet_parchgrad")
    os.makedirs(d, exist_ok=True)
    try:
        weights = pc.save_weights(pc.model_state_dict(model), os.path.join(d, "w.safetensors"), "safetensors")
        stats_path = ref.write_stats(stats, os.path.join(d, "stats.safetensors"), ARCH, classes,
                                     write=pc.write_safetensors)
        x_path = pc.save_npy(os.path.join(d, "x.npy"), x.numpy())
        out = os.path.join(d, "out")
        cmd = [BIN, "saliency", "--weights", weights, "--model", ARCH, "--method", "grad", "--parchgrad", mode,
               "--stats", stats_path, "--gamma", "2", "--target", ",".join(map(str, targets)), "--out", out, "--explain-masks",
               x_path]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr
        for n in range(x.shape[0]):
            got = np.load(os.path.join(out, f"x_{n}.npy"))
            assert np.linalg.norm(ref_maps[n]) > 0
            e = float(np.linalg.norm(got - ref_maps[n]) / np.linalg.norm(ref_maps[n]))
            with open(os.path.join(out, f"x_{n}.masks.json")) as f:
                masks = json.load(f)
            names = [l["name"] for l in masks["layers"]]
            assert names == layers
            kept = 0
            for g, o in zip(masks["layers"], ref.masks_of(records[0], layers, n)):
                assert g["H"] == o["H"], f"{o['name']}: H differs"
                kept += len(o["H"])
            print(f"{ARCH} {mode} sample {n}: map {e:.2e}, {kept} channels selected")
            assert kept > 0
            assert e < 1e-4, f"sample {n}: map rel err {e:.2e}"
    finally:
        shutil.rmtree(d, ignore_errors=True)
