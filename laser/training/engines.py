"""The training engines the policy update runs under: one process, DDP, FSDP2, DeepSpeed ZeRO 1/2/3.

Accelerate picks the engine from its config (``accelerate launch --config_file ...``). What
differs between engines, and only that, lives here, behind :class:`Engine`:

* how a step's backward passes accumulate and when gradients are synchronised (DDP and FSDP2:
  ``accelerator.no_sync`` on all but the last pass; DeepSpeed: the engine's accumulation
  boundary, set on the last pass, and one ``engine.step()`` per training step);
* gradient clipping and the optimizer step (DeepSpeed clips and steps inside ``engine.step()``,
  with ``gradient_clipping`` = ``train.grad_clip``, and skips a step whose gradients are not
  finite);
* each process's *local* storage of a parameter (the full tensor; FSDP2's DTensor shard;
  ZeRO-3's partition), which the frozen DPO reference is swapped in and out of without any
  communication;
* full (gathered) tensors of the trainable parameters and of AdamW's state, for checkpoints
  that any engine, or one process, can resume from.

FSDP1 is refused (use ``fsdp_version: 2``), and so is an Accelerate config that asks for FSDP or
DeepSpeed when Accelerate could not set it up (on a machine without GPUs it silently falls back
to DDP or to independent processes): :func:`check_engine`.
"""

from __future__ import annotations

import os

import torch

ENGINES = ("single", "ddp", "fsdp2", "zero1", "zero2", "zero3")


class EngineError(RuntimeError):
    """The Accelerate config asks for an engine this machine or this update cannot run."""


def engine_name(acc) -> str:
    """The engine of a prepared-or-not ``accelerate.Accelerator``: ``single``, ``ddp``, ``fsdp1``,
    ``fsdp2`` or ``zero<stage>``."""
    from accelerate.utils import DistributedType

    kind = acc.distributed_type
    if kind == DistributedType.FSDP:
        return f"fsdp{acc.state.fsdp_plugin.fsdp_version}"
    if kind == DistributedType.DEEPSPEED:
        return f"zero{acc.state.deepspeed_plugin.zero_stage}"
    return "single" if acc.num_processes == 1 else "ddp"


def _requested() -> str | None:
    """The engine ``accelerate launch`` was asked for by its config (its environment variables)."""
    if os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true":
        return "DEEPSPEED"
    if os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true":
        return "FSDP"
    return None


def check_engine(acc, train) -> str:
    """The engine's name, after refusing a set-up the update cannot run right.

    Args:
        acc: the run's ``accelerate.Accelerator`` (before ``prepare``).
        train: the ``train`` config section (``grad_clip``).

    Raises:
        EngineError: the Accelerate config asks for FSDP or DeepSpeed and Accelerate set up
            something else (no GPUs here), FSDP1, or a DeepSpeed config at odds with ``train``.
    """
    requested, kind = _requested(), str(acc.distributed_type).split(".")[-1]
    if requested and kind != requested:
        gpus = torch.cuda.device_count()
        raise EngineError(
            f"the Accelerate config asks for distributed_type: {requested}, but Accelerate set up {kind} on this "
            f"machine ({gpus} CUDA device(s), training on {acc.device.type}). "
            f"{requested} needs GPUs here: Accelerate runs it only with CUDA devices and would otherwise train "
            f"with a different engine without saying so. On CPU use examples/accelerate/ddp.yaml (--cpu); "
            f"see docs/engines.md"
        )
    name = engine_name(acc)
    if name == "fsdp1":
        raise EngineError(
            "the Accelerate config asks for FSDP version 1 (fsdp_config.fsdp_version: 1): laser's "
            "update supports FSDP2 only; set fsdp_version: 2 (examples/accelerate/fsdp.yaml)"
        )
    if name.startswith("zero"):
        _configure_deepspeed(acc.state.deepspeed_plugin, train)
    return name


def _configure_deepspeed(plugin, train) -> None:
    """Fill the DeepSpeed config's ``auto`` values the update owns; refuse ones that contradict it."""
    cfg, clip = plugin.deepspeed_config, float(train.grad_clip or 0.0)
    checks = {
        "gradient_accumulation_steps": (
            1,
            "laser accumulates a step's train.micro_batch_pairs chunks itself "
            "and steps once per training step; set it to 1",
        ),
        "gradient_clipping": (clip, f"it must equal train.grad_clip ({clip}); DeepSpeed clips inside its step"),
    }
    for key, (want, why) in checks.items():
        value = cfg.get(key, "auto")
        if value in ("auto", None):
            cfg[key] = want
        elif float(value) != float(want):
            raise EngineError(f"deepspeed_config.{key} is {value}: {why}")
    if cfg.get("train_micro_batch_size_per_gpu", "auto") == "auto":  # a bookkeeping number: no dataloader here
        cfg["train_micro_batch_size_per_gpu"] = 1


