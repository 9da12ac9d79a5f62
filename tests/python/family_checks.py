"""Checks every architecture family's parity test makes the same way (MobileNetV2, MobileNetV3,
EfficientNet, ConvNeXt): bad tensors named in one line, ParchGrad maps and selections against
the PyTorch implementation of the method, and a command-line smoke run of every method.
Each takes the model the test built and conditioned; the family-specific expectations (which
convs are hooked, which tensors to break) stay in the test."""
import copy
import json
import os
import shutil
import subprocess

import numpy as np
import torch

import parchgrad_ref as ref
import parity_common as pc


def bad_tensors_named(binary, sd, arch, scratch, replace=None, remove=()):
    """The state dict sd with the tensors of `replace` (name -> tensor) swapped in and those of
    `remove` deleted: `parchgrad gradient` with the architecture named and inferred exits 1 with
    one stderr line that names every one of them."""
    bad = dict(sd)
    bad.update(replace or {})
    for name in remove:
        del bad[name]
    path = pc.save_weights(bad, os.path.join(scratch, arch + "_bad.safetensors"), "safetensors")
    input_path = pc.save_npy(os.path.join(scratch, arch + "_bad_input.npy"), pc.make_input(1, 32, 32, 1).numpy())
    try:
        for named in (True, False):
            proc, _, _ = pc.run_gradient(binary, path, input_path, [0], os.path.join(scratch, arch + "_bad"),
                                         model=arch if named else None)
            assert proc.returncode == 1, (named, proc.returncode, proc.stderr)
            err = proc.stderr.strip().splitlines()
            assert len(err) == 1, proc.stderr
            for name in list(replace or {}) + list(remove):
                assert name in err[0], (name, err[0])
    finally:
        for p in (path, input_path):
            if os.path.exists(p):
                os.remove(p)


