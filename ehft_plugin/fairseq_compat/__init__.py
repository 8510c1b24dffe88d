"""What the plugin changes in fairseq, and why (compat.py lists every patched name): checkpoints
loaded safely, torchrun's world on CPU, ranks compared at validation, fewer host syncs and
kernel launches per step, checks before anything is written, errors as one line."""
