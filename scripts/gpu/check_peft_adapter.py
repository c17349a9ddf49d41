#!/usr/bin/env python3
"""Check that a qatd LoRA adapter loads where users load adapters (issue #19).

LORA_OUT is a LORA job's output directory: LORA_OUT/adapter (PEFT files: adapter_config.json +
adapter_model.safetensors) and LORA_OUT/merged (a Hugging Face Qwen3 folder with the adapters
merged into 16-bit weights). Three levels, each run when its tools are there:

 1. files (pure Python): adapter_config.json is a LoRA config PEFT reads the way qatd wrote it
    (peft_type LORA, bias none, no DoRA / rsLoRA / fan_in_fan_out / patterns); every tensor is
    "base_model.model.<module>.lora_{A,B}.weight" for a projection <module>.weight of the merged
    folder, A [r, in] and B [out, r] with that weight's [out, in]; every targeted projection of
    every layer has both. The safetensors headers are parsed by hand.
 2. weights (torch, with --base): --base is the un-merged model as a Hugging Face folder (`qat
    export --format hf` of the snapped checkpoint the adapter was trained on: its path is
    adapter_config.json's qatd.checkpoint). Per adapted projection, merged == base + alpha/r B A
    up to the 16-bit rounding of both folders: |merged - base - d| <= k u (|merged| + |base|)
    + 1e-5 max|d|, u = 2^-8 for bf16 (2^-11 fp16): a 16-bit weight is within u|x| (half an ulp)
    of the value it rounds. k = 2 * --weight-ulps (default 1 ulp per rounding, k = 2): a LORA job
    on a bf16 model materialises the base weight in bf16 before adding the delta, which may
    land an ulp away from the fp32 export's rounding. Every other tensor must be bit-identical.
 3. logits (torch + transformers): base + adapter (PEFT's PeftModel.from_pretrained when `peft`
    imports, else the adapter applied by hand with forward hooks: y += alpha/r B A x) against the
    merged model, both in float32, on --sequences fixed token sequences. The base is --base, or
    without it the merged weights minus alpha/r B A (in float32): then base + adapter must give
    the merged model back up to float32 rounding, which tests how the loader reads the files
    (scaling, transposition, names), not the merge's rounding.
    Pass: max|diff| / max|merged logits| <= --rtol, default 1e-4 for the derived base (float32
    round-off, check_hf_export.py's float32 bound) and 2e-2 with --base (the merge rounds every
    adapted weight once more in bf16, a relative weight error up to 2^-8 and ~2^-9.5 rms; through
    the layers that moves the logits by ~1e-2 of their range, below check_hf_export.py's 5e-2 for
    full bf16 inference). The adapter's own effect max|logits(base) - logits(merged)| is printed:
    the diff must be well below it for the check to mean something.

Prints one JSON object; exit 0 when every level that ran passed, 1 otherwise, 2 on bad usage.

Usage:
  python3 scripts/gpu/check_peft_adapter.py LORA_OUT                      # files + derived-base logits
  python3 scripts/gpu/check_peft_adapter.py LORA_OUT --base EXPORT/hf     # + weights, logits vs the real base
  python3 scripts/gpu/check_peft_adapter.py LORA_OUT --no-peft            # hand-applied adapter only
"""
import argparse
import json
import os
import re
import shutil
import struct
import sys
import tempfile

NAME = re.compile(r"^base_model\.model\.(.+)\.lora_(A|B)\.weight$")
ROUNDING = {"BF16": 2.0**-8, "F16": 2.0**-11, "F32": 2.0**-24}


def read_header(path):
    """{name: (dtype, shape, begin, end)} of a safetensors file, offsets absolute."""
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        b, e = info["data_offsets"]
        out[name] = (info["dtype"], list(info["shape"]), 8 + n + b, 8 + n + e, path)
    return out


def folder_tensors(folder):
    """Every tensor of a HF folder (model.safetensors or its sharded index)."""
    index = os.path.join(folder, "model.safetensors.index.json")
    files = ["model.safetensors"]
    if os.path.exists(index):
        with open(index) as f:
            files = sorted(set(json.load(f)["weight_map"].values()))
    out = {}
    for name in files:
        out.update(read_header(os.path.join(folder, name)))
    return out


