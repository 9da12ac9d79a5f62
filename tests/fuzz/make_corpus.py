#!/usr/bin/python3
"""Writes the seed corpus of the fuzz targets (tests/fuzz/corpus/<target>/): small valid files
of every format the readers take, made by the reference tools (torch.save, numpy.save, PIL),
plus a few malformed ones. Run with Debian's python3 (python3-torch, -numpy, -pil):

    /usr/bin/python3 tests/fuzz/make_corpus.py

It replaces the corpus folders. The output is deterministic except for what torch.save and
PIL put in their files (the same versions give the same bytes)."""
import io
import json
import os
import pickle
import shutil
import struct
import sys
import zipfile
from collections import OrderedDict

import numpy as np
import torch
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "corpus")


def put(target, name, data):
    d = os.path.join(OUT, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def tiny_state_dict():
    g = torch.Generator().manual_seed(0)
    sd = OrderedDict()
    sd["conv1.weight"] = torch.randn(2, 1, 1, 1, generator=g)
    sd["bn1.weight"] = torch.ones(2)
    sd["bn1.running_var"] = torch.ones(2, dtype=torch.float64)
    sd["bn1.num_batches_tracked"] = torch.tensor(3)
    sd["fc.weight"] = torch.randn(2, 2, generator=g).half()
    sd["fc.bias"] = torch.zeros(2, dtype=torch.bfloat16)
    sd["fc.t"] = torch.randn(2, 3, generator=g).t()  # non-contiguous: strides (1, 2)
    return sd


def torch_bytes(obj, zip_format):
    b = io.BytesIO()
    torch.save(obj, b, _use_new_zipfile_serialization=zip_format)
    return b.getvalue()


def make_pth():
    sd = tiny_state_dict()
    z = torch_bytes(sd, True)
    legacy = torch_bytes(sd, False)
    put("pth", "state_dict_zip.pth", z)
    put("pth", "state_dict_legacy.pth", legacy)
    # A checkpoint dict (unwrapped by the loader), with DataParallel's "module." prefix.
    ck = {"epoch": 3, "state_dict": OrderedDict(("module." + k, v) for k, v in list(sd.items())[:3])}
    put("pth", "checkpoint_legacy.pth", torch_bytes(ck, False))
    put("pth", "checkpoint_zip.pth", torch_bytes(ck, True))
    # Two tensors sharing one storage (views): legacy storage views and offsets.
    base = torch.arange(6, dtype=torch.float32)
    put("pth", "shared_legacy.pth", torch_bytes(OrderedDict(a=base[1:4], b=base.view(2, 3)), False))
    # Malformed: cut short, and a zip whose data.pkl is compressed (deflate) rather than stored.
    put("pth", "truncated_zip.pth", z[: len(z) // 2])
    put("pth", "truncated_legacy.pth", legacy[: len(legacy) - 5])
    src = zipfile.ZipFile(io.BytesIO(z))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            dst.writestr(info.filename, src.read(info.filename))
    put("pth", "deflated_zip.pth", out.getvalue())
    return z, legacy


def make_pickle(z, legacy):
    src = zipfile.ZipFile(io.BytesIO(z))
    pkl = [n for n in src.namelist() if n.endswith("data.pkl")][0]
    put("pickle", "zip_data.pkl", src.read(pkl))
    put("pickle", "legacy_stream.pkl", legacy)
    value = {"a": [1, -2, 2**40, 2**70, -(2**65), 1.5, None, True, False], "b": ("s", "\u00e9" * 3, (1, 2)),
             "c": {1: 2, "k": ()}, "d": OrderedDict(x=[[], [[]]])}
    for proto in (2, 3, 4, 5):
        put("pickle", "plain_p%d.pkl" % proto, pickle.dumps(value, protocol=proto))
    # Refused: bytes (a _codecs global in protocol 2) and bytearray (BYTEARRAY8, protocol 5).
    put("pickle", "bytes_p2.pkl", pickle.dumps([b"by"], protocol=2))
    put("pickle", "bytearray_p5.pkl", pickle.dumps([bytearray(b"x")], protocol=5))
    # Refused globals (never executed): a GLOBAL and a STACK_GLOBAL naming os.system.
    put("pickle", "global_refused.pkl", b"\x80\x02cos\nsystem\nq\x00X\x02\x00\x00\x00lsq\x01\x85q\x02Rq\x03.")
    put("pickle", "stack_global_refused.pkl", b"\x80\x04\x8c\x02os\x94\x8c\x06system\x94\x93\x94.")
    # Malformed: memo reference to nothing, stack underflow, no STOP.
    put("pickle", "bad_memo.pkl", b"\x80\x02h\x05.")
    put("pickle", "underflow.pkl", b"\x80\x02s.")
    put("pickle", "no_stop.pkl", b"\x80\x02]q\x00(K\x01K\x02e")


def safetensors_bytes(tensors, metadata=None, raw_header=None):
    header, blobs, off = OrderedDict(), [], 0
    if metadata is not None:
        header["__metadata__"] = metadata
    for name, (dtype, shape, data) in tensors.items():
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [off, off + len(data)]}
        blobs.append(data)
        off += len(data)
    h = raw_header if raw_header is not None else json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + b"".join(blobs)


def make_safetensors():
    f32 = np.arange(6, dtype="<f4")
    tensors = OrderedDict()
    tensors["conv1.weight"] = ("F32", [2, 3], f32.tobytes())
    tensors["fc.weight"] = ("F16", [2, 2], np.arange(4, dtype="<f2").tobytes())
    tensors["fc.bias"] = ("BF16", [2], b"\x80\x3f\x00\x40")
    tensors["bn1.running_var"] = ("F64", [2], np.ones(2, dtype="<f8").tobytes())
    tensors["bn1.num_batches_tracked"] = ("I64", [], struct.pack("<q", 7))
    tensors["empty"] = ("F32", [0, 3], b"")
    put("safetensors", "weights.safetensors", safetensors_bytes(tensors, {"format": "pt", "arch": "resnet18"}))
    put("safetensors", "single.safetensors", safetensors_bytes(OrderedDict(w=("F32", [2, 3], f32.tobytes()))))
    put("safetensors", "int_types.safetensors", safetensors_bytes(OrderedDict(
        a=("I32", [2], struct.pack("<2i", -1, 5)), b=("U8", [3], b"\x00\x01\xff"), c=("BOOL", [1], b"\x01"),
        d=("I8", [1], b"\x80"), e=("I16", [1], b"\x01\x80"))))
    # Malformed: a repeated key, overlapping offsets, a header length past the file.
    put("safetensors", "duplicate_key.safetensors", safetensors_bytes(
        {}, raw_header=b'{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"a":{"dtype":"F32","shape":[1],'
                       b'"data_offsets":[0,4]}}') + b"\0\0\0\0")
    put("safetensors", "overlap.safetensors", safetensors_bytes(
        {}, raw_header=b'{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[1],'
                       b'"data_offsets":[4,8]}}') + b"\0" * 8)
    put("safetensors", "long_header.safetensors", struct.pack("<Q", 1 << 20) + b"{}")


def make_npy():
    def npy(a, **kw):
        b = io.BytesIO()
        np.save(b, a, **kw)
        return b.getvalue()

    x = np.arange(3 * 4 * 5, dtype=np.float32).reshape(3, 4, 5) / 7
    put("npy", "chw_f32.npy", npy(x))
    put("npy", "nchw_f64.npy", npy(x.astype(np.float64).reshape(1, 3, 4, 5)))
    put("npy", "scalar_f32.npy", npy(np.float32(2.5)))
    put("npy", "empty_f32.npy", npy(np.zeros((3, 0, 2), np.float32)))
    v1 = npy(x[:, :2, :2])
    # Version 2.0 and 3.0 headers (4-byte length) of the same array.
    hlen = struct.unpack("<H", v1[8:10])[0]
    header = v1[10:10 + hlen]
    body = v1[10 + hlen:]
    for major in (2, 3):
        pad = b" " * (-(12 + len(header)) % 64)
        h = header[:-1] + pad + b"\n"
        put("npy", "v%d.npy" % major, b"\x93NUMPY" + bytes([major, 0]) + struct.pack("<I", len(h)) + h + body)
    # Refused: Fortran order, an integer dtype, a structured dtype, truncated data.
    put("npy", "fortran.npy", npy(np.asfortranarray(x)))
    put("npy", "int32.npy", npy(np.arange(6, dtype=np.int32)))
    put("npy", "structured.npy", npy(np.zeros(2, dtype=[("a", "<f4"), ("b", "<i2")])))
    put("npy", "truncated.npy", v1[:-9])


def make_images():
    rng = np.random.RandomState(0)
    rgb = Image.fromarray(rng.randint(0, 256, (8, 8, 3), dtype=np.uint8), "RGB")

    def enc(img, fmt, **kw):
        b = io.BytesIO()
        img.save(b, fmt, **kw)
        return b.getvalue()

    put("image", "rgb.png", enc(rgb, "PNG"))
    put("image", "grey.png", enc(rgb.convert("L"), "PNG"))
    put("image", "rgba.png", enc(rgb.convert("RGBA"), "PNG"))
    put("image", "palette.png", enc(rgb.convert("P"), "PNG"))
    put("image", "grey16.png", enc(Image.fromarray(rng.randint(0, 65536, (8, 8)).astype(np.uint16)), "PNG"))
    put("image", "grey_alpha.png", enc(rgb.convert("LA"), "PNG"))
    jpg = enc(rgb, "JPEG", quality=90)
    put("image", "rgb.jpg", jpg)
    put("image", "grey.jpg", enc(rgb.convert("L"), "JPEG", quality=90))
    put("image", "progressive.jpg", enc(rgb, "JPEG", quality=75, progressive=True))
    put("image", "subsampled.jpg", enc(rgb.resize((16, 8)), "JPEG", quality=50, subsampling=2))
    png = enc(rgb, "PNG")
    put("image", "truncated.png", png[: len(png) - 20])
    put("image", "truncated.jpg", jpg[: len(jpg) // 2])


VOC = b"""<annotation>
  <folder>val</folder><filename>n01440764_1.JPEG</filename>
  <size><width>64</width><height>48</height><depth>3</depth></size>
  <object><name>n01440764</name><bndbox><xmin>2</xmin><ymin>3</ymin><xmax>40</xmax><ymax>30</ymax></bndbox></object>
  <object><name>n01440764</name><bndbox><xmin>10.5</xmin><ymin> 1 </ymin><xmax>64</xmax><ymax>48</ymax></bndbox></object>
</annotation>
"""


def make_voc():
    put("voc", "two_objects.xml", VOC)
    put("voc", "no_size.xml", b"<annotation><object><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>5</xmax>"
                              b"<ymax>6</ymax></bndbox></object></annotation>")
    put("voc", "bad_number.xml", VOC.replace(b"<xmax>40</xmax>", b"<xmax>4e</xmax>"))
    put("voc", "broken.xml", VOC[:150])
    put("voc", "outside.xml", VOC.replace(b"<xmax>64</xmax>", b"<xmax>99</xmax>"))


def make_boxes():
    lines = [
        {"file": "class_a/img0.png", "box": [1, 2, 30.5, 20], "label": 0},
        {"file": "./class_b/../class_b/img1.png", "boxes": [[0, 0, 8, 8], [4, 4, 40, 30]], "label": 1},
        {"file": "img2.png", "boxes": []},
    ]
    text = "\n".join(json.dumps(l) for l in lines).encode() + b"\n\n"
    put("boxes", "boxes.jsonl", text)
    put("boxes", "repeated_key.jsonl", b'{"file": "a.png", "box": [0, 0, 1, 1], "box": [0, 0, 2, 2]}\n')
    put("boxes", "bad_box.jsonl", b'{"file": "a.png", "box": [3, 0, 1, 1]}\n{"file": "b.png", "label": 1.5}\n')
    put("boxes", "not_json.jsonl", b'{"file": "a.png", "box": [0, 0, 1, 1]\n')
    put("boxes", "listed_twice.jsonl", b'{"file": "a.png"}\r\n{"file": "./a.png"}\r\n')


def make_stats():
    C, K = 3, 2
    rng = np.random.RandomState(1)

    def layer(name, c):
        return OrderedDict([
            (name + ".mean", ("F32", [c], rng.rand(c).astype("<f4").tobytes())),
            (name + ".std", ("F32", [c], rng.rand(c).astype("<f4").tobytes())),
            (name + ".shapiro_p", ("F32", [c], rng.rand(c).astype("<f4").tobytes())),
            (name + ".cls_p", ("F32", [c, K], rng.rand(c, K).astype("<f4").tobytes())),
        ])

    t = OrderedDict()
    t.update(layer("layer1.0.conv1", C))
    t.update(layer("features.0", 2))
    meta = {"model": "resnet18", "test": "student", "images_per_class": "[4, 5]"}
    put("stats", "stats.safetensors", safetensors_bytes(t, meta))
    put("stats", "no_meta.safetensors", safetensors_bytes(layer("conv1", 1)))
    bad = layer("conv1", 2)
    bad["conv1.std"] = ("F32", [1], b"\0\0\0\0")
    put("stats", "inconsistent.safetensors", safetensors_bytes(bad, {"images_per_class": "[1, 2]"}))
    put("stats", "bad_meta.safetensors", safetensors_bytes(layer("conv1", 1), {"images_per_class": "[1, x]"}))
    put("stats", "weights.safetensors", safetensors_bytes(OrderedDict(
        [("conv1.weight", ("F32", [1], b"\0\0\x80\x3f"))])))


def eval_record(image, method, seed, box="ok"):
    """A REPORT.jsonl record as parchgrad/evaluation's record_json and cmd_eval write it, with
    ratios 0, 0.5 and three deletion/insertion fractions (--ratios 0,0.5 --auc-steps 2)."""
    rng = np.random.RandomState(seed)
    p = [float(v) for v in np.sort(rng.rand(3))[::-1]]
    order = lambda: {"acc": [1, 0], "aopc": [0.0, p[0] - p[1]], "aopc_mean": (p[0] - p[1]) / 2,
                     "fracdiff": [0.0, p[0] - p[1]], "lodds": [-1e-10, None], "prob": [p[0], p[1]]}
    rec = OrderedDict(label=0, pred=0, p0=p[0], ratios=[0.0, 0.5], morf=order(), lerf=order())
    rec["deletion"] = {"fractions": [0.0, 0.5, 1.0], "prob": p, "auc": 0.25}
    rec["insertion"] = {"fractions": [0.0, 0.5, 1.0], "prob": p[::-1], "auc": 0.7}
    if box == "ok":
        rec["box"] = {"status": "ok", "area": 4830, "mu_in": 0.36, "mu_in_w": 3.77, "mu_out": 0.64,
                      "mu_out_w": 0.7, "pointing": True}
    elif box:
        rec["box"] = {"status": box, "reason": "every box lies outside the crop", "area": 0}
    rec.update(box_status=box or "none", image=image, image_path="/data/" + image, method=method, settings_id="fuzz")
    return rec


def make_jsonl():
    """eval's REPORT.jsonl (settings id "fuzz", as tests/fuzz/fuzz_jsonl.cpp reads it) and
    saliency's results.jsonl."""
    lines = [eval_record("a/1.png", "grad", 1), eval_record("a/1.png", "grad+cls", 2, box="invalid"),
             {"image": "a/2.png", "image_path": "/data/a/2.png", "method": "grad", "skipped": "no map",
              "box_status": "none", "settings_id": "fuzz"},
             {"image": "b/3.png", "image_path": "/data/b/3.png", "method": "*", "skipped": "truncated PNG",
              "settings_id": "fuzz"},
             eval_record("b/4.png", "grad", 3, box=None)]
    text = "".join(json.dumps(l) + "\n" for l in lines).encode()
    put("jsonl", "report.jsonl", text)
    put("jsonl", "report_partial.jsonl", text + json.dumps(eval_record("c/5.png", "grad", 4)).encode()[:200])
    put("jsonl", "other_settings.jsonl", text.replace(b'"fuzz"', b'"0123abcd"', 1))
    other = eval_record("c/6.png", "grad", 5)
    other["ratios"] = [0.0, 0.1]
    put("jsonl", "other_ratios.jsonl", text + json.dumps(other).encode() + b"\n")
    put("jsonl", "not_json.jsonl", text + b'{"image": "x.png", "method": "grad"\n')

    def saliency(name, configs, compare=False):
        rec = {"input": "in/%s.png" % name, "outputs": [
            {"config": c, "map": "out/%s.%s.npy" % (name, c), "overlay": "out/%s.%s.png" % (name, c)} for c in configs],
            "settings": {"method": configs[0], "ig_baseline": "zero"}, "target": 3, "top5": [{"class": 3, "prob": 0.9}]}
        if compare:
            rec["compare"] = "out/%s.compare.png" % name
        return rec
    runs = [saliency("cat", ["grad"]), saliency("dog", ["grad", "grad+cls"], True), saliency("cat", ["grad"])]
    put("jsonl", "results.jsonl", "".join(json.dumps(r) + "\n" for r in runs).encode())
    put("jsonl", "results_partial.jsonl", (json.dumps(runs[0]) + "\n" + json.dumps(runs[1])[:90]).encode())


def main():
    if os.path.isdir(OUT):
        shutil.rmtree(OUT)
    z, legacy = make_pth()
    make_pickle(z, legacy)
    make_safetensors()
    make_npy()
    make_images()
    make_voc()
    make_boxes()
    make_stats()
    make_jsonl()
    total = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(OUT) for f in fs)
    print("corpus: %d bytes in %s" % (total, OUT))
    if total > 200 * 1024:
        sys.exit("corpus larger than 200 KB")


if __name__ == "__main__":
    main()
