#!/usr/bin/python3
"""Throughput of `parchgrad bench` next to PyTorch on the same machine, in the same run.

For each model, runs `parchgrad bench --json` and then the same workload in PyTorch with the
same batch, image size, warm-up and iteration counts (on the CPU also the same thread count):
  forward:  logits of a random batch (no autograd; PyTorch eager),
  saliency: forward + backward of the seed onehot(t) * softmax(logits)[t] to the input, and the
            map mean_c |dL/dx| (on the GPU the batch is uploaded once and the maps come back to
            host memory every batch, as the engine's bench does through its pinned staging
            buffers: PyTorch's with a non_blocking copy into a preallocated pinned host buffer,
            waited for; its rate with the maps kept on the GPU is reported beside it, for
            comparison only).
PyTorch's saliency step is timed eager and, with --compile (default: on --device cuda),
torch.compile'd (default mode): the first call, which compiles, is timed apart and reported as
the compile time, not in the rate; a torch.compile that fails is reported in the table and
the eager figure stands. The saliency ratio is the engine over PyTorch's best: the faster of
eager and compiled, with the pinned copy. A (model, precision) pair's PyTorch side is measured
once per run of this script (a second run of the pair, e.g. with :cls, reuses it).
Both use random weights. Prints a Markdown table; --json-out also writes the numbers, --md-out
the table with a header naming the machine and the settings.

--device cuda runs both on the GPU: the engine with `--device cuda --precision P`, PyTorch at its
best for the same precision: cuDNN benchmark mode, channels_last, parameters frozen (only the
input requires grad), and
  fp32: strict float32 (cuDNN and matmul TF32 off),
  tf32: float32 with TF32 allowed (cuDNN and matmul),
  bf16: torch.autocast(bfloat16) around the forward pass (the backward follows its dtypes),
with torch.cuda.synchronize() around every timed loop. --runs gives several (model,
precision) pairs in one run, e.g. resnet18:fp32,resnet18:bf16,resnet18:bf16:cls (":cls" or
":ins" also times the engine's ParchGrad saliency; engine only on the GPU).

Needs PyTorch; torchvision when it is there, else the torchvision-shaped models built without
it (tests/gpu/models_check.py: ResNets, VGGs; tests/gpu/tv_free_models.py: MobileNetV2/V3,
EfficientNet, ConvNeXt; same module tree and tensor names). PG_BENCH_NO_TORCHVISION=1 uses those
even where torchvision is installed (how the GPU machine without it runs; tools/gpu_bench.sh
--dry-run tests that path). The builder used is reported per run ("builder").
  /usr/bin/python3 tools/bench_vs_pytorch.py --bin build/parchgrad --models resnet18,vgg16
  /usr/bin/python3 tools/bench_vs_pytorch.py --bin build/parchgrad --models efficientnet_b0,mobilenet_v3_large
  python3 tools/bench_vs_pytorch.py --bin BUILD/parchgrad --device cuda --batch 256 \\
      --runs resnet18:fp32,resnet18:tf32,resnet18:bf16,resnet50:bf16,vgg16:bf16,resnet18:bf16:cls
"""
import argparse
import contextlib
import json
import os
import subprocess
import sys
import time

