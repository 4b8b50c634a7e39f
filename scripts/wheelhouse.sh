#!/usr/bin/env bash
# Wheels for an air-gapped CUDA box (Linux x86_64, CPython 3.12) that has torch but lacks this repo's
# stack: trl, datasets, unsloth, unsloth_zoo, math-verify and their needs, at this repo's pins.
#
#   scripts/wheelhouse.sh DIR [--have LIST] [--box-torch VERSION] [--split MIB] [--dry-run]
#
#   --have       comma-separated packages the box already has, left out (default: torch,torchvision,triton,
#                the CUDA builds that must match the box's torch; add e.g. transformers,peft,accelerate,pyarrow
#                to use the box's own, at the risk of versions other than the pins)
#   --box-torch  the box's torch version, which the resolution must fit (default 2.11.0)
#   --split      also pack DIR into a tar split in parts of at most MIB MiB (for 64 MiB transfers: 60)
#   --dry-run    resolve only (package metadata, no wheel downloads): writes DIR/wheels.txt and prints it
#
# The resolution runs pip against the pins with a metadata-only stand-in for the box's torch, so
# torch's own CUDA dependencies are never resolved or fetched. On the box: scripts/gpu_check.sh --wheels DIR.
set -euo pipefail
cd "$(dirname "$0")/.."
DIR=${1:?usage: scripts/wheelhouse.sh DIR [--have LIST] [--box-torch VERSION] [--split MIB] [--dry-run]}
shift
HAVE=torch,torchvision,triton BOX_TORCH=2.11.0 SPLIT= DRY=
while [ $# -gt 0 ]; do
  case $1 in
    --have) HAVE=$2; shift 2 ;;
    --box-torch) BOX_TORCH=$2; shift 2 ;;
    --split) SPLIT=$2; shift 2 ;;
    --dry-run) DRY=1; shift ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
PY=${PYTHON:-python3}
mkdir -p "$DIR"
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

# what the box lacks, at this repo's pins (extras stripped: constraints cannot carry them)
# the stack, and what the GPU checks import: pytest, captum (IG parity), the offline Qwen2.5 vocabulary
printf 'trl\ndatasets\nunsloth\nunsloth_zoo\nmath-verify\nqwen-tokenizer\npytest\ncaptum\nmatplotlib\n' > "$WORK/want.txt"
grep -hE '^[A-Za-z0-9_.-]+(\[[^]]*\])?==' requirements-cpu.txt requirements.txt constraints.txt \
  | sed -E 's/\[[^]]*\]//' | grep -v '^torch==' | sort -u > "$WORK/pins.txt"
echo "torch==$BOX_TORCH" >> "$WORK/pins.txt"

# a wheel that only declares torch==BOX_TORCH+box: pip resolves against it and never pulls torch's CUDA wheels
"$PY" - "$WORK/stub" "$BOX_TORCH" <<'EOF'
import os, sys, zipfile
out, version = sys.argv[1], sys.argv[2] + "+box"
info = f"torch-{version}.dist-info"
os.makedirs(out, exist_ok=True)
with zipfile.ZipFile(f"{out}/torch-{version}-py3-none-any.whl", "w") as z:
    z.writestr(f"{info}/METADATA", f"Metadata-Version: 2.1\nName: torch\nVersion: {version}\n")
    z.writestr(f"{info}/WHEEL", "Wheel-Version: 1.0\nGenerator: wheelhouse.sh\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
    z.writestr(f"{info}/RECORD", "")
EOF

PLATFORM=(--python-version 3.12 --implementation cp --abi cp312 --platform manylinux2014_x86_64 --platform any)
for n in 39 38 35 34 31 28 27 24 17 5; do PLATFORM+=(--platform "manylinux_2_${n}_x86_64"); done
"$PY" -m pip install --dry-run --ignore-installed --quiet --report "$WORK/report.json" "${PLATFORM[@]}" \
  --only-binary=:all: --find-links "$WORK/stub" --target "$WORK/target" -r "$WORK/want.txt" -c "$WORK/pins.txt"

"$PY" - "$WORK/report.json" "$HAVE" "$DIR/wheels.txt" <<'EOF'
import json, re, sys
report, have, out = sys.argv[1], sys.argv[2], sys.argv[3]
norm = lambda n: re.sub(r"[-_.]+", "-", n).lower()
skip = {norm(n) for n in have.split(",") if n}
rows = sorted((i["metadata"]["name"], i["metadata"]["version"], i["download_info"]["url"])
              for i in json.load(open(report))["install"])
kept = [r for r in rows if norm(r[0]) not in skip]
with open(out, "w") as f:
    f.writelines(f"{n}=={v} {u}\n" for n, v, u in kept)
print(f"resolved {len(rows)} packages for CPython 3.12 / Linux x86_64; the box has {len(rows) - len(kept)} "
      f"({', '.join(sorted(n for n, _, _ in rows if norm(n) in skip))}); {len(kept)} to carry: {out}")
EOF
[ -n "$DRY" ] && { cut -d' ' -f1 "$DIR/wheels.txt" | paste -sd' '; exit 0; }

# download exactly the resolved files (no resolution on the way: --no-deps)
cut -d' ' -f1 "$DIR/wheels.txt" | xargs "$PY" -m pip download --quiet --no-deps --only-binary=:all: \
  "${PLATFORM[@]}" --find-links "$WORK/stub" -d "$DIR"
echo "wheelhouse: $(ls "$DIR"/*.whl | wc -l) wheels, $(du -sh --apparent-size "$DIR" | cut -f1) in $DIR;" \
     "largest: $(ls -S "$DIR"/*.whl | head -1 | xargs du -h --apparent-size | cut -f1)"
if [ -n "$SPLIT" ]; then
  tar -C "$DIR" -cf - . | split -b "${SPLIT}m" -d - "$DIR.tar.part-"
  echo "parts: $(ls "$DIR".tar.part-* | wc -l) of at most ${SPLIT} MiB; join with: cat $DIR.tar.part-* | tar -xf - -C DIR"
fi
