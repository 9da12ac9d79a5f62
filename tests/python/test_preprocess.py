"""`parchgrad preprocess` against PIL + torchvision (Resize(256) -> CenterCrop(224) -> ToTensor ->
Normalize), on the sample photographs and on synthetic images of every PNG colour type and of many
kinds of JPEG, and its error handling for bad inputs.

PNG decoding is lossless, and JPEGs are decoded with the library and settings PIL uses
(libjpeg-turbo, tools/lib/image_io.cpp), so the decoded pixels must equal PIL's bit for bit, the
resized/cropped pixels likewise, and the normalised tensor must equal torchvision's.
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
from PIL import Image, JpegImagePlugin

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


ZIGZAG = sorted(((r, c) for r in range(8) for c in range(8)),
                key=lambda rc: (rc[0] + rc[1], rc[0] if (rc[0] + rc[1]) % 2 else -rc[0]))


def jpeg_segments(data):
    """[(marker, payload)] of a JPEG's header segments, up to and including SOS."""
    segs, pos = [], 2
    while True:
        marker, length = data[pos + 1], struct.unpack(">H", data[pos + 2:pos + 4])[0]
        segs.append((marker, data[pos + 4:pos + 2 + length]))
        pos += 2 + length
        if marker == 0xDA:
            return segs