DEFAULT_MODELS = "resnet18,resnet50,vgg16"
HERE = os.path.dirname(os.path.abspath(__file__))
GPU_TESTS = os.path.join(HERE, "..", "tests", "gpu")  # models_check.py: torchvision-free model builder


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bin", default="build/parchgrad", help="engine binary (default: %(default)s)")
    ap.add_argument("--models", default=DEFAULT_MODELS,
                    help="comma-separated torchvision names (default: %(default)s)")
    ap.add_argument("--runs", help="model:precision[:cls|:ins] pairs, comma-separated (replaces --models/--precision)")
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    ap.add_argument("--precision", choices=("fp32", "tf32", "bf16"), default="fp32",
                    help="cuda only: the engine's --precision and PyTorch's matching mode (default fp32)")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--threads", type=int, default=2, help="CPU threads (cpu device)")
    ap.add_argument("--iters", type=int, default=5, help="timed iterations")
    ap.add_argument("--warmup", type=int, default=1, help="untimed iterations first")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json-out", help="also write the results as JSON to this file")
    ap.add_argument("--md-out", help="also write the tables, with a header on the machine and settings, here")
    ap.add_argument("--compile", default="auto",
                    help="auto|on|off|model:precision,...: also time torch.compile'd PyTorch saliency (default "
                         "mode; compilation timed apart), for every run or only the listed pairs: "
                         "auto = on --device cuda only (default)")
    ap.add_argument("--winograd", action="store_true",
                    help="run the engine with Winograd F(2x2,3x3) for its 3x3 stride-1 convolutions")
    ap.add_argument("--parchgrad", action="store_true",
                    help="also time ParchGrad cls and ins: the engine against the PyTorch reference "
                         "implementation (hooks on nn.Conv2d, per-sample loop; tests/python/parchgrad_ref.py; "
                         "cpu only, needs torchvision and scipy)")
    ap.add_argument("--torch-cache",
                    help="JSON file of PyTorch's figures: a (model, precision, batch, size, iterations, device, "
                         "torch version) measured before is taken from it (marked cached) and new ones are added, "
                         "so that repeated runs time only the engine; with compilation wanted, an entry where it "
                         "was not tried is measured again")
    args = ap.parse_args()
    if args.compile not in ("auto", "on", "off"):
        pairs = [p.strip() for p in args.compile.split(",") if p.strip()]
        if not pairs or any(len(p.split(":")) != 2 for p in pairs):
            ap.error(f"--compile: '{args.compile}' is not auto, on, off or model:precision,...")
        args.compile_pairs = set(pairs)
    else:
        args.compile_pairs = None
    if args.runs:
        args.plan = []
        for item in args.runs.split(","):
            parts = item.strip().split(":")
            if len(parts) not in (2, 3) or parts[1] not in ("fp32", "tf32", "bf16") or \
                    (len(parts) == 3 and parts[2] not in ("cls", "ins")):
                ap.error(f"--runs: '{item}' is not model:fp32|tf32|bf16[:cls|:ins]")
            args.plan.append((parts[0], parts[1], parts[2] if len(parts) == 3 else None))
    else:
        pg = "cls,ins" if args.parchgrad else None
        args.plan = [(m.strip(), args.precision, pg) for m in args.models.split(",") if m.strip()]
    if args.device == "cpu" and any(p != "fp32" for _, p, _ in args.plan):
        ap.error("--precision tf32/bf16 needs --device cuda")
    if args.device == "cuda" and args.parchgrad:
        ap.error("--parchgrad (the PyTorch reference) is cpu only; on cuda use --runs model:precision:cls")
    return args


def run_engine(args, model, precision, parchgrad):
    cmd = [args.bin, "bench", "--model", model, "--batch", str(args.batch),
           "--size", str(args.size), "--iters", str(args.iters), "--warmup", str(args.warmup), "--json"]
    if args.device == "cuda":
        cmd += ["--device", "cuda", "--precision", precision]
    else:
        cmd += ["--threads", str(args.threads)]
    if parchgrad:
        cmd += ["--parchgrad", parchgrad]
    if args.winograd:
        cmd += ["--winograd"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr.strip()[-400:]}")
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip().startswith("{")]
    if not lines:
        raise RuntimeError(f"{' '.join(cmd)}: no JSON line in output: {proc.stdout!r}")
    return json.loads(lines[-1])


def make_model(model_name):
    """torchvision's constructor when it can be imported (and PG_BENCH_NO_TORCHVISION is not 1),
    else the same model built without it (models_check.own_model: every family)."""
    if os.environ.get("PG_BENCH_NO_TORCHVISION") != "1":
        try:
            import torchvision
            return getattr(torchvision.models, model_name)(weights=None), "torchvision"
        except Exception:  # absent, or built for another torch
            pass
    sys.path.insert(0, GPU_TESTS)
    import models_check
    return models_check.own_model(model_name), "own"


def set_tf32(torch, allow):
    """TF32 in cuDNN convolutions and cuBLAS matmuls on or off (tests/gpu/models_check.set_tf32)."""
    sys.path.insert(0, GPU_TESTS)
    import models_check
    models_check.set_tf32(torch, allow)


def cuda_settings(torch, precision):
    """PyTorch's fastest correct mode for the precision; returns the autocast context factory."""
    torch.backends.cudnn.benchmark = True
    set_tf32(torch, precision == "tf32")
    if precision == "bf16":
        return lambda: torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext


