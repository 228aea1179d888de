#!/usr/bin/env python3
"""Writes configs/{alexnet,vgg16,resnet18,resnet50}_imagenet.textproto: the
classic nets at their real shapes (224 x 224 x 3 input, 1000 classes), layer
for layer as torchvision builds them (AlexNet, VGG-16 configuration D,
ResNet-18 and ResNet-50 v1.5 with the stride on the bottleneck's 3x3
convolution), on synthetic data of that shape, as scaling studies run them.
Torchvision's adaptive average pooling is the identity at 224 x 224 for
AlexNet and VGG and is written as such; its Dropout before a classifier
layer is kept.

    scripts/imagenet_configs.py        (rewrites the four files)
"""
import os

HEADER = """# {title}: written by scripts/imagenet_configs.py (edit that, not this).
# 224 x 224 x 3 synthetic images of 1000 classes, the shape scaling studies
# use; layer for layer as torchvision's {torch_name}. Its 3x3 stride-1
# convolutions run oneDNN's Winograd kernels where it has them (AVX-512);
# --set net.convolution_algorithm=DIRECT for the direct ones.
name: "{name}"
data {{
  format: SYNTHETIC
  batch_size: 32
  synthetic {{ train_size: 512 test_size: 64 channels: 3 height: 224 width: 224 classes: 1000 }}
}}
net {{
  convolution_algorithm: WINOGRAD
"""
# torchvision's reference recipes: lr 0.01 for AlexNet and VGG, 0.1 per 256
# images for ResNet (0.0125 at this batch of 32). At 0.1, VGG-16's loss
# overflowed within six steps, and its step times scattered by 2x: a
# benchmark on runaway values times those.
FOOTER = """}}
solver {{
  epochs: 1
  base_lr: {base_lr}
  momentum: 0.9
  weight_decay: 0.0001
  lr_schedule {{ policy: COSINE warmup_epochs: 0.1 }}
}}
runtime {{ log_every_steps: 1 eval_every_epochs: 0 }}
checkpoint {{ every_epochs: 0 }}
"""


class Net:
    def __init__(self):
        self.lines = []

    def add(self, name, type_, bottom=None, **params):
        parts = [f'name: "{name}"', f'type: "{type_}"']
        for b in ([bottom] if isinstance(bottom, str) else bottom or []):
            parts.append(f'bottom: "{b}"')
        for key, fields in params.items():
            inner = " ".join(f"{k}: {v}" for k, v in fields.items())
            parts.append(f"{key} {{ {inner} }}")
        self.lines.append("  layer { " + " ".join(parts) + " }")
        return name

    def conv(self, name, out, k, s=1, p=0, bias=True, bottom=None):
        fields = {"num_output": out, "kernel_size": k, "stride": s, "pad": p}
        if not bias:
            fields["bias"] = "false"
        return self.add(name, "Convolution", bottom, convolution=fields)

    def text(self):
        return "\n".join(self.lines) + "\n"


def alexnet():
    n = Net()
    n.conv("conv1", 64, 11, 4, 2); n.add("relu1", "ReLU")
    n.add("pool1", "MaxPool", pooling={"kernel_size": 3, "stride": 2})
    n.conv("conv2", 192, 5, 1, 2); n.add("relu2", "ReLU")
    n.add("pool2", "MaxPool", pooling={"kernel_size": 3, "stride": 2})
    n.conv("conv3", 384, 3, 1, 1); n.add("relu3", "ReLU")
    n.conv("conv4", 256, 3, 1, 1); n.add("relu4", "ReLU")
    n.conv("conv5", 256, 3, 1, 1); n.add("relu5", "ReLU")
    n.add("pool5", "MaxPool", pooling={"kernel_size": 3, "stride": 2})
    n.add("drop6", "Dropout")
    n.add("fc6", "InnerProduct", inner_product={"num_output": 4096, "num_input": 9216})
    n.add("relu6", "ReLU"); n.add("drop7", "Dropout")
    n.add("fc7", "InnerProduct", inner_product={"num_output": 4096})
    n.add("relu7", "ReLU")
    n.add("fc8", "InnerProduct", inner_product={"num_output": 1000, "weight_init": "XAVIER_UNIFORM"})
    n.add("loss", "SoftmaxCrossEntropy")
    return n


