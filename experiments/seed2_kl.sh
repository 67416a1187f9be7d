#!/bin/bash
# KL variants on seed 2 (the seed whose instruct model is weakest on B).
set -e
cd "$(dirname "$0")/.."
PY=/work/main/.venv/bin/python
export PYTHONPATH=$PWD OMP_NUM_THREADS=1
SR=.lossless/s2/generate/self_replay.jsonl
for kl in "s2_sr_kl_all --kl-on all" "s2_kl_alone_all --no-replay-ce --kl-on all"; do
  set -- $kl; name=$1; shift
  nice -n 10 $PY experiments/kl_train.py .lossless/s2/instruct .lossless/s2/instruct .lossless/kl/$name --data recipes/quickstart/data/c_train.jsonl --replay $SR --fraction 1.0 --weight 1.0 --temperature 1.0 --seed 2 "$@" 2>&1 | grep done
  nice -n 10 $PY experiments/run_variant.py $name .lossless/s2 "
for s in r['train'].values(): s['seed']=2
r['train']['new_skill']['replay']['data']='../$SR'
r['apply']['adapted']={'adapter':'../.lossless/kl/$name','to':'instruct'}; r['eval']['forgetting']['models']=['instruct','naive','merged']"
done