def run_torch(args, model_name, precision, parchgrad):
    import torch

    cuda = args.device == "cuda"
    torch.manual_seed(args.seed)
    if not cuda:
        torch.set_num_threads(args.threads)
    model, builder = make_model(model_name)
    model = model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    gen = torch.Generator().manual_seed(args.seed)
    x = torch.randn(args.batch, 3, args.size, args.size, generator=gen)
    autocast = contextlib.nullcontext
    if cuda:
        autocast = cuda_settings(torch, precision)
        model = model.cuda().to(memory_format=torch.channels_last)
        x = x.cuda().contiguous(memory_format=torch.channels_last)
    idx = torch.arange(args.batch, device=x.device)
    # The maps' host buffer, allocated once (the engine's bench also copies into pinned memory).
    pinned = torch.empty((args.batch, args.size, args.size), pin_memory=True) if cuda else None

    def sync():
        if cuda:
            torch.cuda.synchronize()

    def forward():
        with torch.no_grad(), autocast():
            model(x)

    bf16 = cuda and precision == "bf16"

    def saliency_step(xin):
        """One saliency batch, the maps left where they were made: the one function that is
        timed eager and, torch.compile'd, compiled (only the input requires grad). (torch.autocast
        written out, no context-manager factory, for torch.compile's tracer.)"""
        xg = xin.detach().requires_grad_(True)
        if bf16:
            with torch.autocast("cuda", dtype=torch.bfloat16):
                logits = model(xg)
        else:
            logits = model(xg)
        prob = torch.softmax(logits.float(), dim=1).detach()
        target = logits.detach().argmax(dim=1)
        seed = torch.zeros_like(logits)
        seed[idx, target] = prob[idx, target].to(seed.dtype)
        (grad,) = torch.autograd.grad(logits, xg, seed)
        return grad.abs().float().mean(dim=1)

    def to_host(step):
        """The step with its maps copied into the pinned buffer and waited for (on the CPU the
        maps are in host memory already)."""
        if not cuda:
            return lambda: step(x)

        def run():
            pinned.copy_(step(x), non_blocking=True)
            torch.cuda.current_stream().synchronize()
        return run

    def timed(fn):
        for _ in range(args.warmup):
            fn()
        sync()
        t0 = time.perf_counter()
        for _ in range(args.iters):
            fn()
        sync()
        return args.batch * args.iters / (time.perf_counter() - t0)

    out = {"forward_ips": timed(forward), "eager_saliency_ips": timed(to_host(saliency_step)), "builder": builder,
           "torch_version": torch.__version__, "torch_threads": torch.get_num_threads()}
    if cuda:
        out["eager_kept_ips"] = timed(lambda: saliency_step(x))
    if compile_wanted(args, model_name, precision):
        out.update(time_compiled(torch, saliency_step, x, to_host, timed, sync, cuda))
    else:
        out["compiled_error"] = ("not run (--compile off)" if args.compile == "off" else
                                 "not run (not in --compile's list)" if args.compile_pairs is not None else
                                 "not run on the CPU (--compile on to time it)")
    # PyTorch at its best: the faster of eager and compiled, the maps in host memory.
    out["saliency_ips"], out["torch_best"] = max((out["eager_saliency_ips"], "eager"),
                                                 (out.get("compiled_saliency_ips", 0.0), "compiled"))
    if cuda:
        out.update({"torch_cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version(),
                    "torch_device": torch.cuda.get_device_name(0), "cudnn_benchmark": True,
                    "channels_last": True, "autocast_bf16": precision == "bf16",
                    "allow_tf32": precision == "tf32"})
    if parchgrad and not cuda:
        # The reference ParchGrad: forward hooks on every hooked nn.Conv2d, a tensor hook on its
        # output that edits the gradient one sample at a time. Random statistics of the same
        # shape as the engine's bench uses; reference defaults (quantile 0.1, ratio:0.5, gamma inf).
        import numpy as np
        sys.path.insert(0, os.path.join(HERE, "..", "tests", "python"))
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
            if mode in parchgrad:
                cfg = ref.Config(mode)
                out[f"parchgrad_{mode}_ips"] = timed(lambda: ref.attribute(model, stats, cfg, x, targets, "grad"))
    if cuda:
        del model, x, pinned
        torch.cuda.empty_cache()
    return out


def compile_wanted(args, model=None, precision=None):
    if args.compile_pairs is not None:
        return f"{model}:{precision}" in args.compile_pairs
    return args.compile == "on" or (args.compile == "auto" and args.device == "cuda")


