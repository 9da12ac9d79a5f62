"""torchvision-shaped MobileNetV2, MobileNetV3, EfficientNet (V1 b0..b7, V2 s/m/l) and ConvNeXt
built with torch alone, for the GPU machine's Python, which has PyTorch but no torchvision.

Written from the architectures' published descriptions, laid out so that every model has
torchvision's module tree: the same module names in the same order, the same state_dict keys
and shapes, the same strides, paddings, groups, BatchNorm/LayerNorm eps, activations (and their
places), and the same forward pass in eval mode (dropout and stochastic depth are identities
there). A state_dict of torchvision's model loads into the model built here and gives the same
logits; `models_check.py --selftest` checks names and shapes of every model against torchvision
and the logits of one model per family, when torchvision can be imported.

  build(arch, num_classes=1000) -> nn.Module   (ARCHS: the names it knows)
  python3 tests/gpu/tv_free_models.py [NAME ...]   (all, or those, against torchvision)

The initialisation follows the same distributions as torchvision's (the bench and the GPU
check draw random weights), not its random stream.
"""
import math

import torch
from torch import nn

# ---- shared pieces -------------------------------------------------------------------------------


def make_divisible(v, divisor=8):
    """Channel counts rounded to the nearest multiple of divisor (at least divisor), never more
    than 10% below v: the rule MobileNets and EfficientNets use for their widths."""
    new = max(divisor, int(v + divisor / 2) // divisor * divisor)
    if new < 0.9 * v:
        new += divisor
    return new


class ConvNormAct(nn.Sequential):
    """Conv2d (no bias when a norm follows), then a norm, then an activation; indices 0, 1, 2 as
    torchvision's Conv2dNormActivation. padding None: (k - 1) // 2 (times the dilation)."""

    def __init__(self, cin, cout, kernel=3, stride=1, groups=1, norm=nn.BatchNorm2d, act=nn.ReLU,
                 padding=None, dilation=1, bias=None):
        if padding is None:
            padding = (kernel - 1) // 2 * dilation
        if bias is None:
            bias = norm is None
        layers = [nn.Conv2d(cin, cout, kernel, stride, padding, dilation=dilation, groups=groups, bias=bias)]
        if norm is not None:
            layers.append(norm(cout))
        if act is not None:
            layers.append(act(inplace=True))
        super().__init__(*layers)
        self.out_channels = cout


def batchnorm(eps=1e-5, momentum=0.1):
    return lambda c: nn.BatchNorm2d(c, eps=eps, momentum=momentum)


class SqueezeExcitation(nn.Module):
    """x * gate(fc2(act(fc1(mean over HxW of x)))), fc1/fc2 1x1 convolutions with biases."""

    def __init__(self, channels, squeeze, act=nn.ReLU, gate=nn.Sigmoid):
        super().__init__()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, squeeze, 1)
        self.fc2 = nn.Conv2d(squeeze, channels, 1)
        self.activation = act()
        self.scale_activation = gate()

    def forward(self, x):
        s = self.scale_activation(self.fc2(self.activation(self.fc1(self.avgpool(x)))))
        return s * x


class StochasticDepth(nn.Module):
    """Drops a residual branch per sample with probability p while training ("row" mode, the
    survivors scaled by 1 / (1 - p)); the identity in eval mode."""

    def __init__(self, p):
        super().__init__()
        self.p = p

    def forward(self, x):
        if not self.training or self.p == 0.0:
            return x
        keep = 1.0 - self.p
        mask = torch.empty((x.shape[0],) + (1,) * (x.dim() - 1), dtype=x.dtype, device=x.device).bernoulli_(keep)
        return x * mask.div_(keep)


