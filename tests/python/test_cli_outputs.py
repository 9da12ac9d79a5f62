"""What `saliency` writes for people to look at: the `--compare` strip names every panel."""
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
    """ParchGrad edits gradients below Grad-CAM's target layer, so gradcam+cls would silently
    equal gradcam (the PyTorch oracle shows the same: test_parchgrad_parity's
    test_oracle_gradcam_untouched_and_methods): refused, in one line, before any work."""
    runs = [
        ["saliency", "--weights", WEIGHTS, "--stats", STATS, "--method", "gradcam", "--parchgrad", "cls",
         "--out", str(tmp_path / "a"), STAR],
        ["saliency", "--weights", WEIGHTS, "--stats", STATS, "--compare", "grad,gradcam+ins",
         "--out", str(tmp_path / "b"), STAR],
        ["eval", "--weights", WEIGHTS, "--stats", STATS, "--data", os.path.dirname(STAR),
         "--methods", "grad,gradcam+cls", "--out", str(tmp_path / "c" / "report")],
    ]
    for args in runs:
        proc = subprocess.run([BIN] + args, capture_output=True, text=True, timeout=300)
        errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("parchgrad: error:")]
        assert proc.returncode != 0, args
        assert len(errors) == 1 and "ParchGrad does not change Grad-CAM" in errors[0], proc.stderr
    for d in ("a", "b", "c"):
        p = tmp_path / d
        assert not p.exists() or not any(f.suffix in (".npy", ".jsonl", ".png") for f in p.rglob("*")), d


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