def make_engine(name: str, acc, model, optimizer) -> Engine:
    """The :class:`Engine` for ``name`` around the prepared ``model`` and ``optimizer``."""
    if name.startswith("zero"):
        from laser.training.engines_ds import DeepSpeedEngine

        return DeepSpeedEngine(name, acc, model, optimizer)
    return {"fsdp2": FSDP2Engine}.get(name, Engine)(name, acc, model, optimizer)


def _strip(name: str) -> str:
    for prefix in ("module.", "_orig_mod.", "_checkpoint_wrapped_module."):
        name = name.replace(prefix, "")
    return name


class Engine:
    """One process or DDP: full parameters on every process, a torch optimizer.

    Args:
        name: the engine's name (:data:`ENGINES`).
        acc: the run's Accelerator.
        model, optimizer: what ``acc.prepare`` returned.
    """

    def __init__(self, name, acc, model, optimizer):
        self.name, self.acc, self.model, self.optimizer = name, acc, model, optimizer
        self.params = {_strip(n): p for n, p in self.module.named_parameters() if p.requires_grad}

    @property
    def module(self) -> torch.nn.Module:
        """The model under the engine's wrapper (the parameters are read from it after ``prepare``)."""
        return self.acc.unwrap_model(self.model)

    # ----- a step -------------------------------------------------------------------------
    def begin(self) -> None:
        """Called once before a step's backward passes."""
        self.optimizer.zero_grad(set_to_none=False)

    def backward(self, loss: torch.Tensor, last: bool) -> None:
        """One backward pass of a step; gradients are synchronised on the ``last`` one."""
        if last or self.acc.num_processes == 1:
            self.acc.backward(loss)
            return
        with self.acc.no_sync(self.model):
            self.acc.backward(loss)

    def step(self, clip: float, finite_loss: bool) -> float:
        """Clip and step (every process calls it); returns the pre-clip gradient norm, nan when the
        loss or the norm is not finite (then no step is taken and the gradients are dropped)."""
        norm = self._clip(clip) if finite_loss else float("nan")
        if not (finite_loss and torch.isfinite(torch.tensor(norm))):
            self.optimizer.zero_grad(set_to_none=False)
            return float("nan") if not finite_loss else norm
        self.optimizer.step()
        return norm

    def _clip(self, clip: float) -> float:
        return float(self.acc.clip_grad_norm_(list(self.params.values()), clip))

    # ----- local storage (the reference swap) ------------------------------------------
    def snapshot(self) -> dict[str, torch.Tensor]:
        """Copies of this process's local storage of every trainable parameter."""
        return {n: self.local(p).detach().clone() for n, p in self.params.items()}

    @torch.no_grad()
    def restore(self, snap: dict[str, torch.Tensor]) -> None:
        """Write a :meth:`snapshot` back into the local storage."""
        for n, p in self.params.items():
            self.local(p).copy_(snap[n])

    def local(self, p: torch.nn.Parameter) -> torch.Tensor:
        return p.data

    # ----- full tensors (checkpoints) ----------------------------------------------------
    def full_params(self) -> dict[str, torch.Tensor]:
        """Every trainable parameter, full, on CPU (a collective under sharding: every process calls it)."""
        return {n: p.detach().to("cpu", copy=True) for n, p in self.params.items()}

    @torch.no_grad()
    def load_full_params(self, full: dict[str, torch.Tensor]) -> None:
        """Load full tensors (from :meth:`full_params`, any engine) into the trainable parameters."""
        for n, p in self.params.items():
            p.data.copy_(full[n].to(p.device, p.dtype))

    def gather_lp(self) -> dict[str, torch.Tensor]:
        """The values the forward pass uses, full, on CPU (equal to :meth:`full_params` except under
        ZeRO, whose optimizer keeps separate fp32 masters); e.g. the swapped-in reference."""
        return self.full_params()

    def load_lp(self, full: dict[str, torch.Tensor]) -> None:
        """Write full tensors into the values the forward pass uses (not ZeRO's fp32 masters)."""
        self.load_full_params(full)

    def export_state_dict(self) -> dict | None:
        """The whole model's full state dict for ``save_pretrained`` (every process calls it; the main
        process gets the tensors), or None when the model is not sharded."""
        return None

    def signature(self) -> dict[str, list[int]]:
        """Every trainable parameter's full shape."""
        return {n: list(getattr(p, "ds_shape", p.shape)) for n, p in self.params.items()}

    @staticmethod
    def poison(loss: torch.Tensor) -> torch.Tensor:
        return loss  # see DeepSpeedEngine.poison; the other engines check before stepping

    def optimizer_state(self) -> dict:
        """AdamW's state in ``torch.optim.AdamW.state_dict()`` form over the trainable parameters in
        :attr:`params` order, full tensors on CPU (what one process's optimizer would hold)."""
        sd = self.optimizer.state_dict()
        return {
            "state": {i: {k: v.detach().to("cpu", copy=True) for k, v in s.items()} for i, s in sd["state"].items()},
            "param_groups": sd["param_groups"],
        }

    def load_optimizer_state(self, sd: dict) -> None:
        """Load an :meth:`optimizer_state` (written under any engine)."""
        self.optimizer.load_state_dict(sd)


