"""Adversarial attacks on PyTorch classifiers: FGSM, PGD, APGD and Square; L2 and L-inf.

```python
import attacks
x_adv = attacks.pgd(model, x, y, 8 / 255, norm="linf", steps=10)
attack = attacks.ATTACKS["pgd"]     # every attack by name
```

Every attack has the shape `fn(model, x, y, eps, *, norm, target, loss, clip, ...)`;
what else it takes (`steps`, `restarts`, `generator`, `early_stop`, ...) is
read from its signature. A new attack is one module and one entry in `ATTACKS`.
"""

from collections.abc import Callable

import torch

from attacks.apgd import apgd
from attacks.fgsm import fgsm
from attacks.losses import LOSSES
from attacks.norms import NORMS
from attacks.pgd import pgd
from attacks.runtime import Passes, attack_mode, count_passes, eval_mode, logits_of
from attacks.square import square
from attacks.strong import strong

Attack = Callable[..., torch.Tensor]

# Name -> attack function; callers learn an attack's options from its signature.
ATTACKS: dict[str, Attack] = {
    "fgsm": fgsm,
    "pgd": pgd,
    "apgd": apgd,
    "square": square,
    "strong": strong,
}

__all__ = [
    "ATTACKS",
    "LOSSES",
    "NORMS",
    "Attack",
    "Passes",
    "apgd",
    "attack_mode",
    "count_passes",
    "eval_mode",
    "fgsm",
    "logits_of",
    "pgd",
    "square",
    "strong",
]
