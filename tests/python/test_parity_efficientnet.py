"""Parity of `parchgrad gradient` with torchvision's EfficientNets (SiLU, squeeze-and-excitation
with sigmoid, depthwise MBConv, V2's FusedMBConv, BatchNorm eps 1e-5 or 1e-3 by variant): logits
and input gradients against PyTorch, architecture named and inferred from the weights (which
must then name it); a mis-shaped and a missing tensor named in one line; the engine's conv order
is torchvision's Conv2d module order (the SE's fc1/fc2 included); and ParchGrad's cls/ins maps
and masks on efficientnet_b0 against the PyTorch implementation of the method (parchgrad_ref.py).

Random weights (BatchNorm statistics included), small inputs. efficientnet_b0 at 64x64 with two
images, against float32 and float64 (parity_common.family_gradient_parity). The other ten at
32x32 with one image against PyTorch float32 only (CI time: their float64 reference alone costs
more than the engine; float32's criterion is the first of family_gradient_parity's: relative
error below 1e-4 for logits and gradient). SiLU and sigmoid are smooth: no margin conditioning
is needed, only the logit scale.
"""
import json
import os

import numpy as np
import pytest
import torch

import family_checks as fc
import parchgrad_ref as ref
import parity_common as pc

torch.set_num_threads(2)

BIN = pc.binary_path()
if os.environ.get("PARCHGRAD_BIN") and not os.path.exists(BIN):
    raise RuntimeError(f"PARCHGRAD_BIN={BIN} does not exist")
pytestmark = pytest.mark.skipif(BIN is None, reason="parchgrad binary not built")

SCRATCH = pc.scratch_dir()
ARCH = "efficientnet_b0"
OTHERS = ["efficientnet_b1", "efficientnet_b2", "efficientnet_b3", "efficientnet_b4", "efficientnet_b5",
          "efficientnet_b6", "efficientnet_b7", "efficientnet_v2_s", "efficientnet_v2_m", "efficientnet_v2_l"]


def no_inplace(model):
    """No in-place activations (torchvision's SiLU(inplace=True) after a hooked conv's output
    would edit the tensor the reference's hook watches)."""
    for m in model.modules():
        if hasattr(m, "inplace"):
            m.inplace = False
    return model


def conditioned_model(arch, classes, x):
    model = pc.build_model(arch, classes)
    pc.calibrate_logits(model, x)
    return model


def test_hooked_convs_in_module_order():
    """The engine's conv order is torchvision's Conv2d module order, the SE's fc1 and fc2
    included: 81 Conv2d modules on efficientnet_b0 (features.1.0 has no expansion), ratio 0.5
    hooks the last 40."""
    model = pc.build_model(ARCH, 10)
    names = [n for n, _ in ref.conv_layers(model)]
    assert len(names) == 81 and names[:6] == ["features.0.0", "features.1.0.block.0.0", "features.1.0.block.1.fc1",
                                              "features.1.0.block.1.fc2", "features.1.0.block.2.0",
                                              "features.2.0.block.0.0"]
    hooked = ref.hooked_layers(model, "ratio:0.5")
    assert hooked == names[41:] and hooked[0] == "features.5.0.block.1.0", hooked[:2]
    fc.engine_conv_order(BIN, no_inplace(model), ARCH, names, SCRATCH)


def test_efficientnet_b0_parity():
    classes = 10
    x = pc.make_input(2, 64, 64, pc.stable_seed("input", ARCH))
    model = conditioned_model(ARCH, classes, x)
    failures = pc.family_gradient_parity(BIN, model, ARCH, x, [3, classes - 1], "safetensors", SCRATCH, explain=False)
    assert not failures, "; ".join(failures)


@pytest.mark.parametrize("arch", OTHERS)
def test_efficientnet_family_parity(arch):
    """32x32, one image, named and inferred: logits and input gradient within 1e-4 of PyTorch
    float32."""
    classes = 10
    x = pc.make_input(1, 32, 32, pc.stable_seed("input", arch))
    model = conditioned_model(arch, classes, x)
    ref_logits, ref_grad = pc.reference(model, x, [3])
    weights = pc.save_weights(pc.model_state_dict(model), os.path.join(SCRATCH, arch + ".safetensors"), "safetensors")
    del model
    input_path = pc.save_npy(os.path.join(SCRATCH, arch + "_input.npy"), x.numpy())
    try:
        for named in (True, False):
            proc, lpath, gpath = pc.run_gradient(BIN, weights, input_path, [3], os.path.join(SCRATCH, arch),
                                                 model=arch if named else None)
            assert proc.returncode == 0, proc.stderr
            assert json.loads(proc.stdout.strip().splitlines()[-1])["model"] == arch, proc.stdout
            lrel = pc.rel_err(np.load(lpath), ref_logits)
            grel = pc.rel_err(np.load(gpath), ref_grad)
            print(f"{arch} ({'named' if named else 'inferred'}): logits {lrel:.2e} grad {grel:.2e}")
            assert lrel < pc.REL_TOL and grel < pc.REL_TOL
    finally:
        for p in (weights, input_path):
            if os.path.exists(p):
                os.remove(p)


def test_efficientnet_errors():
    """A mis-shaped and a missing tensor are named in one line, inferred or named."""
    sd = pc.model_state_dict(pc.build_model(ARCH, 10))
    fc.bad_tensors_named(BIN, sd, ARCH, SCRATCH,
                         replace={"features.3.1.block.1.0.weight": sd["features.3.1.block.1.0.weight"][:, :, :3, :3].clone()},
                         remove=["features.6.2.block.2.fc2.bias"])


@pytest.mark.parametrize("mode", ["cls", "ins"])
def test_efficientnet_parchgrad(mode):
    """ParchGrad (ratio 0.5: the last 40 of 81 convs, depthwise convs and the SE's 1x1-output
    fc1/fc2 among them, where the spatial variance of a single position is 0 on both sides)
    against the PyTorch implementation of the method: the hooked layers' selections H equal, the
    maps within 1e-4 of PyTorch float32 or no farther from float64 than twice PyTorch float32's
    own distance. 128x128: the hooked stages are 4x4 and 8x8. (At 64x64 they are 2x2: M and N
    are then variances of four channel sums, of the order of their 1e-7 floor, float32 rounding
    moves beta by ~1e-4, and PyTorch float32 and the engine both end 1e-4..5e-4 from float64.)"""
    classes, size = 10, 128
    seed = pc.stable_seed("parchgrad", ARCH)
    x = pc.make_input(2, size, size, seed)
    model = no_inplace(conditioned_model(ARCH, classes, x))

    def check_layers(layers):
        assert len(layers) == 40 and any(l.endswith(".fc1") for l in layers) and any(".block.1.0" in l for l in layers)

    fc.parchgrad_against_reference(BIN, model, ARCH, x, mode, classes, SCRATCH, seed, check_layers, float64=True)


def test_cli_methods_smoke():
    """Every attribution method runs on efficientnet_b0 (random weights): `stats` over a small
    ImageFolder (the conv list with the SE's 1x1-output convs), then grad, ig, smoothgrad,
    gradcam (default layer features[-1]) and grad with ParchGrad cls and ins from those
    statistics: each writes finite, non-zero maps of the input's size."""
    fc.cli_methods_smoke(BIN, pc.build_model(ARCH, 2), ARCH, 64, SCRATCH,
                         ["grad", "ig", "smoothgrad", "gradcam", "grad+cls", "grad+ins"], per_class=3)
