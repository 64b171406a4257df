#!/usr/bin/env bash
# Side-by-side speed of llama.cpp (`llama-bench`) and `nanbeige bench` on the same GGUF files, same
# machine, same thread count; prints one markdown table (prefill pp512 and decode tg128, tokens/s).
#
# llama.cpp is built from the source that ships inside the PyPI sdist `llama-cpp-python` (pinned
# below) into ~/.cache/nanbeige/llama.cpp — never inside this repository — for the instruction sets
# this CPU lists (AVX2 always; each AVX-512 extension only where /proc/cpuinfo has it) and with AMX
# off (AMX faults on these machines although the CPU flags list it).
#
# Usage: scripts/bench/compare-llamacpp.sh [--build-only] [-t THREADS] [-p N] [-n N] [FILE.gguf ...]
# With no files: the three Nanbeige4.1-3B-shape synthetic GGUFs (Q4_0, Q8_0, Q4_K_M; made with
# `nanbeige synth` into ~/.cache/nanbeige/synth if missing) and the two real test models.
# Runs disturbed by other work on the machine are repeated (ATTEMPTS, default 3; see below).
# ROUNDS (default 1) repeats each file's pair of runs, llama.cpp then nanbeige, that many times:
# the table then shows each engine's median and the median of the per-round ratios, and every
# round's ratios are printed under it, so one slow minute of a shared host cannot decide a ratio.
# Needs: python3 (pip), a C/C++ compiler, make; cmake is pip-installed into a private venv.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
CACHE="${NANBEIGE_CACHE:-$HOME/.cache/nanbeige}"
LCPP="$CACHE/llama.cpp"
LCPP_VERSION="${LLAMA_CPP_PYTHON_VERSION:-0.3.36}"
source "$ROOT/scripts/bench/llamacpp_isa.sh"
BUILD="$LCPP/build-$LCPP_VERSION-$ISA"
THREADS=2
PROMPT=512
GEN=128
BUILD_ONLY=0
FILES=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --build-only) BUILD_ONLY=1 ;;
    -t|--threads) THREADS="$2"; shift ;;
    -p) PROMPT="$2"; shift ;;
    -n) GEN="$2"; shift ;;
    -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
    -*) echo "error: unknown option $1" >&2; exit 1 ;;
    *) FILES+=("$1") ;;
  esac
  shift
done

build_llamacpp() {
  if [[ -x "$BUILD/bin/llama-bench" ]]; then return; fi
  mkdir -p "$LCPP"
  # A private venv keeps cmake off the system; binary wheels are fine for the build tools, only
  # llama-cpp-python itself must be the source package.
  if [[ ! -x "$LCPP/venv/bin/cmake" ]]; then
    python3 -m venv "$LCPP/venv"
    "$LCPP/venv/bin/pip" install -q cmake
  fi
  local sdist="$LCPP/dl/llama_cpp_python-$LCPP_VERSION.tar.gz"
  if [[ ! -f "$sdist" ]]; then
    "$LCPP/venv/bin/pip" download -q --no-deps --no-binary llama-cpp-python \
      "llama-cpp-python==$LCPP_VERSION" -d "$LCPP/dl"
  fi
  local src="$LCPP/llama_cpp_python-$LCPP_VERSION/vendor/llama.cpp"
  if [[ ! -d "$src" ]]; then tar -xzf "$sdist" -C "$LCPP"; fi
  "$LCPP/venv/bin/cmake" -S "$src" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release \
    "${ISA_FLAGS[@]}" \
    -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF \
    -DBUILD_SHARED_LIBS=OFF >"$LCPP/cmake-configure.log" 2>&1
  "$LCPP/venv/bin/cmake" --build "$BUILD" --target llama-bench -j "$(nproc)" >"$LCPP/cmake-build.log" 2>&1 || {
    tail -n 30 "$LCPP/cmake-build.log" >&2
    echo "error: building llama.cpp failed (log: $LCPP/cmake-build.log)" >&2
    exit 1
  }
}

build_llamacpp
LLAMA_BENCH="$BUILD/bin/llama-bench"
echo "llama-bench: $LLAMA_BENCH (llama-cpp-python $LCPP_VERSION)" >&2
[[ $BUILD_ONLY == 1 ]] && exit 0

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$CACHE/target}"
(cd "$ROOT" && cargo build --release -q -p nanbeige)
# A private copy: the shared target directory may be rebuilt by other work while this runs.
mkdir -p "$CACHE/bin"
NANBEIGE="$CACHE/bin/nanbeige-compare"
cp "$CARGO_TARGET_DIR/release/nanbeige" "$NANBEIGE"

