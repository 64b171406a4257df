# Sourced by the llama.cpp comparison scripts: the cmake flags for the instruction sets this CPU
# lists. A build with AVX-512 dies with SIGILL on an AVX2-only machine, so each AVX-512 extension
# is enabled only where /proc/cpuinfo has it; AMX stays off everywhere (it faults on these machines
# although the flags list it). Sets ISA (avx512 | avx2, part of the build directory's name) and
# ISA_FLAGS.
has_flag() { grep -m1 '^flags' /proc/cpuinfo | grep -qw "$1"; }
ISA=avx2
ISA_FLAGS=(-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON
  -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF)
if has_flag avx512f && has_flag avx512bw && has_flag avx512vl; then
  ISA=avx512
  ISA_FLAGS+=(-DGGML_AVX512=ON)
  has_flag avx512_vnni && ISA_FLAGS+=(-DGGML_AVX512_VNNI=ON)
  has_flag avx512_bf16 && ISA_FLAGS+=(-DGGML_AVX512_BF16=ON)
  has_flag avx512vbmi && ISA_FLAGS+=(-DGGML_AVX512_VBMI=ON)
else
  ISA_FLAGS+=(-DGGML_AVX512=OFF)
fi
