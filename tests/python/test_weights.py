"""Weight files: `parchgrad convert` / `parchgrad inspect` against PyTorch.

State dicts are written with torch.save (zip and legacy formats) and with a small safetensors
writer below, converted to float32 safetensors by the engine and read back here; every tensor
must equal torch's own float32 conversion exactly. Broken and hostile files must fail with one
`parchgrad: error: <path>: ...` line, create no output and execute nothing.
"""
import collections
import io
import json
import os
import pickle
import pickletools
import shutil
import struct
import subprocess
import zipfile

import numpy as np
import pytest
import torch
import torchvision


def _binary():
    path = os.environ.get("PARCHGRAD_BIN")
    if not path:
        src = os.environ.get("PARCHGRAD_SRC", os.path.join(os.path.dirname(__file__), "..", ".."))
        path = os.path.join(src, "build", "parchgrad")
    if not os.path.exists(path):
        raise RuntimeError(f"parchgrad binary not found at {path} (set PARCHGRAD_BIN)")
    return path


BIN = _binary()
SCRATCH = os.environ.get("PARCHGRAD_SCRATCH") or os.path.join(
    os.path.dirname(os.path.abspath(BIN)), "test_scratch", "test_weights")
os.makedirs(SCRATCH, exist_ok=True)


@pytest.fixture
def tmp(request):
    d = os.path.join(SCRATCH, request.node.name.replace("[", "_").replace("]", ""))
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def run(*args):
    return subprocess.run([BIN, *args], capture_output=True, text=True, timeout=300)


# ---------------------------------------------------------------------------------------------
# Tiny safetensors writer / reader (numpy + json only).

ST_DTYPES = {
    torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16", torch.float64: "F64",
    torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8",
    torch.uint8: "U8", torch.bool: "BOOL",
}


def tensor_bytes(t):
    t = t.detach().contiguous()
    if t.dtype == torch.bfloat16:
        return t.view(torch.int16).numpy().astype("<i2").tobytes()
    return t.numpy().astype(t.numpy().dtype.newbyteorder("<")).tobytes()