if [[ ${#FILES[@]} -eq 0 ]]; then
  SYNTH="$CACHE/synth"
  mkdir -p "$SYNTH"
  for q in Q4_0 Q8_0 Q4_K_M; do
    f="$SYNTH/nanbeige-3b-$q.gguf"
    if [[ ! -f "$f" ]]; then
      "$NANBEIGE" synth --config nanbeige-3b --format gguf --quant "$q" --out "$f" >&2
    fi
    FILES+=("$f")
  done
  "$NANBEIGE" pull all >&2
  FILES+=("$CACHE/models/SmolLM2-135M-Instruct.Q4_1.gguf" "$CACHE/models/Qwen2.5-Coder-0.5B-Instruct.gguf")
fi

# The measuring loop. This machine may be shared: each run's interference is measured as the CPU
# time the whole machine spent (/proc/stat) minus the time the benchmark itself used, over the
# run's wall time and CPU count. A run with more than 10% interference is repeated (up to
# ATTEMPTS times, after waiting for the CPUs to go quiet) and the least-disturbed run is kept; the
# table shows the interference of the runs it reports.
export LLAMA_BENCH NANBEIGE THREADS PROMPT GEN
ROUNDS="${ROUNDS:-1}" ATTEMPTS="${ATTEMPTS:-3}" python3 - "${FILES[@]}" <<'PY'
import json, os, resource, statistics, subprocess, sys, time

LLAMA_BENCH, NANBEIGE = os.environ["LLAMA_BENCH"], os.environ["NANBEIGE"]
THREADS, PROMPT, GEN = os.environ["THREADS"], int(os.environ["PROMPT"]), int(os.environ["GEN"])
ATTEMPTS, NCPU, HZ = int(os.environ["ATTEMPTS"]), os.cpu_count(), os.sysconf("SC_CLK_TCK")
ROUNDS = max(1, int(os.environ["ROUNDS"]))

def busy_seconds():
    f = [int(x) for x in open("/proc/stat").readline().split()[1:]]
    return (f[0] + f[1] + f[2] + f[5] + f[6] + f[7]) / HZ  # user nice system irq softirq steal

def wait_quiet(limit_s=600):
    t_end = time.time() + limit_s
    while time.time() < t_end:
        b0, t0 = busy_seconds(), time.time()
        time.sleep(2)
        share = (busy_seconds() - b0) / ((time.time() - t0) * NCPU)
        if share < 0.15:
            return
        print(f"waiting: the CPUs are {share:.0%} busy with other work", file=sys.stderr)
        time.sleep(8)
    print("warning: the machine stayed busy", file=sys.stderr)

def measured(cmd):
    wait_quiet()
    r0, b0, t0 = resource.getrusage(resource.RUSAGE_CHILDREN), busy_seconds(), time.time()
    out = subprocess.run(cmd, capture_output=True, text=True)
    r1, b1, t1 = resource.getrusage(resource.RUSAGE_CHILDREN), busy_seconds(), time.time()
    if out.returncode != 0:
        sys.exit(f"error: {' '.join(cmd)} failed:\n{out.stderr[-2000:]}")
    own = (r1.ru_utime + r1.ru_stime) - (r0.ru_utime + r0.ru_stime)
    return out.stdout, max(0.0, (b1 - b0) - own) / ((t1 - t0) * NCPU)

def best_of(cmd, parse):
    runs = []
    for attempt in range(ATTEMPTS):
        out, interference = measured(cmd)
        runs.append((interference, parse(out)))
        print(f"  {os.path.basename(cmd[0])} attempt {attempt + 1}: interference {interference:.0%}", file=sys.stderr)
        if interference <= 0.10:
            break
    return min(runs, key=lambda r: r[0])

def llama_cpp(out):
    rows = json.loads(out)  # one object per test: n_prompt > 0 is prefill (pp), n_gen > 0 decode (tg)
    pp = [r["avg_ts"] for r in rows if r["n_prompt"] > 0 and r["n_gen"] == 0]
    tg = [r["avg_ts"] for r in rows if r["n_gen"] > 0 and r["n_prompt"] == 0]
    return pp[0], tg[0]

def nanbeige(out):
    r = json.loads(out)
    return r["prefill"]["tokens_per_sec"], r["decode"]["tokens_per_sec"], r["model"]["quant"], r["decode"]["fraction_of_ceiling"]

print(f"| model | weights | llama.cpp pp{PROMPT} | llama.cpp tg{GEN} | nanbeige pp{PROMPT} | nanbeige tg{GEN} "
      f"| pp ratio | tg ratio | nanbeige tg / ceiling | interference (llama.cpp / nanbeige) |")
print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
for f in sys.argv[1:]:
    if not os.path.isfile(f):
        sys.exit(f"error: {f}: no such file")
    print(f"{os.path.basename(f)}:", file=sys.stderr)
    rounds = []
    for r in range(ROUNDS):
        li, (lpp, ltg) = best_of([LLAMA_BENCH, "-m", f, "-p", str(PROMPT), "-n", str(GEN), "-t", THREADS, "-o", "json"], llama_cpp)
        ni, (npp, ntg, quant, frac) = best_of([NANBEIGE, "bench", "--model", f, "-p", str(PROMPT), "-n", str(GEN),
                                               "--threads", THREADS, "--json"], nanbeige)
        rounds.append((li, lpp, ltg, ni, npp, ntg, frac))
        if ROUNDS > 1:
            print(f"  round {r + 1}: pp {npp / lpp:.2f}x, tg {ntg / ltg:.2f}x", file=sys.stderr)
    med = lambda i: statistics.median(x[i] for x in rounds)
    li, lpp, ltg, ni, npp, ntg, frac = (med(i) for i in range(7))
    pp_ratio = statistics.median(x[4] / x[1] for x in rounds)
    tg_ratio = statistics.median(x[5] / x[2] for x in rounds)
    print(f"| {os.path.basename(f)} | {quant} | {lpp:.1f} | {ltg:.2f} | {npp:.1f} | {ntg:.2f} | {pp_ratio:.2f}x "
          f"| {tg_ratio:.2f}x | {frac:.0%} | {li:.0%} / {ni:.0%} |", flush=True)
    if ROUNDS > 1:
        # Each round's decode and its share of that run's ceiling: the ceiling moves with the
        # bandwidth the machine gave the run, so the share can move while tokens/s does not.
        each = ", ".join(f"{x[4] / x[1]:.2f}/{x[5] / x[2]:.2f} ({x[5]:.2f} tok/s, {x[6]:.0%})" for x in rounds)
        print(f"|  | rounds (pp/tg ratio (nanbeige tg, of ceiling)): {each} | | | | | | | | |", flush=True)
PY
