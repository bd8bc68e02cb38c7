#!/bin/bash
# Session 6 runner: convert the bundled model, then the issue-13 diagnosis (diag.py), detached.
SRC=$1; R=/tmp/res; mkdir -p $R
rm -rf /tmp/repo && cp -a "$SRC" /tmp/repo && cd /tmp/repo || exit 1
export PYTHONPATH=/tmp/repo:/tmp/site PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false SGNB_CACHE_DIR=/tmp/sgnbcache
trap '' HUP; trap - QUIT
ts() { date +%s; }
mark() { echo "$(date +%T) $*" >> $R/phases.txt; }
mark start; nproc >> $R/phases.txt
t=$(ts); python3 -m sgnb.models > $R/convert.log 2>&1; mark "convert rc=$? $(( $(ts)-t ))s"
t=$(ts); python3 docs/perf/gpu-2026-11-30/breakdown.py $R/diag.json ${DIAG_REPS:-7} > $R/diag.log 2>&1; mark "diag rc=$? $(( $(ts)-t ))s"
if [ -n "$THEN_BENCH" ]; then
  t=$(ts); python3 -m sgnb.bench --runtime engine --json $THEN_BENCH > $R/bench.json 2> $R/bench.err; mark "bench rc=$? $(( $(ts)-t ))s"
fi
mark done; touch $R/all.done
