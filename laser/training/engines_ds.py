"""DeepSpeed ZeRO stages 1, 2 and 3 behind :class:`laser.training.engines.Engine`.

``accelerator.prepare`` returns a ``deepspeed.DeepSpeedEngine`` as the model. The update drives it
with DeepSpeed's own API rather than ``accelerator.backward`` (which would call ``engine.step()``
after every backward pass, so every micro-batch would become an optimizer step):

* every backward pass of a training step sets the engine's accumulation boundary, True on the
  last pass only, and calls ``engine.backward(loss, scale_wrt_gas=False)`` (the update scales its
  losses itself); one ``engine.step()`` follows the last pass;
* DeepSpeed clips (``gradient_clipping`` = ``train.grad_clip``) and checks the gradients inside
  its step, and skips a step whose gradient norm is not finite (``was_step_applied``);
* ZeRO keeps an fp32 master copy of the trainable parameters in its optimizer, partitioned over
  processes, and a working copy in the model: the frozen reference is swapped into the working
  copy only (ZeRO-1/2: the full tensor every process holds; ZeRO-3: each process's partition,
  ``ds_tensor``; the small parameters ZeRO-3 keeps gathered are gathered again after a swap);
* full tensors for checkpoints go through ``deepspeed.utils.safe_get_full_*`` /
  ``safe_set_full_*`` (collectives: every process calls them).
"""

from __future__ import annotations

import torch

from laser.training.engines import Engine, _strip

MOMENTS = ("exp_avg", "exp_avg_sq")


