"""Which digits the base model's samples show: all of them, and those above the bold threshold."""
import torch
from papa_core.digits.loop import LoopConfig, DigitsWorld
from papa_core.digits.metrics import classify, ink_mass, normalised_entropy
for seed in (0, 1, 2):
    w = DigitsWorld(LoopConfig(task="bold", eval_size=128, seed=seed))
    g = torch.Generator().manual_seed(77 + seed)
    imgs = w.generate(torch.randn((1024, 1, 16, 16), generator=g), lora=False)
    pred, _ = classify(w.classifier, imgs)
    bold = ink_mass(imgs) > w.preference.threshold
    hist = torch.bincount(pred[bold], minlength=10).tolist()
    print(f"seed {seed}: digits variety all {normalised_entropy(pred, 10):.3f}, above the threshold "
          f"{normalised_entropy(pred[bold], 10):.3f} (counts by digit {hist}); all counts {torch.bincount(pred, minlength=10).tolist()}")
