"""Helpers for the PyTorch parity tests of the `parchgrad gradient` command.

Builds torchvision classifiers with randomised (but numerically tame) parameters, computes the
reference logits and input gradients in PyTorch, writes state dicts as zip .pth, legacy .pth or
safetensors, and runs the engine binary on them.
"""
import copy
import json
import os
import subprocess
import tempfile
import time
import zlib

import numpy as np
import torch
import torchvision
from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet  # noqa: F401 (pc.BasicBlock, pc.Bottleneck)
from torchvision.models.vgg import VGG, make_layers

# Shared with tests/gpu/models_check.py (torch only): re-exported here for the tests' pc.* use.
from model_prep import (calibrate_logits, condition, randomise, read_safetensors,  # noqa: F401
                        run_shifting, set_relu_margins, write_safetensors)

RESNETS = ["resnet18", "resnet34", "resnet50", "resnet101", "resnet152"]
VGGS = ["vgg11", "vgg11_bn", "vgg13", "vgg13_bn", "vgg16", "vgg16_bn", "vgg19", "vgg19_bn"]
ARCHS = RESNETS + VGGS
FORMATS = ["zip", "legacy", "safetensors"]
SUFFIX = {"zip": ".pth", "legacy": ".pth", "safetensors": ".safetensors"}

REL_TOL = 1e-4


# ----------------------------------------------------------------------------------------------
# Environment


def binary_path():
    """The engine binary: $PARCHGRAD_BIN, else <src>/build/parchgrad. None when absent."""
    path = os.environ.get("PARCHGRAD_BIN")
    if path:
        return path
    src = os.environ.get("PARCHGRAD_SRC", os.path.join(os.path.dirname(__file__), "..", ".."))
    path = os.path.join(src, "build", "parchgrad")
    return path if os.path.exists(path) else None


def engine_binary():
    """binary_path(), or a RuntimeError saying how to point the tests at the binary."""
    path = binary_path()
    if not path or not os.path.exists(path):
        raise RuntimeError("the parchgrad binary is needed: set PARCHGRAD_BIN or build into build/")
    return path


SRC = os.environ.get("PARCHGRAD_SRC", os.path.join(os.path.dirname(__file__), "..", ".."))
DEFAULT_DIR = os.path.join(SRC, "assets", "default")  # the bundled model, statistics and examples


def scratch_dir():
    path = os.environ.get("PARCHGRAD_SCRATCH")
    if not path:
        path = tempfile.mkdtemp(prefix="parchgrad_parity_")
    os.makedirs(path, exist_ok=True)
    return path


def stable_seed(*parts):
    """A seed that depends only on the given strings/ints (Python's hash() is salted)."""
    return zlib.crc32("/".join(str(p) for p in parts).encode()) & 0x7FFFFFFF


# ----------------------------------------------------------------------------------------------
# Models


def _finish(model, seed):
    randomise(model, seed)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def build_model(arch, num_classes=1000, seed=None):
    """A torchvision model by name with randomised parameters, in eval mode."""
    seed = stable_seed(arch, num_classes) if seed is None else seed
    torch.manual_seed(seed)  # torchvision's own initialisers use the global generator
    model = getattr(torchvision.models, arch)(weights=None, num_classes=num_classes)
    return _finish(model, seed)


def build_small_resnet(block, widths=(16, 32, 64, 128), layers=(1, 1, 1, 1), num_classes=6,
                       seed=0):
    """A ResNet made of torchvision's own ResNet/_make_layer/BasicBlock/Bottleneck but with
    reduced stage widths (torchvision's constructor hard-codes 64..512)."""
    torch.manual_seed(seed)
    model = ResNet(block, list(layers), num_classes=num_classes)
    model.inplanes = widths[0]
    model.conv1 = torch.nn.Conv2d(3, widths[0], kernel_size=7, stride=2, padding=3, bias=False)
    model.bn1 = torch.nn.BatchNorm2d(widths[0])
    model.layer1 = model._make_layer(block, widths[0], layers[0])
    model.layer2 = model._make_layer(block, widths[1], layers[1], stride=2)
    model.layer3 = model._make_layer(block, widths[2], layers[2], stride=2)
    model.layer4 = model._make_layer(block, widths[3], layers[3], stride=2)
    model.fc = torch.nn.Linear(widths[3] * block.expansion, num_classes)
    return _finish(model, seed)


