"""The policy update of one step: DPO + NLL on the step's pairs, through Accelerate.

The policy model and its optimizer pass through ``accelerator.prepare``: under several
processes the model is wrapped for data parallelism (DDP, or FSDP / DeepSpeed from the Accelerate
config), mixed precision comes from the same config, and gradients are synchronised by the
engine, not by hand.

Unequal shards. Processes can hold different numbers of pairs (ties and unscorable prompts drop
pairs), so each process scales its summed pair losses by ``num_processes / total_pairs``: data
parallelism averages gradients over processes, and the average of ``W * sum_r / total`` over the
W processes is ``sum / total``, the single-process mean over the whole batch. A process with no
pairs still joins the gradient synchronisation with a zero-weighted forward pass.

Micro-batches. The pairs are cut into chunks of ``train.micro_batch_pairs``; gradients of all but
a process's last chunk accumulate under ``accelerator.no_sync`` and the last backward
synchronises. ``accelerator.accumulate`` is not used because its step count is fixed when the
Accelerator is built, while the number of chunks varies per step and per process.
"""

from __future__ import annotations

import contextlib
from contextlib import contextmanager

import numpy as np
import torch

from laser.training.losses import laser_loss
from laser.training.records import per_prompt


class PolicyUpdate:
    """The trainable policy, its optimizer and the iteration's frozen reference.

    Args:
        train: the ``train`` config section (lr, weight_decay, beta, nll_weight, grad_clip,
            micro_batch_pairs).
        policy: a :class:`laser.policy.model.Policy`.
        accelerator: the run's ``accelerate.Accelerator``.
    """

    def __init__(self, train, policy, accelerator):
        self.train_cfg, self.policy, self.acc = train, policy, accelerator
        self.params = {n: p for n, p in policy.model.named_parameters() if p.requires_grad}
        optimizer = torch.optim.AdamW(self.params.values(), lr=train.lr, weight_decay=train.weight_decay)
        self.model, self.optimizer = accelerator.prepare(policy.model, optimizer)
        self.ref_state: dict[str, torch.Tensor] = {}

    def state_dict(self) -> dict:
        """``trainable`` weights, the frozen ``reference`` and the ``optimizer`` state."""
        return {"trainable": self.params, "reference": self.ref_state, "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, sd: dict) -> None:
        """Restore :meth:`state_dict`'s output (weights copied in place, onto the params' devices)."""
        with torch.no_grad():
            for name, t in sd["trainable"].items():
                self.params[name].copy_(t)
        self.ref_state = {n: t.to(self.params[n].device) for n, t in sd["reference"].items()}
        self.optimizer.load_state_dict(sd["optimizer"])

    def freeze_reference(self) -> None:
        """The policy as it is now becomes the frozen DPO reference."""
        self.ref_state = {n: p.detach().clone() for n, p in self.params.items()}

    @contextmanager
    def reference_weights(self):
        """Temporarily load the reference weights into the policy."""
        backup = {n: p.detach().clone() for n, p in self.params.items()}
        with torch.no_grad():
            for n, p in self.params.items():
                p.copy_(self.ref_state[n])
        try:
            yield
        finally:
            with torch.no_grad():
                for n, p in self.params.items():
                    p.copy_(backup[n])

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
        total = dist.sum([float(len(flat))])[0]
        mb = self.train_cfg.micro_batch_pairs
        chunks = [flat[j:j + mb] for j in range(0, len(flat), mb)]
        self.policy.model.eval()  # reference (and after-update) log-probs without dropout noise
        with self.reference_weights():
            refs = [self.pair_logps(samples, ch, grad=False)[:2] for ch in chunks]
        self.optimizer.zero_grad(set_to_none=False)
        per_pair = self._backward(samples, chunks, refs, total, dist.n)
        sums = {k: float(torch.cat(v).sum()) if v else 0.0 for k, v in per_pair.items()}
        glob = dict(zip(sums, dist.sum(list(sums.values()))))
        out = {k: (v / total if total else float("nan")) for k, v in glob.items()}
        out["grad_norm"], out["nonfinite"] = self._step(total, out["loss"])
        prompt_of = np.array([i for i, _, _ in flat], dtype=np.int64)
        losses = torch.cat(per_pair["loss"]).numpy() if flat else np.zeros(0)
        out.update(n_pairs=int(total), local_pairs=len(flat), pair_losses=losses,
                   prompt_loss=per_prompt(losses, prompt_of, n_prompts))
        if after:  # every process joins the sum, with or without local pairs
            self.policy.model.eval()
            with torch.no_grad():
                a = [self.loss_terms(samples, ch, grad=False, ref=ref)["loss"] for ch, ref in zip(chunks, refs)]
            a = torch.cat(a).numpy() if a else np.zeros(0)
            out["loss_after"] = dist.sum([float(a.sum())])[0] / total if total else float("nan")
            out["prompt_loss_after"] = per_prompt(a, prompt_of, n_prompts)
        return out

    def _backward(self, samples, chunks, refs, total: float, n_proc: int) -> dict:
        """Backward over the chunks (gradients synchronised on the last one); returns per-pair terms."""
        per_pair = {"loss": [], "dpo": [], "nll": []}
        self.policy.model.train()
        if total == 0:
            return per_pair
        scale = float(n_proc) / total if n_proc > 1 else 1.0 / max(total, 1.0)
        if not chunks:  # no local pairs: a zero-weighted pass keeps the gradient all-reduce in step
            ids = [samples.response_ids[0]]
            logps, _ = self.policy.sequence_logps([samples.prompt_ids[0]], ids, model=self.model)
            self.acc.backward(logps.sum() * 0.0)
            return per_pair
        for j, (ch, ref) in enumerate(zip(chunks, refs)):
            last = j == len(chunks) - 1
            sync = contextlib.nullcontext() if last or n_proc == 1 else self.acc.no_sync(self.model)
            with sync:
                terms = self.loss_terms(samples, ch, grad=True, ref=ref)
                loss = terms["loss"].sum() * scale if n_proc > 1 else terms["loss"].sum() / max(total, 1.0)
                self.acc.backward(loss)
            for k in per_pair:
                per_pair[k].append(terms[k].detach().float().cpu())
        return per_pair

    def _step(self, total: float, mean_loss: float) -> tuple[float, str | None]:
        """Clip, check finiteness and step; returns (gradient norm, what was non-finite or None)."""
        if total == 0:
            return 0.0, None
        clip = self.train_cfg.grad_clip or float("inf")
        grad_norm = float(self.acc.clip_grad_norm_(list(self.params.values()), clip))
        for what, value in (("loss", mean_loss), ("gradient norm", grad_norm)):
            if not np.isfinite(value):
                self.optimizer.zero_grad(set_to_none=False)
                return float("nan"), f"non-finite {what} ({value})"
        self.optimizer.step()
        return grad_norm, None
