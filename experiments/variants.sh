#!/bin/bash
# The variants of the results table, seed 0, sequentially (world: .lossless/w4 = seed 0's base/instruct).
set -e
cd "$(dirname "$0")/.."
PY=/work/main/.venv/bin/python
export PYTHONPATH=$PWD OMP_NUM_THREADS=1
V="nice -n 10 $PY experiments/run_variant.py"
SR=experiments/gen/sr_w4.jsonl
$V lora_instruct_no_replay .lossless/w4 "del r['train']['new_skill']['replay']; r['eval']['forgetting']['models']=['instruct','naive','merged']"
$V sr_fraction_0.3 .lossless/w4 "r['train']['new_skill']['replay']['fraction']=0.3; r['eval']['forgetting']['models']=['instruct','naive','merged']"
$V full_sr .lossless/w4 "import copy; s=copy.deepcopy(r['train']['naive']); s['replay']={'data':'../$SR','fraction':1.0}; r['train']['naive_sr']=s; r['eval']['forgetting']['models']=['instruct','naive','naive_sr']"
for kl in "kl_alone_answer --no-replay-ce --kl-on answer" "kl_alone_all --no-replay-ce --kl-on all" "sr_kl_all --kl-on all"; do
  set -- $kl; name=$1; shift
  nice -n 10 $PY experiments/kl_train.py .lossless/w4/instruct .lossless/w4/instruct .lossless/kl/$name --data recipes/quickstart/data/c_train.jsonl --replay $SR --fraction 1.0 --weight 1.0 --temperature 1.0 "$@" 2>&1 | grep done
  $V $name .lossless/w4 "r['apply']['adapted']={'adapter':'../.lossless/kl/$name','to':'instruct'}; r['eval']['forgetting']['models']=['instruct','naive','merged']"
done
