"""The PyTorch side of the DNN benchmark (docs/benchmarks.md, "DNN"):
the same networks as examples/jobs/mnist-mlp.toml (784-256-10, ReLU) and
examples/jobs/mnist-cnn.toml (conv 16@5x5 / batch norm / ReLU / max-pool
2, conv 32@5x5 / batch norm / ReLU / max-pool 2, linear 128 / ReLU /
dropout 0.25, linear 10), the same data (MNIST from data/mnist, pixels /
255), batch 64, SGD lr 0.05 momentum 0.9, in a plain PyTorch training loop
with torch from the same PyPI wheel whose libtorch petuum links (2.13.0
on the CPU; on a GPU machine, the machine's own torch, against which the
GPU build of petuum is linked). On a GPU the data sit on the GPU and the
clock stops after a synchronize.

Usage: python bench/dnn_pytorch.py EPOCHS THREADS [mlp|cnn] [cpu|cuda]
Prints one JSON line: seconds per epoch, images/s, test accuracy.
"""
import gzip, json, os, struct, sys, time

import torch


def idx(path):
    op = gzip.open if path.endswith(".gz") else open
    with op(path, "rb") as f:
        data = f.read()
    dims = data[3]
    shape = struct.unpack(">" + "I" * dims, data[4 : 4 + 4 * dims])
    return torch.frombuffer(bytearray(data[4 + 4 * dims :]), dtype=torch.uint8).reshape(shape)


def main():
    epochs, threads = int(sys.argv[1]), int(sys.argv[2])
    kind = sys.argv[3] if len(sys.argv) > 3 else "mlp"
    dev = torch.device(sys.argv[4] if len(sys.argv) > 4 else "cpu")
    torch.set_num_threads(threads)
    torch.manual_seed(42)
    d = os.path.join(os.path.dirname(__file__), "..", "data", "mnist")
    x = idx(os.path.join(d, "train-images-idx3-ubyte")).reshape(-1, 784).float() / 255
    y = idx(os.path.join(d, "train-labels-idx1-ubyte")).long()
    xt = idx(os.path.join(d, "t10k-images-idx3-ubyte")).reshape(-1, 784).float() / 255
    yt = idx(os.path.join(d, "t10k-labels-idx1-ubyte")).long()
    nn = torch.nn
    if kind == "cnn":
        x, xt = x.reshape(-1, 1, 28, 28), xt.reshape(-1, 1, 28, 28)
        net = nn.Sequential(
            nn.Conv2d(1, 16, 5, padding=2), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 5, padding=2), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(32 * 7 * 7, 128), nn.ReLU(), nn.Dropout(0.25), nn.Linear(128, 10))
    else:
        net = nn.Sequential(nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 10))
    net = net.to(dev)
    x, y, xt, yt = x.to(dev), y.to(dev), xt.to(dev), yt.to(dev)
    opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
    n = x.shape[0]
    if dev.type == "cuda":
        torch.cuda.synchronize()
    start = time.time()
    for _ in range(epochs):
        perm = torch.randperm(n, device=dev)
        for i in range(0, n - 63, 64):
            b = perm[i : i + 64]
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(net(x[b]), y[b])
            loss.backward()
            opt.step()
    if dev.type == "cuda":
        torch.cuda.synchronize()
    secs = time.time() - start
    net.eval()
    with torch.no_grad():
        acc = (net(xt).argmax(1) == yt).float().mean().item()
    print(json.dumps({
        "epochs": epochs,
        "threads": threads,
        "net": kind,
        "device": str(dev),
        "seconds_per_epoch": secs / epochs,
        "images_per_s": epochs * (n // 64) * 64 / secs,
        "test_accuracy": acc,
    }))


if __name__ == "__main__":
    main()
