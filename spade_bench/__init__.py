"""spade-bench: a reproducibility benchmark suite for SPADE (Park et al., CVPR 2019)."""
__version__ = "0.1.0"
