"""`parchgrad eval` against the PyTorch oracle in eval_ref.py (method document, section 7).

Random-weight torchvision-shaped models (a small BasicBlock ResNet with 6 classes, a small
Bottleneck ResNet, and resnet18 with 1000 classes), .npy inputs in an ImageFolder tree (the
exact-tensor path: no preprocessing in between), and fixed maps handed to the engine with
`--methods maps:DIR`: continuous maps, maps with heavy ties (values in {0, 1, 2}), maps with NaN
and negative values, all-zero and constant maps (every pixel tied: the order is the pixel index
order, for MoRF and LeRF alike). Boxes come from a boxes.jsonl in input coordinates, including
one outside the input and one covering all of it (both invalid).

Every probability-valued number (prob, AOPC, fracdiff, the deletion/insertion curves and areas)
within 1e-5 absolute of the oracle, LODDS within 1e-4, accuracy identical unless the copy's top
two probabilities are within 1e-5 (a float32 near-tie), box metrics within 1e-6.

Also: the engine's own maps (grad, grad+cls) give the metrics the oracle gives for the maps
`parchgrad saliency` writes, resuming a killed run gives the same report as one run, and bad
input (broken annotation, image without annotation, corrupt image, stats of another model,
missing maps) is reported and counted.
"""
import json
import math
import os
import shutil
import subprocess

import numpy as np
import pytest
import torch
from torchvision.models.resnet import BasicBlock, Bottleneck

import eval_ref as ref
import parity_common as pc

torch.set_num_threads(2)
BIN = pc.binary_path()
SRC = os.environ.get("PARCHGRAD_SRC", os.path.join(os.path.dirname(__file__), "..", ".."))
RATIOS = [0.0, 0.1, 0.2, 0.3, 0.4, 0.5]
STEPS = 10

pytestmark = pytest.mark.skipif(BIN is None, reason="engine binary not built")


def run(args, check=True, timeout=600):
    proc = subprocess.run([BIN] + args, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"parchgrad {' '.join(args)} failed ({proc.returncode}): {proc.stderr}")
    return proc


def error_lines(stderr):
    return [l for l in stderr.splitlines() if l.startswith("parchgrad: error:")]


def read_jsonl(path):
    with open(path) as f:
        return [json.loads(l) for l in f if l.strip()]


def fixed_maps(H, W, rng):
    """name -> map; several kinds of ties."""
    cont = rng.standard_normal((H, W)).astype(np.float32)
    ties = rng.integers(0, 3, (H, W)).astype(np.float32)
    nanneg = rng.standard_normal((H, W)).astype(np.float32)
    nanneg[rng.random((H, W)) < 0.05] = np.nan
    return {"cont": cont, "ties": ties, "nanneg": nanneg, "zero": np.zeros((H, W), np.float32),
            "const": np.full((H, W), 0.25, np.float32)}


