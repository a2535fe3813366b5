#!/usr/bin/env bash
# Tabtune GPU kit: measures Tabtune (Node + Dawn, carried in this folder) and PyTorch + PEFT on
# this machine's GPU and writes ONE JSON file into OUTDIR. Needs only bash, coreutils, xz (or
# python3's lzma), dpkg-deb or ar + tar (or python3), and python3 (+ torch, transformers, peft
# for the comparison). No Node and no network needed.
#
#   bash run.sh [--tiny] OUTDIR
#
# --tiny: tiny shapes and a tiny model on whatever adapter there is (SwiftShader on a machine
# without a GPU: VK_ICD_FILENAMES=/usr/lib/chromium/vk_swiftshader_icd.json), PyTorch on the CPU.
# Without it a software adapter (SwiftShader, llvmpipe) is refused and reported, never timed as
# a GPU. Each section runs in its own process under its own time box; the whole run stays
# within TABTUNE_KIT_BUDGET_S (default 460 s; 900 with --tiny). TABTUNE_KIT_WORK picks the scratch folder (the
# random models: ~4 GB), TABTUNE_KIT_KEEP=1 keeps it, TABTUNE_KIT_SEQ sets the training tokens.
set -u
KIT=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
TINY=0
OUT=""
for a in "$@"; do
  case "$a" in
    --tiny) TINY=1 ;;
    -h | --help)
      sed -n '2,15p' "$0"
      exit 0
      ;;
    -*)
      echo "run.sh: unknown option $a" >&2
      exit 2
      ;;
    *) OUT=$a ;;
  esac
done
if [ -z "$OUT" ]; then
  echo "usage: bash run.sh [--tiny] OUTDIR" >&2
  exit 2
fi
if [ ! -f "$KIT/node.xz" ] || [ ! -f "$KIT/tabtune-kit.mjs" ]; then
  echo "run.sh: $KIT is not a packed kit (no node.xz / tabtune-kit.mjs): run \`npm run gpu-kit\`, then bash .cache/gpu-kit/run.sh" >&2
  exit 2
fi
mkdir -p "$OUT" && OUT=$(cd "$OUT" && pwd)
START=$(date +%s)
TINY_BUDGET=900 # SwiftShader on a busy CPU: compiling the kernels alone takes minutes
BUDGET=${TABTUNE_KIT_BUDGET_S:-$([ $TINY = 1 ] && echo $TINY_BUDGET || echo 460)}
WORK=${TABTUNE_KIT_WORK:-$(mktemp -d "${TMPDIR:-/tmp}/tabtune-kit.XXXXXX")}
RT=$WORK/rt
SEC=$WORK/sections
rm -rf "$SEC" && mkdir -p "$RT" "$SEC" "$WORK/models"
: >"$SEC/order"
MACHINE=$SEC/machine.tsv
: >"$MACHINE"
note() { printf '%s\t%s\n' "$1" "$(printf '%s' "$2" | tr '\t\n' '  ')" >>"$MACHINE"; }
say() { echo "[gpu-kit $(($(date +%s) - START))s] $*" >&2; }
cleanup() {
  if [ "${TABTUNE_KIT_KEEP:-0}" != 1 ] && [ -z "${TABTUNE_KIT_WORK:-}" ]; then rm -rf "$WORK"; fi
}
trap cleanup EXIT

# --- unpack --------------------------------------------------------------------------------
unxz_to() { # FILE.xz DEST
  if command -v xz >/dev/null 2>&1; then
    xz -dc "$1" >"$2"
  else
    python3 -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], "wb"))' "$1" "$2"
  fi
}
unpack_deb() { # FILE.deb DEST
  mkdir -p "$2"
  if command -v dpkg-deb >/dev/null 2>&1; then
    dpkg-deb -x "$1" "$2" && return 0
  fi
  if command -v ar >/dev/null 2>&1; then
    local member
    member=$(ar t "$1" | grep '^data\.tar')
    (cd "$2" && ar p "$1" "$member" | tar -xaf - 2>/dev/null) && return 0
    (cd "$2" && ar p "$1" "$member" | tar -xJf -) && return 0
  fi
  python3 - "$1" "$2" <<'PY'
import io, sys, tarfile
data = open(sys.argv[1], "rb").read()
assert data[:8] == b"!<arch>\n", f"{sys.argv[1]}: not a Debian package (no ar header)"
pos = 8
while pos < len(data):
    name = data[pos:pos + 16].decode().strip().rstrip("/")
    size = int(data[pos + 48:pos + 58].decode().strip())
    body = data[pos + 60:pos + 60 + size]
    if name.startswith("data.tar"):
        tarfile.open(fileobj=io.BytesIO(body)).extractall(sys.argv[2])
        break
    pos += 60 + size + (size & 1)
PY
}

