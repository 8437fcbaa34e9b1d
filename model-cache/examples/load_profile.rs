//! Where load time goes: `cargo run --release -p model-cache --example load_profile DIR`.

use std::time::Instant;

fn main() {
    let dir = std::path::PathBuf::from(std::env::args().nth(1).expect("checkpoint dir"));
    for _ in 0..3 {
        let t = Instant::now();
        let tok = model_cache::tokenizer::TextTokenizer::from_dir(&dir, 512).unwrap();
        let tokenizer_ms = t.elapsed().as_secs_f64() * 1e3;
        let t = Instant::now();
        let bytes = std::fs::read(dir.join("model.safetensors")).unwrap();
        let read_ms = t.elapsed().as_secs_f64() * 1e3;
        let t = Instant::now();
        let checkpoint = model_cache::Checkpoint::open(&dir).unwrap();
        let classifier = model_cache::Classifier::load(&checkpoint, &Default::default()).unwrap();
        let load_ms = t.elapsed().as_secs_f64() * 1e3;
        println!(
            "tokenizer {tokenizer_ms:.1} ms, read weights {read_ms:.1} ms ({} MB), Classifier::load {load_ms:.1} ms (vocab {})",
            bytes.len() / 1_000_000,
            tok.vocab_size()
        );
        drop(classifier);
    }
}
