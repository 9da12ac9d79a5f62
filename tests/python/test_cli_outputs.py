"""What `saliency` writes for people to look at: the `--compare` strip names every panel; what
Grad-CAM's layer and ParchGrad mean together, and their options' errors."""
import json
import os
import subprocess

import numpy as np
from PIL import Image

import parity_common as pc

BIN = pc.engine_binary()
SRC = pc.SRC
WEIGHTS = os.path.join(SRC, "assets", "default", "resnet_synth.pth")
STATS = os.path.join(SRC, "assets", "default", "stats.safetensors")
STAR = os.path.join(SRC, "assets", "default", "examples", "star.png")


def test_compare_strip_is_labelled(tmp_path):
    out = str(tmp_path / "out")
    proc = subprocess.run([BIN, "saliency", "--weights", WEIGHTS, "--stats", STATS, "--compare",
                           "grad,grad+cls,ig", "--ig-steps", "2", "--out", out, STAR],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    img = np.asarray(Image.open(os.path.join(out, "star.compare.png")).convert("RGB")).astype(int)
    panel, gap, band = 224, 4, 22
    panels = 4  # input, grad, grad+cls, ig
    assert img.shape == (band + panel, panels * panel + (panels - 1) * gap, 3), img.shape
    dark = img.max(axis=2) < 100
    heads = []
    for i in range(panels):
        x0 = i * (panel + gap)
        head = dark[:band, x0:x0 + panel]
        assert head.sum() > 20, f"panel {i} has no label"
        heads.append(head)
        if i:  # the gaps stay white, label band included
            assert (img[:, x0 - gap:x0] == 255).all(), f"gap before panel {i} is not white"
    # Each label is its own text: no two panels carry the same one.
    for i in range(panels):
        for j in range(i + 1, panels):
            assert not np.array_equal(heads[i], heads[j]), f"panels {i} and {j} have the same label"
    # The panels themselves start below the band: the input panel is the image's crop.
    assert not (img[band:band + 5, :panel] == 255).all()


def test_gradcam_with_parchgrad_refused(tmp_path):
    """ParchGrad edits the gradients of the hooked convs; Grad-CAM takes the gradient that reaches
    its layer, which only convs above that layer change. At the default layer (the last block,
    above every conv), or wherever every hooked conv lies below the layer, gradcam+cls would
    silently equal gradcam (the PyTorch oracle shows the same: test_parchgrad_parity's
    test_oracle_gradcam_untouched_and_methods): refused, in one line naming the layer and the
    hooked convs, before any work."""
    runs = [
        (["saliency", "--weights", WEIGHTS, "--stats", STATS, "--method", "gradcam", "--parchgrad", "cls",
          "--out", str(tmp_path / "a"), STAR], "at layer4.0: every hooked convolution (layer3.0.conv1 ... "
                                                  "layer4.0.downsample.0) lies below it"),
        (["saliency", "--weights", WEIGHTS, "--stats", STATS, "--compare", "grad,gradcam+ins",
          "--out", str(tmp_path / "b"), STAR], "at layer4.0:"),
        (["eval", "--weights", WEIGHTS, "--stats", STATS, "--data", os.path.dirname(STAR),
          "--methods", "grad,gradcam+cls", "--out", str(tmp_path / "c" / "report")], "at layer4.0:"),
        # An earlier layer with only convs below it hooked (layer3's own convs are below its output).
        (["saliency", "--weights", WEIGHTS, "--stats", STATS, "--method", "gradcam", "--parchgrad", "cls",
          "--gradcam-layer", "layer3", "--layers", "layer2.0.conv1,layer3.0.conv2", "--out", str(tmp_path / "d"),
          STAR], "at layer3: every hooked convolution (layer2.0.conv1 ... layer3.0.conv2) lies below it"),
        # Inside a block: the downsample is beside conv1, not above it.
        (["saliency", "--weights", WEIGHTS, "--stats", STATS, "--method", "gradcam", "--parchgrad", "ins",
          "--gradcam-layer", "layer4.0.conv1", "--layers", "layer4.0.downsample.0", "--out", str(tmp_path / "e"),
          STAR], "at layer4.0.conv1: every hooked convolution (layer4.0.downsample.0) lies below it"),
    ]
    for args, says in runs:
        proc = subprocess.run([BIN] + args, capture_output=True, text=True, timeout=300)
        errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("parchgrad: error:")]
        assert proc.returncode == 1, args
        assert len(errors) == 1 and "ParchGrad does not change Grad-CAM " + says in errors[0], proc.stderr
        assert "--gradcam-layer" in errors[0] and "--layers" in errors[0], errors[0]
    for d in ("a", "b", "c", "d", "e"):
        p = tmp_path / d
        assert not p.exists() or not any(f.suffix in (".npy", ".jsonl", ".png") for f in p.rglob("*")), d


