"""Ablation variants of SPADE, one small file each; importing this package registers them."""
from baselines import concat, gamma_only, instancenorm, kernel1, pix2pixhd, vae  # noqa: F401