def build_small_vgg(cfg, batch_norm, num_classes=5, seed=0):
    """torchvision's VGG over a narrower feature stack. Its classifier expects 512*7*7 inputs, so
    the configuration must end with a 512-channel convolution (and a pooling)."""
    assert [c for c in cfg if c != "M"][-1] == 512
    torch.manual_seed(seed)
    model = VGG(make_layers(cfg, batch_norm=batch_norm), num_classes=num_classes)
    return _finish(model, seed)


def model_state_dict(model):
    return {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}


# ----------------------------------------------------------------------------------------------
# Reference


def make_input(batch, height, width, seed):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 3, height, width, generator=gen, dtype=torch.float32)


def reference(model, x, targets):
    """Logits and the input gradient of the seed onehot(t) * softmax(logits).detach()[t]."""
    x = x.detach().clone().requires_grad_(True)
    logits = model(x)
    prob = torch.softmax(logits, dim=1).detach()
    idx = torch.arange(x.shape[0])
    t = torch.as_tensor(targets, dtype=torch.long)
    seed = torch.zeros_like(logits)
    seed[idx, t] = prob[idx, t]
    logits.backward(seed)
    return logits.detach().numpy().copy(), x.grad.detach().numpy().copy()


def rel_err(a, b):
    """Worst per-sample relative error ||a_n - b_n|| / ||b_n|| over the leading axis."""
    a = np.asarray(a, dtype=np.float64).reshape(a.shape[0], -1)
    b = np.asarray(b, dtype=np.float64).reshape(b.shape[0], -1)
    num = np.linalg.norm(a - b, axis=1)
    den = np.linalg.norm(b, axis=1)
    return float(np.max(num / np.maximum(den, 1e-300)))


def _pool_geometry(pool):
    ks, st, pd = (p if isinstance(p, tuple) else (p, p)
                  for p in (pool.kernel_size, pool.stride, pool.padding))
    if pool.dilation not in (1, (1, 1)) or pool.ceil_mode:
        raise NotImplementedError("max pooling with dilation or ceil_mode")
    return ks, st, pd


def _pool_candidates(inp, out_grad, pool, tol_abs, decided_ties=False):
    """Max-pool windows whose two largest inputs are within tol_abs (per sample and channel):
    rounding may make either the maximum. Returns flat indices (into inp) of the maximum and of
    the runner-up and the window's output gradient: moving the gradient to the runner-up changes
    the gradient w.r.t. inp by +g at the runner-up and -g at the maximum. decided_ties: windows
    whose two largest inputs are exactly equal in float64 are not ambiguous (equal receptive
    fields, e.g. in a flat image region, give equal values in float32 too, and the first index
    wins)."""
    ks, st, pd = _pool_geometry(pool)
    n, c, h, w = inp.shape
    pad = (pd[1], pd[1], pd[0], pd[0])
    vals = torch.nn.functional.unfold(
        torch.nn.functional.pad(inp.reshape(n * c, 1, h, w), pad, value=float("-inf")),
        ks, stride=st)  # [n*c, kh*kw, windows]
    where = torch.nn.functional.unfold(
        torch.nn.functional.pad(torch.arange(h * w, dtype=torch.float64).reshape(1, 1, h, w),
                                pad, value=-1.0), ks, stride=st)[0].long()  # [kh*kw, windows]
    top, arg = vals.topk(2, dim=1)
    g = out_grad.reshape(n * c, -1)
    gap = top[:, 0] - top[:, 1]
    sel = (gap < 2 * tol_abs.reshape(n * c, 1)) & (top[:, 0] > 0) & (g != 0)
    if decided_ties:
        sel &= gap > 0
    nc, win = sel.nonzero(as_tuple=True)
    first = nc * (h * w) + where[arg[nc, 0, win], win]
    second = nc * (h * w) + where[arg[nc, 1, win], win]
    return first, second, g[nc, win]


