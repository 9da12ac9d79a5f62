"""`parchgrad preprocess` against PIL + torchvision (Resize(256) -> CenterCrop(224) -> ToTensor ->
Normalize), on the sample photographs and on synthetic images of every PNG colour type, and its
error handling for bad inputs.

PNG decoding is lossless, so the resized/cropped pixels must equal PIL's exactly and the
normalised tensor must equal torchvision's. JPEG decoders differ (PIL uses libjpeg-turbo, the
engine stb_image); the differences are bounded below. Run with `pytest -s` to see them.
"""
import io
import os
import struct
import subprocess
import zlib

import numpy as np
import pytest
import torch
import torchvision.transforms as T
from PIL import Image

SRC = os.environ.get("PARCHGRAD_SRC", os.path.join(os.path.dirname(__file__), "..", ".."))
BIN = os.environ.get("PARCHGRAD_BIN") or os.path.join(SRC, "build", "parchgrad")
if os.environ.get("PARCHGRAD_BIN") and not os.path.exists(BIN):
    raise RuntimeError(f"PARCHGRAD_BIN={BIN} does not exist")
pytestmark = pytest.mark.skipif(not os.path.exists(BIN), reason="parchgrad binary not built")

SCRATCH = os.environ.get("PARCHGRAD_SCRATCH") or os.path.join(SRC, "build", "test_scratch", "test_preprocess")
os.makedirs(SCRATCH, exist_ok=True)
PHOTOS = os.path.join(SRC, "..", "shared", "data", "images")

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
# One 8-bit level after normalisation, plus float rounding.
NORM_TOL = 1 / 255 / 0.225 + 1e-6

# JPEG bounds (levels of 0..255). Measured, stb_image 2.27 vs PIL 9.4 (libjpeg-turbo): the
# photograph rocket.jpg differs by at most 1 level after Resize(256) + CenterCrop(224) (mean
# 0.006) and 2 levels as decoded (mean 0.010, 1% of the values differ); the synthetic noisy
# JPEGs (4:2:0, 4:4:4, progressive, greyscale) by at most 3 levels, mean <= 0.08, decoded or
# resized. (IDCT, chroma upsampling and colour conversion round differently.) The bounds
# leave a margin of 2x or more.
JPEG_MEAN_BOUND = 0.25
JPEG_MAX_BOUND = 6


def run(*args):
    return subprocess.run([BIN, *map(str, args)], capture_output=True, text=True, timeout=120)


def scratch(name):
    return os.path.join(SCRATCH, name)


def preprocess(path, raw, resize=256, crop=224):
    out = scratch(os.path.basename(path) + f".{resize}.{crop}.{'raw' if raw else 'norm'}.npy")
    if os.path.exists(out):
        os.remove(out)
    args = [path, "--out", out, "--resize", resize, "--crop", crop] + (["--raw"] if raw else [])
    r = run("preprocess", *args)
    assert r.returncode == 0, r.stderr
    a = np.load(out)
    assert a.dtype == np.float32
    return a


def reference(path, resize=256, crop=224):
    """(pixels [H, W, 3] float32, normalised [3, H, W]) as torchvision computes them."""
    im = Image.open(path).convert("RGB")
    steps = ([T.Resize(resize)] if resize else []) + ([T.CenterCrop(crop)] if crop else [])
    pil = T.Compose(steps)(im) if steps else im
    pixels = np.asarray(pil).astype(np.float32)
    norm = T.Normalize(MEAN, STD)(T.ToTensor()(pil)).numpy()
    return pixels, norm


def compare(path, resize=256, crop=224):
    """Returns (max, mean) abs difference of the pixels and max abs difference of the tensor."""
    ref_px, ref_norm = reference(path, resize, crop)
    px = preprocess(path, True, resize, crop)
    norm = preprocess(path, False, resize, crop)
    assert px.shape == ref_px.shape, (px.shape, ref_px.shape)
    assert norm.shape == ref_norm.shape, (norm.shape, ref_norm.shape)
    d = np.abs(px - ref_px)
    return float(d.max()), float(d.mean()), float(np.abs(norm - ref_norm).max())


# ----------------------------------------------------------------------------------------------
# Synthetic images


