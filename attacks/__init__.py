"""Adversarial attacks on PyTorch classifiers: FGSM, PGD, APGD, Square, MI-FGSM, strong; L2, L-inf.

```python
import attacks
x_adv = attacks.pgd(model, x, y, 8 / 255, norm="linf", steps=10)
attack = attacks.ATTACKS["pgd"]     # every attack by name
# Transfer: craft on an ensemble of source models with momentum and input diversity.
x_adv = attacks.mifgsm(attacks.Ensemble([mlp, cnn]), x, y, 0.2, diversity=0.5)
```

Every attack has the shape `fn(model, x, y, eps, *, norm, target, loss, clip, ...)`;
what else it takes (`steps`, `restarts`, `generator`, `early_stop`, ...) is
read from its signature. A new attack is one module and one entry in `ATTACKS`.
"""

from collections.abc import Callable

import torch

from attacks.apgd import apgd
from attacks.ensemble import Ensemble
from attacks.fgsm import fgsm
from attacks.losses import LOSSES
from attacks.mifgsm import mifgsm
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
    "mifgsm": mifgsm,
    "strong": strong,
}

__all__ = [
    "ATTACKS",
    "LOSSES",
    "NORMS",
    "Attack",
    "Ensemble",
    "Passes",
    "apgd",
    "attack_mode",
    "count_passes",
    "eval_mode",
    "fgsm",
    "logits_of",
    "mifgsm",
    "pgd",
    "square",
    "strong",
]
