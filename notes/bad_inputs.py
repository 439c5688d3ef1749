"""Bad inputs and faults, tried as a new user would, with a verdict for each (the table of notes/bad_inputs.md).

    python notes/bad_inputs.py ROOT [--only SUBSTRING]

ROOT is a checkout of the course (its ``vislearn`` package is imported from there, with the virtual
environment of this one). Each probe runs in a fresh process in a scratch folder and gets one verdict:

- ``clear``: refused with one line that names the bad value (or file) and what to do, exit code != 0;
- ``traceback``: refused, but with a stack trace or a message that does not say what is wrong;
- ``accepted``: silently accepted (it ran, or returned something wrong);
- ``data lost``: a good run, checkpoint or file was destroyed or left disagreeing with its manifest;
- ``kept``: a fault (interruption, failed rerun) after which every good file is still there.

Provenance: the before/after table of notes/bad_inputs.md was made with this script at commit
b7b609e (before) and at the commit that added this script (after), on the same machine.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

# Python snippets see these names, whichever layout ROOT has (flat before issue 18, layered after).
PRELUDE = """
import sys, os, json, torch
def imp(*names):
    import importlib
    for n in names:
        try:
            return importlib.import_module(n)
        except ImportError:
            pass
    raise ImportError(names)
weights = imp("vislearn.train.weights", "vislearn.weights")
fmnist = imp("vislearn.data.fmnist", "vislearn.data")
evaluation = imp("vislearn.analysis.evaluation", "vislearn.evaluation")
attention = imp("vislearn.analysis.attention", "vislearn.attention")
vit = imp("vislearn.models.vit", "vislearn.vit")
loop = imp("vislearn.train.loop", "vislearn.train")
def probe(call, *words):
    try:
        value = call()
    except Exception as e:
        text = f"{type(e).__name__}: {e}"
        bare = {"KeyError", "TypeError", "AttributeError", "IndexError", "EOFError", "JSONDecodeError", "OSError",
                "UnpicklingError", "RuntimeError", "OverflowError", "IsADirectoryError", "SafetensorError"}
        ok = (type(e).__name__ not in bare and all(w.lower() in str(e).lower() for w in words)
              and "\\n" not in str(e).strip())
        print(("CLEAR " if ok else "UNCLEAR ") + text.splitlines()[0][:200])
        sys.exit(2)
    print("ACCEPTED " + repr(value)[:200])
"""

NOTEBOOK = {"cells": [{"cell_type": "markdown", "metadata": {}, "source": ["# T\n"]},
                      {"cell_type": "code", "metadata": {"tags": ["parameters"]}, "execution_count": None,
                       "outputs": [], "source": ['PRESET = "auto"\nDEVICE = "auto"\n']},
                      {"cell_type": "code", "metadata": {}, "execution_count": None, "outputs": [],
                       "source": ["from vislearn.results import record\nrecord(x=1)\n"]}],
            "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
            "nbformat": 4, "nbformat_minor": 5}
FAILING = json.loads(json.dumps(NOTEBOOK))
FAILING["cells"][2]["source"] = ["raise RuntimeError('second run fails')\n"]
SLEEPING = json.loads(json.dumps(NOTEBOOK))
SLEEPING["cells"][2]["source"] = ["import time, pathlib\npathlib.Path('../started').write_text('1')\ntime.sleep(99)\n"]


class Probe:
    def __init__(self, root: Path, scratch: Path):
        import site

        self.root, self.scratch = root, scratch
        # `python -S` with site-packages on PYTHONPATH: the packages, but not the .pth hook of an editable
        # install, which would otherwise serve modules of *this* checkout to the one under test
        path = os.pathsep.join([str(root), *site.getsitepackages()])
        self.env = {**os.environ, "PYTHONPATH": path, "PYTHONWARNINGS": "ignore"}

    def sh(self, *args, timeout=600, env=None):
        return subprocess.run([sys.executable, "-S", *args], cwd=self.scratch, capture_output=True, text=True,
                              timeout=timeout, env={**self.env, **(env or {})})

    def py(self, code, env=None):
        return self.sh("-c", PRELUDE + textwrap.dedent(code), env=env)

    def series(self, *notebooks):
        folder = self.scratch / "nbs"
        folder.mkdir(exist_ok=True)
        for name, nb in notebooks:
            (folder / name).write_text(nb if isinstance(nb, str) else json.dumps(nb))
        return folder

    def checkpoints(self):
        """A private copy of the bundled vit_fmnist checkpoint, history and manifest entry."""
        folder = self.scratch / "ckpt"
        folder.mkdir(exist_ok=True)
        bundled = self.root / "data" / "checkpoints"
        e = json.loads((bundled / "manifest.json").read_text())["vit_fmnist"]
        shutil.copy(bundled / e["file"], folder / e["file"])
        shutil.copy(bundled / e.get("history", "vit_fmnist.history.json"), folder)
        (folder / "manifest.json").write_text(json.dumps({"vit_fmnist": e}))
        return folder


def verdict_of(done, want_fail=True) -> str:
    out = (done.stdout + done.stderr).strip()
    if "Traceback (most recent call last)" in out:
        return "traceback"
    if done.stdout.startswith("CLEAR"):
        return "clear"
    if done.stdout.startswith("UNCLEAR"):
        return "traceback"
    if done.returncode == 0 or done.stdout.startswith("ACCEPTED"):
        return "accepted" if want_fail else "clear"
    last = [line for line in done.stderr.strip().splitlines() if line.strip()][-1:] or [""]
    return "clear" if last[0].startswith(("error:", "usage:")) or "error:" in last[0] else "traceback"


def consistent(folder: Path, name: str = "vit_fmnist") -> bool:
    """The manifest parses, its entry's file exists and has the recorded sha256."""
    import hashlib

    try:
        e = json.loads((folder / "manifest.json").read_text())[name]
        return hashlib.sha256((folder / e["file"]).read_bytes()).hexdigest() == e["sha256"]
    except (OSError, ValueError, KeyError):
        return False


