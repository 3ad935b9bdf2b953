"""tslayers: where do a time-series transformer's best features live, and how to move them out.

Kept import-light on purpose: ``import tslayers.kernels`` must work with only torch, triton,
einops and numpy (the GPU benchmark machine has nothing else).
"""

__version__ = "0.1.0"
