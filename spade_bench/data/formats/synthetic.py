"""synthetic: the benchmark's procedural outdoor scenes (data/synthetic.py), generated on the fly
from (seed, split, index) at any size; no files and no root. The default dataset."""
from spade_bench.data.formats._base import DatasetFormat

FORMAT = DatasetFormat(
    name="synthetic",
    description="procedural outdoor scenes, 10 classes, generated at any size (no files)",
    data_defaults=dict(label_nc=10, contain_dontcare=False, use_instance=False,
                       preprocess="resize_and_crop", load_size=286, crop_size=256, aspect_ratio=1.0),
    list_pairs=None,
    class_names=("sky", "cloud", "mountain", "water", "sand", "grass", "tree", "rock", "building", "road"),
    # Label colours for figures and for the palette PNGs that `data synth` writes.
    palette=(
        (110, 170, 235),  # sky
        (235, 235, 245),  # cloud
        (120, 100, 90),   # mountain
        (30, 90, 200),    # water
        (230, 200, 120),  # sand
        (90, 190, 60),    # grass
        (20, 100, 30),    # tree
        (150, 150, 150),  # rock
        (200, 70, 50),    # building
        (60, 60, 70),     # road
    ),
)