def runner_probes(p: Probe):
    nbs = p.series(("01_a.ipynb", NOTEBOOK))
    yield "run --timeout 2.5", verdict_of(p.sh("-m", "vislearn", "run", "--timeout", "2.5", "--notebooks-dir",
                                               str(nbs), "--out", "t1", "--preset", "smoke", "--quiet"))
    yield "run --timeout nan", verdict_of(p.sh("-m", "vislearn", "run", "--timeout", "nan", "--notebooks-dir",
                                               str(nbs), "--out", "t2", "--preset", "smoke", "--quiet"))
    yield "run --timeout inf", verdict_of(p.sh("-m", "vislearn", "run", "--timeout", "inf", "--notebooks-dir",
                                               str(nbs), "--out", "t3", "--preset", "smoke", "--quiet"))
    (p.scratch / "afile").write_text("")
    yield "run --out FILE", verdict_of(p.sh("-m", "vislearn", "run", "--notebooks-dir", str(nbs), "--out", "afile",
                                            "--preset", "smoke", "--quiet"))
    yield "run --out /proc/not-writable", verdict_of(p.sh("-m", "vislearn", "run", "--notebooks-dir", str(nbs),
                                                          "--out", "/proc/vislearn-run", "--preset", "smoke", "--quiet"))
    yield "list --notebooks-dir MISSING", verdict_of(p.sh("-m", "vislearn", "list", "--notebooks-dir", "missing"))
    for label, text in (("not JSON", "{oops"), ("empty", "")):
        broken = p.series(("00_bad.ipynb", text), ("01_a.ipynb", NOTEBOOK))
        done = p.sh("-m", "vislearn", "run", "--notebooks-dir", str(broken), "--out", f"b-{label}", "--preset",
                    "smoke", "--quiet")
        results = p.scratch / f"b-{label}" / "results.json"
        ran_others = results.exists() and json.loads(results.read_text())["notebooks"].get("01_a", {}).get("status")
        yield (f"run a series with a notebook that is {label}",
               "clear" if ran_others == "ok" and "Traceback" not in done.stderr else "traceback")
        (broken / "00_bad.ipynb").unlink()
    # the same folder twice, the second run failing
    good = p.series(("01_a.ipynb", NOTEBOOK))
    p.sh("-m", "vislearn", "run", "01", "--notebooks-dir", str(good), "--out", "again", "--preset", "smoke", "--quiet")
    before = json.loads((p.scratch / "again" / "01_a" / "results.json").read_text())
    (good / "01_a.ipynb").write_text(json.dumps(FAILING))
    p.sh("-m", "vislearn", "run", "01", "--notebooks-dir", str(good), "--out", "again", "--preset", "smoke", "--quiet")
    p.sh("-m", "vislearn", "run", "01", "--notebooks-dir", str(good), "--out", "again", "--preset", "smoke",
         "--quiet", "--force")
    after = p.scratch / "again" / "01_a" / "results.json"
    yield ("rerun into the same --out, the second run failing",
           "kept" if after.exists() and json.loads(after.read_text()) == before else "data lost")
    (good / "01_a.ipynb").write_text(json.dumps(NOTEBOOK))
    (good / "02_b.ipynb").write_text(json.dumps(NOTEBOOK))
    p.sh("-m", "vislearn", "run", "02", "--notebooks-dir", str(good), "--out", "again", "--preset", "smoke", "--quiet",
         "--force")
    p.sh("-m", "vislearn", "run", "02", "--notebooks-dir", str(good), "--out", "again", "--preset", "smoke", "--quiet")
    entries = json.loads((p.scratch / "again" / "results.json").read_text())["notebooks"]
    yield "another notebook into the same --out", "kept" if "01_a" in entries else "data lost"


