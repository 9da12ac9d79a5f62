#!/usr/bin/env python3
"""The engine's device path on 36 architectures (24 by default), against its CPU backend and PyTorch on the GPU.

For each of resnet18/34/50/101/152, resnext50_32x4d, resnext101_32x8d/64x4d, wide_resnet50_2/101_2,
vgg11/13/16/19 with and without BatchNorm, mobilenet_v2, mobilenet_v3_small/large,
efficientnet_b0..b7, efficientnet_v2_s/m/l and convnext_tiny/small/base/large:
  * a torchvision-shaped model with random weights (torchvision's constructor when it can be
    imported, else the same layers and tensor names built here and in tv_free_models.py), with
    random BatchNorm statistics, non-zero biases and ReLU (ReLU6) inputs moved away from zero on
    the test batch (so that rounding rarely decides a ReLU; condition_family for the MobileNets,
    EfficientNets and ConvNeXts), written as .safetensors;
  * one random batch (default 2 images of 224x224) as .npy, the target of each image its
    PyTorch top-1 class;
  * `parchgrad gradient --device cuda` and `--device cpu` on that batch, and the reference
    input gradient from PyTorch on the GPU in strict float32 (cuDNN and matmul TF32 off) of the
    engine's seed onehot(target) * softmax(logits)[target];
  * `parchgrad saliency --device cuda --precision bf16` and `--precision tf32` (map = mean over
    RGB of |grad|), held to what PyTorch's own reduced precision does on the same model, input
    and target: PyTorch's float64 map (a float64 copy of the model, float64 input) is the
    reference, and PyTorch's map under torch.autocast(bfloat16), resp. with TF32 allowed in cuDNN
    and matmuls, is measured against it in the same run.
Criteria (max relative error = max |a - b| / max |b| over the batch):
  cuda gradient vs the CPU backend <= 1e-4, cuda gradient vs PyTorch GPU <= 1e-4;
  for bf16 and tf32: the engine's map no farther from the float64 map than 1.5 x PyTorch's map
  of that precision is (max relative error), and its Spearman rank correlation with the float64
  map (the worst image; ranks from numpy's argsort, ties averaged) no lower than PyTorch's minus
  0.005. The L2 relative errors and the engine's reduced-precision map against its own float32
  map are reported beside them.
Also reported, to tell a real error from a rounding-decided ReLU or max-pool window (which moves
the gradient of a few pixels by up to 1e-2, README's numerical notes): the per-image L2 relative
error, the number of pixels beyond the tolerance, and the logits' error.

Prints one JSON line per model (also written to OUT/models.jsonl), then a table (also
OUT/models.md). Exit status: 0 when every criterion held for every model, 1 when one failed or
a model did not run (time limit, engine error), 2 on bad usage.

--selftest (no GPU needed): small models of the ResNets and VGGs but SELFTEST_SKIP (widths / 8,
10 classes, 64x64 inputs; --models +NAME,... adds others, e.g. FAMILY_SELFTEST at full width),
written by this script's own builders, through `--device cpu` against PyTorch on the CPU, the
saliency map file against the gradient, the reduced-precision criterion on the CPU (the engine's
float32 map in the engine's place, PyTorch's CPU autocast bfloat16 map in PyTorch's: it must
pass, and with the two swapped it must fail), and, when torchvision is there, the builders
against torchvision's for the full-size models (names_and_shapes_vs_torchvision: every family's
names and shapes, the other families' module attributes, and float64 logits of one model per
family with torchvision's state dict loaded).

Needs numpy and torch; torchvision is optional.
  python3 tests/gpu/models_check.py --bin BUILD/parchgrad --out OUTDIR [--models resnet18,vgg16]
"""
import argparse
import concurrent.futures as futures
import contextlib
import copy
import functools
import json
import os
import shutil
import subprocess
import sys
import threading
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "python"))
from model_prep import calibrate_logits, condition, randomise, run_shifting, write_safetensors  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tv_free_models  # noqa: E402

# arch: (block, depths[, groups, width_per_group]); ResNeXt and Wide ResNet are Bottleneck ResNets
# whose 3x3 conv is int(planes * width_per_group / 64) * groups wide, in `groups` groups.
RESNETS = {"resnet18": ("basic", (2, 2, 2, 2)), "resnet34": ("basic", (3, 4, 6, 3)),
           "resnet50": ("bottleneck", (3, 4, 6, 3)), "resnet101": ("bottleneck", (3, 4, 23, 3)),
           "resnet152": ("bottleneck", (3, 8, 36, 3)),
           "resnext50_32x4d": ("bottleneck", (3, 4, 6, 3), 32, 4),
           "resnext101_32x8d": ("bottleneck", (3, 4, 23, 3), 32, 8),
           "resnext101_64x4d": ("bottleneck", (3, 4, 23, 3), 64, 4),
           "wide_resnet50_2": ("bottleneck", (3, 4, 6, 3), 1, 128),
           "wide_resnet101_2": ("bottleneck", (3, 4, 23, 3), 1, 128)}
VGG_CONFIGS = {
    "vgg11": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg13": [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
    "vgg19": [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M",
              512, 512, 512, 512, "M"],
}
# Cheapest first, so that a time limit leaves out the most expensive ones.
ARCHS = ["resnet18", "resnet34", "vgg11", "vgg11_bn", "resnet50", "resnext50_32x4d", "vgg13", "vgg13_bn",
         "wide_resnet50_2", "vgg16", "vgg16_bn", "resnet101", "vgg19", "vgg19_bn", "resnet152",
         "resnext101_32x8d", "resnext101_64x4d", "wide_resnet101_2"]
# Left out of the self-test's default list (CI time): the ResNeXts and Wide ResNets, which
# tests/python/test_parity_resnet_family.py checks against torchvision on the CPU (the 101-layer
# ones' narrow 64x64 stand-ins are also so deep that rounding-decided units move PyTorch float32's
# own gradient by up to 1e-1 from float64). Their builder is still checked against torchvision's
# names and shapes.
SELFTEST_SKIP = ("resnext50_32x4d", "wide_resnet50_2", "resnext101_32x8d", "resnext101_64x4d", "wide_resnet101_2")
# The other families, built by tests/gpu/tv_free_models.py without torchvision (or by torchvision):
# MobileNetV2, MobileNetV3, EfficientNet (b0..b7, v2_s/m/l), ConvNeXt. In the default list (after
# the 18 above, cheapest first); in the self-test only when asked (--models +NAME,...: the CTest
# leaves them to tests/python/test_parity_{mobilenet,mobilenet_v3,efficientnet,convnext}.py,
# which check them against torchvision on the CPU; tools/gpu_check.sh --dry-run adds one of each).
# They are conditioned by condition_family (below), not by model_prep's ReLU margins, which put
# the squeeze-and-excitation ReLUs of MobileNetV3 within float32 rounding of zero.
FAMILY_ARCHS = ["mobilenet_v3_small", "mobilenet_v2", "mobilenet_v3_large", "efficientnet_b0", "efficientnet_b1",
                "convnext_tiny", "efficientnet_b2", "efficientnet_v2_s", "efficientnet_b3", "convnext_small",
                "efficientnet_b4", "convnext_base", "efficientnet_b5", "efficientnet_v2_m", "efficientnet_b6",
                "convnext_large", "efficientnet_b7", "efficientnet_v2_l"]