class DeepSpeedEngine(Engine):
    """ZeRO stage 1, 2 or 3 (``name`` ``zero1``/``zero2``/``zero3``) around a DeepSpeed engine."""

    def __init__(self, name, acc, model, optimizer):
        self.stage = int(name[-1])
        super().__init__(name, acc, model, optimizer)
        self.params = {_strip(n): p for n, p in model.module.named_parameters() if p.requires_grad}

    @property
    def module(self):
        return self.model.module

    @property
    def _base(self) -> torch.optim.Optimizer:
        """The torch AdamW under ZeRO's optimizer (its parameters are ZeRO's flat fp32 partitions)."""
        return self.model.optimizer.optimizer

    # ----- a step -------------------------------------------------------------------------
    def begin(self) -> None:
        pass  # DeepSpeed zeroes the gradients in its step (also a skipped one)

    def backward(self, loss, last):
        self.model.set_gradient_accumulation_boundary(last)
        self.model.backward(loss, scale_wrt_gas=False)

    def step(self, clip, finite_loss):
        """``engine.step()``; with a non-finite loss the last backward pass was given non-finite
        gradients (see :meth:`poison`), so DeepSpeed's own overflow check skips the step."""
        self.model.step()
        norm = self.model.get_global_grad_norm()
        norm = float(norm) if norm is not None else float("nan")
        return norm if finite_loss and self.model.was_step_applied() else float("nan")

    @staticmethod
    def poison(loss: torch.Tensor) -> torch.Tensor:
        """A loss whose gradients are not finite: DeepSpeed then skips the step and drops them."""
        return loss * float("nan")

    # ----- local storage ----------------------------------------------------------------
    @torch.no_grad()
    def restore(self, snap):
        """Write a snapshot back; under ZeRO-3 the parameters it keeps gathered between forward passes
        (small ones, ``stage3_param_persistence_threshold``) are released first and gathered again
        after, from the new partitions, as DeepSpeed does when it loads a checkpoint."""
        held = []
        if self.stage == 3:
            from deepspeed.runtime.zero.partition_parameters import ZeroParamStatus

            held = [p for p in self.params.values() if p.ds_status == ZeroParamStatus.AVAILABLE]
        if held:
            held[0].partition(held)
        super().restore(snap)
        if held:
            held[0].all_gather(held)

    def local(self, p):
        return p.ds_tensor if self.stage == 3 else p.data

    # ----- full tensors -----------------------------------------------------------------
    def gather_lp(self) -> dict[str, torch.Tensor]:
        """The working copies, full, on CPU (what the forward pass uses; the swapped-in reference)."""
        if self.stage < 3:
            return {n: p.detach().to("cpu", copy=True) for n, p in self.params.items()}
        import deepspeed

        with deepspeed.zero.GatheredParameters(list(self.params.values())):
            return {n: p.detach().to("cpu", copy=True) for n, p in self.params.items()}

    @torch.no_grad()
    def load_lp(self, full) -> None:
        """Write full tensors into the working copies only (not ZeRO's fp32 masters)."""
        if self.stage < 3:
            for n, p in self.params.items():
                p.data.copy_(full[n].to(p.device, p.dtype))
            return
        import deepspeed

        with deepspeed.zero.GatheredParameters(list(self.params.values()), modifier_rank=0):
            for n, p in self.params.items():
                p.data.copy_(full[n].to(p.device, p.dtype))

    def full_params(self):
        from deepspeed.utils import safe_get_full_fp32_param

        return {
            n: safe_get_full_fp32_param(p).detach().to("cpu", copy=True).reshape(self._shape(p))
            for n, p in self.params.items()
        }

    def load_full_params(self, full):
        from deepspeed.utils import safe_set_full_fp32_param

        for n, p in self.params.items():
            safe_set_full_fp32_param(p, full[n].to(self.acc.device, torch.float32).reshape(self._shape(p)))
        self.load_lp(full)

    def export_state_dict(self):
        """ZeRO-3: the model's state dict inside ``GatheredParameters`` (whatever the config's
        ``stage3_gather_16bit_weights_on_model_save``); ZeRO-1/2 hold full weights: None."""
        if self.stage < 3:
            return None
        import deepspeed

        with deepspeed.zero.GatheredParameters(list(self.module.parameters())):
            return {k: v.detach().to("cpu", copy=True) for k, v in self.module.state_dict().items()}

    @staticmethod
    def _shape(p) -> torch.Size:
        return p.ds_shape if hasattr(p, "ds_shape") else p.shape

    def optimizer_state(self):
        from deepspeed.utils import safe_get_full_optimizer_state

        groups = [{k: v for k, v in g.items() if k != "params"} for g in self._base.param_groups][:1]
        groups[0]["params"] = list(range(len(self.params)))
        steps = [s["step"] for s in self._base.state.values() if "step" in s]
        if not steps:  # no step taken yet: AdamW has no state
            return {"state": {}, "param_groups": groups}
        step = torch.as_tensor(steps[0], dtype=torch.float32).detach().to("cpu", copy=True)
        state = {}
        for i, p in enumerate(self.params.values()):
            state[i] = {
                "step": step.clone(),
                **{
                    k: safe_get_full_optimizer_state(p, k).detach().to("cpu", copy=True).reshape(self._shape(p))
                    for k in MOMENTS
                },
            }
        return {"state": state, "param_groups": groups}

    def load_optimizer_state(self, sd):
        from deepspeed.utils import safe_set_full_optimizer_state

        state = {int(k): v for k, v in sd["state"].items()}
        if not state:
            return
        step = float(next(iter(state.values()))["step"])
        zero = self.model.optimizer
        flats = zero.fp32_partitioned_groups_flat if self.stage == 3 else zero.single_partition_of_fp32_groups
        for flat in flats:  # AdamW makes its state lazily (on the first step): make it now, then fill it
            s = self._base.state[flat]
            for k in MOMENTS:
                s.setdefault(k, torch.zeros_like(flat))
            s["step"] = step if isinstance(s.get("step"), (int, float)) else torch.tensor(step)
        link = getattr(self.model.optimizer, "_lazy_init_hp_params_optimizer_state", None)
        if link is not None:  # ZeRO-1/2 link their per-parameter views of the state on the first step
            link()
        for i, p in enumerate(self.params.values()):
            for k in MOMENTS:
                safe_set_full_optimizer_state(
                    p, state[i][k].to(self.acc.device, torch.float32).reshape(self._shape(p)), k
                )