def write_safetensors(path, tensors, metadata=None):
    header, blobs, offset = {}, [], 0
    for name, t in tensors.items():
        b = tensor_bytes(t)
        header[name] = {"dtype": ST_DTYPES[t.dtype], "shape": list(t.shape),
                        "data_offsets": [offset, offset + len(b)]}
        blobs.append(b)
        offset += len(b)
    if metadata:
        header["__metadata__"] = metadata
    text = json.dumps(header).encode()
    text += b" " * ((8 - len(text) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + b"".join(blobs))


def read_safetensors(path):
    """(ordered header pairs, {name: float32 array}, metadata) of a float32 safetensors file."""
    with open(path, "rb") as f:
        raw = f.read()
    (n,) = struct.unpack("<Q", raw[:8])
    assert (8 + n) % 8 == 0, "data must start 8-byte aligned"
    header = json.loads(raw[8:8 + n].decode())  # dicts keep the file's key order
    pairs = list(header.items())
    meta = header.pop("__metadata__", {})
    data = raw[8 + n:]
    out = {}
    for name, info in header.items():
        assert info["dtype"] == "F32"
        b, e = info["data_offsets"]
        arr = np.frombuffer(data, dtype="<f4", count=(e - b) // 4, offset=b)
        out[name] = arr.reshape(info["shape"])
    return pairs, out, meta


# ---------------------------------------------------------------------------------------------
# Helpers


def save(obj, path, fmt, **kw):
    if fmt == "zip":
        torch.save(obj, path, **kw)
    elif fmt == "legacy":
        torch.save(obj, path, _use_new_zipfile_serialization=False, **kw)
    else:
        write_safetensors(path, obj)


def expect(t):
    return t.detach().float().numpy()


def assert_same(got, want):
    """got: {name: array} from the engine; want: {name: torch tensor}."""
    assert sorted(got) == sorted(want)
    for name, t in want.items():
        e = expect(t)
        g = got[name]
        assert g.shape == e.shape, name
        assert np.array_equal(g, e), name


def convert(src, tmp):
    out = os.path.join(tmp, "out.safetensors")
    r = run("convert", src, out)
    assert r.returncode == 0, r.stderr
    pairs, tensors, meta = read_safetensors(out)
    return pairs, tensors, meta


def assert_fails(args, path, out=None, contains=None):
    r = run(*args)
    assert r.returncode != 0
    lines = r.stderr.splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("parchgrad: error: "), r.stderr
    assert path in lines[0], r.stderr
    if contains:
        assert contains in lines[0], r.stderr
    if out:
        d = os.path.dirname(out)
        assert not os.path.exists(out)
        assert not [f for f in os.listdir(d) if f.startswith(os.path.basename(out))], os.listdir(d)
    return lines[0]


def assert_convert_fails(src, tmp, contains=None):
    out = os.path.join(tmp, "bad_out.safetensors")
    return assert_fails(["convert", src, out], src, out, contains)


def mixed_state_dict():
    g = torch.Generator().manual_seed(0)
    base = torch.randn(4, 6, generator=g)
    sd = collections.OrderedDict()
    sd["conv.weight"] = torch.randn(3, 2, 3, 3, generator=g)
    sd["scalar"] = torch.tensor(2.5)
    sd["bn.num_batches_tracked"] = torch.tensor(123456, dtype=torch.int64)
    sd["base"] = base
    sd["transposed"] = base.t()                   # non-contiguous, shares storage
    sd["window"] = base[1:3, 2:5]                 # storage offset + strides
    sd["row"] = base[2]                           # storage offset, contiguous
    sd["param"] = torch.nn.Parameter(torch.randn(5, generator=g))
    sd["half"] = torch.randn(7, generator=g).half()
    sd["half_special"] = torch.tensor([6e-8, 1e-5, 65504.0, -0.0, -65504.0, -2.0]).half()  # Inf: refused
    sd["half_t"] = torch.randn(3, 4, generator=g).half().t()
    sd["bf16"] = torch.randn(2, 3, generator=g).bfloat16()
    sd["double"] = torch.randn(3, 2, generator=g, dtype=torch.float64)
    sd["long"] = torch.arange(-5, 5, dtype=torch.int64).reshape(2, 5)
    sd["int"] = torch.tensor([-7, 0, 2 ** 20], dtype=torch.int32)
    sd["short"] = torch.tensor([-300, 7], dtype=torch.int16)
    sd["char"] = torch.tensor([-128, 127], dtype=torch.int8)
    sd["byte"] = torch.tensor([0, 255], dtype=torch.uint8)
    sd["bool"] = torch.tensor([True, False, True])
    sd["empty"] = torch.zeros(0, 3)
    sd["expanded"] = torch.randn(3, 1, generator=g).expand(3, 4)   # stride 0
    sd._metadata = collections.OrderedDict({"": {"version": 1}, "bn": {"version": 2}})
    return sd


# ---------------------------------------------------------------------------------------------
# Round trips


@pytest.mark.parametrize("fmt,kw", [("zip", {}), ("zip", {"pickle_protocol": 4}),
                                    ("legacy", {}), ("safetensors", {})])
def test_mixed_dtypes_and_layouts(tmp, fmt, kw):
    sd = mixed_state_dict()
    src = os.path.join(tmp, "mixed" + (".safetensors" if fmt == "safetensors" else ".pth"))
    if fmt == "safetensors":
        write_safetensors(src, {k: v.contiguous() for k, v in sd.items()}, {"note": "x"})
    else:
        save(sd, src, fmt, **kw)
    pairs, got, meta = convert(src, tmp)
    assert_same(got, sd)
    names = [k for k, _ in pairs if k != "__metadata__"]
    assert names == sorted(names)
    want_fmt = {"zip": "pt-zip", "legacy": "pt-legacy", "safetensors": "safetensors"}[fmt]
    assert meta == {"source": os.path.basename(src), "format": want_fmt}

    r = run("inspect", src)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].startswith(f"format: {want_fmt}")
    shapes = dict(line.split(" ", 1) for line in lines[1:])
    assert shapes["conv.weight"] == "[3, 2, 3, 3]"
    assert shapes["scalar"] == "[]"
    assert shapes["transposed"] == "[6, 4]"
    assert len(shapes) == len(sd)


def test_legacy_plain_dict_and_converted_file_reads_back(tmp):
    sd = {"a": torch.randn(2, 2), "n": torch.tensor(3)}
    src = os.path.join(tmp, "plain.pth")
    save(sd, src, "legacy")
    _, got, _ = convert(src, tmp)
    assert_same(got, sd)
    # The engine's own output is a valid input.
    out = os.path.join(tmp, "out.safetensors")
    again = os.path.join(tmp, "again.safetensors")
    r = run("convert", out, again)
    assert r.returncode == 0, r.stderr
    _, got2, meta = read_safetensors(again)
    assert_same(got2, sd)
    assert meta == {"source": "out.safetensors", "format": "safetensors"}


# Old checkpoints (like torchvision's published VGG weights) predate _rebuild_tensor_v2 and may
# carry legacy storage views: written here with a hand-made pickler in that layout.
class _OldStorage:
    def __init__(self, key, typ, arr, view=None):
        self.key, self.typ, self.arr, self.view = key, typ, arr, view


class _OldTensor:
    def __init__(self, storage, offset, size, stride):
        self.args = (storage, offset, size, stride)

    def __reduce__(self):
        return (torch._utils._rebuild_tensor, self.args)


class _OldPickler(pickle.Pickler):
    def persistent_id(self, obj):
        if isinstance(obj, _OldStorage):
            return ("storage", obj.typ, obj.key, "cpu", obj.arr.size, obj.view)
        return None


def test_old_legacy_layout(tmp):
    base = np.arange(24, dtype=np.float32) * 0.5 - 3
    root = _OldStorage("100", torch.FloatStorage, base)
    view = _OldStorage("100", torch.FloatStorage, base, view=("101", 4, 12))
    longs = _OldStorage("7", torch.LongStorage, np.array([3, -4], dtype=np.int64))
    obj = {"a": _OldTensor(root, 2, (2, 3), (3, 1)), "b": _OldTensor(view, 1, (3, 2), (1, 4)),
           "n": _OldTensor(longs, 1, (), ())}
    src = os.path.join(tmp, "old.pth")
    with open(src, "wb") as f:
        for v in (0x1950A86A20F9469CFC6C, 1001,
                  {"protocol_version": 1001, "little_endian": True,
                   "type_sizes": {"short": 2, "int": 4, "long": 8}}):
            pickle.dump(v, f, protocol=2)
        _OldPickler(f, protocol=2).dump(obj)
        pickle.dump([root.key, longs.key], f, protocol=2)
        for st in (root, longs):
            f.write(struct.pack("<q", st.arr.size) + st.arr.astype(st.arr.dtype.newbyteorder("<")).tobytes())
    want = torch.load(src)  # torch's own reading of the same file
    _, got, meta = convert(src, tmp)
    assert_same(got, want)
    assert meta["format"] == "pt-legacy"


def test_zip_big_endian_storages(tmp):
    sd = collections.OrderedDict(w=torch.randn(3, 4).t(), n=torch.tensor([1, -70000]),
                                 h=torch.randn(5).half())
    src = os.path.join(tmp, "le.pth")
    save(sd, src, "zip")
    itemsize = {str(i): t.element_size() for i, t in enumerate(sd.values())}
    big = os.path.join(tmp, "be.pth")
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(big, "w") as zout:
        prefix = zin.namelist()[0].split("/")[0]
        for info in zin.infolist():
            data = zin.read(info)
            key = info.filename.rsplit("/", 1)[-1]
            if info.filename.startswith(f"{prefix}/data/"):
                data = np.frombuffer(data, dtype=f"u{itemsize[key]}").byteswap().tobytes()
            zout.writestr(info, data)
        zout.writestr(f"{prefix}/byteorder", "big")
    _, got, _ = convert(big, tmp)
    assert_same(got, sd)


@pytest.mark.parametrize("arch", ["resnet18", "vgg11"])
@pytest.mark.parametrize("fmt", ["zip", "legacy"])
def test_torchvision_models(tmp, arch, fmt):
    torch.manual_seed(1)
    model = getattr(torchvision.models, arch)()
    sd = model.state_dict()
    if arch == "resnet18":  # non-trivial BatchNorm buffers
        for k, v in sd.items():
            if k.endswith("running_mean") or k.endswith("running_var"):
                v.copy_(torch.rand_like(v) + 0.5)
            if k.endswith("num_batches_tracked"):
                v.fill_(7)
    src = os.path.join(tmp, f"{arch}.pth")
    save(sd, src, fmt)
    del model
    _, got, meta = convert(src, tmp)
    os.remove(src)
    assert_same(got, sd)
    assert meta["format"] == ("pt-zip" if fmt == "zip" else "pt-legacy")


@pytest.mark.parametrize("fmt", ["zip", "legacy"])
@pytest.mark.parametrize("key", ["state_dict", "model"])
def test_checkpoint_dict_is_unwrapped(tmp, fmt, key):
    torch.manual_seed(2)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(2, 3, 5, 5)).sum().backward()
    opt.step()
    sd = model.state_dict()
    ckpt = {"epoch": 3, key: sd, "optimizer": opt.state_dict(), "best": 0.5, "arch": "tiny"}
    src = os.path.join(tmp, "ckpt.pth")
    save(ckpt, src, fmt)
    _, got, _ = convert(src, tmp)
    assert_same(got, sd)