def texture(w, h, channels, seed):
    """Smooth gradients plus noise and hard edges, uint8 [h, w, channels]."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    chans = []
    for c in range(channels):
        base = 127 + 100 * np.sin(x / (7 + 5 * c) + c) * np.cos(y / (11 + 3 * c))
        base += np.where((x // 17 + y // 13 + c) % 2 == 0, 40, -40)
        base += rng.normal(0, 25, size=(h, w))
        chans.append(base)
    return np.clip(np.stack(chans, -1), 0, 255).astype(np.uint8)


def png_chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def write_png16(path, arr, color_type):
    """A 16-bit PNG (PIL cannot write 16-bit RGB), arr uint16 [h, w, c] or [h, w]."""
    h, w = arr.shape[:2]
    raw = b"".join(b"\x00" + arr[i].astype(">u2").tobytes() for i in range(h))
    ihdr = struct.pack(">IIBBBBB", w, h, 16, color_type, 0, 0, 0)
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", zlib.compress(raw))
                + png_chunk(b"IEND", b""))


def make_synthetic():
    """{name: path} of synthetic PNG and JPEG files."""
    files = {}

    def save(name, im, **kw):
        path = scratch(name)
        im.save(path, **kw)
        files[name] = path

    save("rgb_257x333.png", Image.fromarray(texture(257, 333, 3, 1)))              # portrait, odd
    save("rgb_640x200.png", Image.fromarray(texture(640, 200, 3, 2)))              # landscape
    save("rgb_1000x999.png", Image.fromarray(texture(1000, 999, 3, 3)))            # large downscale
    save("rgb_256x256.png", Image.fromarray(texture(256, 256, 3, 4)))              # no resize
    save("rgb_256x301.png", Image.fromarray(texture(256, 301, 3, 5)))              # width kept
    save("rgb_311x256.png", Image.fromarray(texture(311, 256, 3, 6)))              # height kept
    save("rgb_100x80.png", Image.fromarray(texture(100, 80, 3, 7)))                # upscale
    save("rgb_5x3.png", Image.fromarray(texture(5, 3, 3, 8)))                      # tiny
    save("rgb_223x225.png", Image.fromarray(texture(223, 225, 3, 9)))              # odd crops
    save("grey_300x300.png", Image.fromarray(texture(300, 300, 1, 10)[..., 0], "L"))
    save("la_250x260.png", Image.fromarray(texture(250, 260, 2, 11), "LA"))
    save("rgba_320x240.png", Image.fromarray(texture(320, 240, 4, 12), "RGBA"))
    save("bilevel_270x230.png", Image.fromarray(texture(270, 230, 1, 13)[..., 0], "L").convert("1"))
    pal = Image.fromarray(texture(300, 220, 3, 14)).quantize(colors=37)
    save("palette_300x220.png", pal)
    save("palette_trns_260x270.png", Image.fromarray(texture(260, 270, 3, 15)).quantize(colors=16),
         transparency=3)
    save("palette_4bit_240x250.png", Image.fromarray(texture(240, 250, 3, 16)).quantize(colors=9), bits=4)
    g16 = (texture(230, 240, 2, 17).astype(np.uint16) * 7).sum(-1).astype(np.uint16)  # values above 255
    save("grey16_230x240.png", Image.fromarray(g16, "I;16"))
    path = scratch("rgb16_260x250.png")
    write_png16(path, texture(260, 250, 3, 18).astype(np.uint16) * 257 + 3, 2)
    files["rgb16_260x250.png"] = path
    path = scratch("rgba16_250x240.png")
    write_png16(path, texture(250, 240, 4, 19).astype(np.uint16) * 250, 6)
    files["rgba16_250x240.png"] = path
    save("rgb_q90_420_333x257.jpg", Image.fromarray(texture(333, 257, 3, 20)), quality=90)
    save("rgb_q95_444_300x310.jpg", Image.fromarray(texture(300, 310, 3, 21)), quality=95, subsampling=0)
    save("rgb_progressive_400x300.jpg", Image.fromarray(texture(400, 300, 3, 22)), quality=85,
         progressive=True)
    save("grey_q90_250x260.jpg", Image.fromarray(texture(250, 260, 1, 23)[..., 0], "L"), quality=90)
    return files


SYNTHETIC = make_synthetic()
PNG_CASES = sorted(n for n in SYNTHETIC if n.endswith(".png"))
JPEG_CASES = sorted(n for n in SYNTHETIC if n.endswith(".jpg"))
PHOTO_CASES = sorted(f for f in os.listdir(PHOTOS) if f.lower().endswith((".png", ".jpg", ".jpeg"))) \
    if os.path.isdir(PHOTOS) else []


def is_png(path):
    return path.lower().endswith(".png")


# ----------------------------------------------------------------------------------------------
# Parity


@pytest.mark.parametrize("name", PHOTO_CASES)
def test_photographs(name):
    path = os.path.join(PHOTOS, name)
    mx, mean, nmx = compare(path)
    print(f"\n{name}: pixels max {mx:g} mean {mean:.4f}, normalised max {nmx:.3g}")
    if is_png(path):
        assert mx == 0
        assert nmx <= NORM_TOL
    else:
        dmx, dmean, _ = compare(path, 0, 0)  # the decoders alone
        print(f"{name}: decoded max {dmx:g} mean {dmean:.4f}")
        assert mean < JPEG_MEAN_BOUND and mx <= JPEG_MAX_BOUND
        assert dmean < JPEG_MEAN_BOUND and dmx <= JPEG_MAX_BOUND


@pytest.mark.parametrize("name", PNG_CASES)
def test_synthetic_png(name):
    mx, mean, nmx = compare(SYNTHETIC[name])
    print(f"\n{name}: pixels max {mx:g} mean {mean:.4f}, normalised max {nmx:.3g}")
    assert mx == 0
    assert nmx <= NORM_TOL


@pytest.mark.parametrize("name", JPEG_CASES)
def test_synthetic_jpeg(name):
    mx, mean, nmx = compare(SYNTHETIC[name])
    dmx, dmean, _ = compare(SYNTHETIC[name], 0, 0)  # the decoders alone
    print(f"\n{name}: pixels max {mx:g} mean {mean:.4f}; decoded max {dmx:g} mean {dmean:.4f}")
    assert mean < JPEG_MEAN_BOUND and mx <= JPEG_MAX_BOUND
    assert dmean < JPEG_MEAN_BOUND and dmx <= JPEG_MAX_BOUND


@pytest.mark.parametrize("resize,crop", [(0, 0), (0, 224), (300, 299), (64, 56), (512, 100), (224, 224)])
@pytest.mark.parametrize("name", ["rgb_257x333.png", "rgb_100x80.png", "rgb_1000x999.png", "rgba_320x240.png"])
def test_sizes(name, resize, crop):
    """Other Resize/CenterCrop sizes, including no resize and zero padding (crop > image)."""
    mx, _, nmx = compare(SYNTHETIC[name], resize, crop)
    assert mx == 0
    assert nmx <= NORM_TOL


def test_exact_resize_pil_sizes():
    """resize_bilinear_aa alone: many size pairs (up and down, each axis), via --crop 0."""
    src = SYNTHETIC["rgb_257x333.png"]
    for resize in (1, 2, 3, 7, 100, 128, 255, 256, 257, 258, 333, 400, 700):
        mx, _, _ = compare(src, resize, 0)
        assert mx == 0, resize


def test_default_is_imagenet_transform():
    path = SYNTHETIC["rgb_640x200.png"]
    out = scratch("default.npy")
    r = run("preprocess", path, "-o", out)
    assert r.returncode == 0, r.stderr
    _, ref = reference(path)
    a = np.load(out)
    assert a.shape == (3, 224, 224)
    assert np.abs(a - ref).max() <= NORM_TOL


def test_npy_input_passthrough():
    path = SYNTHETIC["rgb_257x333.png"]
    _, ref = reference(path)
    for shape, dtype in (((3, 224, 224), np.float64), ((1, 3, 224, 224), np.float32)):
        src = scratch(f"input_{len(shape)}d.npy")
        np.save(src, ref.reshape(shape).astype(dtype))
        out = scratch("passthrough_out.npy")
        r = run("preprocess", src, "--out", out)
        assert r.returncode == 0, r.stderr
        np.testing.assert_array_equal(np.load(out), ref.astype(np.float32))
        r = run("preprocess", src, "--out", out, "--raw")
        assert r.returncode == 0, r.stderr
        px, _ = reference(path)
        assert np.abs(np.load(out) - px).max() <= 1


# ----------------------------------------------------------------------------------------------
# Bad inputs


def bad_inputs():
    cases = {}

    def write(name, data):
        path = scratch(name)
        with open(path, "wb") as f:
            f.write(data)
        cases[name] = path

    png = open(SYNTHETIC["rgb_257x333.png"], "rb").read()
    jpg = open(SYNTHETIC["rgb_q90_420_333x257.jpg"], "rb").read()
    write("truncated.png", png[: len(png) // 2])
    write("truncated.jpg", jpg[: len(jpg) // 2])
    write("truncated_no_iend.png", png[:-12])
    write("truncated_no_eoi.jpg", jpg[:-2])
    write("truncated_header.png", png[:20])
    write("truncated_header.jpg", jpg[:40])
    bad_crc = bytearray(png)
    bad_crc[len(png) // 2] ^= 0x55
    write("corrupt_crc.png", bytes(bad_crc))
    write("text.png", b"this is not an image\n")
    write("empty.png", b"")
    write("empty.jpg", b"")
    for name in PHOTO_CASES:
        data = open(os.path.join(PHOTOS, name), "rb").read()
        write("half_" + name, data[: len(data) // 2])
    buf = io.BytesIO()
    np.save(buf, np.zeros((3, 224, 224), np.float32))
    npy = buf.getvalue()
    write("truncated.npy", npy[: len(npy) // 2])
    write("truncated_header.npy", npy[:30])
    buf = io.BytesIO()
    np.save(buf, np.zeros((3, 224, 224), np.int64))
    write("int64.npy", buf.getvalue())
    buf = io.BytesIO()
    np.save(buf, np.asfortranarray(np.zeros((3, 224, 224), np.float32)))
    write("fortran.npy", buf.getvalue())
    buf = io.BytesIO()
    np.save(buf, np.zeros((2, 224, 224), np.float32))
    write("wrong_shape.npy", buf.getvalue())
    cases["missing.png"] = scratch("does_not_exist.png")
    cases["directory"] = SCRATCH
    return cases


BAD = bad_inputs()


@pytest.mark.parametrize("name", sorted(BAD))
@pytest.mark.parametrize("raw", [False, True])
def test_bad_input(name, raw):
    path = BAD[name]
    out = scratch(f"bad_{name}_{raw}.npy")
    if os.path.exists(out):
        os.remove(out)
    before = set(os.listdir(SCRATCH))
    r = run("preprocess", path, "--out", out, *(["--raw"] if raw else []))
    print(f"\n{name}: {r.stderr.strip()}")
    assert r.returncode != 0
    lines = r.stderr.splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("parchgrad: error: ")
    assert path in lines[0]
    assert not os.path.exists(out)
    assert set(os.listdir(SCRATCH)) == before  # no temporary files left behind


def test_truncation_is_reported():
    for name in ("truncated.png", "truncated.jpg", "truncated_no_iend.png", "truncated_no_eoi.jpg",
                 "truncated.npy"):
        r = run("preprocess", BAD[name], "--out", scratch("unused.npy"))
        assert "truncated" in r.stderr, r.stderr
    r = run("preprocess", BAD["int64.npy"], "--out", scratch("unused.npy"))
    assert "'<i8'" in r.stderr


def test_unwritable_output():
    r = run("preprocess", SYNTHETIC["rgb_5x3.png"], "--out", os.path.join(SCRATCH, "no_such_dir", "x.npy"))
    assert r.returncode != 0
    assert r.stderr.startswith("parchgrad: error: ") and "no_such_dir" in r.stderr


# ----------------------------------------------------------------------------------------------
# Inputs no reader may read: refused by what they are or declare, before they are read or
# decoded (and never by blocking or running out of memory).


def refused(path, words, timeout=30):
    out = scratch("refused.npy")
    if os.path.exists(out):
        os.remove(out)
    before = set(os.listdir(SCRATCH))
    r = subprocess.run([BIN, "preprocess", path, "--out", out], capture_output=True, text=True, timeout=timeout)
    assert r.returncode != 0
    lines = r.stderr.splitlines()
    assert lines == [f"parchgrad: error: {path}: {words}"], r.stderr
    assert not os.path.exists(out)
    assert set(os.listdir(SCRATCH)) == before


def test_fifo_image_is_refused_without_blocking():
    fifo = scratch("fifo.png")
    if os.path.exists(fifo):
        os.remove(fifo)
    os.mkfifo(fifo)
    try:
        refused(fifo, "not a regular file (a FIFO)")
    finally:
        os.remove(fifo)


def test_dev_zero_is_refused():
    refused("/dev/zero", "not a regular file (a character device)")


def huge_png(w, h, with_iend=True):
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    data = b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr)
    return data + (png_chunk(b"IEND", b"") if with_iend else b"")


@pytest.mark.parametrize("w,h,iend", [(20000, 20000, True), (20000, 20000, False), (1 << 31, 1, True),
                                      (178956971, 1, True)])
def test_huge_declared_png(w, h, iend):
    p = scratch(f"huge_{w}x{h}_{iend}.png")
    with open(p, "wb") as f:
        f.write(huge_png(w, h, iend))
    refused(p, f"image too large ({w}x{h}, at most 178956970 pixels)")


def test_huge_declared_jpeg():
    # SOI, a baseline SOF0 of 30000 x 30000 (3 components), EOI: refused by its declared size.
    sof = struct.pack(">BHHB", 8, 30000, 30000, 3) + bytes([1, 0x22, 0, 2, 0x11, 1, 3, 0x11, 1])
    data = b"\xff\xd8" + b"\xff\xc0" + struct.pack(">H", len(sof) + 2) + sof + b"\xff\xd9"
    p = scratch("huge.jpg")
    with open(p, "wb") as f:
        f.write(data)
    refused(p, "image too large (30000x30000, at most 178956970 pixels)")


@pytest.mark.parametrize("dtype,descr,words", [(np.bool_, "|b1", "bool"), (np.int8, "|i1", "int8"),
                                               (np.dtype(">f4"), ">f4", "big-endian float32")])
def test_npy_dtype_is_named(dtype, descr, words):
    p = scratch(f"dtype_{words.replace(' ', '_')}.npy")
    np.save(p, np.zeros((3, 8, 8), dtype))
    refused(p, f"unsupported dtype '{descr}' ({words}) (expected float32 '<f4' or float64 '<f8')")
