"""Parity of `parchgrad gradient` with torchvision on ResNeXt and Wide ResNet (grouped and wide
bottlenecks): logits and input gradients, architecture named and inferred from the weights
(which must then name it).

Random weights (BatchNorm statistics included, as in test_parity.py), small inputs (64x64: the
largest of these models has 88M parameters, and the shapes of every layer are exercised at any
input size). Criterion, per sample: relative error below 1e-4 for the logits against PyTorch float32; for the
input gradient, below 1e-4 against PyTorch float32 or float64, or no farther from float64 than
twice PyTorch float32's own distance (the 101-layer models amplify rounding: PyTorch float32 is
up to 1e-1 from float64 on some inputs), or below 1e-4 from float64 after flips of
rounding-decided units (parity_common.explain_gradient).
"""
import os

import pytest
import torch

import parity_common as pc

torch.set_num_threads(2)

BIN = pc.binary_path()
if os.environ.get("PARCHGRAD_BIN") and not os.path.exists(BIN):
    raise RuntimeError(f"PARCHGRAD_BIN={BIN} does not exist")
pytestmark = pytest.mark.skipif(BIN is None, reason="parchgrad binary not built")

SCRATCH = pc.scratch_dir()

# architecture: (weight format, classes)
FAMILY = {
    "resnext50_32x4d": ("safetensors", 1000),
    "resnext101_32x8d": ("zip", 10),
    "resnext101_64x4d": ("safetensors", 10),
    "wide_resnet50_2": ("legacy", 37),
    "wide_resnet101_2": ("safetensors", 10),
}


@pytest.mark.parametrize("arch", list(FAMILY))
def test_family_parity(arch):
    fmt, classes = FAMILY[arch]
    model = pc.build_model(arch, classes)
    x = pc.make_input(2, 64, 64, pc.stable_seed("input", arch))
    # ReLU margins measured on the test batch itself: these tests check the architectures'
    # wiring, so units within rounding of a ReLU boundary (which need the slow float64 flip
    # analysis on models this large) are moved away from it.
    pc.condition(model, x, margins=True)
    targets = [3, classes - 1]
    failures = pc.family_gradient_parity(BIN, model, arch, x, targets, fmt, SCRATCH)
    assert not failures, "; ".join(failures)