def _capture(model, x):
    """Forward pass recording, for every ReLU and MaxPool2d call, [module, input, output]."""
    calls = []

    def pre(mod, inputs):
        calls.append([mod, inputs[0], None])

    def post(mod, inputs, output):
        calls[-1][2] = output

    hooks = []
    for mod in model.modules():
        if isinstance(mod, (torch.nn.ReLU, torch.nn.MaxPool2d)):
            hooks += [mod.register_forward_pre_hook(pre), mod.register_forward_hook(post)]
    try:
        out = model(x)
    finally:
        for h in hooks:
            h.remove()
    return out, calls


_copies = {}


def release():
    """Drops the float64/float32 copies kept by explain_gradient."""
    _copies.clear()


def _no_inplace(model, dtype):
    """A copy of model in dtype with out-of-place ReLUs (their inputs stay intact for autograd);
    the copies of the last model asked for are kept."""
    if _copies.get("model") is not model:
        _copies.clear()
        _copies["model"] = model
    if dtype not in _copies:
        m = copy.deepcopy(model).to(dtype)
        for mod in m.modules():
            if isinstance(mod, torch.nn.ReLU):
                mod.inplace = False
        _copies[dtype] = m
    return _copies[dtype]


def explain_gradient(model, x, target, grad, tol=REL_TOL, noise_factor=8.0, max_columns=40,
                     time_limit=180.0, decided_ties=False):
    """Checks one sample's input gradient against PyTorch in float64, up to ambiguous decisions.

    ReLU and max pooling make the input gradient piecewise constant in the input: where a ReLU
    input, or the gap between a pooling window's two largest inputs, is within float32 rounding
    error of zero, a correct float32 implementation may take either side, and one such unit in a
    deep layer moves the whole input gradient by 1e-4..1e-2 (relative). This runs the model in
    float64 and in float32 (PyTorch), takes as ambiguous every unit whose float64 margin is below
    noise_factor times the largest float32-vs-float64 difference of its sample and channel, and
    fits grad - gradient64 with the changes that flipping those units would cause, picked
    greedily by correlation with what is left (orthogonal matching pursuit: correlations from a
    finite-difference forward pass per round, each picked change from one backward pass; at most
    max_columns changes and time_limit seconds). The fit's coefficients are rounded to -1, 0 or
    1 (a flip counts exactly once) before the remaining error is measured.

    decided_ties: max-pool windows whose two largest inputs are exactly equal in float64 are not
    ambiguous: the first index must win (_pool_candidates).

    Returns a dict: fp64_rel (error against float64), explained_rel (error left after the fit),
    candidates (ambiguous units), decisions (flips the fit used). The gradient is right when
    explained_rel < tol.
    """
    x64 = torch.as_tensor(x).detach().double().reshape(1, *x.shape[-3:]).requires_grad_(True)
    md = _no_inplace(model, torch.float64)
    logits, calls = _capture(md, x64)
    prob = torch.softmax(logits, dim=1).detach()
    seed = torch.zeros_like(logits)
    seed[0, int(target)] = prob[0, int(target)]
    grads = torch.autograd.grad(logits, [x64] + [c[2] for c in calls], grad_outputs=seed,
                                retain_graph=True, allow_unused=True)
    ref = grads[0].detach()
    d = torch.as_tensor(np.asarray(grad, dtype=np.float64)).reshape(ref.shape) - ref
    ref_norm = float(ref.norm()) + 1e-300
    info = {"fp64_rel": float(d.norm()) / ref_norm, "candidates": 0, "decisions": 0}
    info["explained_rel"] = info["fp64_rel"]
    if info["fp64_rel"] < tol:
        return info

    # Rounding noise per call, sample and channel: PyTorch float32 against float64. The float32
    # graph also gives the changes (columns) below, faster than float64 and accurate enough:
    # they are fitted to 1e-4 of the gradient, and the few decisions where the two passes differ
    # barely change them.
    x32 = x64.detach().float().requires_grad_(True)
    _, calls32 = _capture(_no_inplace(model, torch.float32), x32)
    cands = []  # (call index, plus indices, minus indices, values)
    for i, ((mod, inp, _), (_, inp32, _), g_out) in enumerate(zip(calls, calls32, grads[1:])):
        if g_out is None:
            continue
        inp = inp.detach()
        dims = tuple(range(2, inp.dim()))
        noise = (inp32.detach().double() - inp).abs()
        noise = noise.amax(dim=dims, keepdim=True) if dims else noise
        tol_abs = noise_factor * noise + 1e-12 * float(inp.abs().max())
        if isinstance(mod, torch.nn.ReLU):
            idx = ((inp.abs() < tol_abs) & (g_out != 0)).reshape(-1).nonzero().flatten()
            empty = torch.zeros(0, dtype=torch.long)
            for j in idx.tolist():
                cands.append((i, torch.tensor([j]), empty, g_out.reshape(-1)[j:j + 1]))
        else:
            first, second, g = _pool_candidates(inp, g_out, mod, tol_abs.expand_as(inp)
                                                .amax(dim=(2, 3)), decided_ties)
            for k in range(len(g)):
                cands.append((i, second[k:k + 1], first[k:k + 1], g[k:k + 1]))
    info["candidates"] = len(cands)
    if not cands:
        return info
    base = [c[1].detach().reshape(-1) for c in calls]

    def correlations(direction):
        """<change_k, direction> = seed_k . (J_z direction) for every candidate k, where z is
        the call's input; J_z direction by a forward difference (the network is piecewise
        linear, so this is exact up to rounding)."""
        eps = 1e-6 * float(x64.norm()) / (float(direction.norm()) + 1e-300)
        with torch.no_grad():
            _, moved_calls = _capture(md, x64.detach() + eps * direction)
        moved = [(mc[1].reshape(-1) - b) / eps for mc, b in zip(moved_calls, base)]
        return torch.tensor([float((v * (moved[i][p].sum() - moved[i][m].sum())).sum())
                             for i, p, m, v in cands])

    chosen, cols = [], []
    resid = d
    start = time.time()
    while len(chosen) < max_columns and time.time() - start < time_limit:
        score = correlations(resid).abs()
        if chosen:
            score[chosen] = -1
        order = score.argsort(descending=True)[:2].tolist()
        picks = [k for k in order if score[k] > 0.5 * float(score[order[0]])]
        if not picks or score[order[0]] <= 0:
            break
        for k in picks:
            i, plus, minus, v = cands[k]
            dense = torch.zeros_like(base[i])
            dense[plus] += v
            dense[minus] -= v
            (col,) = torch.autograd.grad(calls32[i][1], x32, retain_graph=True,
                                         grad_outputs=dense.float().reshape(calls32[i][1].shape))
            chosen.append(k)
            cols.append(col.double().reshape(-1))
        basis = torch.stack(cols, dim=1)
        coef = torch.linalg.lstsq(basis, d.reshape(-1, 1)).solution
        whole = coef.round().clamp(-1, 1)
        resid = (d.reshape(-1, 1) - basis @ whole).reshape(d.shape)
        info["explained_rel"] = float(resid.norm()) / ref_norm
        info["decisions"] = int(whole.abs().sum())
        info["max_coef"] = float(coef.abs().max())
        if info["explained_rel"] < tol:
            break
    info["columns"] = len(cols)
    info["seconds"] = round(time.time() - start, 2)
    info["gave_up"] = info["explained_rel"] >= tol and (len(cols) >= max_columns or
                                                       time.time() - start >= time_limit)
    return info


