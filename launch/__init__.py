"""Launching icl_iwl jobs: TPU VM slices (tpu_vm.sh) and sweeps (sweep.py)."""
