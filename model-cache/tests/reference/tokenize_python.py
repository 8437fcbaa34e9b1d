"""Tokenizes texts with the Python `tokenizers` package's standard BERT WordPiece
tokenizer built from a vocab.txt, as an independent check of the Rust tokenizer.

argv: vocab.txt path, max length. stdin: JSON list of texts (one batch).
Prints {"ids": [[...]], "attention_mask": [[...]], "truncated": [...]} padded to the
batch's longest sequence with [PAD].
"""
import json
import sys

from tokenizers import BertWordPieceTokenizer


def main():
    vocab, max_length = sys.argv[1], int(sys.argv[2])
    tok = BertWordPieceTokenizer(vocab, lowercase=True, clean_text=True, handle_chinese_chars=True, strip_accents=None)
    tok.enable_truncation(max_length)
    tok.enable_padding(pad_id=tok.token_to_id("[PAD]"), pad_token="[PAD]")
    texts = json.load(sys.stdin)
    encodings = tok.encode_batch(texts)
    json.dump(
        {
            "ids": [e.ids for e in encodings],
            "attention_mask": [e.attention_mask for e in encodings],
            "truncated": [len(e.overflowing) > 0 for e in encodings],
        },
        sys.stdout,
    )


if __name__ == "__main__":
    main()
