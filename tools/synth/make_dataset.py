#!/usr/bin/env python3
"""Generate the synthetic "shapes in clutter" image set used by the default model.

Writes an ImageFolder tree

    OUT/<class>/<id>.png      RGB, SIZE x SIZE (256 by default)
    OUT/classes.txt           one class name per line, in class-id order
    OUT/boxes.jsonl           {"file", "label", "class", "box": [x0, y0, x1, y1]}

Each image holds exactly one object of one of six shape classes, at a random
position, scale, rotation and colour, on a cluttered textured background
(colour gradients, stripes at random angles, smooth noise, small blobs and
thin line segments).  The object always lies inside the central 224x224 crop
(after the usual resize-256 / centre-crop-224 preprocessing).  Boxes are tight
bounding boxes of the rendered object in pixel coordinates of the SIZE x SIZE
image, x1/y1 exclusive.

With --flat the images go straight into OUT (OUT/<class>.png when --per-class
is 1, else OUT/<class>_<id>.png) and no classes.txt is written.

Output is fully determined by --seed (numpy Generator; per-image generators are
spawned from it so --per-class does not change the first images of a class).

Usage:
    /usr/bin/python3 tools/synth/make_dataset.py --out DIR --per-class N --seed S [--size 256] [--flat]
"""
import argparse
import json
import math
import os
import sys
import time

import numpy as np
from PIL import Image, ImageDraw

# Sorted names: their order is the class-id order used by torchvision ImageFolder.
CLASSES = ["circle", "cross", "ring", "square", "star", "triangle"]
assert CLASSES == sorted(CLASSES)

SS = 2            # supersampling factor used for antialiased shapes
CROP = 224        # central crop the object must stay inside


# ----------------------------------------------------------------------------
# backgrounds
# ----------------------------------------------------------------------------
def _rand_colour(rng):
    return rng.uniform(0, 255, size=3)


_COORDS = {}


def _coords(size):
    """Normalised column (1 x size) and row (size x 1) coordinates, cached."""
    if size not in _COORDS:
        v = (np.arange(size, dtype=np.float32) + 0.5) / size
        _COORDS[size] = (v[None, :], v[:, None])
    return _COORDS[size]


def _blend(c0, c1, t):
    """c0 * (1 - t) + c1 * t for a scalar field t (HxW) and colours c0, c1."""
    c0 = c0.astype(np.float32)
    d = (c1 - c0).astype(np.float32)
    return c0[None, None, :] + t[..., None] * d[None, None, :]


def _ramp(X, Y, a):
    """Linear ramp along direction a, rescaled to [0, 1]."""
    c, s = math.cos(a), math.sin(a)
    t = X * c + Y * s
    lo = min(0.0, c) + min(0.0, s)
    hi = max(0.0, c) + max(0.0, s)
    return (t - lo) * (1.0 / (hi - lo))


def _gradient(rng, size, X, Y):
    t = _ramp(X, Y, rng.uniform(0, 2 * math.pi))
    return _blend(_rand_colour(rng), _rand_colour(rng), t)


def _stripes(rng, size, X, Y):
    a = rng.uniform(0, math.pi)
    freq = rng.uniform(3, 18)
    phase = rng.uniform(0, 2 * math.pi)
    s = np.sin((2 * math.pi * freq) * (X * math.cos(a) + Y * math.sin(a)) + phase)
    sharp = rng.uniform(1, 6)
    t = 0.5 + 0.5 * np.tanh(sharp * s)
    return _blend(_rand_colour(rng), _rand_colour(rng), t)


def _smooth_noise(rng, size):
    cells = int(rng.integers(3, 24))
    small = rng.uniform(0, 255, size=(cells, cells, 3)).astype(np.uint8)
    img = Image.fromarray(small, "RGB").resize((size, size), Image.BICUBIC)
    return np.asarray(img, dtype=np.float32)


