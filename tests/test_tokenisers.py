"""Tokenisers: GPT-2 BPE matches fairseq's RoBERTa recipe token for token; WordPiece and
sentencepiece come from their real libraries; a dictionary of another tokeniser is refused."""

import re
from pathlib import Path

import pytest
from conftest import BIN, ehft, gpt2_flags, gpt2_spec, run, shared

from ehft_plugin.data.binarize import prepare
from ehft_plugin.data.task_table import get_task
from ehft_plugin.data.tokenisers import TokeniserSpec, build_encoder
from ehft_plugin.errors import TokeniserError

TRICKY = [
    ("  Leading and trailing spaces  ", "Café, naïve résumé — “quotes” and ‘apostrophes’"),
    ("Numbers 1,234.56 and e-mail a@b.co", "Emoji 🙂 and CJK 漢字 and Ελληνικά"),
    ("Multiple   inner    spaces", "It's 5 o'clock; don't you think?"),
]


def _rte_file(path, rows):
    lines = ["index\tsentence1\tsentence2\tlabel"]
    lines += ["%d\t%s\t%s\t%s" % (i, a, b, "entailment" if i % 2 else "not_entailment")
              for i, (a, b) in enumerate(rows)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _load(prefix):
    from fairseq.data import data_utils

    dataset = data_utils.load_indexed_dataset(str(prefix), None)
    return [dataset[i].tolist() for i in range(len(dataset))]


@pytest.mark.slow
def test_gpt2_matches_fairseq_multiprocessing_bpe_encoder_and_preprocess(tmp_path):
    import fairseq

    encoder_script = Path(fairseq.__file__).parent / "examples/roberta/multiprocessing_bpe_encoder.py"
    if not encoder_script.is_file():
        pytest.skip("this fairseq install does not ship examples/roberta")
    rte = shared("glue/RTE/train.tsv").read_text(encoding="utf-8").splitlines()[1:61]
    rows = [tuple(line.split("\t")[1:3]) for line in rte] + TRICKY
    raw = tmp_path / "raw"
    raw.mkdir()
    _rte_file(raw / "train.tsv", rows)
    _rte_file(raw / "dev.tsv", rows[:5])
    ehft("prepare", "rte", "--raw-dir", raw, "--out-dir", tmp_path / "ours", *gpt2_flags())

    bpe = shared("bpe")
    for column in (0, 1):
        text = tmp_path / ("input%d.txt" % column)
        text.write_text("".join(r[column] + "\n" for r in rows), encoding="utf-8")
        run([BIN / "python", encoder_script, "--encoder-json", bpe / "encoder.json",
             "--vocab-bpe", bpe / "vocab.bpe", "--inputs", text, "--outputs",
             str(text) + ".bpe", "--workers", "1", "--keep-empty"])
        run([BIN / "fairseq-preprocess", "--only-source", "--trainpref", str(text) + ".bpe",
             "--destdir", tmp_path / "stock" / ("input%d" % column), "--workers", "1",
             "--srcdict", bpe / "dict.txt"])
        stock = _load(tmp_path / "stock" / ("input%d" % column) / "train")
        ours = _load(tmp_path / "ours" / ("input%d" % column) / "train")
        assert ours == stock


def _bert_vocab(tmp_path):
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "cat", "sat", "un", "##aff",
             "##able", "on", "mat", ".", "a", "dog", "##s"]
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(words) + "\n")
    srcdict = tmp_path / "dict.txt"
    srcdict.write_text("".join("%s 1\n" % w for w in words[5:]))
    return vocab, srcdict


def test_bert_wordpiece_lowercases_and_splits_into_word_pieces(tmp_path):
    vocab, srcdict = _bert_vocab(tmp_path)
    encode = build_encoder(TokeniserSpec(bpe="bert", srcdict=str(srcdict),
                                         bpe_vocab_file=str(vocab)))
    assert encode("The unaffable cat sat on a mat.") == "the un ##aff ##able cat sat on a mat ."
    assert encode("Dogs") == "dog ##s"
    cased = build_encoder(TokeniserSpec(bpe="bert", srcdict=str(srcdict),
                                        bpe_vocab_file=str(vocab), bpe_cased=True))
    assert cased("The cat") == "[UNK] cat"


