"""How an attack runs a model: eval mode, frozen parameters, logits, counted passes.

These are the context managers and helpers that code calling a model the way
an attack does (robustness curves, galleries, training loops) shares:

```python
with attacks.attack_mode(model), attacks.count_passes(model) as passes:
    logits = attacks.logits_of(model(x))
passes.forward, passes.backward   # sample-passes spent
```
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Run in eval mode (frozen BN statistics); restore each module's flag after.

    A model already in eval mode is left alone: setting every module's flag
    takes tens of microseconds, a noticeable share of a small model's step.
    """
    saved = [(m, m.training) for m in model.modules()]
    if any(flag for _, flag in saved):
        model.eval()
    try:
        yield
    finally:
        for m, flag in saved:
            if m.training != flag:
                m.training = flag


@contextmanager
def attack_mode(model: nn.Module) -> Iterator[None]:
    """Run as an attack should: `eval_mode`, and the parameters frozen.

    An attack needs gradients with respect to the input only; with
    `requires_grad` off, the forward pass keeps nothing for the weights'
    gradients. Each parameter's flag (and its `.grad`) is as it was after.
    """
    thawed = [p for p in model.parameters() if p.requires_grad]
    with eval_mode(model):
        for p in thawed:
            p.requires_grad_(False)
        try:
            yield
        finally:
            for p in thawed:
                p.requires_grad_(True)


def logits_of(output: Any) -> torch.Tensor:
    """The logits in a model's output.

    Accepts a tensor, a tuple or list whose first element is the logits, a
    mapping with a `"logits"` key, or an object with a `.logits` attribute (as
    Hugging Face models return).

    Raises:
        ValueError: For anything else, saying what came back and how to wrap the model.
    """
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    if isinstance(output, Mapping) and isinstance(output.get("logits"), torch.Tensor):
        return output["logits"]
    if isinstance(getattr(output, "logits", None), torch.Tensor):
        return output.logits
    raise ValueError(
        f"model must return logits: a tensor, a tuple/list whose first element is the logits, "
        f"a dict with a 'logits' key or an object with .logits; got {type(output).__name__}. "
        "Wrap the model in an nn.Module whose forward returns the logits tensor"
    )


@dataclass
class Passes:
    """Forward and backward passes through a model, counted in samples.

    A batch of 32 through the model is 32 forward passes; a gradient with
    respect to its input, 32 backward passes.
    """

    forward: int = 0
    backward: int = 0


@contextmanager
def count_passes(model: nn.Module) -> Iterator[Passes]:
    """Count the model's forward and backward passes (per sample) inside the block.

    Works for any attack without its cooperation: a forward hook on `model`
    counts each call's batch, and a hook on the logits counts the gradients
    that flow back through them.
    """
    passes = Passes()

    def backward_hook(n: int) -> Any:
        def hook(grad: torch.Tensor) -> None:
            passes.backward += n

        return hook

    def forward_hook(module: nn.Module, inputs: tuple, output: Any) -> None:
        n = len(inputs[0]) if inputs and isinstance(inputs[0], torch.Tensor) else 0
        passes.forward += n
        try:
            logits = logits_of(output)
        except ValueError:
            return  # the attack reports the bad output itself
        if logits.requires_grad:
            logits.register_hook(backward_hook(n))

    handle = model.register_forward_hook(forward_hook)
    try:
        yield passes
    finally:
        handle.remove()
