#!/usr/bin/env python3
"""Checks that a qatd checkpoint's seed-format .pt files load with torch.load(weights_only=True).

The reference's load_checkpoint always passes weights_only=True (the default in PyTorch >= 2.6),
and the restricted unpickler rejects anything but plain containers of tensors (issue #17 item 4).

Usage:
  check_pt_weights_only.py CHECKPOINT_DIR [--expect MANIFEST.json]

Loads CHECKPOINT_DIR/model_state_dict.pt and, when present, CHECKPOINT_DIR/indices.pt (V1 only)
with weights_only=True and checks that each is a dict of str -> torch.Tensor. With --expect (the
ctest qatd_seed_pt_tests writes one) it also compares every tensor's dtype, shape and bytes with
what qatd wrote. Exit status 0 = all good; 1 = a file failed to load or differs (printed).

On a GPU host (torch 2.x), on the output directory of any QAT or layerwise job (both write the
seed files by default), or on a checkpoint a test wrote (QATD_KEEP_TEST_DIRS=1):
  python3 scripts/gpu/check_pt_weights_only.py OUTPUT_DIR
"""
import argparse
import json
import os
import sys

import torch


def raw_bytes(t):
    t = t.detach().cpu().contiguous()
    if t.dtype == torch.bfloat16:  # numpy has no bfloat16: compare the bit patterns
        t = t.view(torch.int16)
    return t.numpy().tobytes()


def check_file(path, expected, base):
    problems = []
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # the restricted unpickler raises pickle.UnpicklingError
        return ["%s: torch.load(weights_only=True) failed: %s" % (path, e)]
    if not isinstance(obj, dict):
        return ["%s: holds a %s, not a dict" % (path, type(obj).__name__)]
    for k, v in obj.items():
        if not isinstance(k, str) or not isinstance(v, torch.Tensor):
            problems.append("%s: entry %r is %s, not str -> Tensor" % (path, k, type(v).__name__))
    print("%s: %d tensors (%s) load with weights_only=True, torch %s" % (
        path, len(obj), type(obj).__name__, torch.__version__))
    if expected is None:
        return problems
    want_keys = [e["key"] for e in expected]
    if sorted(want_keys) != sorted(obj.keys()):
        missing = sorted(set(want_keys) - set(obj.keys()))
        extra = sorted(set(obj.keys()) - set(want_keys))
        problems.append("%s: keys differ: missing %s, unexpected %s" % (path, missing[:5], extra[:5]))
    for e in expected:
        t = obj.get(e["key"])
        if t is None:
            continue
        dtype = str(t.dtype).replace("torch.", "")
        if dtype != e["dtype"]:
            problems.append("%s: %s dtype %s, qatd wrote %s" % (path, e["key"], dtype, e["dtype"]))
        if list(t.shape) != e["shape"]:
            problems.append("%s: %s shape %s, qatd wrote %s" % (path, e["key"], list(t.shape), e["shape"]))
        with open(os.path.join(base, e["data"]), "rb") as f:
            want = f.read()
        if dtype == e["dtype"] and list(t.shape) == e["shape"] and raw_bytes(t) != want:
            problems.append("%s: %s values differ from what qatd wrote" % (path, e["key"]))
    return problems


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("checkpoint_dir")
    p.add_argument("--expect", help="manifest JSON: {file: [{key, dtype, shape, data}]}, data relative to it")
    a = p.parse_args()
    manifest, base = None, None
    if a.expect:
        with open(a.expect) as f:
            manifest = json.load(f)
        base = os.path.dirname(os.path.abspath(a.expect))
    names = ["model_state_dict.pt", "indices.pt"]
    problems = []
    found = 0
    for name in names:
        path = os.path.join(a.checkpoint_dir, name)
        expected = manifest.get(name) if manifest is not None else None
        if not os.path.exists(path):
            if expected is not None or name == "model_state_dict.pt":
                problems.append("%s: missing" % path)
            continue
        found += 1
        problems += check_file(path, expected, base)
    for p_ in problems:
        print("FAIL " + p_)
    if not problems:
        print("OK: %d file(s) load with torch.load(weights_only=True)" % found)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
