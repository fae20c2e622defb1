#!/usr/bin/env bash
# One prepared run on a machine with a CUDA GPU (a few minutes): the test suite's tiny runs on the GPU, training
# throughput of the MLP and conv models on Fashion-MNIST at batch 128 and 1024 in fp32 and bf16, and the k = 1000
# evaluation's time. Writes everything to ${OUT:-gpu-results}/. Needs the project's environment (make venv) with a
# CUDA build of torch and the Fashion-MNIST files.
set -u
OUT=${OUT:-gpu-results}
mkdir -p "$OUT"
PY=${PY:-.venv/bin/python}
nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1
timeout 300 "$PY" -m pytest -q -x --device cuda tests/test_train.py tests/test_devices.py tests/test_parts.py \
  > "$OUT/tests-cuda.txt" 2>&1; echo "tests exit $?" >> "$OUT/tests-cuda.txt"
for network in mlp conv; do
  for batch in 128 1024; do
    for precision in fp32 bf16; do
      run="$OUT/runs/$network-$batch-$precision"
      timeout 120 "$PY" -m vaekit train --dataset fashion-mnist --network "$network" --batch-size "$batch" \
        --precision "$precision" --device cuda --epochs 2 --quiet --out "$run" > /dev/null 2>&1
      "$PY" - "$run" "$network" "$batch" "$precision" >> "$OUT/throughput.txt" <<'PYEOF'
import json, sys
run, network, batch, precision = sys.argv[1:]
try:
    records = [json.loads(line) for line in open(f"{run}/metrics.jsonl")]
    print(f"{network:5s} batch {batch:>5s} {precision}: {55000 / records[-1]['seconds']:9.0f} samples/s (epoch 2)")
except OSError:
    print(f"{network:5s} batch {batch:>5s} {precision}: failed")
PYEOF
    done
  done
done
start=$(date +%s.%N)
timeout 300 "$PY" -m vaekit evaluate "$OUT/runs/mlp-128-fp32" --k 1000 --device cuda > "$OUT/evaluate.txt" 2>&1
echo "k = 1000 evaluation: $(echo "$(date +%s.%N) - $start" | bc) s" >> "$OUT/evaluate.txt"
cat "$OUT/throughput.txt" "$OUT/tests-cuda.txt" | tail -20
