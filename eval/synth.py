"""`spade-bench synth`: render one label map with a trained run, optionally in a photo's style.

For people who want to look at single results. The label file may be an index PNG or a
colour-coded one (spade_bench.data.load_label_file decides). With --style, a spade-vae
run encodes the photo to (mu, logvar) and samples z = mu + eps * exp(logvar / 2) with the
given seed; without it z ~ N(0, I) from the seed. The rendering is spade_bench.render's, the
same the evaluation uses.
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Optional

import torch

import spade_bench.checkpoint as checkpoints
from eval.images import from_uint8, load_image, resize_labels, resize_uint8, save_png, to_uint8
from spade_bench.data import load_label_file, semantic_input
from spade_bench.data.files import load_instance_array
from spade_bench.distributed import resolve_device
from spade_bench.errors import EvalError
from spade_bench.render import render


@torch.no_grad()
def synthesize(run_dir: str | Path, label_path: str | Path, out_path: str | Path, *,
               style_path: Optional[str | Path] = None, seed: int = 0, checkpoint: str = "latest",
               device: str = "auto", instance_path: Optional[str | Path] = None) -> dict[str, Any]:
    """Generate one image for `label_path`; writes `out_path` (PNG) and returns what was done.

    A run trained with instance maps (data.use_instance) takes the label map's instance map
    (`instance_path`); without one, class boundaries stand in for instance edges, with a
    warning (touching objects of one class then read as one object)."""
    device = resolve_device(str(device))
    label_path = Path(label_path)
    if not label_path.is_file():
        raise EvalError(f"label map {label_path} does not exist; pass an index or colour-coded PNG")
    if style_path is not None and not Path(style_path).is_file():
        raise EvalError(f"style image {style_path} does not exist")
    if instance_path is not None and not Path(instance_path).is_file():
        raise EvalError(f"instance map {instance_path} does not exist")
    out_path = Path(out_path)
    if out_path.suffix.lower() != ".png":
        raise EvalError(f"--out {out_path} must end in .png (lossless; what the evaluation scores)")
    cfg, generator, encoder, step = checkpoints.load_generator(run_dir, checkpoint, device)
    if style_path is not None and (not cfg.generator.use_vae or encoder is None):
        raise EvalError(f"--style needs a run trained with the style encoder (variant spade-vae, "
                        f"generator.use_vae=true); {run_dir} is variant {cfg.variant!r} with "
                        f"generator.use_vae={str(cfg.generator.use_vae).lower()}; drop --style")
    generator.eval()
    size_hw = tuple(cfg.data.image_size)
    label = load_label_file(label_path, cfg.data)
    original_hw = tuple(label.shape[-2:])
    label = resize_labels(label[None].long(), size_hw).to(device)
    instance, edges = None, None
    if cfg.data.use_instance:
        if instance_path is not None:
            raw = torch.from_numpy(load_instance_array(Path(instance_path), str(instance_path)))
            if tuple(raw.shape) != original_hw:
                raise EvalError(f"instance map {instance_path} is {raw.shape[1]}x{raw.shape[0]} but the label map is "
                                f"{original_hw[1]}x{original_hw[0]} (WxH); pass the instance map of this label map")
            instance, edges = resize_labels(raw[None].long(), size_hw).to(device).to(torch.int32), "instance map"
        else:
            instance, edges = label.to(torch.int32), "class boundaries"
            warnings.warn(f"{run_dir} was trained with instance maps (data.use_instance) and no --instance was "
                          f"given: class boundaries stand in for instance edges, so touching objects of one class "
                          f"read as one; pass --instance PATH for the real edges", stacklevel=2)
    elif instance_path is not None:
        raise EvalError(f"--instance: {run_dir} was trained without instance maps (data.use_instance=false); "
                        f"drop --instance")
    segmap = semantic_input(label, instance, cfg.data)
    style = None
    if style_path is not None:
        style = from_uint8(resize_uint8(load_image(style_path)[None], size_hw, cfg.data.image_resize))
        encoder.eval()
    image = render(generator, segmap, [seed], use_vae=bool(cfg.generator.use_vae), z_dim=cfg.generator.z_dim,
                   encoder=encoder if style is not None else None, style=style)
    save_png(to_uint8(image.float().cpu())[0], out_path)
    return {"out": str(out_path), "size": list(size_hw), "label_size": list(original_hw), "step": step,
            "seed": seed, "style": str(style_path) if style_path else None, "instance_edges": edges}
