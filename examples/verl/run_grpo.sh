#!/usr/bin/env bash
# GRPO on GSM8K with verl 0.9.1, each prompt's rollouts scored by the RM LASeR picks for it.
# Needs GPUs (rollout runs in vLLM or SGLang). Data: verl's examples/data_preprocess/gsm8k.py.
# Environment: see docs/verl.md (verl==0.9.1 in its own virtualenv, laser-rm installed with --no-deps).
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
python3 -m verl.trainer.main_ppo \
    algorithm.adv_estimator=grpo \
    data.train_files="$HOME/data/gsm8k/train.parquet" \
    data.val_files="$HOME/data/gsm8k/test.parquet" \
    data.train_batch_size=256 \
    data.max_prompt_length=512 \
    data.max_response_length=512 \
    actor_rollout_ref.model.path=Qwen/Qwen2.5-0.5B-Instruct \
    actor_rollout_ref.rollout.name=vllm \
    actor_rollout_ref.rollout.n=8 \
    actor_rollout_ref.actor.ppo_mini_batch_size=64 \
    actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=8 \
    actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=8 \
    actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu=8 \
    reward.reward_manager.source=importlib \
    reward.reward_manager.module.path=pkg://laser.integrations.verl \
    reward.reward_manager.name=LaserRewardManager \
    +reward.reward_kwargs.laser="$HERE/laser_verl.yaml" \
    reward.num_workers=8 \
    trainer.n_gpus_per_node=8 \
    trainer.nnodes=1 \
    trainer.total_epochs=1 \
    trainer.save_freq=20 \
    trainer.logger='["console"]' \
    "$@"
