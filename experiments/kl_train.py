"""Distillation-to-reference (LwF) prototype: the tool's LoRA/full train step plus a KL term.

    python experiments/kl_train.py STUDENT_DIR REFERENCE_DIR OUT_DIR --data C.jsonl
        [--replay R.jsonl --fraction F] [--weight λ] [--temperature T] [--kl-on answer|all]
        [--no-replay-ce] [--method lora|full] [--lr] [--epochs] [--r 16 --alpha 32] [--seed]

Exactly what it computes (per batch, shapes B×L):
  CE  = the tool's loss: mean token cross-entropy over every labelled token of the batch (the new
        data's answers, and the replay rows' answers unless --no-replay-ce, which sets the replay
        rows' labels to -100 so they only enter through the KL).
  KL  = over the *distilled positions* only: positions t of replay rows whose next token t+1 is an
        answer token (--kl-on answer: the assistant answer and its eos) or any real token
        (--kl-on all: user turn and markup too); per position
        T² · Σ_v softmax(z_ref/T)_v · (log softmax(z_ref/T)_v − log softmax(z_student/T)_v)
        (forward KL, reference → student, full vocabulary), averaged over distilled positions of
        the batch (0 when the batch has none).
  loss = CE + λ · KL. The reference is a frozen copy (eval mode, no grad) of REFERENCE_DIR.
Data, replay mixing (round(F × n_new) rows, random.Random(seed)), batching, optimiser (AdamW,
cosine schedule, no warmup) and LoRA config are the tool's own (lossless.steps.train internals).
"""
import argparse, json, random
from pathlib import Path
import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM, AutoTokenizer, Trainer, TrainingArguments

from lossless.steps.train import _collate, _features, _wrap_lora
from lossless.training.replay import replay_rows
from lossless.chat_templates import resolve_chat_template

ap = argparse.ArgumentParser()
ap.add_argument("student"); ap.add_argument("reference"); ap.add_argument("out")
ap.add_argument("--data", required=True); ap.add_argument("--replay"); ap.add_argument("--fraction", type=float, default=1.0)
ap.add_argument("--weight", type=float, default=1.0); ap.add_argument("--temperature", type=float, default=1.0)
ap.add_argument("--kl-on", choices=["answer", "all"], default="answer"); ap.add_argument("--no-replay-ce", action="store_true")
ap.add_argument("--method", default="lora"); ap.add_argument("--lr", type=float, default=1e-3); ap.add_argument("--epochs", type=float, default=4)
ap.add_argument("--r", type=int, default=16); ap.add_argument("--alpha", type=int, default=32)
ap.add_argument("--batch", type=int, default=16); ap.add_argument("--seed", type=int, default=0)
a = ap.parse_args()
torch.set_num_threads(1); torch.manual_seed(a.seed)
tok = AutoTokenizer.from_pretrained(a.student)
if tok.pad_token is None: tok.pad_token = tok.eos_token
model = AutoModelForCausalLM.from_pretrained(a.student, dtype=torch.float32)
ref = AutoModelForCausalLM.from_pretrained(a.reference, dtype=torch.float32).eval()
for p in ref.parameters(): p.requires_grad_(False)
s = {"chat_template": "chatml", "max_seq_length": 48, "lora": {"r": a.r, "alpha": a.alpha, "target_modules": "all-linear"}}
if a.method == "lora": model = _wrap_lora(model, s, "lora")
new = [dict(f, distill=0) for f in _features({"data": a.data}, s, tok, Path("."))]
old = []
if a.replay:
    rows = _features({"data": a.replay}, s, tok, Path("."))
    old = [dict(f, distill=1) for f in replay_rows(rows, len(new), a.fraction, a.seed)]
    if a.no_replay_ce:
        for f in old: f["kl_labels"], f["labels"] = f["labels"], [-100] * len(f["labels"])
features = new + old
base_collate = _collate(tok.pad_token_id)

def collate(batch):
    out = base_collate([{"input_ids": b["input_ids"], "labels": b["labels"]} for b in batch])
    kl_lab = base_collate([{"input_ids": b["input_ids"], "labels": b.get("kl_labels", b["labels"])} for b in batch])["labels"]
    out["distill"] = torch.tensor([b["distill"] for b in batch], dtype=torch.bool)
    out["kl_labels"] = kl_lab
    return out

class KLTrainer(Trainer):
    last_kl = None
    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        distill, kl_labels = inputs.pop("distill"), inputs.pop("kl_labels")
        labels = inputs["labels"]
        out = model(**inputs)
        loss = out.loss if (labels != -100).any() else out.logits.sum() * 0.0
        if distill.any() and a.weight > 0:
            nxt = kl_labels[:, 1:] if a.kl_on == "answer" else inputs["attention_mask"][:, 1:].masked_fill(inputs["attention_mask"][:, 1:] == 0, -100)
            pos = (nxt != -100) & distill[:, None]
            if pos.any():
                with torch.no_grad():
                    zr = ref(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]).logits[:, :-1][pos]
                zs = out.logits[:, :-1][pos]
                T = a.temperature
                kl = F.kl_div(F.log_softmax(zs / T, -1), F.log_softmax(zr / T, -1), log_target=True, reduction="batchmean") * T * T
                self.last_kl = float(kl)
                loss = loss + a.weight * kl
        return (loss, out) if return_outputs else loss

args = TrainingArguments(output_dir=str(Path(a.out) / "checkpoints"), num_train_epochs=a.epochs, learning_rate=a.lr,
    lr_scheduler_type="cosine", per_device_train_batch_size=a.batch, seed=a.seed, logging_steps=10, save_strategy="no",
    report_to="none", disable_tqdm=True, use_cpu=True, remove_unused_columns=False)
tr = KLTrainer(model=model, args=args, train_dataset=features, data_collator=collate)
from transformers.trainer_callback import PrinterCallback
tr.remove_callback(PrinterCallback)
res = tr.train()
model.save_pretrained(a.out)
tok.chat_template = resolve_chat_template("chatml"); tok.save_pretrained(a.out)
json.dump({"train_loss": res.training_loss, "last_kl": tr.last_kl, "steps": tr.state.global_step, "examples": len(features), "args": vars(a)}, open(Path(a.out) / "kl_metrics.json", "w"), indent=1)
print("done", res.training_loss, tr.last_kl, tr.state.global_step)
