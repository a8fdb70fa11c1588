"""State-dict interop between ComboAVS (C++) and Python torch.

Usage: state_dict_interop.py DIR
Reads DIR/from_cpp.pt (written by the C++ test), checks it, writes DIR/back_to_cpp.pt with every
tensor doubled (exact in floating point), and writes DIR/from_python.pt, DIR/ordered.pt and
DIR/one_entry.pt from scratch. Exits non-zero with a message on any mismatch.
"""
import collections
import sys

import torch


def expected_from_cpp():
    # Mirrors the C++ test: values that are exact in every dtype.
    return {
        "backbone.weight": torch.arange(24, dtype=torch.float32).reshape(2, 3, 4) / 8.0,
        "backbone.bias": torch.arange(5, dtype=torch.float64) - 2.5,
        "counter": torch.tensor(7, dtype=torch.int64),
        "mask": torch.tensor([True, False, True]),
        "head.scale": torch.full((1,), 0.125, dtype=torch.float32),
    }


def main():
    out = sys.argv[1]
    got = torch.load(out + "/from_cpp.pt")
    if type(got) is not dict:
        sys.exit("from_cpp.pt: expected a plain dict, got %s" % type(got))
    exp = expected_from_cpp()
    if sorted(got) != sorted(exp):
        sys.exit("from_cpp.pt: keys %s != %s" % (sorted(got), sorted(exp)))
    for k, v in exp.items():
        if got[k].dtype != v.dtype or got[k].shape != v.shape or not torch.equal(got[k], v):
            sys.exit("from_cpp.pt: %s differs: %s vs %s" % (k, got[k], v))
    back = {k: (v * 2 if v.dtype != torch.bool else ~v) for k, v in got.items()}
    torch.save(back, out + "/back_to_cpp.pt")

    nested = {
        "model": {
            "layer.weight": torch.arange(12, dtype=torch.float32).reshape(3, 4) * 0.25,
            "layer.bias": torch.tensor([-1.0, 0.5, 3.0]),
        },
        "meta": {"iteration": torch.tensor(42), "lr": torch.tensor(0.5, dtype=torch.float64)},
    }
    torch.save(nested, out + "/from_python.pt")
    torch.save(collections.OrderedDict(nested["model"]), out + "/ordered.pt")
    torch.save({"only": torch.zeros(2)}, out + "/one_entry.pt")
    print("python interop ok")


if __name__ == "__main__":
    main()