def load_tensor(entry, torch):
    dtype, shape, begin, end, path = entry
    types = {"BF16": torch.bfloat16, "F16": torch.float16, "F32": torch.float32}
    with open(path, "rb") as f:
        f.seek(begin)
        buf = bytearray(f.read(end - begin))
    if dtype not in types:
        raise ValueError(f"{path}: unsupported dtype {dtype}")
    return torch.frombuffer(buf, dtype=types[dtype]).reshape(shape).float() if buf else torch.zeros(shape)


def check_files(adapter_dir, merged_dir, report, errors):
    with open(os.path.join(adapter_dir, "adapter_config.json")) as f:
        cfg = json.load(f)
    for key, want in [("peft_type", "LORA"), ("bias", "none"), ("use_dora", False), ("use_rslora", False),
                      ("fan_in_fan_out", False)]:
        if cfg.get(key, want) != want:
            errors.append(f"adapter_config.json: {key} is {cfg.get(key)!r}, expected {want!r}")
    for key in ("rank_pattern", "alpha_pattern"):
        if cfg.get(key):
            errors.append(f"adapter_config.json: {key} must be empty")
    r, alpha, targets = cfg.get("r"), cfg.get("lora_alpha"), cfg.get("target_modules") or []
    if not isinstance(r, int) or r < 1 or not isinstance(alpha, (int, float)) or not targets:
        errors.append(f"adapter_config.json: bad r {r!r} / lora_alpha {alpha!r} / target_modules {targets!r}")
        return None
    adapters = read_header(os.path.join(adapter_dir, "adapter_model.safetensors"))
    merged = folder_tensors(merged_dir)
    with open(os.path.join(merged_dir, "config.json")) as f:
        layers = json.load(f)["num_hidden_layers"]
    modules = {}
    for name, (dtype, shape, *_rest) in adapters.items():
        m = NAME.match(name)
        if not m:
            errors.append(f"{name}: not a PEFT LoRA tensor name")
            continue
        module, which = m.group(1), m.group(2)
        weight = merged.get(module + ".weight")
        if weight is None:
            errors.append(f"{name}: the merged model has no {module}.weight")
            continue
        out_f, in_f = weight[1]
        want = [r, in_f] if which == "A" else [out_f, r]
        if shape != want:
            errors.append(f"{name}: shape {shape}, expected {want} ({module}.weight is {weight[1]})")
        if module.rsplit(".", 1)[-1] not in targets:
            errors.append(f"{name}: {module} is not in target_modules {targets}")
        modules.setdefault(module, {})[which] = name
    wanted = [n[: -len(".weight")] for n in merged
              if re.match(r"^model\.layers\.\d+\.", n) and n.endswith(".weight")
              and n[: -len(".weight")].rsplit(".", 1)[-1] in targets]
    missing = sorted(set(wanted) - {m for m, ab in modules.items() if len(ab) == 2})
    if missing:
        errors.append(f"{len(missing)} targeted projections lack lora_A/lora_B, e.g. {missing[0]}")
    report["files"] = {"r": r, "lora_alpha": alpha, "scaling": alpha / r, "target_modules": targets,
                       "modules": len(modules), "layers": layers,
                       "adapter_dtype": sorted({a[0] for a in adapters.values()}),
                       "merged_dtype": sorted({merged[m + ".weight"][0] for m in modules if m + ".weight" in merged})}
    return {"scaling": alpha / r, "modules": modules, "adapters": adapters, "merged": merged, "cfg": cfg}


