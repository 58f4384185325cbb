"""The digits CNN trained twice, by convolab.nn and by PyTorch, from the same start.

Both runs use the network of ``convolab.train.lenet`` with the *same* initial
weights (convolab's, loaded into the PyTorch model through ``state_dict``, whose
names match), the same batches in the same order (``convolab.train.batch_order``),
AdamW with the same hyper-parameters and the same cosine schedule. The script
prints both test accuracies and both training times per epoch (median over the
epochs, the update loop only), and with ``--results`` records them in
benchmarks/RESULTS.md. Both use 2 threads. The two runs alternate for
``--rounds`` rounds (the first library alternating too), and each library's
median is taken over the epochs of every round: a noisy stretch of a shared
machine then falls on both, where one run each had put it on one library's
median alone (its ratio moved 0.62-0.92 between runs of the same code).

    python benchmarks/train_torch.py --results benchmarks/RESULTS.md
"""

from __future__ import annotations

import argparse
import os
import platform
import time

for _name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_name, "2")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from convolab.apps.bench import machine_info, write_section  # noqa: E402
from convolab.apps.train import DEFAULTS, batch_order, lenet, load_digits, train  # noqa: E402


def torch_lenet(net) -> torch.nn.Sequential:
    """The PyTorch twin of a convolab ``lenet``: same layers, same order, same weights."""
    layers = []
    for layer in net:
        kind = type(layer).__name__
        if kind == "Conv2d":
            layers.append(torch.nn.Conv2d(layer.in_channels, layer.out_channels, layer.kernel_size,
                                          padding=layer.padding))
        elif kind == "BatchNorm2d":
            layers.append(torch.nn.BatchNorm2d(layer.num_features))
        elif kind == "Linear":
            layers.append(torch.nn.Linear(layer.in_features, layer.out_features))
        elif kind == "MaxPool2d":
            layers.append(torch.nn.MaxPool2d(layer.kernel_size))
        else:
            layers.append(getattr(torch.nn, kind)())
    twin = torch.nn.Sequential(*layers)
    twin.load_state_dict({name: torch.from_numpy(np.array(value)) for name, value in net.state_dict().items()})
    return twin


def torch_train(data, *, epochs: int, batch_size: int, lr: float, weight_decay: float, seed: int):
    start_net = lenet(*data.image_shape, data.classes, rng=np.random.default_rng(seed))  # train()'s initial weights
    model = torch_lenet(start_net)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
    loss_fn = torch.nn.CrossEntropyLoss()
    images, labels = torch.from_numpy(data.train_images), torch.from_numpy(data.train_labels)
    epoch_seconds = []
    for epoch in range(epochs):
        model.train()
        started = time.perf_counter()
        for indices in batch_order(len(images), batch_size, epoch, seed):
            index = torch.from_numpy(indices)
            loss = loss_fn(model(images[index]), labels[index])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        epoch_seconds.append(time.perf_counter() - started)
        schedule.step()
    model.eval()
    with torch.no_grad():
        predictions = model(torch.from_numpy(data.test_images)).argmax(dim=1).numpy()
    return float((predictions == data.test_labels).mean()), epoch_seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=DEFAULTS["epochs"])
    parser.add_argument("--seed", type=int, default=DEFAULTS["seed"])
    parser.add_argument("--rounds", type=int, default=3, help="alternating runs of each library (default 3)")
    parser.add_argument("--results", help="record the comparison in this results page (benchmarks/RESULTS.md)")
    args = parser.parse_args()
    torch.set_num_threads(2)
    data = load_digits()
    settings = dict(epochs=args.epochs, batch_size=DEFAULTS["batch_size"], lr=DEFAULTS["lr"],
                    weight_decay=DEFAULTS["weight_decay"], seed=args.seed)
    times: dict[str, list[float]] = {"convolab": [], "torch": []}
    round_ratios = []
    for round_index in range(args.rounds):
        order = ("convolab", "torch") if round_index % 2 == 0 else ("torch", "convolab")
        for library in order:
            if library == "convolab":
                _, ours = train(data, **settings)
                convolab_accuracy, epochs = ours.test_accuracy, [entry["train_seconds"] for entry in ours.history]
            else:
                torch_accuracy, epochs = torch_train(data, **settings)
            times[library].extend(epochs)
        round_ratios.append(np.median(times["convolab"][-args.epochs:]) / np.median(times["torch"][-args.epochs:]))
    convolab_seconds, torch_seconds = float(np.median(times["convolab"])), float(np.median(times["torch"]))
    gap = abs(convolab_accuracy - torch_accuracy) * 100
    ratio = convolab_seconds / torch_seconds
    rows = [("test accuracy", f"{convolab_accuracy:.4f}", f"{torch_accuracy:.4f}",
             f"difference {gap:.2f} points (target <= 1)", "yes" if gap <= 1 else "no"),
            ("seconds per epoch (median)", f"{convolab_seconds:.3f}", f"{torch_seconds:.3f}",
             f"ratio {ratio:.2f} (target <= 0.7)", "yes" if ratio <= 0.7 else "no")]
    for row in rows:
        print(f"{row[0]:<28} convolab {row[1]:>8}   PyTorch {row[2]:>8}   {row[3]}   met: {row[4]}")
    rounds_text = ", ".join(f"{value:.2f}" for value in round_ratios)
    print(f"ratio per round: {rounds_text}")
    if args.results:
        machine = machine_info(torch)
        body = "\n".join([
            "## Training: the digits CNN in convolab.nn and in PyTorch",
            "",
            f"`python benchmarks/train_torch.py --results {args.results}`: `convolab.train.lenet` on scikit-learn's "
            f"digits (fixed stratified split, {len(data.train_images)} training / {len(data.test_images)} test "
            f"images), {args.epochs} epochs, batch {settings['batch_size']}, AdamW lr {settings['lr']} weight decay "
            f"{settings['weight_decay']}, cosine schedule, seed {args.seed}. Both runs start from the same weights "
            "and see the same batches in the same order; time is the update loop only (no evaluation), 2 threads each. "
            f"The two alternate for {args.rounds} rounds; each median is over the epochs of every round.",
            "",
            "| measure | convolab | PyTorch | comparison | met |",
            "|---|---|---|---|---|",
            *(f"| {' | '.join(row)} |" for row in rows),
            "",
            f"The ratio of each round's medians: {rounds_text}.",
            "",
            f"Machine: {machine['cpu']}, {machine['usable_cores']} usable cores; Python {platform.python_version()}, "
            f"NumPy {machine['numpy']}, PyTorch {machine['torch']}, convolab {machine['convolab']} "
            f"({machine['convolab_revision']}); {machine['date']}.",
        ])
        write_section(args.results, "training", body)
        print(f"wrote {args.results}")


if __name__ == "__main__":
    main()
