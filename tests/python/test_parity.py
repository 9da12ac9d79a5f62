"""Parity of `parchgrad gradient` with PyTorch/torchvision: logits and input gradients.

Every case builds a torchvision model with randomised parameters (BatchNorm statistics and affine
parameters included), writes its state dict in one of the supported formats, runs the engine and
compares with PyTorch's float32 result: per sample, ||engine - torch|| / ||torch|| < 1e-4 for the
logits and for the input gradient.

The input gradient is piecewise constant in the input (ReLU masks, max-pool argmax). Where a unit
is within float32 rounding of such a boundary, a correct engine may take the other side than
PyTorch, and in a deep layer that moves the gradient by up to ~1e-2. When a sample's gradient
misses the tolerance (with matching logits), it is judged against a float64 PyTorch pass, the
project's standard: it passes when it is within 1e-4 of float64 or no farther from float64 than
twice PyTorch float32's own distance. Otherwise (but by less than GROSS) it passes only if
flipping some units whose float64 margin is within 8x PyTorch's own float32 rounding error there
(each flip counted exactly once) brings the error under 1e-4
(parity_common.explain_gradient, the costly analysis: only when the first test fails).

Run with `pytest -s` to see the errors; a JSON summary goes to
$PARCHGRAD_SCRATCH/parity_summary.json.
"""
import copy
import hashlib
import os
import time
from collections import namedtuple

import numpy as np
import pytest
import torch

import parity_common as pc

torch.set_num_threads(2)

BIN = pc.binary_path()
if os.environ.get("PARCHGRAD_BIN") and not os.path.exists(BIN):
    raise RuntimeError(f"PARCHGRAD_BIN={BIN} does not exist")
pytestmark = pytest.mark.skipif(BIN is None, reason="parchgrad binary not built")

SCRATCH = pc.scratch_dir()
SUMMARY = pc.Summary(os.path.join(SCRATCH, "parity_summary.json"))

# Class counts: the engine must take K from the weights, so use a mix.
NUM_CLASSES = {"resnet34": 10, "resnet101": 37, "vgg13": 10, "vgg16_bn": 100, "vgg19": 10}

SMALL_VGG_CFG = [16, "M", 32, "M", 64, 64, "M", 128, "M", 512, "M"]
SMALL_VGG_CFG_NOBN = [8, "M", 16, 16, "M", 32, "M", 64, 64, "M", 512, "M"]

SMALL_MODELS = {
    "resnet_small_basic": lambda: pc.build_small_resnet(
        pc.BasicBlock, (16, 32, 64, 128), (1, 1, 1, 1), num_classes=6, seed=11),
    "resnet_small_bottleneck": lambda: pc.build_small_resnet(
        pc.Bottleneck, (16, 32, 64, 128), (1, 2, 1, 1), num_classes=7, seed=12),
    "vgg_small_bn": lambda: pc.build_small_vgg(SMALL_VGG_CFG, True, num_classes=5, seed=13),
    "vgg_small": lambda: pc.build_small_vgg(SMALL_VGG_CFG_NOBN, False, num_classes=5, seed=14),
}

# key: model name (a torchvision architecture or a SMALL_MODELS entry); modes: which of
# "named" (--model given) / "inferred" (no --model) to run.
Case = namedtuple("Case", "key fmt batch height width targets modes")


