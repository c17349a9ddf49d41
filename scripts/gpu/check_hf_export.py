#!/usr/bin/env python3
"""Check a `qat export --format hf` folder with transformers (issue #17).

Loads EXPORT_DIR/hf with AutoModelForCausalLM.from_pretrained, runs the fixed token sequence
stored in EXPORT_DIR/reference_logits.safetensors (written by the EXPORT job: `input_ids`
int64 [1, S] and `logits` float32 [1, S, V], the quantized model's logits computed by qatd in
fp32) and compares the logits. Prints one JSON object; exit 0 when the relative difference
max|hf - qatd| / max|qatd| is within --rtol, else 1.

Usage (on a host with torch + transformers; EXPORT_DIR is the export job's output directory,
the parent of the `hf` artifact):
  python3 scripts/gpu/check_hf_export.py EXPORT_DIR                       # dtype of config.json
  python3 scripts/gpu/check_hf_export.py EXPORT_DIR --dtype float32       # isolates weight rounding
  python3 scripts/gpu/check_hf_export.py EXPORT_DIR --device cpu --rtol 0.05
Default --rtol: float32 1e-4, float16 2e-2, bfloat16 5e-2 (bf16 activations through every
layer, not only bf16 weights); top-1 agreement is reported too.
"""
import argparse
import json
import os
import sys

import torch
import transformers
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

DEFAULT_RTOL = {"float32": 1e-4, "float16": 2e-2, "bfloat16": 5e-2}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("export_dir", help="the export job's output directory (holds hf/ and reference_logits.safetensors)")
    ap.add_argument("--hf", help="the HF folder (default: EXPORT_DIR/hf)")
    ap.add_argument("--reference", help="reference logits (default: EXPORT_DIR/reference_logits.safetensors)")
    ap.add_argument("--dtype", default="auto", choices=["auto", "bfloat16", "float16", "float32"],
                    help="torch_dtype to load with (auto: the folder's config.json torch_dtype)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--rtol", type=float, help="pass bound on max|diff| / max|reference|")
    args = ap.parse_args()

    hf = args.hf or os.path.join(args.export_dir, "hf")
    ref_path = args.reference or os.path.join(args.export_dir, "reference_logits.safetensors")
    dtype_name = args.dtype
    if dtype_name == "auto":
        with open(os.path.join(hf, "config.json")) as f:
            dtype_name = json.load(f).get("torch_dtype") or "float32"
    dtype = getattr(torch, dtype_name)
    rtol = args.rtol if args.rtol is not None else DEFAULT_RTOL[dtype_name]

    # Exact fp32 matmuls for the comparison (TF32 would add ~1e-3 relative error).
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False

    ref = load_file(ref_path)
    input_ids = ref["input_ids"].to(torch.long)
    ref_logits = ref["logits"].to(torch.float32)

    major = int(transformers.__version__.split(".")[0])
    kwargs = {"dtype": dtype} if major >= 5 else {"torch_dtype": dtype}
    model = AutoModelForCausalLM.from_pretrained(hf, **kwargs).to(args.device).eval()
    with torch.no_grad():
        logits = model(input_ids.to(args.device)).logits.to(torch.float32).cpu()

    if logits.shape != ref_logits.shape:
        print(json.dumps({"ok": False, "error": f"shape {list(logits.shape)} != reference {list(ref_logits.shape)}"}))
        return 1
    diff = (logits - ref_logits).abs()
    scale = ref_logits.abs().max().item()
    result = {
        "hf_folder": hf,
        "transformers": transformers.__version__,
        "torch": torch.__version__,
        "dtype": dtype_name,
        "device": args.device,
        "tokens": int(input_ids.numel()),
        "max_abs_diff": diff.max().item(),
        "mean_abs_diff": diff.mean().item(),
        "max_abs_reference": scale,
        "max_rel_diff": diff.max().item() / scale if scale > 0 else float("inf"),
        "top1_agreement": (logits.argmax(-1) == ref_logits.argmax(-1)).float().mean().item(),
        "rtol": rtol,
    }
    result["ok"] = result["max_rel_diff"] <= rtol
    print(json.dumps(result))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
