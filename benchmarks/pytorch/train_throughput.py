#!/usr/bin/python3
"""PyTorch reference training throughput (images/s), the peer of dptrain's figures.

Measures forward + backward + optimizer step only (zero_grad included), with the
data already resident in memory as tensors: a few thousand real Fashion-MNIST
images are preloaded and normalised once, then cycled through batch by batch.
The ImageNet-shape nets (torchvision's alexnet, vgg16, resnet18, resnet50, as
configs/*_imagenet are) train on synthetic 224x224x3 batches of 1000 classes,
as scaling studies use them. --bf16 runs under torch.autocast("cpu", bfloat16).

Run with Debian's interpreter (it has python3-torch and python3-torchvision):
    /usr/bin/python3 benchmarks/pytorch/train_throughput.py --model both --threads 2
    /usr/bin/python3 benchmarks/pytorch/train_throughput.py --model convbn --threads 1 --json
    /usr/bin/python3 benchmarks/pytorch/train_throughput.py --model resnet50 --batch 32 \
        --channels-last --warmup-steps 3 --steps 10
"""
import argparse
import gzip
import json
import os
import platform
import statistics
import struct
import sys
import time

import torch
import torch.nn as nn

DATA_DIR = "/usr/share/datasets/fashion-mnist"
# Fashion-MNIST training-set pixel mean / std (pixels scaled to [0,1]).
FMNIST_MEAN = 0.2860
FMNIST_STD = 0.3530


# --------------------------------------------------------------------------- models
def lenet5():
    return nn.Sequential(
        nn.Conv2d(1, 6, kernel_size=5, padding=2), nn.ReLU(), nn.MaxPool2d(2),   # 6x14x14
        nn.Conv2d(6, 16, kernel_size=5), nn.ReLU(), nn.MaxPool2d(2),             # 16x5x5
        nn.Flatten(),
        nn.Linear(400, 120), nn.ReLU(),
        nn.Linear(120, 84), nn.ReLU(),
        nn.Linear(84, 10),
    )


def convbn():
    return nn.Sequential(
        nn.Conv2d(1, 32, kernel_size=3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),   # 32x14x14
        nn.Conv2d(32, 64, kernel_size=3, padding=1), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2),  # 64x7x7
        nn.Flatten(),
        nn.Linear(3136, 128), nn.ReLU(),
        nn.Linear(128, 10),
    )


def mobilenet():
    """configs/mobilenet_fmnist.textproto: a stem, then depthwise-separable blocks."""
    def block(cin, cout, stride):
        return [nn.Conv2d(cin, cin, 3, stride=stride, padding=1, groups=cin, bias=False),
                nn.BatchNorm2d(cin), nn.ReLU(),
                nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]
    return nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU(),
        *block(32, 64, 1), *block(64, 128, 2), *block(128, 128, 1), *block(128, 256, 2),
        *block(256, 256, 1),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(256, 10),
    )


MODELS = {"lenet5": lenet5, "convbn": convbn, "mobilenet": mobilenet}
IMAGENET_MODELS = ["alexnet", "vgg16", "resnet18", "resnet50"]


def imagenet_model(name):
    import torchvision
    return getattr(torchvision.models, name)(num_classes=1000)


def synthetic_imagenet(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 224, 224, generator=g), torch.randint(0, 1000, (n,), generator=g)


# Same models with every fully-connected layer written as the mathematically
# identical convolution (kernel = full remaining spatial extent, then 1x1), so
# the FC layers run through oneDNN instead of the BLAS torch is linked against.
# Optional (--fc-as-conv): Debian's python3-torch links the reference (netlib)
# libblas, which makes nn.Linear (aten::addmm / aten::mm) dominate convbn's step.
def lenet5_fc_as_conv():
    return nn.Sequential(
        nn.Conv2d(1, 6, kernel_size=5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6, 16, kernel_size=5), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 120, kernel_size=5), nn.ReLU(),   # == Linear(400, 120)
        nn.Conv2d(120, 84, kernel_size=1), nn.ReLU(),   # == Linear(120, 84)
        nn.Conv2d(84, 10, kernel_size=1),               # == Linear(84, 10)
        nn.Flatten(),
    )


def convbn_fc_as_conv():
    return nn.Sequential(
        nn.Conv2d(1, 32, kernel_size=3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, kernel_size=3, padding=1), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(64, 128, kernel_size=7), nn.ReLU(),   # == Linear(3136, 128)
        nn.Conv2d(128, 10, kernel_size=1),              # == Linear(128, 10)
        nn.Flatten(),
    )


MODELS_FC_AS_CONV = {"lenet5": lenet5_fc_as_conv, "convbn": convbn_fc_as_conv}