assert sorted(FAMILY_ARCHS) == sorted(tv_free_models.ARCHS)
# The self-test's smallest model of each family (gpu_check.sh --dry-run adds these).
FAMILY_SELFTEST = ["mobilenet_v2", "mobilenet_v3_small", "efficientnet_b0", "convnext_tiny"]
# All 36, roughly cheapest first (a time limit leaves out the most expensive ones, and one model
# of each family comes early): --models all. The default list on the GPU leaves out the larger
# members of the other families (FAMILY_LARGE: the same layers as their small ones, only more
# and wider), 24 models.
DEFAULT_ORDER = ["resnet18", "mobilenet_v3_small", "mobilenet_v2", "efficientnet_b0", "convnext_tiny", "resnet34",
                 "mobilenet_v3_large", "vgg11", "vgg11_bn", "resnet50", "efficientnet_b1", "efficientnet_v2_s",
                 "resnext50_32x4d", "efficientnet_b2", "vgg13", "vgg13_bn", "efficientnet_b3", "wide_resnet50_2",
                 "convnext_small", "vgg16", "vgg16_bn", "resnet101", "efficientnet_b4", "vgg19", "vgg19_bn",
                 "resnet152", "convnext_base", "efficientnet_b5", "efficientnet_v2_m", "resnext101_32x8d",
                 "resnext101_64x4d", "wide_resnet101_2", "efficientnet_b6", "convnext_large", "efficientnet_b7",
                 "efficientnet_v2_l"]
assert sorted(DEFAULT_ORDER) == sorted(ARCHS + FAMILY_ARCHS)
FAMILY_LARGE = ("efficientnet_b1", "efficientnet_b2", "efficientnet_b3", "efficientnet_b4", "efficientnet_b5",
                "efficientnet_b6", "efficientnet_b7", "efficientnet_v2_m", "efficientnet_v2_l", "convnext_small",
                "convnext_base", "convnext_large")
GRAD_TOL = 1e-4
MAX_EXCLUDED = 0.25  # of the pixels: beyond this, excluding them would leave too little checked
AMBIGUITY_TAU = 1e-5  # a unit this close (relative to its channel's RMS) to its decision is ambiguous
# Reduced precision: the engine's map against PyTorch's float64 map may be at most MAP_RATIO times as
# far as PyTorch's map of the same precision is, and rank-correlate at most RHO_SLACK worse.
MAP_RATIO = 1.5
RHO_SLACK = 0.005
BF16_MIN_ERR = 1e-3  # self-test: PyTorch's CPU autocast bf16 map is at least this far from float64


# ---- torchvision-shaped models without torchvision -----------------------------------------------
# The same module tree and tensor names as torchvision's ResNet (v1.5: the stride on the 3x3 conv
# of a bottleneck) and VGG, with optional narrower widths for the self-test.

