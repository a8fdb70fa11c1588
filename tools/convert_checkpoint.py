#!/usr/bin/python3
"""Convert a checkpoint into a flat name -> tensor file that ComboAVS (LibTorch 1.13) reads.

Inputs:
  * detectron2 ``.pkl`` pickles: {"model": {name: numpy array}, "__author__": ...,
    "matching_heuristics": ...} (for example d2_pvt_v2_b5.pkl), or a bare dict of numpy arrays
    (for example MSRA's R-50.pkl, whose Caffe2 names --caffe2-names renames);
  * ``.pth`` / ``.pt`` files written by torch.save (zip or legacy): bare state dicts,
    OrderedDicts, or {"model": ...} / {"state_dict": ...} wrappers.

Output: torch.save of a plain dict {name: tensor} (CPU, contiguous, no autograd), pickled
without the opcodes LibTorch 1.13's unpickler rejects (SETITEM/APPEND for one-element
dicts/lists; OrderedDict), so ``combo::load_state_dict`` and ``torch.load`` both read it.

Name processing, in this order: the sub-dict (--key, else a "model"/"state_dict" sub-dict)
is flattened with dots; --exclude drops names matching a regular expression (searched in the
flattened input name, as --list prints it); each --strip removes a leading string; --prefix is
prepended. Non-tensor entries (``__author__``, iteration counters, ...) are skipped with a note.

Needs Python 3 and torch only (numpy is imported by pickle only when the input holds numpy
arrays). Run it with Debian's /usr/bin/python3, which has python3-torch.

Examples:
  convert_checkpoint.py pretrained/d2_pvt_v2_b5.pkl pvt_v2_b5.pt --exclude '^head\\.'
  convert_checkpoint.py vggish-10086976.pth vggish.pt --prefix audio_backbone.
  convert_checkpoint.py model_best.pth combo.pt --strip module.
  convert_checkpoint.py --list R-50.pkl
"""
import argparse
import collections
import io
import os
import pickle
import re
import sys
import types
import zipfile

# Magic number that starts every legacy (non-zip) torch.save stream.
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_WRAPPER_KEYS = ("model", "state_dict")


class ConversionError(Exception):
    """A problem with the input or the options; printed as 'error: ...'."""


class _NoSingletonOpsPickler(pickle._Pickler):
    """Pure-Python pickler that writes dict items with MARK ... SETITEMS and list items with
    MARK ... APPENDS even for one element. LibTorch 1.13 cannot read SETITEM/APPEND."""

    def _batch_setitems(self, items, *rest):
        items = list(items)
        if not items:
            return
        for start in range(0, len(items), self._BATCHSIZE):
            self.write(pickle.MARK)
            for key, value in items[start:start + self._BATCHSIZE]:
                self.save(key)
                self.save(value)
            self.write(pickle.SETITEMS)

    def _batch_appends(self, items, *rest):
        items = list(items)
        if not items:
            return
        for start in range(0, len(items), self._BATCHSIZE):
            self.write(pickle.MARK)
            for value in items[start:start + self._BATCHSIZE]:
                self.save(value)
            self.write(pickle.APPENDS)


def _pickle_module():
    """A module-like object for torch.save(pickle_module=...): torch only uses .Pickler for
    zip files (and .dump for legacy files)."""

    def dump(obj, file, protocol=None, **kwargs):
        _NoSingletonOpsPickler(file, protocol, **kwargs).dump(obj)

    def dumps(obj, protocol=None, **kwargs):
        buf = io.BytesIO()
        dump(obj, buf, protocol, **kwargs)
        return buf.getvalue()

    module = types.ModuleType("combo_pickle")
    module.Pickler = _NoSingletonOpsPickler
    module.dump = dump
    module.dumps = dumps
    module.load = pickle.load
    module.loads = pickle.loads
    module.Unpickler = pickle.Unpickler
    module.HIGHEST_PROTOCOL = pickle.HIGHEST_PROTOCOL
    module.DEFAULT_PROTOCOL = pickle.DEFAULT_PROTOCOL
    return module


PICKLE_MODULE = _pickle_module()


def _import_torch():
    try:
        import torch  # noqa: F401
    except ImportError as e:
        raise ConversionError(
            "cannot import torch (%s); run this script with a Python that has torch, e.g. "
            "Debian's /usr/bin/python3 with python3-torch" % e)
    return torch


def _torch_load(torch, path):
    # Checkpoints may hold numpy arrays or other plain objects, which torch >= 2.6 refuses by
    # default; the file is trusted as much as the .pkl files read with pickle below.
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except TypeError:
        return torch.load(path, map_location="cpu")


