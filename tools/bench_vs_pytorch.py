#!/usr/bin/python3
"""Throughput of `parchgrad bench` next to PyTorch on the same machine, in the same run.

For each model, runs `parchgrad bench --json` and then the same workload in PyTorch with the
same thread count, batch, image size, warm-up and iteration counts:
  forward:  logits of a random batch (no autograd),
  saliency: forward + backward of the seed onehot(t) * softmax(logits)[t] to the input.
Both use random weights. Prints a Markdown table; --json-out also writes the numbers.

Needs PyTorch and torchvision (Debian's /usr/bin/python3 has them):
  /usr/bin/python3 tools/bench_vs_pytorch.py --bin build/parchgrad --models resnet18,vgg16
"""
import argparse
import json
import os
import subprocess
import sys
import time

DEFAULT_MODELS = "resnet18,resnet50,vgg16"


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bin", default="build/parchgrad", help="engine binary (default: %(default)s)")
    ap.add_argument("--models", default=DEFAULT_MODELS,
                    help="comma-separated torchvision names (default: %(default)s)")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--iters", type=int, default=5, help="timed iterations")
    ap.add_argument("--warmup", type=int, default=1, help="untimed iterations first")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json-out", help="also write the results as JSON to this file")
    ap.add_argument("--winograd", action="store_true",
                    help="run the engine with Winograd F(2x2,3x3) for its 3x3 stride-1 convolutions")
    ap.add_argument("--parchgrad", action="store_true",
                    help="also time ParchGrad cls and ins: the engine against the PyTorch reference "
                         "implementation (hooks on nn.Conv2d, per-sample loop; tests/python/parchgrad_ref.py)")
    return ap.parse_args()


def run_engine(args, model):
    cmd = [args.bin, "bench", "--model", model, "--batch", str(args.batch),
           "--size", str(args.size), "--iters", str(args.iters), "--warmup", str(args.warmup),
           "--threads", str(args.threads), "--json"]
    if args.parchgrad:
        cmd += ["--parchgrad", "cls,ins"]
    if args.winograd:
        cmd += ["--winograd"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr.strip()}")
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip().startswith("{")]
    if not lines:
        sys.exit(f"{' '.join(cmd)}: no JSON line in output: {proc.stdout!r}")
    return json.loads(lines[-1])


def run_torch(args, model_name):
    import torch
    import torchvision

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    model = getattr(torchvision.models, model_name)(weights=None).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    gen = torch.Generator().manual_seed(args.seed)
    x = torch.randn(args.batch, 3, args.size, args.size, generator=gen)
    idx = torch.arange(args.batch)

    def forward():
        with torch.no_grad():
            model(x)

    def saliency():
        xg = x.detach().clone().requires_grad_(True)
        logits = model(xg)
        prob = torch.softmax(logits, dim=1).detach()
        target = logits.detach().argmax(dim=1)
        seed = torch.zeros_like(logits)
        seed[idx, target] = prob[idx, target]
        logits.backward(seed)
        return xg.grad

    def timed(fn):
        for _ in range(args.warmup):
            fn()
        t0 = time.perf_counter()
        for _ in range(args.iters):
            fn()
        return args.batch * args.iters / (time.perf_counter() - t0)

    out = {"forward_ips": timed(forward), "saliency_ips": timed(saliency),
           "torch_version": torch.__version__, "torch_threads": torch.get_num_threads()}
    if args.parchgrad:
        # The reference ParchGrad: forward hooks on every hooked nn.Conv2d, a tensor hook on its
        # output that edits the gradient one sample at a time. Random statistics of the same
        # shape as the engine's bench uses; reference defaults (quantile 0.1, ratio:0.5, gamma inf).
        import numpy as np
        sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "python"))
        import parchgrad_ref as ref
        rng = np.random.default_rng(args.seed)
        classes = model.fc.out_features if hasattr(model, "fc") else model.classifier[-1].out_features
        stats = {}
        for name, conv in ref.conv_layers(model):
            C = conv.out_channels
            stats[name] = {"mean": rng.uniform(0, 1, C), "std": 0.1 + rng.uniform(0, 1, C),
                           "shapiro_p": 0.1 * rng.uniform(0, 1, C), "cls_p": rng.uniform(0, 1, (C, classes))}
        with torch.no_grad():
            targets = model(x).argmax(dim=1).tolist()
        for mode in ("cls", "ins"):
            cfg = ref.Config(mode)
            out[f"parchgrad_{mode}_ips"] = timed(lambda: ref.attribute(model, stats, cfg, x, targets, "grad"))
    return out


def main():
    args = parse_args()
    if not os.path.exists(args.bin):
        sys.exit(f"engine binary not found: {args.bin} (use --bin)")
    rows = []
    for model in [m.strip() for m in args.models.split(",") if m.strip()]:
        print(f"benchmarking {model} ...", file=sys.stderr, flush=True)
        eng = run_engine(args, model)
        ref = run_torch(args, model)
        rows.append({
            "model": model, "batch": args.batch, "size": args.size, "threads": args.threads,
            "iters": args.iters, "warmup": args.warmup,
            "engine_forward_ips": eng["forward_ips"], "torch_forward_ips": ref["forward_ips"],
            "forward_ratio": eng["forward_ips"] / ref["forward_ips"],
            "engine_saliency_ips": eng["saliency_ips"], "torch_saliency_ips": ref["saliency_ips"],
            "saliency_ratio": eng["saliency_ips"] / ref["saliency_ips"],
            "engine_reported": eng, "torch_reported": ref, "torch_version": ref["torch_version"],
        })

    print(f"\nimage size {args.size}, {args.warmup} warm-up + {args.iters} timed iterations, "
          f"PyTorch {rows[0]['torch_version'] if rows else '?'}\n")
    print("| model | batch | threads | engine fwd img/s | torch fwd img/s | ratio "
          "| engine saliency img/s | torch saliency img/s | ratio |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['model']} | {r['batch']} | {r['threads']} "
              f"| {r['engine_forward_ips']:.2f} | {r['torch_forward_ips']:.2f} "
              f"| {r['forward_ratio']:.2f} "
              f"| {r['engine_saliency_ips']:.2f} | {r['torch_saliency_ips']:.2f} "
              f"| {r['saliency_ratio']:.2f} |")
    if args.parchgrad:
        print("\n| model | batch | engine grad+cls | reference grad+cls | ratio | engine grad+ins "
              "| reference grad+ins | ratio | engine cls / engine grad | engine ins / engine grad |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for r in rows:
            e, t = r["engine_reported"], r["torch_reported"]
            print(f"| {r['model']} | {r['batch']} "
                  f"| {e['parchgrad_cls_ips']:.2f} | {t['parchgrad_cls_ips']:.2f} "
                  f"| {e['parchgrad_cls_ips'] / t['parchgrad_cls_ips']:.2f} "
                  f"| {e['parchgrad_ins_ips']:.2f} | {t['parchgrad_ins_ips']:.2f} "
                  f"| {e['parchgrad_ins_ips'] / t['parchgrad_ins_ips']:.2f} "
                  f"| {e['parchgrad_cls_ips'] / e['saliency_ips']:.2f} "
                  f"| {e['parchgrad_ins_ips'] / e['saliency_ips']:.2f} |")
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump({"results": rows}, f, indent=1)
        print(f"\nwrote {args.json_out}", file=sys.stderr)


if __name__ == "__main__":
    main()