def _cases():
    cases = []
    both = ("named", "inferred")
    for i, arch in enumerate(pc.ARCHS):
        # Every format on resnet18; vgg11_bn's other formats come with its extra cases below.
        fmts = pc.FORMATS if arch == "resnet18" else [pc.FORMATS[i % 3]]
        for fmt in fmts:
            cases.append(Case(arch, fmt, 2, 224, 224, (3, 7), both))
        # Other input sizes and batch sizes, next to the same architecture to reuse its model.
        if arch == "resnet18":
            cases.append(Case(arch, "safetensors", 2, 160, 192, (11, 500), ("named",)))
            cases.append(Case(arch, "zip", 1, 97, 131, (42,), ("inferred",)))
        if arch == "resnet50":
            cases.append(Case(arch, "zip", 2, 160, 192, (999, 0), ("inferred",)))
            cases.append(Case(arch, "safetensors", 3, 97, 131, (5,), ("named",)))  # one for all
        if arch == "vgg11_bn":
            cases.append(Case(arch, "zip", 2, 160, 192, (123, 321), ("named",)))
            cases.append(Case(arch, "legacy", 3, 224, 224, (0, 999, 500), ("inferred",)))
            cases.append(Case(arch, "safetensors", 1, 97, 131, (77,), ("named",)))
    cases += [
        Case("resnet_small_basic", "safetensors", 2, 224, 224, (3, 5), ("inferred",)),
        Case("resnet_small_basic", "zip", 1, 97, 131, (2,), ("inferred",)),
        Case("resnet_small_bottleneck", "legacy", 2, 224, 224, (6, 1), ("inferred",)),
        Case("vgg_small_bn", "zip", 2, 224, 224, (4, 0), ("inferred",)),
        Case("vgg_small", "safetensors", 2, 160, 192, (1, 2), ("inferred",)),
    ]
    return cases


CASES = _cases()


def _case_id(c):
    return f"{c.key}-{c.fmt}-{c.batch}x{c.height}x{c.width}"


# Above this gradient error (or with wrong logits) a sample fails without the flip analysis.
GROSS = 0.2

# One model in memory at a time; cases of the same model are adjacent.
_model_cache = {}


def _get_model(key):
    if key not in _model_cache:
        _model_cache.clear()
        pc.release()
        if key in SMALL_MODELS:
            model = SMALL_MODELS[key]()
        else:
            model = pc.build_model(key, NUM_CLASSES.get(key, 1000))
        # Logit scale from a fixed 224x224 batch; for the VGGs also ReLU margins (fewer units
        # near a ReLU boundary there; in deep ResNets the shifted biases make it worse).
        pc.condition(model, pc.make_input(2, 224, 224, pc.stable_seed("calib", key)),
                     margins=key in pc.VGGS)
        _model_cache[key] = model
    return _model_cache[key]


@pytest.fixture(scope="module", autouse=True)
def _report():
    yield
    _model_cache.clear()
    _explained.clear()
    pc.release()
    text = SUMMARY.report()
    if text:
        print("\n" + text)


# Flip analyses already done, by (model, input, target, engine gradient): the weight formats
# and the named/inferred runs of a case normally give the same bits.
_explained = {}


def _check_sample(key, model, x, target, logits, grad, ref_logits, ref_grad, ref64=None):
    """Errors of one sample and whether they pass (see the module's docstring). ref64() gives
    the float64 gradient of this sample (computed once per case, when first needed); without
    it, the sample's own float64 pass."""
    if ref64 is None:
        def ref64():
            return pc.reference(copy.deepcopy(model).double(), x.double()[None], [int(target)])[1][0]
    res = {"logits_rel": pc.rel_err(logits[None], ref_logits[None]),
           "grad_rel": pc.rel_err(grad[None], ref_grad[None])}
    res["ok"] = res["logits_rel"] < pc.REL_TOL and res["grad_rel"] < pc.REL_TOL
    if res["logits_rel"] < pc.REL_TOL and not res["ok"]:
        g64 = ref64()
        res["grad_fp64_rel"] = pc.rel_err(grad[None], g64[None])
        res["torch_fp32_fp64_rel"] = pc.rel_err(ref_grad[None], g64[None])
        res["ok"] = (res["grad_fp64_rel"] < pc.REL_TOL
                     or res["grad_fp64_rel"] <= 2 * res["torch_fp32_fp64_rel"])
    if res["logits_rel"] < pc.REL_TOL and not res["ok"] and res["grad_rel"] < GROSS:
        memo = (key, hashlib.sha1(x.numpy().tobytes()).hexdigest(), int(target),
                hashlib.sha1(np.ascontiguousarray(grad).tobytes()).hexdigest())
        if memo not in _explained:
            _explained[memo] = pc.explain_gradient(model, x, target, grad)
        info = _explained[memo]
        res.update({"grad_" + k: v for k, v in info.items()})
        res["ok"] = info["explained_rel"] < pc.REL_TOL
    return res


