"""The policy update of one step: DPO + NLL on the step's pairs, through Accelerate.

The policy model and its optimizer pass through ``accelerator.prepare``: under several
processes the model is wrapped by the engine the Accelerate config names (DDP, FSDP2 or DeepSpeed
ZeRO 1/2/3; :mod:`laser.training.engines` holds what differs between them), mixed precision comes
from the same config, and gradients are synchronised by the engine, not by hand. The trainable
parameters are read after ``prepare`` (FSDP2 and ZeRO-3 replace them with shards).

Unequal shards. Processes can hold different numbers of pairs (ties and unscorable prompts drop
pairs), so each process scales its summed pair losses by ``num_processes / total_pairs``: data
parallelism averages gradients over processes, and the average of ``W * sum_r / total`` over the
W processes is ``sum / total``, the single-process mean over the whole batch.

Equal passes. Sharded engines gather parameters inside every forward pass, so every process runs
the same number of forward and backward passes in a step: the pairs are cut into chunks of
``train.micro_batch_pairs``, and a process with fewer chunks than the most loaded one runs
zero-weighted padding passes. The reference and after-update log-probs are padded the same way.

One optimizer step per training step. Gradients of all passes but the last accumulate without
synchronisation (``accelerator.no_sync``; DeepSpeed: its accumulation boundary is set on the last
pass only), then the engine clips and steps once. ``accelerator.accumulate`` is not used because
its step count is fixed when the Accelerator is built, while the number of chunks varies per step.

The frozen reference. The iteration's reference is a copy of each process's *local* storage of the
trainable parameters (a full copy under DDP, its own shard under FSDP2 and ZeRO-3), swapped in for
the reference forward passes and out again: no communication, memory of one shard of the
trainable parameters, and right for full fine-tuning and LoRA alike (a LoRA reference is the
adapter as it was when the iteration began, not the adapter-free base).
"""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np
import torch

from laser.training.engines import check_engine, make_engine
from laser.training.losses import laser_loss
from laser.training.records import per_prompt