@pytest.mark.slow
def test_prepare_with_bert_maps_word_pieces_through_the_dictionary(tmp_path):
    from fairseq.data import Dictionary

    vocab, srcdict = _bert_vocab(tmp_path)
    raw = tmp_path / "raw"
    raw.mkdir()
    _rte_file(raw / "train.tsv", [("The cat sat.", "A dog sat on the mat.")] * 4)
    _rte_file(raw / "dev.tsv", [("The unaffable cat.", "Dogs sat.")] * 2)
    ehft("prepare", "rte", "--raw-dir", raw, "--out-dir", tmp_path / "bin", "--bpe", "bert",
         "--bpe-vocab-file", vocab, "--srcdict", srcdict)
    d = Dictionary.load(str(srcdict))
    expected = [d.index(w) for w in "the un ##aff ##able cat .".split()] + [d.eos()]
    assert _load(tmp_path / "bin" / "input0" / "valid")[0] == expected


@pytest.mark.slow
def test_sentencepiece_model_from_the_real_library(tmp_path):
    import sentencepiece as spm

    sentences = [line.split("\t")[1] for line in
                 shared("glue/RTE/train.tsv").read_text(encoding="utf-8").splitlines()[1:400]]
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(sentences) + "\n", encoding="utf-8")
    spm.SentencePieceTrainer.train(input=str(corpus), model_prefix=str(tmp_path / "sp"),
                                   vocab_size=300, minloglevel=2)
    sp = spm.SentencePieceProcessor(model_file=str(tmp_path / "sp.model"))
    pieces = [sp.id_to_piece(i) for i in range(3, sp.get_piece_size())]  # after <unk> <s> </s>
    srcdict = tmp_path / "dict.txt"
    srcdict.write_text("".join("%s 1\n" % p for p in pieces), encoding="utf-8")
    raw = tmp_path / "raw"
    raw.mkdir()
    pairs = [(s, s[::-1]) for s in sentences[:10]]
    _rte_file(raw / "train.tsv", pairs)
    _rte_file(raw / "dev.tsv", pairs[:3])
    ehft("prepare", "rte", "--raw-dir", raw, "--out-dir", tmp_path / "bin", "--bpe",
         "sentencepiece", "--sentencepiece-model", tmp_path / "sp.model", "--srcdict", srcdict)
    from fairseq.data import Dictionary

    d = Dictionary.load(str(srcdict))
    expected = [d.index(p) for p in sp.encode(sentences[0], out_type=str)] + [d.eos()]
    assert _load(tmp_path / "bin" / "input0" / "train")[0] == expected


def test_dictionary_of_another_tokeniser_is_refused(tmp_path):
    vocab, _ = _bert_vocab(tmp_path)
    spec = TokeniserSpec(bpe="bert", srcdict=str(shared("bpe", "dict.txt")),
                         bpe_vocab_file=str(vocab))
    raw = tmp_path / "raw"
    raw.mkdir()
    _rte_file(raw / "train.tsv", [("The cat sat.", "A dog.")] * 3)
    _rte_file(raw / "dev.tsv", [("The cat sat.", "A dog.")] * 3)
    with pytest.raises(TokeniserError, match=r"dictionary/tokeniser mismatch: 100% of the bert "
                                             r"tokens are not in --srcdict .*dict.txt \(first "
                                             r"unknown: 'the'\)"):
        prepare(get_task("rte"), str(raw), str(tmp_path / "bin"), spec)
    assert not (tmp_path / "bin").exists()


@pytest.mark.parametrize("change,message", [
    ({"gpt2_vocab_bpe": None}, r"--bpe gpt2 needs --gpt2-vocab-bpe FILE"),
    ({"gpt2_encoder_json": "/nonexistent/encoder.json"},
     r"--gpt2-encoder-json /nonexistent/encoder.json: file not found"),
    ({"srcdict": None}, r"--bpe gpt2 needs --srcdict FILE"),
    ({"bpe": "wordpiece"}, r"--bpe 'wordpiece' is not supported; expected one of: gpt2, bert, "
                           r"sentencepiece"),
])
def test_missing_tokeniser_files_are_named(change, message):
    fields = dict(gpt2_spec().__dict__, **change)
    with pytest.raises(TokeniserError, match=message):
        TokeniserSpec(**fields).check()


