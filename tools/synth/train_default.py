#!/usr/bin/env python3
"""Train the bundled default classifier on the synthetic shapes data set.

The model is a torchvision-shaped ResNet (torchvision.models.resnet.ResNet with
BasicBlock: identical module names and structure, hence identical state_dict
keys) with reduced widths.  Input pipeline = the inference transform
(Resize(256), CenterCrop(224), ToTensor, Normalize(ImageNet mean/std)) applied
once up front, plus random flips / 90-degree rotations during training.  To
fit in a few CPU minutes the first epochs see that input area-downsampled to
112x112 (progressive resizing); the last epochs (default 2) train on the exact
224x224 inference input, and held-out accuracy is always measured on it.

Usage:
    /usr/bin/python3 tools/synth/train_default.py --data DIR --out assets/default \
        [--heldout DIR] [--examples DIR] [--epochs E] [--seed S] [--init PTH]

The bundled model was trained in two runs (see tools/synth/README.md): 15
epochs mostly at 112x112, then 5 epochs at 224x224 started from those weights
(--init, --lowres-epochs 0).

DIR/train and DIR/heldout are used when --data has those sub-directories
(otherwise --data is the training set and --heldout must be given).  Writes
OUT/resnet_synth.pth (state_dict, zip format), OUT/classes.txt and
OUT/train_log.json.
"""
import argparse
import hashlib
import json
import os
import platform
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision
from PIL import Image
from torchvision import transforms
from torchvision.models.resnet import BasicBlock, ResNet

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