def build_model(name, fc_as_conv=False):
    if name in IMAGENET_MODELS:
        return imagenet_model(name)
    if fc_as_conv and name not in MODELS_FC_AS_CONV:
        raise ValueError(f"--fc-as-conv has no variant of {name}")
    return (MODELS_FC_AS_CONV if fc_as_conv else MODELS)[name]()


def torch_deb_version():
    """Debian package version of python3-torch (its torch.__version__ reads 1.13.0a0)."""
    try:
        import subprocess
        out = subprocess.run(["dpkg-query", "-W", "-f=${Version}", "python3-torch"],
                             capture_output=True, text=True, timeout=10)
        return out.stdout.strip() or None
    except Exception:
        return None


def blas_library():
    """Path of the BLAS shared library mapped into this process (what nn.Linear uses)."""
    torch.mm(torch.ones(8, 8), torch.ones(8, 8))
    try:
        with open("/proc/self/maps") as f:
            libs = {line.split()[-1] for line in f if "blas" in line.lower() and "/" in line}
        libs = sorted(os.path.realpath(l) for l in libs)
        return ",".join(sorted(set(libs))) or "unknown"
    except OSError:
        return "unknown"


# --------------------------------------------------------------------------- data
def load_fashion_mnist(n, data_dir=DATA_DIR, offset=0):
    """Read the first offset+n training images/labels from the idx gzip files
    (pure stdlib parsing, no numpy). Returns (float32 N,1,28,28 normalised, int64 N)."""
    img_path = os.path.join(data_dir, "train-images-idx3-ubyte.gz")
    lbl_path = os.path.join(data_dir, "train-labels-idx1-ubyte.gz")
    with gzip.open(img_path, "rb") as f:
        magic, count, rows, cols = struct.unpack(">IIII", f.read(16))
        if magic != 2051:
            raise ValueError(f"{img_path}: bad idx3 magic {magic}")
        n = min(n, count - offset)
        f.read(offset * rows * cols)
        raw = f.read(n * rows * cols)
    with gzip.open(lbl_path, "rb") as f:
        magic, lcount = struct.unpack(">II", f.read(8))
        if magic != 2049:
            raise ValueError(f"{lbl_path}: bad idx1 magic {magic}")
        f.read(offset)
        lraw = f.read(n)
    x = torch.frombuffer(bytearray(raw), dtype=torch.uint8).reshape(n, 1, rows, cols)
    x = (x.to(torch.float32) / 255.0 - FMNIST_MEAN) / FMNIST_STD
    y = torch.frombuffer(bytearray(lraw), dtype=torch.uint8).to(torch.int64)
    return x.contiguous(), y.contiguous()


def make_batches(x, y, batch):
    """Pre-slice into contiguous batches (drop remainder) so the timed loop does no copying."""
    nb = x.shape[0] // batch
    if nb == 0:
        raise ValueError(f"need at least {batch} preloaded images, got {x.shape[0]}")
    return [(x[i * batch:(i + 1) * batch].contiguous(), y[i * batch:(i + 1) * batch].contiguous())
            for i in range(nb)]


# --------------------------------------------------------------------------- timing
def make_step(model, lr=0.01, momentum=0.9, bf16=False):
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)
    loss_fn = nn.CrossEntropyLoss()

    def step(xb, yb):
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = loss_fn(model(xb), yb)
        loss.backward()
        opt.step()
        return loss

    return step


def run_steps(step, batches, start, steps=None, seconds=None):
    """Run `steps` training steps (or as many as fit in `seconds`).
    Returns (steps_done, elapsed_s, next_batch_index, last_loss)."""
    nb = len(batches)
    i = start
    done = 0
    loss = None
    t0 = time.perf_counter()
    if seconds is None:
        for _ in range(steps):
            xb, yb = batches[i]
            loss = step(xb, yb)
            i = (i + 1) % nb
        done = steps
        t1 = time.perf_counter()
    else:
        deadline = t0 + seconds
        while True:
            xb, yb = batches[i]
            loss = step(xb, yb)
            i = (i + 1) % nb
            done += 1
            t1 = time.perf_counter()
            if t1 >= deadline:
                break
    return done, t1 - t0, i, loss


def machine_busy_seconds():
    """Busy CPU seconds summed over all CPUs since boot (Linux /proc/stat), or None."""
    try:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:9]]
        user, nice, system, _idle, _iowait, irq, softirq, steal = v
        return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError):
        return None


def others_load(busy0, busy1, self_cpu, elapsed):
    """Average number of CPUs kept busy by *other* processes during a timed region
    (machine busy time minus our own CPU time, over wall time). ~0 means a clean run;
    on this 2-core box anything above ~0.1 means the figure is contaminated."""
    if busy0 is None or busy1 is None or elapsed <= 0:
        return None
    return round(max(0.0, (busy1 - busy0) - self_cpu) / elapsed, 2)