@pytest.mark.parametrize("fmt", ["zip", "legacy", "safetensors"])
def test_dataparallel_prefix_is_stripped(tmp, fmt):
    torch.manual_seed(3)
    dp = torch.nn.DataParallel(torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3)))
    sd = dp.state_dict()
    assert all(k.startswith("module.") for k in sd)
    src = os.path.join(tmp, "dp" + (".safetensors" if fmt == "safetensors" else ".pth"))
    save(sd, src, fmt)
    _, got, _ = convert(src, tmp)
    assert_same(got, {k[len("module."):]: v for k, v in sd.items()})


# ---------------------------------------------------------------------------------------------
# Broken and hostile inputs


def small_sd():
    torch.manual_seed(4)
    return collections.OrderedDict(w=torch.randn(8, 8), b=torch.randn(8), n=torch.tensor(5))


def cuts(size):
    return sorted({1, 4, 10, 30, 100, size // 3, size // 2, size - 100, size - 9, size - 1}
                  - {0} & set(range(1, size)))


def test_truncated_zip(tmp):
    src = os.path.join(tmp, "full.pth")
    save(small_sd(), src, "zip")
    data = open(src, "rb").read()
    for n in cuts(len(data)):
        cut = os.path.join(tmp, f"cut{n}.pth")
        with open(cut, "wb") as f:
            f.write(data[:n])
        assert_convert_fails(cut, tmp)


def test_truncated_legacy(tmp):
    src = os.path.join(tmp, "full.pth")
    save(small_sd(), src, "legacy")
    data = open(src, "rb").read()
    for n in cuts(len(data)):
        cut = os.path.join(tmp, f"cut{n}.pth")
        with open(cut, "wb") as f:
            f.write(data[:n])
        msg = assert_convert_fails(cut, tmp)
        if n > len(data) - 300:
            assert "truncated legacy .pth stream" in msg


def test_truncated_safetensors(tmp):
    src = os.path.join(tmp, "full.safetensors")
    write_safetensors(src, small_sd())
    data = open(src, "rb").read()
    for n in cuts(len(data)):
        cut = os.path.join(tmp, f"cut{n}.safetensors")
        with open(cut, "wb") as f:
            f.write(data[:n])
        assert_convert_fails(cut, tmp)


def test_bad_safetensors_headers(tmp):
    good = {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}
    cases = {
        "json": b"{not json",
        "offsets": json.dumps({"w": dict(good, data_offsets=[0, 800])}).encode(),
        "size": json.dumps({"w": dict(good, shape=[3])}).encode(),
        "dtype": json.dumps({"w": dict(good, dtype="F8")}).encode(),
        "neg": json.dumps({"w": dict(good, shape=[-2])}).encode(),
        "meta": json.dumps({"w": good, "__metadata__": {"a": 1}}).encode(),
        "array": b"[1, 2]      ",
    }
    for name, header in cases.items():
        p = os.path.join(tmp, f"{name}.safetensors")
        with open(p, "wb") as f:
            f.write(struct.pack("<Q", len(header)) + header + b"\0" * 8)
        assert_convert_fails(p, tmp)
    # A header length beyond the file.
    p = os.path.join(tmp, "long.safetensors")
    with open(p, "wb") as f:
        f.write(struct.pack("<Q", 1 << 20) + b"{}")
    assert_convert_fails(p, tmp, "truncated")


def test_storage_shorter_than_tensor(tmp):
    src = os.path.join(tmp, "full.pth")
    save(collections.OrderedDict(w=torch.randn(16)), src, "zip")
    bad = os.path.join(tmp, "short.pth")
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(bad, "w") as zout:
        for info in zin.infolist():
            data = zin.read(info)
            if info.filename.endswith("/data/0"):
                data = data[:20]
            zout.writestr(info, data)
    assert_convert_fails(bad, tmp, "storage shorter")


def test_zip_without_data_pkl(tmp):
    p = os.path.join(tmp, "other.pth")
    with zipfile.ZipFile(p, "w") as z:
        z.writestr("archive/readme.txt", "hello")
    assert_convert_fails(p, tmp, "data.pkl")


def write_zip_pickle(path, pkl):
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", pkl)
        z.writestr("archive/version", "3\n")


def test_crafted_foreign_global_in_zip(tmp):
    marker = os.path.join(tmp, "pwned")
    cmd = f"touch {marker}".encode()
    # GLOBAL 'os system', the command, TUPLE1, REDUCE, STOP.
    pkl = b"\x80\x02cos\nsystem\nq\x00X" + struct.pack("<I", len(cmd)) + cmd + b"\x85R."
    pickletools.dis(pkl, out=io.StringIO())  # well-formed (disassembly executes nothing)
    p = os.path.join(tmp, "evil.pth")
    write_zip_pickle(p, pkl)
    assert_convert_fails(p, tmp, "refusing pickle global 'os.system'")
    assert_fails(["inspect", p], p, None, "refusing pickle global 'os.system'")
    assert not os.path.exists(marker)


def test_crafted_stack_global_and_other_callables(tmp):
    cases = {
        "eval": b"\x80\x04\x8c\x08builtins\x8c\x04eval\x93\x8c\x011\x85R.",
        "torchload": b"\x80\x02ctorch\nload\nX\x01\x00\x00\x00x\x85R.",
        "getattr": b"\x80\x02c__builtin__\ngetattr\n.",
    }
    names = {"eval": "builtins.eval", "torchload": "torch.load", "getattr": "__builtin__.getattr"}
    for key, pkl in cases.items():
        p = os.path.join(tmp, f"{key}.pth")
        write_zip_pickle(p, pkl)
        assert_convert_fails(p, tmp, f"refusing pickle global '{names[key]}'")


class Evil:
    marker = None

    def __reduce__(self):
        return (os.system, (f"touch {Evil.marker}",))


@pytest.mark.parametrize("fmt,kw", [("zip", {}), ("zip", {"pickle_protocol": 4}), ("legacy", {})])
def test_reduce_exploit_is_not_executed(tmp, fmt, kw):
    Evil.marker = os.path.join(tmp, "pwned")
    p = os.path.join(tmp, "evil.pth")
    save({"w": torch.ones(2), "x": Evil()}, p, fmt, **kw)
    assert not os.path.exists(Evil.marker)
    qual = f"{os.system.__module__}.{os.system.__name__}"  # 'posix.system' on Linux
    assert_convert_fails(p, tmp, f"refusing pickle global '{qual}'")
    assert not os.path.exists(Evil.marker)


def test_empty_random_missing_and_directory(tmp):
    empty = os.path.join(tmp, "empty.pth")
    open(empty, "wb").close()
    assert_convert_fails(empty, tmp, "not a .pth or .safetensors weight file")
    rnd = os.path.join(tmp, "random.pth")
    with open(rnd, "wb") as f:
        f.write(np.random.default_rng(5).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    assert_convert_fails(rnd, tmp, "not a .pth or .safetensors weight file")
    missing = os.path.join(tmp, "missing.pth")
    msg = assert_convert_fails(missing, tmp)
    assert msg == f"parchgrad: error: {missing}: cannot open (No such file or directory)"
    assert_fails(["inspect", missing], missing)
    assert_convert_fails(tmp, tmp)


def test_pickle_without_tensors(tmp):
    p = os.path.join(tmp, "list.pth")
    torch.save([1, 2, 3], p)
    assert_convert_fails(p, tmp, "not a dict of tensors")
    p2 = os.path.join(tmp, "nothing.pth")
    torch.save({"epoch": 3}, p2, _use_new_zipfile_serialization=False)
    assert_convert_fails(p2, tmp, "no tensors")


# ---------------------------------------------------------------------------------------------
# Malformed files: refused with one line naming the file and the problem, never guessed at.

SRC = os.environ.get("PARCHGRAD_SRC", os.path.join(os.path.dirname(__file__), "..", ".."))
ASSET_WEIGHTS = os.path.join(SRC, "assets", "default", "resnet_synth.pth")
ASSET_STATS = os.path.join(SRC, "assets", "default", "stats.safetensors")
F32 = {"dtype": "F32"}


def raw_safetensors(path, header_text, data):
    """A safetensors file from header text as given (duplicate keys and all) and data bytes."""
    if isinstance(header_text, str):
        header_text = header_text.encode()
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(header_text)) + header_text + data)


