//! Per-op timings of the DistilBERT forward pass at full size, to see where the time
//! goes before tuning: `cargo run --release -p model-cache --example op_profile [tokens]`.

use std::time::Instant;

use candle_core::{DType, Device, Tensor};

fn time(name: &str, runs: usize, mut f: impl FnMut()) -> f64 {
    f();
    let start = Instant::now();
    for _ in 0..runs {
        f();
    }
    let ms = start.elapsed().as_secs_f64() * 1e3 / runs as f64;
    println!("{name:<40} {ms:>8.3} ms");
    ms
}

fn main() -> candle_core::Result<()> {
    let tokens: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(16);
    let dev = Device::Cpu;
    let (d, h, heads) = (768usize, 3072usize, 12usize);
    let x = Tensor::randn(0f32, 1.0, (tokens, d), &dev)?;
    let xh = Tensor::randn(0f32, 1.0, (tokens, h), &dev)?;
    let w_qkv = Tensor::randn(0f32, 0.02, (3 * d, d), &dev)?;
    let w_o = Tensor::randn(0f32, 0.02, (d, d), &dev)?;
    let w_1 = Tensor::randn(0f32, 0.02, (h, d), &dev)?;
    let w_2 = Tensor::randn(0f32, 0.02, (d, h), &dev)?;
    let w_1t = w_1.t()?.contiguous()?;
    let q = Tensor::randn(0f32, 1.0, (1, heads, tokens, d / heads), &dev)?;
    let kt = Tensor::randn(0f32, 1.0, (1, heads, d / heads, tokens), &dev)?;
    let scores = Tensor::randn(0f32, 1.0, (1, heads, tokens, tokens), &dev)?;
    let ln_w = Tensor::ones(d, DType::F32, &dev)?;
    let ln_b = Tensor::zeros(d, DType::F32, &dev)?;
    println!("tokens = {tokens}, RAYON_NUM_THREADS = {:?}", std::env::var("RAYON_NUM_THREADS").ok());
    let runs = 50;
    let mut per_layer = 0.0;
    per_layer += time("qkv matmul x @ Wqkv^T (strided)", runs, || {
        x.matmul(&w_qkv.t().unwrap()).unwrap();
    });
    per_layer += time("out matmul x @ Wo^T", runs, || {
        x.matmul(&w_o.t().unwrap()).unwrap();
    });
    per_layer += time("ffn1 matmul x @ W1^T", runs, || {
        x.matmul(&w_1.t().unwrap()).unwrap();
    });
    time("ffn1 matmul x @ W1t (contiguous)", runs, || {
        x.matmul(&w_1t).unwrap();
    });
    per_layer += time("ffn2 matmul h @ W2^T", runs, || {
        xh.matmul(&w_2.t().unwrap()).unwrap();
    });
    per_layer += time("attention scores q @ k^T (12 heads)", runs, || {
        q.matmul(&kt).unwrap();
    });
    per_layer += time("softmax_last_dim", runs, || {
        candle_nn::ops::softmax_last_dim(&scores).unwrap();
    });
    per_layer += time("gelu_erf on (tokens, 3072)", runs, || {
        xh.gelu_erf().unwrap();
    });
    per_layer += 2.0 * time("layer_norm (tokens, 768)", runs, || {
        candle_nn::ops::layer_norm(&x, &ln_w, &ln_b, 1e-12).unwrap();
    });
    per_layer += 2.0 * time("residual add (tokens, 768)", runs, || {
        (&x + &x).unwrap();
    });
    time("bias broadcast_add (tokens, 3072)", runs, || {
        xh.broadcast_add(&w_1.get(0).unwrap()).unwrap();
    });
    println!("sum of listed ops per layer: {per_layer:.3} ms; x6 layers = {:.3} ms", per_layer * 6.0);
    Ok(())
}
