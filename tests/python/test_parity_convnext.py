"""Parity of `parchgrad gradient` with torchvision's ConvNeXt (convnext_tiny, _small, _base,
_large: LayerNorm over channels, exact GELU, the blocks' Linear layers, layer scale, depthwise
7x7 convs): logits and input gradients against PyTorch, architecture named and inferred from the
weights (which must then name it); a mis-shaped and a missing tensor named in one line; the
engine's conv order is torchvision's Conv2d module order; ParchGrad's cls/ins maps and masks on
convnext_tiny against the PyTorch implementation of the method (parchgrad_ref.py).

Random weights (_random_state): every parameter, LayerNorm weights and biases and layer scales
included (torchvision's layer scale of 1e-6 would make every block nearly the identity).
Small inputs (CI time; the stem is stride 4 and each downsample stride 2, so 64x64 runs the four
stages at 16, 8, 4 and 2 pixels, 32x32 at 8, 4, 2 and 1): convnext_tiny two images at 64x64,
_small one at 64x64, _base and _large one at 32x32 (their weights are 350 MB and 800 MB). Criterion, per
sample (parity_common.family_gradient_parity): logits within 1e-4 of PyTorch float32; the input
gradient within 1e-4 of float32 or float64, or no farther from float64 than twice PyTorch
float32's own distance. ConvNeXt has no ReLU or max-pool, so no unit's decision can round
either way: no flip analysis is needed.
"""
import functools
import os

import pytest
import torch
import torchvision

import family_checks as fc
import parchgrad_ref as ref
import parity_common as pc

torch.set_num_threads(2)

BIN = pc.binary_path()
if os.environ.get("PARCHGRAD_BIN") and not os.path.exists(BIN):
    raise RuntimeError(f"PARCHGRAD_BIN={BIN} does not exist")
pytestmark = pytest.mark.skipif(BIN is None, reason="parchgrad binary not built")

SCRATCH = pc.scratch_dir()
DEPTHS = {"convnext_tiny": (3, 3, 9, 3), "convnext_small": (3, 3, 27, 3), "convnext_base": (3, 3, 27, 3),
          "convnext_large": (3, 3, 27, 3)}


def _construct(arch, classes):
    """torchvision's module tree without its initialisers (trunc_normal_ over convnext_large's
    198M parameters costs more than the rest of its test): every parameter is set below."""
    from unittest import mock
    keep = lambda t, *a, **k: t  # noqa: E731
    with mock.patch("torch.nn.init.trunc_normal_", keep), mock.patch("torch.nn.init.kaiming_uniform_", keep), \
            mock.patch("torch.nn.init.uniform_", keep):
        model = getattr(torchvision.models, arch)(weights=None, num_classes=classes)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


@functools.lru_cache(maxsize=2)
def _random_state(arch, classes):
    """Random parameters, a fixed function of (arch, classes): conv and Linear weights uniform with
    torchvision's standard deviation 0.02 (its trunc_normal_), biases small, LayerNorm weights in
    [0.5, 1.5] and biases small (both randomised, so the affine part is exercised), layer scales in
    [0.25, 0.75] (torchvision's 1e-6 would make every block nearly the identity)."""
    model = _construct(arch, classes)
    gen = torch.Generator().manual_seed(pc.stable_seed("convnext", arch, classes))
    a = 0.02 * 3 ** 0.5  # uniform(-a, a) has standard deviation 0.02
    ln = {n for n, m in model.named_modules() if isinstance(m, torch.nn.LayerNorm)}
    with torch.no_grad():
        for name, p in model.named_parameters():
            owner, _, kind = name.rpartition(".")
            if name.endswith("layer_scale"):
                p.uniform_(0.25, 0.75, generator=gen)
            elif owner in ln and kind == "weight":
                p.uniform_(0.5, 1.5, generator=gen)
            elif kind == "bias":
                p.uniform_(-0.1, 0.1, generator=gen)
            else:
                p.uniform_(-a, a, generator=gen)
    return {k: v.clone() for k, v in model.state_dict().items()}


