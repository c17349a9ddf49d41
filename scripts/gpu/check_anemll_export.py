#!/usr/bin/env python3
"""Check a `qat export --format anemll` folder outside qatd (issue #17, docs/export-anemll.md).

1. Reads EXPORT_DIR/anemll with safetensors + torch only (no qatd code): for every layer of
   anemll_manifest.json it unpacks the indices by the documented rule, checks
   snapped weight == lut[indices], re-materialises W = lut[indices] * S (S from scale_A @ scale_B
   in float32, rounded to the export dtype, clamped at 1e-8 for V1), builds a transformers
   Qwen3ForCausalLM from the folder's config.json with W and model.safetensors, and compares its
   logits on the token sequence of EXPORT_DIR/reference_logits.safetensors with qatd's.
2. With --aq1-repo PATH (a checkout of github.com/bhctsntrk/Anemll at branch anemll-quant-1,
   plus `pip install coremltools`): runs that branch's own loader,
   anemll.models.aq1_mil_layer.load_aq1_checkpoint(EXPORT_DIR/anemll), and checks that it finds
   every quantized layer with our indices, LUT and scale factors (fp16), i.e. that the folder is
   what that consumer reads.
Prints one JSON object; exit 0 when every check passes.

Usage:
  python3 scripts/gpu/check_anemll_export.py EXPORT_DIR
  python3 scripts/gpu/check_anemll_export.py EXPORT_DIR --device cpu --aq1-repo ~/src/Anemll
"""
import argparse
import json
import os
import sys

import numpy as np
import torch
import transformers
from safetensors.torch import load_file
from transformers import AutoConfig, AutoModelForCausalLM

DEFAULT_RTOL = {"float32": 1e-4, "float16": 2e-2, "bfloat16": 5e-2}


def unpack(packed, bits, shape):
    """The manifest's index_packing rule: row-major, index n at bit (n*bits) % 8 of byte n*bits // 8."""
    p = packed.numpy().astype(np.uint8)
    per_byte = 8 // bits
    n = shape[0] * shape[1]
    shifts = (np.arange(per_byte, dtype=np.uint8) * bits).astype(np.uint8)
    idx = ((p[:, None] >> shifts[None, :]) & ((1 << bits) - 1)).reshape(-1)[:n]
    return torch.from_numpy(idx.astype(np.int64)).reshape(shape)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("export_dir", help="the export job's output directory (holds anemll/ and reference_logits.safetensors)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--rtol", type=float, help="pass bound on max|diff| / max|reference| (default by dtype)")
    ap.add_argument("--aq1-repo", help="checkout of bhctsntrk/Anemll (branch anemll-quant-1) to run its loader")
    args = ap.parse_args()
    folder = os.path.join(args.export_dir, "anemll")
    with open(os.path.join(folder, "anemll_manifest.json")) as f:
        manifest = json.load(f)
    files = manifest["files"]
    quantized = load_file(os.path.join(folder, files["quantized"]))
    snapped = load_file(os.path.join(folder, files["snapped"]))
    dense = load_file(os.path.join(folder, files["dense"]))
    dtype = getattr(torch, manifest["dtype"])
    result = {"folder": folder, "torch": torch.__version__, "transformers": transformers.__version__,
              "dtype": manifest["dtype"], "layers": len(manifest["layers"]), "errors": []}

    state = dict(dense)
    indices = {}
    for layer in manifest["layers"]:
        name, shape, bits = layer["name"], layer["shape"], layer["bits"]
        idx = unpack(quantized[name + ".indices"], bits, shape)
        indices[name] = idx
        lut = quantized[name + ".lut"]
        q = lut[idx.reshape(-1)].reshape(shape)
        if not torch.equal(q, snapped[name + ".weight"]):
            result["errors"].append(f"{name}: snapped weight != lut[indices]")
        if layer["scales"] == "full":
            s = quantized[name + ".scales"]
        else:
            s = (quantized[name + ".scale_A"].float() @ quantized[name + ".scale_B"].float()).to(dtype)
        if layer["scale_formula"].startswith("clamp_min"):
            s = s.clamp_min(1e-8)
        state[name + ".weight"] = q * s
        if layer["bias"]:
            state[name + ".bias"] = quantized[name + ".bias"]

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    config = AutoConfig.from_pretrained(folder)
    model = AutoModelForCausalLM.from_config(config).to(dtype)
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not (k == "lm_head.weight" and getattr(config, "tie_word_embeddings", False))]
    if missing or unexpected:
        result["errors"].append(f"state_dict: missing {missing[:5]}, unexpected {unexpected[:5]}")
    if getattr(config, "tie_word_embeddings", False):
        model.tie_weights()
    ref = load_file(os.path.join(args.export_dir, "reference_logits.safetensors"))
    model = model.to(args.device).eval()
    with torch.no_grad():
        logits = model(ref["input_ids"].to(torch.long).to(args.device)).logits.float().cpu()
    ref_logits = ref["logits"].float()
    scale = ref_logits.abs().max().item()
    result["max_rel_diff"] = (logits - ref_logits).abs().max().item() / scale
    result["top1_agreement"] = (logits.argmax(-1) == ref_logits.argmax(-1)).float().mean().item()
    result["rtol"] = args.rtol if args.rtol is not None else DEFAULT_RTOL[manifest["dtype"]]
    if not result["max_rel_diff"] <= result["rtol"]:
        result["errors"].append("logits differ from qatd's beyond rtol")

    if args.aq1_repo:
        sys.path.insert(0, os.path.abspath(args.aq1_repo))
        from anemll.models.aq1_mil_layer import load_aq1_checkpoint  # needs coremltools
        data = load_aq1_checkpoint(folder, verbose=False)
        result["aq1_layers_found"] = len(data)
        for layer in manifest["layers"]:
            name = layer["name"]
            d = data.get(name)
            if d is None:
                result["errors"].append(f"aq1 loader: {name} not found")
                continue
            ours_lut = quantized[name + ".lut"].to(torch.float16).numpy()
            if not np.array_equal(d["lut"], ours_lut):
                result["errors"].append(f"aq1 loader: {name} LUT differs")
            theirs = unpack(torch.from_numpy(d["indices_packed"]), d["nbits"], layer["shape"]) if d["nbits"] in (2, 4, 8) else None
            if theirs is None or not torch.equal(theirs, indices[name]):
                result["errors"].append(f"aq1 loader: {name} indices differ (nbits {d['nbits']})")
            for key in ("scale_A", "scale_B"):
                if layer["scales"] == "low_rank" and not np.array_equal(
                        d[key], quantized[name + "." + key].to(torch.float16).numpy()):
                    result["errors"].append(f"aq1 loader: {name} {key} differs")
    result["ok"] = not result["errors"]
    print(json.dumps(result))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