def make_case(tmp, model, num_classes, H, W, per_class, seed):
    """An ImageFolder of .npy inputs, a boxes.jsonl, one maps folder per map kind."""
    rng = np.random.default_rng(seed)
    data = os.path.join(tmp, "data")
    # An ImageNet model's folders must say their classes (by name here; WordNet ids only when all
    # 1000 are there): ImageNet classes 0, 1 and 2, whose sorted order is not their id order.
    classes = ["tench", "goldfish", "great white shark"] if num_classes == 1000 else \
        [f"c{k}" for k in range(min(3, num_classes))]
    items = []
    for k, c in enumerate(classes):
        os.makedirs(os.path.join(data, c), exist_ok=True)
        for i in range(per_class):
            x = rng.standard_normal((3, H, W)).astype(np.float32)
            rel = f"{c}/img{k}_{i}.npy"
            np.save(os.path.join(data, rel), x)
            items.append((rel, k, x))
    boxes = []
    for j, (rel, k, x) in enumerate(items):
        if j == 1:
            b = [W + 3, 0, W + 9, H]          # outside the input: invalid
        elif j == 2:
            b = [-5, -5, W + 5, H + 5]        # covers everything: invalid
        else:
            x0, y0 = rng.uniform(0, W / 2), rng.uniform(0, H / 2)
            b = [x0, y0, x0 + rng.uniform(4, W / 2), y0 + rng.uniform(4, H / 2)]
        boxes.append({"file": rel, "box": [float(v) for v in b]})
    # A second box for one image: the union is used.
    boxes[0]["boxes"] = [[1.0, 1.0, 5.5, 9.25]]
    with open(os.path.join(data, "boxes.jsonl"), "w") as f:
        for b in boxes:
            f.write(json.dumps(b) + "\n")
    maps = {}
    for rel, k, x in items:
        for name, m in fixed_maps(H, W, rng).items():
            d = os.path.join(tmp, "maps_" + name)
            os.makedirs(d, exist_ok=True)
            np.save(os.path.join(d, os.path.splitext(os.path.basename(rel))[0] + ".npy"), m)
            maps[(rel, name)] = m
    weights = os.path.join(tmp, "w.pth")
    torch.save(pc.model_state_dict(model), weights)
    return data, items, boxes, maps, weights


def compare(rec, want, label):
    """Asserts one engine record against the oracle's; returns the worst probability error."""
    worst = 0.0
    assert rec["label"] == label and rec["pred"] == want["pred"]
    assert abs(rec["p0"] - want["p0"]) < 1e-5
    for order in ("morf", "lerf"):
        e, w = rec[order], want[order]
        for key in ("prob", "aopc", "fracdiff"):
            d = np.max(np.abs(np.array(e[key]) - np.array(w[key])))
            worst = max(worst, d)
            assert d < 1e-5, (order, key, e[key], w[key])
        assert abs(e["aopc_mean"] - w["aopc_mean"]) < 1e-5
        assert np.max(np.abs(np.array(e["lodds"]) - np.array(w["lodds"]))) < 1e-4, (order, e["lodds"], w["lodds"])
        if want["min_top2_margin"] > 1e-5:
            assert e["acc"] == w["acc"], (order, e["acc"], w["acc"])
    for curve in ("deletion", "insertion"):
        d = np.max(np.abs(np.array(rec[curve]["prob"]) - np.array(want[curve]["prob"])))
        worst = max(worst, d)
        assert d < 1e-5, (curve, rec[curve]["prob"], want[curve]["prob"])
        assert abs(rec[curve]["auc"] - want[curve]["auc"]) < 1e-5
        assert np.allclose(rec[curve]["fractions"], want[curve]["fractions"])
    if "box" in want:
        b, wb = rec["box"], want["box"]
        assert b["status"] == wb["status"], (b, wb)
        assert b["area"] == wb["area"]
        if wb["status"] == "ok":
            for k in ("mu_in", "mu_in_w", "mu_out", "mu_out_w"):
                assert abs(b[k] - wb[k]) <= 1e-6 * max(1.0, abs(wb[k])), (k, b[k], wb[k])
            assert b["pointing"] == wb["pointing"]
    return worst


MODELS = {
    "resnet_small_basic": lambda: (pc.build_small_resnet(BasicBlock, num_classes=6, seed=11), 6, 64, 64, 2),
    "resnet_small_bottleneck": lambda: (pc.build_small_resnet(Bottleneck, widths=(8, 16, 32, 64), num_classes=5,
                                                              seed=12), 5, 48, 56, 1),
    "resnet18": lambda: (pc.build_model("resnet18", seed=13), 1000, 64, 64, 1),
}


