from . import roberta_ehft  # noqa: F401  (registers --arch roberta_ehft_base / _large)