# ----------------------------------------------------------------------------------------------
# Weight files

def save_weights(state_dict, path, fmt):
    if fmt == "zip":
        torch.save(state_dict, path)
    elif fmt == "legacy":
        torch.save(state_dict, path, _use_new_zipfile_serialization=False)
    elif fmt == "safetensors":
        write_safetensors(state_dict, path, metadata={"format": "pt"})
    else:
        raise ValueError(fmt)
    return path


# ----------------------------------------------------------------------------------------------
# Running the engine


def save_npy(path, array):
    np.save(path, np.ascontiguousarray(array, dtype=np.float32))
    return path


def make_flat_images(folder, discs=((80, 90, 50), (170, 170, 60), (190, 60, 30))):
    """256x256 PNGs of flat colour (quadrants, rectangles, discs, one colour): their flat
    regions give exactly equal activations after a network's stem (max-pool ties), where a
    one-ulp difference moves the gradient to another pixel. Returns the paths."""
    from PIL import Image, ImageDraw
    os.makedirs(folder, exist_ok=True)
    paths = []
    img = Image.new("RGB", (256, 256))
    d = ImageDraw.Draw(img)
    for i, c in enumerate([(200, 30, 30), (30, 160, 60), (40, 60, 200), (230, 230, 40)]):
        x, y = (i % 2) * 128, (i // 2) * 128
        d.rectangle([x, y, x + 127, y + 127], fill=c)
    paths.append(os.path.join(folder, "flat_quadrants.png"))
    img.save(paths[-1])
    img = Image.new("RGB", (256, 256), (128, 128, 128))
    d = ImageDraw.Draw(img)
    for box, c in [([30, 40, 120, 200], (250, 250, 250)), ([100, 20, 230, 90], (10, 10, 10)),
                   ([140, 130, 240, 236], (20, 120, 220))]:
        d.rectangle(box, fill=c)
    paths.append(os.path.join(folder, "flat_rectangles.png"))
    img.save(paths[-1])
    img = Image.new("RGB", (256, 256), (240, 220, 180))
    d = ImageDraw.Draw(img)
    for (cx, cy, r), c in zip(discs, [(180, 20, 20), (20, 20, 160), (0, 0, 0)]):
        d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=c)
    paths.append(os.path.join(folder, "flat_discs.png"))
    img.save(paths[-1])
    paths.append(os.path.join(folder, "flat_one_colour.png"))
    Image.new("RGB", (256, 256), (90, 140, 200)).save(paths[-1])
    return paths