@pytest.mark.parametrize("name", list(MODELS))
def test_metrics_match_oracle(name, tmp_path):
    model, K, H, W, per_class = MODELS[name]()
    x_all = pc.make_input(4, H, W, seed=5)
    pc.calibrate_logits(model, x_all)
    tmp = str(tmp_path)
    data, items, boxes, maps, weights = make_case(tmp, model, K, H, W, per_class, seed=pc.stable_seed(name))
    kinds = ["cont", "ties", "nanneg", "zero", "const"]
    methods = ",".join(f"maps:{os.path.join(tmp, 'maps_' + k)}" for k in kinds)
    out = os.path.join(tmp, "report")
    run(["eval", "--weights", weights, "--data", data, "--methods", methods, "--auc-steps", str(STEPS),
         "--ratios", ",".join(str(r) for r in RATIOS), "--out", out, "--batch", "7", "--perturb-batch", "9"])
    recs = read_jsonl(out + ".jsonl")
    assert len(recs) == len(items) * len(kinds)
    by = {(r["image"], r["method"]): r for r in recs}
    worst = 0.0
    box_of = {b["file"]: [b["box"]] + b.get("boxes", []) for b in boxes}
    for rel, label, x in items:
        mask = ref.box_mask(H, W, box_of[rel])
        for k in kinds:
            want = ref.evaluate(model, torch.from_numpy(x), label, torch.from_numpy(maps[(rel, k)]), RATIOS, STEPS, mask)
            rec = by[(os.path.join(data, rel), f"maps:{os.path.join(tmp, 'maps_' + k)}")]
            worst = max(worst, compare(rec, want, label))
            if k in ("zero", "const"):
                # Every pixel tied: MoRF and LeRF remove the same pixels (index order).
                assert rec["morf"]["prob"] == rec["lerf"]["prob"]
    print(f"{name}: worst probability difference {worst:.2e}")
    summary = json.load(open(out + ".json"))
    assert summary["counts"]["box_invalid"] == 2 and summary["counts"]["box_ok"] == len(items) - 2
    m = summary["methods"][f"maps:{os.path.join(tmp, 'maps_cont')}"]
    assert m["images"] == len(items)
    aopc = [by[(os.path.join(data, rel), f"maps:{os.path.join(tmp, 'maps_cont')}")]["morf"]["aopc_mean"]
            for rel, _, _ in items]
    assert abs(m["metrics"]["morf"]["aopc_mean"]["mean"] - np.mean(aopc)) < 1e-12
    if len(aopc) > 1:
        from scipy import stats as st
        lo, hi = st.t.interval(0.95, len(aopc) - 1, loc=np.mean(aopc), scale=st.sem(aopc))
        assert np.allclose(m["metrics"]["morf"]["aopc_mean"]["ci95"], [lo, hi], rtol=1e-9, atol=1e-12)
    assert os.path.getsize(out + ".png") > 1000 and "| method |" in open(out + ".md").read()


def default_model_paths():
    d = os.path.join(SRC, "assets", "default")
    return os.path.join(d, "resnet_synth.pth"), os.path.join(d, "stats.safetensors"), os.path.join(d, "examples")


def load_default_model():
    from torchvision.models.resnet import ResNet
    weights, _, _ = default_model_paths()
    model = pc.build_small_resnet(BasicBlock, num_classes=6, seed=0)
    model.load_state_dict(torch.load(weights))
    return model.eval()