def check_weights(torch, info, base_dir, ulps, report, errors):
    base = folder_tensors(base_dir)
    merged, adapters, scaling = info["merged"], info["adapters"], info["scaling"]
    if sorted(base) != sorted(merged):
        errors.append(f"--base and merged hold different tensor names ({len(base)} vs {len(merged)})")
        return
    worst, resolvable, total, identical = 0.0, 0, 0, 0
    for name, entry in merged.items():
        module = name[: -len(".weight")] if name.endswith(".weight") else None
        if module not in info["modules"]:
            if load_tensor(entry, torch).ne(load_tensor(base[name], torch)).any():
                errors.append(f"{name}: not adapted, but merged differs from --base")
            identical += 1
            continue
        m, b = load_tensor(entry, torch), load_tensor(base[name], torch)
        a_t = load_tensor(adapters[info["modules"][module]["A"]], torch)
        b_t = load_tensor(adapters[info["modules"][module]["B"]], torch)
        d = scaling * (b_t.double() @ a_t.double())
        u = max(ROUNDING.get(entry[0], 2.0**-8), ROUNDING.get(base[name][0], 2.0**-8))
        bound = 2 * ulps * u * (m.abs() + b.abs()).double() + 1e-5 * float(d.abs().max())
        excess = ((m.double() - b.double() - d).abs() / bound.clamp_min(1e-30)).max().item()
        worst = max(worst, excess)
        resolvable += int((d.abs() > bound).sum())
        total += d.numel()
        if excess > 1:
            errors.append(f"{name}: merged - base - alpha/r B A exceeds the rounding bound {excess:.3g}x")
    report["weights"] = {"worst_error_over_bound": worst, "identical_other_tensors": identical,
                         "elements_where_the_delta_exceeds_the_bound": resolvable, "adapted_elements": total}
    if resolvable == 0:
        report["weights"]["note"] = "the adapter is below the merged dtype's rounding everywhere: weak check"


def token_sequences(vocab, count, length, torch):
    g = torch.Generator().manual_seed(19)
    return torch.randint(100, min(vocab, 150000), (count, length), generator=g)


