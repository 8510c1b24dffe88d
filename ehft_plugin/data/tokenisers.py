"""Tokenisers for `ehft prepare`, built from local files with the real libraries.

The flags follow fairseq's own names (`--bpe gpt2 --gpt2-encoder-json F
--gpt2-vocab-bpe F`, `--bpe bert --bpe-vocab-file F`, `--bpe sentencepiece
--sentencepiece-model F`) so a fairseq user can move a recipe over as is.
Nothing here downloads: every file must exist locally.
"""

import json
import os
import shutil
from dataclasses import asdict, dataclass
from typing import Callable, Optional

from ..errors import TokeniserError

BPE_CHOICES = ("gpt2", "bert", "sentencepiece")


@dataclass
class TokeniserSpec:
    bpe: str
    srcdict: str
    gpt2_encoder_json: Optional[str] = None
    gpt2_vocab_bpe: Optional[str] = None
    bpe_vocab_file: Optional[str] = None
    bpe_cased: bool = False
    sentencepiece_model: Optional[str] = None

    _FILES = {
        "gpt2": ("gpt2_encoder_json", "gpt2_vocab_bpe"),
        "bert": ("bpe_vocab_file",),
        "sentencepiece": ("sentencepiece_model",),
    }

    def required_files(self):
        """(flag name, path) of every file this tokeniser reads, dictionary included."""
        names = self._FILES[self.bpe] + ("srcdict",)
        return [(n, getattr(self, n)) for n in names]

    def check(self):
        if self.bpe not in BPE_CHOICES:
            raise TokeniserError(
                "--bpe %r is not supported; expected one of: %s" % (self.bpe, ", ".join(BPE_CHOICES))
            )
        for name, path in self.required_files():
            flag = "--" + name.replace("_", "-")
            if not path:
                raise TokeniserError("--bpe %s needs %s FILE" % (self.bpe, flag))
            if not os.path.isfile(path):
                raise TokeniserError("%s %s: file not found" % (flag, path))
            _check_kind(name, flag, path)

    def copy_into(self, directory: str) -> "TokeniserSpec":
        """Copy the tokeniser files next to the data so prediction can re-use them."""
        os.makedirs(directory, exist_ok=True)
        moved = dict(asdict(self))
        for name, path in self.required_files():
            target = os.path.join(directory, os.path.basename(path))
            shutil.copyfile(path, target)
            moved[name] = os.path.basename(path)
        return TokeniserSpec(**moved)

    def resolved(self, directory: str) -> "TokeniserSpec":
        """Paths recorded relative to `directory` made usable again."""
        fields = dict(asdict(self))
        for name, path in self.required_files():
            fields[name] = os.path.join(directory, path)
        return TokeniserSpec(**fields)


# what each file must be, as the flag's reader needs it
_KINDS = {
    "srcdict": "a fairseq dictionary (one 'token count' a line)",
    "gpt2_encoder_json": "GPT-2's encoder.json (a JSON object of BPE token -> id)",
    "gpt2_vocab_bpe": "GPT-2's vocab.bpe (a '#version' line, then one merge 'a b' a line)",
    "bpe_vocab_file": "a WordPiece vocab.txt (one token a line, [UNK] among them)",
    "sentencepiece_model": "a sentencepiece model file",
}


def _check_kind(name, flag, path):
    """A file of another kind (binary, another tokeniser's) is named with what was expected."""
    from .readers import check_text

    expected = _KINDS[name]
    wrong = TokeniserError("%s %s: not %s" % (flag, path, expected))
    if name == "sentencepiece_model":
        import sentencepiece as spm

        try:
            spm.SentencePieceProcessor(model_file=path)
        except Exception:  # sentencepiece raises RuntimeError/OSError with C++ text
            raise wrong from None
        return
    check_text(path, expected, TokeniserError, flag)
    with open(path, encoding="utf-8") as f:
        if name == "gpt2_encoder_json":
            try:
                table = json.load(f)
            except ValueError:
                raise wrong from None
            if not isinstance(table, dict) or not all(isinstance(v, int) for v in table.values()):
                raise wrong
        elif name == "gpt2_vocab_bpe":
            lines = f.read().split("\n")
            if len(lines) < 2 or any(len(line.split()) != 2 for line in lines[1:6] if line):
                raise wrong
        elif name == "bpe_vocab_file":
            tokens = f.read().split("\n")
            if "[UNK]" not in tokens or any(len(t.split()) > 1 for t in tokens):
                raise wrong


def build_encoder(spec: TokeniserSpec) -> Callable[[str], str]:
    """A function text -> space-separated BPE symbols, as fairseq-preprocess reads them."""
    spec.check()
    if spec.bpe == "gpt2":
        # the same encoder fairseq's multiprocessing_bpe_encoder.py uses
        from fairseq.data.encoders.gpt2_bpe_utils import get_encoder

        bpe = get_encoder(spec.gpt2_encoder_json, spec.gpt2_vocab_bpe)
        return lambda text: " ".join(map(str, bpe.encode(text)))
    if spec.bpe == "bert":
        from tokenizers import BertWordPieceTokenizer

        tok = BertWordPieceTokenizer(spec.bpe_vocab_file, lowercase=not spec.bpe_cased)
        return lambda text: " ".join(tok.encode(text, add_special_tokens=False).tokens)
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=spec.sentencepiece_model)
    return lambda text: " ".join(sp.encode(text, out_type=str))


FAIRSEQ_SPECIALS = ("<s>", "<pad>", "</s>", "<unk>")  # fairseq's Dictionary starts with these


def dictionary_size(path: str) -> int:
    """len(load_dictionary(path)), read without importing fairseq (which takes seconds), as
    fairseq's Dictionary.add_from_file reads the file: its four special symbols, one entry a
    line (a line flagged #fairseq:overwrite adds an entry too), and <mask> unless listed."""
    known, size = set(FAIRSEQ_SPECIALS), len(FAIRSEQ_SPECIALS)
    try:
        with open(path, encoding="utf-8") as f:
            for number, line in enumerate(f, 1):
                try:
                    word, field = line.rstrip().rsplit(" ", 1)
                    overwrite = field == "#fairseq:overwrite"
                    if overwrite:
                        word, field = word.rsplit(" ", 1)
                    int(field)
                except ValueError:
                    raise TokeniserError("%s, line %d: not a fairseq dictionary line (expected "
                                         "'<token> <count> [flags]'): %r"
                                         % (path, number, line.rstrip("\n"))) from None
                if word in known and not overwrite:
                    raise TokeniserError("%s, line %d: %r is listed twice (fairseq refuses a "
                                         "duplicate without #fairseq:overwrite)"
                                         % (path, number, word))
                known.add(word)
                size += 1
    except (OSError, UnicodeError) as e:
        raise TokeniserError("%s: cannot be read as a fairseq dictionary (%s)" % (path, e)) \
            from None
    return size + ("<mask>" not in known)


def load_dictionary(path: str):
    """The fairseq dictionary, with RoBERTa's <mask> appended as fairseq does."""
    from fairseq.data import Dictionary

    try:
        dictionary = Dictionary.load(path)
    except Exception as e:  # fairseq raises bare ValueError/RuntimeError on bad lines
        raise TokeniserError("--srcdict %s: not a fairseq dictionary (%s)" % (path, e)) from None
    dictionary.add_symbol("<mask>")
    return dictionary
