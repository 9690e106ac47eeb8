"""dsv3-blocks: the building blocks both layer packages and the model share, each written once.

`RMSNorm` (MLA's latent norms, every decoder layer's two norms, the final norm, and the NxDI adapter's)
and the linear-layer injection point (`LinearFactory`, `default_linear_factory`) through which dsv3-mla
and dsv3-moe take their projections, so a backend swaps in parallel or quantized layers without touching
the math. Below dsv3-mla and dsv3-moe, which are peers and cannot import each other.
"""

from dsv3_blocks.linear import LinearFactory, default_linear_factory
from dsv3_blocks.norm import RMSNorm

__all__ = ["LinearFactory", "RMSNorm", "default_linear_factory"]