class PolicyUpdate:
    """The trainable policy, its optimizer and the iteration's frozen reference.

    Args:
        train: the ``train`` config section (lr, weight_decay, beta, nll_weight, grad_clip,
            micro_batch_pairs).
        policy: a :class:`laser.policy.model.Policy`.
        accelerator: the run's ``accelerate.Accelerator``.

    Raises:
        laser.training.engines.EngineError: the Accelerate config asks for an engine this machine
            or this update cannot run (:func:`laser.training.engines.check_engine`).
    """

    def __init__(self, train, policy, accelerator):
        self.train_cfg, self.policy, self.acc = train, policy, accelerator
        name = check_engine(accelerator, train)
        trainable = [p for p in policy.model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(trainable, lr=train.lr, weight_decay=train.weight_decay)
        self.model, self.optimizer = accelerator.prepare(policy.model, optimizer)
        self.engine = make_engine(name, accelerator, self.model, self.optimizer)
        self.ref_state: dict[str, torch.Tensor] = {}

    @property
    def params(self) -> dict[str, torch.Tensor]:
        """The trainable parameters as the engine holds them (read after ``prepare``)."""
        return self.engine.params

    def freeze_reference(self) -> None:
        """The policy as it is now becomes the frozen DPO reference."""
        self.ref_state = self.engine.snapshot()

    @contextmanager
    def reference_weights(self):
        """Temporarily load the reference weights into the policy (each process its local storage)."""
        backup = self.engine.snapshot()
        self.engine.restore(self.ref_state)
        try:
            yield
        finally:
            self.engine.restore(backup)

    # ----- checkpoints ----------------------------------------------------------------------
    def state_dict(self) -> dict:
        """Full (gathered) CPU tensors: ``trainable``, ``reference`` and ``optimizer`` (AdamW's
        ``state_dict()`` form over the trainable parameters in :attr:`params` order), the same under
        every engine. A collective under sharding: every process calls it."""
        reference = {}
        if self.ref_state:
            with self.reference_weights():
                reference = self.engine.gather_lp()
        return {
            "trainable": self.engine.full_params(),
            "reference": reference,
            "optimizer": self.engine.optimizer_state(),
        }

    def load_state_dict(self, sd: dict) -> None:
        """Restore :meth:`state_dict`'s output (written under any engine); every process calls it."""
        if sd["reference"]:
            self.engine.load_lp(sd["reference"])
            self.ref_state = self.engine.snapshot()
        self.engine.load_full_params(sd["trainable"])
        self.engine.load_optimizer_state(sd["optimizer"])

    def export_state_dict(self) -> dict | None:
        """The whole model's full state dict for ``save_pretrained`` when the engine shards it (a
        collective: every process calls it; the main process gets the tensors), else None."""
        return self.engine.export_state_dict()

    def signature(self) -> dict[str, list[int]]:
        """The trainable parameters' full shapes (checked on resume)."""
        return self.engine.signature()

    # ----- the update -----------------------------------------------------------------------
    def pair_logps(self, samples, flat: list[tuple[int, int, int]], grad: bool):
        """Log-probs of chosen and rejected, and chosen lengths, for (prompt, chosen, rejected) triples."""
        prompt_ids = [samples.prompt_ids[p] for p, _, _ in flat]
        ids = [samples.response_ids[c] for _, c, _ in flat] + [samples.response_ids[r] for _, _, r in flat]
        with torch.set_grad_enabled(grad):
            logps, lengths = self.policy.sequence_logps(prompt_ids + prompt_ids, ids, model=self.model)
        m = len(flat)
        return logps[:m], logps[m:], lengths[:m]

    def loss_terms(self, samples, flat, grad: bool, ref) -> dict:
        """Per-pair loss, DPO and NLL terms (:func:`laser.training.losses.laser_loss`)."""
        pc, pr, lc = self.pair_logps(samples, flat, grad)
        t = self.train_cfg
        return laser_loss(pc, pr, ref[0], ref[1], lc, t.beta, t.nll_weight)

    def _padding(self, samples, grad: bool) -> torch.Tensor:
        """A zero-weighted forward pass (a process with fewer chunks keeps the engine's collectives in step)."""
        if samples.prompt_ids and samples.response_ids:
            prompt, response = samples.prompt_ids[0], samples.response_ids[0]
        else:  # an empty shard
            prompt, response = [self.policy.eos_id], [self.policy.eos_id]
        with torch.set_grad_enabled(grad):
            logps, _ = self.policy.sequence_logps([prompt], [response or [self.policy.eos_id]], model=self.model)
        return logps.sum() * 0.0

    def _forwards(self, samples, chunks: list, n_passes: int, fn) -> list:
        """``fn(chunk)`` for this process's chunks, then padding passes up to ``n_passes`` (no grad)."""
        out = [fn(ch) for ch in chunks]
        for _ in range(n_passes - len(chunks)):
            self._padding(samples, grad=False)
        return out

    def run(self, samples, flat: list[tuple[int, int, int]], n_prompts: int, dist, after: bool = False) -> dict:
        """Compute the loss of every pair and take one optimizer step (every process must call this).

        Args:
            samples: this process's samples; flat: its (prompt, chosen, rejected) triples.
            n_prompts: prompts in this shard (for the per-prompt losses).
            dist: :class:`laser.training.dist.Dist`.
            after: also compute the loss of the same pairs after the step (``loss_after``).

        Returns:
            ``loss``, ``dpo``, ``nll`` (means over every process's pairs), ``grad_norm``, ``n_pairs``,
            ``local_pairs``, ``pair_losses`` (this shard's, training order), ``prompt_loss`` and, with
            ``after``, ``loss_after`` and ``prompt_loss_after``. ``nonfinite`` names a non-finite
            loss or gradient norm (the step was not applied).
        """
        mb = self.train_cfg.micro_batch_pairs
        counts = dist.all_gather(len(flat))
        total = float(sum(counts))
        n_passes = max(-(-c // mb) for c in counts)  # the most loaded process's chunks
        chunks = [flat[j : j + mb] for j in range(0, len(flat), mb)]
        self.policy.model.eval()  # reference (and after-update) log-probs without dropout noise
        with torch.no_grad(), self.reference_weights():
            refs = self._forwards(samples, chunks, n_passes, lambda ch: self.pair_logps(samples, ch, grad=False)[:2])
        per_pair, glob = self._backward(samples, chunks, refs, total, n_passes, dist)
        out = {k: (v / total if total else float("nan")) for k, v in glob.items()}
        out["grad_norm"], out["nonfinite"] = self._step(total, out["loss"])
        prompt_of = np.array([i for i, _, _ in flat], dtype=np.int64)
        losses = torch.cat(per_pair["loss"]).numpy() if flat else np.zeros(0)
        out.update(
            n_pairs=int(total),
            local_pairs=len(flat),
            pair_losses=losses,
            prompt_loss=per_prompt(losses, prompt_of, n_prompts),
        )
        if after:  # every process joins the passes and the sum, with or without local pairs
            self.policy.model.eval()
            with torch.no_grad():
                a = self._forwards(
                    samples,
                    list(zip(chunks, refs, strict=True)),
                    n_passes,
                    lambda c: self.loss_terms(samples, c[0], grad=False, ref=c[1])["loss"],
                )
            a = torch.cat(a).numpy() if a else np.zeros(0)
            out["loss_after"] = dist.sum([float(a.sum())])[0] / total if total else float("nan")
            out["prompt_loss_after"] = per_prompt(a, prompt_of, n_prompts)
        return out

    def _backward(self, samples, chunks, refs, total: float, n_passes: int, dist) -> tuple[dict, dict]:
        """The step's backward passes (synchronised on the last); returns per-pair terms and global sums.

        The global sums are taken before the last backward pass, so an engine that steps inside
        it (DeepSpeed) can be told the loss is not finite (:meth:`Engine.poison`).
        """
        per_pair = {"loss": [], "dpo": [], "nll": []}
        self.policy.model.train()
        self.engine.begin()
        glob = {k: 0.0 for k in per_pair}
        scale = float(dist.world) / max(total, 1.0)
        for j in range(n_passes):
            if j < len(chunks):
                terms = self.loss_terms(samples, chunks[j], grad=True, ref=refs[j])
                loss = terms["loss"].sum() * scale
                for k in per_pair:
                    per_pair[k].append(terms[k].detach().float().cpu())
            else:
                loss = self._padding(samples, grad=True)
            if j == n_passes - 1:
                sums = [float(torch.cat(v).sum()) if v else 0.0 for v in per_pair.values()]
                glob = dict(zip(per_pair, dist.sum(sums), strict=True))
                if not np.isfinite(glob["loss"]):
                    loss = self.engine.poison(loss)
            self.engine.backward(loss, last=j == n_passes - 1)
        return per_pair, glob

    def _step(self, total: float, mean_loss: float) -> tuple[float, str | None]:
        """Clip, check finiteness and step; returns (gradient norm, what was non-finite or None)."""
        if total == 0:
            return 0.0, None
        finite = bool(np.isfinite(mean_loss))
        grad_norm = self.engine.step(self.train_cfg.grad_clip or float("inf"), finite)
        if not finite:
            return float("nan"), f"non-finite loss ({mean_loss})"
        if not np.isfinite(grad_norm):
            return float("nan"), f"non-finite gradient norm ({grad_norm})"
        return grad_norm, None
