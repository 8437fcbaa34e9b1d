//! Our tokenizer (built from vocab.txt, or loaded from the tokenizer.json a fixture
//! writes) against the Python `tokenizers` package's standard BERT WordPiece tokenizer:
//! ids, attention mask and truncation must agree exactly.

mod common;

use std::path::Path;

use model_cache::fixture::{FixtureDtype, FixtureSize, FixtureSpec};
use model_cache::tokenizer::{PaddedBatch, TextTokenizer};
use serde_json::json;

fn tricky_texts() -> Vec<String> {
    vec![
        "Café crème brûlée, naïve résumé, ÀÉÎÕÜ".into(),
        "wait...!!! what?!?! ---- ;;;".into(),
        "I 😀 love 🎉🎉 this 👍🏽 film".into(),
        "東京タワー と 北京 的 电影 很 好".into(),
        "MiXeD CaSe iPhone McDonald's".into(),
        "   \t\n  ".into(),
        "a".repeat(150),
        "antidisestablishmentarianism supercalifragilisticexpialidocious".into(),
        "don't can't won't it's".into(),
        "e-mail: someone@example.com, url: https://x.y/z?q=1".into(),
        "tab\tseparated\u{00a0}non-breaking\u{200b}zero-width".into(),
        "control\u{0007}chars\u{0000}here".into(),
        "Ünïcödé ñ ß Ø æ œ".into(),
        "1,234.56 $100 50% #1".into(),
        "great movie ".repeat(300),
        "x".into(),
    ]
}

fn compare(vocab: &Path, ours: &TextTokenizer) {
    let texts = tricky_texts();
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let encoded = ours.encode_batch(&refs).unwrap();
    let batch = PaddedBatch::new(&encoded, ours.pad_id());
    let reference = common::run_python(
        "tokenize_python.py",
        &[vocab.to_str().unwrap(), &ours.max_length().to_string()],
        &json!(texts),
    );
    let ref_ids: Vec<Vec<u32>> = serde_json::from_value(reference["ids"].clone()).unwrap();
    let ref_mask: Vec<Vec<u8>> =
        serde_json::from_value(reference["attention_mask"].clone()).unwrap();
    let ref_truncated: Vec<bool> = serde_json::from_value(reference["truncated"].clone()).unwrap();
    assert_eq!(batch.rows, ref_ids.len());
    for (row, text) in texts.iter().enumerate() {
        let ids = &batch.ids[row * batch.width..(row + 1) * batch.width];
        let mask = &batch.mask[row * batch.width..(row + 1) * batch.width];
        assert_eq!(ids, ref_ids[row].as_slice(), "ids differ for {text:?}");
        assert_eq!(mask, ref_mask[row].as_slice(), "mask differs for {text:?}");
        assert_eq!(
            encoded[row].truncated, ref_truncated[row],
            "truncation differs for {text:?}"
        );
    }
    assert!(
        encoded.iter().any(|e| e.truncated),
        "one text must exceed the limit"
    );
}

#[test]
fn tokenizer_from_vocab_txt_matches_python_tokenizers() {
    // The real bert-base-uncased vocabulary when `make test` fetched it; the generated
    // fixture vocabulary otherwise (the comparison is just as strict).
    let dir = tempfile::tempdir().unwrap();
    let vocab = match common::real_vocab() {
        Some(path) => path,
        None => {
            model_cache::fixture::write(dir.path(), &FixtureSpec::new(FixtureSize::Tiny)).unwrap();
            dir.path().join("vocab.txt")
        }
    };
    let only_vocab = tempfile::tempdir().unwrap();
    std::fs::copy(&vocab, only_vocab.path().join("vocab.txt")).unwrap();
    let ours = TextTokenizer::from_dir(only_vocab.path(), 512).unwrap();
    compare(&vocab, &ours);
}

#[test]
fn fixture_tokenizer_json_matches_python_tokenizers() {
    let dir = common::fixture(FixtureSize::Tiny, FixtureDtype::F32);
    let ours = TextTokenizer::from_dir(dir.path(), 512).unwrap();
    compare(&dir.path().join("vocab.txt"), &ours);
}

#[test]
fn truncation_limit_is_the_models_and_counts_special_tokens() {
    let dir = common::fixture(FixtureSize::Tiny, FixtureDtype::F32);
    let ours = TextTokenizer::from_dir(dir.path(), 16).unwrap();
    let encoded = ours
        .encode_batch(&["good ".repeat(40).as_str(), "good"])
        .unwrap();
    assert_eq!(encoded[0].ids.len(), 16);
    assert!(encoded[0].truncated);
    assert_eq!(encoded[1].ids.len(), 3, "[CLS] good [SEP]");
    assert!(!encoded[1].truncated);
}