def entry(shape, begin, end, dtype="F32"):
    return {"dtype": dtype, "shape": shape, "data_offsets": [begin, end]}


DATA = np.arange(1, 17, dtype="<f4").tobytes()  # 64 bytes


MALFORMED_SAFETENSORS = {
    # name: (header text, data, words the message must hold)
    "overlap": (json.dumps({"conv1.weight": entry([8], 0, 32), "bn1.weight": entry([4], 16, 32),
                            "bn1.bias": entry([8], 32, 64)}),
                DATA, "tensor 'bn1.weight' (data bytes 16-32) overlaps tensor 'conv1.weight'"),
    "overlap_same": (json.dumps({"a": entry([16], 0, 64), "b": entry([16], 0, 64)}), DATA, "overlaps tensor"),
    "reversed": (json.dumps({"a": entry([4], 16, 0), "b": entry([12], 16, 64)}), DATA, "data_offsets decreasing"),
    "hole": (json.dumps({"a": entry([4], 0, 16), "b": entry([8], 32, 64)}), DATA,
             "data bytes 16-32 belong to no tensor (a hole before tensor 'b')"),
    "hole_at_start": (json.dumps({"a": entry([4], 48, 64)}), DATA, "data bytes 0-48 belong to no tensor"),
    "trailing": (json.dumps({"a": entry([8], 0, 32)}), DATA, "32 data bytes after the last tensor"),
    "duplicate": ('{"a": %s, "a": %s}' % (json.dumps(entry([8], 0, 32)), json.dumps(entry([8], 32, 64))),
                  DATA, "key 'a' occurs twice"),
    "duplicate_field": ('{"a": {"dtype": "F32", "shape": [16], "shape": [16], "data_offsets": [0, 64]}}',
                        DATA, "key 'shape' occurs twice"),
    "duplicate_meta": ('{"__metadata__": {"k": "1", "k": "2"}, "a": %s}' % json.dumps(entry([16], 0, 64)),
                       DATA, "key 'k' occurs twice"),
    # '[' or '"' where '{' must be: not recognised as safetensors at all.
    "list": ("[1, 2]", DATA, "not a .pth or .safetensors weight file"),
    "string": ('"{}"', DATA, "not a .pth or .safetensors weight file"),
    "number": ("{} 1", DATA, "bad safetensors header"),
    "meta_int": (json.dumps({"__metadata__": {"a": 1}, "w": entry([16], 0, 64)}), DATA,
                 "'__metadata__' value of 'a' is not a string"),
    "meta_nested": (json.dumps({"__metadata__": {"a": {"b": "c"}}, "w": entry([16], 0, 64)}), DATA,
                    "'__metadata__' value of 'a' is not a string"),
    "meta_list": (json.dumps({"__metadata__": ["a"], "w": entry([16], 0, 64)}), DATA,
                  "'__metadata__' is not a map of strings to strings"),
    "size_mismatch": (json.dumps({"w": entry([3, 4], 0, 64)}), DATA, "64 bytes for shape [3, 4] of F32"),
    "size_mismatch_f16": (json.dumps({"w": entry([16], 0, 64, "F16")}), DATA, "64 bytes for shape [16] of F16"),
    "entry_not_object": (json.dumps({"w": [0, 64]}), DATA, "tensor 'w': not an object"),
    "no_dtype": (json.dumps({"w": {"shape": [16], "data_offsets": [0, 64]}}), DATA, "no dtype"),
    "unknown_dtype": (json.dumps({"w": entry([64], 0, 64, "F8_E4M3")}), DATA,
                      "unsupported dtype 'F8_E4M3' (readable: F64, F32"),
    "bad_utf8": (b'{"w\xff": ' + json.dumps(entry([16], 0, 64)).encode() + b"}", DATA, "bad safetensors header"),
    "header_too_long": (None, b"", "too large (at most 100000000)"),
}


