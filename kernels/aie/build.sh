#!/usr/bin/env bash
# Builds the NPU kernels a Whisper encoder needs into OUTDIR: one xclbin per kernel kind (the
# GEMM per epilogue and output type, the softmax), one instruction stream per dispatch shape,
# and the manifest.toml that kernels/src/manifest.rs reads.
#
#   kernels/aie/build.sh MODEL OUTDIR [--target npu|npu2] [--n-mels N]
#                        [--precision bf16|bf16x3|bf16-host|all] [--plan]
#
# MODEL is a catalog name (tiny, base.en, small, medium, large-v2, large-v3, ...: the names of
# models/catalog.toml), or `large`: large-v3 (128 mel bins) or, with --n-mels 80, large-v2.
# The shapes are those the host requests, computed by the host's own code: `amanuensis
# inspect --kernel-shapes` prints them as JSON from the catalog's sizes, the kernel contract's
# layouts and the plan's placement (run from $AMANUENSIS if set, else with `cargo run
# --release` in this repository). --plan prints them and the commands without building (no
# mlir-aie toolchain needed). --precision chooses the shapes of `--precision bf16` (the GEMMs
# with their epilogues, softmax, GELU), of bf16x3 (the same GEMM kinds at K three times as
# long, no GELU epilogue, no softmax: kernels/NUMERICS.md 7), of bf16-host (the bf16 GEMMs
# with attention's scores in float32 and no GELU epilogue or softmax: NUMERICS.md 7.4), or
# all three (the default): the others add instruction streams to the GEMM xclbins, no
# xclbin.
#
# Needs the mlir-aie toolchain: the IRON Python package (`aie`), aiecc, and Peano (llvm-aie)
# for the AIE2/AIE2P kernels. The flow is that of mlir-aie's programming_examples makefiles
# (makefile-common): clang++ --target=aie2-none-unknown-elf for the kernels, the design's
# Python printing MLIR, aiecc for the xclbin and the instruction stream.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

usage() {
    echo "usage: $0 MODEL OUTDIR [--target npu|npu2] [--n-mels N] [--precision bf16|bf16x3|bf16-host|all] [--plan]" >&2
    echo "  MODEL: a catalog name (tiny, base.en, large-v3, ...: amanuensis models list), or large" >&2
    exit 2
}

[[ $# -ge 2 ]] || usage
model="$1"
outdir="$2"
shift 2
target=npu
n_mels=""
plan_only=0
precision=all
while [[ $# -gt 0 ]]; do
    case "$1" in
        --target) target="${2:?--target needs npu or npu2}"; shift 2 ;;
        --n-mels) n_mels="${2:?--n-mels needs a number}"; shift 2 ;;
        --precision) precision="${2:?--precision needs bf16, bf16x3, bf16-host or all}"; shift 2 ;;
        --plan) plan_only=1; shift ;;
        *) usage ;;
    esac
done
case "$precision" in bf16 | bf16x3 | bf16-host | all) ;; *) usage ;; esac
case "$target" in
    npu)
        # XDNA1 (Phoenix, Hawk Point): AIE2, the bfloat16 mmul 4 x 8 x 4 (mm.cc).
        family=xdna1
        manifest_target=npu1_4col
        clang_target=aie2-none-unknown-elf
        mmul=(4 8 4)
        columns=4
        ;;
    npu2)
        # XDNA2 (Strix, Krackan): AIE2P, the bfloat16 mmul 4 x 8 x 8 (gemm.py's MMUL_SHAPES;
        # mlir-aie's 8 x 8 x 8 is block floating point, other numerics), all 8 columns
        # (GemmContract::XDNA2).
        family=xdna2
        manifest_target=npu2
        clang_target=aie2p-none-unknown-elf
        mmul=(4 8 8)
        columns=8
        ;;
    *) usage ;;
esac
# `large` and --n-mels as earlier versions of this script took them, as catalog names.
catalog_name="$model"
if [[ "$model" == large ]]; then
    case "${n_mels:-128}" in
        128) catalog_name=large-v3 ;;
        80) catalog_name=large-v2 ;;
        *) echo "build.sh: large has 80 (large-v2) or 128 (large-v3) mel bins, not $n_mels" >&2; exit 2 ;;
    esac