def with_restarts(template, planes, interval):
    """A baseline JPEG of `planes` (uint8 [h, w] each, one per component of `template`, a baseline
    JPEG that PIL wrote with 4:4:4 sampling and standard Huffman tables) whose entropy-coded data
    has a restart marker every `interval` MCUs: PIL cannot write restart markers. The quantisation
    and Huffman tables and the frame come from the template; the coefficients are computed here."""
    segs = jpeg_segments(template)
    qt, dc_codes, ac_codes = {}, {}, {}
    for marker, p in segs:
        if marker == 0xDB:
            i = 0
            while i < len(p):
                assert p[i] >> 4 == 0
                qt[p[i] & 15] = np.frombuffer(p[i + 1:i + 65], np.uint8).astype(np.int64)
                i += 65
        elif marker == 0xC4:
            i = 0
            while i < len(p):
                cls, tid, counts = p[i] >> 4, p[i] & 15, p[i + 1:i + 17]
                syms, code, k, codes = p[i + 17:i + 17 + sum(counts)], 0, 0, {}
                for length in range(1, 17):
                    for _ in range(counts[length - 1]):
                        codes[syms[k]] = (code, length)
                        code, k = code + 1, k + 1
                    code <<= 1
                (ac_codes if cls else dc_codes)[tid] = codes
                i += 17 + sum(counts)
    sof = next(p for m, p in segs if m == 0xC0)
    sos = next(p for m, p in segs if m == 0xDA)
    h, w, ncomp = struct.unpack(">HHB", sof[1:6])
    assert ncomp == len(planes) and all(sof[6 + 3 * i + 1] == 0x11 for i in range(ncomp))
    tq = [sof[6 + 3 * i + 2] for i in range(ncomp)]
    td = [sos[1 + 2 * i + 1] >> 4 for i in range(ncomp)]
    ta = [sos[1 + 2 * i + 1] & 15 for i in range(ncomp)]
    n = np.arange(8)
    dct = np.sqrt(np.where(n[:, None] == 0, 1 / 8, 2 / 8)) * np.cos((2 * n[None, :] + 1) * n[:, None] * np.pi / 16)
    bh, bw = -(-h // 8), -(-w // 8)
    blocks = []
    for ci, plane in enumerate(planes):
        padded = np.pad(plane.astype(np.float64) - 128, ((0, bh * 8 - h), (0, bw * 8 - w)), mode="edge")
        b = padded.reshape(bh, 8, bw, 8).transpose(0, 2, 1, 3)
        coef = dct @ b @ dct.T
        zz = np.stack([coef[..., r, c] for r, c in ZIGZAG], -1)
        blocks.append(np.rint(zz / qt[tq[ci]]).astype(np.int64))
    out, acc, nbits = bytearray(), 0, 0

    def put(code, length):
        nonlocal acc, nbits
        acc, nbits = (acc << length) | code, nbits + length
        while nbits >= 8:
            byte = (acc >> (nbits - 8)) & 0xFF
            out.append(byte)
            if byte == 0xFF:
                out.append(0)
            nbits -= 8
        acc &= (1 << nbits) - 1

    def put_value(codes, sym, v):
        put(*codes[sym])
        size = sym & 15
        if size:
            put(v if v > 0 else v + (1 << size) - 1, size)

    pred = [0] * ncomp
    for mcu in range(bh * bw):
        if mcu and mcu % interval == 0:
            if nbits:
                put((1 << (8 - nbits)) - 1, 8 - nbits)
            out += bytes([0xFF, 0xD0 + (mcu // interval - 1) % 8])
            pred = [0] * ncomp
        for ci in range(ncomp):
            zz = blocks[ci][mcu // bw, mcu % bw]
            d = int(zz[0]) - pred[ci]
            pred[ci] = int(zz[0])
            put_value(dc_codes[td[ci]], abs(d).bit_length(), d)
            run = 0
            for v in map(int, zz[1:]):
                if v == 0:
                    run += 1
                    continue
                while run > 15:
                    put(*ac_codes[ta[ci]][0xF0])
                    run -= 16
                put_value(ac_codes[ta[ci]], (run << 4) | abs(v).bit_length(), v)
                run = 0
            if run:
                put(*ac_codes[ta[ci]][0x00])
    if nbits:
        put((1 << (8 - nbits)) - 1, 8 - nbits)
    head = b"".join(b"\xff" + bytes([m]) + struct.pack(">H", len(p) + 2) + p for m, p in segs[:-1])
    dri = b"\xff\xdd" + struct.pack(">HH", 4, interval)
    return b"\xff\xd8" + head + dri + b"\xff\xda" + struct.pack(">H", len(sos) + 2) + sos + bytes(out) + b"\xff\xd9"


def make_jpegs(files):
    """JPEGs in many forms, written by PIL (and restart-marker files made from PIL's tables)."""

    def save(name, im, **kw):
        path = scratch(name)
        im.save(path, **kw)
        files[name] = path

    rgb = Image.fromarray(texture(333, 217, 3, 30))
    for q in (50, 75, 95):
        for sub, tag in ((0, "444"), (1, "422"), (2, "420")):
            save(f"rgb_q{q}_{tag}_333x217.jpg", rgb, quality=q, subsampling=sub)
    save("rgb_progressive_444_333x217.jpg", rgb, quality=80, subsampling=0, progressive=True)
    save("rgb_progressive_422_217x333.jpg", rgb.transpose(Image.Transpose.ROTATE_90), quality=60,
         subsampling=1, progressive=True)
    save("rgb_optimize_q75_333x217.jpg", rgb, quality=75, optimize=True)
    save("rgb_progressive_optimize_q90_333x217.jpg", rgb, quality=90, optimize=True, progressive=True)
    save("rgb_q100_444_333x217.jpg", rgb, quality=100, subsampling=0)
    save("rgb_q1_420_333x217.jpg", rgb, quality=1)
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: PIL's open does not apply it, and neither does the engine
    save("rgb_exif_icc_333x217.jpg", rgb, quality=85, exif=exif.tobytes(), icc_profile=b"\0" * 128, dpi=(300, 300))
    for w, h in ((1, 1), (17, 9), (9, 17), (2, 2), (15, 1), (1, 23), (16, 16), (31, 33)):
        im = Image.fromarray(texture(w, h, 3, 40 + w + h))
        save(f"rgb_420_{w}x{h}.jpg", im, quality=85)
        save(f"rgb_422_progressive_{w}x{h}.jpg", im, quality=70, subsampling=1, progressive=True)
        save(f"grey_{w}x{h}.jpg", im.convert("L"), quality=90)
    grey = Image.fromarray(texture(333, 217, 1, 31)[..., 0], "L")
    for q in (50, 75, 95):
        save(f"grey_q{q}_333x217.jpg", grey, quality=q)
    save("grey_progressive_optimize_217x333.jpg", grey.transpose(Image.Transpose.ROTATE_270), quality=80,
         progressive=True, optimize=True)
    cmyk = Image.fromarray(texture(333, 217, 4, 32), "CMYK")
    save("cmyk_q75_333x217.jpg", cmyk, quality=75)
    save("cmyk_progressive_q90_333x217.jpg", cmyk, quality=90, progressive=True)
    save("cmyk_q95_17x9.jpg", cmyk.crop((0, 0, 17, 9)), quality=95)
    grid = np.zeros((256, 256, 4), np.uint8)
    grid[..., 0], grid[..., 3] = np.mgrid[0:256, 0:256][::-1]  # C along x, K along y
    grid[..., 1], grid[..., 2] = 255 - grid[..., 0], grid[..., 3] // 2
    save("cmyk_q100_256x256.jpg", Image.fromarray(grid, "CMYK"), quality=100)
    # Restart markers: every MCU, and every 5 MCUs (not a divisor of the MCU rows).
    arr = texture(61, 45, 3, 33)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "JPEG", quality=90, subsampling=0)
    planes = np.asarray(Image.fromarray(arr).convert("YCbCr"))
    for interval in (1, 5):
        path = scratch(f"rgb_restart{interval}_444_61x45.jpg")
        with open(path, "wb") as f:
            f.write(with_restarts(buf.getvalue(), [planes[..., i] for i in range(3)], interval))
        files[os.path.basename(path)] = path
    buf = io.BytesIO()
    Image.fromarray(arr[..., 0], "L").save(buf, "JPEG", quality=75)
    path = scratch("grey_restart3_61x45.jpg")
    with open(path, "wb") as f:
        f.write(with_restarts(buf.getvalue(), [arr[..., 0]], 3))
    files[os.path.basename(path)] = path


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
    make_jpegs(files)
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
    if not is_png(path):
        assert_decoded_as_pil(path)
    mx, mean, nmx = compare(path)
    print(f"\n{name}: pixels max {mx:g} mean {mean:.4f}, normalised max {nmx:.3g}")
    assert mx == 0
    assert nmx <= NORM_TOL


@pytest.mark.parametrize("name", PNG_CASES)
def test_synthetic_png(name):
    mx, mean, nmx = compare(SYNTHETIC[name])
    print(f"\n{name}: pixels max {mx:g} mean {mean:.4f}, normalised max {nmx:.3g}")
    assert mx == 0
    assert nmx <= NORM_TOL


def assert_decoded_as_pil(path):
    """The decoded pixels (no resize, no crop) equal np.asarray(PIL.Image.open(p).convert("RGB"))."""
    ref = np.asarray(Image.open(path).convert("RGB"))
    px = preprocess(path, True, 0, 0)
    assert px.shape == ref.shape, (px.shape, ref.shape)
    assert np.array_equal(px, ref.astype(np.float32)), \
        f"{path}: {int((px != ref).sum())} values differ, max {float(np.abs(px - ref).max()):g}"


@pytest.mark.parametrize("name", JPEG_CASES)
def test_jpeg_decoded_as_pil(name):
    assert_decoded_as_pil(SYNTHETIC[name])


@pytest.mark.parametrize("name", JPEG_CASES)
def test_synthetic_jpeg(name):
    """The whole eval transform on JPEGs: as exact as on PNGs."""
    path = SYNTHETIC[name]
    w, h = Image.open(path).size
    for resize, crop in ((256, 224), (min(w, h) * 2 + 1, 0), (max(1, min(w, h) // 3), max(1, min(w, h) // 4))):
        mx, mean, nmx = compare(path, resize, crop)
        assert mx == 0, (resize, crop)
        assert nmx <= NORM_TOL, (resize, crop)


def test_jpeg_cases_cover_the_forms():
    """What the synthetic JPEGs are, as PIL reads them: every mode, subsampling and kind of scan."""
    seen = set()
    for name in JPEG_CASES:
        im = Image.open(SYNTHETIC[name])
        seen.add(im.mode)
        if im.mode == "RGB":
            seen.add("subsampling %d" % JpegImagePlugin.get_sampling(im))
        if im.info.get("progressive"):
            seen.add("progressive")
        data = open(SYNTHETIC[name], "rb").read()
        if b"\xff\xdd" in data[: data.index(b"\xff\xda")]:
            seen.add("restart")
    assert seen >= {"L", "RGB", "CMYK", "subsampling 0", "subsampling 1", "subsampling 2", "progressive", "restart"}


def test_cmyk_conversion_is_pil():
    """PIL's CMYK -> RGB formula, which image_io.cpp reproduces (R = nk - muldiv255(C, nk), nk = 255 - K),
    against PIL's own convert for every (C, K) pair. The C++ side is checked end to end by the CMYK
    JPEGs above (cmyk_q100_256x256.jpg spans C over 0..255 along x and K along y)."""
    grid = np.zeros((256, 256, 4), np.uint8)
    grid[..., 0], grid[..., 3] = np.mgrid[0:256, 0:256]
    c, nk = grid[..., 0].astype(np.int64), 255 - grid[..., 3].astype(np.int64)
    t = c * nk + 128
    np.testing.assert_array_equal(np.asarray(Image.fromarray(grid, "CMYK").convert("RGB"))[..., 0],
                                  nk - (((t >> 8) + t) >> 8))


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


@pytest.mark.parametrize("name", ["rgb_257x333.png", "rgb_1000x999.png", "astronaut.png", "rocket.jpg"])
def test_bicubic_exact_pil(name):
    """PIL's antialiased BICUBIC resize (a = -0.5, support 2 scaled by the downscale factor,
    22-bit fixed point, clipped after each pass), bit for bit, down and up, via --raw --crop 0."""
    path = SYNTHETIC[name] if name in SYNTHETIC else os.path.join(PHOTOS, name)
    im = Image.open(path).convert("RGB")
    for resize in (1, 3, 100, 240, 255, 288, 333, 600):
        out = scratch(f"{name}.bicubic.{resize}.npy")
        r = run("preprocess", path, "--out", out, "--raw", "--resize", resize, "--crop", 0,
                "--interpolation", "bicubic")
        assert r.returncode == 0, r.stderr
        ref = np.asarray(T.Resize(resize, interpolation=T.InterpolationMode.BICUBIC)(im)).astype(np.float32)
        got = np.load(out)
        assert got.shape == ref.shape, (resize, got.shape, ref.shape)
        assert np.array_equal(got, ref), f"{name} -> {resize}: {int((got != ref).sum())} values differ"


@pytest.mark.parametrize("weights", ["EfficientNet_B0_Weights.IMAGENET1K_V1", "EfficientNet_B1_Weights.IMAGENET1K_V2",
                                     "EfficientNet_V2_L_Weights.IMAGENET1K_V1", "ConvNeXt_Tiny_Weights.IMAGENET1K_V1",
                                     "VGG16_Weights.IMAGENET1K_FEATURES", "convnext_small"])
def test_preset_is_torchvision_weights_transform(weights):
    """--preprocess NAME end to end against torchvision's own weights.transforms() on a PIL image
    (resize size, crop size, filter, mean and std as the weights enum defines them): equal within
    float rounding. A model name means its IMAGENET1K_V1 weights."""
    import torchvision.models as M
    enum_name, _, member = weights.partition(".")
    if not member:
        enum_name, member = {"convnext_small": ("ConvNeXt_Small_Weights", "IMAGENET1K_V1")}[weights]
    transform = getattr(getattr(M, enum_name), member).transforms()
    for name in ("chelsea.png", "rocket.jpg"):
        path = os.path.join(PHOTOS, name)
        out = scratch(f"preset.{weights}.{name}.npy")
        r = run("preprocess", path, "--out", out, "--preprocess", weights)
        assert r.returncode == 0, r.stderr
        ref = transform(Image.open(path).convert("RGB")).numpy()
        got = np.load(out)
        assert got.shape == ref.shape, (got.shape, ref.shape)
        scale = float(np.abs(ref).max())
        assert float(np.abs(got - ref).max()) <= 1e-6 * scale, f"{weights} {name}"


def test_saliency_takes_the_preset():
    """`saliency --preprocess NAME` feeds the model the preset's input size and records the
    preprocessing in results.jsonl; without it a model of no torchvision name (the bundled
    default) gets ImageNet's 256/224."""
    import json
    weights = os.path.join(SRC, "assets", "default", "resnet_synth.pth")
    path = os.path.join(PHOTOS, "chelsea.png")
    for preset, size, name in ((None, 224, "imagenet"), ("EfficientNet_V2_L_Weights.IMAGENET1K_V1", 480, None),
                               ("efficientnet_b3", 300, "EfficientNet_B3_Weights.IMAGENET1K_V1")):
        out = scratch(f"saliency_preset_{preset}")
        args = ["saliency", "--weights", weights, "--out", out, path] + (["--preprocess", preset] if preset else [])
        r = run(*args)
        assert r.returncode == 0, r.stderr
        assert np.load(os.path.join(out, "chelsea.npy")).shape == (size, size)
        with open(os.path.join(out, "results.jsonl")) as f:
            rec = json.loads(f.readlines()[-1])["settings"]["preprocess"]
        assert rec["crop"] == size and rec["name"] == (name or preset), rec
    assert rec["interpolation"] == "bicubic" and rec["resize"] == 320


def test_stats_takes_the_preset():
    """`stats --preprocess NAME` sees what `preprocess --preprocess NAME` writes: the statistics of a
    folder of images equal, bit for bit, those of the same folder as the preprocessed .npy tensors."""
    import shutil
    from model_prep import read_safetensors
    weights = os.path.join(SRC, "assets", "default", "resnet_synth.pth")
    preset = "EfficientNet_B1_Weights.IMAGENET1K_V1"  # 256/240 bicubic
    root = scratch("stats_preset")
    shutil.rmtree(root, ignore_errors=True)
    for kind in ("img", "npy"):
        for c in ("a", "b"):
            os.makedirs(os.path.join(root, kind, c))
    photos = sorted(f for f in os.listdir(PHOTOS) if f.endswith((".png", ".jpg")))[:4]
    for i, name in enumerate(photos):
        c = "ab"[i % 2]
        src = os.path.join(PHOTOS, name)
        shutil.copy(src, os.path.join(root, "img", c, name))
        r = run("preprocess", src, "--out", os.path.join(root, "npy", c, name + ".npy"), "--preprocess", preset)
        assert r.returncode == 0, r.stderr
    got = {}
    for kind in ("img", "npy"):
        out = os.path.join(root, kind + ".safetensors")
        r = run("stats", "--weights", weights, "--data", os.path.join(root, kind), "--out", out, "--preprocess", preset)
        assert r.returncode == 0, r.stderr
        got[kind] = read_safetensors(out)
    assert got["img"].keys() == got["npy"].keys()
    for k in got["img"]:
        np.testing.assert_array_equal(got["img"][k], got["npy"][k], err_msg=k)
    # The file records the preprocessing (metadata "preprocess", JSON).
    import json
    with open(os.path.join(root, "img.safetensors"), "rb") as f:
        meta = json.loads(f.read(struct.unpack("<Q", f.read(8))[0]))["__metadata__"]
    pre = json.loads(meta["preprocess"])
    assert pre["name"] == preset and (pre["resize"], pre["crop"], pre["interpolation"]) == (256, 240, "bicubic")
    r = run("stats", "--weights", weights, "--data", os.path.join(root, "img"), "--out", os.path.join(root, "x.st"),
            "--preprocess", "nope")
    assert r.returncode != 0 and "nope" in r.stderr


def test_unknown_preset_refused():
    r = run("preprocess", SYNTHETIC["rgb_100x80.png"], "--out", scratch("bad_preset.npy"), "--preprocess", "resnet7")
    assert r.returncode != 0 and "resnet7" in r.stderr and "EfficientNet_B0_Weights.IMAGENET1K_V1" in r.stderr


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
    # A scan cut short but the file ended properly (an end marker in place of the rest of the data).
    write("truncated_scan_with_eoi.jpg", jpg[: len(jpg) // 2] + b"\xff\xd9")
    # A Huffman table whose code counts add up to more than 256 codes.
    dht = jpg.index(b"\xff\xc4")
    write("corrupt_huffman_table.jpg", jpg[: dht + 5] + b"\xff" * 16 + jpg[dht + 21:])
    # A restart marker inside the scan of a file that declares no restart interval.
    sos = jpg.index(b"\xff\xda")
    mid = (sos + len(jpg)) // 2
    write("corrupt_marker_in_scan.jpg", jpg[:mid] + b"\xff\xd3" + jpg[mid:])
    # A 2-component frame (PIL reads 1, 3 or 4).
    grey = open(SYNTHETIC["grey_q90_250x260.jpg"], "rb").read()
    sof = grey.index(b"\xff\xc0")
    sof_len = struct.unpack(">H", grey[sof + 2:sof + 4])[0]
    comp = grey[sof + 10:sof + 13]
    two = grey[:sof + 2] + struct.pack(">H", sof_len + 3) + grey[sof + 4:sof + 9] + b"\x02" + comp \
        + bytes([comp[0] + 1]) + comp[1:] + grey[sof + 2 + sof_len:]
    write("two_components.jpg", two)
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


@pytest.mark.parametrize("name,words", [
    ("truncated.jpg", "truncated JPEG file"), ("truncated_no_eoi.jpg", "truncated JPEG file"),
    ("truncated_scan_with_eoi.jpg", "corrupt JPEG (premature end of data segment)"),
    ("corrupt_huffman_table.jpg", "corrupt JPEG (Bogus Huffman table definition)"),
    ("corrupt_marker_in_scan.jpg", "corrupt JPEG"),
    ("two_components.jpg", "unsupported JPEG (2 components; PIL reads 1, 3 or 4)")])
def test_bad_jpeg_is_named(name, words):
    """Truncated and corrupt JPEGs: one line naming the file and the problem. (PIL refuses the
    truncated ones too; a scan whose data libjpeg had to make up, which PIL returns silently, the
    engine refuses.)"""
    r = run("preprocess", BAD[name], "--out", scratch("unused.npy"))
    print(f"\n{name}: {r.stderr.strip()}")
    assert r.returncode != 0
    assert r.stderr.startswith(f"parchgrad: error: {BAD[name]}: {words}"), r.stderr
    assert len(r.stderr.splitlines()) == 1


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


def test_stats_shards_of_other_preprocessing_not_merged():
    """Shards made with other preprocessing are not one job: `stats merge` names the difference."""
    import shutil
    weights = os.path.join(SRC, "assets", "default", "resnet_synth.pth")
    examples = os.path.join(SRC, "assets", "default", "examples")
    root = scratch("stats_shards_preset")
    shutil.rmtree(root, ignore_errors=True)
    for c, names in (("a", ("circle.png", "cross.png")), ("b", ("square.png", "star.png"))):
        os.makedirs(os.path.join(root, "d", c))
        for n in names:
            shutil.copy(os.path.join(examples, n), os.path.join(root, "d", c, n))
    shards = []
    for i, extra in ((0, []), (1, ["--preprocess", "convnext_tiny"])):
        shards.append(os.path.join(root, f"s{i}.st"))
        r = run("stats", "--weights", weights, "--data", os.path.join(root, "d"), "--out", shards[-1], "--shard",
                f"{i}/2", "--threads", "1", *extra)
        assert r.returncode == 0, r.stderr
    r = run("stats", "merge", *shards, "--out", os.path.join(root, "m.st"))
    errors = [l for l in r.stderr.splitlines() if l.startswith("parchgrad: error:")]
    assert r.returncode == 1 and len(errors) == 1 and "in preprocess" in errors[0], r.stderr
    assert "ConvNeXt_Tiny_Weights.IMAGENET1K_V1" in errors[0]