@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_gradient_parity(case):
    model = _get_model(case.key)
    cid = _case_id(case)
    # The same input for every weight format of a shape (the engine's output should not change).
    x = pc.make_input(case.batch, case.height, case.width,
                      pc.stable_seed("input", case.key, case.batch, case.height, case.width))
    targets = list(case.targets)
    full_targets = targets * case.batch if len(targets) == 1 else targets
    t0 = time.time()
    ref_logits, ref_grad = pc.reference(model, x, full_targets)
    torch_s = time.time() - t0
    assert np.isfinite(ref_grad).all() and np.linalg.norm(ref_grad) > 0
    grad64 = []  # the float64 gradient of the case, made when a sample first needs it

    def ref64(n):
        if not grad64:
            grad64.append(pc.reference(copy.deepcopy(model).double(), x.double(), full_targets)[1])
        return grad64[0][n]

    weights = os.path.join(SCRATCH, cid + pc.SUFFIX[case.fmt])
    input_path = os.path.join(SCRATCH, cid + "_input.npy")
    out_prefix = os.path.join(SCRATCH, cid)
    failures = []
    try:
        pc.save_weights(pc.model_state_dict(model), weights, case.fmt)
        pc.save_npy(input_path, x.numpy())
        for mode in case.modes:
            t0 = time.time()
            proc, lpath, gpath = pc.run_gradient(
                BIN, weights, input_path, targets, out_prefix,
                model=case.key if mode == "named" else None)
            engine_s = time.time() - t0
            assert proc.returncode == 0, f"{mode}: exit {proc.returncode}: {proc.stderr.strip()}"
            logits = np.load(lpath)
            grad = np.load(gpath)
            os.remove(lpath)
            os.remove(gpath)
            assert logits.dtype == np.float32 and grad.dtype == np.float32
            assert logits.shape == ref_logits.shape, (mode, logits.shape, ref_logits.shape)
            assert grad.shape == ref_grad.shape, (mode, grad.shape, ref_grad.shape)
            for n in range(case.batch):
                res = _check_sample(case.key, model, x[n], full_targets[n], logits[n], grad[n],
                                    ref_logits[n], ref_grad[n], lambda n=n: ref64(n))
                label = f"{cid} ({mode}) sample {n}"
                SUMMARY.add(case=label, model=case.key, format=case.fmt, mode=mode,
                            shape=list(x.shape), target=full_targets[n],
                            engine_s=round(engine_s, 3), torch_s=round(torch_s, 3), **res)
                extra = ""
                if "grad_fp64_rel" in res:
                    extra = (f" -> float64 {res['grad_fp64_rel']:.2e}, PyTorch float32 "
                             f"{res['torch_fp32_fp64_rel']:.2e}")
                if "grad_explained_rel" in res:
                    extra = (f" -> float64 {res['grad_fp64_rel']:.2e}, after "
                             f"{res['grad_decisions']} flip(s) of {res['grad_candidates']} "
                             f"ambiguous units {res['grad_explained_rel']:.2e}"
                             + (" (analysis gave up)" if res.get("grad_gave_up") else ""))
                print(f"{label}: logits {res['logits_rel']:.2e} grad {res['grad_rel']:.2e}"
                      f"{extra} (engine {engine_s:.2f}s, torch {torch_s:.2f}s)")
                if not res["ok"]:
                    failures.append(f"{label}: logits {res['logits_rel']:.3e}, grad "
                                    f"{res['grad_rel']:.3e}{extra}")
    finally:
        for p in (weights, input_path):
            if os.path.exists(p):
                os.remove(p)
    assert not failures, "; ".join(failures)


# ----------------------------------------------------------------------------------------------
# Rejected inputs: one stderr line "parchgrad: error: ...", non-zero exit, no output files.


@pytest.fixture(scope="module")
def resnet18_setup():
    model = pc.build_model("resnet18", 1000, seed=pc.stable_seed("bad-inputs"))
    sd = pc.model_state_dict(model)
    weights = pc.save_weights(sd, os.path.join(SCRATCH, "bad_base.pth"), "zip")
    good = pc.save_npy(os.path.join(SCRATCH, "bad_good_input.npy"),
                       pc.make_input(2, 64, 64, 1).numpy())
    yield sd, weights, good
    for p in (weights, good):
        if os.path.exists(p):
            os.remove(p)