def test_gradcam_layer_with_parchgrad_above_it(tmp_path):
    """At layer3 the default hooked convs (the last half: layer3's and layer4's) include layer4's,
    above it: gradcam+cls runs and differs from gradcam at layer3, which differs from the default
    layer's map; the results name the layer. (Against PyTorch: test_parchgrad_parity.)"""
    out = str(tmp_path / "out")
    proc = subprocess.run([BIN, "saliency", "--weights", WEIGHTS, "--stats", STATS, "--compare",
                           "gradcam,gradcam+cls", "--gradcam-layer", "layer3", "--out", out, STAR],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    plain = np.load(os.path.join(out, "star.gradcam.npy"))
    cls = np.load(os.path.join(out, "star.gradcam+cls.npy"))
    dflt_out = str(tmp_path / "default")
    subprocess.run([BIN, "saliency", "--weights", WEIGHTS, "--method", "gradcam", "--out", dflt_out, STAR],
                   check=True, capture_output=True, timeout=300)
    dflt = np.load(os.path.join(dflt_out, "star.npy"))
    assert plain.shape == cls.shape == dflt.shape == (224, 224)
    assert np.abs(plain).max() > 0 and np.abs(cls).max() > 0
    assert np.linalg.norm(cls - plain) > 1e-3 * np.linalg.norm(plain)
    assert np.linalg.norm(dflt - plain) > 1e-3 * np.linalg.norm(plain)
    with open(os.path.join(out, "results.jsonl")) as f:
        line = json.loads(f.readline())
    assert line["settings"]["gradcam_layer"] == "layer3", line["settings"]


def test_gradcam_layer_and_blur_sigma_usage_errors(tmp_path):
    """Bad values are refused in one line naming the option: by the parser (exit 2) where the
    value alone is wrong, after loading the model (exit 1) where the model or the other options
    decide."""
    base = [BIN, "saliency", "--weights", WEIGHTS, "--out", str(tmp_path / "o"), STAR]
    cases = [
        (["--method", "ig", "--ig-baseline", "blurred", "--ig-blur-sigma", "0"], 2, "--ig-blur-sigma"),
        (["--method", "ig", "--ig-baseline", "blurred", "--ig-blur-sigma", "nan"], 2, "--ig-blur-sigma"),
        (["--method", "ig", "--ig-baseline", "blurred", "--ig-blur-sigma", "-3"], 2, "--ig-blur-sigma"),
        (["--method", "ig", "--ig-blur-sigma", "3"], 1, "--ig-blur-sigma does nothing without --ig-baseline blurred"),
        (["--method", "ig", "--ig-baseline", "blurry"], 1, "is not zero, black, blurred or a .npy file"),
        (["--method", "gradcam", "--gradcam-layer", "layer9"], 1, "--gradcam-layer: 'layer9' is not a layer of"),
        (["--method", "gradcam", "--gradcam-layer", "features.28"], 1, "(conv1, bn1, relu, maxpool, a stage"),
        (["--method", "grad", "--gradcam-layer", "layer3"], 1, "--gradcam-layer layer3 does nothing here"),
    ]
    for flags, code, says in cases:
        proc = subprocess.run(base[:-1] + flags + base[-1:], capture_output=True, text=True, timeout=300)
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == code, (flags, proc.returncode, proc.stderr)
        assert len(lines) == 1 and lines[0].startswith("parchgrad: error:") and says in lines[0], (flags, lines)
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").glob("*.npy"))


def test_overlay_colormap_and_opacity():
    """--colormap and --overlay-opacity: opacity 0 leaves the dimmed grey image; gray keeps every
    pixel grey and paints the map's top values white; jet paints them dark red (128, 0, 0)."""
    scratch = pc.scratch_dir()
    raw = os.path.join(scratch, "star_raw.npy")
    subprocess.run([BIN, "preprocess", STAR, "--raw", "--out", raw], check=True, capture_output=True)
    crop = np.load(raw).astype(np.float64)  # [224, 224, 3], the pixels the overlay is drawn on
    grey = 0.5 * (0.299 * crop[..., 0] + 0.587 * crop[..., 1] + 0.114 * crop[..., 2])

    def overlay(*flags):
        out = os.path.join(scratch, "overlay_" + "_".join(flags).replace(".", ""))
        proc = subprocess.run([BIN, "saliency", "--weights", WEIGHTS, "--out", out, *flags, STAR],
                              capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
        return np.asarray(Image.open(os.path.join(out, "star.png")).convert("RGB")).astype(np.int32)

    none = overlay("--overlay-opacity", "0")
    assert np.abs(none - np.round(grey)[..., None]).max() <= 1
    gray = overlay("--colormap", "gray")
    assert (gray[..., 0] == gray[..., 1]).all() and (gray[..., 1] == gray[..., 2]).all()
    assert (gray == 255).all(axis=2).sum() >= 20
    jet = overlay("--colormap", "jet")
    assert (jet == [128, 0, 0]).all(axis=2).sum() >= 20
    proc = subprocess.run([BIN, "saliency", "--weights", WEIGHTS, "--out", os.path.join(scratch, "bad_cm"),
                           "--colormap", "viridis", STAR], capture_output=True, text=True)
    assert proc.returncode == 1 and "--colormap: 'viridis' is not ramp, jet or gray" in proc.stderr