def maps_of(out):
    """Every .npy map a run wrote into out, by file name."""
    return {f: np.load(os.path.join(out, f)) for f in sorted(os.listdir(out)) if f.endswith(".npy")}


def small_image_batch(folder, names, size):
    """The named images resized to size x size (bilinear) and normalised with ImageNet's mean
    and std, as one float32 array [N, 3, size, size] (inputs small enough for the SIMT
    runtime)."""
    from PIL import Image
    mean = np.array([0.485, 0.456, 0.406], np.float32)[:, None, None]
    std = np.array([0.229, 0.224, 0.225], np.float32)[:, None, None]
    xs = []
    for f in names:
        img = Image.open(os.path.join(folder, f)).convert("RGB").resize((size, size), Image.BILINEAR)
        xs.append((np.asarray(img, np.float32).transpose(2, 0, 1) / 255.0 - mean) / std)
    return np.stack(xs)


def run_gradient(binary, weights, input_path, targets, out_prefix, model=None, timeout=600):
    """Runs `parchgrad gradient`; returns (CompletedProcess, logits_path, grad_path)."""
    logits_path = out_prefix + "_logits.npy"
    grad_path = out_prefix + "_grad.npy"
    for p in (logits_path, grad_path):
        if os.path.exists(p):
            os.remove(p)
    if not isinstance(targets, str):
        targets = ",".join(str(int(t)) for t in targets)
    cmd = [binary, "gradient", "--weights", weights, "--input", input_path,
           "--target=" + targets, "--logits-out", logits_path, "--grad-out", grad_path]
    if model:
        cmd += ["--model", model]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    return proc, logits_path, grad_path