def training_probes(p: Probe):
    for label, args in (("unknown recipe", ["nope"]), ("--preset huge", ["vit_fmnist", "--preset", "huge"]),
                        ("--seed x", ["vit_fmnist", "--seed", "x"]), ("--seed 2**70", ["vit_fmnist", "--seed", str(2**70)]),
                        ("--device tpu", ["vit_fmnist", "--device", "tpu"])):
        yield f"train {label}", verdict_of(p.sh("-m", "vislearn.train", *args, "--preset" if "--preset" not in args
                                                else "--device", "smoke" if "--preset" not in args else "cpu",
                                                timeout=300))
    (p.scratch / "afile").write_text("")
    for label, out in (("not writable", "/proc/vislearn-ckpt"), ("FILE", "afile")):
        done = p.sh("-m", "vislearn.train", "vit_fmnist", "--preset", "smoke", "--out", out)
        trained = "test_accuracy" in done.stderr + done.stdout or "training: 100%" in done.stderr
        yield f"train --out {label}", verdict_of(done) + (" (after training)" if trained else "")
    ckpt = p.checkpoints()
    e = json.loads((ckpt / "manifest.json").read_text())["vit_fmnist"]
    p.sh("-m", "vislearn.train", "vit_fmnist", "--preset", "smoke", "--out", str(ckpt))
    new = json.loads((ckpt / "manifest.json").read_text())["vit_fmnist"]
    yield "train smoke --out FOLDER holding the full checkpoint", "kept" if new == e else "data lost"


