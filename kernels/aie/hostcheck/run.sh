#!/usr/bin/env bash
# What can be checked of kernels/aie without the mlir-aie toolchain or a device:
#
# 1. the kernels' logic: gemm.cc, softmax.cc, gelu.cc and common/vmath.h compiled with the
#    host's C++20 compiler over model/aie_api (a model of the AIE API's semantics, not the AIE
#    API), for both mmul shapes, and held bit for bit against the Rust emulator
#    (amanuensis-kernels) by check_kernels.py, the GEMM through gemm.py's whole dataflow;
# 2. the designs' Python: every dispatch shape of every Whisper size (tiny to large-v3), for
#    npu and npu2, run through iron_model (a recording stand-in for IRON) by build.sh with a
#    stand-in aiecc and clang++ (fake_toolchain), which checks object counts, buffer bounds
#    and DMA channels;
# 3. build.sh's manifest.toml, read and checked by the project's own parser
#    (kernels/src/manifest.rs), with one xclbin per GEMM kind: every shape of a kind has the
#    same array configuration (the shape is in the runtime parameters and the instruction
#    stream).
#
# The shapes are the host's, from `amanuensis inspect --kernel-shapes` (built here with cargo
# in the repository's workspace, or $AMANUENSIS if set).
#
# It proves nothing about the real AIE API, aiecc, the generated xclbins or the hardware.
# Needs python3, a C++20 compiler (CXX, default g++) and cargo. Writes only to a temporary
# directory (and the workspace's target directory, building amanuensis).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
aie="$(dirname "$here")"
kernels_crate="$(dirname "$aie")"
cxx="${CXX:-g++}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

echo "== the emulator's side (amanuensis-kernels)"
mkdir -p "$work/emuref/src"
cp "$here/emuref.rs" "$work/emuref/src/main.rs"
cat >"$work/emuref/Cargo.toml" <<EOF
[package]
name = "emuref"
version = "0.0.0"
edition = "2024"
publish = false

[dependencies]
amanuensis-kernels = { path = "$kernels_crate" }

[workspace]
EOF
cargo build --quiet --release ${CARGO_OFFLINE:+--offline} \
    --manifest-path "$work/emuref/Cargo.toml" --target-dir "$work/target"
emuref="$work/target/release/emuref"

echo "== the host's shapes (amanuensis inspect --kernel-shapes)"
if [[ -z "${AMANUENSIS:-}" ]]; then
    workspace="$(dirname "$kernels_crate")"
    cargo build --quiet --release ${CARGO_OFFLINE:+--offline} \
        --manifest-path "$workspace/Cargo.toml" --bin amanuensis
    target_dir="$(cargo metadata --format-version 1 --no-deps --manifest-path "$workspace/Cargo.toml" |
        python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')"
    AMANUENSIS="$target_dir/release/amanuensis"
fi
export AMANUENSIS

# The two families' checks run side by side (each is one thread: Python and the harness), and
# so do their designs' builds; each writes its own log, printed in order once both are done.
check_kernels() {
    local dev="$1" mmul columns
    case "$dev" in
        npu) mmul=(4 8 4) columns=4 ;;
        npu2) mmul=(4 8 8) columns=8 ;;
    esac
    echo "== kernels over the API model, mmul ${mmul[0]}x${mmul[1]}x${mmul[2]}"
    local flags=(-std=c++20 -O2 -ffp-contract=off -Wall -Wextra
        -DDIM_M=64 -DDIM_K=64 -DDIM_N=32 -DMMUL_R="${mmul[0]}" -DMMUL_S="${mmul[1]}" -DMMUL_T="${mmul[2]}"
        -DGEMM_COLUMNS="$columns" -I "$here/model" -I "$aie/common")
    local objects=() source object
    for source in gemm/gemm.cc softmax/softmax.cc gelu/gelu.cc; do
        object="$work/$dev-$(basename "$source" .cc).o"
        # The GEMM with its bfloat16-output entry points too (gemm_bf16.o on the device).
        "$cxx" "${flags[@]}" -DGEMM_OUTPUT_BF16 -c "$aie/$source" -o "$object"
        objects+=("$object")
    done
    # gemm_bf16.o as build.sh makes it, without the bias code: it must compile alone.
    "$cxx" "${flags[@]}" -DGEMM_OUTPUT_BF16 -DGEMM_BIAS=0 -c "$aie/gemm/gemm.cc" \
        -o "$work/$dev-gemm_bf16.o"
    "$cxx" "${flags[@]}" "$here/harness.cc" "${objects[@]}" -o "$work/harness-$dev"
    mkdir -p "$work/data-$dev"
    python3 -B "$here/check_kernels.py" "$work/harness-$dev" "$emuref" "$AMANUENSIS" \
        "$work/data-$dev" "$dev"
}

