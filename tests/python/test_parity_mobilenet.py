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
    sd = pc.model_state_dict(pc.build_model(ARCH, 10))
    fc.bad_tensors_named(BIN, sd, ARCH, SCRATCH,
                         replace={"features.5.conv.1.0.weight": sd["features.5.conv.1.0.weight"][:, :, :2, :2].clone()},
                         remove=["features.18.1.running_var"])


@pytest.mark.parametrize("mode", ["cls", "ins"])
def test_mobilenet_parchgrad(mode):
    """ParchGrad (ratio 0.5: the last 26 of 52 convs, depthwise ones among them) against the
    PyTorch implementation of the method: maps and the hooked layers' selections H."""
    classes, size = 10, 64
    seed = pc.stable_seed("parchgrad", ARCH)
    x = pc.make_input(2, size, size, seed)
    model = conditioned_model(classes, x)
    for m in model.modules():
        if isinstance(m, torch.nn.ReLU6):
            m.inplace = False
    ref.prepare(model)

    def check_layers(layers):
        assert len(layers) == 26 and any(".conv.1.0" in l for l in layers), layers  # depthwise hooked

    fc.parchgrad_against_reference(BIN, model, ARCH, x, mode, classes, SCRATCH, seed, check_layers)
