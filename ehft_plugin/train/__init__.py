"""`ehft train`: methods and recipes resolved into stages, each stage a fairseq-train run
(launcher.py), stage 1's head handed over (handover.py), everything recorded in a run
directory (rundir/)."""
