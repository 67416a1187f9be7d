"""Weight-change figures: ‖instruct − base‖/‖base‖ and ‖LoRA Δ‖/‖base‖ (global Frobenius norms over
every tensor of the model; "linear" = the LoRA-targetable projection matrices only).

    python experiments/weights.py BASE_DIR INSTRUCT_DIR [ADAPTER_DIR ...]
LoRA Δ per module = (alpha/r)·B·A (alpha/√r with rsLoRA), from the adapter's safetensors."""
import json, sys
from pathlib import Path
import torch
from safetensors.torch import load_file


def weights(d):
    return load_file(str(Path(d) / "model.safetensors"))


def lora_delta(d):
    cfg = json.loads((Path(d) / "adapter_config.json").read_text())
    scale = cfg["lora_alpha"] / (cfg["r"] ** 0.5 if cfg.get("use_rslora") else cfg["r"])
    t = load_file(str(Path(d) / "adapter_model.safetensors"))
    out = {}
    for k, A in t.items():
        if ".lora_A." in k:
            B = t[k.replace(".lora_A.", ".lora_B.")]
            name = k.split("base_model.model.", 1)[1].replace(".lora_A.weight", ".weight")
            out[name] = scale * (B.float() @ A.float())
    return out


def norm(ts):
    return float(torch.sqrt(sum((v.float() ** 2).sum() for v in ts)))


def main():
    base, inst = weights(sys.argv[1]), weights(sys.argv[2])
    linear = [k for k in base if k.endswith("proj.weight")]
    nb, nbl = norm(base.values()), norm(base[k] for k in linear)
    print(f"‖instruct−base‖/‖base‖: all {norm(inst[k]-base[k] for k in base)/nb:.4f}  linear {norm(inst[k]-base[k] for k in linear)/nbl:.4f}")
    for d in sys.argv[3:]:
        delta = lora_delta(d)
        print(f"‖LoRA Δ‖/‖base‖ ({d}): all {norm(delta.values())/nb:.4f}  linear {norm(delta.values())/nbl:.4f}   (vs ‖instruct−base‖ on the same matrices {norm(inst[k]-base[k] for k in delta)/nbl:.4f})")


if __name__ == "__main__":
    main()
