"""Random-weight models made numerically tame, and safetensors files: the one copy shared by the
parity tests (parity_common.py) and the GPU machine's tests/gpu/models_check.py.

torch and numpy only: no torchvision, which the GPU machine's Python may lack (the module trees
of torchvision's ResNet and VGG are recognised by their attribute names, so the models that
tests/gpu/models_check.py builds without torchvision are handled alike). Models may live on any
device; the random draws are made on the CPU from seeded generators.
"""
import json
import os
import struct

import numpy as np
import torch


def randomise(model, seed, residual_damp=0.3):
    """Random BatchNorm statistics and affine parameters, so that BatchNorm folding is really
    exercised, and non-zero conv/linear biases (torchvision initialises VGG's to zero).

    The last BatchNorm of every residual branch (bn3 of a bottleneck, bn2 of a basic block) is
    damped: with undamped random BatchNorm a deep ResNet's activations grow by orders of
    magnitude (resnet152 reaches logits ~1e7), which would saturate the softmax and make the
    gradient seed p[target] underflow to zero.
    """
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for mod in model.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                c = mod.num_features
                mod.running_var.copy_(torch.rand(c, generator=gen) * 1.5 + 0.5)
                mod.running_mean.copy_(torch.randn(c, generator=gen) * 0.1)
                mod.weight.copy_(torch.rand(c, generator=gen) + 0.5)
                mod.bias.copy_(torch.randn(c, generator=gen) * 0.1)
                mod.num_batches_tracked.fill_(int(torch.randint(1, 1000, (1,), generator=gen)))
        for mod in model.modules():
            if hasattr(mod, "bn3"):
                mod.bn3.weight.mul_(residual_damp)
            elif hasattr(mod, "bn2") and hasattr(mod, "conv2"):
                mod.bn2.weight.mul_(residual_damp)
        for mod in model.modules():
            if isinstance(mod, (torch.nn.Conv2d, torch.nn.Linear)) and mod.bias is not None:
                mod.bias.copy_(torch.randn(mod.bias.shape, generator=gen) * 0.05)


def last_linear(model):
    """The classifier's last Linear layer (ResNet's fc, VGG's classifier[-1])."""
    return model.fc if hasattr(model, "fc") else model.classifier[-1]


def relu_calls_feeding_pools(model, x):
    """Which ReLU calls of one forward pass over x (by call number) are followed by a max-pool."""
    events = []
    hooks = [m.register_forward_pre_hook(lambda mod, inp, kind=kind: events.append(kind))
             for m in model.modules()
             for kind in (("relu",) if isinstance(m, torch.nn.ReLU) else
                          ("pool",) if isinstance(m, torch.nn.MaxPool2d) else ())]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in hooks:
            h.remove()
    feeds, k = set(), 0
    for i, kind in enumerate(events):
        if kind == "relu":
            if i + 1 < len(events) and events[i + 1] == "pool":
                feeds.add(k)
            k += 1
    return feeds


