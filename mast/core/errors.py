"""Typed errors for user mistakes. The command-line tools print them as one line, no traceback."""


class MastError(Exception):
    """Base class: a problem with the user's input that the user can fix (message says how)."""


class InputError(MastError):
    """A missing, unreadable or malformed input file or folder."""


class CheckpointError(MastError):
    """A checkpoint that is missing, corrupt, or of another architecture."""


class ModelError(MastError):
    """An exported model whose metadata does not match what the runtime expects."""


class DependencyError(MastError):
    """An optional package or device a feature needs (TensorRT, Triton, a CUDA GPU) is missing."""


NO_CUDA_GPU = "--device cuda but no CUDA GPU is visible to torch: use --device cpu"  # one message for every CLI