@pytest.mark.parametrize("name", sorted(MALFORMED_SAFETENSORS))
def test_malformed_safetensors(tmp, name):
    header, data, words = MALFORMED_SAFETENSORS[name]
    p = os.path.join(tmp, f"{name}.safetensors")
    if header is None:
        with open(p, "wb") as f:
            f.write(struct.pack("<Q", 100000001) + b"{" + b" " * 64)
    else:
        raw_safetensors(p, header, data)
    assert_convert_fails(p, tmp, words)
    assert_fails(["inspect", p], p, None, words)


def test_safetensors_key_order_need_not_follow_offsets(tmp):
    # The reference implementation sorts the entries by offset: any key order is valid.
    p = os.path.join(tmp, "order.safetensors")
    raw_safetensors(p, json.dumps({"z": entry([4], 0, 16), "a": entry([12], 16, 64),
                                   "__metadata__": None}), DATA)
    _, got, _ = convert(p, tmp)
    assert np.array_equal(got["z"], np.arange(1, 5, dtype=np.float32))
    assert np.array_equal(got["a"], np.arange(5, 17, dtype=np.float32))


def bad_value_state_dict(value, dtype=torch.float32):
    sd = collections.OrderedDict()
    sd["conv1.weight"] = torch.ones(2, 3)
    w = torch.ones(4, 5, dtype=dtype)
    w[2, 1] = value
    sd["layer1.0.conv1.weight"] = w
    return sd


