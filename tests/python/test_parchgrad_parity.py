"""ParchGrad in `parchgrad saliency` against the PyTorch oracle in parchgrad_ref.py.

Models: randomly initialised torchvision resnet18 (224x224), resnet50 (128x128) and vgg16_bn
(64x64; its 528 MB of weights are loaded by every run, and max-pool near-ties grow with the
size), 3 samples with different targets. Every conv is shrunk by a random factor and BatchNorm
running statistics are then set from the data (activations stay O(1); raw conv gradients grow,
so M and N range from the 1e-7 floor to well above it), and ReLU inputs are kept a few
standard deviations from zero (few float32-ambiguous units).

Statistics files are random (parchgrad_ref.random_stats): the ins p-values are built from the gap
of every input the tests forward, and no p-value is within 2e-4 of a cut-off, so float32
differences cannot flip a selection. Every case checks the oracle's own margin (> 1e-4).

Compared: maps (relative error of each sample < 1e-4), and with --explain-masks (grad and
inputgrad) the hooked layers, H of every layer and sample, and M, N, beta (relative error < 1e-4)
where the sample was edited. Where a ReLU or max-pool decision lies within float32 rounding,
PyTorch's float32 result may take the other side: a sample that fails against the float32
oracle is compared with a float64 run of the oracle, and passes if it matches that one.
The oracle's own identities (test_oracle_*) run without the binary. `pytest -s` prints the
errors of every case; a JSON summary goes to $PARCHGRAD_SCRATCH/parchgrad_parity_summary.json.
"""
import json
import math
import os
import shutil
import subprocess
import time
from collections import namedtuple

import numpy as np
import pytest
import torch
from torchvision.models.resnet import ResNet

import parchgrad_ref as ref
import parity_common as pc

torch.set_num_threads(2)

BIN = pc.binary_path()
if os.environ.get("PARCHGRAD_BIN") and not os.path.exists(BIN):
    raise RuntimeError(f"PARCHGRAD_BIN={BIN} does not exist")
needs_bin = pytest.mark.skipif(BIN is None, reason="parchgrad binary not built")

SCRATCH = os.path.join(pc.scratch_dir(), "parchgrad_parity")
os.makedirs(SCRATCH, exist_ok=True)
TOL = 1e-4

# arch: (number of classes, input size)
MODELS = {"resnet18": (10, 224), "resnet50": (12, 128), "vgg16_bn": (8, 64)}
# Seed tags: among a few draws, the one whose probes (x, integrated-gradients points, noisy
# copies) show no float32 ReLU/max-pool decision differing from float64 in PyTorch (vgg16_bn:
# one, at an integrated-gradients point; every draw had one or more). A flip left is handled by
# the float64 fallback of the comparison.
SEED_TAGS = {"resnet18": "pg3", "resnet50": "parchgrad", "vgg16_bn": "parchgrad"}
NAMES = {  # explicit --layers lists (deliberately not in registration order)
    "resnet18": "layer4.0.downsample.0,layer2.1.conv1,layer4.1.conv2",
    "resnet50": "layer4.2.conv3,layer3.1.conv2,layer4.0.downsample.0",
    "vgg16_bn": "features.40,features.10,features.27",
}
CLS_ALPHA, INS_ALPHA = 0.05, 0.2
IG_STEPS, SG_SAMPLES = 4, 3
BATCH = 3
RELU_K = 3.5         # ReLU inputs sit this many standard deviations from zero ...
RELU_K_LAYER4 = 2.0  # ... except in ResNet's layer4, whose gradient would otherwise be constant
                     # over space (avgpool feeds every position alike; only ReLU masks vary it)
SG_SIGMA = 0.05      # smoothgrad noise (fixed, passed to the engine) relative to the input range


# ----------------------------------------------------------------------------------------------
# Test models


def shrink_convs(model, gen, lo=0.02, hi=0.5):
    """Every conv's weight (and bias) times s, log-uniform in [lo, hi]. With BN recalibrated
    after (condition), the function is alike but the raw conv outputs are s times smaller and
    their gradients 1/s times larger: without it the variances M and N of most layers would be
    far below the 1e-7 added to them; with it they spread from about 1e-7 to 1e-2."""
    with torch.no_grad():
        for _, conv in ref.conv_layers(model):
            s = lo * (hi / lo) ** float(torch.rand(1, generator=gen))
            conv.weight.mul_(s)
            if conv.bias is not None:
                conv.bias.mul_(s)


