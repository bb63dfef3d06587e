"""laser-rm: LASeR (Learning to Adaptively Select Rewards) with contextual bandits over reward models."""

__version__ = "0.1.0"