class Permute(nn.Module):
    def __init__(self, dims):
        super().__init__()
        self.dims = list(dims)

    def forward(self, x):
        return torch.permute(x, self.dims)


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of an NCHW tensor (its parameters as nn.LayerNorm's)."""

    def forward(self, x):
        x = x.permute(0, 2, 3, 1)
        x = nn.functional.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


def init_mobile(model, linear="normal"):
    """MobileNets' and EfficientNets' initialisation: convs He-normal (fan out), norms 1 and 0,
    linear layers N(0, 0.01) ("normal") or U(+-1/sqrt(out features)) ("uniform"), biases 0."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            if linear == "normal":
                nn.init.normal_(m.weight, 0, 0.01)
            else:
                r = 1.0 / math.sqrt(m.out_features)
                nn.init.uniform_(m.weight, -r, r)
            nn.init.zeros_(m.bias)


# ---- MobileNetV2 -----------------------------------------------------------------------------------
# (expansion t, output channels c, repeats n, first stride s) per stage.
MOBILENET_V2_STAGES = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
                       (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]


class InvertedResidualV2(nn.Module):
    def __init__(self, cin, cout, stride, expand):
        super().__init__()
        hidden = int(round(cin * expand))
        self.stride = stride
        self.use_res_connect = stride == 1 and cin == cout
        layers = []
        if expand != 1:
            layers.append(ConvNormAct(cin, hidden, 1, act=nn.ReLU6))
        layers += [ConvNormAct(hidden, hidden, 3, stride, groups=hidden, act=nn.ReLU6),
                   nn.Conv2d(hidden, cout, 1, 1, 0, bias=False), nn.BatchNorm2d(cout)]
        self.conv = nn.Sequential(*layers)
        self.out_channels = cout
        self._is_cn = stride > 1

    def forward(self, x):
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


class MobileNetV2(nn.Module):
    def __init__(self, num_classes=1000, width_mult=1.0, dropout=0.2):
        super().__init__()
        cin = make_divisible(32 * width_mult)
        self.last_channel = make_divisible(1280 * max(1.0, width_mult))
        features = [ConvNormAct(3, cin, 3, 2, act=nn.ReLU6)]
        for t, c, n, s in MOBILENET_V2_STAGES:
            cout = make_divisible(c * width_mult)
            for i in range(n):
                features.append(InvertedResidualV2(cin, cout, s if i == 0 else 1, t))
                cin = cout
        features.append(ConvNormAct(cin, self.last_channel, 1, act=nn.ReLU6))
        self.features = nn.Sequential(*features)
        self.classifier = nn.Sequential(nn.Dropout(p=dropout), nn.Linear(self.last_channel, num_classes))
        init_mobile(self)

    def forward(self, x):
        x = nn.functional.adaptive_avg_pool2d(self.features(x), (1, 1))
        return self.classifier(torch.flatten(x, 1))


# ---- MobileNetV3 -----------------------------------------------------------------------------------
# (input channels, kernel, expanded channels, output channels, squeeze-excitation, activation
# "RE" (ReLU) or "HS" (hardswish), stride) per block; then the last block's expansion.
MOBILENET_V3 = {
    "mobilenet_v3_large": ([
        (16, 3, 16, 16, False, "RE", 1), (16, 3, 64, 24, False, "RE", 2), (24, 3, 72, 24, False, "RE", 1),
        (24, 5, 72, 40, True, "RE", 2), (40, 5, 120, 40, True, "RE", 1), (40, 5, 120, 40, True, "RE", 1),
        (40, 3, 240, 80, False, "HS", 2), (80, 3, 200, 80, False, "HS", 1), (80, 3, 184, 80, False, "HS", 1),
        (80, 3, 184, 80, False, "HS", 1), (80, 3, 480, 112, True, "HS", 1), (112, 3, 672, 112, True, "HS", 1),
        (112, 5, 672, 160, True, "HS", 2), (160, 5, 960, 160, True, "HS", 1), (160, 5, 960, 160, True, "HS", 1),
    ], 1280),
    "mobilenet_v3_small": ([
        (16, 3, 16, 16, True, "RE", 2), (16, 3, 72, 24, False, "RE", 2), (24, 3, 88, 24, False, "RE", 1),
        (24, 5, 96, 40, True, "HS", 2), (40, 5, 240, 40, True, "HS", 1), (40, 5, 240, 40, True, "HS", 1),
        (40, 5, 120, 48, True, "HS", 1), (48, 5, 144, 48, True, "HS", 1), (48, 5, 288, 96, True, "HS", 2),
        (96, 5, 576, 96, True, "HS", 1), (96, 5, 576, 96, True, "HS", 1),
    ], 1024),
}
V3_BN = batchnorm(eps=0.001, momentum=0.01)


class InvertedResidualV3(nn.Module):
    def __init__(self, cin, kernel, expanded, cout, se, act, stride):
        super().__init__()
        act = nn.Hardswish if act == "HS" else nn.ReLU
        self.use_res_connect = stride == 1 and cin == cout
        layers = []
        if expanded != cin:
            layers.append(ConvNormAct(cin, expanded, 1, norm=V3_BN, act=act))
        layers.append(ConvNormAct(expanded, expanded, kernel, stride, groups=expanded, norm=V3_BN, act=act))
        if se:
            layers.append(SqueezeExcitation(expanded, make_divisible(expanded // 4), gate=nn.Hardsigmoid))
        layers.append(ConvNormAct(expanded, cout, 1, norm=V3_BN, act=None))
        self.block = nn.Sequential(*layers)
        self.out_channels = cout
        self._is_cn = stride > 1

    def forward(self, x):
        y = self.block(x)
        if self.use_res_connect:
            y = y + x
        return y


class MobileNetV3(nn.Module):
    def __init__(self, arch, num_classes=1000, dropout=0.2):
        super().__init__()
        blocks, last_channel = MOBILENET_V3[arch]
        features = [ConvNormAct(3, blocks[0][0], 3, 2, norm=V3_BN, act=nn.Hardswish)]
        features += [InvertedResidualV3(*b) for b in blocks]
        cin = blocks[-1][3]
        features.append(ConvNormAct(cin, 6 * cin, 1, norm=V3_BN, act=nn.Hardswish))
        self.features = nn.Sequential(*features)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Linear(6 * cin, last_channel), nn.Hardswish(inplace=True),
                                        nn.Dropout(p=dropout, inplace=True), nn.Linear(last_channel, num_classes))
        init_mobile(self)

    def forward(self, x):
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


# ---- EfficientNet ------------------------------------------------------------------------------------
# Stages: (kind, expansion, kernel, stride, input channels, output channels, layers), kind "mb"
# (MBConv: expand 1x1, depthwise, squeeze-excitation, project 1x1) or "fused" (FusedMBConv: one
# full kxk conv in place of the expansion and the depthwise, no squeeze-excitation).
EFFICIENTNET_B_STAGES = [("mb", 1, 3, 1, 32, 16, 1), ("mb", 6, 3, 2, 16, 24, 2), ("mb", 6, 5, 2, 24, 40, 2),
                         ("mb", 6, 3, 2, 40, 80, 3), ("mb", 6, 5, 1, 80, 112, 3), ("mb", 6, 5, 2, 112, 192, 4),
                         ("mb", 6, 3, 1, 192, 320, 1)]
# name: (width multiplier, depth multiplier, dropout, BatchNorm eps, BatchNorm momentum)
EFFICIENTNET_B = {"efficientnet_b0": (1.0, 1.0, 0.2, 1e-5, 0.1), "efficientnet_b1": (1.0, 1.1, 0.2, 1e-5, 0.1),
                  "efficientnet_b2": (1.1, 1.2, 0.3, 1e-5, 0.1), "efficientnet_b3": (1.2, 1.4, 0.3, 1e-5, 0.1),
                  "efficientnet_b4": (1.4, 1.8, 0.4, 1e-5, 0.1), "efficientnet_b5": (1.6, 2.2, 0.4, 1e-3, 0.01),
                  "efficientnet_b6": (1.8, 2.6, 0.5, 1e-3, 0.01), "efficientnet_b7": (2.0, 3.1, 0.5, 1e-3, 0.01)}
# name: (stages, dropout); BatchNorm eps 1e-3, last conv 1280 channels.
EFFICIENTNET_V2 = {
    "efficientnet_v2_s": ([("fused", 1, 3, 1, 24, 24, 2), ("fused", 4, 3, 2, 24, 48, 4), ("fused", 4, 3, 2, 48, 64, 4),
                           ("mb", 4, 3, 2, 64, 128, 6), ("mb", 6, 3, 1, 128, 160, 9), ("mb", 6, 3, 2, 160, 256, 15)],
                          0.2),
    "efficientnet_v2_m": ([("fused", 1, 3, 1, 24, 24, 3), ("fused", 4, 3, 2, 24, 48, 5), ("fused", 4, 3, 2, 48, 80, 5),
                           ("mb", 4, 3, 2, 80, 160, 7), ("mb", 6, 3, 1, 160, 176, 14), ("mb", 6, 3, 2, 176, 304, 18),
                           ("mb", 6, 3, 1, 304, 512, 5)], 0.3),
    "efficientnet_v2_l": ([("fused", 1, 3, 1, 32, 32, 4), ("fused", 4, 3, 2, 32, 64, 7), ("fused", 4, 3, 2, 64, 96, 7),
                           ("mb", 4, 3, 2, 96, 192, 10), ("mb", 6, 3, 1, 192, 224, 19), ("mb", 6, 3, 2, 224, 384, 25),
                           ("mb", 6, 3, 1, 384, 640, 7)], 0.4),
}
STOCHASTIC_DEPTH = 0.2  # the last block's drop probability (linear in the block index from 0)


class _EfficientNetBlock(nn.Module):
    """MBConv's and FusedMBConv's forward: the block, plus the input through stochastic depth
    where the shapes allow (self.block, self.use_res_connect, self.stochastic_depth set by them)."""

    def forward(self, x):
        y = self.block(x)
        if self.use_res_connect:
            y = self.stochastic_depth(y) + x
        return y


class MBConv(_EfficientNetBlock):
    def __init__(self, expand, kernel, stride, cin, cout, drop, norm):
        super().__init__()
        self.use_res_connect = stride == 1 and cin == cout
        hidden = make_divisible(cin * expand)
        layers = []
        if hidden != cin:
            layers.append(ConvNormAct(cin, hidden, 1, norm=norm, act=nn.SiLU))
        layers.append(ConvNormAct(hidden, hidden, kernel, stride, groups=hidden, norm=norm, act=nn.SiLU))
        layers.append(SqueezeExcitation(hidden, max(1, cin // 4), act=lambda: nn.SiLU(inplace=True)))
        layers.append(ConvNormAct(hidden, cout, 1, norm=norm, act=None))
        self.block = nn.Sequential(*layers)
        self.stochastic_depth = StochasticDepth(drop)
        self.out_channels = cout


class FusedMBConv(_EfficientNetBlock):
    def __init__(self, expand, kernel, stride, cin, cout, drop, norm):
        super().__init__()
        self.use_res_connect = stride == 1 and cin == cout
        hidden = make_divisible(cin * expand)
        if hidden != cin:
            layers = [ConvNormAct(cin, hidden, kernel, stride, norm=norm, act=nn.SiLU),
                      ConvNormAct(hidden, cout, 1, norm=norm, act=None)]
        else:
            layers = [ConvNormAct(cin, cout, kernel, stride, norm=norm, act=nn.SiLU)]
        self.block = nn.Sequential(*layers)
        self.stochastic_depth = StochasticDepth(drop)
        self.out_channels = cout


class EfficientNet(nn.Module):
    def __init__(self, stages, dropout, norm, last_channel=None, num_classes=1000):
        super().__init__()
        total = sum(s[-1] for s in stages)
        features = [ConvNormAct(3, stages[0][4], 3, 2, norm=norm, act=nn.SiLU)]
        k = 0
        for kind, expand, kernel, stride, cin, cout, n in stages:
            blocks = []
            for i in range(n):
                block = MBConv if kind == "mb" else FusedMBConv
                blocks.append(block(expand, kernel, stride if i == 0 else 1, cin if i == 0 else cout, cout,
                                    STOCHASTIC_DEPTH * k / total, norm))
                k += 1
            features.append(nn.Sequential(*blocks))
        cin = stages[-1][5]
        cout = last_channel if last_channel is not None else 4 * cin
        features.append(ConvNormAct(cin, cout, 1, norm=norm, act=nn.SiLU))
        self.features = nn.Sequential(*features)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(p=dropout, inplace=True), nn.Linear(cout, num_classes))
        init_mobile(self, linear="uniform")

    def forward(self, x):
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


def efficientnet(arch, num_classes=1000):
    if arch in EFFICIENTNET_B:
        wm, dm, dropout, eps, momentum = EFFICIENTNET_B[arch]
        stages = [(kind, e, k, s, make_divisible(cin * wm), make_divisible(cout * wm), int(math.ceil(n * dm)))
                  for kind, e, k, s, cin, cout, n in EFFICIENTNET_B_STAGES]
        return EfficientNet(stages, dropout, batchnorm(eps, momentum), None, num_classes)
    stages, dropout = EFFICIENTNET_V2[arch]
    return EfficientNet(stages, dropout, batchnorm(1e-3), 1280, num_classes)


# ---- ConvNeXt -------------------------------------------------------------------------------------------
# name: (channels per stage, blocks per stage)
CONVNEXT = {"convnext_tiny": ((96, 192, 384, 768), (3, 3, 9, 3)),
            "convnext_small": ((96, 192, 384, 768), (3, 3, 27, 3)),
            "convnext_base": ((128, 256, 512, 1024), (3, 3, 27, 3)),
            "convnext_large": ((192, 384, 768, 1536), (3, 3, 27, 3))}
CONVNEXT_DROP = {"convnext_tiny": 0.1, "convnext_small": 0.4, "convnext_base": 0.5, "convnext_large": 0.5}


class CNBlock(nn.Module):
    """x + layer_scale * (7x7 depthwise, LayerNorm, Linear 4x, GELU, Linear back)(x)."""

    def __init__(self, dim, drop, layer_scale=1e-6):
        super().__init__()
        self.block = nn.Sequential(nn.Conv2d(dim, dim, 7, padding=3, groups=dim, bias=True), Permute([0, 2, 3, 1]),
                                   nn.LayerNorm(dim, eps=1e-6), nn.Linear(dim, 4 * dim, bias=True), nn.GELU(),
                                   nn.Linear(4 * dim, dim, bias=True), Permute([0, 3, 1, 2]))
        self.layer_scale = nn.Parameter(torch.ones(dim, 1, 1) * layer_scale)
        self.stochastic_depth = StochasticDepth(drop)

    def forward(self, x):
        return self.stochastic_depth(self.layer_scale * self.block(x)) + x


class ConvNeXt(nn.Module):
    def __init__(self, arch, num_classes=1000):
        super().__init__()
        dims, depths = CONVNEXT[arch]
        ln = lambda c: LayerNorm2d(c, eps=1e-6)  # noqa: E731
        features = [ConvNormAct(3, dims[0], 4, 4, norm=ln, act=None, padding=0, bias=True)]
        total, k = sum(depths), 0
        for i, (dim, depth) in enumerate(zip(dims, depths)):
            blocks = []
            for _ in range(depth):
                blocks.append(CNBlock(dim, CONVNEXT_DROP[arch] * k / (total - 1)))
                k += 1
            features.append(nn.Sequential(*blocks))
            if i + 1 < len(dims):
                features.append(nn.Sequential(ln(dim), nn.Conv2d(dim, dims[i + 1], 2, 2)))
        self.features = nn.Sequential(*features)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(ln(dims[-1]), nn.Flatten(1), nn.Linear(dims[-1], num_classes))
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, x):
        return self.classifier(self.avgpool(self.features(x)))


# ---- by name ----------------------------------------------------------------------------------------------
FAMILIES = {"mobilenet_v2": ["mobilenet_v2"],
            "mobilenet_v3": list(MOBILENET_V3),
            "efficientnet": list(EFFICIENTNET_B) + list(EFFICIENTNET_V2),
            "convnext": list(CONVNEXT)}
ARCHS = [a for names in FAMILIES.values() for a in names]


def family(arch):
    return next(f for f, names in FAMILIES.items() if arch in names)


def build(arch, num_classes=1000):
    """The torchvision-shaped model of that name (eval mode is the caller's)."""
    if arch == "mobilenet_v2":
        return MobileNetV2(num_classes)
    if arch in MOBILENET_V3:
        return MobileNetV3(arch, num_classes)
    if arch in EFFICIENTNET_B or arch in EFFICIENTNET_V2:
        return efficientnet(arch, num_classes)
    if arch in CONVNEXT:
        return ConvNeXt(arch, num_classes)
    raise ValueError(f"tv_free_models: unknown architecture {arch!r} (know {', '.join(ARCHS)})")


# ---- against torchvision ------------------------------------------------------------------------------------
_ATTRS = ("in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation", "groups", "num_features",
          "eps", "momentum", "normalized_shape", "in_features", "out_features", "inplace", "p", "dims",
          "output_size", "approximate", "start_dim", "min_val", "max_val")


def describe(model):
    """[(name, class name, {attribute: value}, has bias)] of every module without children, in
    module order."""
    out = []
    for name, m in model.named_modules():
        if any(True for _ in m.children()):
            continue
        attrs = {a: getattr(m, a) for a in _ATTRS if hasattr(m, a) and not callable(getattr(m, a))}
        attrs = {a: (list(v) if isinstance(v, (tuple, list)) else v) for a, v in attrs.items()}
        out.append((name, type(m).__name__, attrs, getattr(m, "bias", None) is not None))
    return out


class no_init:
    """Within it, torch.nn.init's random initialisers leave tensors as they are (modules keep
    their uninitialised storage): building full-size models only to compare their structure
    then takes milliseconds instead of seconds."""
    NAMES = ("uniform_", "normal_", "trunc_normal_", "kaiming_uniform_", "kaiming_normal_",
             "xavier_uniform_", "xavier_normal_", "ones_", "zeros_", "constant_")

    def __enter__(self):
        self.saved = {n: getattr(nn.init, n) for n in self.NAMES if hasattr(nn.init, n)}
        for n in self.saved:
            setattr(nn.init, n, lambda t, *a, **k: t)
        return self

    def __exit__(self, *exc):
        for n, f in self.saved.items():
            setattr(nn.init, n, f)


def compare_structure(arch, tv):
    """Problems (empty: none) of this builder's model against torchvision's (tv: torchvision.models):
    module names, classes and attributes of every leaf module in order, and state_dict names and
    shapes."""
    with no_init():
        want, have = getattr(tv, arch)(weights=None), build(arch)
    problems = []
    dw, dh = describe(want), describe(have)
    if len(dw) != len(dh):
        problems.append(f"{arch}: {len(dh)} leaf modules, torchvision has {len(dw)}")
    for a, b in zip(dw, dh):
        if a != b:
            problems.append(f"{arch}: leaf module {b[0]} {b[1]} {b[2]} bias={b[3]}, "
                            f"torchvision: {a[0]} {a[1]} {a[2]} bias={a[3]}")
            break
    sw = {k: tuple(v.shape) for k, v in want.state_dict().items()}
    sh = {k: tuple(v.shape) for k, v in have.state_dict().items()}
    if list(sw) != list(sh) or sw != sh:
        missing, extra = sorted(set(sw) - set(sh))[:3], sorted(set(sh) - set(sw))[:3]
        shapes = [k for k in sw if k in sh and sw[k] != sh[k]][:3]
        problems.append(f"{arch}: state_dict missing {missing} unexpected {extra} shapes {shapes}"
                        + ("" if missing or extra or shapes else " (order differs)"))
    return problems


def randomise_all(model, seed):
    """Every parameter and floating buffer drawn afresh from a seeded generator (a model built
    within no_init has uninitialised storage): weights N(0, 1/fan_in), norm scales, layer scales
    and running variances in [0.5, 1.5), biases and running means N(0, 0.1^2)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in list(model.named_parameters()) + list(model.named_buffers()):
            if not t.is_floating_point():
                continue
            leaf = name.rsplit(".", 1)[-1]
            if t.dim() > 1 and leaf != "layer_scale":
                t.copy_(torch.randn(t.shape, generator=gen) / math.sqrt(t[0].numel()))
            elif leaf in ("bias", "running_mean"):
                t.copy_(0.1 * torch.randn(t.shape, generator=gen))
            else:  # norm weights, running_var, layer_scale
                t.copy_(0.5 + torch.rand(t.shape, generator=gen))


def compare_logits(arch, tv, size=32, batch=2, seed=0, perturb=None):
    """The largest |difference| / max |logit| of torchvision's model with random weights
    (randomise_all) and this builder's model with torchvision's state_dict loaded, in float64 on
    a random batch; and the problems (empty: none). perturb: a function applied to this
    builder's model after loading (a control: the comparison must then fail)."""
    with no_init():
        want = getattr(tv, arch)(weights=None).double().eval()
        have = build(arch).double().eval()
    randomise_all(want, seed)
    have.load_state_dict(want.state_dict(), strict=True)
    if perturb is not None:
        perturb(have)
    x = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(seed + 1), dtype=torch.float64)
    with torch.no_grad():
        a, b = want(x), have(x)
    rel = float((a - b).abs().max() / a.abs().max().clamp_min(1e-300))
    # float64, the same operations in the same order: anything but rounding-level agreement is a bug
    # (and so is a non-finite or constant output, which would compare equal for any model).
    ok = bool(torch.isfinite(a).all()) and float(a.std()) > 0 and rel <= 1e-12
    return rel, ([] if ok else [f"{arch}: logits differ from torchvision's by {rel:.2e} (max rel; "
                                f"finite {bool(torch.isfinite(a).all())}, std {float(a.std()):.2e})"])


def main():
    """python3 tests/gpu/tv_free_models.py [NAME ...]: every model (or those named) against
    torchvision: structure, and float64 logits with torchvision's random state dict (32x32)."""
    import sys
    import time
    import torchvision
    archs = sys.argv[1:] or ARCHS
    bad = 0
    for arch in archs:
        t0 = time.time()
        problems = compare_structure(arch, torchvision.models)
        rel, more = compare_logits(arch, torchvision.models)
        problems += more
        bad += bool(problems)
        print(f"{arch}: structure and state dict {'ok' if not problems else problems}, logits max rel {rel:.1e} "
              f"({time.time() - t0:.1f} s)", flush=True)
    print(f"tv_free_models: {len(archs) - bad} of {len(archs)} equal to torchvision's")
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
