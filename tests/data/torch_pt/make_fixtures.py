#!/usr/bin/env python3
"""Writes the torch.save fixtures of tests/core/model/torch_state_dict_test.cc (README.md here).

Run with a Python that has torch (Debian's python3-torch 1.13 wrote the committed files):
    /usr/bin/python3 tests/data/torch_pt/make_fixtures.py
The values are small closed forms (arange-based) that the C++ test recomputes.
"""
import collections
import os

import torch
from torch import nn

HERE = os.path.dirname(os.path.abspath(__file__))


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(3, 2)
        self.register_buffer("fp16", torch.arange(4, dtype=torch.float16) * 0.5)
        self.register_buffer("bf16_buf", torch.arange(5, dtype=torch.bfloat16) - 2)
        self.register_buffer("idx", torch.tensor([0, -1, 2**40, -(2**62)], dtype=torch.int64))
        self.register_buffer("i8", torch.tensor([-128, 0, 127], dtype=torch.int8))
        self.register_buffer("mask", torch.tensor([True, False, True]))
        self.register_buffer("f64", torch.tensor([0.1, -1e300], dtype=torch.float64))
        with torch.no_grad():
            self.proj.weight.copy_(torch.arange(6, dtype=torch.float32).reshape(2, 3) * 0.25 - 0.5)
            self.proj.bias.copy_(torch.tensor([1.5, -2.0]))


def main():
    torch.manual_seed(0)
    # 1. A module's state_dict: an OrderedDict with _metadata (the BUILD opcode).
    sd = Tiny().state_dict()
    assert hasattr(sd, "_metadata")
    torch.save(sd, os.path.join(HERE, "state_dict_dtypes.pt"))

    # 2. Views of one storage: offsets, transposed and stepped strides, a stride-0 expand.
    base = torch.arange(12, dtype=torch.float32).reshape(3, 4)
    views = collections.OrderedDict()
    views["base"] = base
    views["transposed"] = base.t()
    views["block"] = base[1:, 1:3]
    views["row"] = base[2]
    views["every_third"] = base.view(-1)[::3]
    views["expanded"] = base[0, 1:2].expand(3, 2)
    views["scalar"] = base[1, 2]
    views["empty"] = base[:, 4:]
    torch.save(views, os.path.join(HERE, "shared_storage_views.pt"))

    # 3. convert_v1_to_v2.py's wrapper (spec §5): a state dict plus a config and a step.
    inner = collections.OrderedDict()
    inner["model.layers.0.mlp.up_proj.weight"] = torch.arange(4, dtype=torch.float32)
    inner["model.layers.0.mlp.up_proj.lut"] = torch.tensor([-1.0, 1.0], dtype=torch.float16)
    wrapped = {
        "model_state_dict": inner,
        "config": {"version": "v2", "lut_bits": 2, "fp16": False, "eps": 1e-5, "note": None,
                   "ranks": [4, 8], "big": 2**40, "negative": -70000},
        "step": 1234,
    }
    torch.save(wrapped, os.path.join(HERE, "nested_wrapper.pt"))

    # 4. Protocol 4 (SHORT_BINUNICODE, MEMOIZE, FRAME, STACK_GLOBAL) and an nn.Parameter.
    p4 = collections.OrderedDict()
    p4["param"] = nn.Parameter(torch.arange(3, dtype=torch.float32))
    p4["buffer"] = torch.arange(3, dtype=torch.int32) * -7
    torch.save(p4, os.path.join(HERE, "protocol4_parameter.pt"), pickle_protocol=4)


if __name__ == "__main__":
    main()
