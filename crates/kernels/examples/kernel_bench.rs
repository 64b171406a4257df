//! Kernel throughput on the Nanbeige4.1-3B matrix shapes, random weights: GEMV (decode, m = 1)
//! in GB/s of weights streamed (cycling through copies totalling at least 1 GiB), GEMM (prefill)
//! in GMAC/s, also per CPU-second so that results on a shared machine stay comparable.
//!
//!     cargo run --release -p nanbeige-kernels --example kernel_bench -- \
//!         [FORMAT...] [--m 1,512] [--isa scalar|avx2|avx512] [--shape N,K] [--copies C]
//!     cargo run --release -p nanbeige-kernels --example kernel_bench -- --decode-sim [FORMAT|Q4_K_M]
//!
//! `--copies 1 --shape 512,2560` keeps the weights in cache: the kernel's compute speed alone.
//! `--decode-sim` times the matmuls of one whole decode step (32 layers + a Q6_K head) back to
//! back, next to the machine's read bandwidth, with one and with two weight streams per core.

use half::bf16;
use nanbeige_kernels::{matmul_float_isa, matmul_isa, matmul_streams_isa, supported_isas, Format, FloatWeights, Isa, PackedMatrix};
use std::time::Instant;

fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut s = seed | 1;
    (0..len)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s as u8
        })
        .collect()
}

/// Random blocks with small finite f16 scales.
fn blocks(f: Format, n: usize, k: usize) -> Vec<u8> {
    let mut v = random_bytes(n * k / f.block_len() * f.gguf_block_bytes(), 7);
    let bb = f.gguf_block_bytes();
    let fields: &[usize] = match f {
        Format::Q6K => &[208],
        Format::Q4_1 | Format::Q5_1 | Format::Q4K | Format::Q5K => &[0, 2],
        _ => &[0],
    };
    for b in 0..v.len() / bb {
        for &at in fields {
            v[b * bb + at..b * bb + at + 2].copy_from_slice(&half::f16::from_f32(0.01).to_bits().to_le_bytes());
        }
    }
    v
}

/// Streaming read of a buffer much larger than the caches, split over the pool: the ceiling a
/// memory-bound GEMV can reach right now on this machine.
fn read_bandwidth() -> f64 {
    use rayon::prelude::*;
    // Memory of the kind the packed weights get (2 MiB pages where allowed).
    let mut mem = nanbeige_kernels::buffer::Buffer::zeroed(256 << 20);
    mem.as_mut_slice().fill(1);
    // SAFETY: 64-byte aligned, 256 MiB long.
    let buf: &[u64] = unsafe { std::slice::from_raw_parts(mem.as_slice().as_ptr() as *const u64, 32 << 20) };
    let secs = time(
        || {
            let s: u64 = buf.par_chunks(1 << 16).map(|c| c.iter().fold(0u64, |a, &b| a ^ b)).sum();
            std::hint::black_box(s);
        },
        1.0,
    );
    (buf.len() * 8) as f64 / secs / 1e9
}

