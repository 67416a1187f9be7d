#!/bin/bash
# SR+KL on seed 1, and the λ=0 control on seed 2 (same prototype trainer, no KL term).
set -e
cd "$(dirname "$0")/.."
PY=/work/main/.venv/bin/python
export PYTHONPATH=$PWD OMP_NUM_THREADS=1
run() {  # seed name extra-args...
  seed=$1; name=$2; shift 2; SR=.lossless/s$seed/generate/self_replay.jsonl
  nice -n 10 $PY experiments/kl_train.py .lossless/s$seed/instruct .lossless/s$seed/instruct .lossless/kl/$name --data recipes/quickstart/data/c_train.jsonl --replay $SR --fraction 1.0 --temperature 1.0 --seed $seed "$@" 2>&1 | grep done
  nice -n 10 $PY experiments/run_variant.py $name .lossless/s$seed "
for s in r['train'].values(): s['seed']=$seed
r['train']['new_skill']['replay']['data']='../$SR'
r['apply']['adapted']={'adapter':'../.lossless/kl/$name','to':'instruct'}; r['eval']['forgetting']['models']=['instruct','naive','merged']"
}
run 1 s1_sr_kl_all --weight 1.0 --kl-on all
run 2 s2_sr_kl0 --weight 0.0