def condition(model, calib, k, seed, guard=3e-4, k_by_prefix=None):
    """BN statistics from the data and ReLU inputs away from zero, for random inputs and for the
    zero input (the first point of integrated gradients), in one forward pass over [calib, zero].

    Every BatchNorm gets running statistics from its input over calib (slightly perturbed), so
    activations stay O(1) through the depth. Every ReLU input channel of a feature map gets its
    producer's bias (the BN that ran last before the ReLU) shifted so that its mean over calib
    sits at +k or -k standard deviations (random sign; VGG's classifier features are left where
    they are); the shift is then nudged by a few hundredths of a standard deviation until every
    value of the zero input is at least guard times the layer's standard deviation away from
    zero. A ReLU whose module name starts with a key of k_by_prefix uses that k instead."""
    names = {m: n for n, m in model.named_modules()}
    gen = torch.Generator().manual_seed(seed)
    state = {}
    n = calib.shape[0]

    def track(mod, inputs, output):
        state["last"] = mod

    def bn_stats(mod, inputs):
        z = inputs[0][:n]
        mu, var = z.mean((0, 2, 3)), z.var((0, 2, 3))
        c = mu.shape[0]
        mod.running_mean.copy_(mu + 0.2 * var.sqrt() * torch.randn(c, generator=gen))
        mod.running_var.copy_(var * (torch.rand(c, generator=gen) * 1.5 + 0.5))

    def shift_input(mod, inputs):
        z = inputs[0]
        kk = next((v for p, v in (k_by_prefix or {}).items() if names[mod].startswith(p)), k)
        shape = (1, -1) + (1,) * (z.dim() - 2)
        zc = z[:n].reshape(n, z.shape[1], -1)
        z0 = z[n:].reshape(z.shape[0] - n, z.shape[1], -1)
        sign = torch.where(torch.rand(z.shape[1], generator=gen) < 0.5, -1.0, 1.0)
        if zc.shape[2] > 1:
            mu = zc.mean(dim=(0, 2))
            sd = zc.std(dim=(0, 2))
            sd = torch.clamp(sd, min=1e-3 * float(sd.mean()) + 1e-30)
            base = sign * kk * sd - mu
        else:  # the classifier's [N, F] (few units): no margin, only the zero-input clearance
            sd = zc.std(dim=(0, 2)) + 1e-30
            base = torch.zeros_like(sd)
        shift = base
        scale = float((zc + shift.view(1, -1, 1)).std())
        for j in range(200):
            clear = (z0 + shift.view(1, -1, 1)).abs().amin(dim=(0, 2)) > guard * scale
            if bool(clear.all()):
                break
            step = 0.01 * sd * sign * ((j // 2 + 1) * (1 if j % 2 == 0 else -1))
            shift = torch.where(clear, shift, base + step)
        else:
            raise RuntimeError("cannot clear the zero input from the ReLU threshold")
        state["last"].bias.add_(shift)
        return (z + shift.view(shape),)

    hooks = []
    for mod in model.modules():
        if isinstance(mod, (torch.nn.Conv2d, torch.nn.BatchNorm2d, torch.nn.Linear)):
            hooks.append(mod.register_forward_hook(track))
        if isinstance(mod, torch.nn.BatchNorm2d):
            hooks.append(mod.register_forward_pre_hook(bn_stats))
        elif isinstance(mod, torch.nn.ReLU):
            hooks.append(mod.register_forward_pre_hook(shift_input))
    try:
        with torch.no_grad():
            model(torch.cat([calib, torch.zeros_like(calib[:1])]))
    finally:
        for h in hooks:
            h.remove()


def _targets(model, x):
    """Distinct targets among the more probable classes of each sample (p[target] enters the
    seed, so a vanishing probability would make the whole gradient tiny)."""
    with torch.no_grad():
        prob = torch.softmax(model(x), 1)
    targets = []
    for n in range(x.shape[0]):
        order = [int(c) for c in prob[n].argsort(descending=True)]
        targets.append([c for c in order if c not in targets][n % 3])
    return targets


def _sg_sigma(x):
    return SG_SIGMA * (x.amax(dim=(1, 2, 3)) - x.amin(dim=(1, 2, 3)))


def build(arch, num_classes, size, batch=BATCH, seed_tag="parchgrad"):
    """Model, input x [batch,3,S,S], targets, smoothgrad noise [SG_SAMPLES, batch, 3, S, S] and
    the probe inputs (every input the tests forward; the statistics are shaped on them).

    The BN statistics and the ReLU margins are calibrated on inputs drawn like every kind of
    probe (x, its integrated-gradients points, x plus smoothgrad noise), so that few units of
    any probe sit within float32 rounding of a ReLU decision."""
    seed = pc.stable_seed(seed_tag, arch, num_classes, size)
    model = pc.build_model(arch, num_classes, seed=seed)
    gen = torch.Generator().manual_seed(seed)
    base = pc.make_input(8, size, size, seed + 2)
    calib = torch.cat([base[:2], base[2:4] * 0.25, base[4:6] * 0.5,
                       base[6:] + torch.randn(base[6:].shape, generator=gen)
                       * _sg_sigma(base[6:]).view(-1, 1, 1, 1)])
    shrink_convs(model, gen)
    condition(model, calib, RELU_K, seed, k_by_prefix={"layer4": RELU_K_LAYER4})
    pc.calibrate_logits(model, calib, target_std=1.5)
    ref.prepare(model)
    x = pc.make_input(batch, size, size, seed + 1)
    targets = _targets(model, x)
    noise = (torch.randn((SG_SAMPLES,) + tuple(x.shape), generator=gen)
             * _sg_sigma(x).view(1, -1, 1, 1, 1))
    probes = torch.cat([x] + [x * (i / IG_STEPS) for i in range(1, IG_STEPS)]
                       + [torch.zeros(1, 3, size, size)]
                       + [x + noise[k] for k in range(SG_SAMPLES)])
    return model, x, targets, noise, probes


# ----------------------------------------------------------------------------------------------
# Per-model setup: built once, its files written once (one model in memory at a time)

Setup = namedtuple("Setup", "arch model x targets noise stats weights stats_path x_path "
                            "noise_path num_classes")
_cache = {}


def setup_for(arch):
    if arch in _cache:
        return _cache[arch]
    for old in list(_cache):
        _cleanup(_cache.pop(old))
    K, size = MODELS[arch]
    model, x, targets, noise, probes = build(arch, K, size, seed_tag=SEED_TAGS[arch])
    stats = ref.random_stats(model, K, probes, pc.stable_seed("stats", arch),
                             cls_alphas=(CLS_ALPHA,), ins_alphas=(INS_ALPHA,),
                             quantiles=(0.1, 0.05), shapiro_thresholds=(0.05, 0.5))
    d = os.path.join(SCRATCH, arch)
    os.makedirs(d, exist_ok=True)
    weights = pc.save_weights(pc.model_state_dict(model), os.path.join(d, "w.safetensors"),
                              "safetensors")
    stats_path = ref.write_stats(stats, os.path.join(d, "stats.safetensors"), arch, K,
                                 write=pc.write_safetensors)
    x_path = pc.save_npy(os.path.join(d, "x.npy"), x.numpy())
    noise_path = pc.save_npy(os.path.join(d, "noise.npy"), noise.numpy())
    s = Setup(arch, model, x, targets, noise, stats, weights, stats_path, x_path, noise_path, K)
    _cache[arch] = s
    return s


def _cleanup(s):
    shutil.rmtree(os.path.join(SCRATCH, s.arch), ignore_errors=True)


@pytest.fixture(scope="module", autouse=True)
def _module_teardown():
    yield
    for old in list(_cache):
        _cleanup(_cache.pop(old))
    print("\n" + SUMMARY.report())


# ----------------------------------------------------------------------------------------------
# Running the engine


def engine_args(cfg, stats_path, explicit=False):
    """Command-line flags for a Config; defaults are left out unless explicit."""
    if cfg.mode == "off":
        return ["--parchgrad", "off"] if explicit else []
    a = ["--parchgrad", cfg.mode, "--stats", stats_path]
    if cfg.alpha is not None:
        a += ["--alpha", repr(cfg.alpha)]
    elif cfg.quantile is not None or explicit:
        a += ["--quantile", repr(cfg.effective_quantile())]
    if cfg.shapiro_threshold != 0.05 or explicit:
        a += ["--shapiro-threshold", repr(cfg.shapiro_threshold)]
    if not math.isinf(cfg.gamma):
        a += ["--gamma", repr(cfg.gamma)]
    elif explicit:
        a += ["--gamma", "inf"]
    if not cfg.variance_conservation:
        a.append("--no-variance-conservation")
    if cfg.exact_variance:
        a.append("--exact-variance")
    if cfg.layers != "ratio:0.5" or explicit:
        a += ["--layers", cfg.layers]
    return a


def run_engine(s, method, args, out, x_path=None, targets=None, masks=False, extra=()):
    shutil.rmtree(out, ignore_errors=True)
    targets = s.targets if targets is None else targets
    cmd = [BIN, "saliency", "--weights", s.weights, "--model", s.arch, "--method", method,
           *args, *extra, "--target", ",".join(str(t) for t in targets), "--out", out,
           x_path or s.x_path]
    if masks:
        cmd.insert(-1, "--explain-masks")
    t0 = time.time()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    return proc, time.time() - t0, cmd


def sample_stems(x_path, n):
    stem = os.path.splitext(os.path.basename(x_path))[0]
    return [stem] if n == 1 else [f"{stem}_{i}" for i in range(n)]


def rel(a, b):
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    den = np.linalg.norm(b)
    if den == 0:
        return float(np.linalg.norm(a))
    return float(np.linalg.norm(a - b) / den)


class Summary:
    def __init__(self, path):
        self.path, self.records = path, []

    def add(self, **r):
        self.records.append(r)
        with open(self.path, "w") as f:
            json.dump(self.records, f, indent=1)

    def report(self, top=6):
        if not self.records:
            return ""
        lines = [f"parchgrad parity: {len(self.records)} engine runs, tolerance {TOL:g}"]
        for key in ("map_rel", "mnb_rel"):
            worst = sorted(self.records, key=lambda r: r.get(key) or 0, reverse=True)[:top]
            lines.append(f"worst {key}: " + ", ".join(f"{r.get(key) or 0:.2e} {r['case']}"
                                                      for r in worst))
        return "\n".join(lines)


SUMMARY = Summary(os.path.join(SCRATCH, "..", "parchgrad_parity_summary.json"))


# ----------------------------------------------------------------------------------------------
# Cases

Case = namedtuple("Case", "arch method cfg explicit single")
EDITS = {  # name: (gamma, variance conservation, exact variance)
    "inf-vc": (math.inf, True, False), "inf-novc": (math.inf, False, False),
    "g2-vc": (2.0, True, False), "g2-novc": (2.0, False, False), "g2-exact": (2.0, True, True),
}


def make_cfg(mode, edit="inf-vc", thr="q", layers="ratio:0.5", shapiro=0.05, quantile=None):
    if mode == "off":
        return ref.Config("off")
    gamma, vc, exact = EDITS[edit]
    alpha = (CLS_ALPHA if mode == "cls" else INS_ALPHA) if thr == "a" else None
    return ref.Config(mode, alpha=alpha, quantile=quantile if thr == "q" else None,
                      shapiro_threshold=shapiro, gamma=gamma, variance_conservation=vc,
                      exact_variance=exact, layers=layers)


def _cases():
    cases = []
    # resnet18: the full cross product for grad
    arch = "resnet18"
    layer_sets = ["ratio:0.5", "ratio:1.0", "layer34", NAMES[arch]]
    for mode in ("cls", "ins"):
        for edit in EDITS:
            for thr in ("a", "q"):
                for li, layers in enumerate(layer_sets):
                    q = 0.05 if (thr == "q" and li % 2 == 1) else None  # else the default 0.1
                    cases.append(Case(arch, "grad", make_cfg(mode, edit, thr, layers, quantile=q),
                                      False, False))
    cases += [
        Case(arch, "grad", make_cfg("off"), False, False),
        Case(arch, "grad", make_cfg("cls"), False, False),                  # all defaults
        Case(arch, "grad", make_cfg("cls"), True, False),                   # defaults spelled out
        Case(arch, "grad", make_cfg("ins", "g2-vc", "a", shapiro=0.5), False, False),
        Case(arch, "grad", make_cfg("ins", "inf-vc", "q", "layer34"), False, True),  # N = 1
        Case(arch, "inputgrad", make_cfg("off"), True, False),
        Case(arch, "inputgrad", make_cfg("cls", "inf-vc", "q"), False, False),
        Case(arch, "inputgrad", make_cfg("ins", "g2-novc", "a", "ratio:1.0"), False, False),
        Case(arch, "ig", make_cfg("off"), False, False),
        Case(arch, "ig", make_cfg("cls", "inf-vc", "q"), False, False),
        Case(arch, "ig", make_cfg("ins", "g2-exact", "a", "layer34"), False, False),
        Case(arch, "ig25", make_cfg("cls", "inf-vc", "q"), False, True),  # N = 1
        Case(arch, "smoothgrad", make_cfg("off"), False, False),
        Case(arch, "smoothgrad", make_cfg("cls", "g2-vc", "q", "ratio:1.0"), False, False),
        Case(arch, "smoothgrad", make_cfg("ins", "inf-novc", "a"), False, False),
        Case(arch, "gradcam", make_cfg("off"), False, False),
        # gradcam with +cls/+ins at the default layer (above every conv) is refused
        # (test_gradcam_with_parchgrad_refused); at an earlier layer ("gradcam@LAYER", its
        # --gradcam-layer) the hooked convs above it change the map:
        Case(arch, "gradcam@layer3", make_cfg("off"), False, False),
        Case(arch, "gradcam@layer4.0.conv2", make_cfg("off"), False, False),  # raw conv (BN after)
        Case(arch, "gradcam@layer2.1.bn1", make_cfg("off"), False, False),
        Case(arch, "gradcam@layer3", make_cfg("cls"), False, False),  # layer4's convs hooked
        Case(arch, "gradcam@layer3.1", make_cfg("ins", "g2-vc", "a", NAMES[arch]), False, False),
        # the hooked conv at the layer itself: Grad-CAM takes the gradient before its edit
        Case(arch, "gradcam@layer4.0.conv1", make_cfg("cls", "inf-vc", "q", "ratio:1.0"), False, False),
    ]
    # resnet50 / vgg16_bn: every edit for both modes, thresholds and layer sets rotated
    for arch in ("resnet50", "vgg16_bn"):
        layer_sets = (["ratio:0.5", "layer34", "ratio:1.0", NAMES[arch]] if arch == "resnet50"
                      else ["ratio:0.5", "ratio:1.0", NAMES[arch]])
        i = 0
        for mode in ("cls", "ins"):
            for edit in EDITS:
                thr = "a" if i % 2 == 0 else "q"
                cases.append(Case(arch, "grad", make_cfg(mode, edit, thr,
                                                         layer_sets[i % len(layer_sets)]),
                                  False, False))
                i += 1
        cases += [
            Case(arch, "grad", make_cfg("off"), False, False),
            Case(arch, "inputgrad", make_cfg("off"), False, False),
            Case(arch, "inputgrad", make_cfg("ins", "inf-vc", "q"), False, False),
            Case(arch, "ig", make_cfg("off"), False, False),
            # (VGG: no ParchGrad ig, see test_parchgrad_parity on the zero baseline)
            Case(arch, "ig", make_cfg("cls", "g2-vc", "a"), False, False) if arch == "resnet50"
            else Case(arch, "inputgrad", make_cfg("cls", "g2-vc", "a", "ratio:1.0"), False, False),
            Case(arch, "smoothgrad", make_cfg("off"), False, False),
            Case(arch, "smoothgrad", make_cfg("ins", "g2-exact", "q"), False, False),
            Case(arch, "gradcam", make_cfg("off"), False, False),
        ]
        if arch == "resnet50":  # a bottleneck block, the last stage's convs above it hooked
            cases.append(Case(arch, "gradcam@layer4.1", make_cfg("cls", "inf-vc", "q"), False, False))
        else:
            cases += [
                Case(arch, "gradcam@features.40", make_cfg("off"), False, False),  # the last conv, raw
                Case(arch, "gradcam@features.33", make_cfg("cls", "g2-vc", "a"), False, False),  # a pool
            ]
    return cases


def _layers_tag(layers):
    return layers if not "," in layers else "names"


def case_id(c):
    cfg = c.cfg
    parts = [c.arch, c.method, cfg.mode]
    if cfg.mode != "off":
        edit = [k for k, v in EDITS.items()
                if v == (cfg.gamma, cfg.variance_conservation, cfg.exact_variance)][0]
        thr = f"a{cfg.alpha}" if cfg.alpha is not None else f"q{cfg.effective_quantile()}"
        parts += [edit, thr, _layers_tag(cfg.layers)]
        if cfg.shapiro_threshold != 0.05:
            parts.append(f"sw{cfg.shapiro_threshold}")
    if c.explicit:
        parts.append("explicit")
    if c.single:
        parts.append("n1")
    return "-".join(parts)


CASES = _cases()


# ----------------------------------------------------------------------------------------------
# Parity


def _oracle(s, c, x, targets, g0=None):
    method, steps = ("ig", 25) if c.method == "ig25" else (c.method, IG_STEPS)
    method, _, layer = method.partition("@")  # gradcam@LAYER: Grad-CAM at that layer
    sl = slice(1, 2) if c.single else slice(None)
    noise = s.noise.numpy()[:, sl] if c.method == "smoothgrad" else None
    return ref.attribute(s.model, s.stats, c.cfg, x, targets, method=method, ig_steps=steps,
                         sg_noise=noise, ig_zero_grad=g0, gradcam_layer=layer or None)


def _check_masks(engine_json, records, layers, sample):
    """Returns (failures, worst relative error of M, N, beta)."""
    fails, worst = [], 0.0
    got = engine_json.get("layers")
    names = [l.get("name") for l in got] if isinstance(got, list) else None
    if names != layers:
        return [f"hooked layers {names} != {layers}"], worst
    for g, o in zip(got, ref.masks_of(records, layers, sample)):
        name = o["name"]
        if g.get("channels") != o["channels"]:
            fails.append(f"{name}: channels {g.get('channels')} != {o['channels']}")
        if g.get("H") != o["H"] or g.get("kept") != o["kept"]:
            ge, oe = set(g.get("H") or []), set(o["H"])
            fails.append(f"{name}: H differs (kept {g.get('kept')} vs {o['kept']}; only engine "
                         f"{sorted(ge - oe)[:8]}, only oracle {sorted(oe - ge)[:8]})")
            continue
        if not o["changed"]:
            continue  # H or L empty: the sample is left unchanged, M/N/beta unused
        for key in ("M", "N", "beta"):
            v = g.get(key)
            if not isinstance(v, (int, float)):
                fails.append(f"{name}: {key} = {v!r}")
                continue
            e = abs(v - o[key]) / abs(o[key])
            worst = max(worst, e)
            if not e < TOL:
                fails.append(f"{name}: {key} {v:.8g} vs {o[key]:.8g} (rel {e:.2e})")
    return fails, worst


def _oracle64(s, case, x, targets, g0=None):
    """The oracle in float64 (same model, same statistics): (maps, records)."""
    s.model.double()
    try:
        maps, records, _ = _oracle(s, case, x.double(), targets, g0)
        return maps, records
    finally:
        s.model.float()


def _check_sample(got, got_masks, ref_map, records, layers, n):
    """(failures, map error, worst M/N/beta error) of one sample against one oracle run."""
    e = rel(got, ref_map)
    fails = [] if e < TOL else [f"map rel err {e:.3e}"]
    w = 0.0
    if got_masks is not None:
        f_m, w = _check_masks(got_masks, records, layers, n)
        fails += f_m
    return fails, e, w


def _engine_zero_gradient(s, targets, batch):
    """The engine's input gradient at the zero input (`parchgrad gradient`)."""
    d = os.path.join(SCRATCH, s.arch)
    z = pc.save_npy(os.path.join(d, "zero.npy"), np.zeros((batch,) + tuple(s.x.shape[1:])))
    proc, lpath, gpath = pc.run_gradient(BIN, s.weights, z, targets, os.path.join(d, "zero"),
                                         model=s.arch)
    assert proc.returncode == 0, proc.stderr
    return np.load(gpath)


@needs_bin
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_parchgrad_parity(case):
    s = setup_for(case.arch)
    cid = case_id(case)
    x, targets, x_path = s.x, s.targets, s.x_path
    if case.single:
        x, targets = s.x[1:2], s.targets[1:2]
        x_path = pc.save_npy(os.path.join(SCRATCH, s.arch, "x1.npy"), x.numpy())
    g0 = None
    if case.method.startswith("ig") and not isinstance(s.model, ResNet):
        # VGG at the zero baseline: the maps are constant away from the border, so max-pool
        # windows hold exactly equal values in PyTorch (the first one takes the gradient) but
        # values a rounding apart in the engine (GEMM tiles), and the two gradients there differ
        # completely. Both are right; the integration is checked around the engine's own one.
        assert case.cfg.mode == "off", "VGG ig with ParchGrad: no common zero-input gradient"
        g0 = _engine_zero_gradient(s, targets, x.shape[0])
    t0 = time.time()
    ref_maps, records, layers = _oracle(s, case, x, targets, g0)
    oracle_s = time.time() - t0
    margin = ref.min_margin(records)
    assert margin > 1e-4, f"test construction: a p-value lies within {margin:.1e} of its cut-off"
    if case.cfg.mode != "off":
        kept = [len(r["H"]) for rec in records[:1] for per in rec.values() for r in per]
        assert kept and max(kept) > 0, "test construction: nothing selected"

    method, extra = case.method, []
    if method.startswith("gradcam@"):
        method, layer = method.split("@")
        extra = ["--gradcam-layer", layer]
    elif method == "ig25":
        method = "ig"
    elif method == "ig":
        extra = ["--ig-steps", str(IG_STEPS)]
    elif method == "smoothgrad":
        noise_path = s.noise_path
        if case.single:
            noise_path = pc.save_npy(os.path.join(SCRATCH, s.arch, "noise1.npy"),
                                     s.noise.numpy()[:, 1:2])
        extra = ["--sg-samples", str(SG_SAMPLES), "--sg-noise", noise_path]
    masks = case.method in ("grad", "inputgrad") and case.cfg.mode != "off"
    out = os.path.join(SCRATCH, s.arch, "out")
    proc, engine_s, cmd = run_engine(s, method, engine_args(case.cfg, s.stats_path, case.explicit),
                                     out, x_path=x_path, targets=targets, masks=masks, extra=extra)
    assert proc.returncode == 0, f"exit {proc.returncode}: {proc.stderr.strip()}\n{' '.join(cmd)}"

    fails, notes, worst_map, worst_mnb, ref64 = [], [], 0.0, 0.0, None
    for n, stem in enumerate(sample_stems(x_path, x.shape[0])):
        path = os.path.join(out, stem + ".npy")
        if not os.path.exists(path):
            fails.append(f"missing {stem}.npy (have {sorted(os.listdir(out))[:10]})")
            continue
        got = np.load(path)
        if got.shape != ref_maps[n].shape or got.dtype != np.float32:
            fails.append(f"{stem}: map {got.shape} {got.dtype}, expected {ref_maps[n].shape}")
            continue
        got_masks = None
        if masks:
            mpath = os.path.join(out, stem + ".masks.json")
            if not os.path.exists(mpath):
                fails.append(f"missing {stem}.masks.json")
                continue
            with open(mpath) as f:
                got_masks = json.load(f)
        f32, e, w = _check_sample(got, got_masks, ref_maps[n], records[0], layers, n)
        if f32:
            # A ReLU or max-pool decision within float32 rounding of its threshold may have gone
            # the other way in PyTorch: a float64 run of the oracle is the better reference then.
            if ref64 is None:
                ref64 = _oracle64(s, case, x, targets, g0)
            f64, e64, w64 = _check_sample(got, got_masks, ref64[0][n], ref64[1][0], layers, n)
            if f64:
                fails += [f"{stem}: {m}" for m in f32[:6]]
                fails.append(f"{stem}: against a float64 oracle: " + "; ".join(f64[:3])
                             + f" (float32 vs float64 oracle: {rel(ref_maps[n], ref64[0][n]):.1e})")
            else:
                notes.append(f"{stem}: float32 oracle {f32[0]}; float64 oracle map {e64:.1e}")
                e, w = e64, w64
        worst_map, worst_mnb = max(worst_map, e), max(worst_mnb, w)
    SUMMARY.add(case=cid, map_rel=worst_map, mnb_rel=worst_mnb if masks else None,
                margin=margin, engine_s=round(engine_s, 2), oracle_s=round(oracle_s, 2),
                notes=notes)
    print(f"{cid}: map {worst_map:.2e} mnb {worst_mnb:.2e} engine {engine_s:.1f}s "
          f"oracle {oracle_s:.1f}s {'; '.join(notes)}")
    assert not fails, "\n".join(fails[:12])


# ----------------------------------------------------------------------------------------------
# Rejected statistics and settings


def _err_stats(s, name):
    """A broken statistics file for the resnet18 setup, and the extra flags of the case."""
    st = {k: dict(v) for k, v in s.stats.items()}
    K, arch, ipc, flags = s.num_classes, s.arch, [50] * s.num_classes, []
    if name == "other_model":
        arch = "resnet34"
    elif name == "vgg_stats":
        st = {f"features.{i}": v for i, v in enumerate(st.values())}
        arch = "vgg16_bn"
    elif name == "missing_layer":
        del st["layer4.1.conv2"]
    elif name == "channel_count":
        st["layer4.1.conv2"] = {k: v[:256] for k, v in st["layer4.1.conv2"].items()}
    elif name == "class_count":
        K += 1
        ipc = [50] * K
        for v in st.values():
            v["cls_p"] = np.concatenate([v["cls_p"], v["cls_p"][:, :1]], axis=1)
    elif name == "empty_class":
        ipc[s.targets[2]] = 0
        for v in st.values():
            v["cls_p"] = v["cls_p"].copy()
            v["cls_p"][:, s.targets[2]] = 1.0
    elif name == "bad_layer_name":
        flags = ["--layers", "layer4.1.conv2,layer4.1.conv3"]
    elif name == "layer_not_conv":
        flags = ["--layers", "layer4.1.bn2"]
    path = os.path.join(SCRATCH, s.arch, f"stats_{name}.safetensors")
    ref.write_stats(st, path, arch, K, images_per_class=ipc, write=pc.write_safetensors)
    return path, flags


# name: a text the message must contain (None: any message)
ERR_CASES = {"other_model": "resnet34", "vgg_stats": "vgg16_bn", "missing_layer": "layer4.1.conv2",
             "channel_count": "layer4.1.conv2", "class_count": None, "empty_class": "<target>",
             "bad_layer_name": "layer4.1.conv3", "layer_not_conv": "layer4.1.bn2"}


@needs_bin
@pytest.mark.parametrize("name", list(ERR_CASES))
def test_parchgrad_rejects(name):
    s = setup_for("resnet18")
    stats_path, flags = _err_stats(s, name)
    out = os.path.join(SCRATCH, s.arch, "out_err")
    args = ["--parchgrad", "cls", "--stats", stats_path] + flags
    proc, _, cmd = run_engine(s, "grad", args, out)
    err = proc.stderr.strip()
    print(f"{name}: exit {proc.returncode}: {err}")
    assert proc.returncode != 0, f"accepted: {' '.join(cmd)}"
    assert err.startswith("parchgrad: error:"), err
    assert "\n" not in err, f"more than one line on stderr:\n{err}"
    expect = ERR_CASES[name]
    if expect == "<target>":
        expect = str(s.targets[2])
    assert expect is None or expect in err, f"message does not name {expect}: {err}"
    written = [f for f in os.listdir(out) if f.endswith(".npy")] if os.path.isdir(out) else []
    assert not written, f"maps written: {written}"


# ----------------------------------------------------------------------------------------------
# The oracle's own identities (no binary needed)

_small = {}


def small():
    """resnet18 at 64x64 with its own statistics."""
    if not _small:
        model, x, targets, noise, probes = build("resnet18", 10, 64, seed_tag="oracle")
        stats = ref.random_stats(model, 10, probes, 7, cls_alphas=(CLS_ALPHA,),
                                 ins_alphas=(INS_ALPHA,))
        _small.update(model=model, x=x, targets=targets, noise=noise, stats=stats)
    return _small


def _maps(cfg, method="grad", **kw):
    o = small()
    return ref.attribute(o["model"], o["stats"], cfg, o["x"], o["targets"], method=method, **kw)


def _plain_grad():
    o = small()
    _, g = pc.reference(o["model"], o["x"], o["targets"])
    return g


def test_oracle_off_is_plain_gradient():
    m, rec, layers = _maps(ref.Config("off"))
    assert layers == [] and all(r == {} for r in rec)
    assert rel(m, np.abs(_plain_grad()).mean(1)) < 1e-6


@pytest.mark.parametrize("mode", ["cls", "ins"])
def test_oracle_all_selected_or_none_is_plain(mode):
    plain = np.abs(_plain_grad()).mean(1)
    # alpha 1 (cls: p <= 1) and every shapiro_p < 1.01: L is empty
    cfg = ref.Config(mode, alpha=1.0 if mode == "cls" else 1.5, shapiro_threshold=1.01,
                     layers="ratio:1.0")
    m, rec, layers = _maps(cfg)
    assert all(len(r["H"]) == r["mask"].size for per in rec[0].values() for r in per)
    assert rel(m, plain) < 1e-6
    # shapiro threshold 0: H is empty
    cfg = ref.Config(mode, alpha=0.5, shapiro_threshold=0.0, gamma=2.0, layers="ratio:1.0")
    m, rec, _ = _maps(cfg)
    assert all(len(r["H"]) == 0 for per in rec[0].values() for r in per)
    assert rel(m, plain) < 1e-6


def test_oracle_large_gamma_tends_to_infinity():
    a, _, _ = _maps(ref.Config("cls", gamma=math.inf))
    b, _, _ = _maps(ref.Config("cls", gamma=1e7))
    assert rel(b, a) < 1e-4


@pytest.mark.parametrize("edit", list(EDITS))
@pytest.mark.parametrize("mode", ["cls", "ins"])
def test_oracle_single_layer_by_hand(mode, edit):
    """One hooked conv: dL/dx = plain + J^T (g' - g), with g' written out from section 5."""
    o = small()
    model, x, targets = o["model"], o["x"], o["targets"]
    name = "layer4.0.conv2"
    gamma, vc, exact = EDITS[edit]
    cfg = ref.Config(mode, alpha=CLS_ALPHA if mode == "cls" else INS_ALPHA, gamma=gamma,
                     variance_conservation=vc, exact_variance=exact, layers=name)
    conv = dict(model.named_modules())[name]
    st = o["stats"][name]
    caught = []
    h = conv.register_forward_hook(lambda m, i, out: caught.append(out))
    xx = x.clone().requires_grad_(True)
    try:
        logits = model(xx)
    finally:
        h.remove()
    y = caught[0]
    seed = torch.zeros_like(logits)
    prob = torch.softmax(logits.detach(), 1)
    for n, t in enumerate(targets):
        seed[n, t] = prob[n, t]
    gx, gy = torch.autograd.grad(logits, [xx, y], seed, retain_graph=True)
    gap = torch.relu(y.detach()).mean((2, 3)).double().numpy()
    new = gy.clone().double()
    for n, t in enumerate(targets):
        if mode == "cls":
            Hm = (st["cls_p"][:, t] <= CLS_ALPHA) & (st["shapiro_p"] < 0.05)
        else:
            from scipy.stats import norm
            p = 1 - norm.cdf((gap[n] - st["mean"]) / st["std"])
            Hm = (p < INS_ALPHA) & (st["shapiro_p"] < 0.05)
        Hm = torch.as_tensor(Hm)
        g = gy[n].double()
        sh, sl = g[Hm].sum(0).flatten(), g[~Hm].sum(0).flatten()
        M = float(((sh - sh.mean()) ** 2).sum() / (sh.numel() - 1)) + 1e-7
        N = float(((sl - sl.mean()) ** 2).sum() / (sl.numel() - 1)) + 1e-7
        if math.isinf(gamma):
            b = math.sqrt((M + N) / M) if vc else 1.0
            new[n][Hm], new[n][~Hm] = b * g[Hm], 0.0
        else:
            gh = gamma * math.sqrt(N / M)
            if exact:
                tot = g.sum(0).flatten()
                ed = gh * sh + sl
                b = math.sqrt(float(tot.var()) / float(ed.var()))
            else:
                b = math.sqrt((M + N) / (M * gh * gh + N)) if vc else 1.0
            new[n][Hm], new[n][~Hm] = gh * b * g[Hm], b * g[~Hm]
            if exact:  # the variance of the channel sum is kept
                assert abs(float(new[n].sum(0).var()) / float(g.sum(0).var()) - 1) < 1e-9
    (corr,) = torch.autograd.grad(y, xx, (new - gy.double()).float())
    want = (gx + corr).abs().mean(1).numpy()
    m, rec, _ = _maps(cfg)
    assert rel(m, want) < 1e-5
    assert all(0 < len(r["H"]) < r["mask"].size for r in rec[0][name]), "trivial selection"


def test_oracle_quantile_counts():
    o = small()
    k_of = {name: max(1, int(st["mean"].size * 0.1)) for name, st in o["stats"].items()}
    _, rec, layers = _maps(ref.Config("cls", shapiro_threshold=1.01))
    assert all(len(r["H"]) == k_of[n] for n in layers for r in rec[0][n])  # p <= alpha: k
    _, rec, layers = _maps(ref.Config("ins", shapiro_threshold=1.01))
    assert all(len(r["H"]) == k_of[n] - 1 for n in layers for r in rec[0][n])  # p < alpha


def test_oracle_batch_equals_single():
    o = small()
    cfg = ref.Config("ins", alpha=INS_ALPHA, gamma=2.0, layers="ratio:1.0")
    m, rec, layers = _maps(cfg)
    for n in range(o["x"].shape[0]):
        m1, rec1, _ = ref.attribute(o["model"], o["stats"], cfg, o["x"][n:n + 1],
                                    o["targets"][n:n + 1])
        assert rel(m1[0], m[n]) < 1e-5
        for name in layers:
            assert rec1[0][name][0]["H"] == rec[0][name][n]["H"]
            assert abs(rec1[0][name][0]["beta"] / rec[0][name][n]["beta"] - 1) < 1e-5


def test_oracle_gradcam_untouched_and_methods():
    a, _, _ = _maps(ref.Config("off"), "gradcam")
    b, _, _ = _maps(ref.Config("cls"), "gradcam")
    assert rel(b, a) < 1e-6 and np.linalg.norm(a) > 0
    # At layer3 the hooked convs of layer4 lie above Grad-CAM's layer: the map changes; with only
    # layer3's own convs hooked (all below or at the block's output) it does not.
    a3, _, _ = _maps(ref.Config("off"), "gradcam", gradcam_layer="layer3")
    b3, _, _ = _maps(ref.Config("cls"), "gradcam", gradcam_layer="layer3")
    c3, _, _ = _maps(ref.Config("cls", layers="layer3.0.conv1,layer3.1.conv2"), "gradcam",
                     gradcam_layer="layer3")
    assert rel(b3, a3) > 1e-2 and rel(c3, a3) < 1e-6 and rel(a3, a) > 1e-2
    plain = _plain_grad()
    x = small()["x"].numpy()
    g, _, _ = _maps(ref.Config("off"), "inputgrad")
    assert rel(g, np.abs(x * plain).mean(1)) < 1e-6
    sg, _, _ = _maps(ref.Config("off"), "smoothgrad", sg_noise=np.zeros((2,) + x.shape))
    assert rel(sg, np.abs(plain).mean(1)) < 1e-6
    # ig with one step: the trapezoid of the gradients at 0 and x
    o = small()
    _, g0 = pc.reference(o["model"], torch.zeros_like(o["x"]), o["targets"])
    ig, _, _ = _maps(ref.Config("off"), "ig", ig_steps=1)
    assert rel(ig, np.abs((x * (g0 + plain) / 2).mean(1))) < 1e-5


def test_oracle_layer_presets():
    m18 = small()["model"]
    assert len(ref.hooked_layers(m18, "ratio:0.5")) == 10
    assert len(ref.hooked_layers(m18, "ratio:1.0")) == 20
    assert ref.hooked_layers(m18, "ratio:0.5")[0] == "layer3.0.conv1"
    l34 = ref.hooked_layers(m18, "layer34")
    assert len(l34) == 8 and not any("downsample" in n for n in l34)
    assert ref.hooked_layers(m18, NAMES["resnet18"]) == [
        "layer2.1.conv1", "layer4.0.downsample.0", "layer4.1.conv2"]
    with pytest.raises(ValueError):
        ref.hooked_layers(m18, "layer4.1.conv3")
