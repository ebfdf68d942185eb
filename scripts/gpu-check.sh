#!/usr/bin/env bash
# Everything lsc measures on an NVIDIA GPU, in one run (GPU time is scarce):
# builds with --features cuda, runs the GPU tests (every model's inference,
# training step, decoding, bf16 and resume on the real device, next to the
# emulated one) and `lsc bench --backend cuda --json`. Output goes to $OUT
# (default ./gpu-check-out): steps.log, machine.txt, build.log, tests.log, bench.json.
#
#   bash scripts/gpu-check.sh              # on a machine with a GPU (target: < 8 min on one H200)
#   bash scripts/gpu-check.sh --emulated   # the same steps on the CPU (cuda-emu), to check the script
#
# It needs LLVM 22 (installed from apt if absent) and the crates (from crates.io, or a warm
# cargo cache): on a GPU machine without network, build there beforehand.
set -euo pipefail
cd "$(dirname "$0")/.."
backend=cuda
profile=(--release)
bin=target/release/lsc
if [[ "${1:-}" == "--emulated" ]]; then
  backend=cuda-emu
  profile=()
  bin=target/debug/lsc
fi
OUT=${OUT:-$PWD/gpu-check-out}
mkdir -p "$OUT"
export CARGO_TERM_COLOR=never
start=$(date +%s)
stamp() { echo "[$(( $(date +%s) - start ))s] $*" | tee -a "$OUT/steps.log"; }

stamp "machine"
{ nvidia-smi || echo "nvidia-smi: not found"; nproc; } > "$OUT/machine.txt" 2>&1

stamp "LLVM 22 (PTX comes from its NVPTX back end)"
if [[ ! -x /usr/lib/llvm-22/bin/llvm-config ]]; then bash scripts/install-llvm.sh > "$OUT/install.log" 2>&1; fi
export LLVM_SYS_221_PREFIX=/usr/lib/llvm-22

stamp "build (--features cuda)"
cargo build "${profile[@]}" --features cuda > "$OUT/build.log" 2>&1

stamp "tests"
# The GPU tests, and the model and decoding suites, which include cuda among the native backends when it loads.
set +e
cargo test "${profile[@]}" --features cuda --test gpu --test decode --test models -- --nocapture > "$OUT/tests.log" 2>&1
tests_rc=$?
set -e
grep -E "^test result:|skipped|FAILED|panicked" "$OUT/tests.log" | tee -a "$OUT/steps.log" || true

stamp "bench (--backend $backend)"
"$bin" bench --backend "$backend" --steps 3 --json > "$OUT/bench.json" 2> "$OUT/bench.err"

stamp "done (tests rc $tests_rc)"
exit "$tests_rc"
