"""Test-session setup that must run before any test module imports triton."""

import os

# Triton decides at import time whether its kernels are compiled or interpreted: the CPU test
# machines have no GPU, so run the Triton attention kernels under the interpreter. Set
# TRITON_INTERPRET=0 in the environment to test the compiled kernels on a GPU.
os.environ.setdefault("TRITON_INTERPRET", "1")
