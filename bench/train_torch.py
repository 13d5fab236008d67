#!/usr/bin/env python3
"""The original train.py loop in PyTorch on virnucpro's embeddings files, timed per epoch.

  train_torch.py DNA.safetensors PROTEIN.safetensors LABELS.tsv EPOCHS THREADS

Same model (3328 -> 512 -> BatchNorm1d -> ReLU -> Dropout(0.5) -> 2, Xavier init), loss,
optimiser (SGD lr 2e-4, momentum 0.9), StepLR(10, 0.85), batches of 32 shuffled by a
DataLoader, 90/10 random split, and a validation pass with the original's metrics each epoch,
as `virnucpro train` does. Early stopping is off (a fixed number of epochs is timed). Prints
one JSON line: epochs, seconds, epochs per second. Needs torch, numpy, safetensors, sklearn
is not needed (the metrics are computed with numpy here; their cost is negligible).
"""
import json
import sys
import time

import numpy as np
import torch
from safetensors import safe_open
from torch import nn
import torch.nn.functional as F


def load(path):
    with safe_open(path, "numpy") as f:
        ids = f.metadata()["ids"].split("\n")
        return ids, f.get_tensor("embeddings")


class MLPClassifier(nn.Module):
    def __init__(self, i, h, c, p):
        super().__init__()
        self.hidden_layer = nn.Linear(i, h)
        self.bn1 = nn.BatchNorm1d(h)
        self.output_layer = nn.Linear(h, c)
        self.dropout = nn.Dropout(p)
        nn.init.xavier_uniform_(self.hidden_layer.weight)
        nn.init.xavier_uniform_(self.output_layer.weight)

    def forward(self, x):
        return self.output_layer(self.dropout(F.relu(self.bn1(self.hidden_layer(x)))))


def main():
    dna, prot, labels, epochs, threads = sys.argv[1:6]
    epochs, threads = int(epochs), int(threads)
    torch.set_num_threads(threads)
    torch.manual_seed(42)
    ids, d = load(dna)
    pids, p = load(prot)
    assert ids == pids
    lab = dict(l.rstrip("\n").split("\t") for l in open(labels).readlines()[1:])
    x = torch.from_numpy(np.concatenate([d, p], axis=1))
    y = torch.tensor([1 if lab[i] == "virus" else 0 for i in ids])
    ds = torch.utils.data.TensorDataset(x, y)
    n_train = int(0.9 * len(ds))
    train, val = torch.utils.data.random_split(ds, [n_train, len(ds) - n_train],
                                               generator=torch.Generator().manual_seed(42))
    tl = torch.utils.data.DataLoader(train, batch_size=32, shuffle=True)
    vl = torch.utils.data.DataLoader(val, batch_size=32, shuffle=False)
    m = MLPClassifier(x.shape[1], 512, 2, 0.5)
    opt = torch.optim.SGD(m.parameters(), lr=2e-4, momentum=0.9)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=10, gamma=0.85)
    start = time.time()
    for _ in range(epochs):
        m.train()
        for xb, yb in tl:
            opt.zero_grad()
            loss = F.cross_entropy(m(xb), yb)
            loss.backward()
            opt.step()
        m.eval()
        with torch.no_grad():
            outs = [(m(xb), yb) for xb, yb in vl]
            lo = torch.cat([o for o, _ in outs])
            yt = torch.cat([t for _, t in outs]).numpy()
            F.cross_entropy(lo, torch.from_numpy(yt)).item()
            pred = lo.argmax(1).numpy()
            (pred == yt).mean()
        sched.step()
    secs = time.time() - start
    print(json.dumps({"epochs": epochs, "seconds": secs, "epochs_per_second": epochs / secs,
                      "rows": len(ds), "threads": threads, "torch": torch.__version__}))


if __name__ == "__main__":
    main()
