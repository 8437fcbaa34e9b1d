//! GFLOP/s of the packed dense kernels on DistilBERT's four layer shapes, for tuning:
//! `cargo run --release -p model-cache --example gemm_bench [rows...]`
//! (`MODEL_PRECISION=bf16` for the AMX kernels).
//!
//! Reports GFLOP/s of the fastest call, of the mean call, and per CPU-second of this
//! process: on a shared machine the first is the steadiest figure for comparing
//! kernel variants (the fastest call is the one least disturbed by other work).

use std::time::Instant;

use model_cache::kernels::{Activation, Dense, Precision};

fn cpu_seconds() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid out-pointer for the duration of the call.
    unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

fn main() -> candle_core::Result<()> {
    let rows_list: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let rows_list = if rows_list.is_empty() {
        vec![16, 128, 512]
    } else {
        rows_list
    };
    let precision: Precision = std::env::var("MODEL_PRECISION")
        .ok()
        .filter(|v| !v.is_empty())
        .map_or(Precision::F32, |v| v.parse().unwrap());
    let shapes = [
        ("qkv", 768, 2304),
        ("out", 768, 768),
        ("ffn1", 768, 3072),
        ("ffn2", 3072, 768),
    ];
    println!(
        "threads = {}, kernel = {}",
        rayon::current_num_threads(),
        model_cache::kernels::kernel_name(precision)
    );
    for rows in rows_list {
        for (name, in_dim, out_dim) in shapes {
            let dense = Dense::from_rows(
                out_dim,
                in_dim,
                |r, row| {
                    for (k, v) in row.iter_mut().enumerate() {
                        *v = (((r * 31 + k * 17) % 97) as f32 - 48.0) * 1e-3;
                    }
                },
                vec![0.1; out_dim],
                precision,
            )?;
            let x: Vec<f32> = (0..rows * in_dim)
                .map(|i| ((i % 13) as f32 - 6.0) * 0.1)
                .collect();
            let x = candle_core::Tensor::from_vec(x, (rows, in_dim), &candle_core::Device::Cpu)?;
            let act = if name == "ffn1" {
                Activation::GeluErf
            } else {
                Activation::None
            };
            dense.forward(&x, act)?;
            let flops = 2.0 * (rows * in_dim * out_dim) as f64;
            let runs = ((4e10 / flops) as usize).clamp(3, 5000);
            let (wall, cpu) = (Instant::now(), cpu_seconds());
            let mut best = f64::INFINITY;
            for _ in 0..runs {
                let call = Instant::now();
                dense.forward(&x, act)?;
                best = best.min(call.elapsed().as_secs_f64());
            }
            let wall = wall.elapsed().as_secs_f64();
            let cpu = cpu_seconds() - cpu;
            let total = flops * runs as f64 * 1e-9;
            println!(
                "rows {rows:>4} {name:<5} {in_dim:>4}->{out_dim:<4} {:>7.1} GFLOP/s best call {:>7.1} mean {:>7.1} per cpu-s  ({:.3} ms/call)",
                flops * 1e-9 / best,
                total / wall,
                total / cpu,
                wall * 1e3 / runs as f64
            );
        }
    }
    Ok(())
}