def time_compiled(torch, step, x, to_host, timed, sync, cuda):
    """torch.compile(step) (default mode), timed like the eager step: the first call (tracing and
    compilation) timed apart as compile_s, then the warm-up and timed iterations. A failure (no
    torch.compile, no compiler for Inductor, a graph it cannot handle) is returned as
    compiled_error, not raised."""
    if not hasattr(torch, "compile"):
        return {"compiled_error": f"torch {torch.__version__} has no torch.compile"}
    dynamo = getattr(torch, "_dynamo", None)
    if dynamo is not None:
        dynamo.reset()  # a fresh cache: no recompile limit reached by earlier runs' models
    try:
        t0 = time.perf_counter()
        compiled = torch.compile(step)
        compiled(x)
        sync()
        out = {"compile_s": time.perf_counter() - t0, "compiled_saliency_ips": timed(to_host(compiled))}
        if cuda:
            out["compiled_kept_ips"] = timed(lambda: compiled(x))
        return out
    except Exception as e:  # reported in the table; eager PyTorch still counts
        lines = [ln for ln in str(e).strip().splitlines() if ln.strip()]
        return {"compiled_error": f"{type(e).__name__}: {lines[0] if lines else ''}"[:300]}
    finally:
        if dynamo is not None:
            dynamo.reset()


_SMI = []


def nvidia_smi():
    """nvidia-smi's name, driver, memory line (asked once)."""
    if not _SMI:
        _SMI.append(_ask_nvidia_smi())
    return _SMI[0]


def _ask_nvidia_smi():
    try:
        q = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                           capture_output=True, text=True, timeout=30)
        return q.stdout.strip().splitlines()[0] if q.returncode == 0 and q.stdout.strip() else None
    except (OSError, subprocess.SubprocessError):
        return None


def compiled_cells(t, gpu):
    """The compiled-PyTorch saliency cell and the compile-time cell of one run."""
    err = t.get("compiled_error")
    if err:
        return ("not run" if err.startswith("not run") else "failed (below)"), "-"
    ips = f"{t['compiled_saliency_ips']:.2f}" + (f" / {t['compiled_kept_ips']:.2f}" if gpu else "")
    return ips, f"{t['compile_s']:.1f}"


