"""Self-replay prototype: rehearsal data sampled from the model being protected.

    python experiments/self_replay.py MODEL_DIR OUT.jsonl --prompts PROMPTS.jsonl [--samples N]
    python experiments/self_replay.py MODEL_DIR OUT.jsonl --magpie N [--temperature 1.0]

Algorithm (what the tool feature should do, exactly as measured):
1. User turns. --prompts: rows {"messages": [{"role": "user", "content": ...}]} (or {"prompt": ...}),
   read in file order, the first --samples of them after dedup. --magpie N: the user turn is
   *sampled* from the model: context = chat template rendered up to the user prefix
   ("<|im_start|>user\\n" for chatml: the template applied to [{"role":"user","content":""}]
   cut at the empty content), multinomial sampling at --temperature (top_k 0, top_p 1), until
   <|im_end|> / eos or --max-user-tokens; torch.manual_seed(seed) once, batches of 64.
2. Answers: greedy (do_sample=False), chat template with add_generation_prompt=True, up to
   --max-new-tokens, stopping at the tokenizer's eos or <|im_end|>.
3. Filters: drop a row whose user turn is in an --exclude file (decontamination against the
   eval sets); drop a row whose answer did not stop within the budget (truncated), whose answer or
   user turn is empty after strip, or whose user turn is longer than --max-user-chars; exact
   duplicates of (user, answer) are dropped (first kept). Magpie draws until N rows survive or
   4N have been drawn.
4. Output: jsonl rows {"messages": [{"role": "user", ...}, {"role": "assistant", "content": answer}]}
   where the answer is the decoded text with special tokens removed, kept verbatim (its leading
   space included) so it re-tokenises to the model's own tokens.
"""
import argparse, json
from pathlib import Path
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model"); ap.add_argument("out")
    ap.add_argument("--prompts"); ap.add_argument("--magpie", type=int, default=0)
    ap.add_argument("--samples", type=int, default=0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--temperature", type=float, default=1.0)
    ap.add_argument("--max-new-tokens", type=int, default=16)
    ap.add_argument("--max-user-tokens", type=int, default=24)
    ap.add_argument("--max-user-chars", type=int, default=200)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--exclude", nargs="*", default=[], help="jsonl files (e.g. the eval sets) whose user turns are never kept")
    a = ap.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(a.seed)
    tok = AutoTokenizer.from_pretrained(a.model)
    model = AutoModelForCausalLM.from_pretrained(a.model, dtype=torch.float32).eval()
    tok.padding_side = "left"
    stop = {tok.eos_token_id, tok.convert_tokens_to_ids("<|im_end|>")}
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id

    def gen(texts, n, sample):
        enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        with torch.no_grad():
            out = model.generate(**enc, max_new_tokens=n, do_sample=sample, pad_token_id=pad,
                                 eos_token_id=list(stop),
                                 **({"temperature": a.temperature, "top_k": 0, "top_p": 1.0} if sample else {}))
        res = []
        for row in out[:, enc["input_ids"].shape[1]:].tolist():
            cut = next((i for i, t in enumerate(row) if t in stop), None)
            res.append((tok.decode(row[:cut] if cut is not None else row, skip_special_tokens=True), cut is not None))
        return res

    def answer(users):
        texts = [tok.apply_chat_template([{"role": "user", "content": u}], tokenize=False, add_generation_prompt=True) for u in users]
        out = []
        for i in range(0, len(texts), a.batch):
            out += gen(texts[i:i + a.batch], a.max_new_tokens, False)
        return out

    rows, seen = [], set()
    excluded = set()
    for f in a.exclude:
        for line in Path(f).read_text().splitlines():
            excluded.update(m["content"] for m in json.loads(line).get("messages", []) if m["role"] == "user")
    dropped = {"excluded": 0}

    def keep(users):
        for u, (ans, stopped) in zip(users, answer(users)):
            if not stopped or not ans.strip() or not u.strip() or len(u) > a.max_user_chars:
                continue
            if u in excluded:
                dropped["excluded"] += 1
                continue
            key = (u, ans)
            if key in seen:
                continue
            seen.add(key)
            rows.append({"messages": [{"role": "user", "content": u}, {"role": "assistant", "content": ans}]})

    if a.prompts:
        users = []
        for line in Path(a.prompts).read_text().splitlines():
            r = json.loads(line)
            u = r["prompt"] if "prompt" in r else next(m["content"] for m in r["messages"] if m["role"] == "user")
            if u not in users:
                users.append(u)
        keep(users[: a.samples or None])
    else:
        marker = "\x00"
        prefix = tok.apply_chat_template([{"role": "user", "content": marker}], tokenize=False)
        prefix = prefix[: prefix.index(marker)]
        drawn = 0
        while len(rows) < a.magpie and drawn < 4 * a.magpie:
            sampled = gen([prefix] * a.batch, a.max_user_tokens, True)
            drawn += a.batch
            keep([u for u, stopped in sampled if stopped])
        rows[:] = rows[: a.magpie]
    Path(a.out).write_text("".join(json.dumps(r) + "\n" for r in rows))
    kinds = {}
    for r in rows:
        k = r["messages"][0]["content"].split(":")[0][:12]
        kinds[k] = kinds.get(k, 0) + 1
    print(f"{len(rows)} rows -> {a.out}; dropped {dropped}; user-turn kinds {kinds}")


if __name__ == "__main__":
    main()