build_designs() {
    local target="$1" status=0 model out unchecked gemm_kinds gemm_xclbins log aiecc
    log="$work/build-$target.log"
    for model in tiny base small medium large-v2 large-v3; do
        out="$work/out-$target-$model"
        if PATH="$work/tools/bin:$PATH" PYTHONPATH="$here/iron_model" PYTHONDONTWRITEBYTECODE=1 \
            PEANO_INSTALL_DIR="$work/tools/peano" MLIR_AIE_INSTALL_DIR="$work/tools/mlir" \
            "$aie/build.sh" "$model" "$out" --target "$target" >"$log" 2>&1; then
            unchecked="$(grep -L "IRON model" "$out"/.build/*/aie.mlir || true)"
            if [[ -n "$unchecked" ]]; then
                echo "$model ($target): designs that did not run through the IRON model: $unchecked"
                status=1
            fi
            "$emuref" manifest "$out/manifest.toml"
            # One xclbin per GEMM kind (epilogue and output type), shared by its shapes.
            gemm_kinds="$(grep -A2 '^kind = "gemm"' "$out/manifest.toml" | grep -E '^(epilogue|output)' |
                paste - - | sort -u | wc -l)"
            gemm_xclbins="$(grep -A4 '^kind = "gemm"' "$out/manifest.toml" | grep '^xclbin' | sort -u | wc -l)"
            if [[ "$gemm_kinds" -ne "$gemm_xclbins" || "$gemm_xclbins" -gt 4 ]]; then
                echo "$model ($target): $gemm_xclbins GEMM xclbins for $gemm_kinds GEMM kinds"
                status=1
            else
                echo "$model ($target): $(grep -c '^\[\[kernel\]\]' "$out/manifest.toml") kernels," \
                    "$gemm_xclbins GEMM xclbins for its $gemm_kinds GEMM kinds," \
                    "$(grep '^xclbin' "$out/manifest.toml" | sort -u | wc -l) xclbins in all"
            fi
        else
            echo "$model ($target): build.sh failed:"
            cat "$log"
            for aiecc in "$out"/.build/*/aiecc.log; do
                [[ -s "$aiecc" ]] && cat "$aiecc"
            done
            status=1
        fi
    done
    return $status
}

# Runs "$@" in the background into a log of its own; `finish NAME` prints the log and gives
# its status.
declare -A pids
start() {
    local name="$1"
    shift
    "$@" >"$work/$name.out" 2>&1 &
    pids[$name]=$!
}
finish() {
    local rc=0
    wait "${pids[$1]}" || rc=$?
    cat "$work/$1.out"
    return $rc
}

status=0
start kernels-npu check_kernels npu
start kernels-npu2 check_kernels npu2
finish kernels-npu || status=1
finish kernels-npu2 || status=1

echo "== designs through the IRON model, build.sh with stand-in tools, manifests parsed"
mkdir -p "$work/tools/bin" "$work/tools/peano/bin" "$work/tools/mlir/include/aie_api"
cp "$here/fake_toolchain/aiecc.py" "$work/tools/bin/aiecc.py"
cp "$here/fake_toolchain/clang++" "$work/tools/peano/bin/clang++"
chmod +x "$work/tools/bin/aiecc.py" "$work/tools/peano/bin/clang++"
touch "$work/tools/mlir/include/aie_api/aie.hpp"
start designs-npu build_designs npu
start designs-npu2 build_designs npu2
finish designs-npu || status=1
finish designs-npu2 || status=1

[[ $status -eq 0 ]] && echo "hostcheck: all checks passed" || echo "hostcheck: FAILURES"
exit $status
