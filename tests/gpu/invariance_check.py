#!/usr/bin/env python3
"""Batch invariance of the device path, on a GPU: an image's map must be bitwise the same
whatever its batch when `--deterministic` is given (README, "Batch invariance").

For torchvision models with random weights (BatchNorm statistics randomised) and random
ParchGrad statistics, the bundled examples and generated flat-colour images (exact ties after
the stem) go through `saliency --compare grad,grad+cls,inputgrad,ig,smoothgrad` three times:
`--batch 1`, `--batch 8` and `--batch 3`. Per device configuration (precision, data-gradient
kernel, --deterministic or not) the three runs' maps are compared bit for bit. With
--deterministic any difference is a failure; without it the differences are reported (what
the README says holds there).

    python3 tests/gpu/invariance_check.py --bin BUILD/parchgrad --out DIR [--device cuda]
           [--archs resnet18,vgg11_bn] [--selftest]

--selftest runs the same on the CPU backend with a small model (the CPU must always be batch
invariant), so the script keeps working between GPU sessions. Exit status 0 when every
configuration that must be invariant is.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np
import torch

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "tests", "python"))
import parchgrad_ref as ref  # noqa: E402
import parity_common as pc  # noqa: E402

EXAMPLES = os.path.join(ROOT, "assets", "default", "examples")
RUNS = {"b1": ["--batch", "1"], "b8": ["--batch", "8"], "b3": ["--batch", "3"]}
METHODS = "grad,grad+cls,inputgrad,ig,smoothgrad"
# (label, flags, must be invariant)
CUDA_CONFIGS = [
    ("fp32 deterministic", ["--deterministic"], True),
    ("bf16 deterministic", ["--precision", "bf16", "--deterministic"], True),
    ("fp32 --dgrad cudnn deterministic", ["--dgrad", "cudnn", "--deterministic"], True),
    ("fp32", [], False),
    ("bf16", ["--precision", "bf16"], False),
]
CPU_CONFIGS = [("cpu", [], True)]


def run(cmd, timeout):
    p = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=timeout)
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, cmd[1:3]))} exited {p.returncode}: {p.stderr.strip()[-300:]}")
    return p



def model_files(arch, files, d, args):
    os.makedirs(d, exist_ok=True)
    if args.selftest:
        model = pc.build_small_resnet(pc.BasicBlock, (8, 16, 32, 64), (1, 1, 1, 1), num_classes=10, seed=3)
    else:
        model = pc.build_model(arch, num_classes=10)
    probes = []
    for i, f in enumerate(files):
        x = os.path.join(d, f"probe{i}.npy")
        run([args.bin, "preprocess", f, "-o", x], 60)
        probes.append(np.load(x))
    stats = ref.random_stats(model, 10, torch.from_numpy(np.stack(probes)), pc.stable_seed("gpu-invariance", arch))
    weights = pc.save_weights(pc.model_state_dict(model), os.path.join(d, "w.safetensors"), "safetensors")
    stats_path = ref.write_stats(stats, os.path.join(d, "stats.safetensors"),
                                 "resnet (custom)" if args.selftest else arch, 10, write=pc.write_safetensors)
    return weights, stats_path


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--archs", default="resnet18,vgg11_bn")
    ap.add_argument("--timeout", type=int, default=300, help="seconds per engine run")
    ap.add_argument("--selftest", action="store_true", help="CPU backend, one small model")
    args = ap.parse_args()
    if args.selftest:
        args.device, args.archs = "cpu", "small_resnet"
    shutil.rmtree(args.out, ignore_errors=True)
    os.makedirs(args.out)
    inputs = os.path.join(args.out, "inputs")
    os.makedirs(inputs)
    files = [shutil.copy(os.path.join(EXAMPLES, f), inputs) for f in sorted(os.listdir(EXAMPLES)) if f.endswith(".png")]
    files += pc.make_flat_images(inputs, discs=((80, 90, 50), (170, 170, 60)))
    rng = np.random.default_rng(7)
    noise = pc.save_npy(os.path.join(args.out, "noise.npy"),
                        (0.3 * rng.standard_normal((2, 3, 224, 224))).astype(np.float32))
    configs = CUDA_CONFIGS if args.device == "cuda" else CPU_CONFIGS
    rows, failures = [], 0
    for arch in args.archs.split(","):
        t0 = time.time()
        try:
            weights, stats = model_files(arch, files, os.path.join(args.out, arch), args)
        except Exception as e:  # noqa: BLE001 - reported per model
            rows.append({"arch": arch, "config": "-", "error": str(e)})
            failures += 1
            continue
        for label, flags, must in configs:
            maps, err, t1 = {}, None, time.time()
            try:
                for name, bflags in RUNS.items():
                    out = os.path.join(args.out, arch, label.replace(" ", "_") + "_" + name)
                    run([args.bin, "saliency", "--device", args.device, "--weights", weights, "--stats", stats,
                         "--target", "top1", "--compare", METHODS, "--ig-steps", "3", "--sg-noise", noise,
                         "--out", out] + flags + bflags + files, args.timeout)
                    maps[name] = pc.maps_of(out)
                    shutil.rmtree(out, ignore_errors=True)
            except Exception as e:  # noqa: BLE001
                err = str(e)
            row = {"arch": arch, "config": label, "must": must, "seconds": round(time.time() - t1, 1)}
            if err:
                row["error"] = err
                failures += 1
            else:
                ref_maps = maps["b1"]
                differ, worst = 0, 0.0
                for name in ("b8", "b3"):
                    for f, a in ref_maps.items():
                        b = maps[name].get(f)
                        if b is None or not np.array_equal(a, b):
                            differ += 1
                            if b is not None:
                                worst = max(worst, float(np.abs(a - b).max() / max(np.abs(a).max(), 1e-30)))
                row.update(maps=len(ref_maps), differing=differ, worst_rel=worst)
                if must and differ:
                    failures += 1
                row["result"] = ("ok" if not differ else ("FAIL" if must else "differs (allowed)"))
            rows.append(row)
            print(json.dumps(row), flush=True)
        print(f"{arch}: {time.time() - t0:.0f} s", flush=True)
        shutil.rmtree(os.path.join(args.out, arch), ignore_errors=True)
    with open(os.path.join(args.out, "invariance.jsonl"), "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    lines = ["| model | device configuration | maps per run | maps differing (b8, b3 vs b1) | worst relative | "
             "three runs, s | result |", "|---|---|---:|---:|---:|---:|---|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['arch']} | {r['config']} | - | - | - | - | ERROR: {r['error'][:120]} |")
        else:
            lines.append(f"| {r['arch']} | {r['config']} | {r['maps']} | {r['differing']} | {r['worst_rel']:.3g} | "
                         f"{r['seconds']} | {r['result']} |")
    open(os.path.join(args.out, "invariance.md"), "w").write("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"invariance: {len(rows) - failures} of {len(rows)} ok")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
