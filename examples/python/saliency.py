#!/usr/bin/env python3
"""Saliency maps through parchgrad's C API from Python, with ctypes and numpy only (no torch).

    python3 saliency.py WEIGHTS OUT_DIR IMAGE... [--set NAME=VALUE]...

For each image: read, preprocess (the model's own preset: 224 x 224 for a ResNet), explain its top-1 class and save
OUT_DIR/<stem>.npy, the map `parchgrad saliency` writes for the same image and settings.
The library is found through PARCHGRAD_LIB (a path to libparchgrad.so), else the loader's path.
"""
import ctypes
import ctypes.util
import os
import sys

import numpy as np

PG_OK = 0


def load_library():
    path = os.environ.get("PARCHGRAD_LIB") or ctypes.util.find_library("parchgrad")
    if not path:
        sys.exit("libparchgrad not found: set PARCHGRAD_LIB to its path")
    lib = ctypes.CDLL(path)
    c_float_p = ctypes.POINTER(ctypes.c_float)
    sigs = {
        "pg_version": (ctypes.c_char_p, []),
        "pg_last_error": (ctypes.c_char_p, []),
        "pg_model_load": (ctypes.c_int, [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p,
                                         ctypes.POINTER(ctypes.c_void_p)]),
        "pg_model_free": (None, [ctypes.c_void_p]),
        "pg_model_num_classes": (ctypes.c_int, [ctypes.c_void_p]),
        "pg_model_preset": (ctypes.c_char_p, [ctypes.c_void_p]),
        "pg_model_class_name": (ctypes.c_char_p, [ctypes.c_void_p, ctypes.c_int]),
        "pg_saliency_options_new": (ctypes.c_void_p, []),
        "pg_saliency_options_free": (None, [ctypes.c_void_p]),
        "pg_saliency_options_set": (ctypes.c_int, [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_char_p]),
        "pg_saliency": (ctypes.c_int, [ctypes.c_void_p, c_float_p, ctypes.c_int, ctypes.c_int, ctypes.c_int,
                                       ctypes.POINTER(ctypes.c_int), ctypes.c_void_p, c_float_p, c_float_p]),
        "pg_preprocess_shape": (ctypes.c_int, [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int,
                                               ctypes.c_int, ctypes.POINTER(ctypes.c_int),
                                               ctypes.POINTER(ctypes.c_int)]),
        "pg_preprocess_preset_u8": (ctypes.c_int, [ctypes.POINTER(ctypes.c_ubyte), ctypes.c_int, ctypes.c_int,
                                                   ctypes.c_char_p, ctypes.c_int, ctypes.c_int, ctypes.c_char_p,
                                                   c_float_p]),
        "pg_image_read": (ctypes.c_int, [ctypes.c_char_p, ctypes.POINTER(ctypes.POINTER(ctypes.c_ubyte)),
                                         ctypes.POINTER(ctypes.c_int), ctypes.POINTER(ctypes.c_int)]),
        "pg_free": (None, [ctypes.c_void_p]),
    }
    for name, (res, args) in sigs.items():
        fn = getattr(lib, name)
        fn.restype, fn.argtypes = res, args
    return lib


class Parchgrad:
    def __init__(self, weights, device="cpu"):
        self.lib = load_library()
        self.model = ctypes.c_void_p()
        self._check(self.lib.pg_model_load(weights.encode(), None, device.encode(), ctypes.byref(self.model)))
        self.classes = self.lib.pg_model_num_classes(self.model)
        # The preprocessing of the model's torchvision weights (the command line's default).
        self.preset = self.lib.pg_model_preset(self.model)
        self.options = self.lib.pg_saliency_options_new()

    def _check(self, rc):
        if rc != PG_OK:
            raise RuntimeError(self.lib.pg_last_error().decode())

    def set(self, name, value):
        self._check(self.lib.pg_saliency_options_set(self.options, name.encode(),
                                                      None if value is None else str(value).encode()))

    def read_image(self, path):
        """uint8 [h, w, 3]"""
        rgb, h, w = ctypes.POINTER(ctypes.c_ubyte)(), ctypes.c_int(), ctypes.c_int()
        self._check(self.lib.pg_image_read(path.encode(), ctypes.byref(rgb), ctypes.byref(h), ctypes.byref(w)))
        try:
            return np.ctypeslib.as_array(rgb, shape=(h.value, w.value, 3)).copy()
        finally:
            self.lib.pg_free(rgb)

    def preprocess(self, rgb):
        """uint8 [h, w, 3] -> float32 [3, H, W], as the command line preprocesses for this model"""
        rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
        h, w = ctypes.c_int(), ctypes.c_int()
        self._check(self.lib.pg_preprocess_shape(rgb.shape[0], rgb.shape[1], self.preset, -1, -1, ctypes.byref(h),
                                                 ctypes.byref(w)))
        x = np.empty((3, h.value, w.value), dtype=np.float32)
        self._check(self.lib.pg_preprocess_preset_u8(rgb.ctypes.data_as(ctypes.POINTER(ctypes.c_ubyte)), rgb.shape[0],
                                                     rgb.shape[1], self.preset, -1, -1, None,
                                                     x.ctypes.data_as(ctypes.POINTER(ctypes.c_float))))
        return x

    def saliency(self, x, targets=None):
        """x [n, 3, h, w] float32 -> (maps [n, h, w], logits [n, classes])"""
        x = np.ascontiguousarray(x, dtype=np.float32)
        n, _, h, w = x.shape
        maps = np.empty((n, h, w), dtype=np.float32)
        logits = np.empty((n, self.classes), dtype=np.float32)
        t = None
        if targets is not None:
            t = (ctypes.c_int * n)(*targets)
        fp = ctypes.POINTER(ctypes.c_float)
        self._check(self.lib.pg_saliency(self.model, x.ctypes.data_as(fp), n, h, w, t, self.options,
                                         maps.ctypes.data_as(fp), logits.ctypes.data_as(fp)))
        return maps, logits

    def class_name(self, k):
        name = self.lib.pg_model_class_name(self.model, int(k))
        return name.decode() if name else "?"

    def close(self):
        self.lib.pg_saliency_options_free(self.options)
        self.lib.pg_model_free(self.model)


def main(argv):
    sets = [a for i, a in enumerate(argv) if i > 0 and argv[i - 1] == "--set"]
    rest = [a for i, a in enumerate(argv) if a != "--set" and not (i > 0 and argv[i - 1] == "--set")]
    if len(rest) < 3:
        sys.exit(__doc__)
    weights, out, images = rest[0], rest[1], rest[2:]
    pg = Parchgrad(weights)
    for s in sets:
        name, _, value = s.partition("=")
        pg.set(name, value if "=" in s else None)
    for path in images:
        x = pg.preprocess(pg.read_image(path))[None]
        maps, logits = pg.saliency(x)
        top = int(np.argmax(logits[0]))
        dest = os.path.join(out, os.path.splitext(os.path.basename(path))[0] + ".npy")
        np.save(dest, maps[0])
        print(f"{path}: class {top} ({pg.class_name(top)}), map in {dest}")
    pg.close()


if __name__ == "__main__":
    main(sys.argv[1:])