@pytest.mark.parametrize("fmt", ["zip", "legacy", "safetensors"])
@pytest.mark.parametrize("value,dtype,words", [
    (float("nan"), torch.float32, "contains NaN (element 11 of 20)"),
    (float("inf"), torch.float32, "contains Inf (element 11 of 20)"),
    (float("-inf"), torch.float16, "contains Inf (element 11 of 20)"),
    (float("nan"), torch.bfloat16, "contains NaN"),
    (1e300, torch.float64, "contains Inf or a float64 value beyond float32's range"),
], ids=["nan", "inf", "f16_neg_inf", "bf16_nan", "f64_overflow"])
def test_non_finite_weights(tmp, fmt, value, dtype, words):
    p = os.path.join(tmp, "w" + (".safetensors" if fmt == "safetensors" else ".pth"))
    save(bad_value_state_dict(value, dtype), p, fmt)
    msg = assert_convert_fails(p, tmp, "tensor 'layer1.0.conv1.weight' " + words)
    assert msg == f"parchgrad: error: {p}: tensor 'layer1.0.conv1.weight' " + msg.split("' ", 1)[1]


@pytest.mark.parametrize("fmt", ["zip", "legacy", "safetensors"])
@pytest.mark.parametrize("dtype,name", [(torch.bool, "BOOL"), (torch.int8, "I8"), (torch.uint8, "U8"),
                                        (torch.int64, "I64")])