def load_checkpoint(path):
    """Returns the Python object stored in `path` (torch.save zip/legacy file or a plain
    pickle such as detectron2's .pkl)."""
    torch = _import_torch()
    if not os.path.exists(path):
        raise ConversionError("input file '%s' does not exist" % path)
    if os.path.isdir(path):
        raise ConversionError("input '%s' is a folder, expected a checkpoint file" % path)
    if os.path.getsize(path) == 0:
        raise ConversionError("input file '%s' is empty" % path)
    if zipfile.is_zipfile(path):
        try:
            return _torch_load(torch, path)
        except Exception as e:
            raise ConversionError("cannot read '%s' with torch.load: %s" % (path, e))
    try:
        with open(path, "rb") as f:
            # Python 2 pickles (detectron2/Caffe2 model zoo) need latin1 for numpy's byte data.
            first = pickle.load(f, encoding="latin1")
    except ModuleNotFoundError as e:
        raise ConversionError("cannot read '%s': it needs the Python module '%s' (%s)" %
                              (path, e.name, e))
    except Exception as e:
        raise ConversionError("cannot read '%s': not a torch.save file or a Python pickle (%s: %s)"
                              % (path, type(e).__name__, e))
    if isinstance(first, int) and first == _LEGACY_MAGIC:
        try:
            return _torch_load(torch, path)
        except Exception as e:
            raise ConversionError("cannot read '%s' (legacy torch.save file): %s" % (path, e))
    return first


def _is_numpy_array(value):
    return type(value).__module__ == "numpy" and type(value).__name__ == "ndarray"


def _to_tensor(name, value):
    """Tensor for a checkpoint entry, or None for a non-tensor entry."""
    torch = _import_torch()
    if isinstance(value, torch.Tensor):
        t = value.detach().cpu()
    elif _is_numpy_array(value):
        import numpy as np
        if value.dtype == np.object_:
            raise ConversionError("entry '%s' is a numpy array of Python objects" % name)
        try:
            t = torch.from_numpy(np.ascontiguousarray(value))
        except TypeError as e:
            raise ConversionError("entry '%s': numpy dtype %s has no torch equivalent (%s)" %
                                  (name, value.dtype, e))
    else:
        return None
    t = t.contiguous()
    # A view of a larger storage would save the whole storage; give each tensor its own.
    if hasattr(t, "untyped_storage"):
        storage_bytes = t.untyped_storage().nbytes()
    else:
        storage_bytes = t.storage().size() * t.element_size()
    if t.storage_offset() != 0 or storage_bytes != t.numel() * t.element_size():
        t = t.clone()
    return t


def select_root(obj, key, path):
    """The dict of weights: obj[key] ('a/b' for nested) if given, else obj["model"] or
    obj["state_dict"] when that is a dict, else obj."""
    if not isinstance(obj, dict):
        raise ConversionError("'%s' holds a %s, expected a dict of tensors" %
                              (path, type(obj).__name__))
    if key:
        node = obj
        for part in key.split("/"):
            if not isinstance(node, dict) or part not in node:
                have = sorted(str(k) for k in node) if isinstance(node, dict) else []
                raise ConversionError("'%s' has no key '%s' (--key %s); top-level keys: %s" %
                                      (path, part, key, ", ".join(have[:20])))
            node = node[part]
        if not isinstance(node, dict):
            raise ConversionError("'%s': --key %s is a %s, expected a dict" %
                                  (path, key, type(node).__name__))
        return node
    for wrapper in _WRAPPER_KEYS:
        if isinstance(obj.get(wrapper), dict):
            return obj[wrapper]
    return obj


def flatten(node, prefix, out, skipped):
    for k, v in node.items():
        if not isinstance(k, str):
            raise ConversionError("key %r under '%s' is not a string" % (k, prefix or "<root>"))
        name = prefix + "." + k if prefix else k
        if isinstance(v, dict):
            flatten(v, name, out, skipped)
            continue
        t = _to_tensor(name, v)
        if t is None:
            skipped.append((name, type(v).__name__))
        else:
            out[name] = t


def caffe2_to_detectron2(name):
    """MSRA/Caffe2 ResNet names (R-50.pkl) -> detectron2 names, e.g.
    res2_0_branch2a_bn_s -> res2.0.conv1.norm.weight, conv1_w -> stem.conv1.weight."""
    n = {"pred_b": "linear_b", "pred_w": "linear_w"}.get(name, name)
    n = n.replace("_", ".")
    n = re.sub(r"\.b$", ".bias", n)
    n = re.sub(r"\.w$", ".weight", n)
    n = re.sub(r"(bn|gn)\.s$", "norm.weight", n)
    n = re.sub(r"(bn|gn)\.bias$", "norm.bias", n)
    n = re.sub(r"bn\.(rm|running\.mean)$", "norm.running_mean", n)
    n = re.sub(r"bn\.(riv|running\.var)$", "norm.running_var", n)
    n = re.sub(r"bn\.gamma$", "norm.weight", n)
    n = re.sub(r"bn\.beta$", "norm.bias", n)
    n = re.sub(r"^res\.conv1\.norm\.", "conv1.norm.", n)
    n = re.sub(r"^conv1\.", "stem.conv1.", n)
    n = n.replace(".branch1.", ".shortcut.")
    n = n.replace(".branch2a.", ".conv1.")
    n = n.replace(".branch2b.", ".conv2.")
    n = n.replace(".branch2c.", ".conv3.")
    return n


