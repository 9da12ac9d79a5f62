"""A PyTorch oracle of ParchGrad, written from docs/parchgrad-method.md (sections 1-6).

It runs the method the way the reference does: forward hooks on torchvision's nn.Conv2d record
gap[n, c] = mean_hw relu(raw conv output) and pick the important channels H of every sample;
a tensor hook on the conv output then edits dL/d(conv output) sample by sample before the conv's
own backward consumes it. Everything a test may want to compare is recorded per forward pass,
hooked layer and sample: H, M, N, beta, and how far each p-value was from the cut-off.

Stats are a dict {conv name: {"mean", "std", "shapiro_p": [C], "cls_p": [C, K]}} of numpy arrays
(what a statistics file holds, read with `read_stats`).
"""
import json
import math
from dataclasses import dataclass
from typing import Optional

import numpy as np
import scipy.stats
import torch
import torch.nn.functional as F
from torchvision.models.resnet import ResNet

EPS = 1e-7  # added to both variances M and N


# ----------------------------------------------------------------------------------------------
# Settings


@dataclass
class Config:
    mode: str = "off"                  # "off" | "cls" | "ins"
    alpha: Optional[float] = None      # fixed significance level ...
    quantile: Optional[float] = None   # ... or the per-sample quantile (default 0.1)
    shapiro_threshold: float = 0.05
    gamma: float = math.inf
    variance_conservation: bool = True
    exact_variance: bool = False
    layers: str = "ratio:0.5"

    def effective_quantile(self):
        if self.alpha is not None:
            return None
        return 0.1 if self.quantile is None else self.quantile


# ----------------------------------------------------------------------------------------------
# Which convolutions are hooked


def conv_layers(model):
    """Every nn.Conv2d of the model as (name, module), in module-registration order."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, torch.nn.Conv2d)]


def hooked_layers(model, spec):
    """Names of the hooked convs for "ratio:R", "layer34" or "name1,name2,...", in
    module-registration order."""
    names = [n for n, _ in conv_layers(model)]
    if spec.startswith("ratio:"):
        r = float(spec[len("ratio:"):])
        k = int(r * len(names))
        return names[len(names) - k:] if k > 0 else []
    if spec == "layer34":
        if not isinstance(model, ResNet):
            raise ValueError("layer34 is a ResNet preset")
        return [n for n in names
                if n.split(".")[0] in ("layer3", "layer4") and len(n.split(".")) == 3
                and n.split(".")[2] in ("conv1", "conv2", "conv3")]
    wanted = [s.strip() for s in spec.split(",") if s.strip()]
    missing = [w for w in wanted if w not in names]
    if missing:
        raise ValueError(f"no such conv layer(s): {missing}")
    return [n for n in names if n in wanted]


# ----------------------------------------------------------------------------------------------
# Channel selection (section 4)


def ins_pvalues(gap, st):
    """p = 1 - Phi((gap - mean) / std) for one sample's gap [C] (float64)."""
    z = (np.asarray(gap, np.float64) - st["mean"].astype(np.float64)) / st["std"].astype(np.float64)
    return scipy.stats.norm.sf(z)


def select(mode, st, target, gap=None, alpha=None, quantile=None, shapiro_threshold=0.05):
    """Channel selection for one sample at one conv.

    Returns (H as a bool array [C], the p-values [C], the alpha used, margin) where margin is the
    smallest distance of any p-value to the cut-off, leaving out the channel whose p-value *is*
    the cut-off under a quantile, and of any shapiro_p to its threshold: an implementation that
    computes the p-values slightly differently takes the same decisions as long as the margin
    exceeds its error.
    """
    if mode == "cls":
        p = st["cls_p"][:, int(target)].astype(np.float64)
    elif mode == "ins":
        p = ins_pvalues(gap, st)
    else:
        raise ValueError(mode)
    C = p.shape[0]
    skip = None
    if alpha is None:
        k = max(1, int(C * quantile))
        order = np.argsort(p, kind="stable")
        skip = int(order[k - 1])
        alpha = float(p[skip])
    below = p <= alpha if mode == "cls" else p < alpha
    shp = st["shapiro_p"].astype(np.float64)
    H = below & (shp < shapiro_threshold)
    dist = np.abs(p - alpha)
    if skip is not None:
        dist[skip] = np.inf
    margin = float(min(dist.min(), np.abs(shp - shapiro_threshold).min()))
    return H, p, alpha, margin


