"""PyTorch CPU reference of the fedssl BYOL + metadata training step (bench/training.ts).

Mirrors shared/src/model (architecture.ts, spec.ts, tf/forward.ts) exactly: ResNet basic
blocks (tiny, resnet18) or bottleneck blocks (resnet50: 1x1 -> 3x3 with the stride -> 1x1 x4,
torchvision v1.5), convolutions without bias and padding k//2, batch norm (eps 1e-5, momentum 0.1; or group norm
with cfg "norm": "group"),
a 3x3 stride-1 stem below 96 px (7x7/2 + 3x3/2 max-pool from 96 px), global average
pooling, MLP heads Linear -> BatchNorm1d -> ReLU -> Linear, Adam (lr 1e-3), and an EMA
target (encoder + projector, incl. running statistics). Both global views go through the
encoders as one batch of 2B images, as in the trainer.

Driven over stdin by bench/training.ts so the two frameworks are measured interleaved:
  step -> prints "ms <wall milliseconds of one step> <loss> <CPU milliseconds, all threads>"
  rss  -> prints "rss <peak resident set size in KiB>"
  quit
Run with Debian's /usr/bin/python3 (python3-torch), one JSON config as argv[1].
"""

import copy
import json
import resource
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

# bench/lib/byol-step.ts: torchvision widths / 4 for both ResNets.
WIDTHS = {"tiny": [16, 32, 64], "resnet18": [16, 16, 32, 64, 128], "resnet50": [16, 16, 32, 64, 128]}
BLOCKS = {"tiny": [1, 1, 1], "resnet18": [2, 2, 2, 2], "resnet50": [3, 4, 6, 3]}
# projectorHidden, projectionDim, metadataHidden
HEADS = {"tiny": (128, 64, 64), "resnet18": (1024, 256, 256), "resnet50": (1024, 256, 256)}
EXPANSION = 4


# "batch" or "group" (cfg["norm"]): the encoder's normalization, as shared/src/model/tf/forward.ts.
NORM = "batch"


def norm2d(c):
    if NORM == "batch":
        return nn.BatchNorm2d(c)
    # architecture.ts groupNormGroups: the largest divisor of c not above 32.
    return nn.GroupNorm(max(g for g in range(1, min(32, c) + 1) if c % g == 0), c)


def conv(cin, cout, k, stride):
    return nn.Conv2d(cin, cout, k, stride, k // 2, bias=False)


class Basic(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = conv(cin, cout, 3, stride)
        self.bn1 = norm2d(cout)
        self.conv2 = conv(cout, cout, 3, 1)
        self.bn2 = norm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(conv(cin, cout, 1, stride), norm2d(cout))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + (self.downsample(x) if self.downsample is not None else x))


class Bottleneck(nn.Module):
    def __init__(self, cin, mid, stride):
        super().__init__()
        cout = mid * EXPANSION
        self.conv1 = conv(cin, mid, 1, 1)
        self.bn1 = norm2d(mid)
        self.conv2 = conv(mid, mid, 3, stride)
        self.bn2 = norm2d(mid)
        self.conv3 = conv(mid, cout, 1, 1)
        self.bn3 = norm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(conv(cin, cout, 1, stride), norm2d(cout))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return F.relu(out + (self.downsample(x) if self.downsample is not None else x))


class Encoder(nn.Module):
    def __init__(self, arch, size):
        super().__init__()
        stages = BLOCKS[arch]
        widths = WIDTHS[arch]
        if len(widths) == len(stages) + 1:
            stem, stage_widths = widths[0], widths[1:]
        else:
            stem, stage_widths = widths[0], widths
        large = size >= 96
        self.conv1 = conv(1, stem, 7 if large else 3, 2 if large else 1)
        self.bn1 = norm2d(stem)
        self.pool = large
        layers = []
        cin = stem
        for s, count in enumerate(stages):
            for b in range(count):
                stride = 2 if b == 0 and s > 0 else 1
                if arch == "resnet50":
                    layers.append(Bottleneck(cin, stage_widths[s], stride))
                    cin = stage_widths[s] * EXPANSION
                else:
                    layers.append(Basic(cin, stage_widths[s], stride))
                    cin = stage_widths[s]
        self.layers = nn.Sequential(*layers)
        self.feature_dim = cin

    def forward(self, x):
        h = F.relu(self.bn1(self.conv1(x)))
        if self.pool:
            h = F.max_pool2d(h, 3, 2, 1)
        return self.layers(h).mean(dim=(2, 3))


def mlp(cin, hidden, cout):
    return nn.Sequential(nn.Linear(cin, hidden), nn.BatchNorm1d(hidden), nn.ReLU(), nn.Linear(hidden, cout))


def byol_pair_loss(p, z):
    return (2 - 2 * (F.normalize(p, dim=1, eps=1e-12) * F.normalize(z, dim=1, eps=1e-12)).sum(1)).mean()


def main():
    cfg = json.loads(sys.argv[1])
    torch.set_num_threads(int(cfg.get("threads", 2)))
    torch.manual_seed(1)
    global NORM
    NORM = cfg.get("norm", "batch")
    arch, size, batch, classes = cfg["arch"], cfg["size"], cfg["batch"], cfg["classes"]
    hidden, proj, meta_hidden = HEADS[arch]
    encoder = Encoder(arch, size)
    projector = mlp(encoder.feature_dim, hidden, proj)
    predictor = mlp(proj, hidden, proj)
    head = mlp(encoder.feature_dim, meta_hidden, classes)
    online = nn.ModuleDict({"encoder": encoder, "projector": projector})
    target = copy.deepcopy(online)
    for p in target.parameters():
        p.requires_grad_(False)
    params = list(online.parameters()) + list(predictor.parameters()) + list(head.parameters())
    optimizer = torch.optim.Adam(params, lr=1e-3)
    views = torch.rand(2 * batch, 1, size, size)
    labels = torch.arange(2 * batch) % classes
    tau, lam = 0.99, 0.5
    n_params = sum(p.numel() for m in (online, predictor) for p in m.parameters())

    def step():
        with torch.no_grad():
            tz1, tz2 = target["projector"](target["encoder"](views)).chunk(2)
        feats = encoder(views)
        p1, p2 = predictor(projector(feats)).chunk(2)
        byol = (byol_pair_loss(p1, tz2) + byol_pair_loss(p2, tz1)) / 2
        ce = F.cross_entropy(head(feats), labels)
        loss = byol + lam * ce
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            for t, o in zip(target.state_dict().values(), online.state_dict().values()):
                if t.dtype.is_floating_point:
                    t.mul_(tau).add_(o, alpha=1 - tau)
        return loss.item()

    print(f"ready {n_params} {torch.__version__}", flush=True)
    for line in sys.stdin:
        cmd = line.strip()
        if cmd == "step":
            t0 = time.perf_counter()
            c0 = time.process_time()
            loss = step()
            wall = (time.perf_counter() - t0) * 1000
            # CPU time of the process (all threads), as the tfjs children report it.
            print(f"ms {wall:.3f} {loss:.6f} {(time.process_time() - c0) * 1000:.3f}", flush=True)
        elif cmd == "rss":
            print(f"rss {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}", flush=True)
        elif cmd == "quit":
            break


if __name__ == "__main__":
    main()