say "unpacking into $RT"
UNPACK_ERR=""
unxz_to "$KIT/node.xz" "$RT/node" && chmod +x "$RT/node" || UNPACK_ERR="node binary: unxz failed"
mkdir -p "$RT/node_modules/webgpu/dist/linux-x64"
cp "$KIT/webgpu/index.js" "$KIT/webgpu/package.json" "$RT/node_modules/webgpu/"
unxz_to "$KIT/webgpu/dawn.node.xz" "$RT/node_modules/webgpu/dist/linux-x64/dawn.node" || UNPACK_ERR="$UNPACK_ERR dawn.node: unxz failed"
cp "$KIT/tabtune-kit.mjs" "$KIT/tabtune-cli.mjs" "$RT/" # the CLI: $RT/node $RT/tabtune-cli.mjs (TABTUNE_KIT_KEEP=1)
for deb in "$KIT"/debs/*.deb; do unpack_deb "$deb" "$RT/vulkan" || UNPACK_ERR="$UNPACK_ERR $(basename "$deb"): unpack failed"; done

# --- the machine ---------------------------------------------------------------------------
note kitMode "$([ $TINY = 1 ] && echo tiny || echo gpu)"
note uname "$(uname -srm)"
note os "$(. /etc/os-release 2>/dev/null && echo "$PRETTY_NAME")"
note cpus "$(nproc 2>/dev/null)"
# The first python3 that has torch (a conda or venv python3 first on PATH, else the system's).
PYTHON=${TABTUNE_KIT_PYTHON:-}
if [ -z "$PYTHON" ]; then
  for p in python3 /usr/bin/python3 /usr/local/bin/python3 /opt/conda/bin/python3; do
    if command -v "$p" >/dev/null 2>&1 && "$p" -c 'import torch' >/dev/null 2>&1; then
      PYTHON=$p
      break
    fi
  done
  PYTHON=${PYTHON:-python3}
fi
note python3 "$(command -v "$PYTHON") $("$PYTHON" --version 2>&1)"
if command -v nvidia-smi >/dev/null 2>&1; then
  note nvidiaSmi "$(nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader 2>&1 | head -4)"
fi
[ -n "$UNPACK_ERR" ] && note unpackError "$UNPACK_ERR"

LIBDIRS="/usr/lib/x86_64-linux-gnu /lib/x86_64-linux-gnu /usr/lib64 /lib64 /usr/local/nvidia/lib64 /usr/local/nvidia/lib /usr/lib /usr/local/lib"
find_lib() { # NAME: first path of a shared library on this machine
  local d
  for d in $LIBDIRS; do [ -e "$d/$1" ] && { echo "$d/$1"; return 0; }; done
  local ldc
  ldc=$(command -v ldconfig || echo /sbin/ldconfig)
  [ -x "$ldc" ] && "$ldc" -p 2>/dev/null | awk -v n="$1" '$1 == n { print $NF; exit }'
}

LDPATH=""
# Dawn needs a libstdc++ with GLIBCXX_3.4.30 (GCC 12); older systems get the one packed beside it.
SYS_STDCXX=$(find_lib libstdc++.so.6)
if [ -z "$SYS_STDCXX" ] || ! grep -qa GLIBCXX_3.4.30 "$SYS_STDCXX"; then
  mkdir -p "$RT/lib" && unxz_to "$KIT/lib/libstdc++.so.6.xz" "$RT/lib/libstdc++.so.6"
  LDPATH="$RT/lib"
  note libstdcxx "packed (system: ${SYS_STDCXX:-none} lacks GLIBCXX_3.4.30)"
else
  note libstdcxx "system $SYS_STDCXX"
fi

# The Vulkan loader: the system's when there is one (a GPU run), else the packed libvulkan1.
KIT_VULKAN="$RT/vulkan/usr/lib/x86_64-linux-gnu"
SYS_VULKAN=$(find_lib libvulkan.so.1)
if [ $TINY = 0 ] && [ -n "$SYS_VULKAN" ]; then
  note vulkanLoader "system $SYS_VULKAN"
else
  LDPATH="${LDPATH:+$LDPATH:}$KIT_VULKAN"
  note vulkanLoader "packed $(ls "$KIT"/debs 2>/dev/null | tr '\n' ' ')(system: ${SYS_VULKAN:-none})"
fi
export LD_LIBRARY_PATH="${LDPATH}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"

# The Vulkan driver: SwiftShader for --tiny; otherwise the installed manifests, or a manifest
# written here for NVIDIA's driver library when the container has the library but no manifest.
if [ $TINY = 1 ]; then
  export VK_ICD_FILENAMES=${TABTUNE_KIT_ICD:-/usr/lib/chromium/vk_swiftshader_icd.json}
  note vulkanIcd "$VK_ICD_FILENAMES"
else
  MANIFESTS=$(ls /etc/vulkan/icd.d/*.json /usr/share/vulkan/icd.d/*.json /usr/local/share/vulkan/icd.d/*.json 2>/dev/null | tr '\n' ' ')
  note vulkanManifests "${MANIFESTS:-none}"
  if ! printf '%s' "$MANIFESTS" | grep -qi nvidia; then
    NV=$(find_lib libGLX_nvidia.so.0)
    if [ -n "$NV" ]; then
      printf '{"file_format_version": "1.0.0", "ICD": {"library_path": "%s", "api_version": "1.3.0"}}\n' "$NV" >"$RT/nvidia_icd.json"
      export VK_ICD_FILENAMES="$RT/nvidia_icd.json"
      note vulkanIcd "written for $NV (no NVIDIA manifest installed)"
    else
      note vulkanIcd "no NVIDIA Vulkan driver found (no nvidia manifest, no libGLX_nvidia.so.0: a container needs NVIDIA_DRIVER_CAPABILITIES with graphics)"
    fi
  fi
fi
if [ $TINY = 0 ]; then
  # what NVIDIA's Vulkan driver needs besides its manifest, for the report when Dawn gets no adapter
  for lib in libGLX_nvidia.so.0 libnvidia-glvkspirv.so libnvidia-glcore.so libEGL_nvidia.so.0; do
    f=$(ls /usr/lib/x86_64-linux-gnu/$lib* /usr/lib64/$lib* /usr/local/nvidia/lib64/$lib* 2>/dev/null | head -1)
    note "lib:$lib" "${f:-missing}"
  done
  command -v vulkaninfo >/dev/null 2>&1 && note vulkaninfo "$(timeout 20 vulkaninfo --summary 2>&1 | grep -E 'deviceName|driverVersion|apiVersion' | head -6)"
fi
export XDG_RUNTIME_DIR=${XDG_RUNTIME_DIR:-$WORK}
export TABTUNE_KERNEL_CACHE=$WORK/kernels.json # measure afresh, never reuse another machine's picks

# --- sections ------------------------------------------------------------------------------
run_section() { # NAME NOMINAL_SECONDS COMMAND...
  local name=$1 nominal=$2
  shift 2
  echo "$name" >>"$SEC/order"
  local now remaining box
  now=$(date +%s)
  remaining=$((START + BUDGET - now))
  box=$((nominal < remaining - 5 ? nominal : remaining - 5))
  if [ "$box" -lt 5 ]; then
    printf 'skipped\tthe run'"'"'s %s s budget is spent\n' "$BUDGET" >"$SEC/$name.run"
    say "$name: skipped (budget spent)"
    return
  fi
  if [ -n "${SKIP_REASON:-}" ] && [ "${NEEDS_GPU:-0}" = 1 ]; then
    printf 'skipped\t%s\n' "$SKIP_REASON" >"$SEC/$name.run"
    say "$name: skipped ($SKIP_REASON)"
    return
  fi
  say "$name (time box ${box} s)"
  local t0 rc
  t0=$(date +%s)
  timeout -k 5 "$box" "$@" --budget-s "$box" --out "$SEC/$name.json" >"$SEC/$name.log" 2>&1
  rc=$?
  printf 'rc\t%s\nseconds\t%s\ntimebox\t%s\n' "$rc" "$(($(date +%s) - t0))" "$box" >"$SEC/$name.run"
  say "$name: exit $rc after $(($(date +%s) - t0)) s"
}
NODE=("$RT/node" "$RT/tabtune-kit.mjs")
T=()
[ $TINY = 1 ] && T=(--tiny)
gpu() { NEEDS_GPU=1 run_section "$@"; }
torch_section() { # MODEL NOMINAL
  local dev=cuda
  [ $TINY = 1 ] && dev=cpu
  run_section "torch.$1" "$2" "$PYTHON" "$KIT/torch_peft.py" --dir "$WORK/models/$1" --device "$dev" \
    --modes "$TORCH_MODES" --steps "$STEPS" ${T[@]+"${T[@]}"}
}

NODE_TRAIN=("${NODE[@]}")
if [ $TINY = 1 ]; then
  # SwiftShader compiles slowly: the model's matmuls use the variant that wins there instead of
  # being tuned per shape class (the matmul section still shows the tuner at work).
  NODE_TRAIN=(env "TABTUNE_KERNELS=${TABTUNE_KERNELS:-matmul=register8x8}" "${NODE[@]}")
  MODELS=(tiny-qwen2-hd32)
  SIZES=64,128
  SEQS=64
  SEQ=${TABTUNE_KIT_SEQ:-32}
  STEPS=3
  DECODE=4
  TORCH_MODES=bf16,f32,qlora
  BOX=(60 150 60 200 120 200 200)
else
  MODELS=(qwen2.5-0.5b qwen2.5-1.5b)
  SIZES=1024,2048,4096,8192
  SEQS=1024,4096
  SEQ=${TABTUNE_KIT_SEQ:-512}
  STEPS=4
  DECODE=16
  TORCH_MODES=bf16,f32,qlora
  # adapter matmul prep0 train0-lora torch0 train0-qlora attention prep1 train1-lora torch1 (train1-qlora)
  BOX=(25 60 25 50 50 40 30 35 50 60 50)
fi
note seq "$SEQ"
M0=${MODELS[0]}
M1=${MODELS[1]:-}

gpu adapter "${BOX[0]}" "${NODE[@]}" adapter ${T[@]+"${T[@]}"}
ADAPTER_STATUS=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1])).get("status"))' "$SEC/adapter.json" 2>/dev/null)
if [ "$ADAPTER_STATUS" != ok ]; then
  SKIP_REASON="no usable WebGPU adapter (see the adapter section)"
fi
gpu matmul "${BOX[1]}" "${NODE[@]}" matmul --sizes "$SIZES" ${T[@]+"${T[@]}"}
run_section "prepare.$M0" "${BOX[2]}" "${NODE[@]}" prepare --model "$M0" --dir "$WORK/models/$M0" --seq "$SEQ"
gpu "train.$M0.lora" "${BOX[3]}" "${NODE_TRAIN[@]}" train --dir "$WORK/models/$M0" --method lora --seq "$SEQ" \
  --steps "$STEPS" --decode "$DECODE" ${T[@]+"${T[@]}"}
torch_section "$M0" "${BOX[4]}"
gpu "train.$M0.qlora" "${BOX[5]}" "${NODE_TRAIN[@]}" train --dir "$WORK/models/$M0" --method qlora --seq "$SEQ" \
  --steps "$STEPS" ${T[@]+"${T[@]}"}
gpu attention "${BOX[6]}" "${NODE[@]}" attention --seqs "$SEQS" ${T[@]+"${T[@]}"}
rm -f "$WORK/models/$M0/model.safetensors" # the 1.5B checkpoint needs the room
if [ -n "$M1" ]; then
  run_section "prepare.$M1" "${BOX[7]}" "${NODE[@]}" prepare --model "$M1" --dir "$WORK/models/$M1" --seq "$SEQ"
  gpu "train.$M1.lora" "${BOX[8]}" "${NODE_TRAIN[@]}" train --dir "$WORK/models/$M1" --method lora --seq "$SEQ" \
    --steps "$STEPS" --decode "$DECODE" ${T[@]+"${T[@]}"}
  torch_section "$M1" "${BOX[9]}"
  gpu "train.$M1.qlora" "${BOX[10]}" "${NODE_TRAIN[@]}" train --dir "$WORK/models/$M1" --method qlora \
    --seq "$SEQ" --steps "$STEPS" ${T[@]+"${T[@]}"}
fi

note elapsed "$(($(date +%s) - START))"
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
FILE="$OUT/tabtune-gpu-kit-$([ $TINY = 1 ] && echo tiny || echo gpu)-$STAMP.json"
python3 "$KIT/report.py" "$SEC" "$FILE" "$MACHINE" "$KIT/manifest.json" "$([ $TINY = 1 ] && echo tiny || echo gpu)" >/dev/null ||
  {
    echo "run.sh: report.py failed; the section files are in $SEC" >&2
    TABTUNE_KIT_KEEP=1
    exit 1
  }
say "wrote $FILE"
echo "$FILE"