def engine_conv_order(binary, model, arch, names, scratch):
    """The engine lists the model's convs in the order `names` gives (torchvision's Conv2d
    module order): `saliency --parchgrad cls --layers ratio:1 --explain-masks` names every conv
    it hooks, and with ratio:1 that is every conv."""
    x = pc.make_input(1, 32, 32, 5)
    d = os.path.join(scratch, arch + "_order")
    os.makedirs(d, exist_ok=True)
    try:
        stats = ref.random_stats(model, 10, x, 5)
        weights = pc.save_weights(pc.model_state_dict(model), os.path.join(d, "w.safetensors"), "safetensors")
        stats_path = ref.write_stats(stats, os.path.join(d, "stats.safetensors"), arch, 10, write=pc.write_safetensors)
        x_path = pc.save_npy(os.path.join(d, "x.npy"), x.numpy())
        out = os.path.join(d, "out")
        proc = subprocess.run([binary, "saliency", "--weights", weights, "--method", "grad", "--parchgrad", "cls",
                               "--stats", stats_path, "--layers", "ratio:1", "--target", "0", "--out", out,
                               "--explain-masks", x_path], capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr
        masks = [f for f in os.listdir(out) if f.endswith(".masks.json")]
        assert len(masks) == 1, masks
        with open(os.path.join(out, masks[0])) as f:
            assert [l["name"] for l in json.load(f)["layers"]] == names
    finally:
        shutil.rmtree(d, ignore_errors=True)


def parchgrad_against_reference(binary, model, arch, x, mode, classes, scratch, seed, check_layers,
                                gamma=2.0, float64=False):
    """`saliency --parchgrad MODE --gamma GAMMA --explain-masks` on the model (prepared with
    ref.prepare) against parchgrad_ref: per sample the map within 1e-4 and every hooked layer's
    selection H equal, some channel selected. check_layers(layers) asserts which convs the
    ratio hooks. gamma 2 by default: the unselected channels are damped, not zeroed (with gamma
    inf, many edited layers can leave a random model's maps exactly zero).
    float64: the oracle also runs in float64; H must equal both oracles' and the map may instead
    be no farther from the float64 map than twice PyTorch float32's own distance (models whose
    hooked layers are small enough for float32 rounding to move beta by 1e-4)."""
    with torch.no_grad():
        prob = torch.softmax(model(x), 1)
    targets = [int(prob[n].argmax()) for n in range(x.shape[0])]
    size = x.shape[-1]
    stats = ref.random_stats(model, classes, torch.cat([x, torch.zeros(1, 3, x.shape[-2], size)]), seed,
                             cls_alphas=(0.05,), ins_alphas=(0.2,), quantiles=(0.1, 0.05),
                             shapiro_thresholds=(0.05, 0.5))
    cfg = ref.Config(mode, gamma=gamma)
    ref_maps, records, layers = ref.attribute(model, stats, cfg, x, targets, method="grad")
    maps64, records64 = ref_maps, records
    if float64:
        maps64, records64, _ = ref.attribute(copy.deepcopy(model).double(), stats, cfg, x.double(), targets,
                                             method="grad")
    check_layers(layers)
    d = os.path.join(scratch, arch + "_parchgrad")
    os.makedirs(d, exist_ok=True)
    try:
        weights = pc.save_weights(pc.model_state_dict(model), os.path.join(d, "w.safetensors"), "safetensors")
        stats_path = ref.write_stats(stats, os.path.join(d, "stats.safetensors"), arch, classes,
                                     write=pc.write_safetensors)
        x_path = pc.save_npy(os.path.join(d, "x.npy"), x.numpy())
        out = os.path.join(d, "out")
        cmd = [binary, "saliency", "--weights", weights, "--model", arch, "--method", "grad", "--parchgrad", mode,
               "--stats", stats_path, "--gamma", str(gamma), "--target", ",".join(map(str, targets)), "--out", out,
               "--explain-masks", x_path]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr
        for n in range(x.shape[0]):
            got = np.load(os.path.join(out, f"x_{n}.npy"))
            assert np.linalg.norm(ref_maps[n]) > 0
            e = pc.rel_err(got[None], ref_maps[n][None])
            e64, t64 = pc.rel_err(got[None], maps64[n][None]), pc.rel_err(ref_maps[n][None], maps64[n][None])
            with open(os.path.join(out, f"x_{n}.masks.json")) as f:
                masks = json.load(f)
            assert [l["name"] for l in masks["layers"]] == layers
            kept = 0
            for g, o, o64 in zip(masks["layers"], ref.masks_of(records[0], layers, n),
                                 ref.masks_of(records64[0], layers, n)):
                assert g["H"] == o["H"] == o64["H"], f"{o['name']}: H differs"
                kept += len(o["H"])
            line = f"{arch} {mode} sample {n}: map {e:.2e} against float32"
            if float64:
                line += f"; against float64: engine {e64:.2e}, PyTorch float32 {t64:.2e}"
            line += f"; {kept} channels selected"
            print(line)
            assert kept > 0
            assert e < pc.REL_TOL or (float64 and e64 <= 2 * t64), line
    finally:
        shutil.rmtree(d, ignore_errors=True)


def cli_methods_smoke(binary, model, arch, size, scratch, methods, classes=("a", "b"), per_class=4,
                      check_stats_keys=None):
    """Random weights through the command line: `stats` over a small ImageFolder of .npy inputs
    has an entry for every Conv2d module of the model (check_stats_keys(keys) may assert more),
    then `saliency --compare METHODS` from those statistics gives finite, non-zero maps of the
    input's size and a record naming the architecture."""
    d = os.path.join(scratch, arch + "_smoke")
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    try:
        weights = pc.save_weights(pc.model_state_dict(model), os.path.join(d, "w.safetensors"), "safetensors")
        rng = np.random.default_rng(5)
        for c in classes:
            os.makedirs(os.path.join(d, "data", c))
            for i in range(per_class):
                np.save(os.path.join(d, "data", c, f"{i}.npy"), rng.standard_normal((3, size, size)).astype(np.float32))
        stats_path = os.path.join(d, "stats.safetensors")
        proc = subprocess.run([binary, "stats", "--weights", weights, "--data", os.path.join(d, "data"), "--out",
                               stats_path], capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr
        keys = set(pc.read_safetensors(stats_path).keys())
        for n, _ in ref.conv_layers(model):
            assert any(k.startswith(n + ".") or k == n for k in keys), n
        if check_stats_keys:
            check_stats_keys(keys)
        x = os.path.join(d, "data", classes[0], "0.npy")
        out = os.path.join(d, "out")
        proc = subprocess.run([binary, "saliency", "--weights", weights, "--compare", ",".join(methods), "--stats",
                               stats_path, "--ig-steps", "4", "--sg-samples", "2", "--target", "top1", "--out", out,
                               x], capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr
        for method in methods:
            m = np.load(os.path.join(out, f"0.{method}.npy"))
            assert m.shape == (size, size) and np.all(np.isfinite(m)) and np.abs(m).max() > 0, method
        with open(os.path.join(out, "results.jsonl")) as f:
            rec = json.loads(f.readline())
        assert rec["settings"]["model"] == arch, rec
    finally:
        shutil.rmtree(d, ignore_errors=True)
