"""Context parallelism: one Wan scene's transformer on several GPUs, through diffusers' own implementation.

diffusers 0.42.1 splits a `WanTransformer3DModel`'s video tokens over the ranks of a `torch.distributed` group
(`WanTransformer3DModel._cp_plan`: the first block's input and the RoPE tables split, the output projection
gathered) and runs self-attention as Ulysses (all-to-all over heads) or ring attention (key / value passed
round) in `dispatch_attention_fn`. SR3AI's region cross-attention and gated LoRAs follow the split
(`dreamrunner.attention.wan`). One process per GPU, all running the same scene call:

    torchrun --nproc-per-node 2 -m dreamrunner render PROJECT --scene 1 --context-parallel 2

Every rank runs the whole pipeline (same seed, same noise, the gathered transformer output, so the same
latents); only rank 0 writes files (`is_main_process`).

On the CPU (gloo) the same code runs (tests/test_context_parallel_wan.py); diffusers' one accelerator-only line
is stepped around in `enable_context_parallel`.

Degrees: Ulysses needs the attention heads (Wan 2.1 1.3B: 12, 14B: 40) and the video tokens divisible by the
degree; ring needs an attention backend that returns the log-sum-exp (diffusers' `native` backend does not:
`_native_attention_forward_op` raises "Native attention does not support return_lse=True"), so it runs on CUDA
with `_native_cudnn` only and is offered to benchmarks, not to the render command.
"""

from __future__ import annotations

import os
from unittest import mock

import torch

from ..errors import DreamRunnerError

MODES = ("ulysses", "ring")
# Ring attention merges partial attentions by their log-sum-exp; diffusers' native (SDPA) backend returns none.
RING_BACKEND = "_native_cudnn"


class ContextParallelError(DreamRunnerError):
    """Context parallelism asked for where it cannot run: another model family, no process group, a degree
    that does not divide the world, the heads or the tokens, an offloading memory preset."""


def context_parallel_config(transformer):
    """diffusers' `ContextParallelConfig` the transformer runs under, or None (one process)."""
    config = getattr(transformer, "_parallel_config", None)
    return None if config is None else config.context_parallel_config


def check_family(family: str) -> None:
    """Context parallelism is offered for the Wan family only; raises ContextParallelError for another."""
    if family != "wan":
        raise ContextParallelError(
            f"context parallelism runs on the Wan backends only (diffusers' WanTransformer3DModel split plan, with "
            f"SR3AI following it); {family} backends are not split here: render them on one GPU")


# Wan 2.2's split is not tested with SR3AI (A14B's second expert, TI2V-5B's per-token timesteps): refused.
UNTESTED_BACKENDS = ("wan2.2-a14b", "wan2.2-ti2v-5b", "tiny-wan2.2", "tiny-wan2.2-5b")


def check_backend(backend: str) -> None:
    """Context parallelism is offered for the Wan 2.1 backends; raises ContextParallelError for another."""
    from . import backend_family

    check_family(backend_family(backend))
    if backend in UNTESTED_BACKENDS:
        raise ContextParallelError(f"context parallelism with SR3AI is tested on Wan 2.1 only; {backend} is not "
                                   f"split here: render it on one GPU")


def check_context_parallel(family: str, degree: int, heads: int | None = None, mode: str = "ulysses") -> None:
    """What must hold before a `degree`-way run starts; raises ContextParallelError naming the fix."""
    if mode not in MODES:
        raise ContextParallelError(f"unknown context-parallel mode {mode!r}; choose one of {', '.join(MODES)}")
    check_family(family)
    if degree < 2:
        raise ContextParallelError(f"a context-parallel degree is at least 2, got {degree}")
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        raise ContextParallelError(
            f"context parallelism over {degree} processes needs torch.distributed initialised: launch one process per "
            f"GPU with `torchrun --nproc-per-node {degree} -m dreamrunner render PROJECT --context-parallel {degree}`")
    world = torch.distributed.get_world_size()
    if world != degree:
        raise ContextParallelError(f"--context-parallel {degree} but torch.distributed has {world} processes: launch "
                                   f"`torchrun --nproc-per-node {degree}` (one process per GPU of the scene)")
    if mode == "ulysses" and heads is not None and heads % degree:
        raise ContextParallelError(f"Ulysses splits the {heads} attention heads over the ranks: the degree must divide "
                                   f"{heads}, {degree} does not")