def family_gradient_parity(binary, model, arch, x, targets, fmt, scratch, explain=True):
    """`parchgrad gradient` on a torchvision model, the architecture named and inferred (the run
    must then name it), against PyTorch: per sample, logits within REL_TOL of float32, and the
    input gradient within REL_TOL of float32 or float64, or no farther from float64 than twice
    PyTorch float32's own distance (deep random networks amplify rounding), or (explain) within
    REL_TOL of float64 after flips of rounding-decided units. Prints a line per sample; returns
    the lines of the samples that failed."""
    import copy
    import json
    ref_logits, ref_grad = reference(model, x, targets)
    _, grad64 = reference(copy.deepcopy(model).double(), x.double(), targets)
    weights = save_weights(model_state_dict(model), os.path.join(scratch, arch + SUFFIX[fmt]), fmt)
    input_path = save_npy(os.path.join(scratch, arch + "_input.npy"), x.numpy())
    failures = []
    try:
        for named in (True, False):
            proc, lpath, gpath = run_gradient(binary, weights, input_path, targets, os.path.join(scratch, arch),
                                              model=arch if named else None)
            assert proc.returncode == 0, proc.stderr
            assert json.loads(proc.stdout.strip().splitlines()[-1])["model"] == arch, proc.stdout
            logits, grad = np.load(lpath), np.load(gpath)
            assert logits.shape == ref_logits.shape and grad.shape == ref_grad.shape
            for n in range(x.shape[0]):
                lrel = rel_err(logits[n:n + 1], ref_logits[n:n + 1])
                grel = rel_err(grad[n:n + 1], ref_grad[n:n + 1])
                e64 = rel_err(grad[n:n + 1], grad64[n:n + 1])
                t64 = rel_err(ref_grad[n:n + 1], grad64[n:n + 1])
                line = (f"{arch} ({'named' if named else 'inferred'}) sample {n}: logits {lrel:.2e} grad {grel:.2e}; "
                        f"against float64: engine {e64:.2e}, PyTorch float32 {t64:.2e}")
                ok = lrel < REL_TOL and (grel < REL_TOL or e64 < REL_TOL or e64 <= 2 * t64)
                if explain and lrel < REL_TOL and not ok:
                    info = explain_gradient(model, x[n], targets[n], grad[n])
                    line += f" -> after {info['decisions']} flip(s) {info['explained_rel']:.2e}"
                    ok = info["explained_rel"] < REL_TOL
                print(line)
                if not ok:
                    failures.append(line)
    finally:
        for p in (weights, input_path):
            if os.path.exists(p):
                os.remove(p)
    return failures


class Summary:
    """Collects per-sample parity results; rewrites <scratch>/parity_summary.json after each."""

    def __init__(self, path):
        self.path = path
        self.records = []

    @staticmethod
    def _final_grad(r):
        return r.get("grad_explained_rel", r["grad_rel"])

    def add(self, **record):
        self.records.append(record)
        with open(self.path, "w") as f:
            json.dump({"tolerance": REL_TOL,
                       "samples": len(self.records),
                       "failed": sum(not r["ok"] for r in self.records),
                       "worst_logits_rel": max(r["logits_rel"] for r in self.records),
                       "worst_grad_rel_vs_torch_fp32": max(r["grad_rel"] for r in self.records),
                       "worst_grad_rel_after_flips": max(map(self._final_grad, self.records)),
                       "samples_with_flips": sum("grad_explained_rel" in r
                                                 for r in self.records),
                       "results": self.records}, f, indent=1)

    def report(self, top=6):
        if not self.records:
            return ""
        rs = self.records
        lines = [f"parity: {len(rs)} samples, {sum(not r['ok'] for r in rs)} failed, "
                 f"tolerance {REL_TOL:g}; {sum('grad_explained_rel' in r for r in rs)} "
                 f"gradients needed the float64 flip analysis"]
        for title, key in (("logits", lambda r: r["logits_rel"]),
                           ("gradient vs torch float32", lambda r: r["grad_rel"]),
                           ("gradient after ambiguous flips", self._final_grad)):
            lines.append(f"worst {title}:")
            for r in sorted(rs, key=key, reverse=True)[:top]:
                lines.append(f"  {key(r):.3e}  {r['case']}")
        lines.append(f"summary: {self.path}")
        return "\n".join(lines)
