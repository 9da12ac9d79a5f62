"""Parity of `parchgrad gradient` with torchvision's mobilenet_v3_large and mobilenet_v3_small
(hardswish, ReLU, squeeze-and-excitation with ReLU and hardsigmoid, depthwise convolutions,
BatchNorm eps 1e-3, a classifier Linear-hardswish-Linear): logits and input gradients against
PyTorch float32/float64, architecture named and inferred from the weights (which must then name
it); a mis-shaped and a missing tensor named in one line; the engine's conv order is
torchvision's Conv2d module order (the SE's fc1/fc2 included); and ParchGrad's cls/ins maps and
masks on mobilenet_v3_large against the PyTorch implementation of the method (parchgrad_ref.py).

Random weights (BatchNorm statistics included), small inputs: mobilenet_v3_large at 64x64 with
two images, mobilenet_v3_small at 32x32 with one (parity_common.family_gradient_parity:
logits within 1e-4 of float32; gradients within 1e-4 of float32 or float64, or no farther from
float64 than twice PyTorch float32's own distance). ParchGrad at 128x128 (the hooked stages 4x4
and 8x8; see test_parity_efficientnet.py for why not smaller).
"""
import copy
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
if os.environ.get("PARCHGRAD_BIN") and not os.path.exists(BIN):
    raise RuntimeError(f"PARCHGRAD_BIN={BIN} does not exist")
pytestmark = pytest.mark.skipif(BIN is None, reason="parchgrad binary not built")

SCRATCH = pc.scratch_dir()
ARCH = "mobilenet_v3_large"


def no_inplace(model):
    """No in-place activations (torchvision's in-place ReLU/hardswish after a hooked conv's
    output would edit the tensor the reference's hook watches)."""
    for m in model.modules():
        if hasattr(m, "inplace"):
            m.inplace = False
    return model


def conditioned_model(arch, classes, x):
    model = pc.build_model(arch, classes)
    pc.calibrate_logits(model, x)
    return model


@pytest.mark.parametrize("arch,count,first", [
    ("mobilenet_v3_large", 62, ["features.0.0", "features.1.block.0.0", "features.1.block.1.0", "features.2.block.0.0"]),
    ("mobilenet_v3_small", 52, ["features.0.0", "features.1.block.0.0", "features.1.block.1.fc1",
                                "features.1.block.1.fc2"])])
