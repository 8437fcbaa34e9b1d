//! The candle forward pass against an independent numpy implementation of
//! DistilBertForSequenceClassification, on the same checkpoint and token ids.

mod common;

use model_cache::fixture::{FixtureDtype, FixtureSize};
use model_cache::{Checkpoint, Classifier, ClassifierOptions, Precision};
use serde_json::json;

fn texts() -> Vec<String> {
    let mut texts: Vec<String> = [
        "I loved this movie",
        "terrible, awful film",
        "The plot was dull and boring.",
        "ok",
        "A wonderful masterpiece: brilliant acting, beautiful music!!!",
        "I hate it",
        "Café crème — naïve résumé",
        "what?!?! no... way",
        "😀 great fun 🎉",
        "東京 is nice",
        "MiXeD CaSe WoRdS",
        "supercalifragilisticexpialidocious",
        "the worst thing I have seen this year, and I have seen many things",
        "not bad at all",
        "would recommend",
        "1234 5678",
        "the ending made me sad but the cast did a fine job overall",
        "x",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    // Over the 512-token limit: truncated by the tokenizer.
    texts.push("good movie but the acting was poor ".repeat(120));
    // Exactly around the limit and very different from its batch neighbours.
    texts.push("bad ".repeat(600));
    texts.push("a fine film ".repeat(40));
    texts
}

fn load(dir: &std::path::Path) -> Classifier {
    load_in(dir, Precision::F32)
}

fn load_in(dir: &std::path::Path, precision: Precision) -> Classifier {
    let checkpoint = Checkpoint::open(dir).unwrap();
    Classifier::load(
        &checkpoint,
        &ClassifierOptions {
            threads: Some(2),
            precision,
            ..ClassifierOptions::default()
        },
    )
    .unwrap()
}

fn assert_matches_numpy(dtype: FixtureDtype, precision: Precision) {
    let dir = common::fixture(FixtureSize::Tiny, dtype);
    let classifier = load_in(dir.path(), precision);
    let texts = texts();
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let encoded = classifier.tokenize(&refs).unwrap();
    assert!(encoded.iter().any(|e| e.ids.len() == 512 && e.truncated));
    assert!(encoded.iter().any(|e| e.ids.len() < 5));
    let ids: Vec<Vec<u32>> = encoded.into_iter().map(|e| e.ids).collect();

    // Rust: the whole list as one padded batch. numpy: each sequence alone.
    let ours = classifier.logits_for_ids(&ids).unwrap();
    let reference = common::run_python(
        "distilbert_numpy.py",
        &[dir.path().to_str().unwrap()],
        &json!({ "ids": ids }),
    );
    let reference: Vec<Vec<f64>> = serde_json::from_value(reference["logits"].clone()).unwrap();
    assert_eq!(ours.len(), reference.len());
    for (i, (a, b)) in ours.iter().zip(&reference).enumerate() {
        for (x, y) in a.iter().zip(b) {
            let diff = (f64::from(*x) - y).abs();
            assert!(
                diff < 1e-4,
                "text {i}: candle {a:?} vs numpy {b:?} (diff {diff:e})"
            );
        }
    }
}

#[test]
fn f32_logits_match_numpy_reference() {
    assert_matches_numpy(FixtureDtype::F32, Precision::F32);
}

#[test]
fn bf16x3_logits_match_numpy_reference_as_closely_as_f32() {
    if !model_cache::kernels::amx_available() {
        eprintln!("skipped: this CPU has no AMX-BF16, so bf16x3 requests run in f32");
        return;
    }
    assert_matches_numpy(FixtureDtype::F32, Precision::Bf16x3);
}

#[test]
fn f16_and_bf16_checkpoints_match_numpy_on_the_same_stored_weights() {
    assert_matches_numpy(FixtureDtype::F16, Precision::F32);
    assert_matches_numpy(FixtureDtype::Bf16, Precision::F32);
}

#[test]
fn a_text_scores_the_same_alone_and_inside_a_batch() {
    let dir = common::fixture(FixtureSize::Tiny, FixtureDtype::F32);
    let classifier = load(dir.path());
    let texts = texts();
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let batched = classifier.classify(&refs).unwrap();
    for (text, in_batch) in refs.iter().zip(&batched) {
        let alone = &classifier.classify(&[text]).unwrap()[0];
        assert_eq!(alone.label, in_batch.label, "{text:?}");
        assert!((alone.score - in_batch.score).abs() < 1e-5, "{text:?}");
        assert_eq!(alone.truncated, in_batch.truncated);
    }
    let labels: std::collections::HashSet<_> = batched.iter().map(|p| p.label.as_str()).collect();
    assert_eq!(
        labels.len(),
        2,
        "the fixture should give both labels across these texts"
    );
}

#[test]
fn classification_is_deterministic_across_loads_and_thread_counts() {
    let dir = common::fixture(FixtureSize::Tiny, FixtureDtype::F32);
    let texts = ["I loved this movie", "terrible, awful film"];
    let one = Classifier::load(
        &Checkpoint::open(dir.path()).unwrap(),
        &ClassifierOptions {
            threads: Some(1),
            ..ClassifierOptions::default()
        },
    )
    .unwrap()
    .classify(&texts)
    .unwrap();
    let two = load(dir.path()).classify(&texts).unwrap();
    for (a, b) in one.iter().zip(&two) {
        assert_eq!(a.label, b.label);
        assert!((a.score - b.score).abs() < 1e-6);
    }
}

#[test]
fn amx_modes_stay_near_f32_and_batching_still_changes_nothing() {
    if !model_cache::kernels::amx_available() {
        eprintln!("skipped: this CPU has no AMX-BF16, so bf16 requests run in f32");
        return;
    }
    let dir = common::fixture(FixtureSize::Tiny, FixtureDtype::F32);
    let exact = load(dir.path());
    let texts = texts();
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let want = exact.classify(&refs).unwrap();
    // bf16 keeps 8 bits of mantissa: scores move by ~1e-3 here, never by 0.05. bf16x3
    // keeps ~16: within f32's own distance from numpy.
    for (precision, bound) in [(Precision::Bf16, 0.05), (Precision::Bf16x3, 1e-4)] {
        let amx = load_in(dir.path(), precision);
        assert_eq!(amx.info().compute_dtype, precision.to_string());
        assert_eq!(amx.info().kernel, format!("amx-{precision}"));
        let got = amx.classify(&refs).unwrap();
        for ((text, g), w) in refs.iter().zip(&got).zip(&want) {
            let p_positive = |p: &model_cache::Prediction| {
                if p.label == w.label {
                    p.score
                } else {
                    1.0 - p.score
                }
            };
            assert!(
                (p_positive(g) - p_positive(w)).abs() < bound,
                "{text:?}: {precision} {g:?} vs f32 {w:?}"
            );
        }
        // Rows never mix inside a tile: a text scores the same alone and in a batch.
        for (text, in_batch) in refs.iter().zip(&got) {
            let alone = &amx.classify(&[text]).unwrap()[0];
            assert_eq!(alone.label, in_batch.label, "{text:?}");
            assert!((alone.score - in_batch.score).abs() < 1e-5, "{text:?}");
        }
    }
}
