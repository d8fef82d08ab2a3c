"""The names of the ``mast-serve`` protocol, shared by the server (:mod:`mast.runtime.serve`) and its
clients (:mod:`mast.runtime.client`, any stock ``tritonclient``): this module imports nothing, so a
client does not load the server, the engine or PyTriton to speak it. docs/SERVING.md is its manual.

One request tracks one frame of one stream on model :data:`MODEL_NAME`: input :data:`FRAME_INPUT`
(UINT8 ``[H, W, 3]`` BGR), optional input :data:`MASK_INPUT` (UINT8 ``[H, W]`` object ids: starts
the stream, later re-anchors it), request parameters :data:`STREAM_PARAMETER` and optional
:data:`ANCHOR_PARAMETER`; output :data:`MASK_OUTPUT` (UINT8 ``[H, W]`` object ids).
"""
from __future__ import annotations

MODEL_NAME = "mast"
FRAME_INPUT = "frame"
MASK_INPUT = "mask"
MASK_OUTPUT = "mask"
STREAM_PARAMETER = "stream_id"   # request parameter: the stream's name (each keeps its own memory)
ANCHOR_PARAMETER = "anchor"      # optional request parameter: how a mask re-anchors a stream
ANCHOR_MODES = ("merge", "replace")   # merge (the default): painted over the prediction; replace: complete
STREAM_HEADER = "mast-stream-id"      # the stream id again as a header: what a router hashes on

# The optional shared secret (mast-serve --token / MAST_TOKEN): Triton refuses every request that
# lacks it (inference, metadata, configuration, statistics, ...) but the health probes (live /
# ready). Over HTTP it travels as header TOKEN_HEADER; over gRPC Triton reads it as metadata
# GRPC_TOKEN_HEADER (its restricted-protocol prefix + the same name).
TOKEN_ENV = "MAST_TOKEN"
TOKEN_HEADER = "triton-access-token"
GRPC_TOKEN_HEADER = "triton-grpc-protocol-" + TOKEN_HEADER

DEFAULT_ADDRESS = "127.0.0.1"   # mast-serve listens on this machine only unless told otherwise

# How refusals start (the client decides from them what to retry or re-anchor)
UNKNOWN_STREAM = "unknown stream"   # the server does not hold the stream: re-send the last mask
SHUTTING_DOWN = "the server is shutting down"   # the frame was not tracked: send it again later