def test_integer_parameters(tmp, fmt, dtype, name):
    sd = collections.OrderedDict()
    sd["features.0.weight"] = torch.ones(2, 3, dtype=dtype)
    sd["features.0.num_batches_tracked"] = torch.tensor(3)  # an integer buffer: fine
    p = os.path.join(tmp, "w" + (".safetensors" if fmt == "safetensors" else ".pth"))
    save(sd, p, fmt)
    assert_convert_fails(p, tmp, f"tensor 'features.0.weight' is stored as {name}, but a '.weight' tensor is "
                                 "a model parameter and must be floating point")


def test_quantized_checkpoint_is_named(tmp):
    p = os.path.join(tmp, "q.pth")
    q = torch.quantize_per_tensor(torch.ones(4), 0.1, 0, torch.qint8)
    torch.save({"fc.weight": q}, p)
    msg = assert_convert_fails(p, tmp)
    assert "quantized" in msg or "QInt8Storage" in msg, msg


def test_fifo_is_refused_without_blocking(tmp):
    fifo = os.path.join(tmp, "w.pth")
    os.mkfifo(fifo)
    out = os.path.join(tmp, "out.safetensors")
    for args in (["convert", fifo, out], ["inspect", fifo]):
        r = subprocess.run([BIN, *args], capture_output=True, text=True, timeout=30)
        assert r.returncode != 0
        assert r.stderr.splitlines() == [f"parchgrad: error: {fifo}: not a regular file (a FIFO)"], r.stderr
    assert not [f for f in os.listdir(tmp) if f.startswith("out")]


