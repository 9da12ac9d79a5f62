#!/usr/bin/env python3
"""Regenerates weights/imagenet_classes.cpp from torchvision's list of ImageNet-1k class names.

Run with Debian's Python: /usr/bin/python3 tools/gen_imagenet_classes.py
"""
import json
import pathlib

from torchvision.models._meta import _IMAGENET_CATEGORIES as CATEGORIES

out = pathlib.Path(__file__).resolve().parent.parent / "weights" / "imagenet_classes.cpp"
assert len(CATEGORIES) == 1000
lines = [
    "// The 1000 ImageNet-1k class names in class-id order (as torchvision lists them).",
    "// Generated with tools/gen_imagenet_classes.py.",
    '#include "weights/class_names.h"',
    "",
    "namespace pg::weights {",
    "",
    "const std::vector<std::string>& imagenet_class_names() {",
    "  static const std::vector<std::string> names = {",
]
lines += ["      %s," % json.dumps(c) for c in CATEGORIES]
lines += ["  };", "  return names;", "}", "", "}  // namespace pg::weights", ""]
out.write_text("\n".join(lines))