class SmallResNet(ResNet):
    """torchvision ResNet/BasicBlock with configurable stage widths.

    Builds exactly the modules torchvision.models.resnet.ResNet builds (conv1,
    bn1, relu, maxpool, layer1..layer4, avgpool, fc; same BasicBlock and
    downsample layout), only with `widths` instead of (64, 128, 256, 512).
    forward() is torchvision's.
    """

    def __init__(self, widths=(16, 32, 64, 128), layers=(1, 1, 1, 1), num_classes=6):
        nn.Module.__init__(self)
        self._norm_layer = nn.BatchNorm2d
        self.inplanes = widths[0]
        self.dilation = 1
        self.groups = 1
        self.base_width = 64
        self.conv1 = nn.Conv2d(3, self.inplanes, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(self.inplanes)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(BasicBlock, widths[0], layers[0])
        self.layer2 = self._make_layer(BasicBlock, widths[1], layers[1], stride=2)
        self.layer3 = self._make_layer(BasicBlock, widths[2], layers[2], stride=2)
        self.layer4 = self._make_layer(BasicBlock, widths[3], layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(widths[3], num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)


def check_torchvision_keys(model, layers):
    """The state_dict keys must equal those of torchvision's own ResNet."""
    ref = ResNet(BasicBlock, list(layers), num_classes=model.fc.out_features)
    a, b = list(model.state_dict().keys()), list(ref.state_dict().keys())
    if a != b:
        raise RuntimeError("state_dict keys differ from torchvision's ResNet")
    for (ka, va), (kb, vb) in zip(model.named_modules(), ref.named_modules()):
        if ka != kb or (ka and type(va) is not type(vb)):
            raise RuntimeError("module tree differs from torchvision's ResNet at %r" % ka)


def load_split(root, classes):
    """Decode an ImageFolder tree once: uint8 N x 3 x 224 x 224 (eval transform
    without the float conversion) and int64 labels."""
    pre = transforms.Compose([transforms.Resize(256), transforms.CenterCrop(224)])
    files = []
    for k, name in enumerate(classes):
        d = os.path.join(root, name)
        for f in sorted(os.listdir(d)):
            if f.lower().endswith(".png"):
                files.append((os.path.join(d, f), k))
    x = torch.empty((len(files), 3, 224, 224), dtype=torch.uint8)
    y = torch.empty(len(files), dtype=torch.int64)
    for i, (path, k) in enumerate(files):
        img = pre(Image.open(path).convert("RGB"))
        x[i] = torch.from_numpy(np.asarray(img, dtype=np.uint8).copy()).permute(2, 0, 1)
        y[i] = k
    return x, y


def normalise(xb):
    """uint8 batch -> ToTensor + Normalize (bit-identical to the torchvision transforms)."""
    xb = xb.float().div_(255.0)
    mean = torch.tensor(MEAN).view(1, 3, 1, 1)
    std = torch.tensor(STD).view(1, 3, 1, 1)
    return (xb - mean) / std


def augment(xb, gen):
    """Random horizontal flip and 90-degree rotation (per sample)."""
    n = xb.shape[0]
    flip = torch.rand(n, generator=gen) < 0.5
    xb = torch.where(flip.view(n, 1, 1, 1), xb.flip(3), xb)
    k = torch.randint(0, 4, (n,), generator=gen)
    out = xb.clone()
    for r in range(1, 4):
        sel = k == r
        if sel.any():
            out[sel] = torch.rot90(xb[sel], r, dims=(2, 3))
    return out


@torch.no_grad()
def evaluate(model, x, y, bs=200):
    model.eval()
    correct, loss = 0, 0.0
    per_class = torch.zeros(int(y.max()) + 1, 2)
    for i in range(0, len(x), bs):
        logits = model(normalise(x[i:i + bs]))
        loss += F.cross_entropy(logits, y[i:i + bs], reduction="sum").item()
        pred = logits.argmax(1)
        ok = pred == y[i:i + bs]
        correct += ok.sum().item()
        for k in range(per_class.shape[0]):
            m = y[i:i + bs] == k
            per_class[k, 0] += ok[m].sum()
            per_class[k, 1] += m.sum()
    return correct / len(x), loss / len(x), (per_class[:, 0] / per_class[:, 1].clamp(min=1)).tolist()


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True,
                   help="training ImageFolder tree, or a directory with train/ and heldout/")
    p.add_argument("--heldout", default=None, help="held-out ImageFolder tree")
    p.add_argument("--examples", default=None,
                   help="optional flat example directory (with boxes.jsonl) to report predictions on")
    p.add_argument("--out", required=True, help="output directory (e.g. assets/default)")
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--wd", type=float, default=5e-4)
    p.add_argument("--widths", default="16,32,64,128")
    p.add_argument("--blocks", default="1,1,1,1")
    p.add_argument("--init", default=None,
                   help="start from this state_dict (e.g. a first, mostly low-resolution "
                        "stage); its train_log.json, if next to it, is embedded in the new log")
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads (default 1: on a busy 2-core machine one "
                        "thread was 3x faster than two)")
    p.add_argument("--lowres", type=int, default=112,
                   help="input side used during the first --lowres-epochs epochs "
                        "(progressive resizing; the last epochs use the exact 224 eval input)")
    p.add_argument("--lowres-epochs", type=int, default=None,
                   help="epochs at --lowres (default: all but the last 2; 0 disables)")
    a = p.parse_args(argv)

    torch.set_num_threads(a.threads)
    if a.lowres_epochs is None:
        a.lowres_epochs = max(a.epochs - 2, 0)
    torch.manual_seed(a.seed)
    gen = torch.Generator().manual_seed(a.seed)
    widths = tuple(int(v) for v in a.widths.split(","))
    blocks = tuple(int(v) for v in a.blocks.split(","))

    train_dir, held_dir = a.data, a.heldout
    if held_dir is None:
        train_dir, held_dir = os.path.join(a.data, "train"), os.path.join(a.data, "heldout")
    with open(os.path.join(train_dir, "classes.txt")) as f:
        classes = [l.strip() for l in f if l.strip()]

    t0 = time.time()
    xtr, ytr = load_split(train_dir, classes)
    xte, yte = load_split(held_dir, classes)
    t_load = time.time() - t0
    print("decoded %d train / %d held-out images in %.1f s" % (len(xtr), len(xte), t_load), flush=True)

    model = SmallResNet(widths, blocks, len(classes))
    check_torchvision_keys(model, blocks)
    init_info = None
    if a.init:
        model.load_state_dict(torch.load(a.init, map_location="cpu"))
        with open(a.init, "rb") as f:
            init_info = {"file": a.init, "sha256": hashlib.sha256(f.read()).hexdigest()}
        prev = os.path.join(os.path.dirname(a.init), "train_log.json")
        if os.path.exists(prev):
            with open(prev) as f:
                init_info["train_log"] = json.load(f)
    n_params = sum(p.numel() for p in model.parameters())
    opt = torch.optim.AdamW(model.parameters(), lr=a.lr, weight_decay=a.wd)
    steps = (len(xtr) + a.batch - 1) // a.batch
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=a.lr, epochs=a.epochs,
                                                steps_per_epoch=steps, pct_start=0.2)
    history = []
    t_train = time.time()
    for ep in range(a.epochs):
        model.train()
        perm = torch.randperm(len(xtr), generator=gen)
        tot, correct, seen = 0.0, 0, 0
        te = time.time()
        for s in range(steps):
            idx = perm[s * a.batch:(s + 1) * a.batch]
            xb = normalise(augment(xtr[idx], gen))
            if ep < a.lowres_epochs:
                xb = F.interpolate(xb, size=(a.lowres, a.lowres), mode="area")
            yb = ytr[idx]
            logits = model(xb)
            loss = F.cross_entropy(logits, yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            tot += loss.item() * len(idx)
            correct += (logits.argmax(1) == yb).sum().item()
            seen += len(idx)
        acc, hl, _ = evaluate(model, xte, yte)
        rec = {"epoch": ep + 1, "train_loss": round(tot / seen, 5),
               "train_acc": round(correct / seen, 5), "heldout_loss": round(hl, 5),
               "heldout_acc": round(acc, 5), "seconds": round(time.time() - te, 1),
               "input_side": a.lowres if ep < a.lowres_epochs else 224}
        history.append(rec)
        print(json.dumps(rec), flush=True)
    t_train = time.time() - t_train

    acc, hl, per_class = evaluate(model, xte, yte)
    os.makedirs(a.out, exist_ok=True)
    wpath = os.path.join(a.out, "resnet_synth.pth")
    model.eval()
    torch.save(model.state_dict(), wpath)
    with open(os.path.join(a.out, "classes.txt"), "w") as f:
        f.write("\n".join(classes) + "\n")

    examples = None
    if a.examples:
        examples = []
        tf = transforms.Compose([transforms.Resize(256), transforms.CenterCrop(224),
                                 transforms.ToTensor(), transforms.Normalize(MEAN, STD)])
        with open(os.path.join(a.examples, "boxes.jsonl")) as f:
            recs = [json.loads(l) for l in f if l.strip()]
        with torch.no_grad():
            for r in recs:
                xb = tf(Image.open(os.path.join(a.examples, r["file"])).convert("RGB"))[None]
                prob = F.softmax(model(xb), 1)[0]
                k = int(prob.argmax())
                examples.append({"file": r["file"], "label": r["label"], "pred": k,
                                 "pred_class": classes[k], "prob": round(float(prob[k]), 4)})
                print("example %-16s label %d pred %d (%s, p=%.3f)"
                      % (r["file"], r["label"], k, classes[k], float(prob[k])))

    with open(wpath, "rb") as f:
        sha = hashlib.sha256(f.read()).hexdigest()
    log = {
        "command": " ".join([os.path.basename(sys.executable)] + sys.argv),
        "args": vars(a),
        "seed": a.seed,
        "classes": classes,
        "architecture": {"family": "torchvision.models.resnet.ResNet", "block": "BasicBlock",
                         "widths": list(widths), "blocks": list(blocks),
                         "num_classes": len(classes), "parameters": n_params},
        "input": {"resize": 256, "center_crop": 224, "mean": list(MEAN), "std": list(STD),
                  "augmentation": "random horizontal flip, random 90-degree rotation",
                  "progressive_resizing": "epochs 1..%d: eval-transformed 224 input area-downsampled "
                                          "to %d; remaining epochs: exact 224 eval input"
                                          % (a.lowres_epochs, a.lowres)},
        "optimizer": {"name": "AdamW", "lr": a.lr, "weight_decay": a.wd,
                      "schedule": "OneCycleLR(pct_start=0.2)", "batch": a.batch},
        "init": init_info,
        "num_train_images": len(xtr),
        "num_heldout_images": len(xte),
        "train_dir": train_dir,
        "heldout_dir": held_dir,
        "epochs": a.epochs,
        "history": history,
        "epoch_train_loss": [h["train_loss"] for h in history],
        "heldout_top1": round(acc, 5),
        "heldout_loss": round(hl, 5),
        "heldout_top1_per_class": {c: round(v, 4) for c, v in zip(classes, per_class)},
        "examples": examples,
        "decode_seconds": round(t_load, 1),
        "train_seconds": round(t_train, 1),
        "threads": a.threads,
        "weights_file": os.path.basename(wpath),
        "weights_bytes": os.path.getsize(wpath),
        "weights_sha256": sha,
        "torch_version": torch.__version__,
        "torchvision_version": torchvision.__version__,
        "numpy_version": np.__version__,
        "python_version": platform.python_version(),
    }
    with open(os.path.join(a.out, "train_log.json"), "w") as f:
        json.dump(log, f, indent=1)
        f.write("\n")
    print("held-out top-1 %.4f (%d images); train %.0f s; weights %s (%d bytes)"
          % (acc, len(xte), t_train, wpath, os.path.getsize(wpath)))


if __name__ == "__main__":
    main()
