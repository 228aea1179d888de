#!/usr/bin/python3
"""Checks an ONNX model dptrain exported against dptrain's own outputs.

    onnx_check.py MODEL.onnx OUTPUTS.npy IMAGES_IDX [--classifier] [--limit N]

Runs the onnx checker on MODEL.onnx, then OpenCV's dnn module on the test
images of IMAGES_IDX (an IDX images file, gzip or raw, as pixels in [0, 1])
and compares with OUTPUTS.npy (`dptrain predict` on the same images, in
order; a model with a fixed batch size is run on batches of it): every
output within 1e-4, and with --classifier the same top-1
class wherever dptrain's two largest outputs are more than 1e-5 apart.
Prints one summary line; exits 1 if any check fails.
"""
import argparse
import gzip
import sys

import cv2
import numpy as np
import onnx


def read_idx_images(path):
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    count, rows, cols = (int.from_bytes(data[i:i + 4], "big") for i in (4, 8, 12))
    return np.frombuffer(data, np.uint8, count * rows * cols, 16).reshape(count, 1, rows, cols)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("model")
    p.add_argument("outputs")
    p.add_argument("images")
    p.add_argument("--classifier", action="store_true")
    p.add_argument("--batch", type=int, default=500,
                   help="images per forward, unless the model fixes its batch")
    args = p.parse_args()

    model = onnx.load(args.model)
    onnx.checker.check_model(model, full_check=True)
    fixed = model.graph.input[0].type.tensor_type.shape.dim[0].dim_value
    batch = fixed if fixed > 0 else args.batch
    ours = np.load(args.outputs)
    pixels = read_idx_images(args.images)[: ours.shape[0]].astype(np.float32) / np.float32(255)
    net = cv2.dnn.readNetFromONNX(args.model)
    theirs = []
    for i in range(0, len(pixels), batch):
        net.setInput(np.ascontiguousarray(pixels[i:i + batch]))
        theirs.append(net.forward().reshape((-1,) + ours.shape[1:]))
    theirs = np.concatenate(theirs)
    worst = float(np.max(np.abs(theirs.astype(np.float64) - ours)))
    ok = theirs.shape == ours.shape and worst <= 1e-4
    line = f"{args.model}: {len(ours)} samples, max |opencv - dptrain| {worst:.3g}"
    if args.classifier:
        top = np.sort(ours, axis=1)
        clear = (top[:, -1] - top[:, -2]) > 1e-5
        same = np.argmax(theirs, axis=1) == np.argmax(ours, axis=1)
        line += (f", top-1 identical for {int(same.sum())} of {len(ours)}"
                 f" ({int((~same & clear).sum())} differ where dptrain's top two are apart)")
        ok = ok and bool(np.all(same | ~clear))
    print(line + ("" if ok else "  FAILED"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