def test_engine_maps_match_saliency_and_oracle(tmp_path):
    """eval's own grad / grad+cls maps are those `parchgrad saliency` writes, and the metrics
    computed from them are the oracle's."""
    weights, stats, examples = default_model_paths()
    tmp = str(tmp_path)
    out = os.path.join(tmp, "report")
    run(["eval", "--weights", weights, "--stats", stats, "--data", examples, "--methods", "grad,grad+cls",
         "--auc-steps", str(STEPS), "--out", out])
    recs = {(os.path.basename(r["image"]), r["method"]): r for r in read_jsonl(out + ".jsonl")}
    model = load_default_model()
    boxes = {json.loads(l)["file"]: json.loads(l) for l in open(os.path.join(examples, "boxes.jsonl"))}
    for method, extra in (("grad", []), ("grad+cls", ["--parchgrad", "cls", "--stats", stats])):
        sal = os.path.join(tmp, "sal_" + method)
        for f, b in boxes.items():
            img = os.path.join(examples, f)
            run(["saliency", "--weights", weights, "--target", str(b["label"]), "--out", sal, img] + extra)
            xnpy = os.path.join(tmp, f + ".x.npy")
            run(["preprocess", img, "-o", xnpy])
            x = torch.from_numpy(np.load(xnpy))
            A = np.load(os.path.join(sal, os.path.splitext(f)[0] + ".npy"))
            # 256x256 images: the resize is the identity and the crop starts at 16.
            x0, y0, x1, y1 = b["box"]
            mask = ref.box_mask(224, 224, [[x0 - 16, y0 - 16, x1 - 16, y1 - 16]])
            want = ref.evaluate(model, x, b["label"], torch.from_numpy(A), RATIOS, STEPS, mask)
            compare(recs[(f, method)], want, b["label"])


def test_resume_after_kill_equals_one_run(tmp_path):
    weights, stats, examples = default_model_paths()
    tmp = str(tmp_path)
    args = ["eval", "--weights", weights, "--data", examples, "--methods", "grad,inputgrad", "--auc-steps", "4"]
    full = os.path.join(tmp, "full")
    run(args + ["--out", full])
    part = os.path.join(tmp, "part")
    run(args + ["--out", part, "--limit", "2"])
    # A run killed while writing: a partial line at the end.
    with open(part + ".jsonl", "a") as f:
        f.write('{"image": "x", "method": "gr')
    p = run(args + ["--out", part])
    assert "partial last line" in p.stderr
    a, b = read_jsonl(full + ".jsonl"), read_jsonl(part + ".jsonl")
    assert len(a) == len(b) == 12
    key = lambda r: (r["image"], r["method"])
    assert sorted(a, key=key) == sorted(b, key=key)
    assert json.load(open(full + ".json"))["methods"] == json.load(open(part + ".json"))["methods"]
    # Nothing left to do: a third run changes nothing.
    run(args + ["--out", part])
    assert read_jsonl(part + ".jsonl") == b
    # Other settings into the same report are refused.
    p = run(args + ["--out", part, "--ratios", "0,0.2"], check=False)
    assert p.returncode == 1 and "other settings" in p.stderr


def write_png(path, w, h, seed):
    from PIL import Image
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(path)


VOC = """<annotation><filename>{name}</filename><size><width>{w}</width><height>{h}</height><depth>3</depth></size>
{objects}</annotation>"""
OBJ = "<object><name>n01</name><bndbox><xmin>{}</xmin><ymin>{}</ymin><xmax>{}</xmax><ymax>{}</ymax></bndbox></object>"