/// One decode step of the Nanbeige4.1-3B shape, matmuls only, back to back, grouped into calls
/// as the engine makes them (q/k/v together when they share a format, o, gate/up, down): 32
/// layers in `f`, or as llama.cpp's Q4_K_M mixes them (`mixed`: v and down in Q6_K in 16 of the
/// layers, the rest Q4_K), then a Q6_K LM head, as weights stream from memory.
fn simulate_decode(f: Format, mixed: bool, isa: Isa) {
    let (h, kv, ff) = (2560, 512, 10496);
    let mat = |f: Format, n: usize, k: usize| PackedMatrix::from_gguf(f, n, k, &blocks(f, n, k)).unwrap();
    // Each call: its matrices (one format, one input).
    let mut calls: Vec<Vec<PackedMatrix>> = vec![];
    for l in 0..32 {
        // llama.cpp's `use_more_bits`: the first and last eighth of the layers and every third between.
        let more = mixed && (!(4..28).contains(&l) || (l - 4) % 3 == 2);
        let big = if more { Format::Q6K } else { f };
        let (q, k, v) = (mat(f, h, h), mat(f, kv, h), mat(big, kv, h));
        if v.format() == q.format() {
            calls.push(vec![q, k, v]);
        } else {
            calls.extend([vec![q], vec![k], vec![v]]);
        }
        calls.push(vec![mat(f, h, h)]);
        calls.push(vec![mat(f, ff, h), mat(f, ff, h)]);
        calls.push(vec![mat(big, h, ff)]);
    }
    calls.push(vec![mat(Format::Q6K, 166144, h)]);
    let bytes: usize = calls.iter().flatten().map(|m| m.size_in_bytes()).sum();
    let x: Vec<f32> = random_bytes(ff, 3).iter().map(|&b| b as f32 / 128.0 - 1.0).collect();
    let mut ys: Vec<Vec<f32>> = vec![vec![0f32; 166144]; 3];
    let name = if mixed { "Q4_K_M" } else { f.name() };
    for round in 0..4 {
        println!("read bandwidth (2 threads, 256 MiB): {:.1} GB/s", read_bandwidth());
        for streams in if round % 2 == 0 { [1, 2] } else { [2, 1] } {
            let secs = time(
                || {
                    for ws in &calls {
                        let refs: Vec<&PackedMatrix> = ws.iter().collect();
                        let mut outs: Vec<&mut [f32]> = ys.iter_mut().zip(ws).map(|(y, w)| &mut y[..w.n()]).collect();
                        matmul_streams_isa(isa, streams, &refs, &x[..ws[0].k()], 1, &mut outs);
                    }
                },
                3.0,
            );
            let cpu = *CPU_PER_ITER.lock().unwrap();
            println!(
                "round {round}, {streams} stream(s): decode step ({} layers + Q6_K head, {:.2} GB): {:.1} ms = {:.2} tok/s, {:.1} GB/s ({:.0}% of {} cores busy)",
                name,
                bytes as f64 / 1e9,
                secs * 1e3,
                1.0 / secs,
                bytes as f64 / secs / 1e9,
                100.0 * cpu / secs / rayon::current_num_threads() as f64,
                rayon::current_num_threads()
            );
        }
    }
}

/// CPU seconds (user + system) this process has used: on a shared machine, throughput per CPU
/// second says how fast the kernel is when it has the cores, whatever else is running.
fn cpu_secs() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or("").split_whitespace().collect();
    let ticks: f64 = fields.get(11..13).map(|f| f.iter().map(|v| v.parse::<f64>().unwrap_or(0.0)).sum()).unwrap_or(0.0);
    ticks / 100.0
}

static CPU_PER_ITER: std::sync::Mutex<f64> = std::sync::Mutex::new(0.0);

