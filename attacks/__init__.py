"""Adversarial attacks on PyTorch classifiers: FGSM and PGD, L2 and L-inf, targeted or not.

```python
import attacks
x_adv = attacks.pgd(model, x, y, 8 / 255, norm="linf", steps=10)
```
"""

from attacks._checks import eval_mode
from attacks.fgsm import fgsm
from attacks.losses import LOSSES
from attacks.norms import NORMS
from attacks.pgd import pgd

__all__ = ["LOSSES", "NORMS", "eval_mode", "fgsm", "pgd"]