fi

python=${PYTHON:-python3}
# The designs are run in place; keep their bytecode out of the source tree.
export PYTHONDONTWRITEBYTECODE=1

# The shapes, from the host's own code: `amanuensis inspect --kernel-shapes`, JSON.
if [[ -n "${AMANUENSIS:-}" ]]; then
    amanuensis=("$AMANUENSIS")
else
    amanuensis=(cargo run --release --quiet --manifest-path "$here/../../Cargo.toml" --bin amanuensis --)
fi
case "$precision" in all) precisions=(bf16 bf16x3 bf16-host) ;; *) precisions=("$precision") ;; esac
reports=()
for p in "${precisions[@]}"; do
    report="$("${amanuensis[@]}" inspect --kernel-shapes --model "$catalog_name" \
        --device-family "$family" --precision "$p")" || {
        echo "build.sh: no shapes for $catalog_name from '${amanuensis[*]} inspect" \
            "--kernel-shapes' (its message is above; AMANUENSIS names the binary to run)" >&2
        exit 1
    }
    reports+=("$report")
done

# The first line: the per-core GEMM tile of the contract (GemmContract, kernels/src/gemm.rs);
# then one line per kernel: kind name epilogue output dims... A shape both precisions use is
# one kernel.
listing="$("$python" - "$n_mels" "${reports[@]}" <<'EOF'
import json
import sys
n_mels, reports = sys.argv[1], [json.loads(a) for a in sys.argv[2:]]
tiles = {tuple(r["tile"]) for r in reports}
assert len(tiles) == 1, f"one GEMM tile for every precision, not {tiles}"
dims = reports[0]["dims"]
if n_mels and int(n_mels) != dims["n_mels"]:
    sys.exit(f"build.sh: {reports[0]['model']} has {dims['n_mels']} mel bins, not {n_mels}")
print(*tiles.pop())
seen = set()
for report in reports:
    for k in report["kernels"]:
        if k["name"] not in seen:
            seen.add(k["name"])
            print(k["kind"], k["name"], k["epilogue"], k["output"], *k["shape"])
EOF
)"
read -r -a tile <<<"$(head -n 1 <<<"$listing")"
kernels="$(tail -n +2 <<<"$listing")"

# GEMM_COLUMNS sizes the bias stash to a column's share of the widest bias (gemm.py's
# core_bytes counts it so).
gemm_flags=(-DDIM_M="${tile[0]}" -DDIM_K="${tile[1]}" -DDIM_N="${tile[2]}"
    -DMMUL_R="${mmul[0]}" -DMMUL_S="${mmul[1]}" -DMMUL_T="${mmul[2]}" -DGEMM_COLUMNS="$columns")

design_argv() { # kind epilogue output dims...: sets `argv` to the command printing the design's MLIR
    local kind="$1" epilogue="$2" output="$3"
    shift 3
    case "$kind" in
        gemm) argv=("$python" "$here/gemm/gemm.py" --dev "$target" -M "$1" -K "$2" -N "$3"
            --epilogue "$epilogue" --output "$output") ;;
        softmax) argv=("$python" "$here/softmax/softmax.py" --dev "$target" --rows "$1" --cols "$2"
            --stride "$3") ;;
        gelu) argv=("$python" "$here/gelu/gelu.py" --dev "$target" --elements "$1") ;;
    esac
}

if [[ $plan_only -eq 1 ]]; then
    echo "# $catalog_name for $target ($manifest_target): kernels into $outdir"
    while read -r kind name epilogue output dims; do
        # shellcheck disable=SC2086
        design_argv "$kind" "$epilogue" "$output" $dims
        echo "$name: ${argv[*]}"
        # Each design checks its shape against its limits (no toolchain needed for that).
        "${argv[@]}" --plan >/dev/null
    done <<<"$kernels"
    exit 0
fi