def tables(args, rows):
    lines = []
    gpu = args.device == "cuda"
    head = "| model | precision | batch |" if gpu else "| model | batch | threads |"
    where = ": pinned copy / maps kept on the GPU" if gpu else ""
    lines.append(head + " engine fwd img/s | torch fwd img/s (eager) | ratio | engine saliency img/s "
                 f"| torch eager saliency img/s{where} | torch compiled saliency img/s{where} | compile s "
                 "| ratio to torch's best |")
    lines.append(("|---|---|---:|" if gpu else "|---|---:|---:|") + "---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        t = r["torch_reported"]
        name = r["model"] + (f" (+{r['parchgrad']} run)" if gpu and r["parchgrad"] else "")
        lead = f"| {name} | {r['precision']} | {r['batch']} " if gpu else \
            f"| {r['model']} | {r['batch']} | {r['threads']} "
        eager = f"{t['eager_saliency_ips']:.2f}" + (f" / {t['eager_kept_ips']:.2f}" if gpu else "")
        compiled, compile_s = compiled_cells(t, gpu)
        best = "" if t.get("compiled_error", "").startswith("not run") else f" ({t['torch_best']})"
        if t.get("cached"):
            best += " (PyTorch: earlier run)"
        lines.append(lead + f"| {r['engine_forward_ips']:.2f} | {r['torch_forward_ips']:.2f} "
                     f"| {r['forward_ratio']:.2f} "
                     f"| {r['engine_saliency_ips']:.2f} | {eager} | {compiled} | {compile_s} "
                     f"| {r['saliency_ratio']:.2f}{best} |")
    notes = []
    for r in rows:
        err = r["torch_reported"].get("compiled_error")
        note = f"torch.compile failed, {r['model']} {r['precision']}: {err}"
        if err and not err.startswith("not run") and note not in notes:
            notes.append(note)
    not_run = {r["torch_reported"]["compiled_error"] for r in rows
               if r["torch_reported"].get("compiled_error", "").startswith("not run")}
    notes += [f"torch.compile: {n}" for n in sorted(not_run)]
    if notes:
        lines += [""] + notes
    pg_rows = [r for r in rows if r["parchgrad"]]
    with_reference = all("parchgrad_cls_ips" in r["torch_reported"] and "parchgrad_ins_ips" in r["torch_reported"]
                         for r in pg_rows)
    if pg_rows and (gpu or not with_reference):
        lines += ["", "| model | precision | batch | mode | engine ParchGrad img/s | engine saliency img/s "
                  "| ParchGrad / saliency |", "|---|---|---:|---|---:|---:|---:|"]
        for r in pg_rows:
            e = r["engine_reported"]
            for mode in ("cls", "ins"):
                if f"parchgrad_{mode}_ips" in e:
                    lines.append(f"| {r['model']} | {r['precision']} | {r['batch']} | grad+{mode} "
                                 f"| {e[f'parchgrad_{mode}_ips']:.2f} | {e['saliency_ips']:.2f} "
                                 f"| {e[f'parchgrad_{mode}_ips'] / e['saliency_ips']:.2f} |")
    elif pg_rows:
        lines += ["", "| model | batch | engine grad+cls | reference grad+cls | ratio | engine grad+ins "
                  "| reference grad+ins | ratio | engine cls / engine grad | engine ins / engine grad |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for r in pg_rows:
            e, t = r["engine_reported"], r["torch_reported"]
            lines.append(f"| {r['model']} | {r['batch']} "
                         f"| {e['parchgrad_cls_ips']:.2f} | {t['parchgrad_cls_ips']:.2f} "
                         f"| {e['parchgrad_cls_ips'] / t['parchgrad_cls_ips']:.2f} "
                         f"| {e['parchgrad_ins_ips']:.2f} | {t['parchgrad_ins_ips']:.2f} "
                         f"| {e['parchgrad_ins_ips'] / t['parchgrad_ins_ips']:.2f} "
                         f"| {e['parchgrad_cls_ips'] / e['saliency_ips']:.2f} "
                         f"| {e['parchgrad_ins_ips'] / e['saliency_ips']:.2f} |")
    return "\n".join(lines)


def report(args, rows, failed, final):
    """The tables (printed when final) and the --md-out/--json-out files, rewritten after every
    run so that a run cut short still leaves what it measured."""
    first = rows[0]["torch_reported"] if rows else {}
    if args.device == "cuda":
        smi = nvidia_smi()
        intro = (f"GPU: {smi or first.get('torch_device', '?')} (name, driver, memory; nvidia-smi); "
                 f"engine device: {rows[0]['engine_reported'].get('device_name', '?') if rows else '?'}; "
                 f"PyTorch {first.get('torch_version', '?')}, CUDA {first.get('torch_cuda', '?')}, "
                 f"cuDNN {first.get('cudnn', '?')}, cuDNN benchmark mode, channels_last; "
                 f"fp32 = strict float32 (TF32 off), tf32 = TF32 allowed, bf16 = autocast bfloat16 "
                 f"(engine: --precision of the same name); parameters frozen, only the input requires grad. "
                 f"Batch {args.batch}, {args.size}x{args.size}, {args.warmup} warm-up + {args.iters} timed "
                 f"iterations, random weights; saliency includes the map, the batch uploaded once, and the "
                 f"maps in host memory every batch (the engine: through its pinned staging buffers; PyTorch's "
                 f"'pinned copy': a non_blocking copy into a preallocated pinned buffer, waited for); 'maps kept "
                 f"on the GPU': PyTorch without that copy, for comparison only. "
                 f"Compiled: torch.compile of the same saliency step (default mode), its compilation (the "
                 f"first call) not in the rate. The saliency ratio is the engine over PyTorch's best, the "
                 f"faster of eager and compiled, pinned copy; the forward pass is PyTorch eager.")
    else:
        intro = (f"image size {args.size}, {args.warmup} warm-up + {args.iters} timed iterations, "
                 f"PyTorch {first.get('torch_version', '?')}; the saliency ratio is the engine over PyTorch's "
                 f"best (eager, or compiled with --compile on)")
    md = tables(args, rows)
    builders = sorted({r["torch_reported"].get("builder", "?") for r in rows})
    if builders:
        md += ("\n\nPyTorch's models built by: " + ", ".join(builders)
               + " (own: tests/gpu's torchvision-free builders, the same module tree and tensor names)")
    if failed:
        md += "\n\nfailed: " + "; ".join(f"{f['run']}: {f['error'][:200]}" for f in failed)
    if final:
        print("\n" + intro + "\n\n" + md)
    if args.md_out:
        with open(args.md_out, "w") as f:
            f.write(intro + "\n\n" + md + "\n")
        if final:
            print(f"\nwrote {args.md_out}", file=sys.stderr)
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump({"settings": intro, "nvidia_smi": nvidia_smi() if args.device == "cuda" else None,
                       "results": rows, "failed": failed}, f, indent=1)
        if final:
            print(f"\nwrote {args.json_out}", file=sys.stderr)


class TorchCache:
    """PyTorch's figures of earlier runs (--torch-cache): one JSON object, keyed by the workload and
    the machine; the file rewritten (through a rename) after every new measurement."""

    def __init__(self, path):
        self.path = path
        try:
            with open(path) as f:
                self.entries = json.load(f)
        except (OSError, ValueError):
            self.entries = {}

    def key(self, args, model, precision, parchgrad):
        import torch
        where = torch.cuda.get_device_name(0) if args.device == "cuda" else f"cpu x{args.threads}"
        pg = None if args.device == "cuda" else parchgrad
        return "|".join(map(str, (model, precision, pg, args.batch, args.size, args.iters, args.warmup,
                                  args.device, where, torch.__version__, args.seed)))

    def get(self, args, model, precision, parchgrad):
        ref = self.entries.get(self.key(args, model, precision, parchgrad))
        tried = "compiled_saliency_ips" in ref or not ref.get("compiled_error", "not run").startswith("not run") \
            if ref else False
        if ref is None or (compile_wanted(args, model, precision) and not tried):
            return None
        print(f"  (PyTorch: the {model} {precision} figures of an earlier run, from {self.path})",
              file=sys.stderr, flush=True)
        return dict(ref, cached=True)

    def put(self, args, model, precision, parchgrad, ref):
        self.entries[self.key(args, model, precision, parchgrad)] = ref
        tmp = self.path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(self.entries, f, indent=1)
        os.replace(tmp, self.path)


def main():
    args = parse_args()
    if not os.path.exists(args.bin):
        sys.exit(f"engine binary not found: {args.bin} (use --bin)")
    rows, failed = [], []
    torch_done = {}
    cache = TorchCache(args.torch_cache) if args.torch_cache else None
    for model, precision, parchgrad in args.plan:
        label = f"{model} {precision}" + (f" +{parchgrad}" if parchgrad else "")
        print(f"benchmarking {label} ...", file=sys.stderr, flush=True)
        try:  # one failed run is reported; the others still run
            eng = run_engine(args, model, precision, parchgrad)
            # PyTorch's side of a (model, precision) pair is the same workload whatever the engine's
            # ParchGrad mode on the GPU: timed (and compiled) once per run of this script.
            key = (model, precision, None if args.device == "cuda" else parchgrad)
            if key not in torch_done and cache is not None:
                torch_done[key] = cache.get(args, model, precision, parchgrad)
            if torch_done.get(key) is None:
                torch_done[key] = run_torch(args, model, precision, parchgrad)
                if cache is not None:
                    cache.put(args, model, precision, parchgrad, torch_done[key])
            else:
                print(f"  (PyTorch: the {model} {precision} figures measured above)", file=sys.stderr, flush=True)
            ref = torch_done[key]
        except Exception as e:
            print(f"FAILED {label}: {e}", file=sys.stderr, flush=True)
            failed.append({"run": label, "error": str(e)})
            report(args, rows, failed, final=False)
            continue
        rows.append({
            "model": model, "precision": precision, "parchgrad": parchgrad, "device": args.device,
            "batch": args.batch, "size": args.size, "threads": args.threads,
            "iters": args.iters, "warmup": args.warmup,
            "engine_forward_ips": eng["forward_ips"], "torch_forward_ips": ref["forward_ips"],
            "forward_ratio": eng["forward_ips"] / ref["forward_ips"],
            "engine_saliency_ips": eng["saliency_ips"], "torch_saliency_ips": ref["saliency_ips"],
            "saliency_ratio": eng["saliency_ips"] / ref["saliency_ips"], "torch_best": ref["torch_best"],
            "engine_reported": eng, "torch_reported": ref, "torch_version": ref["torch_version"],
        })
        report(args, rows, failed, final=False)

    report(args, rows, failed, final=True)
    return 1 if failed or not rows else 0


if __name__ == "__main__":
    sys.exit(main())
