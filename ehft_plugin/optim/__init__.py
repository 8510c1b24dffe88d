from . import ehft_adamw  # noqa: F401  (registers --optimizer ehft_adamw)
