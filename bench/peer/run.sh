#!/usr/bin/env bash
# Runs the peer benchmark (the official OSEDiff pipeline on PyTorch/diffusers, fp32, CPU) for one case and
# prints one JSON object in the schema of `osediff bench --case C --json`.
#
#   bench/peer/run.sh [--src DIR] CASE [OUT.json] [peer_bench.py options...]
#     CASE: 128_to_512 | 512_to_2048 | 256_to_1024 | dape
#     DIR:  the folder made by bench/peer/get-sources.sh (default: $PEER_SRC, else /work/peer-src)
#
# Defaults: --threads 2; 128_to_512 and dape: --warmup 1 --runs 3; 512_to_2048 and 256_to_1024:
# --warmup 0 --runs 1 --count-flops timed.  Options after OUT.json are passed on and override these
# (e.g. --no-wait --warmup 0 --runs 1 for a smoke run).  The log goes to stderr; the JSON to stdout and to
# OUT.json when given.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
src=${PEER_SRC:-/work/peer-src}
if [[ ${1:-} == --src ]]; then
  src=$2
  shift 2
fi
case_=${1:?usage: run.sh [--src DIR] CASE [OUT.json] [options...]}
shift
out=
if [[ $# -gt 0 && ${1:-} != -* ]]; then
  out=$1
  shift
fi
src=$(cd "$src" && pwd)

py=/usr/bin/python3 # Debian's python3-torch lives there (not in a pyenv python)
for d in diffusers/src transformers/src peft/src huggingface_hub/src accelerate/src einops ftfy OSEDiff \
  open_clip/src/open_clip/bpe_simple_vocab_16e6.txt.gz; do
  [[ -e $src/$d ]] || {
    echo "run.sh: $src/$d is missing: run bench/peer/get-sources.sh $src first" >&2
    exit 2
  }
done

pp="$here/pyshim"
for d in diffusers/src transformers/src peft/src huggingface_hub/src accelerate/src einops ftfy; do
  pp="$pp:$src/$d"
done
args=(--osediff-src "$src/OSEDiff" --threads 2)
case $case_ in
  dape)
    for d in timm loralib fairscale; do
      [[ -e $src/$d ]] || { echo "run.sh: $src/$d is missing (needed for dape)" >&2; exit 2; }
      pp="$pp:$src/$d"
    done
    args+=(--dape --warmup 1 --runs 3)
    ;;
  128_to_512) args+=(--bpe-gz "$src/open_clip/src/open_clip/bpe_simple_vocab_16e6.txt.gz" --case "$case_" --warmup 1 --runs 3) ;;
  *_to_*) args+=(--bpe-gz "$src/open_clip/src/open_clip/bpe_simple_vocab_16e6.txt.gz" --case "$case_" --warmup 0 --runs 1 --count-flops timed) ;;
  *)
    echo "run.sh: unknown case $case_ (want 128_to_512, 512_to_2048, 256_to_1024 or dape)" >&2
    exit 2
    ;;
esac
[[ -n $out ]] && args+=(--json "$out")

export PYTHONPATH=$pp PYTHONNOUSERSITE=1 PYTHONDONTWRITEBYTECODE=1
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 DIFFUSERS_OFFLINE=1 HF_DATASETS_OFFLINE=1
export HF_HOME=${HF_HOME:-$(mktemp -d /tmp/peer_hf.XXXXXX)} # nothing is downloaded; keep caches away from ~
export OMP_NUM_THREADS=2 MKL_NUM_THREADS=2 OPENBLAS_NUM_THREADS=2
exec "$py" "$here/peer_bench.py" "${args[@]}" "$@"