class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin, planes, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = None
        if stride != 1 or cin != planes:
            self.downsample = nn.Sequential(nn.Conv2d(cin, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        skip = x if self.downsample is None else self.downsample(x)
        return self.relu(out + skip)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin, planes, stride, groups=1, width=None):
        super().__init__()
        width = planes if width is None else width
        self.conv1 = nn.Conv2d(cin, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, groups=groups, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or cin != planes * 4:
            self.downsample = nn.Sequential(nn.Conv2d(cin, planes * 4, 1, stride, bias=False),
                                            nn.BatchNorm2d(planes * 4))

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        skip = x if self.downsample is None else self.downsample(x)
        return self.relu(out + skip)


class ResNet(nn.Module):
    def __init__(self, kind, depths, num_classes, widths=(64, 128, 256, 512), groups=1, inner=None):
        """inner: the 3x3 conv's width per stage (Bottleneck; default: the stage's planes)."""
        super().__init__()
        block = BasicBlock if kind == "basic" else Bottleneck
        self.conv1 = nn.Conv2d(3, widths[0], 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        cin = widths[0]
        for i, (planes, depth) in enumerate(zip(widths, depths)):
            blocks = []
            for j in range(depth):
                stride = 2 if (j == 0 and i > 0) else 1
                blocks.append(block(cin, planes, stride) if block is BasicBlock else
                              block(cin, planes, stride, groups, None if inner is None else inner[i]))
                cin = planes * block.expansion
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(cin, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


class VGG(nn.Module):
    def __init__(self, config, batch_norm, num_classes, hidden=4096):
        super().__init__()
        layers, cin = [], 3
        for v in config:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
                continue
            layers.append(nn.Conv2d(cin, v, 3, padding=1))
            if batch_norm:
                layers.append(nn.BatchNorm2d(v))
            layers.append(nn.ReLU(inplace=True))
            cin = v
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
        self.classifier = nn.Sequential(nn.Linear(cin * 49, hidden), nn.ReLU(True), nn.Dropout(),
                                        nn.Linear(hidden, hidden), nn.ReLU(True), nn.Dropout(),
                                        nn.Linear(hidden, num_classes))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)

    def forward(self, x):
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


def own_model(arch, num_classes=1000, width_div=1, hidden=4096):
    """The torchvision-shaped model without torchvision; width_div and hidden (narrower ResNets
    and VGGs for the self-test) do not apply to the other families, built at full width."""
    if arch in tv_free_models.ARCHS:
        return tv_free_models.build(arch, num_classes)
    if arch in RESNETS:
        kind, depths, groups, per_group = (RESNETS[arch] + (1, 64))[:4]
        planes = (64, 128, 256, 512)
        # Narrower models (width_div) keep each group's width and divide the number of groups.
        inner = tuple(p * per_group // 64 * groups // width_div for p in planes)
        return ResNet(kind, depths, num_classes, tuple(w // width_div for w in planes),
                      max(1, groups // width_div), inner)
    config = [v if v == "M" else v // width_div for v in VGG_CONFIGS[arch.replace("_bn", "")]]
    return VGG(config, arch.endswith("_bn"), num_classes, hidden)


def set_tf32(torch, allow):
    """TF32 in cuDNN convolutions and cuBLAS matmuls on or off: torch >= 2.9's fp32_precision
    settings where they exist (the allow_tf32 flags are deprecated there), else the flags."""
    conv = getattr(torch.backends.cudnn, "conv", None)
    if conv is not None and hasattr(conv, "fp32_precision") and hasattr(torch.backends.cuda.matmul, "fp32_precision"):
        conv.fp32_precision = "tf32" if allow else "ieee"
        torch.backends.cuda.matmul.fp32_precision = "tf32" if allow else "ieee"
    else:
        torch.backends.cudnn.allow_tf32 = allow
        torch.backends.cuda.matmul.allow_tf32 = allow


def torchvision_models():
    try:
        import torchvision
        return torchvision.models
    except Exception:  # absent, or built for another torch
        return None


def build_model(arch, seed, builder, device="cpu", **small):
    """builder: 'torchvision' or 'own'; small: width_div/hidden/num_classes for the own builder."""
    torch.manual_seed(seed)  # the constructors' initialisers use the global generator
    # Initialised where it will run when this torch can (2.0: a device as context manager).
    where = torch.device(device) if hasattr(torch, "set_default_device") else contextlib.nullcontext()
    with where:
        if builder == "torchvision":
            model = getattr(torchvision_models(), arch)(weights=None)
        else:
            model = own_model(arch, **small)
    return model.eval()


# ---- conditioning ----------------------------------------------------------------------------------
# Random BatchNorm statistics and biases, then ReLU inputs moved to +-RELU_MARGIN standard
# deviations on the test batch (ReLUs that feed a max-pool to -POOL_MARGIN, so that windows rarely
# tie) and the logits scaled to a standard deviation of 3: tests/python/model_prep.py, shared with
# the parity tests. Stronger margins than the parity tests' 2: full-size models at 224x224 have
# many more units that rounding could decide; balanced signs: the self-test's narrow layers (8
# channels) would otherwise now and then draw every channel negative and the map would be 0.
RELU_MARGIN = 3.5
POOL_MARGIN = 2.5
# Kinks of the piecewise-linear activations, where the derivative jumps: a unit's input within
# rounding of one is decided by rounding (ambiguous_pixels).
RELU6_SD = 0.75  # ReLU6 inputs: at most this standard deviation, so that +k sd stays below 6
KINKS = ((nn.ReLU, (0.0,)), (nn.ReLU6, (0.0, 6.0)), (nn.Hardswish, (-3.0, 3.0)), (nn.Hardsigmoid, (-3.0, 3.0)))


def randomise_family(model, seed):
    """The other families' parameters that model_prep.randomise leaves at their initial values:
    LayerNorm scales and shifts (ConvNeXt's), and ConvNeXt's layer scales (1e-6 at
    initialisation, which would leave every block's branch out of the gradient) drawn in
    [0.5, 1.5) / 4, so that the residual branches count without the sum blowing up."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.LayerNorm):
                m.weight.copy_(torch.rand(m.weight.shape, generator=gen) + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=gen) * 0.1)
            if isinstance(getattr(m, "layer_scale", None), torch.Tensor):
                m.layer_scale.copy_((torch.rand(m.layer_scale.shape, generator=gen) + 0.5) / 4)


def calibrate_batchnorm(model, x, seed):
    """Every BatchNorm's running statistics from its own input on the batch x (the mean moved by
    N(0, 0.1^2) standard deviations, the variance scaled by U[0.5, 1.5)), in one forward pass: a
    BatchNorm then puts out about its weight's spread around its bias. Random statistics that do
    not match the input (model_prep.randomise's) shrink MobileNetV2's signal layer after layer
    (measured at 64x64: its last BatchNorm's outputs 1e-7 around constants, float32 rounding
    then deciding the ReLU6s and PyTorch float32's gradient 1e-1 from float64's)."""
    gen = torch.Generator().manual_seed(seed)

    def set_stats(mod, inputs):
        z = inputs[0]
        mu, var = z.mean(dim=(0, 2, 3)), z.var(dim=(0, 2, 3))
        c = mu.numel()
        mod.running_mean.copy_(mu + 0.1 * var.sqrt() * torch.randn(c, generator=gen).to(z))
        mod.running_var.copy_(var * (0.5 + torch.rand(c, generator=gen).to(z)) + 1e-12)

    hooks = [m.register_forward_pre_hook(set_stats) for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in hooks:
            h.remove()


def condition_family(model, x, seed, k=RELU_MARGIN):
    """The conditioning of the other families (MobileNetV2/V3, EfficientNet, ConvNeXt): for a model
    with ReLU6s (MobileNetV2) BatchNorm statistics from the batch (calibrate_batchnorm; not for
    the others, measured at 64x64: efficientnet_b0's gradient then amplifies rounding, PyTorch
    float32's logits 2e-4 from float64's, with model_prep.randomise's statistics 3e-7), the inputs
    of every ReLU and ReLU6 moved to +-k standard deviations, half of a layer's channels each way
    (as model_prep.set_relu_margins with balanced signs), then the logits scaled to a standard
    deviation of 3 (model_prep.calibrate_logits).

    Unlike model_prep's margins, a ReLU input of a single spatial position (the ReLU inside
    MobileNetV3's squeeze-and-excitation, after the global average) takes its standard deviation
    across the channels, not across the batch: the batch's few global averages per channel barely
    differ, and model_prep's shift (k times that tiny spread, minus a mean of order 1) leaves those
    inputs at 1e-7..1e-5, where float32 rounding decides each one (measured here on
    mobilenet_v3_small at 64x64, model_prep's conditioning: the SE ReLUs' float32 inputs 0.2..0.6
    from float64's, PyTorch float32's own input gradient 2e-3..2e-2 from float64's; with this one
    about 1e-6). Hardswish and hardsigmoid are not moved: their kinks at +-3 are rarely within
    rounding (ambiguous_pixels counts them)."""
    if any(isinstance(m, nn.ReLU6) for m in model.modules()):
        calibrate_batchnorm(model, x, seed + 1)
    gen = torch.Generator().manual_seed(seed)
    state = {}

    def track(mod, inputs, output):
        state["last"] = mod

    def shift_input(mod, inputs):
        z = inputs[0]
        if z.dim() == 4 and z.shape[2] * z.shape[3] > 1:
            mu, sd = z.mean(dim=(0, 2, 3)), z.std(dim=(0, 2, 3))
            sd = torch.clamp(sd, min=1e-3 * float(sd.mean()) + 1e-30)
        else:  # one value per channel and sample: the spread across the channels
            mu = z.reshape(z.shape[0], z.shape[1]).mean(dim=0)
            sd = torch.full_like(mu, float(mu.std()) + 1e-30)
        producer = state["last"]
        assert producer.bias is not None, f"{type(producer).__name__} before {type(mod).__name__} has no bias"
        view = (1, -1) + (1,) * (z.dim() - 2)
        if isinstance(mod, nn.ReLU6):
            # Room for +-k sd between the kinks at 0 and 6: a channel wider than RELU6_SD is
            # narrowed by scaling its producer (a BatchNorm: its weight and bias).
            assert isinstance(producer, nn.BatchNorm2d), f"{type(producer).__name__} before ReLU6"
            f = torch.clamp(RELU6_SD / sd, max=1.0)
            producer.weight.mul_(f)
            producer.bias.mul_(f)
            z, mu, sd = z * f.view(view), mu * f, sd * f
        sign = torch.where(torch.randperm(mu.numel(), generator=gen) < (mu.numel() + 1) // 2, 1.0, -1.0)
        shift = sign.to(z.device, z.dtype) * k * sd - mu
        producer.bias.add_(shift)
        return (z + shift.view(view),)

    logits = run_shifting(model, x, (nn.Conv2d, nn.BatchNorm2d, nn.Linear), track, (nn.ReLU, nn.ReLU6), shift_input)
    calibrate_logits(model, x, logits=logits)
    return model


def ambiguous_pixels(model, x, tau=1e-5):
    """The input pixels whose gradient a rounding-decided unit could move.

    In float64, a ReLU input within tau * (its channel's RMS) of zero (of a kink of ReLU6,
    hardswish or hardsigmoid: KINKS), or a max-pool window whose
    two largest (positive) inputs are that close, is a decision two correct float32
    implementations may take differently; flipping it changes the input gradient only where that
    unit's (or those two units') own input gradient is non-zero. Returns (count of such units,
    bool [N, H, W]: pixels inside the union of those supports)."""
    md = copy.deepcopy(model).double()
    for m in md.modules():
        if isinstance(getattr(m, "inplace", None), bool):  # the hooks keep the activations' inputs
            m.inplace = False
    x64 = x.detach().double().requires_grad_(True)
    found = []  # (tensor, mask of the ambiguous units in it)

    def rms_of(z):
        dims = (0, 2, 3) if z.dim() == 4 else (0,)
        r = z.pow(2).mean(dim=dims).sqrt()
        return r.view((1, -1) + (1,) * (z.dim() - 2))

    def kink_pre(mod, inputs):
        z = inputs[0]
        kinks = next(k for t, k in KINKS if isinstance(mod, t))
        rms = rms_of(z)
        # (the distance to a kink at p != 0 relative to |p| at least: z's own rounding scales with it)
        mask = functools.reduce(torch.logical_or, [(z - p).abs() < tau * torch.clamp(rms, min=abs(p)) for p in kinks])
        if bool(mask.any()):
            found.append((z, mask))

    def pool_pre(mod, inputs):
        z = inputs[0]
        n, c, h, w = z.shape
        ks, st, pd = (v if isinstance(v, tuple) else (v, v) for v in (mod.kernel_size, mod.stride, mod.padding))
        pad = (pd[1], pd[1], pd[0], pd[0])
        vals = F.unfold(F.pad(z.detach().reshape(n * c, 1, h, w), pad, value=float("-inf")), ks, stride=st)
        where = F.unfold(F.pad(torch.arange(h * w, dtype=z.dtype, device=z.device).reshape(1, 1, h, w), pad,
                               value=-1.0), ks, stride=st)[0].long()
        top, arg = vals.topk(2, dim=1)
        rms = rms_of(z).reshape(1, c).expand(n, c).reshape(n * c, 1)
        amb = ((top[:, 0] - top[:, 1]) < tau * rms) & (top[:, 0] > 0)
        if bool(amb.any()):
            nc, win = amb.nonzero(as_tuple=True)
            mask = torch.zeros(n * c * h * w, dtype=torch.bool, device=z.device)
            for k in (0, 1):
                mask[nc * (h * w) + where[arg[nc, k, win], win]] = True
            found.append((z, mask.reshape(z.shape)))

    hooks = []
    for m in md.modules():
        if isinstance(m, tuple(t for t, _ in KINKS)):
            hooks.append(m.register_forward_pre_hook(kink_pre))
        elif isinstance(m, nn.MaxPool2d):
            hooks.append(m.register_forward_pre_hook(pool_pre))
    try:
        md(x64)
    finally:
        for h in hooks:
            h.remove()
    count = sum(int(mk.sum()) for _, mk in found)
    if not found:
        return 0, np.zeros((x.shape[0], x.shape[2], x.shape[3]), bool)
    gen = torch.Generator().manual_seed(5)
    # Random positive weights: the sum's gradient vanishes only where every unit's does.
    seeds = [mk.double() * (0.5 + torch.rand(mk.shape, generator=gen, dtype=torch.float64)).to(mk.device)
             for _, mk in found]
    (g,) = torch.autograd.grad([z for z, _ in found], x64, grad_outputs=seeds, allow_unused=True)
    if g is None:
        return count, np.zeros((x.shape[0], x.shape[2], x.shape[3]), bool)
    return count, (g.abs().amax(dim=1) > 0).cpu().numpy()


# ---- measures -------------------------------------------------------------------------------------

def max_rel(a, b):
    """max |a - b| / max |b| over the whole batch."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).max() / max(float(np.abs(b).max()), 1e-300))


def l2_rel(a, b):
    """Worst per-image ||a - b|| / ||b||."""
    a = np.asarray(a, np.float64).reshape(a.shape[0], -1)
    b = np.asarray(b, np.float64).reshape(b.shape[0], -1)
    return float(np.max(np.linalg.norm(a - b, axis=1) / np.maximum(np.linalg.norm(b, axis=1), 1e-300)))


def beyond(a, b, tol):
    """How many elements differ by more than tol * max |b|."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return int((np.abs(a - b) > tol * np.abs(b).max()).sum())


def ranks(v):
    """Ranks 0..n-1 of v, tied values sharing their mean rank."""
    v = np.asarray(v).ravel()
    order = np.argsort(v, kind="mergesort")
    sorted_v = v[order]
    first = np.concatenate(([True], sorted_v[1:] != sorted_v[:-1]))
    group = np.cumsum(first) - 1
    starts = np.flatnonzero(first)
    counts = np.diff(np.append(starts, v.size))
    mean_rank = starts + (counts - 1) / 2.0
    out = np.empty(v.size, np.float64)
    out[order] = mean_rank[group]
    return out


def spearman(a, b):
    ra, rb = ranks(a), ranks(b)
    ra -= ra.mean()
    rb -= rb.mean()
    den = np.sqrt((ra * ra).sum() * (rb * rb).sum())
    return float((ra * rb).sum() / den) if den > 0 else float("nan")


def max_rel_outside(a, b, excluded):
    """max_rel over the pixels not in excluded ([N, H, W] bool), relative to max |b| of all."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    d = np.abs(a - b)
    d[np.broadcast_to(excluded[:, None], d.shape)] = 0
    return float(d.max() / max(float(np.abs(b).max()), 1e-300))


def grad_ok(rec, key, strict):
    """The gradient criterion: within GRAD_TOL, or (unless strict) within it outside the pixels
    that rounding-decided units could move, those covering at most MAX_EXCLUDED of the batch."""
    if rec[key] <= GRAD_TOL:
        return True
    return (not strict and rec.get(key + "_outside", 1.0) <= GRAD_TOL
            and rec.get("ambiguous_px_frac", 1.0) <= MAX_EXCLUDED)


def grad_map(g):
    """The engine's grad map: mean over the colour channels of |dL/dx|, [N, H, W]."""
    return np.abs(np.asarray(g, np.float64)).mean(axis=1)


def min_spearman(a, b):
    """The worst image's Spearman rank correlation of maps a and b ([N, H, W])."""
    return min(spearman(a[n], b[n]) for n in range(a.shape[0]))


def precision_check(engine_map, torch_map_, ref_map):
    """The reduced-precision criterion: the engine's map against the float64 reference map at
    most MAP_RATIO times as far (max relative error over the batch) as PyTorch's map of the same
    precision, and its worst image's Spearman correlation with the reference at most RHO_SLACK
    below PyTorch's worst. Images whose reference map is constant (a gradient that is zero
    everywhere) have no ranks and no L2 scale: they are left out of the Spearman and L2 figures
    (None when every image is); a map that is constant where the reference is not correlates 0."""
    e, t = max_rel(engine_map, ref_map), max_rel(torch_map_, ref_map)
    ratio = e / t if t > 0 else (0.0 if e == 0 else None)  # None: PyTorch exact, the engine not
    keep = [n for n in range(ref_map.shape[0]) if np.ptp(ref_map[n]) > 0]
    rho_e = rho_t = l2_e = l2_t = None
    if keep:
        ref_k = ref_map[keep]
        rho_e = min(np.nan_to_num(spearman(engine_map[n], ref_map[n])) for n in keep)
        rho_t = min(np.nan_to_num(spearman(torch_map_[n], ref_map[n])) for n in keep)
        l2_e, l2_t = l2_rel(engine_map[keep], ref_k), l2_rel(torch_map_[keep], ref_k)
    rho_ok = rho_e is None or rho_e >= rho_t - RHO_SLACK
    return {"engine_vs_fp64": e, "torch_vs_fp64": t, "ratio": ratio,
            "engine_vs_fp64_l2": l2_e, "torch_vs_fp64_l2": l2_t,
            "engine_spearman": None if rho_e is None else float(rho_e),
            "torch_spearman": None if rho_t is None else float(rho_t),
            "ok": bool(ratio is not None and ratio <= MAP_RATIO and rho_ok)}


def self_test_measures():
    v = np.array([3.0, 1.0, 4.0, 1.0, 5.0, 9.0, 2.0, 6.0])
    assert np.allclose(ranks(v), [3, 0.5, 4, 0.5, 5, 7, 2, 6]), ranks(v)
    assert abs(spearman(v, v * 2 + 1) - 1) < 1e-12 and abs(spearman(v, -v) + 1) < 1e-12
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=500), rng.normal(size=500)
    # Spearman = Pearson of the ranks = 1 - 6 sum d^2 / (n (n^2 - 1)) without ties.
    d = ranks(a) - ranks(b)
    assert abs(spearman(a, b) - (1 - 6 * (d * d).sum() / (500 * (500 ** 2 - 1)))) < 1e-12
    # The reduced-precision criterion on made-up maps: the reference, PyTorch 10% off somewhere.
    ref = rng.uniform(0.5, 1.0, size=(2, 16, 16))
    tm = ref.copy()
    tm[0, 3, 3] += 0.1
    near, far = ref.copy(), ref.copy()
    near[1, 5, 5] -= 0.14  # 1.4 x PyTorch's error: within 1.5 x
    far[1, 5, 5] -= 0.16  # 1.6 x: beyond
    c = precision_check(near, tm, ref)
    assert c["ok"] and abs(c["ratio"] - 1.4) < 1e-9, c
    assert not precision_check(far, tm, ref)["ok"]
    assert not precision_check(tm, ref, ref)["ok"]  # PyTorch exact, the engine not
    assert precision_check(ref, ref, ref)["ok"]
    # Small errors everywhere: within 1.5 x in the maximum, but the ranks move: Spearman must fail it.
    scrambled = ref + rng.uniform(-0.05, 0.05, size=ref.shape)
    c = precision_check(scrambled, tm, ref)
    assert c["ratio"] <= MAP_RATIO and c["engine_spearman"] < c["torch_spearman"] - RHO_SLACK and not c["ok"], c
    # An image whose reference map is zero is left out of the Spearman figure; a constant engine
    # map where the reference has ranks correlates 0.
    zero = ref.copy()
    zero[0] = 0
    c = precision_check(zero + 1e-3 * rng.uniform(size=ref.shape), zero + 2e-3 * rng.uniform(size=ref.shape), zero)
    assert c["ok"] and c["engine_spearman"] is not None and c["engine_spearman"] > 0.99, c
    flat = ref.copy()
    flat[1] = 0.75
    c = precision_check(flat, tm, ref)
    assert c["engine_spearman"] == 0 and not c["ok"], c


# ---- the engine -----------------------------------------------------------------------------------

class Engine:
    def __init__(self, binary, timeout, log):
        self.binary, self.timeout, self.log = binary, timeout, log
        self.lock = threading.Lock()
        self.device_line = None

    def run(self, args):
        cmd = [self.binary] + args
        t0 = time.time()
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=self.timeout)
            rc, err = proc.returncode, proc.stderr
        except subprocess.TimeoutExpired:
            rc, err = 124, f"timed out after {self.timeout} s"
        secs = time.time() - t0
        with self.lock:
            with open(self.log, "a") as f:
                f.write(f"+ {' '.join(cmd)}\n  exit {rc}, {secs:.1f} s\n")
                if err.strip():
                    f.write("".join("  | " + ln + "\n" for ln in err.strip().splitlines()[-20:]))
            for ln in err.splitlines():
                if ln.startswith("device: ") and self.device_line is None:
                    self.device_line = ln[len("device: "):]
        if rc != 0:
            lines = err.strip().splitlines()
            errors = [ln for ln in lines if "error" in ln.lower()]
            last = (errors or lines or [""])[-1]
            what = [args[0]] + [args[i + 1] for i, a in enumerate(args[:-1]) if a in ("--device", "--precision")]
            raise RuntimeError(f"{' '.join(what)} exited {rc}: {last[:200]}")
        return secs

    def gradient(self, weights, x_path, targets, prefix, device, threads):
        args = ["gradient", "--weights", weights, "--input", x_path, "--target=" + ",".join(map(str, targets)),
                "--logits-out", prefix + "_logits.npy", "--grad-out", prefix + "_grad.npy", "--device", device]
        if threads:
            args += ["--threads", str(threads)]
        self.run(args)
        return np.load(prefix + "_logits.npy"), np.load(prefix + "_grad.npy")

    def saliency(self, weights, x_path, targets, out_dir, device, precision, threads):
        if os.path.isdir(out_dir):
            shutil.rmtree(out_dir)
        args = ["saliency", "--weights", weights, "--target=" + ",".join(map(str, targets)), "--out", out_dir,
                "--device", device, "--batch", str(len(targets))]
        if precision:
            args += ["--precision", precision]
        if threads:
            args += ["--threads", str(threads)]
        self.run(args + [x_path])
        stem = os.path.splitext(os.path.basename(x_path))[0]
        names = [stem] if len(targets) == 1 else [f"{stem}_{n}" for n in range(len(targets))]
        return np.stack([np.load(os.path.join(out_dir, n + ".npy")) for n in names])


# ---- one model --------------------------------------------------------------------------------------

def model_dir(work, arch):
    """The scratch folder of one model: its weights, batch and engine outputs, and nothing else
    (removed whole when the model is done; a shared folder and a prefix would also take vgg11_bn's
    files with vgg11's)."""
    return os.path.join(work, arch)


def clean_model(work, arch):
    shutil.rmtree(model_dir(work, arch), ignore_errors=True)


def self_test_scratch(work):
    """Cleaning up after one model leaves the files of a model whose name starts with its name."""
    for arch in ("vgg11", "vgg11_bn"):
        clean_model(work, arch)
        os.makedirs(model_dir(work, arch))
        open(os.path.join(model_dir(work, arch), arch + "_x.npy"), "w").close()
    clean_model(work, "vgg11")
    assert not os.path.exists(model_dir(work, "vgg11"))
    assert os.path.exists(os.path.join(model_dir(work, "vgg11_bn"), "vgg11_bn_x.npy")), "cleanup took vgg11_bn's files"
    clean_model(work, "vgg11_bn")


def torch_map(model, x, targets, precision):
    """PyTorch's saliency map of x with the engine's seed and map (mean over RGB of |dL/dx|), as a
    float64 array [N, H, W].

    precision: 'fp64' (a float64 copy of the model, float64 input: the reference), 'fp32' (as the
    script runs: TF32 off on the GPU), 'tf32' (TF32 allowed in cuDNN and matmuls for this map,
    off again after it), 'bf16' (torch.autocast(bfloat16) on x's device around the forward pass,
    the backward following its dtypes: what bench_vs_pytorch.py times). The seed is the engine's,
    onehot(target) * softmax(logits)[target], the softmax in float32 (float64 for 'fp64') and the
    seed cast to the logits' dtype."""
    if precision == "fp64":
        model = copy.deepcopy(model).double()
        x = x.double()
    xg = x.detach().clone().requires_grad_(True)
    autocast = (torch.autocast(x.device.type, dtype=torch.bfloat16) if precision == "bf16"
                else contextlib.nullcontext())
    if precision == "tf32":
        set_tf32(torch, True)
    try:
        with autocast:
            out = model(xg)
        prob = torch.softmax(out.double() if precision == "fp64" else out.float(), dim=1).detach()
        idx = torch.arange(x.shape[0], device=x.device)
        t = torch.tensor(targets, device=x.device)
        seed_grad = torch.zeros_like(out)
        seed_grad[idx, t] = prob[idx, t].to(seed_grad.dtype)
        out.backward(seed_grad)
    finally:
        if precision == "tf32":
            set_tf32(torch, False)
    assert xg.grad.dtype == (torch.float64 if precision == "fp64" else torch.float32), (precision, xg.grad.dtype)
    return xg.grad.detach().abs().mean(dim=1).cpu().numpy().astype(np.float64)


def rounded_to_bf16(model):
    """A copy of the model whose floating parameters and buffers are rounded to bfloat16 (kept in
    float32)."""
    m = copy.deepcopy(model)
    with torch.no_grad():
        for t in list(m.parameters()) + list(m.buffers()):
            if t.is_floating_point():
                t.copy_(t.bfloat16().float())
    return m


def prepare(arch, args, device, builder, work):
    """Builds, conditions and writes one model and its batch; the PyTorch reference on device."""
    seed = 1000 + (ARCHS + FAMILY_ARCHS).index(arch)
    small = {}
    if args.selftest:
        small = {"width_div": 8, "hidden": 64, "num_classes": 10}
    t0 = time.time()
    model = build_model(arch, seed, builder, device, **small)
    randomise(model, seed + 1)
    gen = torch.Generator().manual_seed(seed + 3)
    x = torch.randn(args.batch, 3, args.size, args.size, generator=gen)
    model = model.to(device)
    for p in model.parameters():
        p.requires_grad_(False)
    xd = x.to(device)
    if arch in FAMILY_ARCHS:
        randomise_family(model, seed + 4)
        condition_family(model, xd, seed + 2)
    else:
        condition(model, xd, k=RELU_MARGIN, pool_margin=POOL_MARGIN, seed=seed + 2, balanced=True)
    with torch.no_grad():
        logits = model(xd)
    targets = logits.argmax(dim=1).tolist()
    # The reference: the engine's seed, strict float32.
    xg = xd.clone().requires_grad_(True)
    out = model(xg)
    prob = torch.softmax(out, dim=1).detach()
    idx = torch.arange(args.batch, device=device)
    t = torch.tensor(targets, device=device)
    seed_grad = torch.zeros_like(out)
    seed_grad[idx, t] = prob[idx, t]
    out.backward(seed_grad)
    ref_logits = out.detach().cpu().numpy().astype(np.float64)
    ref_grad = xg.grad.detach().cpu().numpy().astype(np.float64)
    del xg, out
    amb_count, amb_px = ambiguous_pixels(model, xd, AMBIGUITY_TAU)
    # PyTorch's maps for the reduced-precision criterion: float64 the reference; on the CPU
    # (self-test) autocast bfloat16 only.
    ref64_map = torch_map(model, xd, targets, "fp64")
    torch_maps, bf16_kind = {}, "autocast"
    for p in (("bf16",) if device == "cpu" else ("bf16", "tf32")):
        try:
            torch_maps[p] = torch_map(model, xd, targets, p)
        except RuntimeError as e:
            # Older PyTorch's CPU autocast lacks some bfloat16 kernels (1.13: hardtanh's backward,
            # ReLU6's; layer_norm with mixed dtypes): the self-test's stand-in is then PyTorch's
            # float32 map of the model and input rounded to bfloat16 (a reduced-precision map all
            # the same, which is all the stand-in criterion needs). Never on the GPU.
            if device != "cpu" or p != "bf16":
                raise
            torch_maps[p] = torch_map(rounded_to_bf16(model), xd.bfloat16().float(), targets, "fp32")
            bf16_kind = "bf16-rounded parameters and input (CPU autocast: " + str(e).splitlines()[0][:80] + ")"
    mdir = model_dir(work, arch)
    clean_model(work, arch)
    os.makedirs(mdir)
    weights = os.path.join(mdir, f"{arch}.safetensors")
    write_safetensors(model.state_dict(), weights)
    x_path = os.path.join(mdir, f"{arch}_x.npy")
    np.save(x_path, x.numpy().astype(np.float32))
    del model, xd
    if device != "cpu":
        torch.cuda.empty_cache()
    return {"weights": weights, "x": x_path, "targets": targets, "ref_logits": ref_logits, "ref_grad": ref_grad,
            "prepare_s": time.time() - t0, "builder": builder, "ambiguous_units": amb_count,
            "ambiguous_px": amb_px, "ref64_map": ref64_map, "torch_maps": torch_maps, "bf16_kind": bf16_kind}


def check_model(arch, prep, engine, args, work):
    """Runs the engine on one prepared model; returns the JSON record."""
    t0 = time.time()
    amb = prep["ambiguous_px"]
    rec = {"model": arch, "batch": args.batch, "size": args.size, "targets": prep["targets"],
           "builder": prep["builder"], "ok": False, "ambiguous_units": prep["ambiguous_units"],
           "ambiguous_px_frac": float(amb.mean())}
    w, x, tg = prep["weights"], prep["x"], prep["targets"]
    pre = os.path.join(model_dir(work, arch), arch)
    ref64 = prep["ref64_map"]
    try:
        if args.selftest:
            logits_cpu, g_cpu = engine.gradient(w, x, tg, pre + "_cpu", "cpu", args.threads)
            rec["cpu_vs_torch"] = max_rel(g_cpu, prep["ref_grad"])
            rec["cpu_vs_torch_outside"] = max_rel_outside(g_cpu, prep["ref_grad"], amb)
            rec["cpu_vs_torch_l2"] = l2_rel(g_cpu, prep["ref_grad"])
            rec["logits_cpu_vs_torch"] = max_rel(logits_cpu, prep["ref_logits"])
            m = engine.saliency(w, x, tg, pre + "_map_cpu", "cpu", None, args.threads)
            rec["map_file_vs_grad"] = max_rel(m, grad_map(g_cpu))
            # The reduced-precision criterion's code on the CPU: the engine's float32 map in the
            # place of its bf16 map, PyTorch's CPU autocast bfloat16 map in PyTorch's. It must
            # pass; with the two swapped (a bf16 map held to a float32 one) it must fail.
            rec["precisions"] = ["standin"]
            rec["standin_torch_map"] = prep["bf16_kind"]
            put_check(rec, "standin", precision_check(m, prep["torch_maps"]["bf16"], ref64))
            rec["control_rejected"] = not precision_check(prep["torch_maps"]["bf16"], m, ref64)["ok"]
            # ... and the maps it is given are what they claim: the float64 reference neither
            # PyTorch's float32 map nor far from it, PyTorch's bf16 map rounded like bf16.
            rec["fp32_torch_vs_fp64"] = max_rel(grad_map(prep["ref_grad"]), ref64)
            parts = {"gradient": grad_ok(rec, "cpu_vs_torch", args.strict),
                     "logits": rec["logits_cpu_vs_torch"] <= GRAD_TOL, "map file": rec["map_file_vs_grad"] <= 1e-5,
                     "stand-in": rec["standin_ok"], "control": rec["control_rejected"],
                     "fp64 reference": 0 < rec["fp32_torch_vs_fp64"] <= GRAD_TOL,
                     "torch bf16": rec["standin_torch_vs_fp64"] > BF16_MIN_ERR}
        else:
            with futures.ThreadPoolExecutor(max_workers=4) as pool:
                cpu = pool.submit(engine.gradient, w, x, tg, pre + "_cpu", "cpu", args.threads)
                # (the device runs get 2 CPU threads each: several of them overlap)
                cuda = pool.submit(engine.gradient, w, x, tg, pre + "_cuda", "cuda", 2)
                maps = {p: pool.submit(engine.saliency, w, x, tg, pre + "_map_" + p, "cuda", p, 2)
                        for p in ("bf16", "tf32")}
                logits_cpu, g_cpu = cpu.result()
                logits_cuda, g_cuda = cuda.result()
                maps = {p: f.result() for p, f in maps.items()}
            ref = prep["ref_grad"]
            rec["cuda_vs_cpu"] = max_rel(g_cuda, g_cpu)
            rec["cuda_vs_torch"] = max_rel(g_cuda, ref)
            rec["cpu_vs_torch"] = max_rel(g_cpu, ref)
            rec["cuda_vs_cpu_outside"] = max_rel_outside(g_cuda, g_cpu, amb)
            rec["cuda_vs_torch_outside"] = max_rel_outside(g_cuda, ref, amb)
            rec["cuda_vs_cpu_l2"] = l2_rel(g_cuda, g_cpu)
            rec["cuda_vs_torch_l2"] = l2_rel(g_cuda, ref)
            rec["cuda_vs_cpu_beyond"] = beyond(g_cuda, g_cpu, GRAD_TOL)
            rec["cuda_vs_torch_beyond"] = beyond(g_cuda, ref, GRAD_TOL)
            rec["logits_cuda_vs_torch"] = max_rel(logits_cuda, prep["ref_logits"])
            rec["logits_cuda_vs_cpu"] = max_rel(logits_cuda, logits_cpu)
            m32 = grad_map(g_cuda)
            # (not criteria: float32 against float64, the engine's and PyTorch's)
            rec["fp32_engine_vs_fp64"] = max_rel(m32, ref64)
            rec["fp32_torch_vs_fp64"] = max_rel(grad_map(ref), ref64)
            rec["precisions"] = list(maps)
            parts = {"vs cpu": grad_ok(rec, "cuda_vs_cpu", args.strict),
                     "vs torch": grad_ok(rec, "cuda_vs_torch", args.strict)}
            for p, m in maps.items():
                put_check(rec, p, precision_check(m, prep["torch_maps"][p], ref64))
                parts[p] = rec[f"{p}_ok"]
                # (not a criterion: against the engine's own float32 map, the first run's measure)
                rec[f"{p}_vs_fp32_map_rel"] = max_rel(m, m32)
                rec[f"{p}_vs_fp32_spearman"] = min_spearman(m, m32)
        rec["failed"] = [k for k, v in parts.items() if not v]
        rec["ok"] = not rec["failed"]
    except Exception as e:  # an engine failure is this model's failure, the others still run
        rec["error"] = str(e)
    rec["engine_s"] = round(time.time() - t0, 1)
    rec["prepare_s"] = round(prep["prepare_s"], 1)
    if not args.keep:
        clean_model(work, arch)
    return rec


def put_check(rec, p, check):
    """precision_check's numbers into the record as p_engine_vs_fp64, ..., p_ok."""
    for k, v in check.items():
        rec[f"{p}_{k}"] = v


def names_and_shapes_vs_torchvision(tv):
    """The own builders against torchvision (problems, one line each; empty: none): for the
    ResNets and VGGs the state dict's names and shapes; for the other families
    (tv_free_models.compare_structure) every leaf module's name, class and attributes (strides,
    paddings, groups, eps, activations) and the state dict's names, shapes and order, and for
    FAMILY_SELFTEST torchvision's random state dict loaded into the own model: the same float64
    logits (32x32), with a control (one BatchNorm eps changed in mobilenet_v3_small) that must
    differ. The models are built without their random initialisation (tv_free_models.no_init):
    seconds instead of a minute and a half here for the full-size models."""
    bad = []
    with tv_free_models.no_init():
        for arch in ARCHS:
            want = {k: tuple(v.shape) for k, v in getattr(tv, arch)(weights=None).state_dict().items()}
            have = {k: tuple(v.shape) for k, v in own_model(arch).state_dict().items()}
            if want != have:
                missing = sorted(set(want) - set(have))[:3]
                extra = sorted(set(have) - set(want))[:3]
                shapes = [k for k in set(want) & set(have) if want[k] != have[k]][:3]
                bad.append(f"{arch}: missing {missing} unexpected {extra} shapes {shapes}")
    for arch in FAMILY_ARCHS:
        bad += tv_free_models.compare_structure(arch, tv)
    for arch in FAMILY_SELFTEST:
        bad += tv_free_models.compare_logits(arch, tv)[1]

    def eps_changed(model):
        next(m for m in model.modules() if isinstance(m, nn.BatchNorm2d)).eps = 1e-2

    if not tv_free_models.compare_logits("mobilenet_v3_small", tv, perturb=eps_changed)[1]:
        bad.append("control: a changed BatchNorm eps went unnoticed by the logits comparison")
    return bad


# ---- report -------------------------------------------------------------------------------------------

def fmt(v, spec=".2e"):
    return "-" if v is None else format(v, spec)


def table(records, selftest):
    if selftest:
        lines = ["| model | cpu vs torch (max rel) | outside ambiguous | ambiguous units (px) | L2 | logits "
                 "| map file vs grad | precision criterion: stand-in / control | result |",
                 "|---|---:|---:|---:|---:|---:|---:|---|---|"]
        for r in records:
            crit = "-"
            if "standin_ok" in r:
                crit = (("ok" if r["standin_ok"] else "FAIL") + " / "
                        + ("rejected" if r["control_rejected"] else "ACCEPTED"))
            lines.append(f"| {r['model']} | {fmt(r.get('cpu_vs_torch'))} | {fmt(r.get('cpu_vs_torch_outside'))} "
                         f"| {ambiguity(r)} | {fmt(r.get('cpu_vs_torch_l2'))} "
                         f"| {fmt(r.get('logits_cpu_vs_torch'))} | {fmt(r.get('map_file_vs_grad'))} "
                         f"| {crit} | {status(r)} |")
        return "\n".join(lines) + "\n\n" + precision_table(records)
    lines = ["| model | cuda vs cpu | cuda vs torch | outside ambiguous (cpu / torch) | ambiguous units (px) "
             "| cpu vs torch | L2 vs cpu / torch | logits vs torch | bf16 / tf32 maps vs PyTorch's | result |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---|---|"]
    for r in records:
        maps = " / ".join(("ok" if r[f"{p}_ok"] else "FAIL") if f"{p}_ok" in r else "-" for p in ("bf16", "tf32"))
        lines.append(
            f"| {r['model']} | {fmt(r.get('cuda_vs_cpu'))} | {fmt(r.get('cuda_vs_torch'))} "
            f"| {fmt(r.get('cuda_vs_cpu_outside'))} / {fmt(r.get('cuda_vs_torch_outside'))} | {ambiguity(r)} "
            f"| {fmt(r.get('cpu_vs_torch'))} | {fmt(r.get('cuda_vs_cpu_l2'))} / {fmt(r.get('cuda_vs_torch_l2'))} "
            f"| {fmt(r.get('logits_cuda_vs_torch'))} | {maps} | {status(r)} |")
    return "\n".join(lines) + "\n\n" + precision_table(records)


PRECISION_LABELS = {"bf16": "bf16", "tf32": "tf32", "standin": "fp32 for bf16 (CPU stand-in)"}


def precision_table(records):
    """One row per model and reduced precision: the engine's map and PyTorch's map of that
    precision, each against PyTorch's float64 map."""
    lines = ["| model | precision | engine vs fp64 (max rel) | torch vs fp64 (max rel) | ratio "
             "| L2 rel engine / torch | Spearman engine / torch | engine vs own fp32 (max rel / Spearman) | result |",
             "|---|---|---:|---:|---:|---:|---:|---:|---|"]
    for r in records:
        for p in r.get("precisions", []):
            if f"{p}_ok" not in r:
                continue
            ratio = r[f"{p}_ratio"]
            own = (f"{fmt(r[p + '_vs_fp32_map_rel'])} / {fmt(r[p + '_vs_fp32_spearman'], '.4f')}"
                   if p + "_vs_fp32_map_rel" in r else "-")
            lines.append(
                f"| {r['model']} | {PRECISION_LABELS.get(p, p)} | {fmt(r[p + '_engine_vs_fp64'])} "
                f"| {fmt(r[p + '_torch_vs_fp64'])} | {'inf' if ratio is None else format(ratio, '.3g')} "
                f"| {fmt(r[p + '_engine_vs_fp64_l2'])} / {fmt(r[p + '_torch_vs_fp64_l2'])} "
                f"| {fmt(r[p + '_engine_spearman'], '.4f')} / {fmt(r[p + '_torch_spearman'], '.4f')} "
                f"| {own} | {'ok' if r[p + '_ok'] else 'FAIL'} |")
    return "\n".join(lines)


def ambiguity(r):
    if "ambiguous_units" not in r:
        return "-"
    return f"{r['ambiguous_units']} ({100 * r['ambiguous_px_frac']:.1f}%)"


def status(r):
    if r.get("skipped"):
        return "SKIP (" + r["skipped"] + ")"
    if r.get("error"):
        return "ERROR: " + r["error"][:80]
    if not r["ok"]:
        return "FAIL" + (" (" + ", ".join(r["failed"]) + ")" if r.get("failed") else "")
    keys = ("cuda_vs_cpu", "cuda_vs_torch") if "cuda_vs_cpu" in r else ("cpu_vs_torch",)
    return "ok*" if any(r[k] > GRAD_TOL for k in keys) else "ok"


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bin", required=True, help="the engine (a CUDA build, or any build for --selftest)")
    ap.add_argument("--out", required=True, help="directory for models.jsonl, models.md, engine.log and scratch")
    ap.add_argument("--models", default=None,
                    help="comma-separated, or all (36, cheapest first); default: all but " + ", ".join(FAMILY_LARGE) +
                    "; with --selftest the ResNets and VGGs but " + ", ".join(SELFTEST_SKIP) +
                    "; +NAME,...: the default list and these")
    ap.add_argument("--batch", type=int, default=None, help="images per batch (default 2)")
    ap.add_argument("--size", type=int, default=None, help="image height and width (default 224; 64 with --selftest)")
    ap.add_argument("--threads", type=int, default=4, help="CPU threads of each CPU-backend run (default 4)")
    ap.add_argument("--jobs", type=int, default=3, help="models whose engine runs overlap (default 3)")
    ap.add_argument("--time-limit", type=float, default=0, help="start no model after this many seconds (0: none)")
    ap.add_argument("--timeout", type=int, default=180, help="seconds for one engine run (default 180)")
    ap.add_argument("--builder", choices=("auto", "torchvision", "own"), default="auto",
                    help="model constructor: torchvision when importable (auto), or this script's")
    ap.add_argument("--selftest", action="store_true", help="CPU only: small models, --device cpu vs PyTorch CPU")
    ap.add_argument("--keep", action="store_true", help="keep the weight files and outputs in OUT/scratch")
    ap.add_argument("--strict", action="store_true",
                    help="the gradient criterion on every pixel, rounding-decided units or not")
    args = ap.parse_args()
    args.batch = args.batch or 2
    args.size = args.size or (64 if args.selftest else 224)
    return args


def main():
    args = parse_args()
    start = time.time()
    if not os.path.exists(args.bin):
        print(f"models_check: engine not found: {args.bin}", file=sys.stderr)
        return 2
    default = (",".join(a for a in ARCHS if a not in SELFTEST_SKIP) if args.selftest else
               ",".join(a for a in DEFAULT_ORDER if a not in FAMILY_LARGE))
    if args.models == "all":
        args.models = ",".join(DEFAULT_ORDER)
    elif args.models is None:
        args.models = default
    elif args.models.startswith("+"):
        args.models = default + "," + args.models[1:]
    archs = list(dict.fromkeys(a.strip() for a in args.models.split(",") if a.strip()))
    unknown = [a for a in archs if a not in ARCHS + FAMILY_ARCHS]
    if unknown:
        print(f"models_check: unknown models {unknown} (know {ARCHS + FAMILY_ARCHS})", file=sys.stderr)
        return 2
    os.makedirs(args.out, exist_ok=True)
    work = os.path.join(args.out, "scratch")
    os.makedirs(work, exist_ok=True)
    log = os.path.join(args.out, "engine.log")
    open(log, "w").close()
    self_test_measures()
    self_test_scratch(work)
    tv = torchvision_models()
    builder = args.builder
    if builder == "auto":
        builder = "own" if args.selftest or tv is None else "torchvision"
    if builder == "torchvision" and tv is None:
        print("models_check: --builder torchvision, but torchvision cannot be imported", file=sys.stderr)
        return 2
    header = {"torch": torch.__version__, "torchvision": getattr(sys.modules.get("torchvision"), "__version__", None),
              "builder": builder, "batch": args.batch, "size": args.size, "selftest": args.selftest}
    if args.selftest:
        device = "cpu"
        torch.set_num_threads(max(1, args.threads))
    else:
        if not torch.cuda.is_available():
            print("models_check: PyTorch sees no CUDA device (use --selftest without a GPU)", file=sys.stderr)
            return 1
        device = "cuda"
        set_tf32(torch, False)
        torch.backends.cudnn.benchmark = False
        header["torch_device"] = torch.cuda.get_device_name(0)
    print(json.dumps({"header": header}), flush=True)

    engine = Engine(args.bin, args.timeout, log)
    records, extra_failures = [], []
    if args.selftest and tv is not None:
        bad = names_and_shapes_vs_torchvision(tv)
        extra_failures += bad
        print(json.dumps({"names_and_shapes_vs_torchvision": "ok" if not bad else bad}), flush=True)

    # Models are prepared one at a time here (PyTorch on the GPU); the engine runs of up to
    # --jobs models overlap in a pool.
    pool = futures.ThreadPoolExecutor(max_workers=max(1, args.jobs))
    pending = []
    for arch in archs:
        if args.time_limit and time.time() - start > args.time_limit:
            records.append({"model": arch, "ok": False, "skipped": "time limit"})
            continue
        while sum(not f.done() for _, f in pending) >= max(1, args.jobs):
            time.sleep(0.05)
        try:
            prep = prepare(arch, args, device, builder, work)
        except Exception as e:
            records.append({"model": arch, "ok": False, "error": f"preparing: {e}"})
            continue
        pending.append((arch, pool.submit(check_model, arch, prep, engine, args, work)))
    for arch, f in pending:
        rec = f.result()
        records.append(rec)
        print(json.dumps(rec), flush=True)
    pool.shutdown()
    records.sort(key=lambda r: archs.index(r["model"]))
    for r in records:
        if r.get("skipped") or (r.get("error", "").startswith("preparing")):
            print(json.dumps(r), flush=True)

    with open(os.path.join(args.out, "models.jsonl"), "w") as f:
        f.write(json.dumps({"header": header, "device": engine.device_line}) + "\n")
        for r in records:
            f.write(json.dumps(r) + "\n")
    md = table(records, args.selftest)
    maps_crit = (f"the engine's map no farther from PyTorch's float64 map (max |a-b| / max |b|) than {MAP_RATIO:g} x "
                 f"PyTorch's map of that precision (ratio <= {MAP_RATIO:g}), and its Spearman correlation with it "
                 f"(worst image) at least PyTorch's - {RHO_SLACK:g}")
    crit = ("criteria: cpu vs torch <= 1e-4 (gradient and logits), map file = mean |grad| within 1e-5; "
            "the reduced-precision criterion with the engine's float32 map in its bf16 map's place and PyTorch's "
            f"CPU autocast bfloat16 map in PyTorch's: {maps_crit}; and with the two swapped it must fail (control)"
            if args.selftest else
            f"criteria: cuda vs cpu and vs torch <= {GRAD_TOL:g} (max |a-b| / max |b|); bf16 and tf32 (PyTorch: "
            f"autocast bfloat16, resp. TF32 allowed in cuDNN and matmuls; same model, input, target, seed and map): "
            f"{maps_crit}")
    if not args.strict:
        crit += (f". ok*: a gradient beyond {GRAD_TOL:g} on every pixel but within it outside the pixels that "
                 f"rounding-decided units (ReLU inputs, ReLU6/hardswish/hardsigmoid inputs at a kink, or max-pool top-2 gaps within {AMBIGUITY_TAU:g} of their "
                 f"channel's RMS, in float64) can move, those at most {MAX_EXCLUDED:.0%} of the pixels "
                 f"(--strict: every pixel)")
    title = (f"{len(records)} models, batch {args.batch}, {args.size}x{args.size}, builder {builder}, "
             f"torch {torch.__version__}" + (f", engine device: {engine.device_line}" if engine.device_line else ""))
    with open(os.path.join(args.out, "models.md"), "w") as f:
        f.write(title + "\n\n" + md + "\n\n" + crit + "\n")
    print("\n" + title + "\n\n" + md + "\n\n" + crit)
    nbad = sum(not r["ok"] for r in records) + len(extra_failures)
    keys = (["cpu_vs_torch", "map_file_vs_grad"] if args.selftest else ["cuda_vs_cpu", "cuda_vs_torch"])
    worst = []
    for k in keys:
        vals = [(r[k], r["model"]) for r in records if r.get(k) is not None]
        if vals:
            v, m = max(vals)
            worst.append(f"{k} {v:.2e} ({m})")
    for p in (["standin"] if args.selftest else ["bf16", "tf32"]):
        # the ratio (None: PyTorch exact, the engine not), the Spearman margin over PyTorch's - RHO_SLACK
        vals = [(float("inf") if r[f"{p}_ratio"] is None else r[f"{p}_ratio"], r["model"])
                for r in records if f"{p}_ok" in r]
        if vals:
            v, m = max(vals)
            worst.append(f"{p}_ratio {v:.3g} ({m})")
            vals = [(r[f"{p}_engine_spearman"] - r[f"{p}_torch_spearman"], r["model"])
                    for r in records if r.get(f"{p}_engine_spearman") is not None]
            if vals:
                v, m = min(vals)
                worst.append(f"{p}_spearman_vs_torch {v:+.4f} ({m})")
    print("worst: " + (", ".join(worst) if worst else "nothing measured"))
    print(f"models: {sum(r['ok'] for r in records)} of {len(archs)} ok, {nbad} failed or not run, "
          f"{time.time() - start:.0f} s")
    return 0 if nbad == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
