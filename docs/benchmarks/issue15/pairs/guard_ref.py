"""Nearest-real of the base model's own samples above the bold threshold, against all of them."""
import torch
from papa_core.digits.loop import LoopConfig, DigitsWorld
from papa_core.digits.metrics import ink_mass, nearest_real_distance
from papa_core.digits.data import digits_16
for seed in (0, 1, 2):
    w = DigitsWorld(LoopConfig(task="bold", eval_size=128, seed=seed))
    thr = w.preference.threshold
    g = torch.Generator().manual_seed(77 + seed)
    imgs = w.generate(torch.randn((1024, 1, 16, 16), generator=g), lora=False)
    ink = ink_mass(imgs); nr = nearest_real_distance(imgs)
    bold = ink > thr
    print(f"seed {seed}: threshold {thr:.4f}; base samples: bold share {bold.float().mean():.3f}, nearest-real all {nr.mean():.4f}, "
          f"bold ones {nr[bold].mean():.4f} ({nr[bold].mean()/nr.mean()-1:+.1%}), thin ones {nr[~bold].mean():.4f}; "
          f"top 15% ink {nr[ink > ink.quantile(0.85)].mean():.4f}")
real = digits_16(torch.device('cpu'))[0]
ri = ink_mass(real); x = real.flatten(1).float()
d = torch.cdist(x, x).pow(2); d.fill_diagonal_(float('inf')); loo = (d.min(1).values / x.shape[1]).sqrt()
b = ri > ri.quantile(0.7)
print(f"real digits (leave-one-out): all {loo.mean():.4f}, top-30% ink {loo[b].mean():.4f} ({loo[b].mean()/loo.mean()-1:+.1%})")