def _misshaped(sd):
    sd = dict(sd)
    sd["layer2.0.conv1.weight"] = torch.zeros(128, 64, 3, 2)
    return sd, "layer2.0.conv1.weight"


def _missing(sd):
    sd = dict(sd)
    del sd["layer3.1.bn2.running_var"]
    return sd, "layer3.1.bn2.running_var"


def _unexpected(sd):
    sd = dict(sd)
    sd["layer4.1.conv3.weight"] = torch.zeros(512, 512, 1, 1)
    return sd, "layer4.1.conv3.weight"


# name: (state-dict mutation or None, format, input kind, targets, --model, texts expected in
# the message, where "<input>"/"<weights>" stand for that file's name)
BAD_CASES = {
    "target_too_large": (None, None, "good", "1000,3", "resnet18", None),
    "target_negative": (None, None, "good", "-1,3", "resnet18", None),
    "target_count": (None, None, "good", "1,2,3", None, None),
    "nan_input": (None, None, "nan", "1,2", "resnet18", ("<input>",)),
    "four_channels": (None, None, "four", "1,2", "resnet18", ("<input>",)),
    "model_mismatch_resnet34": (None, None, "good", "1,2", "resnet34", None),
    "model_mismatch_vgg11": (None, None, "good", "1,2", "vgg11", None),
    "misshaped_tensor": (_misshaped, "zip", "good", "1,2", "resnet18",
                         ("<weights>", "layer2.0.conv1.weight")),
    "misshaped_tensor_inferred": (_misshaped, "safetensors", "good", "1,2", None, None),
    "missing_tensor": (_missing, "safetensors", "good", "1,2", "resnet18",
                       ("<weights>", "layer3.1.bn2.running_var")),
    "missing_tensor_inferred": (_missing, "legacy", "good", "1,2", None, None),
    "unexpected_tensor": (_unexpected, "legacy", "good", "1,2", "resnet18",
                          ("<weights>", "layer4.1.conv3.weight")),
    "unexpected_tensor_inferred": (_unexpected, "zip", "good", "1,2", None, None),
}


@pytest.mark.parametrize("name", list(BAD_CASES))
def test_gradient_rejects(name, resnet18_setup):
    sd, base_weights, good_input = resnet18_setup
    mutate, fmt, input_kind, targets, model, expect = BAD_CASES[name]
    created = []
    weights = base_weights
    if mutate is not None:
        bad_sd, _ = mutate(sd)
        weights = os.path.join(SCRATCH, f"bad_{name}{pc.SUFFIX[fmt]}")
        pc.save_weights(bad_sd, weights, fmt)
        created.append(weights)
    input_path = good_input
    if input_kind != "good":
        x = pc.make_input(2, 64, 64, 2).numpy()
        if input_kind == "nan":
            x[1, 2, 10, 20] = np.nan
        elif input_kind == "four":
            x = np.concatenate([x, x[:, :1]], axis=1)
        input_path = pc.save_npy(os.path.join(SCRATCH, f"bad_{name}_input.npy"), x)
        created.append(input_path)
    try:
        proc, lpath, gpath = pc.run_gradient(BIN, weights, input_path, targets,
                                             os.path.join(SCRATCH, f"bad_{name}"), model=model)
        out_exists = [p for p in (lpath, gpath) if os.path.exists(p)]
        created += out_exists
        err = proc.stderr.strip()
        print(f"{name}: exit {proc.returncode}: {err}")
        assert proc.returncode != 0, f"accepted: {name}"
        assert err.startswith("parchgrad: error:"), err
        assert "\n" not in err, f"more than one line on stderr:\n{err}"
        names = {"<input>": os.path.basename(input_path), "<weights>": os.path.basename(weights)}
        for text in expect or ():
            text = names.get(text, text)
            assert text in err, f"message does not name {text}: {err}"
        assert not out_exists, f"output files written: {out_exists}"
    finally:
        for p in created:
            if os.path.exists(p):
                os.remove(p)
