"""Variants of SPADE, one small file each. spade_bench.registry imports every module here
(a package scan, no list to keep); each module registers its variants with @register_variant."""