/// Wall seconds per call; also records CPU seconds per call in CPU_PER_ITER.
fn time(mut f: impl FnMut(), min_secs: f64) -> f64 {
    f();
    let (t, c) = (Instant::now(), cpu_secs());
    let mut iters = 0;
    while t.elapsed().as_secs_f64() < min_secs {
        f();
        iters += 1;
    }
    *CPU_PER_ITER.lock().unwrap() = (cpu_secs() - c) / iters as f64;
    t.elapsed().as_secs_f64() / iters as f64
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut formats = vec![];
    let mut ms = vec![1usize, 512];
    let mut isas = supported_isas();
    let mut shapes_arg: Option<(usize, usize)> = None;
    let mut decode_sim = false;
    let mut copies_arg: Option<usize> = None;
    let mut i = 0;
    while i < args.len() {
        match args[i].as_str() {
            "--m" => {
                ms = args[i + 1].split(',').map(|s| s.parse().unwrap()).collect();
                i += 1;
            }
            "--shape" => {
                let v: Vec<usize> = args[i + 1].split(',').map(|s| s.parse().unwrap()).collect();
                shapes_arg = Some((v[0], v[1]));
                i += 1;
            }
            "--decode-sim" => decode_sim = true,
            "--copies" => {
                copies_arg = Some(args[i + 1].parse().unwrap());
                i += 1;
            }
            "--isa" => {
                isas = vec![Isa::parse(&args[i + 1]).expect("isa")];
                i += 1;
            }
            f => formats.push(f.to_string()),
        }
        i += 1;
    }
    if decode_sim {
        let name = formats.first().map(String::as_str).unwrap_or("Q4_0");
        let mixed = name == "Q4_K_M";
        let f = if mixed { Format::Q4K } else { *Format::ALL.iter().find(|f| f.name() == name).expect("format") };
        simulate_decode(f, mixed, *isas.last().unwrap());
        return;
    }
    let all = Format::ALL.iter().map(|f| f.name().to_string()).chain(["BF16".to_string()]);
    let formats: Vec<String> = if formats.is_empty() { all.collect() } else { formats };
    let mut shapes = vec![(2560usize, 2560usize, "q/o 2560x2560"), (10496, 2560, "gate/up 10496x2560"), (2560, 10496, "down 2560x10496")];
    if let Some((n, k)) = shapes_arg {
        shapes = vec![(n, k, "custom")];
    }
    println!("threads: {}", rayon::current_num_threads());
    println!("read bandwidth (2 threads, 256 MiB): {:.1} GB/s", read_bandwidth());
    for name in &formats {
        for &(n, k, label) in &shapes {
            for &m in &ms {
                for &isa in &isas {
                    if isa == Isa::Scalar && m > 1 {
                        continue;
                    }
                    let x: Vec<f32> = random_bytes(m * k, 3).iter().map(|&b| b as f32 / 128.0 - 1.0).collect();
                    let mut y = vec![0f32; m * n];
                    let min = if m == 1 { 0.5 } else { 1.5 };
                    // GEMV cycles through copies totalling at least 1 GiB, more than any L3 cache
                    // (a VM here reports 480 MiB), so weights come from memory as in real decoding.
                    let bytes = match Format::ALL.iter().find(|f| f.name() == *name) {
                        Some(f) => n * k / f.block_len() * f.gguf_block_bytes(),
                        None => n * k * 2,
                    };
                    let copies = copies_arg.unwrap_or(if m == 1 { (1usize << 30).div_ceil(bytes).max(8) } else { 1 });
                    let mut next = 0;
                    let (secs, bytes) = if name == "BF16" {
                        let w: Vec<bf16> = random_bytes(n * k, 5).iter().map(|&b| bf16::from_f32(b as f32 / 256.0)).collect();
                        let ws: Vec<Vec<bf16>> = (0..copies).map(|_| w.clone()).collect();
                        let s = time(
                            || {
                                next = (next + 1) % copies;
                                matmul_float_isa(isa, FloatWeights::Bf16(&ws[next]), n, k, &x, m, &mut y)
                            },
                            min,
                        );
                        (s, n * k * 2)
                    } else {
                        let f = *Format::ALL.iter().find(|f| f.name() == name).expect("format");
                        let b = blocks(f, n, k);
                        let ws: Vec<PackedMatrix> = (0..copies).map(|_| PackedMatrix::from_gguf(f, n, k, &b).unwrap()).collect();
                        let s = time(
                            || {
                                next = (next + 1) % copies;
                                matmul_isa(isa, &ws[next], &x, m, &mut y)
                            },
                            min,
                        );
                        (s, ws[0].size_in_bytes())
                    };
                    let gmacs = (m * n * k) as f64 / secs / 1e9;
                    let cpu = *CPU_PER_ITER.lock().unwrap();
                    println!(
                        "{name:5} {label:20} m={m:4} {:7} {:9.3} ms  {:6.1} GB/s  {:7.1} GMAC/s  ({:5.0}% of {} cores busy, {:6.1} GMAC per CPU-second)",
                        isa.name(),
                        secs * 1e3,
                        bytes as f64 / secs / 1e9,
                        gmacs,
                        100.0 * cpu / secs / rayon::current_num_threads() as f64,
                        rayon::current_num_threads(),
                        (m * n * k) as f64 / cpu / 1e9,
                    );
                }
            }
        }
    }
}
