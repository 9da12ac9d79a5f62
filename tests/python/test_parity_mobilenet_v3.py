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
import os

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
    fc.engine_conv_order(BIN, model, arch, names, SCRATCH)


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
    sd = pc.model_state_dict(pc.build_model(ARCH, 10))
    fc.bad_tensors_named(BIN, sd, ARCH, SCRATCH,
                         replace={"features.4.block.1.0.weight": sd["features.4.block.1.0.weight"][:, :, :3, :3].clone()},
                         remove=["features.12.block.2.fc1.weight"])


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

    def check_layers(layers):
        assert len(layers) == 31 and any(l.endswith(".fc2") for l in layers) and any(".block.1.0" in l for l in layers)

    fc.parchgrad_against_reference(BIN, model, ARCH, x, mode, classes, SCRATCH, seed, check_layers, float64=True)
