"""Models in and out: HF backbones converted in (convert.py), finetuned models exported to HF
and HF PEFT (hf_export.py), predictions (predict.py) and leaderboard bundles (submit.py)."""