def _background(rng, size):
    X, Y = _coords(size)
    bg = _gradient(rng, size, X, Y)
    if rng.random() < 0.6:
        w = rng.uniform(0.2, 0.7)
        bg = bg * (1 - w) + _stripes(rng, size, X, Y) * w
    if rng.random() < 0.6:
        w = rng.uniform(0.2, 0.7)
        bg = bg * (1 - w) + _smooth_noise(rng, size) * w
    # fine pixel noise
    sigma = rng.uniform(0, 12)
    bg += sigma * rng.standard_normal(size=bg.shape, dtype=np.float32)
    np.clip(bg, 0, 255, out=bg)
    img = Image.fromarray(bg.astype(np.uint8), "RGB")
    _distractors(rng, img, size)
    return img


def _distractors(rng, img, size):
    """Small blobs and thin strokes that never form one of the class shapes."""
    d = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(5, 35))):
        cx, cy = rng.uniform(0, size, 2)
        rx, ry = rng.uniform(1.5, 7, 2)
        d.ellipse([cx - rx, cy - ry, cx + rx, cy + ry],
                  fill=tuple(int(v) for v in _rand_colour(rng)))
    for _ in range(int(rng.integers(3, 20))):
        x0, y0 = rng.uniform(0, size, 2)
        n = int(rng.integers(1, 4))          # short polyline, 1-3 segments
        pts = [(x0, y0)]
        a = rng.uniform(0, 2 * math.pi)
        for _ in range(n):
            a += rng.uniform(-1.2, 1.2)
            L = rng.uniform(8, 40)
            pts.append((pts[-1][0] + L * math.cos(a), pts[-1][1] + L * math.sin(a)))
        d.line(pts, fill=tuple(int(v) for v in _rand_colour(rng)),
               width=int(rng.integers(1, 4)))


# ----------------------------------------------------------------------------
# shapes (polygons in units of the bounding radius, centred at 0)
# ----------------------------------------------------------------------------
def _rot(pts, ang):
    c, s = math.cos(ang), math.sin(ang)
    return [(x * c - y * s, x * s + y * c) for x, y in pts]


def _draw_shape(rng, name, d, cx, cy, R, ang):
    """Draw one filled shape (value 255) on mask draw d; all points within R of (cx, cy)."""
    def poly(pts):
        d.polygon([(cx + x * R, cy + y * R) for x, y in _rot(pts, ang)], fill=255)

    if name == "circle":
        d.ellipse([cx - R, cy - R, cx + R, cy + R], fill=255)
    elif name == "ring":
        r_in = R * rng.uniform(0.45, 0.65)
        d.ellipse([cx - R, cy - R, cx + R, cy + R], fill=255)
        d.ellipse([cx - r_in, cy - r_in, cx + r_in, cy + r_in], fill=0)
    elif name == "square":
        h = 1 / math.sqrt(2)
        poly([(-h, -h), (h, -h), (h, h), (-h, h)])
    elif name == "triangle":
        poly([(math.cos(a), math.sin(a)) for a in
              (-math.pi / 2, -math.pi / 2 + 2 * math.pi / 3, -math.pi / 2 + 4 * math.pi / 3)])
    elif name == "star":
        inner = rng.uniform(0.38, 0.5)
        pts = []
        for i in range(10):
            a = -math.pi / 2 + i * math.pi / 5
            r = 1.0 if i % 2 == 0 else inner
            pts.append((r * math.cos(a), r * math.sin(a)))
        poly(pts)
    elif name == "cross":
        t = rng.uniform(0.17, 0.24)          # half arm thickness
        L = math.sqrt(1 - t * t)             # arm half length: corners on the unit circle
        poly([(-t, -L), (t, -L), (t, -t), (L, -t), (L, t), (t, t),
              (t, L), (-t, L), (-t, t), (-L, t), (-L, -t), (-t, -t)])
    else:
        raise ValueError(name)