# ----------------------------------------------------------------------------------------------
# The gradient edit (section 5)


def _uvar(s):
    """Unbiased variance over all spatial positions (float64)."""
    return float(s.var(unbiased=True)) if s.numel() > 1 else 0.0


def edit_sample(g, H, cfg):
    """Edits one sample's raw conv output gradient g [C, h, w] given the bool mask H [C].

    Returns (g', info) with info = {"M", "N", "beta", "changed"}; beta is the variance
    conservation factor (for exact_variance, the final rescale factor).
    """
    Hf = torch.as_tensor(np.asarray(H, bool)).to(g.dtype)
    S_H = torch.tensordot(Hf, g, dims=1).double()  # sum over the channels of H
    S_L = torch.tensordot(1 - Hf, g, dims=1).double()
    M = _uvar(S_H) + EPS
    N = _uvar(S_L) + EPS
    info = {"M": M, "N": N, "beta": 1.0, "changed": False}
    nH = int(Hf.sum())
    if nH == 0 or nH == Hf.numel():  # H or L empty: unchanged
        return g, info
    if math.isinf(cfg.gamma):
        beta = math.sqrt((M + N) / M) if cfg.variance_conservation else 1.0
        h_scale, l_scale = beta, 0.0
    else:
        gh = cfg.gamma * math.sqrt(N / M)
        if cfg.exact_variance:
            before = _uvar(S_H + S_L)
            after = _uvar(gh * S_H + S_L)
            beta = math.sqrt(before / after)
        elif cfg.variance_conservation:
            beta = math.sqrt((M + N) / (M * gh * gh + N))
        else:
            beta = 1.0
        h_scale, l_scale = gh * beta, beta
    info.update(beta=beta, changed=True)
    scale = Hf * h_scale + (1 - Hf) * l_scale  # one factor per channel
    return g * scale.view(-1, 1, 1), info


# ----------------------------------------------------------------------------------------------
# Hooks


class ParchGrad:
    """Installs the forward/backward hooks on the hooked convs of `model` (context manager).

    Before each forward, set `targets` (one class per sample). Each forward appends one record to
    `records`: {conv name: [per-sample dict(H=sorted list, p, alpha, margin, M, N, beta, changed)]},
    M/N/beta filled in when the gradient passes the conv.
    """

    def __init__(self, model, stats, cfg):
        self.model, self.stats, self.cfg = model, stats, cfg
        self.layers = hooked_layers(model, cfg.layers) if cfg.mode != "off" else []
        self.records = []
        self.targets = None
        self.handles = []

    def __enter__(self):
        mods = dict(conv_layers(self.model))
        for name in self.layers:
            if name not in self.stats:
                raise KeyError(f"no statistics for layer {name}")
            self.handles.append(mods[name].register_forward_hook(self._forward_hook(name)))
        return self

    def __exit__(self, *exc):
        for h in self.handles:
            h.remove()
        self.handles = []

    def new_pass(self):
        self.records.append({})

    def _forward_hook(self, name):
        cfg, st = self.cfg, self.stats[name]

        def hook(mod, inputs, out):
            gap = F.relu(out.detach()).mean(dim=(2, 3))  # raw conv output, before BN
            rec = []
            for n in range(out.shape[0]):
                H, p, alpha, margin = select(cfg.mode, st, self.targets[n], gap[n].numpy(),
                                             alpha=cfg.alpha, quantile=cfg.effective_quantile(),
                                             shapiro_threshold=cfg.shapiro_threshold)
                rec.append({"H": np.flatnonzero(H).tolist(), "mask": H, "p": p,
                            "alpha": alpha, "margin": margin})
            self.records[-1][name] = rec
            if out.requires_grad:
                def edit(grad):
                    outs = []
                    for n in range(grad.shape[0]):  # one sample at a time, as the reference
                        gn, info = edit_sample(grad[n], rec[n]["mask"], cfg)
                        rec[n].update(info)
                        outs.append(gn)
                    return torch.stack(outs)
                out.register_hook(edit)
        return hook


