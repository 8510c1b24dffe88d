from . import glue_ehft  # noqa: F401  (registers --task glue_ehft)
