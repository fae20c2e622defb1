#!/usr/bin/env bash
# The likelihood rows run under benchmarks/PROTOCOL.md, their settings fixed here before they run (a commit that adds
# a row's result must not change its line). Each row: two training seeds side by side, one thread each; a budget in
# epochs, so a busy host changes a row's wall time only; the paper's recipe (Burda et al. 2016, section 5: batch 20,
# Adam at 1e-3, its learning-rate stages), stopped at the end of a stage; nothing in it chosen by any run of ours.
#
#   bash benchmarks/protocol_rows.sh mnist-vae      # MNIST, one stochastic layer, ELBO: 364 epochs (stages 0-5)
#   bash benchmarks/protocol_rows.sh fashion-vae    # the same on Fashion-MNIST (found where vaekit looks)
#   bash benchmarks/protocol_rows.sh mnist-iwae5-2l # MNIST, two stochastic layers, IWAE k = 5: 121 epochs (stages
#                                                   # 0-4), as a session on 2 cores can train and score it; a step
#                                                   # of IWAE k = 5 over two layers costs several of the VAE's
set -euo pipefail
cd "$(dirname "$0")/.."
DATA="${VAEKIT_SHARED_DATA:-../shared/data}"  # the MNIST IDX files (../shared/data/mnist)
case "${1:-}" in
  mnist-vae)
    .venv/bin/python benchmarks/mnist_likelihood.py --rows vae --dataset mnist --data-dir "$DATA" \
      --batch-size 20 --lr 1e-3 --schedule paper --budget-epochs 364 --seeds 0,1 --jobs 2 \
      --out "${OUT:-benchmarks/mnist-protocol}" ;;
  fashion-vae)
    .venv/bin/python benchmarks/mnist_likelihood.py --rows vae --dataset fashion-mnist \
      --batch-size 20 --lr 1e-3 --schedule paper --budget-epochs 364 --seeds 0,1 --jobs 2 \
      --out "${OUT:-benchmarks/fashion-mnist-protocol}" ;;
  mnist-iwae5-2l)
    .venv/bin/python benchmarks/mnist_likelihood.py --rows iwae5-2l --dataset mnist --data-dir "$DATA" \
      --batch-size 20 --lr 1e-3 --schedule paper --budget-epochs 121 --seeds 0,1 --jobs 2 \
      --out "${OUT:-benchmarks/mnist-iwae5-2l-protocol}" ;;
  *) echo "usage: bash benchmarks/protocol_rows.sh mnist-vae|fashion-vae|mnist-iwae5-2l" >&2; exit 2 ;;
esac