def _default_sigint() -> None:
    """In the child: the default SIGINT handling (a shell's background job would start it ignored)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def signal_probes(p: Probe):
    """Ctrl-C (SIGINT) and SIGTERM sent to a running series, and Ctrl-C during a training."""
    for sig in (signal.SIGTERM, signal.SIGINT):
        slow = p.series(("01_a.ipynb", NOTEBOOK), ("02_s.ipynb", SLEEPING))
        (p.scratch / "started").unlink(missing_ok=True)
        out = f"sig{int(sig)}"
        proc = subprocess.Popen([sys.executable, "-S", "-m", "vislearn", "run", "--notebooks-dir", str(slow), "--out", out,
                                 "--preset", "smoke", "--quiet"], cwd=p.scratch, env=p.env, text=True, preexec_fn=_default_sigint,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        deadline = time.time() + 120
        while not (p.scratch / "started").exists() and proc.poll() is None and time.time() < deadline:
            time.sleep(0.2)
        proc.send_signal(sig)
        try:
            _, err = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            yield f"{signal.Signals(sig).name} to a running series", "ignored (still running after 60 s)"
            (slow / "02_s.ipynb").unlink()
            continue
        results = p.scratch / out / "results.json"
        marked = results.exists() and "02_s" in json.loads(results.read_text())["notebooks"]
        name = signal.Signals(sig).name
        if not marked:
            yield f"{name} to a running series", "data lost"
        else:
            yield f"{name} to a running series", "traceback" if "Traceback" in err else "kept"
        (slow / "02_s.ipynb").unlink()


    import threading

    proc = subprocess.Popen([sys.executable, "-S", "-m", "vislearn.train", "vit_fmnist", "--preset", "smoke", "--out",
                             "ci"], cwd=p.scratch, env=p.env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            preexec_fn=_default_sigint)
    seen: list[str] = []
    threading.Thread(target=lambda: seen.extend(iter(lambda: proc.stderr.read(1), "")), daemon=True).start()
    deadline = time.time() + 300
    while "training:" not in "".join(seen) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.1)                               # until the progress bar shows: training has started
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    time.sleep(1)
    yield "Ctrl-C during training", "traceback" if "Traceback" in "".join(seen) else "clear"


def checkpoint_probes(p: Probe):
    cases = {
        "manifest not JSON": "(root / 'manifest.json').write_text('{oops')",
        "manifest not an object": "(root / 'manifest.json').write_text('[1]')",
        "entry lacks sha256": "m = json.loads((root / 'manifest.json').read_text()); m['vit_fmnist'].pop('sha256');"
                              " (root / 'manifest.json').write_text(json.dumps(m))",
        "entry with a bad config": "m = json.loads((root / 'manifest.json').read_text()); "
                                   "m['vit_fmnist']['config']['depth'] = 'six'; (root / 'manifest.json').write_text(json.dumps(m))",
        "checkpoint path is a folder": "f = root / e['file']; f.unlink(); f.mkdir()",
        "another model's weights, sha256 updated": "from safetensors.torch import save_file; "
                                                   "save_file({'w': torch.zeros(3)}, str(root / e['file'])); fix()",
        "a pickle, sha256 updated": "torch.save({'w': torch.zeros(3)}, root / e['file']); fix()",
    }
    words = {"checkpoint path is a folder": ("folder",), "manifest not JSON": ("manifest.json", "json"),
             "manifest not an object": ("manifest.json", "object"), "entry lacks sha256": ("sha256",),
             "entry with a bad config": ("config",), "another model's weights, sha256 updated": ("another model",),
             "a pickle, sha256 updated": ("safetensors",)}
    for label, damage in cases.items():
        ckpt = p.checkpoints()
        done = p.py(f"""
            from pathlib import Path
            import hashlib
            root = Path({str(ckpt)!r}); e = json.loads((root / 'manifest.json').read_text())['vit_fmnist']
            def fix():
                m = json.loads((root / 'manifest.json').read_text())
                m['vit_fmnist']['sha256'] = hashlib.sha256((root / e['file']).read_bytes()).hexdigest()
                (root / 'manifest.json').write_text(json.dumps(m))
            {damage}
            probe(lambda: weights.load('vit_fmnist', root), *{words[label]!r})
        """)
        yield f"load: {label}", verdict_of(done)
        shutil.rmtree(ckpt)
    ckpt = p.checkpoints()
    done = p.py(f"""
        from pathlib import Path
        root = Path({str(ckpt)!r})
        e = json.loads((root / 'manifest.json').read_text())['vit_fmnist']
        json.loads(open(root / e.get('history', 'vit_fmnist.history.json')).read())
        (root / e.get('history', 'vit_fmnist.history.json')).write_text('{{oops')
        probe(lambda: weights.read_history('vit_fmnist', root), 'history')
    """)
    yield "read_history: not JSON", verdict_of(done)
    shutil.rmtree(ckpt)
    for label, setup in (("a manifest that does not parse", "(root / 'manifest.json').write_text('{oops')"),
                         ("an error between the weights and the manifest", "weights.write_json_atomic = boom")):
        ckpt = p.checkpoints()
        manifest = (ckpt / "manifest.json").read_bytes()
        p.py(f"""
            from pathlib import Path
            root = Path({str(ckpt)!r})
            def boom(*a, **k):
                raise KeyboardInterrupt
            model = weights.load('vit_fmnist', root)
            with torch.no_grad():
                model.head.bias.add_(1.0)                     # new weights: the file must change
            {setup}
            kw = dict(arch='vit', config=dict(model.cfg.__dict__), recipe='vit_fmnist', preset='full', metrics={{}}, root=root)
            try:
                weights.save(model, 'vit_fmnist', **kw, history={{'steps': [], 'evals': []}})
            except TypeError:
                weights.save(model, 'vit_fmnist', **kw)
        """)
        if "parse" in label:
            (ckpt / "manifest.json").write_bytes(manifest)
        yield f"save over a good checkpoint with {label}", "kept" if consistent(ckpt) else "data lost"
        shutil.rmtree(ckpt)


def data_probes(p: Probe):
    (p.scratch / "empty").mkdir(exist_ok=True)
    partial = p.scratch / "partial"
    partial.mkdir(exist_ok=True)
    src = Path("/usr/share/datasets/fashion-mnist")
    for f in ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"):
        shutil.copy(src / f, partial / f)
    for label, folder in (("missing", "nowhere"), ("empty", "empty"), ("incomplete", "partial")):
        done = p.py("probe(lambda: fmnist.find_fashion_mnist(download=False), 'VISLEARN_DATA')",
                    env={"VISLEARN_DATA": str(p.scratch / folder)})
        yield f"$VISLEARN_DATA {label}", verdict_of(done)
    broken = p.scratch / "broken"
    broken.mkdir(exist_ok=True)
    for f in src.glob("*.gz"):
        shutil.copy(f, broken / f.name)
    data = (broken / "t10k-images-idx3-ubyte.gz").read_bytes()
    (broken / "t10k-images-idx3-ubyte.gz").write_bytes(data[: len(data) // 2])
    done = p.py("probe(lambda: fmnist.fashion_mnist('test'), 't10k-images')", env={"VISLEARN_DATA": str(broken)})
    yield "a truncated .gz", verdict_of(done)
    (broken / "t10k-images-idx3-ubyte.gz").unlink()
    (broken / "t10k-images-idx3-ubyte").write_bytes(b"")
    done = p.py("probe(lambda: fmnist.fashion_mnist('test'), 't10k-images')", env={"VISLEARN_DATA": str(broken)})
    yield "a zero-byte idx file", verdict_of(done)
    for limit in (-5, 0):
        done = p.py(f"probe(lambda: len(fmnist.fashion_mnist('test', {limit})), 'limit')")
        yield f"fashion_mnist(limit={limit})", verdict_of(done)


def library_probes(p: Probe):
    cases = {
        "a ViT built for 28 px on 30 px images": ("vit.VisionTransformer(vit.ViTConfig())(torch.randn(1, 1, 30, 30)).shape",
                                                 ["30", "28"]),
        "knn_accuracy with one test label": ("evaluation.knn_accuracy(torch.randn(10, 4), torch.arange(10) % 2, "
                                             "torch.randn(5, 4), torch.tensor([1]))", ["test_labels"]),
        "knn_accuracy with k=0": ("evaluation.knn_accuracy(torch.randn(10, 4), torch.arange(10) % 2, torch.randn(5, 4),"
                                  " torch.arange(5) % 2, k=0)", ["k=0"]),
        "knn_accuracy with 7 labels for 10 features": ("evaluation.knn_accuracy(torch.randn(10, 4), torch.arange(7) % 2,"
                                                       " torch.randn(5, 4), torch.arange(5) % 2)", ["train_labels"]),
        "mass_masks(keep=1.5)": ("evaluation.mass_masks(torch.rand(2, 9), keep=1.5).sum()", ["keep=1.5"]),
        "rollout([])": ("attention.rollout([])", ["empty"]),
        "TrainConfig(epochs=0)": ("loop.TrainConfig(epochs=0)", ["epochs=0"]),
        "seed 2**70": ("__import__('vislearn').setup(seed=2**70, verbose=False)", ["seed"]),
    }
    for label, (expr, words) in cases.items():
        yield label, verdict_of(p.py(f"probe(lambda: {expr}, *{words!r})"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("root", type=Path, help="a checkout of the course")
    parser.add_argument("--only", default="", help="run only the probe groups whose name contains this")
    args = parser.parse_args()
    groups = {"runner": runner_probes, "training": training_probes, "signals": signal_probes, "checkpoints": checkpoint_probes,
              "data": data_probes, "library": library_probes}
    print("| area | input or fault | verdict |\n|---|---|---|", flush=True)
    for area, probes in groups.items():
        if args.only not in area:
            continue
        with tempfile.TemporaryDirectory() as scratch:
            for label, verdict in probes(Probe(args.root.resolve(), Path(scratch))):
                print(f"| {area} | {label} | {verdict} |", flush=True)


if __name__ == "__main__":
    main()