def test_a_srcdict_that_is_not_a_fairseq_dictionary_is_named(tmp_path):
    bad = tmp_path / "dict.txt"
    bad.write_text("justonecolumn\n")
    from ehft_plugin.data.tokenisers import load_dictionary

    with pytest.raises(TokeniserError, match=r"--srcdict .*dict.txt: not a fairseq dictionary"):
        load_dictionary(str(bad))


def test_the_dictionary_size_read_without_fairseq_is_fairseqs(tmp_path):
    from ehft_plugin.data.tokenisers import dictionary_size, load_dictionary

    real = str(shared("bpe", "dict.txt"))
    assert dictionary_size(real) == len(load_dictionary(real))
    # a line flagged #fairseq:overwrite adds an entry too (fairseq re-points the symbol at it);
    # <mask> is appended unless listed
    flagged = tmp_path / "flagged.txt"
    flagged.write_text("a 5\nb 3\n<unk> 1 #fairseq:overwrite\na 2 #fairseq:overwrite\n")
    assert dictionary_size(str(flagged)) == len(load_dictionary(str(flagged))) == 4 + 4 + 1
    flagged.write_text("a 5\n<mask> 0\n")
    assert dictionary_size(str(flagged)) == len(load_dictionary(str(flagged))) == 4 + 2


@pytest.mark.parametrize("text,message", [
    ("a 5\njustonecolumn\n", r"flagged.txt, line 2: not a fairseq dictionary line \(expected "
                             r"'<token> <count> \[flags\]'\): 'justonecolumn'"),
    ("a 5\nb x\n", r"line 2: not a fairseq dictionary line"),
    ("a 5\nb 3\na 1\n", r"flagged.txt, line 3: 'a' is listed twice"),
])
def test_a_dictionary_fairseq_would_refuse_is_named_with_its_line(tmp_path, text, message):
    from ehft_plugin.data.tokenisers import dictionary_size

    bad = tmp_path / "flagged.txt"
    bad.write_text(text)
    with pytest.raises(TokeniserError, match=message):
        dictionary_size(str(bad))


@pytest.mark.slow
@pytest.mark.parametrize("flag,source,message", [
    ("--gpt2-encoder-json", "vocab.bpe", r"--gpt2-encoder-json \S+vocab.bpe: not GPT-2's "
                                         r"encoder.json \(a JSON object of BPE token -> id\)"),
    ("--gpt2-vocab-bpe", "encoder.json", r"--gpt2-vocab-bpe \S+encoder.json: not GPT-2's "
                                         r"vocab.bpe"),
    ("--srcdict", "binary", r"--srcdict \S+binary:1: holds NUL bytes: not text; expected a "
                            r"fairseq dictionary"),
])
def test_a_tokeniser_file_of_another_kind_is_named_with_what_was_expected(tmp_path, flag,
                                                                          source, message):
    flags = gpt2_flags()
    binary = tmp_path / "binary"
    binary.write_bytes(b"\x00\x01\x02\x03")
    path = binary if source == "binary" else shared("bpe") / source
    flags[flags.index(flag) + 1] = str(path)
    raw = shared("glue", "RTE")
    result = ehft("prepare", "rte", "--raw-dir", raw, "--out-dir", tmp_path / "bin", *flags,
                  check=False)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert re.search(message, result.stderr.strip().splitlines()[-1]), result.stderr[-1000:]
    assert not (tmp_path / "bin").exists()


def test_a_wordpiece_vocabulary_must_be_one(tmp_path):
    spec = TokeniserSpec(bpe="bert", srcdict=str(shared("bpe") / "dict.txt"),
                         bpe_vocab_file=str(shared("bpe") / "encoder.json"))
    with pytest.raises(TokeniserError, match=r"not a WordPiece vocab.txt"):
        spec.check()