def bench_model(name, args, batches):
    torch.manual_seed(args.seed)
    model = build_model(name, args.fc_as_conv)
    model.train()
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
        batches = [(x.contiguous(memory_format=torch.channels_last), y) for x, y in batches]
    step = make_step(model, lr=args.lr, momentum=args.momentum, bf16=args.bf16)

    idx = 0
    if args.warmup_steps > 0:
        _, _, idx, _ = run_steps(step, batches, idx, steps=args.warmup_steps)

    rates, step_ms, others = [], [], []
    for _ in range(args.repeats):
        b0, c0 = machine_busy_seconds(), time.process_time()
        done, dt, idx, loss = run_steps(step, batches, idx, steps=args.steps, seconds=args.seconds)
        b1, c1 = machine_busy_seconds(), time.process_time()
        rates.append(done * args.batch / dt)
        step_ms.append(1000.0 * dt / done)
        others.append(others_load(b0, b1, c1 - c0, dt))
    final_loss = float(loss.detach())
    if final_loss != final_loss:  # NaN guard: a diverged run is not a valid benchmark
        raise RuntimeError(f"{name}: loss became NaN")

    return {
        "framework": "pytorch",
        "torch": torch.__version__,
        "torch_deb": torch_deb_version(),
        "model": name,
        "batch": args.batch,
        "threads": torch.get_num_threads(),
        "images_per_sec": round(max(rates), 1),
        "images_per_sec_median": round(statistics.median(rates), 1),
        "images_per_sec_all": [round(r, 1) for r in rates],
        "ms_per_step_best": round(min(step_ms), 3),
        "others_load_all": others,
        "repeats": args.repeats,
        "steps": args.steps if args.seconds is None else None,
        "seconds": args.seconds,
        "warmup_steps": args.warmup_steps,
        "params": sum(p.numel() for p in model.parameters()),
        "final_loss": round(final_loss, 4),
        "fc_impl": "conv-onednn" if args.fc_as_conv else "linear-blas",
        "memory_format": "channels_last" if args.channels_last else "contiguous",
        "precision": "bf16 autocast" if args.bf16 else "fp32",
        "mkldnn": torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled,
        "blas": blas_library(),
        "python": platform.python_version(),
    }


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", choices=["lenet5", "convbn", "mobilenet", "both"] + IMAGENET_MODELS,
                   default="both")
    p.add_argument("--bf16", action="store_true",
                   help='forward under torch.autocast("cpu", dtype=torch.bfloat16)')
    p.add_argument("--channels-last", action="store_true",
                   help="model and batches in torch.channels_last (NHWC) memory format")
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default 2)")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--warmup-steps", type=int, default=50)
    p.add_argument("--steps", type=int, default=300, help="timed steps per repeat")
    p.add_argument("--seconds", type=float, default=None,
                   help="instead of --steps, run each timed repeat for this many seconds")
    p.add_argument("--repeats", type=int, default=3, help="timed repeats; best and median reported")
    p.add_argument("--images", type=int, default=4096, help="real images preloaded and cycled")
    p.add_argument("--data-dir", default=DATA_DIR)
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--momentum", type=float, default=0.9)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--fc-as-conv", action="store_true",
                   help="write FC layers as equivalent convolutions (oneDNN) instead of nn.Linear (BLAS)")
    p.add_argument("--json", action="store_true", help="print one JSON object per model")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.model in IMAGENET_MODELS:
        x, y = synthetic_imagenet(2 * args.batch, args.seed)
    else:
        x, y = load_fashion_mnist(args.images, args.data_dir)
    batches = make_batches(x, y, args.batch)
    names = ["lenet5", "convbn"] if args.model == "both" else [args.model]
    for name in names:
        r = bench_model(name, args, batches)
        if args.json:
            print(json.dumps(r), flush=True)
        else:
            fc = (" fc-as-conv" if args.fc_as_conv else "") + (
                " channels_last" if args.channels_last else "") + (" bf16" if args.bf16 else "")
            print(f"pytorch {r['torch']} {name:7s}{fc} batch={r['batch']} threads={r['threads']}: "
                  f"best {r['images_per_sec']:.1f} img/s, median {r['images_per_sec_median']:.1f} img/s "
                  f"({r['ms_per_step_best']:.2f} ms/step best; repeats {r['images_per_sec_all']}; "
                  f"other processes' load per repeat {r['others_load_all']})",
                  flush=True)


if __name__ == "__main__":
    sys.exit(main())