def rename(name, args):
    if args.caffe2_names:
        name = caffe2_to_detectron2(name)
    for s in args.strip:
        if name.startswith(s):
            name = name[len(s):]
    return args.prefix + name


def build(args):
    """Returns (entries, skipped): entries = [(input name, output name or None if excluded,
    tensor)] in input order."""
    obj = load_checkpoint(args.input)
    root = select_root(obj, args.key, args.input)
    flat = collections.OrderedDict()
    skipped = []
    flatten(root, "", flat, skipped)
    if not flat:
        raise ConversionError("'%s' holds no tensors%s" %
                              (args.input, " under --key " + args.key if args.key else ""))
    excludes = [re.compile(p) for p in args.exclude]
    entries = []
    for name, t in flat.items():
        if args.caffe2_names and name.endswith("_momentum"):
            entries.append((name, None, t))
            continue
        excluded = any(p.search(name) for p in excludes)
        entries.append((name, None if excluded else rename(name, args), t))
    return entries, skipped


def _shape(t):
    return "[" + ", ".join(str(s) for s in t.shape) + "]"


def list_entries(entries, skipped, out=None):
    out = out or sys.stdout
    for name, new, t in entries:
        line = "%s  %s  %s" % (name, _shape(t), str(t.dtype).replace("torch.", ""))
        if new is None:
            line += "  (excluded)"
        elif new != name:
            line += "  -> " + new
        print(line, file=out)
    for name, kind in skipped:
        print("%s  (%s, not a tensor: skipped)" % (name, kind), file=out)
    kept = sum(1 for _, new, _ in entries if new is not None)
    print("%d tensors, %d kept, %d elements kept" %
          (len(entries), kept, sum(t.numel() for _, new, t in entries if new is not None)),
          file=out)


def save_flat(tensors, path):
    """torch.save of a plain dict through the SETITEM-free pickler, written atomically."""
    torch = _import_torch()
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise ConversionError("cannot write '%s': folder '%s' does not exist" % (path, folder))
    tmp = "%s.tmp.%d" % (path, os.getpid())
    try:
        torch.save(dict(tensors), tmp, pickle_module=PICKLE_MODULE)
        os.replace(tmp, path)
    except OSError as e:
        raise ConversionError("cannot write '%s': %s" % (path, e))
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def convert(args, log=None):
    log = log or sys.stderr
    entries, skipped = build(args)
    for name, kind in skipped:
        print("note: skipping non-tensor entry '%s' (%s)" % (name, kind), file=log)
    if not args.caffe2_names and any("branch2a" in n or n.startswith("res_conv1_bn")
                                     for n, _, _ in entries):
        print("note: the names look like Caffe2/MSRA ResNet names; --caffe2-names converts "
              "them to detectron2 names (stem.conv1.weight, res2.0.conv1.norm.weight, ...)",
              file=log)
    out = collections.OrderedDict()
    source = {}
    for name, new, t in entries:
        if new is None:
            continue
        if not new:
            raise ConversionError("'%s' becomes an empty name after --strip" % name)
        if new in out:
            raise ConversionError("'%s' and '%s' both become '%s'" % (source[new], name, new))
        out[new] = t
        source[new] = name
    if not out:
        raise ConversionError("every tensor of '%s' is excluded (--exclude %s)" %
                              (args.input, " ".join(args.exclude)))
    save_flat(out, args.output)
    print("wrote %d tensors to %s (%d excluded, %d non-tensor entries skipped)" %
          (len(out), args.output, len(entries) - len(out), len(skipped)), file=log)
    return out


def parse_args(argv):
    p = argparse.ArgumentParser(
        description="Convert .pkl/.pth checkpoints to a flat name -> tensor file for ComboAVS.",
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("input", help="checkpoint to read (.pkl, .pth, .pt)")
    p.add_argument("output", nargs="?", help="file to write (omit with --list)")
    p.add_argument("--prefix", default="", help="prepend this to every name")
    p.add_argument("--strip", action="append", default=[], metavar="S",
                   help="remove a leading S from names (repeatable, applied in order)")
    p.add_argument("--key", default="", metavar="K",
                   help="take the sub-dict K ('a/b' for nested); default: the 'model' or "
                        "'state_dict' sub-dict if there is one, else the whole dict")
    p.add_argument("--exclude", action="append", default=[], metavar="REGEX",
                   help="drop input names matching REGEX (re.search; repeatable)")
    p.add_argument("--caffe2-names", action="store_true",
                   help="rename Caffe2/MSRA ResNet names (R-50.pkl) to detectron2 names and "
                        "drop *_momentum entries")
    p.add_argument("--list", action="store_true", help="print names, shapes and dtypes only")
    args = p.parse_args(argv)
    if not args.list and not args.output:
        p.error("the output path is required unless --list is given")
    for pattern in args.exclude:
        try:
            re.compile(pattern)
        except re.error as e:
            p.error("bad --exclude pattern %r: %s" % (pattern, e))
    return args


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        if args.list:
            entries, skipped = build(args)
            list_entries(entries, skipped)
        else:
            convert(args)
    except ConversionError as e:
        print("error: %s" % e, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