def enable_context_parallel(transformer, degree: int, mode: str = "ulysses") -> None:
    """Split the transformer's video tokens over the `degree` processes of the initialised torch.distributed
    group (diffusers' `enable_parallelism` with the model's own `_cp_plan`); once per transformer, a second
    call with the same degree does nothing. Raises ContextParallelError (`check_context_parallel`)."""
    from diffusers import ContextParallelConfig

    from . import model_family

    current = context_parallel_config(transformer)
    if current is not None:
        if current.ulysses_degree * current.ring_degree != degree:
            raise ContextParallelError(f"the transformer already runs {current.ulysses_degree * current.ring_degree}"
                                       f"-way context parallel; load it again for {degree}")
        return
    check_context_parallel(model_family(transformer), degree, transformer.config.num_attention_heads, mode)
    if mode == "ring":
        transformer.set_attention_backend(RING_BACKEND)
    config = ContextParallelConfig(**({"ulysses_degree": degree} if mode == "ulysses" else {"ring_degree": degree}))
    if torch.accelerator.device_count() > 0:
        transformer.enable_parallelism(config=config)
        return
    # diffusers 0.42.1 `ModelMixin._resolve_parallel_config` records rank r's device as accelerator
    # `r % torch.accelerator.device_count()`: a division by zero without one. The device is only recorded (the mesh
    # is built on the CPU and gloo), so for this one call a count of 1 lets the CPU run what GPUs run.
    with mock.patch.object(torch.accelerator, "device_count", return_value=1):
        transformer.enable_parallelism(config=config)


def local_tokens(config, num_tokens: int) -> slice:
    """This rank's video tokens under `config` (a `ContextParallelConfig` set up on its mesh): the positions
    diffusers' own sharder gives the first block here, as a slice of 0..num_tokens-1. Raises
    ContextParallelError when they do not split evenly (diffusers asserts it)."""
    from diffusers.hooks.context_parallel import EquipartitionSharder, PartitionAnythingSharder

    mesh = config._flattened_mesh
    positions = torch.arange(num_tokens)
    if config.ulysses_anything or config.ring_anything:
        positions = PartitionAnythingSharder.shard_anything(positions, 0, mesh)
    elif num_tokens % mesh.size():
        raise ContextParallelError(f"the scene has {num_tokens} video tokens, which do not split evenly over "
                                   f"{mesh.size()} ranks: choose a frame count or size whose token grid does")
    else:
        positions = EquipartitionSharder.shard(positions, 0, mesh)
    return slice(int(positions[0]), int(positions[-1]) + 1)


def is_main_process() -> bool:
    """True in a single-process run and on rank 0 of a distributed one: the process that writes files."""
    return not (torch.distributed.is_available() and torch.distributed.is_initialized()) or \
        torch.distributed.get_rank() == 0


def init_from_launcher(degree: int, device: str | None) -> str:
    """Join the process group a launcher (torchrun) describes in the environment (RANK, WORLD_SIZE,
    LOCAL_RANK, MASTER_ADDR/PORT) and return this process's device: `device` as given, else its own GPU
    `cuda:LOCAL_RANK` (NCCL), or the CPU (gloo) where there is no GPU. Raises ContextParallelError when not
    launched that way."""
    if "WORLD_SIZE" not in os.environ or "LOCAL_RANK" not in os.environ:
        raise ContextParallelError(
            f"--context-parallel {degree} runs one process per GPU: launch it with `torchrun --nproc-per-node {degree} "
            f"-m dreamrunner render PROJECT --context-parallel {degree}` (torchrun sets RANK, WORLD_SIZE, LOCAL_RANK)")
    local_rank = int(os.environ["LOCAL_RANK"])
    if device is None:
        device = f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda"):
        torch.cuda.set_device(torch.device(device))
    if not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if device.startswith("cuda") else "gloo")
    return device