def test_voc_boxes_and_bad_annotations(tmp_path):
    """ImageNet-style folders and VOC XML: the union of several boxes, mapped through resize and
    crop; broken, mismatched and missing annotations and a corrupt image are reported and
    counted; the run exits 1 because some inputs were bad, after writing the whole report."""
    tmp = str(tmp_path)
    model = pc.build_small_resnet(BasicBlock, num_classes=3, seed=21)
    weights = os.path.join(tmp, "w.pth")
    torch.save(pc.model_state_dict(model), weights)
    data, ann = os.path.join(tmp, "val"), os.path.join(tmp, "ann")
    os.makedirs(ann)
    for c in ("a", "b", "c"):
        os.makedirs(os.path.join(data, c))
    write_png(os.path.join(data, "a", "land.png"), 500, 375, 1)
    with open(os.path.join(ann, "land.xml"), "w") as f:
        f.write(VOC.format(name="land", w=500, h=375, objects=OBJ.format(101, 51, 300, 250) + OBJ.format(41, 1, 60, 375)))
    write_png(os.path.join(data, "b", "port.png"), 300, 400, 2)
    with open(os.path.join(ann, "port.xml"), "w") as f:
        f.write(VOC.format(name="port", w=300, h=400, objects=OBJ.format(1, 1, 300, 400)))
    write_png(os.path.join(data, "b", "broken.png"), 260, 260, 3)
    with open(os.path.join(ann, "broken.xml"), "w") as f:
        f.write("<annotation><size><width>260</width><height>260</height></size><object><bndbox><xmin>5</xmin>")
    write_png(os.path.join(data, "c", "mismatch.png"), 260, 270, 4)
    with open(os.path.join(ann, "mismatch.xml"), "w") as f:
        f.write(VOC.format(name="mismatch", w=640, h=480, objects=OBJ.format(1, 1, 20, 20)))
    write_png(os.path.join(data, "c", "noann.png"), 256, 256, 5)
    with open(os.path.join(data, "c", "corrupt.png"), "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    out = os.path.join(tmp, "r")
    p = run(["eval", "--weights", weights, "--data", data, "--boxes", ann, "--methods", "grad", "--auc-steps", "2",
             "--out", out], check=False)
    assert p.returncode == 1, p.stderr
    assert "broken.xml: broken XML" in p.stderr
    assert "640x480" in p.stderr
    assert "corrupt.png" in p.stderr
    counts = json.load(open(out + ".json"))["counts"]
    assert counts == {"images_listed": 6, "images_unreadable": 1, "box_ok": 1, "box_none": 1, "box_invalid": 1,
                      "box_error": 2}, counts
    recs = {os.path.basename(r["image"]): r for r in read_jsonl(out + ".jsonl")}
    assert recs["corrupt.png"]["skipped"]
    # land.png: 500x375 -> 341x256, crop at (58, 16). Box 1 [100, 300) x [50, 250) covers columns
    # 10..146 and rows 18..154; box 2 [40, 60) x [0, 375) ends at column 60*0.682-58 < 0: outside.
    assert recs["land.png"]["box"]["status"] == "ok" and recs["land.png"]["box"]["area"] == 137 * 137
    # port.png: the box is the whole image, so it covers the whole crop: invalid.
    assert recs["port.png"]["box"]["status"] == "invalid"
    assert recs["noann.png"]["box_status"] == "none"
    assert recs["broken.png"]["box_status"] == "error" and recs["mismatch.png"]["box_status"] == "error"


def test_bad_inputs(tmp_path):
    weights, stats, examples = default_model_paths()
    tmp = str(tmp_path)
    other = pc.build_small_resnet(BasicBlock, num_classes=3, seed=3)
    ow = os.path.join(tmp, "other.pth")
    torch.save(pc.model_state_dict(other), ow)
    # Stats of another model.
    p = run(["eval", "--weights", ow, "--stats", stats, "--data", examples, "--methods", "grad+cls",
             "--out", os.path.join(tmp, "a")], check=False)
    errs = error_lines(p.stderr)
    assert p.returncode == 1 and len(errs) == 1 and "stats.safetensors: has statistics for 6 classes" in errs[0], p.stderr
    # Empty folder.
    os.makedirs(os.path.join(tmp, "empty"))
    p = run(["eval", "--weights", weights, "--data", os.path.join(tmp, "empty"), "--out", os.path.join(tmp, "b")],
            check=False)
    errs = error_lines(p.stderr)
    assert p.returncode == 1 and len(errs) == 1 and "empty" in errs[0], p.stderr
    # Bad ratios, unknown method, missing maps.
    for extra, msg in ((["--ratios", "0,1.5"], "--ratios"), (["--methods", "nope"], "nope")):
        p = run(["eval", "--weights", weights, "--data", examples, "--out", os.path.join(tmp, "c")] + extra, check=False)
        assert p.returncode == 1 and msg in p.stderr, p.stderr
    p = run(["eval", "--weights", weights, "--data", examples, "--methods", "maps:" + os.path.join(tmp, "nomaps"),
             "--auc-steps", "2", "--out", os.path.join(tmp, "d")], check=False)
    assert p.returncode == 1 and "no map for" in p.stderr
    recs = read_jsonl(os.path.join(tmp, "d.jsonl"))
    assert len(recs) == 6 and all("skipped" in r for r in recs)
    assert json.load(open(os.path.join(tmp, "d.json")))["methods"]["maps:" + os.path.join(tmp, "nomaps")]["skipped"] == 6


def test_preset_preprocessing_maps_boxes(tmp_path):
    """eval --preprocess convnext_tiny (resize 236, centre crop 224, bilinear): the images are what
    torchvision's transform makes of them, the boxes are mapped through the same resize and crop
    (the 256x256 examples become 236x236, cropped at 6), and the metrics of fixed maps are the
    oracle's; the preprocessing is in REPORT.json's settings, resuming the report with other
    preprocessing is refused, and an unknown preset is refused in one line."""
    import torchvision.transforms as T
    from PIL import Image
    weights, _, examples = default_model_paths()
    tmp = str(tmp_path)
    boxes = {json.loads(l)["file"]: json.loads(l) for l in open(os.path.join(examples, "boxes.jsonl"))}
    files = sorted(boxes)[:2]  # what --limit 2 takes of the flat folder (sorted)
    rng = np.random.default_rng(7)
    mdir = os.path.join(tmp, "maps")
    os.makedirs(mdir)
    maps = {}
    for f in files:
        maps[f] = rng.standard_normal((224, 224)).astype(np.float32)
        np.save(os.path.join(mdir, os.path.splitext(f)[0] + ".npy"), maps[f])
    out = os.path.join(tmp, "report")
    args = ["eval", "--weights", weights, "--data", examples, "--methods", "maps:" + mdir, "--limit", "2",
            "--auc-steps", str(STEPS), "--out", out]
    run(args + ["--preprocess", "convnext_tiny"])
    recs = {os.path.basename(r["image"]): r for r in read_jsonl(out + ".jsonl")}
    model = load_default_model()
    tf = T.Compose([T.Resize(236, interpolation=T.InterpolationMode.BILINEAR), T.CenterCrop(224), T.ToTensor(),
                    T.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))])
    moved = 0
    for f in files:
        img = Image.open(os.path.join(examples, f)).convert("RGB")
        assert img.size == (256, 256)
        x = tf(img)
        s = 236 / 256
        x0, y0, x1, y1 = [v * s - 6 for v in boxes[f]["box"]]
        mask = ref.box_mask(224, 224, [[x0, y0, x1, y1]])
        b0 = boxes[f]["box"]
        moved += int(mask.sum() != ref.box_mask(224, 224, [[v - 16 for v in b0]]).sum())
        want = ref.evaluate(model, x, boxes[f]["label"], torch.from_numpy(maps[f]), RATIOS, STEPS, mask)
        assert recs[f]["box"]["status"] == "ok"
        compare(recs[f], want, boxes[f]["label"])
    assert moved > 0  # the 256/224 mapping would have given other boxes
    pre = json.load(open(out + ".json"))["settings"]["preprocess"]
    assert pre["name"] == "ConvNeXt_Tiny_Weights.IMAGENET1K_V1" and (pre["resize"], pre["crop"]) == (236, 224)
    assert pre["interpolation"] == "bilinear"
    # The same report with the default preprocessing (this model's: ImageNet's 256/224): refused.
    p = run(args, check=False)
    assert p.returncode == 1 and "other settings" in p.stderr, p.stderr
    p = run(args + ["--preprocess", "convnext_tiny", "--crop", "200"], check=False)
    assert p.returncode == 1 and "other settings" in p.stderr, p.stderr
    p = run(args + ["--preprocess", "nope", "--no-resume"], check=False)
    assert p.returncode != 0 and len(error_lines(p.stderr)) == 1 and "unknown preset 'nope'" in p.stderr, p.stderr