# ---- the toolchain ---------------------------------------------------------------------
missing=()
aiecc="$(command -v aiecc.py || command -v aiecc || true)"
[[ -n "$aiecc" ]] || missing+=("aiecc.py (mlir-aie) on PATH")
if ! "$python" -c 'import aie.iron, aie.helpers.taplib' 2>/dev/null; then
    missing+=("the IRON Python package: '$python -c \"import aie.iron\"' fails")
elif ! "$python" -c '
from aie.iron import Buffer, Runtime, WorkerRuntimeBarrier
assert all(hasattr(Runtime, f) for f in ("sequence", "inline_ops", "set_barrier", "task_group"))
assert hasattr(WorkerRuntimeBarrier, "release_with_value")' 2>/dev/null; then
    # The designs use IRON's Buffer (mlir-aie pull request 2724, November 2025) and its
    # Runtime with sequence(), inline_ops() and task groups, which mlir-aie pull request 3387
    # (July 2026) replaced with a callback body.
    missing+=("the IRON API the designs are written against (Buffer, Runtime.sequence, inline_ops, set_barrier, task_group, WorkerRuntimeBarrier.release_with_value): mlir-aie between November 2025 and July 2026, as pinned below")
fi
if ! "$python" -c 'import numpy, ml_dtypes' 2>/dev/null; then
    missing+=("numpy and ml_dtypes for $python")
fi
if [[ -z "${PEANO_INSTALL_DIR:-}" ]]; then
    location="$("$python" -m pip show llvm-aie 2>/dev/null | sed -n 's/^Location: //p' || true)"
    [[ -n "$location" ]] && PEANO_INSTALL_DIR="$location/llvm-aie"
fi
clangxx="${PEANO_INSTALL_DIR:-}/bin/clang++"
[[ -x "$clangxx" ]] || missing+=("Peano (llvm-aie): set PEANO_INSTALL_DIR to the directory holding bin/clang++")
if [[ -z "${MLIR_AIE_INSTALL_DIR:-}" ]]; then
    location="$("$python" -m pip show mlir_aie 2>/dev/null | sed -n 's/^Location: //p' || true)"
    if [[ -n "$location" && -d "$location/mlir_aie" ]]; then
        MLIR_AIE_INSTALL_DIR="$location/mlir_aie"
    else
        MLIR_AIE_INSTALL_DIR="$("$python" -c 'from aie.utils.config import root_path; print(root_path())' 2>/dev/null || true)"
    fi
fi
[[ -f "${MLIR_AIE_INSTALL_DIR:-}/include/aie_api/aie.hpp" ]] ||
    missing+=("the AIE API headers: set MLIR_AIE_INSTALL_DIR to the mlir-aie install holding include/aie_api")