def prepare(model):
    """No in-place ReLUs (a conv output edited in place would confuse its tensor hook)."""
    for m in model.modules():
        if isinstance(m, torch.nn.ReLU):
            m.inplace = False
    return model


# ----------------------------------------------------------------------------------------------
# Attribution methods (section 6)


def _seed(logits, targets):
    prob = torch.softmax(logits.detach(), dim=1)
    idx = torch.arange(logits.shape[0])
    t = torch.as_tensor(list(targets), dtype=torch.long)
    seed = torch.zeros_like(logits)
    seed[idx, t] = prob[idx, t]
    return seed


def _gradient(model, pg, x, targets):
    """dL/dx with the probability seed; one forward (and one record) under the hooks."""
    x = x.detach().clone().requires_grad_(True)
    if pg is not None:
        pg.targets = list(targets)
        pg.new_pass()
    logits = model(x)
    (g,) = torch.autograd.grad(logits, x, grad_outputs=_seed(logits, targets))
    return g.detach()


def _gradcam_layer(model, name=None):
    """Grad-CAM's target module: `name` (a module name, as pytorch-grad-cam users pick
    target_layers, e.g. "layer3", "layer4.0.conv2", "features.33"), else the default: ResNet's
    layer4, VGG's last ReLU."""
    if name:
        return dict(model.named_modules())[name]
    if isinstance(model, ResNet):
        return model.layer4
    relus = [m for m in model.features if isinstance(m, torch.nn.ReLU)]
    return relus[-1]


