"""Writes pickled tensors the way AVSBench made its audio_log_mel/*.pkl files, for the C++
PklReaderTest.

Usage: make_log_mel_pkl.py DIR

AVSBench: `pickle.dump(log_mel_tensor, f)` with the plain pickle module, the tensor float32
[5, 1, 96, 64] with requires_grad=True. Besides that exact case this writes every pickle
protocol, views with an offset and non-contiguous strides, float64, a Parameter, a bare storage,
legacy and zip torch.save files, NumPy arrays, and two files that must be rejected.

DIR/manifest.txt has one line per readable file: `<file> <dtype> <expected file> <dims...>`,
where the expected file holds the tensor's values in C order as little-endian float32 ("f32")
or float64 ("f64") written with struct from Python floats, independently of torch's storage.
"""
import pickle
import struct
import sys

import torch


def raw(t, fmt):
    values = t.detach().reshape(-1).tolist()
    return struct.pack("<%d%s" % (len(values), fmt), *values)


def main():
    out = sys.argv[1]
    gen = torch.Generator().manual_seed(1234)
    manifest = []

    def randn(*shape, dtype=torch.float32):
        return torch.randn(*shape, generator=gen, dtype=dtype)

    def expect(name, t, dtype="f32"):
        fmt = "f" if dtype == "f32" else "d"
        with open("%s/%s.%s" % (out, name, dtype), "wb") as f:
            f.write(raw(t, fmt))
        manifest.append("%s %s %s.%s %s" % (name, dtype, name, dtype,
                                            " ".join(str(s) for s in t.shape)))

    def dump(name, obj, protocol=None):
        with open("%s/%s" % (out, name), "wb") as f:
            if protocol is None:
                pickle.dump(obj, f)
            else:
                pickle.dump(obj, f, protocol=protocol)

    # Exactly AVSBench's call: the default protocol of this Python.
    t = randn(5, 1, 96, 64).requires_grad_(True)
    dump("avsbench.pkl", t)
    expect("avsbench.pkl", t)

    for protocol in (2, 3, 4, 5):
        t = randn(5, 1, 96, 64).requires_grad_(protocol % 2 == 0)
        name = "protocol%d.pkl" % protocol
        dump(name, t, protocol)
        expect(name, t)

    t = randn(10, 1, 96, 64)
    dump("avss10.pkl", t)
    expect("avss10.pkl", t)

    # A view: the pickle carries the whole storage plus offset, size and stride.
    base = randn(8, 1, 96, 64)
    t = base[2:7]
    dump("offset_view.pkl", t)
    expect("offset_view.pkl", t)

    t = randn(64, 96, 1, 5).permute(3, 2, 1, 0)
    assert not t.is_contiguous()
    dump("transposed.pkl", t)
    expect("transposed.pkl", t)

    t = randn(5, 1, 96, 64, dtype=torch.float64)
    dump("float64.pkl", t)
    expect("float64.pkl", t, "f64")

    t = torch.nn.Parameter(randn(5, 1, 96, 64))
    dump("parameter.pkl", t)
    expect("parameter.pkl", t)

    t = randn(3, 1, 96, 64)
    dump("bare_storage.pkl", t.storage())
    expect("bare_storage.pkl", t)  # read_log_mel_pkl views it as [3, 1, 96, 64]

    t = randn(5, 1, 96, 64)
    torch.save(t, "%s/legacy_save.pt" % out, _use_new_zipfile_serialization=False)
    expect("legacy_save.pt", t)

    t = randn(5, 1, 96, 64)
    torch.save(t, "%s/zip_save.pt" % out)
    expect("zip_save.pt", t)

    t = randn(5, 1, 96, 64)
    dump("numpy.pkl", t.numpy())
    expect("numpy.pkl", t)
    dump("numpy_protocol2.pkl", t.numpy(), 2)
    expect("numpy_protocol2.pkl", t)
    dump("numpy_protocol5.pkl", t.numpy(), 5)
    expect("numpy_protocol5.pkl", t)

    import numpy as np
    t = randn(5, 1, 96, 64)
    dump("numpy_fortran.pkl", np.asfortranarray(t.numpy()))
    expect("numpy_fortran.pkl", t)

    # Must be rejected by read_log_mel_pkl (wrong shape) or by every reader (not a tensor).
    dump("wrong_shape.pkl", randn(5, 96, 64))
    dump("dict.pkl", {"a": randn(2), "b": randn(3)})

    with open("%s/manifest.txt" % out, "w") as f:
        f.write("\n".join(manifest) + "\n")
    print("wrote %d pickled tensors to %s" % (len(manifest), out))


if __name__ == "__main__":
    main()