def _object_fill(rng, size, bg_mean):
    """Object colour (solid or with a gentle gradient), contrasting with bg_mean."""
    for _ in range(20):
        c = _rand_colour(rng)
        if np.linalg.norm(c - bg_mean) > 110:
            break
    X, Y = _coords(size)
    if rng.random() < 0.5:
        t = _ramp(X, Y, rng.uniform(0, 2 * math.pi))
        d = rng.uniform(20, 80)
        fill = _blend(np.clip(c - d / 2, 0, 255), np.clip(c + d / 2, 0, 255), t)
    else:
        fill = np.broadcast_to(c.astype(np.float32)[None, None, :], (size, size, 3))
    return fill


def render(rng, label, size=256):
    """Render one image of class `label`; returns (PIL image, [x0, y0, x1, y1])."""
    name = CLASSES[label]
    bg = _background(rng, size)

    crop = size * CROP / 256.0                 # central crop after resize-256 / crop-224
    lo = (size - crop) / 2 + 3                 # keep a margin inside the crop
    hi = (size + crop) / 2 - 3
    R = rng.uniform(0.13, 0.25) * crop          # bounding radius: 29..56 px at 256
    cx = rng.uniform(lo + R, hi - R)
    cy = rng.uniform(lo + R, hi - R)
    ang = rng.uniform(0, 2 * math.pi)

    big = Image.new("L", (size * SS, size * SS), 0)
    _draw_shape(rng, name, ImageDraw.Draw(big), cx * SS, cy * SS, R * SS, ang)
    mask = big.resize((size, size), Image.BOX)
    alpha = np.asarray(mask, dtype=np.float32)[..., None] / 255.0

    bga = np.asarray(bg, dtype=np.float32)
    sel = alpha[..., 0] > 0.5
    fill = _object_fill(rng, size, bga[sel].mean(axis=0))
    out = bga + alpha * (fill - bga) + 0.5
    np.clip(out, 0, 255, out=out)
    img = Image.fromarray(out.astype(np.uint8), "RGB")

    ys, xs = np.nonzero(np.asarray(mask) > 0)
    box = [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]
    return img, box


def generate(out, per_class, seed, size=256, flat=False, quiet=False):
    os.makedirs(out, exist_ok=True)
    root = np.random.SeedSequence(seed)
    children = root.spawn(len(CLASSES))
    records = []
    t0 = time.time()
    for label, name in enumerate(CLASSES):
        if not flat:
            os.makedirs(os.path.join(out, name), exist_ok=True)
        for i, ss in enumerate(children[label].spawn(per_class)):
            rng = np.random.default_rng(ss)
            img, box = render(rng, label, size)
            if not flat:
                rel = "%s/%05d.png" % (name, i)
            elif per_class == 1:
                rel = "%s.png" % name
            else:
                rel = "%s_%05d.png" % (name, i)
            img.save(os.path.join(out, rel), compress_level=1)
            records.append({"file": rel, "label": label, "class": name, "box": box})
    with open(os.path.join(out, "boxes.jsonl"), "w") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")
    if not flat:
        with open(os.path.join(out, "classes.txt"), "w") as f:
            f.write("\n".join(CLASSES) + "\n")
    dt = time.time() - t0
    if not quiet:
        print("wrote %d images to %s in %.1f s (%.1f ms/image)"
              % (len(records), out, dt, 1000 * dt / max(len(records), 1)))
    return records


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--per-class", type=int, required=True, help="images per class")
    p.add_argument("--seed", type=int, required=True, help="random seed")
    p.add_argument("--size", type=int, default=256, help="image side (default 256)")
    p.add_argument("--flat", action="store_true",
                   help="write OUT/<class>.png (or OUT/<class>_<id>.png) instead of an "
                        "ImageFolder tree, and no classes.txt (used for examples)")
    a = p.parse_args(argv)
    if a.size < 64:
        sys.exit("--size must be >= 64")
    generate(a.out, a.per_class, a.seed, a.size, a.flat)


if __name__ == "__main__":
    main()
