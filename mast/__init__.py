"""MAST self-supervised dense tracker: train on raw video, export to ONNX/TensorRT, track in real time.

Subpackages, one-way layers (docs/DESIGN.md): ``mast.training`` > ``mast.evaluation`` > ``mast.export``
> ``mast.runtime`` > ``mast.plugins`` > ``mast.core``."""
