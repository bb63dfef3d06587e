"""Test helper: make Accelerate run FSDP or DeepSpeed on CPU processes (gloo), which it refuses.

On a machine without CUDA, ``Accelerator(cpu=True)`` under several processes always sets up
``MULTI_CPU`` (DDP over gloo): an FSDP or DeepSpeed plugin, passed in or asked for by
``accelerate launch``'s config, is dropped without a word. :func:`cpu_engine_accelerator` builds
the ``Accelerator`` that way and then forces the engine in:

* the shared state (``AcceleratorState`` and ``PartialState``) gets ``distributed_type`` FSDP or
  DEEPSPEED and the plugin attached (the plugin's mixed precision and, for DeepSpeed, its
  ``select`` are applied as Accelerate applies them on a GPU machine);
* for DeepSpeed, ``deepspeed.comm`` is initialised on the gloo process group Accelerate already
  opened (on GPUs Accelerate calls ``deepspeed.comm.init_distributed`` itself, with NCCL), without
  its CPU shared-memory all-reduce op (``deepspeed_shm_comm``: used by DeepSpeed's inference
  all-reduce, not by ZeRO training; building it is a C++ compile of about 2 minutes on the
  first run).

What a GPU run does not need: all of it. With CUDA devices ``accelerate launch`` with
``examples/accelerate/fsdp.yaml`` or ``deepspeed_zero*.yaml`` sets these engines up by itself,
with NCCL. The forced state runs the real engines (``fully_shard`` and its DTensor parameters,
the DeepSpeed ZeRO optimizers) with gloo collectives and CPU kernels, so what it checks is the
engines' arithmetic and our use of their APIs, not NCCL or CUDA.

Later ``Accelerator()`` calls in the process (the Trainer's) reuse the forced state.
"""

from __future__ import annotations

ENGINES = ("single", "ddp", "fsdp1", "fsdp2", "zero1", "zero2", "zero3")


def cpu_engine_accelerator(engine: str, mixed_precision: str = "no", **kwargs):
    """An ``accelerate.Accelerator`` on CPU processes running ``engine`` (one of :data:`ENGINES`).

    Args:
        engine: ``single`` or ``ddp`` (Accelerate's own CPU set-up, nothing forced), ``fsdp1``, ``fsdp2`` or
            ``zero1``/``zero2``/``zero3``.
        mixed_precision: ``no`` or ``bf16``.
        kwargs: passed to ``Accelerator`` (e.g. ``project_dir``).
    """
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, PartialState
    from accelerate.utils import DistributedType

    if engine not in ENGINES:
        raise ValueError(f"engine {engine!r}: expected one of {ENGINES}")
    if engine in ("single", "ddp"):
        return Accelerator(cpu=True, mixed_precision=mixed_precision, **kwargs)
    if engine.startswith("fsdp"):
        from accelerate.utils import FullyShardedDataParallelPlugin

        # as examples/accelerate/fsdp.yaml: each decoder layer sharded on its own, then the root
        plugin = FullyShardedDataParallelPlugin(
            fsdp_version=int(engine[-1]),
            auto_wrap_policy="transformer_based_wrap",
            reshard_after_forward=True if engine == "fsdp2" else "FULL_SHARD",
            state_dict_type="SHARDED_STATE_DICT",
        )
        acc = Accelerator(cpu=True, mixed_precision=mixed_precision, fsdp_plugin=plugin, **kwargs)
        state, kind = AcceleratorState(), DistributedType.FSDP
        state.fsdp_plugin = plugin
        if mixed_precision != "no":
            plugin.set_mixed_precision(mixed_precision)
    else:
        import deepspeed.comm
        import deepspeed.comm.torch
        from accelerate.utils import DeepSpeedPlugin

        deepspeed.comm.torch.build_shm_op = lambda: None  # see the module docstring

        plugin = DeepSpeedPlugin(
            zero_stage=int(engine[-1]),
            gradient_accumulation_steps=1,
            gradient_clipping=1.0,
            offload_optimizer_device="none",
            offload_param_device="none",
            zero3_init_flag=False,
        )
        acc = Accelerator(cpu=True, mixed_precision=mixed_precision, deepspeed_plugin=plugin, **kwargs)
        state, kind = AcceleratorState(), DistributedType.DEEPSPEED
        deepspeed.comm.init_distributed(dist_backend="gloo", auto_mpi_discovery=False)
        plugin.set_mixed_precision(mixed_precision)
        plugin.select(_from_accelerator_state=True)
        state.deepspeed_plugins = plugin
        state._mixed_precision = "no"  # as Accelerate does: DeepSpeed's own config holds the precision
    state.distributed_type = kind
    PartialState._shared_state["distributed_type"] = kind
    return acc