def test_devices_are_refused(tmp):
    out = os.path.join(tmp, "out.safetensors")
    for dev in ("/dev/zero", "/dev/null"):
        msg = assert_fails(["convert", dev, out], dev, out)
        assert msg.endswith("not a regular file (a character device)"), msg


@pytest.fixture
def synth_image(tmp):
    from PIL import Image
    p = os.path.join(tmp, "img.png")
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(p)
    return p


def saliency_fails(tmp, image, weights, stats, words):
    out = os.path.join(tmp, "sal_out")
    r = subprocess.run([BIN, "saliency", "--weights", weights, "--stats", stats, "--parchgrad", "cls",
                        "--out", out, image], capture_output=True, text=True, timeout=300)
    assert r.returncode != 0
    lines = r.stderr.splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith(f"parchgrad: error: {stats}: "), r.stderr
    assert words in lines[0], r.stderr
    assert not os.path.exists(out) or not os.listdir(out), os.listdir(out)
    return lines[0]


@pytest.mark.skipif(not os.path.exists(ASSET_WEIGHTS), reason="bundled model not present")
def test_weights_given_as_stats(tmp, synth_image):
    saliency_fails(tmp, synth_image, ASSET_WEIGHTS, ASSET_WEIGHTS,
                   "is a weight file (pt-zip), not a statistics file")
    st = os.path.join(tmp, "w.safetensors")
    assert run("convert", ASSET_WEIGHTS, st).returncode == 0
    saliency_fails(tmp, synth_image, ASSET_WEIGHTS, st,
                   "is a weight file ('.weight' tensors), not a statistics file")
    saliency_fails(tmp, synth_image, ASSET_WEIGHTS, synth_image, "is not a statistics file")


@pytest.mark.skipif(not os.path.exists(ASSET_STATS), reason="bundled statistics not present")
@pytest.mark.parametrize("value,words", [(float("nan"), "contains NaN"), (float("inf"), "contains Inf")])
def test_non_finite_statistics(tmp, synth_image, value, words):
    raw = bytearray(open(ASSET_STATS, "rb").read())
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    b, _ = header["layer1.0.conv1.mean"]["data_offsets"]
    struct.pack_into("<f", raw, 8 + n + b + 4, value)
    p = os.path.join(tmp, "stats.safetensors")
    with open(p, "wb") as f:
        f.write(raw)
    saliency_fails(tmp, synth_image, ASSET_WEIGHTS, p, f"tensor 'layer1.0.conv1.mean' {words} (element 1 of")
