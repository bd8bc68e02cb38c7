#!/bin/bash
# Session 6 runner 2: convert, then the official engine bench with CUDA graphs off, then on.
SRC=$1; R=/tmp/res; mkdir -p $R
rm -rf /tmp/repo && cp -a "$SRC" /tmp/repo && cd /tmp/repo || exit 1
export PYTHONPATH=/tmp/repo:/tmp/site PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false SGNB_CACHE_DIR=/tmp/sgnbcache
trap '' HUP; trap - QUIT
ts() { date +%s; }
mark() { echo "$(date +%T) $*" >> $R/phases.txt; }
mark start
t=$(ts); python3 -m sgnb.models > $R/convert.log 2>&1; mark "convert rc=$? $(( $(ts)-t ))s"
t=$(ts); python3 -m sgnb.bench --runtime engine --json --no-graphs --rounds 7 > $R/bench_off.json 2> $R/bench_off.err; mark "bench off rc=$? $(( $(ts)-t ))s"
t=$(ts); python3 -m sgnb.bench --runtime engine --json --no-graphs --rounds 7 --cuda-graph > $R/bench_on.json 2> $R/bench_on.err; mark "bench on rc=$? $(( $(ts)-t ))s"
mark done; touch $R/all.done