class FSDP2Engine(Engine):
    """FSDP2 (``fully_shard``): parameters, gradients and AdamW state are DTensor shards.

    After a forward pass FSDP2 may keep a module's gathered parameters registered (always the
    root module's): the shards are registered again before they are read or swapped, so the next
    forward pass gathers what the shards hold.
    """

    def __init__(self, name, acc, model, optimizer):
        super().__init__(name, acc, model, optimizer)
        # transformers' generate keeps every process stepping until all are done (synced_gpus) when
        # it sees this flag, which its own FSDP2 helper sets and Accelerate's does not: without it a
        # process whose samples end sooner leaves the others waiting in an all-gather
        for m in self.module.modules():
            if hasattr(m, "generate"):
                m._is_fsdp_managed_module = True

    def _reshard(self) -> None:
        from torch.distributed.fsdp import FSDPModule

        for m in self.module.modules():
            if isinstance(m, FSDPModule):
                m.reshard()

    def snapshot(self):
        self._reshard()
        return super().snapshot()

    def restore(self, snap):
        self._reshard()
        super().restore(snap)

    def local(self, p):
        return p.to_local()

    def _clip(self, clip: float) -> float:
        params = [p for p in self.params.values() if p.grad is not None]
        norm = torch.nn.utils.get_total_norm([p.grad for p in params])
        norm = norm.full_tensor() if hasattr(norm, "full_tensor") else norm
        torch.nn.utils.clip_grads_with_norm_(params, clip, norm)
        return float(norm)

    def full_params(self):
        return {n: p.detach().full_tensor().to("cpu", copy=True) for n, p in self.params.items()}

    def export_state_dict(self):
        return self.acc.get_state_dict(self.model)

    @torch.no_grad()
    def load_full_params(self, full):
        self._reshard()
        for n, p in self.params.items():
            p.to_local().copy_(self._shard(full[n].to(p.device, p.dtype), p).to_local())

    @staticmethod
    def _shard(full: torch.Tensor, like):
        """``full`` as a DTensor sharded like the parameter ``like``."""
        from torch.distributed.tensor import distribute_tensor

        return distribute_tensor(full, like.device_mesh, like.placements)

    def optimizer_state(self):
        opt = self.optimizer.optimizer if hasattr(self.optimizer, "optimizer") else self.optimizer
        state = {}
        for i, p in enumerate(self.params.values()):
            s = opt.state.get(p, {})
            state[i] = {
                k: (v.full_tensor() if hasattr(v, "full_tensor") else v).detach().to("cpu", copy=True)
                for k, v in s.items()
            }
        groups = [{k: v for k, v in g.items() if k != "params"} for g in opt.param_groups]
        groups[0]["params"] = list(range(len(self.params)))
        return {"state": {i: s for i, s in state.items() if s}, "param_groups": groups}

    def load_optimizer_state(self, sd):
        opt = self.optimizer.optimizer if hasattr(self.optimizer, "optimizer") else self.optimizer
        for i, p in enumerate(self.params.values()):
            s = sd["state"].get(i, sd["state"].get(str(i)))
            if s is None:
                continue
            opt.state[p] = {k: self._shard(v.to(p.device), p) if v.dim() else v.clone() for k, v in s.items()}