def test_hooked_convs_in_module_order(arch, count, first):
    """The engine's conv order is torchvision's Conv2d module order, the SE's fc1 and fc2
    included (the engine lists every conv it hooks with --layers ratio:1 --explain-masks)."""
    model = no_inplace(pc.build_model(arch, 10))
    names = [n for n, _ in ref.conv_layers(model)]
    assert len(names) == count and names[:4] == first
    assert ref.hooked_layers(model, "ratio:0.5") == names[count - count // 2:]
    x = pc.make_input(1, 32, 32, 5)
    d = os.path.join(SCRATCH, arch + "_order")
    os.makedirs(d, exist_ok=True)
    try:
        stats = ref.random_stats(model, 10, x, 5)
        weights = pc.save_weights(pc.model_state_dict(model), os.path.join(d, "w.safetensors"), "safetensors")
        stats_path = ref.write_stats(stats, os.path.join(d, "stats.safetensors"), arch, 10, write=pc.write_safetensors)
        x_path = pc.save_npy(os.path.join(d, "x.npy"), x.numpy())
        out = os.path.join(d, "out")
        proc = subprocess.run([BIN, "saliency", "--weights", weights, "--method", "grad", "--parchgrad", "cls",
                               "--stats", stats_path, "--layers", "ratio:1", "--target", "0", "--out", out,
                               "--explain-masks", x_path], capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr
        masks = [f for f in os.listdir(out) if f.endswith(".masks.json")]
        assert len(masks) == 1, masks
        with open(os.path.join(out, masks[0])) as f:
            assert [l["name"] for l in json.load(f)["layers"]] == names
    finally:
        shutil.rmtree(d, ignore_errors=True)


@pytest.mark.parametrize("arch,size,batch", [("mobilenet_v3_large", 64, 2), ("mobilenet_v3_small", 32, 1)])
def test_mobilenet_v3_parity(arch, size, batch):
    classes = 10
    x = pc.make_input(batch, size, size, pc.stable_seed("input", arch))
    model = conditioned_model(arch, classes, x)
    failures = pc.family_gradient_parity(BIN, model, arch, x, [3, classes - 1][:batch], "safetensors", SCRATCH,
                                         explain=False)
    assert not failures, "; ".join(failures)


def test_mobilenet_v3_errors():
    """A mis-shaped and a missing tensor are named in one line, inferred or named."""
    model = pc.build_model(ARCH, 10)
    sd = pc.model_state_dict(model)
    bad = dict(sd)
    bad["features.4.block.1.0.weight"] = bad["features.4.block.1.0.weight"][:, :, :3, :3].clone()
    del bad["features.12.block.2.fc1.weight"]
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
            assert "features.4.block.1.0.weight" in err[0] and "features.12.block.2.fc1.weight" in err[0], err[0]
    finally:
        for p in (path, input_path):
            if os.path.exists(p):
                os.remove(p)


@pytest.mark.parametrize("mode", ["cls", "ins"])
def test_mobilenet_v3_parchgrad(mode):
    """ParchGrad (ratio 0.5: the last 31 of 62 convs, depthwise convs and the SE's 1x1-output
    fc1/fc2 among them, where the spatial variance of a single position is 0 on both sides)
    against the PyTorch implementation of the method: the hooked layers' selections H equal to
    the float32 and float64 references', the maps within 1e-4 of PyTorch float32 or no farther
    from float64 than twice PyTorch float32's own distance."""
    classes, size = 10, 128
    seed = pc.stable_seed("parchgrad", ARCH)
    x = pc.make_input(2, size, size, seed)
    model = no_inplace(conditioned_model(ARCH, classes, x))
    with torch.no_grad():
        prob = torch.softmax(model(x), 1)
    targets = [int(prob[n].argmax()) for n in range(x.shape[0])]
    stats = ref.random_stats(model, classes, torch.cat([x, torch.zeros(1, 3, size, size)]), seed,
                             cls_alphas=(0.05,), ins_alphas=(0.2,), quantiles=(0.1, 0.05),
                             shapiro_thresholds=(0.05, 0.5))
    cfg = ref.Config(mode, gamma=2.0)
    ref_maps, records, layers = ref.attribute(model, stats, cfg, x, targets, method="grad")
    maps64, records64, _ = ref.attribute(copy.deepcopy(model).double(), stats, cfg, x.double(), targets, method="grad")
    assert len(layers) == 31 and any(l.endswith(".fc2") for l in layers) and any(".block.1.0" in l for l in layers)
    d = os.path.join(SCRATCH, "mobilenet_v3_parchgrad")
    os.makedirs(d, exist_ok=True)
    try:
        weights = pc.save_weights(pc.model_state_dict(model), os.path.join(d, "w.safetensors"), "safetensors")
        stats_path = ref.write_stats(stats, os.path.join(d, "stats.safetensors"), ARCH, classes,
                                     write=pc.write_safetensors)
        x_path = pc.save_npy(os.path.join(d, "x.npy"), x.numpy())
        out = os.path.join(d, "out")
        cmd = [BIN, "saliency", "--weights", weights, "--model", ARCH, "--method", "grad", "--parchgrad", mode,
               "--stats", stats_path, "--gamma", "2", "--target", ",".join(map(str, targets)), "--out", out,
               "--explain-masks", x_path]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr
        for n in range(x.shape[0]):
            got = np.load(os.path.join(out, f"x_{n}.npy"))
            assert np.linalg.norm(ref_maps[n]) > 0
            e = pc.rel_err(got[None], ref_maps[n][None])
            e64, t64 = pc.rel_err(got[None], maps64[n][None]), pc.rel_err(ref_maps[n][None], maps64[n][None])
            with open(os.path.join(out, f"x_{n}.masks.json")) as f:
                masks = json.load(f)
            assert [l["name"] for l in masks["layers"]] == layers
            kept = 0
            for g, o, o64 in zip(masks["layers"], ref.masks_of(records[0], layers, n),
                                 ref.masks_of(records64[0], layers, n)):
                assert g["H"] == o["H"] == o64["H"], f"{o['name']}: H differs"
                kept += len(o["H"])
            line = (f"{ARCH} {mode} sample {n}: map {e:.2e} against float32; against float64: engine {e64:.2e}, "
                    f"PyTorch float32 {t64:.2e}; {kept} channels selected")
            print(line)
            assert kept > 0
            assert e < pc.REL_TOL or e64 <= 2 * t64, line
    finally:
        shutil.rmtree(d, ignore_errors=True)