command -v sha256sum >/dev/null || missing+=("sha256sum (coreutils)")
if [[ ${#missing[@]} -gt 0 ]]; then
    {
        echo "build.sh: the mlir-aie toolchain is not complete; missing:"
        printf '  - %s\n' "${missing[@]}"
        echo
        echo "Install it as mlir-aie's docs/buildHostLin.md describes, for example in a venv:"
        # A wheel inside that window: the one mlir-air pinned on 2026-06-05 (its pull
        # request 1670).
        echo "  python3 -m pip install 'mlir_aie==1.3.2.dev101+ge094875' -f https://github.com/Xilinx/mlir-aie/releases/expanded_assets/latest-wheels-3"
        echo "  python3 -m pip install llvm-aie -f https://github.com/Xilinx/llvm-aie/releases/expanded_assets/nightly"
        echo "  python3 -m pip install numpy ml_dtypes"
        echo "then source mlir-aie's utils/env_setup.sh (it sets PEANO_INSTALL_DIR and"
        echo "MLIR_AIE_INSTALL_DIR), or set them by hand. Running the result needs XRT >= 2.17"
        echo "with the amdxdna driver."
    } >&2
    exit 1
fi

# ---- the kernels' object files ---------------------------------------------------------
mkdir -p "$outdir"
outdir="$(cd "$outdir" && pwd)"
work="$outdir/.build"
rm -rf "$work"
mkdir -p "$work/objects"

cxx_flags=(-O2 -std=c++20 "--target=$clang_target" -DNDEBUG
    -Wno-parentheses -Wno-attributes -Wno-macro-redefined -Wno-empty-body
    -I "$MLIR_AIE_INSTALL_DIR/include" -I "$here/common")
echo "compiling the kernels for $clang_target"
"$clangxx" "${cxx_flags[@]}" "${gemm_flags[@]}" -c "$here/gemm/gemm.cc" -o "$work/objects/gemm.o"
# The bfloat16-output kernels without the bias code and stash: their core's memory holds the
# group's float32 accumulator tiles (gemm.py's core_bytes).
"$clangxx" "${cxx_flags[@]}" "${gemm_flags[@]}" -DGEMM_OUTPUT_BF16 -DGEMM_BIAS=0 \
    -c "$here/gemm/gemm.cc" -o "$work/objects/gemm_bf16.o"
"$clangxx" "${cxx_flags[@]}" -c "$here/softmax/softmax.cc" -o "$work/objects/softmax.o"
"$clangxx" "${cxx_flags[@]}" -c "$here/gelu/gelu.cc" -o "$work/objects/gelu.o"

# mlir-aie's aiecc writes the instruction stream as little-endian 32-bit words; older
# releases wrote one hexadecimal word a line. Either becomes raw words here, which
# kernels/src/npu/mod.rs reads from a `.bin` file.
normalise_instructions() {
    "$python" - "$1" <<'EOF'
import re, struct, sys
path = sys.argv[1]
data = open(path, "rb").read()
try:
    words = data.decode("ascii").split()
except UnicodeDecodeError:
    words = None
if words and all(re.fullmatch(r"(0x)?[0-9a-fA-F]{1,8}", w) for w in words):
    values = [int(w, 16) for w in words]
    open(path, "wb").write(struct.pack(f"<{len(values)}I", *values))
elif len(data) == 0 or len(data) % 4:
    sys.exit(f"{path}: not an instruction stream ({len(data)} bytes)")
EOF
}

# The MLIR of a design without its runtime sequence: what the xclbin is made of (cores,
# object FIFOs, kernels, routing). Two shapes whose arrays agree share one xclbin; only their
# instruction streams (the runtime sequences) differ.
array_part() {
    "$python" - "$1" <<'EOF'
import sys
depth, skipping = 0, False
for line in open(sys.argv[1]):
    if not skipping and "aiex.runtime_sequence" in line:
        skipping, depth = True, 0
    if skipping:
        depth += line.count("{") - line.count("}")
        if depth <= 0 and "}" in line:
            skipping = False
        continue
    sys.stdout.write(line)
EOF
}

# ---- one xclbin per kind, one instruction stream per dispatch shape --------------------
manifest="$work/manifest.toml"
{
    echo "# Written by kernels/aie/build.sh $catalog_name for $target; read by kernels/src/manifest.rs."
    echo "format = 2"
    echo "target = \"$manifest_target\""
    echo "rounding = \"nearest_even\""
} >"$manifest"

declare -A array_of # xclbin name -> sha256 of its array part
while read -r kind name epilogue output dims; do
    dir="$work/$name"
    mkdir -p "$dir"
    case "$kind" in
        gemm) cp "$work/objects/gemm.o" "$work/objects/gemm_bf16.o" "$dir/" ;;
        softmax) cp "$work/objects/softmax.o" "$dir/" ;;
        gelu) cp "$work/objects/gelu.o" "$dir/" ;;
    esac
    # shellcheck disable=SC2086
    design_argv "$kind" "$epilogue" "$output" $dims
    "${argv[@]}" >"$dir/aie.mlir"
    array="$(array_part "$dir/aie.mlir" | sha256sum | cut -d' ' -f1)"
    # The GEMM's cores read their loop counts from runtime parameters: one xclbin per
    # epilogue and output type serves every shape. The softmax and GELU designs compile their
    # counts in; one xclbin serves the shapes whose arrays agree (a Whisper encoder has one
    # softmax shape), and a shape whose array differs gets an xclbin of its own.
    case "$kind" in
        gemm) xclbin="gemm_${epilogue}_${output}" ;;
        *) xclbin="$kind" ;;
    esac
    if [[ -n "${array_of[$xclbin]:-}" && "${array_of[$xclbin]}" != "$array" ]]; then
        if [[ "$kind" == gemm ]]; then
            echo "build.sh: $name: its array differs from the other shapes of $xclbin; the" \
                "GEMM design must not depend on the shape (gemm.py's runtime parameters)" >&2
            exit 1
        fi
        echo "$name: the $kind design compiles its counts in: an xclbin of its own"
        xclbin="$name"
    fi
    if [[ -z "${array_of[$xclbin]:-}" ]]; then
        echo "building $xclbin.xclbin and $name.insts.bin"
        array_of[$xclbin]="$array"
        (
            cd "$dir"
            # The cores' loops run counts read at run time, with acquires of one to four
            # objects, so the object FIFOs' buffers must be chosen at run time: mlir-aie's
            # dynamic object FIFO lowering, aiecc's default since mlir-aie pull request 2549
            # (September 2025). No flag: in aiecc's argument parser since then,
            # --dynamic-objFifos is a store_false that turns the lowering off.
            "$aiecc" --alloc-scheme=basic-sequential --aie-generate-xclbin --no-compile-host \
                --no-xchesscc --no-xbridge --peano "$PEANO_INSTALL_DIR" \
                --xclbin-name="$xclbin.xclbin" \
                --aie-generate-npu-insts --npu-insts-name="$name.insts.bin" \
                aie.mlir >aiecc.log 2>&1
        ) || {
            echo "build.sh: aiecc failed for $name; see $dir/aiecc.log" >&2
            exit 1
        }
        mv "$dir/$xclbin.xclbin" "$outdir/"
    else
        echo "building $name.insts.bin (runs in $xclbin.xclbin)"
        (
            cd "$dir"
            # The instruction stream only: no core compiled or linked, no xclbin.
            "$aiecc" --alloc-scheme=basic-sequential --no-compile --no-link --no-compile-host \
                --no-xchesscc --no-xbridge --peano "$PEANO_INSTALL_DIR" \
                --aie-generate-npu-insts --npu-insts-name="$name.insts.bin" \
                aie.mlir >aiecc.log 2>&1
        ) || {
            echo "build.sh: aiecc failed for $name's instructions; see $dir/aiecc.log" >&2
            exit 1
        }
    fi
    normalise_instructions "$dir/$name.insts.bin"
    mv "$dir/$name.insts.bin" "$outdir/"
    xclbin_sum="$(sha256sum "$outdir/$xclbin.xclbin" | cut -d' ' -f1)"
    insts_sum="$(sha256sum "$outdir/$name.insts.bin" | cut -d' ' -f1)"
    read -r -a shape <<<"$dims"
    {
        echo
        echo "[[kernel]]"
        echo "kind = \"$kind\""
        [[ "$kind" == gemm ]] && echo "epilogue = \"$epilogue\"" && echo "output = \"$output\""
        echo "xclbin = \"$xclbin.xclbin\""
        echo "kernel_name = \"MLIR_AIE\""
        echo "instructions = \"$name.insts.bin\""
        echo "shape = [$(IFS=,; echo "${shape[*]}" | sed 's/,/, /g')]"
        [[ "$kind" == gemm ]] && echo "tile = [${tile[0]}, ${tile[1]}, ${tile[2]}]"
        echo "sha256 = { xclbin = \"$xclbin_sum\", instructions = \"$insts_sum\" }"
    } >>"$manifest"
done <<<"$kernels"

mv "$manifest" "$outdir/manifest.toml"
echo "wrote $outdir/manifest.toml ($(grep -c '^\[\[kernel\]\]' "$outdir/manifest.toml") kernels in ${#array_of[@]} xclbins)"
echo "check them against the emulator with:"
echo "  AMANUENSIS_KERNELS=$outdir amanuensis doctor"
echo "  AMANUENSIS_KERNELS=$outdir amanuensis compare audio.wav --model $catalog_name --backends emu,npu"