def build(arch, classes):
    """torchvision's model with _random_state's parameters (a fresh copy each call)."""
    model = _construct(arch, classes)
    model.load_state_dict(_random_state(arch, classes))
    return model


def conditioned(arch, classes, x):
    model = build(arch, classes)
    pc.calibrate_logits(model, x)
    return model


def test_convs_in_module_order():
    """The engine's conv order is torchvision's Conv2d module order (stem, the blocks' depthwise
    convs, the downsample convs between stages; the blocks' Linear layers are not Conv2d
    modules): 22 for convnext_tiny, ratio:0.5 hooks the last 11."""
    model = build("convnext_tiny", 10)
    names = [n for n, _ in ref.conv_layers(model)]
    want = ["features.0.0"]
    for s, d in enumerate(DEPTHS["convnext_tiny"]):
        want += [f"features.{2 * s + 1}.{b}.block.0" for b in range(d)]
        if s < 3:
            want.append(f"features.{2 * s + 2}.1")
    assert names == want and len(names) == 22
    assert ref.hooked_layers(model, "ratio:0.5") == names[11:]
    # The engine's order, through --explain-masks with every conv hooked: see test_convnext_parchgrad
    # (its masks name the hooked convs in the engine's order and must equal names[11:]).


@pytest.mark.parametrize("arch,batch,size", [("convnext_tiny", 2, 64), ("convnext_small", 1, 64),
                                             ("convnext_base", 1, 32), ("convnext_large", 1, 32)])
def test_convnext_parity(arch, batch, size):
    classes = 10
    x = pc.make_input(batch, size, size, pc.stable_seed("input", arch))
    model = conditioned(arch, classes, x)
    targets = [3, classes - 1][:batch]
    # The large weights files as torch.save writes them (quicker to write than safetensors here).
    fmt = "zip" if arch in ("convnext_base", "convnext_large") else "safetensors"
    failures = pc.family_gradient_parity(BIN, model, arch, x, targets, fmt, SCRATCH, explain=False)
    assert not failures, "; ".join(failures)


def test_convnext_errors():
    """A mis-shaped and a missing tensor are named in one line, named or inferred."""
    arch = "convnext_tiny"
    sd = pc.model_state_dict(build(arch, 10))
    fc.bad_tensors_named(BIN, sd, arch, SCRATCH,
                         replace={"features.5.4.block.3.weight": sd["features.5.4.block.3.weight"][:100].clone()},
                         remove=["features.6.0.bias"])


@pytest.mark.parametrize("mode", ["cls", "ins"])
def test_convnext_parchgrad(mode):
    """ParchGrad (ratio 0.5: the last 11 of 22 convs, features.5.2.block.0 ... features.7.2.block.0,
    the last downsample conv among them) against the PyTorch implementation of the method: maps and
    the hooked layers' selections H."""
    arch, classes, size = "convnext_tiny", 10, 64
    seed = pc.stable_seed("parchgrad", arch)
    x = pc.make_input(2, size, size, seed)
    model = conditioned(arch, classes, x)
    ref.prepare(model)
    names = [n for n, _ in ref.conv_layers(model)]

    def check_layers(layers):
        assert layers == names[11:] and "features.6.1" in layers, layers

    fc.parchgrad_against_reference(BIN, model, arch, x, mode, classes, SCRATCH, seed, check_layers)


def test_convnext_cli_smoke():
    """Random convnext_tiny weights through the command line: `stats` on a small ImageFolder of
    .npy inputs covers the 22 convs and nothing else (not the blocks' Linear layers), then
    `saliency` with grad, ig, gradcam and ParchGrad cls/ins from those statistics gives finite,
    non-zero maps of the input's size."""
    arch, classes, size = "convnext_tiny", 10, 64

    def no_linear_layers(keys):
        assert not any(".block.3" in k or ".block.5" in k for k in keys), sorted(keys)[:10]

    # Grad-CAM at the last stage (2x2 here) for the top class: its ReLU'd map is positive.
    fc.cli_methods_smoke(BIN, build(arch, classes), arch, size, SCRATCH,
                         ["grad", "ig", "gradcam", "grad+cls", "grad+ins"], check_stats_keys=no_linear_layers)