def attribute(model, stats, cfg, x, targets, method="grad", ig_steps=25, sg_noise=None,
              ig_zero_grad=None, gradcam_layer=None):
    """Maps [N, H, W] (numpy, the model's dtype) and the records of the forward passes.

    x: [N, 3, H, W] normalised input; targets: one class per sample; sg_noise: [M, N, 3, H, W]
    (already scaled) for smoothgrad. ig_zero_grad: use this input gradient at the zero baseline
    instead of computing it (for a comparison where the gradient at a constant input is not
    well defined in floating point: max-pool windows of exactly equal values). gradcam_layer: a
    module name for Grad-CAM (default: _gradcam_layer's). Grad-CAM takes the gradient that
    reaches that module's output, so only the ParchGrad edits of convs above it change the map;
    at a hooked conv's own output the gradient is the one before that conv's edit (the tensor
    hook edits what flows on into the conv; autograd.grad returns the gradient of the output).
    """
    prepare(model)
    dtype = next(model.parameters()).dtype  # float32 as the reference; float64 for diagnosis
    x = torch.as_tensor(x).to(dtype)
    with torch.enable_grad(), ParchGrad(model, stats or {}, cfg) as pg:
        if method == "grad":
            m = _gradient(model, pg, x, targets).abs().mean(1)
        elif method == "inputgrad":
            m = (x * _gradient(model, pg, x, targets)).abs().mean(1)
        elif method == "ig":
            M = int(ig_steps)
            grads = [_gradient(model, pg, x * (i / M), targets) for i in range(M + 1)]
            if ig_zero_grad is not None:
                grads[0] = torch.as_tensor(np.asarray(ig_zero_grad)).to(dtype)
            total = torch.stack(grads).double().sum(0)
            avg = (total - (grads[0].double() + grads[M].double()) / 2) / M
            m = (x.double() * avg).mean(1).abs().to(dtype)
        elif method == "smoothgrad":
            noise = torch.as_tensor(np.asarray(sg_noise)).to(dtype)
            acc = torch.zeros_like(x, dtype=torch.float64)
            for k in range(noise.shape[0]):
                acc += _gradient(model, pg, x + noise[k], targets).abs().double()
            m = (acc / noise.shape[0]).mean(1).to(dtype)
        elif method == "gradcam":
            layer = _gradcam_layer(model, gradcam_layer)
            acts = []
            h = layer.register_forward_hook(lambda mod, i, o: acts.append(o))
            try:
                xx = x.detach().clone().requires_grad_(True)
                pg.targets = list(targets)
                pg.new_pass()
                logits = model(xx)
                A = acts[-1]
                (dA,) = torch.autograd.grad(logits, A, grad_outputs=_seed(logits, targets))
            finally:
                h.remove()
            w = dA.mean(dim=(2, 3), keepdim=True)
            cam = F.relu((w * A.detach()).sum(1, keepdim=True))
            m = F.interpolate(cam, size=x.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
        else:
            raise ValueError(method)
    return m.detach().numpy().astype(np.float32 if dtype == torch.float32 else np.float64), \
        pg.records, pg.layers


def masks_of(records, layers, sample):
    """The --explain-masks view of one forward pass for one sample (oracle side)."""
    out = []
    for name in layers:
        r = records[name][sample]
        out.append({"name": name, "kept": len(r["H"]), "channels": int(r["mask"].shape[0]),
                    "H": r["H"], "M": r.get("M"), "N": r.get("N"), "beta": r.get("beta"),
                    "changed": r.get("changed")})
    return out


def min_margin(records):
    """The smallest selection margin over all passes, layers and samples."""
    m = math.inf
    for rec in records:
        for per in rec.values():
            for r in per:
                m = min(m, r["margin"])
    return m


# ----------------------------------------------------------------------------------------------
# Statistics files


def forward_gaps(model, x, batch=8):
    """gap [P, C] (float64) of every conv for the inputs x [P, 3, H, W], in one no-grad pass."""
    out = {}
    hooks = []
    for name, mod in conv_layers(model):
        def hook(m, i, o, name=name):
            out.setdefault(name, []).append(F.relu(o.detach()).mean(dim=(2, 3)).double())
        hooks.append(mod.register_forward_hook(hook))
    try:
        with torch.no_grad():
            for b in range(0, x.shape[0], batch):
                model(torch.as_tensor(x[b:b + batch], dtype=torch.float32))
    finally:
        for h in hooks:
            h.remove()
    return {k: torch.cat(v).numpy() for k, v in out.items()}


def _quantile_conflicts(p, quantiles, margin):
    """Channels whose p-value sits within margin of a neighbour at a quantile cut ([C] p)."""
    C = p.shape[0]
    order = np.argsort(p, kind="stable")
    sp = p[order]
    bad = set()
    for q in quantiles:
        k = max(1, int(C * q))
        for a, b in ((k - 2, k - 1), (k - 1, k)):
            if 0 <= a and b < C and sp[b] - sp[a] <= margin:
                bad.update((int(order[a]), int(order[b])))
    return bad


def random_stats(model, num_classes, probes, seed, cls_alphas=(0.05,), ins_alphas=(0.2,),
                 quantiles=(0.1, 0.05), shapiro_thresholds=(0.05, 0.5), margin=2e-4,
                 ins_shift=0.4):
    """Statistics for every conv of the model, random but shaped for testing.

    shapiro_p: mostly below 0.05 (as on real data), some above. cls_p: U(0,1)^2 per class (about a
    fifth below 0.05). mean/std: from the gap of the probe inputs (every input the tests will
    forward), so the ins p-values of those inputs spread over (0, 1) and each layer selects some
    channels but not all. No p-value lies within `margin` of a threshold used by the tests or of
    its neighbour at a quantile cut (values are redrawn until so).
    """
    rng = np.random.default_rng(seed)
    gaps = forward_gaps(model, probes)
    stats = {}
    for name, mod in conv_layers(model):
        C = mod.out_channels
        G = gaps[name]  # [P, C]
        # shapiro_p
        shp = np.where(rng.random(C) < 0.8, np.exp(rng.uniform(np.log(1e-6), np.log(0.045), C)),
                       rng.uniform(0.06, 1.0, C)).astype(np.float32)
        for _ in range(1000):
            bad = np.zeros(C, bool)
            for t in shapiro_thresholds:
                bad |= np.abs(shp.astype(np.float64) - t) <= margin
            if not bad.any():
                break
            shp[bad] = rng.uniform(0.06, 1.0, int(bad.sum())).astype(np.float32)
        # cls_p, column by column
        cls = (rng.random((C, num_classes)) ** 2).astype(np.float32)
        for k in range(num_classes):
            col = cls[:, k]
            for _ in range(1000):
                p = col.astype(np.float64)
                bad = set(np.flatnonzero(np.min(np.abs(p[:, None] - np.array(cls_alphas)[None]),
                                                axis=1) <= margin).tolist())
                bad |= _quantile_conflicts(p, quantiles, margin)
                if not bad:
                    break
                idx = np.array(sorted(bad))
                col[idx] = (rng.random(idx.size) ** 2).astype(np.float32)
        # mean/std from the probe gaps
        mu = G.mean(0)
        sd = G.std(0, ddof=1) if G.shape[0] > 1 else np.zeros(C)
        floor = 0.05 * np.abs(G).mean(0) + 1e-6
        std = (np.maximum(sd, floor) * rng.uniform(1.0, 2.0, C)).astype(np.float32)
        u = rng.normal(ins_shift, 0.8, C)
        mean = (mu + std * u).astype(np.float32)
        for _ in range(2000):
            z = (G - mean.astype(np.float64)) / std.astype(np.float64)
            P = scipy.stats.norm.sf(z)  # [P, C]
            bad = set()
            for a in ins_alphas:
                bad |= set(np.flatnonzero((np.abs(P - a) <= margin).any(0)).tolist())
            for row in P:
                bad |= _quantile_conflicts(row, quantiles, margin)
            if not bad:
                break
            idx = np.array(sorted(bad))
            mean[idx] = (mu[idx] + std[idx] * rng.normal(ins_shift, 0.8, idx.size)).astype(
                np.float32)
        else:
            raise RuntimeError(f"could not separate the ins p-values of {name}")
        stats[name] = {"mean": mean, "std": std, "shapiro_p": shp, "cls_p": cls}
    return stats


def write_stats(stats, path, arch, num_classes, images_per_class=None, write=None,
                extra_metadata=None):
    """Writes the statistics as safetensors (`write` = a safetensors writer(tensors, path,
    metadata))."""
    if images_per_class is None:
        images_per_class = [50] * num_classes
    tensors = {}
    for name, st in stats.items():
        for key in ("mean", "std", "shapiro_p", "cls_p"):
            tensors[f"{name}.{key}"] = np.ascontiguousarray(st[key], dtype=np.float32)
    meta = {"model": arch, "test": "student", "num_classes": str(num_classes),
            "images_per_class": json.dumps([int(v) for v in images_per_class])}
    meta.update(extra_metadata or {})
    write(tensors, path, meta)
    return path


def read_stats(tensors):
    """{name.key: array} -> {name: {key: array}}."""
    out = {}
    for full, arr in tensors.items():
        name, key = full.rsplit(".", 1)
        out.setdefault(name, {})[key] = np.asarray(arr)
    return out