def check_logits(torch, info, adapter_dir, merged_dir, base_dir, args, report, errors):
    import transformers
    from transformers import AutoModelForCausalLM
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    major = int(transformers.__version__.split(".")[0])
    kw = {"dtype": torch.float32} if major >= 5 else {"torch_dtype": torch.float32}

    def load(folder):
        return AutoModelForCausalLM.from_pretrained(folder, **kw).to(args.device).eval()

    merged_model = load(merged_dir)
    scaling, modules = info["scaling"], info["modules"]
    ids = token_sequences(merged_model.config.vocab_size, args.sequences, args.length, torch).to(args.device)
    with torch.no_grad():
        ref = merged_model(ids).logits.float()
    deltas = {}
    for module, ab in modules.items():
        a_t = load_tensor(info["adapters"][ab["A"]], torch)
        b_t = load_tensor(info["adapters"][ab["B"]], torch)
        deltas[module] = (a_t, b_t)
        layer = merged_model.get_submodule(module)
        if not isinstance(layer, torch.nn.Linear) or list(layer.weight.shape) != [b_t.shape[0], a_t.shape[1]]:
            errors.append(f"{module}: not an nn.Linear of shape [{b_t.shape[0]}, {a_t.shape[1]}] in transformers")
    if base_dir:
        base_model = load(base_dir)
        del merged_model
    else:  # the merged weights minus the adapter, in float32
        base_model = merged_model
        with torch.no_grad():
            for module, (a_t, b_t) in deltas.items():
                w = base_model.get_submodule(module).weight
                w.sub_((scaling * (b_t @ a_t)).to(w.device, w.dtype))
    with torch.no_grad():
        effect = (base_model(ids).logits.float() - ref).abs().max().item()
    loader, peft_error = "hand", None
    use_peft = not args.no_peft
    if use_peft:
        try:
            import peft  # noqa: F401
        except ImportError:
            use_peft = False
    if use_peft:
        from peft import PeftModel
        try:
            model = PeftModel.from_pretrained(base_model, adapter_dir)
            loader = "peft " + peft.__version__
        except Exception as e:  # noqa: BLE001: report what a user would see, then retry without qatd's key
            peft_error = f"{type(e).__name__}: {e}"
            errors.append(f"PeftModel.from_pretrained failed on the file as written: {peft_error}")
            tmp = tempfile.mkdtemp()
            shutil.copy(os.path.join(adapter_dir, "adapter_model.safetensors"), tmp)
            cfg = {k: v for k, v in info["cfg"].items() if k != "qatd"}
            with open(os.path.join(tmp, "adapter_config.json"), "w") as f:
                json.dump(cfg, f)
            model = PeftModel.from_pretrained(base_model, tmp)
            loader = "peft " + peft.__version__ + " (without the qatd key)"
        model.eval()
    else:
        model = base_model
        for module, (a_t, b_t) in deltas.items():
            a_d, b_d = a_t.to(args.device), b_t.to(args.device)

            def hook(_mod, inputs, output, a_d=a_d, b_d=b_d):
                x = inputs[0].float()
                return output + (scaling * ((x @ a_d.t()) @ b_d.t())).to(output.dtype)

            model.get_submodule(module).register_forward_hook(hook)
    with torch.no_grad():
        got = model(ids).logits.float()
    diff = (got - ref).abs().max().item()
    scale = ref.abs().max().item()
    rtol = args.rtol if args.rtol is not None else (2e-2 if base_dir else 1e-4)
    top1 = (got.argmax(-1) == ref.argmax(-1)).float().mean().item()
    report["logits"] = {"loader": loader, "base": base_dir or "merged - alpha/r B A", "max_abs_diff": diff,
                        "max_abs_logit": scale, "rel_diff": diff / scale, "rtol": rtol, "top1_agreement": top1,
                        "adapter_effect_max_abs": effect, "sequences": list(ids.shape)}
    if peft_error:
        report["logits"]["peft_error"] = peft_error
    if not diff <= rtol * scale:
        errors.append(f"logits: max|diff| {diff:.4g} > rtol {rtol:g} x max|logit| {scale:.4g}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("lora_out", nargs="?", help="the LORA job's output directory (holds adapter/ and merged/)")
    ap.add_argument("--adapter", help="the PEFT adapter folder (default LORA_OUT/adapter)")
    ap.add_argument("--merged", help="the merged HF folder (default LORA_OUT/merged)")
    ap.add_argument("--base", help="the un-merged model as an HF folder (qat export --format hf of the snapped "
                                   "checkpoint); default: the merged weights minus the adapter")
    ap.add_argument("--device", default=None)
    ap.add_argument("--sequences", type=int, default=3)
    ap.add_argument("--length", type=int, default=32)
    ap.add_argument("--rtol", type=float, help="logits pass bound on max|diff| / max|merged logit|")
    ap.add_argument("--weight-ulps", type=float, default=1.0,
                    help="weights: allowed error per 16-bit rounding, in ulps (0.5 = exact rounding)")
    ap.add_argument("--no-peft", action="store_true", help="apply the adapter by hand even when peft imports")
    ap.add_argument("--files-only", action="store_true", help="level 1 only")
    args = ap.parse_args()
    adapter_dir = args.adapter or (args.lora_out and os.path.join(args.lora_out, "adapter"))
    merged_dir = args.merged or (args.lora_out and os.path.join(args.lora_out, "merged"))
    if not adapter_dir or not merged_dir:
        ap.error("give LORA_OUT, or --adapter and --merged")
    report, errors, skipped = {"adapter": adapter_dir, "merged": merged_dir}, [], []
    for folder, want in [(adapter_dir, "adapter_model.safetensors"), (merged_dir, "config.json")]:
        if not os.path.exists(os.path.join(folder, want)):
            print(json.dumps({**report, "ok": False, "errors": [f"{folder}/{want} does not exist"]}, indent=1))
            return 1
    info = check_files(adapter_dir, merged_dir, report, errors)
    try:
        import torch
    except ImportError:
        torch = None
    if info is not None and not args.files_only:
        if torch is None:
            skipped.append("weights and logits: no torch")
        else:
            args.device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
            if args.base:
                check_weights(torch, info, args.base, args.weight_ulps, report, errors)
            else:
                skipped.append("weights: no --base")
            try:
                import transformers  # noqa: F401
                have_transformers = True
            except ImportError:
                have_transformers = False
                skipped.append("logits: no transformers")
            if have_transformers:
                check_logits(torch, info, adapter_dir, merged_dir, args.base, args, report, errors)
    report["skipped"] = skipped
    report["errors"] = errors
    report["ok"] = not errors
    print(json.dumps(report, indent=1))
    return 0 if not errors else 1


if __name__ == "__main__":
    sys.exit(main())
