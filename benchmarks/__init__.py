"""The benchmarks: timing tools (speed, speed_cuda, train_step, optimizer_step, step_ops, with
bench.py, one configuration measured in a process of its own, and hf_step.py, the HF
reference) and the experiments that train grids of cells (accuracy_grid, converged_grid,
stage1_grid, diagnostics), each writing its results beside its records in this folder.

Run from the repository root as modules, e.g. `python -m benchmarks.speed --rounds 2`: the
root is then on the import path, so the modules import `ehft_plugin` and each other as
packages, without editing sys.path (on a GPU machine too, where the plugin is not installed).
"""
