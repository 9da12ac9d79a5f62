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
import copy
import json
import os

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
    ref_logits, ref_grad = pc.reference(model, x, targets)
    _, grad64 = pc.reference(copy.deepcopy(model).double(), x.double(), targets)
    weights = pc.save_weights(pc.model_state_dict(model), os.path.join(SCRATCH, arch + pc.SUFFIX[fmt]), fmt)
    input_path = pc.save_npy(os.path.join(SCRATCH, arch + "_input.npy"), x.numpy())
    failures = []
    try:
        for named in (True, False):
            proc, lpath, gpath = pc.run_gradient(BIN, weights, input_path, targets, os.path.join(SCRATCH, arch),
                                                 model=arch if named else None)
            assert proc.returncode == 0, proc.stderr
            # The architecture is named from the weights alone, too.
            assert json.loads(proc.stdout.strip().splitlines()[-1])["model"] == arch, proc.stdout
            logits, grad = np.load(lpath), np.load(gpath)
            assert logits.shape == ref_logits.shape and grad.shape == ref_grad.shape
            for n in range(x.shape[0]):
                lrel = pc.rel_err(logits[n:n + 1], ref_logits[n:n + 1])
                grel = pc.rel_err(grad[n:n + 1], ref_grad[n:n + 1])
                e64 = pc.rel_err(grad[n:n + 1], grad64[n:n + 1])
                t64 = pc.rel_err(ref_grad[n:n + 1], grad64[n:n + 1])
                line = (f"{arch} ({'named' if named else 'inferred'}) sample {n}: logits {lrel:.2e} grad {grel:.2e}; "
                        f"against float64: engine {e64:.2e}, PyTorch float32 {t64:.2e}")
                # Deep random networks amplify rounding: PyTorch float32 itself can be 1e-1 from
                # float64 there. The engine may be as far as twice PyTorch float32's own error.
                ok = lrel < pc.REL_TOL and (grel < pc.REL_TOL or e64 < pc.REL_TOL or e64 <= 2 * t64)
                if lrel < pc.REL_TOL and not ok:
                    info = pc.explain_gradient(model, x[n], targets[n], grad[n])
                    line += f" -> after {info['decisions']} flip(s) {info['explained_rel']:.2e}"
                    ok = info["explained_rel"] < pc.REL_TOL
                print(line)
                if not ok:
                    failures.append(line)
    finally:
        for p in (weights, input_path):
            if os.path.exists(p):
                os.remove(p)
    assert not failures, "; ".join(failures)

