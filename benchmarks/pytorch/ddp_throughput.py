#!/usr/bin/python3
"""PyTorch DistributedDataParallel (gloo backend) training throughput on one host.

The script spawns --ranks local processes itself (torch.multiprocessing.spawn,
MASTER_ADDR=127.0.0.1, a free TCP port). Each rank uses --threads intra-op
threads, a per-rank batch of --batch, its own shard of preloaded Fashion-MNIST
images, SGD(lr 0.01, momentum 0.9) and CrossEntropyLoss. The timed region
(forward + backward with gradient allreduce + optimizer step) is bracketed by
barriers and timed on rank 0; global throughput = ranks * batch * steps / elapsed.

    /usr/bin/python3 benchmarks/pytorch/ddp_throughput.py --ranks 2 --threads 1 --model convbn
    /usr/bin/python3 benchmarks/pytorch/ddp_throughput.py --json
"""
import argparse
import json
import os
import socket
import statistics
import sys
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn.parallel import DistributedDataParallel as DDP

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import train_throughput as tt  # noqa: E402  (models, data loading, step function)


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def timed_steps(step, batches, start, steps):
    nb = len(batches)
    i = start
    loss = None
    for _ in range(steps):
        xb, yb = batches[i]
        loss = step(xb, yb)
        i = (i + 1) % nb
    return i, loss


def worker(rank, args, port, queue):
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    torch.set_num_threads(args.threads)
    dist.init_process_group("gloo", rank=rank, world_size=args.ranks)
    _run_rank(rank, args, queue)
    # Leave without running destructors. With torch 1.13 + gloo, tearing down the
    # DDP Reducer / ProcessGroupGloo from Python can deadlock: the main thread holds
    # the GIL while joining a gloo worker thread that needs the GIL to free a tensor.
    dist.barrier()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def _run_rank(rank, args, queue):
    # Each rank gets its own contiguous shard of real images.
    x, y = tt.load_fashion_mnist(args.images, args.data_dir, offset=rank * args.images)
    batches = tt.make_batches(x, y, args.batch)

    torch.manual_seed(args.seed)  # identical init on all ranks (DDP also broadcasts rank 0's)
    model = tt.build_model(args.model, args.fc_as_conv)
    model.train()
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
        batches = [(xb.contiguous(memory_format=torch.channels_last), yb) for xb, yb in batches]
    ddp = DDP(model, bucket_cap_mb=args.bucket_cap_mb)
    step = tt.make_step(ddp, lr=args.lr, momentum=args.momentum)

    idx = 0
    idx, _ = timed_steps(step, batches, idx, args.warmup_steps)

    rates, elapsed, self_cpu, busy = [], [], [], []
    loss = None
    for _ in range(args.repeats):
        dist.barrier()
        b0, c0 = tt.machine_busy_seconds(), time.process_time()
        t0 = time.perf_counter()
        idx, loss = timed_steps(step, batches, idx, args.steps)
        dist.barrier()
        dt = time.perf_counter() - t0
        b1, c1 = tt.machine_busy_seconds(), time.process_time()
        rates.append(args.ranks * args.batch * args.steps / dt)
        elapsed.append(dt)
        self_cpu.append(c1 - c0)
        busy.append((b0, b1))
    # CPU time of all ranks per repeat -> load of *other* processes during the timed region.
    cpu = torch.tensor(self_cpu, dtype=torch.float64)
    dist.all_reduce(cpu)
    others = [tt.others_load(b0, b1, float(c), dt)
              for (b0, b1), c, dt in zip(busy, cpu.tolist(), elapsed)]

    # Sanity: parameters must stay identical across ranks under DDP.
    flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    ref = flat.clone()
    dist.broadcast(ref, src=0)
    max_diff = float((flat - ref).abs().max())
    diffs = [torch.zeros(1) for _ in range(args.ranks)]
    dist.all_gather(diffs, torch.tensor([max_diff]))

    if rank == 0:
        queue.put({
            "rates": rates,
            "others": others,
            "final_loss": float(loss.detach()),
            "max_param_diff": max(float(d) for d in diffs),
            "threads": torch.get_num_threads(),
            "params": int(flat.numel()),
        })


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", choices=["lenet5", "convbn", "mobilenet"], default="convbn")
    p.add_argument("--channels-last", action="store_true",
                   help="model and batches in torch.channels_last (NHWC) memory format")
    p.add_argument("--ranks", type=int, default=2)
    p.add_argument("--threads", type=int, default=1, help="intra-op threads per rank")
    p.add_argument("--batch", type=int, default=64, help="per-rank batch")
    p.add_argument("--warmup-steps", type=int, default=50)
    p.add_argument("--steps", type=int, default=300, help="timed steps per repeat")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--images", type=int, default=4096, help="real images preloaded per rank")
    p.add_argument("--data-dir", default=tt.DATA_DIR)
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--momentum", type=float, default=0.9)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--bucket-cap-mb", type=float, default=25.0, help="DDP gradient bucket size")
    p.add_argument("--fc-as-conv", action="store_true",
                   help="write FC layers as equivalent convolutions (oneDNN) instead of nn.Linear (BLAS)")
    p.add_argument("--json", action="store_true")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    # gloo otherwise resolves the hostname to pick an interface; stay on loopback.
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    port = free_port()
    ctx = mp.get_context("spawn")
    queue = ctx.SimpleQueue()
    mp.spawn(worker, args=(args, port, queue), nprocs=args.ranks, join=True)
    res = queue.get()
    rates = res["rates"]
    if res["final_loss"] != res["final_loss"]:
        raise RuntimeError("loss became NaN")
    r = {
        "framework": "pytorch-ddp-gloo",
        "torch": torch.__version__,
        "torch_deb": tt.torch_deb_version(),
        "model": args.model,
        "ranks": args.ranks,
        "threads_per_rank": res["threads"],
        "batch_per_rank": args.batch,
        "global_batch": args.ranks * args.batch,
        "images_per_sec": round(max(rates), 1),
        "images_per_sec_median": round(statistics.median(rates), 1),
        "images_per_sec_all": [round(x, 1) for x in rates],
        "ms_per_step_best": round(1000.0 * args.ranks * args.batch / max(rates), 3),
        "others_load_all": res["others"],
        "repeats": args.repeats,
        "steps": args.steps,
        "warmup_steps": args.warmup_steps,
        "params": res["params"],
        "final_loss": round(res["final_loss"], 4),
        "max_param_diff_across_ranks": res["max_param_diff"],
        "fc_impl": "conv-onednn" if args.fc_as_conv else "linear-blas",
    }
    if args.json:
        print(json.dumps(r), flush=True)
    else:
        fc = " fc-as-conv" if args.fc_as_conv else ""
        print(f"pytorch-ddp-gloo {r['torch']} {args.model}{fc} ranks={args.ranks} "
              f"threads/rank={r['threads_per_rank']} batch/rank={args.batch}: "
              f"best {r['images_per_sec']:.1f} img/s global, median {r['images_per_sec_median']:.1f} img/s "
              f"({r['ms_per_step_best']:.2f} ms/step best; repeats {r['images_per_sec_all']}; "
              f"max param diff across ranks {r['max_param_diff_across_ranks']:.1e}; "
              f"other processes' load per repeat {r['others_load_all']})", flush=True)


if __name__ == "__main__":
    sys.exit(main())