def set_relu_margins(model, x, k=2.0, seed=0, pool_margin=None, balanced=False):
    """Data-dependent bias shift that keeps most ReLU inputs away from zero.

    In one forward pass over x, every ReLU input channel (feature, for the classifier) gets its
    producer's bias (the BatchNorm, convolution or Linear just before it; for the ReLU after a
    residual addition, the last BatchNorm of the block or of its downsample branch) shifted so
    that the channel's mean sits at +k or -k standard deviations, the sign drawn at random. The
    masks stay data dependent (a few per cent of each channel falls on the minority side) but
    far fewer units sit within float32 rounding of zero, where two correct implementations may
    legitimately take different sides. With pool_margin, a ReLU whose output goes into a
    max-pool gets -pool_margin instead (no draw): mostly zero, so that a pooling window rarely
    holds two positive values that could tie (its largest value kept at +0.5 sd). balanced: exactly half of a layer's channels (a
    random half) get +k, so that no narrow layer has every channel at -k (a dead network).
    Returns the logits of the shifted model on x.
    """
    feeds_pool = relu_calls_feeding_pools(model, x) if pool_margin is not None else set()
    gen = torch.Generator().manual_seed(seed)
    state = {"calls": 0}

    def track(mod, inputs, output):
        state["last"] = mod

    def shift_input(mod, inputs):
        z = inputs[0]
        if z.dim() == 4:
            mu = z.mean(dim=(0, 2, 3))
            sd = z.std(dim=(0, 2, 3))
            sd = torch.clamp(sd, min=1e-3 * float(sd.mean()) + 1e-30)
        else:  # [N, F]: too few samples per feature, use the spread across features
            mu = z.mean(dim=0)
            sd = torch.full_like(mu, float(mu.std()) + 1e-30)
        if state["calls"] in feeds_pool:
            # ... but each channel's largest value on x stays at +0.5 sd at least: on a small
            # map (a few pixels per channel) -pool_margin alone can zero a whole layer.
            floor = 0.5 * sd - z.amax(dim=(0, 2, 3)) + mu
            target = torch.maximum(-pool_margin * sd, floor)
        else:
            if balanced:
                sign = torch.where(torch.randperm(mu.numel(), generator=gen) < (mu.numel() + 1) // 2, 1.0, -1.0)
            else:
                sign = torch.where(torch.rand(mu.shape, generator=gen) < 0.5, -1.0, 1.0)
            sign = sign.to(z.device, z.dtype)
            target = sign * k * sd
        state["calls"] += 1
        shift = target - mu
        state["last"].bias.add_(shift)
        return (z + shift.view((1, -1) + (1,) * (z.dim() - 2)),)

    # (ResNet convs have no bias: the BatchNorm after each is the producer; a VGG conv without
    # BatchNorm has one. Every producer met here has a bias.)
    return run_shifting(model, x, (torch.nn.Conv2d, torch.nn.BatchNorm2d, torch.nn.Linear), track,
                        torch.nn.ReLU, shift_input)


def run_shifting(model, x, producers, track, activations, shift_input):
    """One forward pass over x (no gradients) with `track` as a forward hook on every module of
    the types `producers` and `shift_input` as a forward pre-hook on every module of the types
    `activations` (the margin setters' pattern: remember the last producer, then shift the
    activation's input through it). The hooks are removed afterwards. Returns the logits."""
    hooks = []
    for mod in model.modules():
        if isinstance(mod, producers):
            hooks.append(mod.register_forward_hook(track))
        elif isinstance(mod, activations):
            hooks.append(mod.register_forward_pre_hook(shift_input))
    try:
        with torch.no_grad():
            return model(x)
    finally:
        for h in hooks:
            h.remove()


def calibrate_logits(model, x, target_std=3.0, logits=None):
    """Scale the last Linear layer so that the logits on x (given, or computed) have a standard
    deviation of about target_std: softmax probabilities stay where p[target] is well
    conditioned (deep random ResNets otherwise reach logits of 1e7 and p[target] = 0)."""
    with torch.no_grad():
        std = float((model(x) if logits is None else logits).std())
        if std > 0:
            lin = last_linear(model)
            lin.weight.mul_(target_std / std)
            lin.bias.mul_(target_std / std)


def condition(model, x, margins=True, k=2.0, pool_margin=None, seed=0, balanced=False):
    """ReLU margins (optional; set_relu_margins), then the logit scale, both measured on the
    calibration batch x. Returns the model."""
    logits = (set_relu_margins(model, x, k=k, seed=seed, pool_margin=pool_margin, balanced=balanced)
              if margins else None)
    calibrate_logits(model, x, logits=logits)
    return model


# ----------------------------------------------------------------------------------------------
# safetensors

_ST_DTYPES = {
    np.dtype("float32"): "F32", np.dtype("float64"): "F64", np.dtype("float16"): "F16",
    np.dtype("int64"): "I64", np.dtype("int32"): "I32", np.dtype("uint8"): "U8",
}
_ST_NP = {v: k for k, v in _ST_DTYPES.items()}


def write_safetensors(tensors, path, metadata=None):
    """Minimal safetensors writer: 8-byte little-endian header length, a JSON header (padded with
    spaces to a multiple of 8 bytes) mapping names to dtype/shape/data_offsets, then the data.
    tensors: name -> torch tensor (any device) or array. Written through a temporary file and a
    rename, so that a reader never sees a partial file."""
    arrays = {}
    for name, value in tensors.items():
        arr = value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)
        # astype copies into C order and keeps 0-d shapes (np.ascontiguousarray would not).
        arrays[name] = arr.astype(arr.dtype.newbyteorder("<"), order="C")
    header = {}
    offset = 0
    for name, arr in arrays.items():
        header[name] = {"dtype": _ST_DTYPES[arr.dtype], "shape": list(arr.shape),
                        "data_offsets": [offset, offset + arr.nbytes]}
        offset += arr.nbytes
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(blob)))
        f.write(blob)
        for arr in arrays.values():
            f.write(arr.tobytes())
    os.replace(tmp, path)


def read_safetensors(path):
    """name -> numpy array of a file written by write_safetensors (the metadata is dropped)."""
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        b, e = info["data_offsets"]
        out[name] = np.frombuffer(data[b:e], dtype=_ST_NP[info["dtype"]]).reshape(info["shape"])
    return out
