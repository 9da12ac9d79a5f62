"""The opt-in Winograd path (PARCHGRAD_WINOGRAD=1) end to end against PyTorch on ResNets:
logits and input gradients of random-weight resnet18 and resnet50 at 128x128 (its 32x32 and
16x16 stages take the Winograd path), held to the same criterion as test_parity.py (1e-4,
with the float64 analysis of float32-ambiguous ReLU/max-pool units), and ParchGrad maps
(grad+cls, its data-gradient scale applied inside the Winograd data-gradient) equal to the
direct path's within 1e-4.

VGGs are left out on purpose: Winograd's rounding moves more of their near-threshold units
than the parity criterion allows, which is why the path is off by default (ARCHITECTURE.md).
"""
import os
import subprocess

import numpy as np
import pytest

import parity_common as pc
from test_parity import _check_sample, _get_model

BIN = pc.binary_path()
SCRATCH = pc.scratch_dir()
pytestmark = pytest.mark.skipif(BIN is None, reason="engine binary not built")
WINO = dict(os.environ, PARCHGRAD_WINOGRAD="1")


@pytest.mark.parametrize("key", ["resnet18", "resnet50"])
def test_winograd_gradient_parity(key):
    model = _get_model(key)
    x = pc.make_input(2, 128, 128, pc.stable_seed("winograd", key))
    targets = [3, 917]
    ref_logits, ref_grad = pc.reference(model, x, targets)
    weights = os.path.join(SCRATCH, key + "_wino.pth")
    inp = os.path.join(SCRATCH, key + "_wino_x.npy")
    pc.save_weights(pc.model_state_dict(model), weights, "zip")
    pc.save_npy(inp, x.numpy())
    out = os.path.join(SCRATCH, key + "_wino")
    cmd = [BIN, "gradient", "--weights", weights, "--input", inp, "--target=3,917",
           "--logits-out", out + "_l.npy", "--grad-out", out + "_g.npy"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=WINO, timeout=600)
    assert proc.returncode == 0, proc.stderr
    logits, grad = np.load(out + "_l.npy"), np.load(out + "_g.npy")
    for n in range(2):
        res = _check_sample(key, model, x[n], targets[n], logits[n], grad[n], ref_logits[n], ref_grad[n])
        assert res["ok"], (key, n, res)


def test_winograd_parchgrad_maps_equal_direct(tmp_path):
    src = os.environ.get("PARCHGRAD_SRC", os.path.join(os.path.dirname(__file__), "..", ".."))
    d = os.path.join(src, "assets", "default")
    # The default model's 224x224 inputs: its 56x56 and 28x28 stages take the Winograd path.
    outs = {}
    for name, env in (("direct", dict(os.environ, PARCHGRAD_WINOGRAD="0")), ("wino", WINO)):
        o = os.path.join(str(tmp_path), name)
        proc = subprocess.run([BIN, "saliency", "--weights", os.path.join(d, "resnet_synth.pth"), "--stats",
                               os.path.join(d, "stats.safetensors"), "--parchgrad", "cls", "--layers", "ratio:1",
                               "--out", o, os.path.join(d, "examples")], capture_output=True, text=True, env=env,
                              timeout=600)
        assert proc.returncode == 0, proc.stderr
        outs[name] = o
    for f in sorted(os.listdir(outs["direct"])):
        if f.endswith(".npy"):
            a, b = np.load(os.path.join(outs["wino"], f)), np.load(os.path.join(outs["direct"], f))
            assert pc.rel_err(a[None], b[None]) < 1e-4, f
