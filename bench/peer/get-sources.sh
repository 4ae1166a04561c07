#!/usr/bin/env bash
# Extracts the pinned revisions of the peer's library sources into DEST (default $PEER_SRC or
# /work/peer-src), one folder per library, from local git repositories of the public projects.
# Nothing is installed and nothing lands in this repository.
#
#   bench/peer/get-sources.sh [DEST]
#
# Git repositories are looked up, for each project owner/name, as
#   $PEER_GIT/owner+name/repo   (the layout of a bare mirror: owner+name/repo)
#   $PEER_GIT/owner+name        (a bare or normal clone)
#   $PEER_GIT/owner/name        (a normal clone)
# PEER_GIT defaults to /work/.mirror.  Any clone works as long as it holds the pinned commit
# (for transformers, a fork with upstream history such as feisenyu/transformers_4573 does: set
# PEER_GIT_TRANSFORMERS to its git directory).
set -euo pipefail

dest=${1:-${PEER_SRC:-/work/peer-src}}
git_root=${PEER_GIT:-/work/.mirror}

# name | owner/name | revision (tag or commit) | verified commit
sources=(
  "diffusers|huggingface/diffusers|v0.25.0|7f551e29ff4ad05615cb38530a8940811f9e5936"
  "transformers|huggingface/transformers|50f82e12823ef8844b45a0dd864a78eea80de879|50f82e12823ef8844b45a0dd864a78eea80de879"
  "peft|huggingface/peft|v0.9.0|7e5335d093bef57ed332e6354282f84995700bb1"
  "huggingface_hub|huggingface/huggingface_hub|v0.20.3|2cff405655a58e91e68d2486a3d699e25fadc65b"
  "accelerate|huggingface/accelerate|v0.27.2|5eb7ab9f6afb0fed38cb54741e243180d6f8bc5d"
  "einops|arogozhnikov/einops|v0.7.0|5b960621df194a1373f1f8419db83338b3620327"
  "ftfy|rspeer/python-ftfy|v6.1.1|02a634c7bb8e35c281d4088d8c0efd5bf3feef4b"
  "OSEDiff|cswry/OSEDiff|fcc4f09c7ed66a9bc0ba9433940d76b343142426|fcc4f09c7ed66a9bc0ba9433940d76b343142426"
  "open_clip|mlfoundations/open_clip|v2.20.0|a09d519f91358187d73debacfc2db5f154291d40"
  # DAPE (--dape) only
  "timm|huggingface/pytorch-image-models|v0.6.13|2696eedd1b1763b9da06e68c1af3c5ed360fe687"
  "loralib|microsoft/LoRA|3f5c193f431c8a09448f0184f6f883ad393f22d0|3f5c193f431c8a09448f0184f6f883ad393f22d0"
  "fairscale|facebookresearch/fairscale|v0.4.13|50b06d251730ca6e9a7d0aea9fbba3ad9391c0d4"
)

find_git() { # owner/name -> a git directory holding it, or nothing
  local repo=$1 flat=${1/\//+} d
  if [[ $repo == huggingface/transformers && -n ${PEER_GIT_TRANSFORMERS:-} ]]; then
    echo "$PEER_GIT_TRANSFORMERS"
    return
  fi
  for d in "$git_root/$flat/repo" "$git_root/$flat" "$git_root/$repo"; do
    if git --git-dir="$d" rev-parse -q --verify HEAD >/dev/null 2>&1; then echo "$d"; return; fi
    if git --git-dir="$d/.git" rev-parse -q --verify HEAD >/dev/null 2>&1; then echo "$d/.git"; return; fi
  done
  if [[ $repo == huggingface/transformers ]]; then # the full upstream is large; a fork with its history will do
    for d in "$git_root"/*+transformers*/repo "$git_root"/*/transformers*; do
      if git --git-dir="$d" cat-file -e 50f82e12823ef8844b45a0dd864a78eea80de879^{commit} 2>/dev/null; then
        echo "$d"
        return
      fi
    done
  fi
}

mkdir -p "$dest"
missing=0
for s in "${sources[@]}"; do
  IFS='|' read -r name repo rev commit <<<"$s"
  gd=$(find_git "$repo")
  if [[ -z $gd ]]; then
    echo "missing: $repo (no git repository under $git_root)" >&2
    missing=1
    continue
  fi
  got=$(git --git-dir="$gd" rev-parse -q --verify "$rev^{commit}" || true)
  if [[ $got != "$commit" ]]; then
    echo "missing: $repo at $rev (found '${got:-nothing}' in $gd, want $commit)" >&2
    missing=1
    continue
  fi
  if [[ -f $dest/$name/.peer-rev && $(cat "$dest/$name/.peer-rev") == "$commit" ]]; then
    echo "ok      $name $rev (already there)"
    continue
  fi
  rm -rf "$dest/$name.tmp"
  mkdir -p "$dest/$name.tmp"
  # read-tree + checkout-index through a private index file (the git directory is only read); a mirror may
  # lack big blobs (images, data, checkpoints): those files are left out, and listed
  idx=$(mktemp)
  GIT_INDEX_FILE=$idx git --git-dir="$gd" read-tree "$commit"
  GIT_INDEX_FILE=$idx git --git-dir="$gd" --work-tree="$dest/$name.tmp" checkout-index -a -f 2>&1 |
    sed -n "s/^error: unable to read sha1 file of \(.*\) (.*/        $name: \1 is not in that git directory; left out/p" >&2 || true
  rm -f "$idx"
  echo "$commit" >"$dest/$name.tmp/.peer-rev"
  rm -rf "$dest/$name"
  mv "$dest/$name.tmp" "$dest/$name"
  echo "ok      $name $rev -> $dest/$name"
done
exit $missing