def vgg16():
    n = Net()
    stage = 1
    for widths in ([64, 64], [128, 128], [256, 256, 256], [512, 512, 512], [512, 512, 512]):
        for i, w in enumerate(widths, 1):
            n.conv(f"conv{stage}_{i}", w, 3, 1, 1); n.add(f"relu{stage}_{i}", "ReLU")
        n.add(f"pool{stage}", "MaxPool", pooling={"kernel_size": 2, "stride": 2})
        stage += 1
    n.add("fc6", "InnerProduct", inner_product={"num_output": 4096, "num_input": 25088})
    n.add("relu6", "ReLU"); n.add("drop6", "Dropout")
    n.add("fc7", "InnerProduct", inner_product={"num_output": 4096})
    n.add("relu7", "ReLU"); n.add("drop7", "Dropout")
    n.add("fc8", "InnerProduct", inner_product={"num_output": 1000, "weight_init": "XAVIER_UNIFORM"})
    n.add("loss", "SoftmaxCrossEntropy")
    return n


def resnet(blocks, bottleneck):
    n = Net()
    n.conv("conv1", 64, 7, 2, 3, bias=False); n.add("bn1", "BatchNorm"); n.add("relu1", "ReLU")
    x = n.add("pool1", "MaxPool", pooling={"kernel_size": 3, "stride": 2, "pad": 1})
    channels = 64
    for stage, (count, width) in enumerate(zip(blocks, [64, 128, 256, 512]), 1):
        out = width * (4 if bottleneck else 1)
        for b in range(count):
            p = f"layer{stage}_{b}"
            stride = 2 if stage > 1 and b == 0 else 1
            if bottleneck:
                n.conv(f"{p}_conv1", width, 1, 1, 0, bias=False, bottom=x)
                n.add(f"{p}_bn1", "BatchNorm"); n.add(f"{p}_relu1", "ReLU")
                n.conv(f"{p}_conv2", width, 3, stride, 1, bias=False)
                n.add(f"{p}_bn2", "BatchNorm"); n.add(f"{p}_relu2", "ReLU")
                n.conv(f"{p}_conv3", out, 1, 1, 0, bias=False)
                last = n.add(f"{p}_bn3", "BatchNorm")
            else:
                n.conv(f"{p}_conv1", width, 3, stride, 1, bias=False, bottom=x)
                n.add(f"{p}_bn1", "BatchNorm"); n.add(f"{p}_relu1", "ReLU")
                n.conv(f"{p}_conv2", width, 3, 1, 1, bias=False)
                last = n.add(f"{p}_bn2", "BatchNorm")
            shortcut = x
            if stride != 1 or channels != out:
                n.conv(f"{p}_down", out, 1, stride, 0, bias=False, bottom=x)
                shortcut = n.add(f"{p}_down_bn", "BatchNorm")
            n.add(f"{p}_add", "Add", bottom=[last, shortcut])
            x = n.add(f"{p}_relu", "ReLU")
            channels = out
    n.add("pool", "GlobalAvgPool")
    n.add("fc", "InnerProduct",
          inner_product={"num_output": 1000, "num_input": channels, "weight_init": "XAVIER_UNIFORM"})
    n.add("loss", "SoftmaxCrossEntropy")
    return n


NETS = [
    ("alexnet_imagenet", "AlexNet", "alexnet", alexnet, 0.01),
    ("vgg16_imagenet", "VGG-16", "vgg16", vgg16, 0.01),
    ("resnet18_imagenet", "ResNet-18", "resnet18", lambda: resnet([2, 2, 2, 2], False), 0.0125),
    ("resnet50_imagenet", "ResNet-50", "resnet50", lambda: resnet([3, 4, 6, 3], True), 0.0125),
]


def main():
    configs = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "configs")
    for name, title, torch_name, build, base_lr in NETS:
        text = (HEADER.format(title=title, torch_name=torch_name, name=name) + build().text() +
                FOOTER.format(base_lr=base_lr))
        with open(os.path.join(configs, name + ".textproto"), "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
